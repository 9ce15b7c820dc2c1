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
}
