//! Checkpoints: every var of the `VarMap` (parameters and running statistics), the SGD momentum
//! buffers and the loop position, in one safetensors file written atomically. Tensors are
//! `param/<name>` and `momentum/<name>`; the metadata holds the network (`network`) and the
//! [`TrainState`] (`state`), both JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use csp_models::Network;
use serde::{Deserialize, Serialize};

use crate::params::named_vars;
use crate::trainer::Trainer;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Where the loop stands, and what it was started with (to warn about changed flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Updates made.
    pub step: usize,
    pub epoch: usize,
    /// Batches of `epoch` already consumed.
    pub step_in_epoch: usize,
    /// The command's settings as JSON, for the record.
    pub settings: serde_json::Value,
}

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

pub fn save(dir: &Path, trainer: &Trainer, state: &TrainState) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, var) in named_vars(&trainer.varmap) {
        tensors.push((format!("param/{name}"), var.as_tensor().to_dtype(DType::F32)?.to_device(&Device::Cpu)?));
    }
    for (name, t) in trainer.sgd.state() {
        tensors.push((format!("momentum/{name}"), t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?));
    }
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "csp-train-checkpoint".to_string());
    metadata.insert("network".to_string(), serde_json::to_string(&trainer.model.net)?);
    metadata.insert("state".to_string(), serde_json::to_string(state)?);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = checkpoint_path(dir);
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    safetensors::serialize_to_file(tensors, Some(metadata), &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

pub struct Checkpoint {
    pub network: Network,
    pub state: TrainState,
    pub params: HashMap<String, Tensor>,
    pub momentum: HashMap<String, Tensor>,
}

/// Reads `dir/checkpoint.safetensors` (or `dir` itself when it is the file).
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let path = if dir.is_dir() { checkpoint_path(dir) } else { dir.to_path_buf() };
    let meta = csp_models::weights::native::read_metadata(&path)?;
    if meta.get("format").map(String::as_str) != Some("csp-train-checkpoint") {
        bail!("{} is not a csp-train checkpoint", path.display());
    }
    let network: Network = serde_json::from_str(meta.get("network").context("checkpoint without network")?)
        .context("checkpoint network")?;
    let state: TrainState =
        serde_json::from_str(meta.get("state").context("checkpoint without state")?).context("checkpoint state")?;
    let all = candle_core::safetensors::load(&path, device).with_context(|| format!("reading {}", path.display()))?;
    let (mut params, mut momentum) = (HashMap::new(), HashMap::new());
    for (name, t) in all {
        if let Some(n) = name.strip_prefix("param/") {
            params.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("momentum/") {
            momentum.insert(n.to_string(), t);
        } else {
            bail!("{}: unexpected tensor `{name}`", path.display());
        }
    }
    Ok(Checkpoint { network, state, params, momentum })
}

/// Puts a checkpoint's tensors into a trainer built from the same network: every var must be
/// present with its shape, and nothing else.
pub fn restore(trainer: &mut Trainer, ck: Checkpoint) -> Result<TrainState> {
    let mut params = ck.params;
    for (name, var) in named_vars(&trainer.varmap) {
        let t = params.remove(&name).with_context(|| format!("checkpoint lacks `{name}`"))?;
        if t.dims() != var.dims() {
            bail!("checkpoint `{name}` has shape {:?}, the model {:?}", t.dims(), var.dims());
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    if let Some(name) = params.keys().next() {
        bail!("checkpoint has `{name}`, which the model does not");
    }
    trainer.sgd.load_state(ck.momentum)?;
    trainer.step = ck.state.step;
    Ok(ck.state)
}
