//! SGD with momentum and decoupled-from-BN weight decay, in PyTorch's formulation:
//! g' = g + wd * w (weights only), v = momentum * v + g', w = w - lr * v.
//! The momentum buffers are plain named tensors so checkpoints can store and restore them.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;

/// One trainable tensor of the `VarMap`.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub var: Var,
    /// Weight decay applies to conv and linear weights, never to biases or batch-norm affine.
    pub decay: bool,
}

/// Whether a `VarMap` entry is a running statistic: updated by the trainer, never by gradients.
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// The trainable entries of `varmap`, sorted by name (a stable order for checkpoints).
pub fn trainable_params(varmap: &VarMap) -> Vec<Param> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<Param> = data
        .iter()
        .filter(|(name, _)| !is_running_stat(name))
        .map(|(name, var)| Param { name: name.clone(), var: var.clone(), decay: var.rank() >= 2 })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
}

pub struct Sgd {
    pub config: SgdConfig,
    params: Vec<Param>,
    /// One buffer per param, `None` until its first update (as PyTorch: v starts at g').
    velocity: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(params: Vec<Param>, config: SgdConfig) -> Self {
        let velocity = vec![None; params.len()];
        Sgd { config, params, velocity }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// One update at learning rate `lr`. Params without a gradient (unused by the loss) are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let SgdConfig { momentum, weight_decay } = self.config;
        for (p, v) in self.params.iter().zip(self.velocity.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            let w = p.var.as_tensor();
            let g = if p.decay && weight_decay != 0.0 { (g + (w * weight_decay)?)? } else { g.clone() };
            let new_v = match v.take() {
                Some(old) if momentum != 0.0 => ((old * momentum)? + g)?,
                _ => g,
            };
            p.var.set(&(w - (&new_v * lr)?)?)?;
            *v = Some(new_v.detach());
        }
        Ok(())
    }

    /// The momentum buffers by param name (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.velocity)
            .filter_map(|(p, v)| v.as_ref().map(|v| (p.name.clone(), v.clone())))
            .collect()
    }

    /// Restores buffers written by [`Sgd::state`]; a buffer for an unknown param or of the wrong
    /// shape is an error (the checkpoint belongs to another model).
    pub fn load_state(&mut self, mut state: HashMap<String, Tensor>) -> Result<()> {
        for (p, v) in self.params.iter().zip(self.velocity.iter_mut()) {
            *v = match state.remove(&p.name) {
                Some(t) => {
                    if t.dims() != p.var.dims() {
                        bail!("momentum of `{}` has shape {:?}, the param {:?}", p.name, t.dims(), p.var.dims());
                    }
                    Some(t.to_device(p.var.device())?.to_dtype(p.var.dtype()).context("momentum dtype")?)
                }
                None => None,
            };
        }
        if let Some(name) = state.keys().next() {
            bail!("checkpoint has momentum for `{name}`, which this model does not have");
        }
        Ok(())
    }
}
