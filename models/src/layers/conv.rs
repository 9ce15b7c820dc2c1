//! Convolution + batch norm + activation, the one building block of every CSP model.
//!
//! Inference folds batch norm into the convolution at load time ([`ConvLayer::fold`]); training
//! keeps the unfolded layer and runs batch norm on batch statistics ([`ConvLayer::forward_train`]).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::Activation;

/// Batch-norm epsilon of darknet and PyTorch alike.
pub const BN_EPS: f64 = 1e-5;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Key prefix in the weights file: `<name>.conv.weight`, `<name>.bn.*`.
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Symmetric zero padding on each side.
    pub padding: usize,
    pub groups: usize,
    pub batch_norm: bool,
    pub activation: Activation,
}

impl ConvSpec {
    /// A conv with "same" padding (k/2), batch norm and the given activation.
    pub fn new(name: impl Into<String>, cin: usize, cout: usize, k: usize, stride: usize) -> Self {
        ConvSpec {
            name: name.into(),
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride,
            padding: k / 2,
            groups: 1,
            batch_norm: true,
            activation: Activation::Linear,
        }
    }
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    pub fn act(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
    pub fn no_bn(mut self) -> Self {
        self.batch_norm = false;
        self
    }
    pub fn weight_shape(&self) -> (usize, usize, usize, usize) {
        (self.out_channels, self.in_channels / self.groups, self.kernel, self.kernel)
    }
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let f = |x: usize| (x + 2 * self.padding).saturating_sub(self.kernel) / self.stride + 1;
        (f(h), f(w))
    }
}

/// Batch-norm parameters and running statistics, each of shape [C].
#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

#[derive(Clone, Debug)]
pub struct ConvLayer {
    pub spec: ConvSpec,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub bn: Option<BatchNorm>,
}

impl ConvLayer {
    /// Reads `<name>.conv.weight` and either `<name>.bn.{weight,bias,running_mean,running_var}`
    /// or `<name>.conv.bias`. With a `VarMap`-backed builder missing tensors are created
    /// (training from scratch); with a file-backed one they are an error naming the tensor.
    pub fn load(spec: &ConvSpec, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp(&spec.name);
        let fan_in = spec.in_channels / spec.groups * spec.kernel * spec.kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = candle_nn::Init::Uniform { lo: -bound, up: bound };
        let weight = vb.pp("conv").get_with_hints(spec.weight_shape(), "weight", init)?;
        let c = spec.out_channels;
        let (bias, bn) = if spec.batch_norm {
            let vb = vb.pp("bn");
            let bn = BatchNorm {
                weight: vb.get_with_hints(c, "weight", candle_nn::Init::Const(1.0))?,
                bias: vb.get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?,
                running_mean: vb.get_with_hints(c, "running_mean", candle_nn::Init::Const(0.0))?,
                running_var: vb.get_with_hints(c, "running_var", candle_nn::Init::Const(1.0))?,
            };
            (None, Some(bn))
        } else {
            let b = vb.pp("conv").get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?;
            (Some(b), None)
        };
        Ok(ConvLayer { spec: spec.clone(), weight, bias, bn })
    }

    /// Folds batch norm into the convolution: w' = w * g / sqrt(v + eps), b' = beta - m * g / sqrt(v + eps).
    pub fn fold(&self) -> Result<Self> {
        let Some(bn) = &self.bn else { return Ok(self.clone()) };
        let dtype = self.weight.dtype();
        let w = self.weight.to_dtype(DType::F32)?;
        let scale = (bn.weight.to_dtype(DType::F32)? / (bn.running_var.to_dtype(DType::F32)? + BN_EPS)?.sqrt()?)?;
        let weight = w.broadcast_mul(&scale.reshape((scale.dim(0)?, 1, 1, 1))?)?;
        let mut bias = (bn.bias.to_dtype(DType::F32)? - (bn.running_mean.to_dtype(DType::F32)? * &scale)?)?;
        if let Some(b) = &self.bias {
            bias = (bias + (b.to_dtype(DType::F32)? * &scale)?)?;
        }
        Ok(ConvLayer {
            spec: ConvSpec { batch_norm: false, ..self.spec.clone() },
            weight: weight.to_dtype(dtype)?.detach(),
            bias: Some(bias.to_dtype(dtype)?.detach()),
            bn: None,
        })
    }

    /// This layer's parameters in `dtype` (see [`crate::device::Precision`]). The fast engine is
    /// f32 only, so any other dtype runs on candle's ops.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        if dtype == self.weight.dtype() {
            return Ok(self.clone());
        }
        let bn = match &self.bn {
            Some(bn) => Some(BatchNorm {
                weight: bn.weight.to_dtype(dtype)?,
                bias: bn.bias.to_dtype(dtype)?,
                running_mean: bn.running_mean.to_dtype(dtype)?,
                running_var: bn.running_var.to_dtype(dtype)?,
            }),
            None => None,
        };
        Ok(ConvLayer {
            spec: self.spec.clone(),
            weight: self.weight.to_dtype(dtype)?,
            bias: self.bias.as_ref().map(|b| b.to_dtype(dtype)).transpose()?,
            bn,
        })
    }

    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        let s = &self.spec;
        let y = x.conv2d(&self.weight, s.padding, s.stride, 1, s.groups)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }

    /// Batch norm on batch statistics (training mode). Returns the output and the batch
    /// mean and (unbiased) variance, for the caller to update running statistics.
    pub fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let s = &self.spec;
        // Same conv as `conv`, with a faster backward on the CPU (see `conv2d_train`).
        let y = super::conv2d_train(x, &self.weight, s.padding, s.stride, s.groups)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => y,
        };
        let Some(bn) = &self.bn else { return Ok((self.spec.activation.forward(&y)?, None)) };
        let c = self.spec.out_channels;
        let n = (y.elem_count() / c) as f64;
        // Statistics for the running averages only: no gradient flows through them.
        let flat = y.detach().transpose(0, 1)?.reshape((c, ()))?;
        let mean = flat.mean(D::Minus1)?;
        let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(D::Minus1)?;
        let out = super::batch_norm_act_train(&y, &bn.weight, &bn.bias, self.spec.activation)?;
        let unbiased = (var * (n / (n - 1.0).max(1.0)))?;
        Ok((out, Some((mean, unbiased))))
    }
}

impl Module for ConvLayer {
    /// Inference: running statistics (use [`ConvLayer::fold`] first to skip the extra ops).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv(x)?;
        let y = match &self.bn {
            Some(bn) => {
                let c = self.spec.out_channels;
                let scale = (&bn.weight / (&bn.running_var + BN_EPS)?.sqrt()?)?;
                let shift = (&bn.bias - (&bn.running_mean * &scale)?)?;
                y.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)?
            }
            None => y,
        };
        self.spec.activation.forward(&y)
    }
}
