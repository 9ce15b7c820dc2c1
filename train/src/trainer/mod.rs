//! The training core shared by `classify` and `detect`: a model built from a `VarMap`, SGD, the
//! learning-rate schedule and batch-norm running statistics, advanced one step at a time.

pub mod classify;
pub mod common;
pub mod detect;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use csp_models::model::{update_running_stats, BatchStats};
use csp_models::{Model, Network};

use crate::data::ImageBatch;
use crate::optim::{trainable_params, Sgd, SgdConfig};
use crate::params::{init_params, load_pretrained, PretrainedReport};
use crate::schedule::Schedule;

pub struct Trainer {
    /// Unfolded model whose tensors are the `varmap`'s vars.
    pub model: Model,
    pub varmap: VarMap,
    pub sgd: Sgd,
    pub schedule: Schedule,
    /// Weight of the batch in the running statistics update (PyTorch's `momentum`).
    pub bn_momentum: f64,
    /// Updates made so far.
    pub step: usize,
}

impl Trainer {
    /// The run's final weights, `OUT/model.safetensors` (its labels file is already there).
    pub fn write_final(&self, out: &Path) -> Result<()> {
        let weights = out.join(classify::WEIGHTS_FILE);
        self.save_weights(&weights).with_context(|| format!("saving {}", weights.display()))?;
        eprintln!("wrote {} and {}", weights.display(), out.join(classify::LABELS_FILE).display());
        Ok(())
    }

    /// A freshly initialised model (seeded), optionally overwritten by a pretrained file's
    /// tensors of matching name and shape.
    pub fn new(
        net: Network,
        device: &Device,
        seed: u64,
        sgd: SgdConfig,
        schedule: Schedule,
        bn_momentum: f64,
        pretrained: Option<&Path>,
    ) -> Result<(Self, Option<PretrainedReport>)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, device);
        let model = Model::load_unfolded(net, vb).context("building the model")?;
        init_params(&varmap, &model.net, seed)?;
        let report = match pretrained {
            Some(path) => Some(load_pretrained(&varmap, &model.net, path, device)?),
            None => None,
        };
        let sgd = Sgd::new(trainable_params(&varmap), sgd);
        Ok((Trainer { model, varmap, sgd, schedule, bn_momentum, step: 0 }, report))
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// A host batch as an [N, 3, H, W] tensor on the training device.
    pub fn images(&self, b: &ImageBatch) -> Result<Tensor> {
        let t = Tensor::from_slice(&b.data, (b.n, 3, b.height, b.width), &Device::Cpu)?;
        Ok(t.to_device(self.device())?)
    }

    /// The learning rate of the next update.
    pub fn lr(&self) -> f64 {
        self.schedule.lr(self.step)
    }

    /// Back-propagates `loss`, updates the parameters and the running statistics. Returns the
    /// learning rate used.
    pub fn update(&mut self, loss: &Tensor, stats: &[BatchStats]) -> Result<f64> {
        let lr = self.lr();
        let grads = loss.backward()?;
        self.sgd.step(&grads, lr)?;
        update_running_stats(&self.varmap, stats, self.bn_momentum)?;
        self.step += 1;
        Ok(lr)
    }

    /// Writes the model (unfolded, so it can be trained further) in our native format.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        csp_models::weights::native::save(&self.model, path).with_context(|| format!("writing {}", path.display()))
    }
}
