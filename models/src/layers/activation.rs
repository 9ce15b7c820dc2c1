//! The activations used by CSPNet models, with darknet's names.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Activation {
    Linear,
    Relu,
    /// Leaky ReLU; darknet uses slope 0.1, timm 0.01.
    Leaky {
        slope: f32,
    },
    Mish,
    /// x * sigmoid(x), darknet's `swish`, PyTorch's SiLU.
    Swish,
    /// Sigmoid.
    Logistic,
}

impl Activation {
    pub const DARKNET_LEAKY: Activation = Activation::Leaky { slope: 0.1 };
    pub const TIMM_LEAKY: Activation = Activation::Leaky { slope: 0.01 };

    /// Parses a darknet `activation=` value.
    pub fn from_darknet(name: &str) -> Option<Self> {
        Some(match name {
            "linear" => Activation::Linear,
            "relu" => Activation::Relu,
            "leaky" => Activation::DARKNET_LEAKY,
            "mish" => Activation::Mish,
            "swish" | "silu" => Activation::Swish,
            "logistic" => Activation::Logistic,
            _ => return None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match *self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => x.relu(),
            Activation::Leaky { slope } => candle_nn::ops::leaky_relu(x, slope as f64),
            Activation::Mish => {
                // softplus with darknet's threshold of 20: above it softplus(x) = x, and
                // tanh saturates to 1 in f32 either way, so clamping the exponent is exact.
                let sp = (x.minimum(20f64)?.exp()? + 1.0)?.log()?;
                x * sp.tanh()?
            }
            Activation::Swish => x.silu(),
            Activation::Logistic => candle_nn::ops::sigmoid(x),
        }
    }

    /// values = activation(values + bias), elementwise on the CPU: the fused conv kernel's epilogue.
    pub fn apply_in_place(self, values: &mut [f32], bias: f32) {
        let each = values.iter_mut();
        match self {
            Activation::Linear => each.for_each(|v| *v += bias),
            Activation::Relu => each.for_each(|v| *v = (*v + bias).max(0.0)),
            Activation::Leaky { slope } => each.for_each(|v| *v = leaky(*v + bias, slope)),
            Activation::Mish => each.for_each(|v| *v = mish(*v + bias)),
            Activation::Swish => each.for_each(|v| *v = swish(*v + bias)),
            Activation::Logistic => each.for_each(|v| *v = logistic(*v + bias)),
        }
    }
}

#[inline]
fn leaky(x: f32, slope: f32) -> f32 {
    if x < 0.0 {
        x * slope
    } else {
        x
    }
}

/// x * tanh(ln(1 + e^x)) with one exp instead of exp, ln and tanh: with n = e^x (e^x + 2),
/// tanh(ln(1 + e^x)) = n / (n + 2). Above 20 it is x in f32, as on the candle path (and e^2x would
/// overflow further up).
#[inline]
fn mish(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        let e = x.exp();
        let n = e * (e + 2.0);
        x * n / (n + 2.0)
    }
}

#[inline]
fn swish(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[inline]
fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
