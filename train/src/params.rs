//! The parameters of a model being trained: a `VarMap` the model was built from. Seeded
//! initialisation, batch-norm running statistics, and loading pretrained tensors by name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use csp_models::network::{Network, Op};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::optim::is_running_stat;

/// Prior objectness of a fresh detector head: sigmoid(bias) = 0.01, so the first steps are not
/// swamped by the background cells' objectness loss (the RetinaNet prior).
pub const OBJECTNESS_PRIOR: f64 = 0.01;

/// Every var by name (sorted).
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn var(varmap: &VarMap, name: &str) -> Option<Var> {
    varmap.data().lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
}

/// Re-initialises every weight from `seed` (candle's own init is not seeded): conv and linear
/// weights and biases uniform in +-1/sqrt(fan_in), batch norm at identity, and the objectness
/// biases of YOLO prediction convs at [`OBJECTNESS_PRIOR`].
pub fn init_params(varmap: &VarMap, net: &Network, seed: u64) -> Result<()> {
    let mut fan_in: HashMap<String, usize> = HashMap::new();
    for (name, v) in named_vars(varmap) {
        if v.rank() >= 2 {
            fan_in.insert(prefix_of(&name).to_string(), v.dims()[1..].iter().product());
        }
    }
    for (name, v) in named_vars(varmap) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(&name));
        let t = if name.ends_with(".bn.weight") || name.ends_with(".running_var") {
            v.ones_like()?
        } else if name.ends_with(".bn.bias") || name.ends_with(".running_mean") {
            v.zeros_like()?
        } else {
            let fan = fan_in.get(prefix_of(&name)).copied().unwrap_or(1).max(1);
            let bound = 1.0 / (fan as f64).sqrt();
            let data: Vec<f32> = (0..v.elem_count()).map(|_| rng.random_range(-bound..bound) as f32).collect();
            Tensor::from_vec(data, v.dims(), v.device())?.to_dtype(v.dtype())?
        };
        v.set(&t)?;
    }
    init_objectness(varmap, net)
}

/// `a.b.conv.weight` and `a.b.conv.bias` share the prefix `a.b.conv`.
fn prefix_of(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(p, _)| p)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn init_objectness(varmap: &VarMap, net: &Network) -> Result<()> {
    let prior = (OBJECTNESS_PRIOR / (1.0 - OBJECTNESS_PRIOR)).ln() as f32;
    for (i, layer) in net.layers.iter().enumerate() {
        let (Op::Yolo(y), Some(Op::Conv(conv))) = (&layer.op, i.checked_sub(1).map(|p| &net.layers[p].op)) else {
            continue;
        };
        let Some(bias) = var(varmap, &format!("{}.conv.bias", conv.name)) else { continue };
        let mut values = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let per_anchor = y.classes + 5;
        for a in 0..y.mask.len() {
            if let Some(v) = values.get_mut(a * per_anchor + 4) {
                *v = prior;
            }
        }
        bias.set(&Tensor::from_vec(values, bias.dims(), bias.device())?.to_dtype(bias.dtype())?)?;
    }
    Ok(())
}

/// What [`load_pretrained`] did.
#[derive(Debug, Default)]
pub struct PretrainedReport {
    pub loaded: Vec<String>,
    /// In the file, but the shape differs from the model's (a classifier head for other classes).
    pub shape_mismatch: Vec<String>,
    /// In the file, not in the model (a classifier's head when training a detector).
    pub unused: Vec<String>,
    /// In the model, not in the file: keep their fresh initialisation.
    pub missing: Vec<String>,
}

impl PretrainedReport {
    pub fn summary(&self) -> String {
        format!(
            "{} tensors loaded, {} skipped for their shape, {} unused, {} of the model's left at init",
            self.loaded.len(),
            self.shape_mismatch.len(),
            self.unused.len(),
            self.missing.len()
        )
    }
}

/// Copies the tensors of a weights file into the vars of the same name and shape. Native and
/// timm safetensors hold our names directly; darknet `.weights` are read against `net` (so the
/// architecture must be the file's `.cfg`).
pub fn load_pretrained(varmap: &VarMap, net: &Network, path: &Path, device: &Device) -> Result<PretrainedReport> {
    let tensors: HashMap<String, Tensor> = if path.extension().is_some_and(|e| e == "weights") {
        csp_models::weights::darknet::read_weights(path, net, device)?.tensors
    } else {
        candle_core::safetensors::load(path, device).with_context(|| format!("reading {}", path.display()))?
    };
    let mut report = PretrainedReport::default();
    let vars: HashMap<String, Var> = named_vars(varmap).into_iter().collect();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        match vars.get(name) {
            Some(v) if v.dims() == t.dims() => {
                v.set(&t.to_dtype(v.dtype())?.to_device(v.device())?)?;
                report.loaded.push(name.clone());
            }
            Some(_) => report.shape_mismatch.push(name.clone()),
            None => report.unused.push(name.clone()),
        }
    }
    let mut missing: Vec<String> =
        vars.keys().filter(|n| !tensors.contains_key(*n) && !is_running_stat(n)).cloned().collect();
    missing.sort();
    report.missing = missing;
    Ok(report)
}
