//! Weight files: our safetensors format (network in the metadata), timm safetensors, darknet
//! `.weights`. [`load_model`] is the one entry point every binary uses.

pub mod darknet;
pub mod native;
pub mod random;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::Network;

/// An architecture named on a command line: a built-in name or a darknet `.cfg` file.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    Builtin(String),
    DarknetCfg(PathBuf),
}

impl Arch {
    /// `*.cfg`, or any path that exists, is a darknet cfg; anything else a built-in name.
    pub fn parse(s: &str) -> Arch {
        let p = Path::new(s);
        if s.ends_with(".cfg") || p.is_file() {
            Arch::DarknetCfg(p.to_path_buf())
        } else {
            Arch::Builtin(s.to_string())
        }
    }

    /// Class count when none is given: 80 for built-in detectors, 1000 for classifiers (a cfg
    /// sets its own).
    pub fn default_num_classes(&self) -> usize {
        match self {
            Arch::Builtin(name) => crate::backbones::default_num_classes(name),
            Arch::DarknetCfg(_) => 1000,
        }
    }

    pub fn network(&self, num_classes: usize) -> Result<Network> {
        match self {
            Arch::Builtin(name) => crate::backbones::build(name, num_classes),
            Arch::DarknetCfg(path) => crate::darknet::parse_cfg_file(path),
        }
    }
}

/// What a weights file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    Native,
    Timm,
    Darknet,
}

/// Builds a model from an architecture and/or a weights file:
/// - native safetensors: the file alone is enough (`arch` may be omitted);
/// - timm safetensors: needs a built-in `arch`; the class count comes from `head.fc.weight`;
/// - darknet `.weights`: needs a `.cfg` `arch`; a file that ends early is an error here;
/// - no weights: randomly initialised (for summaries and benchmarks).
///
/// `fold` folds batch norm for inference; keep it unfolded to convert or train.
pub fn load_model(arch: Option<&Arch>, weights: Option<&Path>, device: &Device, fold: bool) -> Result<Model> {
    let (model, _) = load_model_with_format(arch, weights, device, fold)?;
    Ok(model)
}

pub fn load_model_with_format(
    arch: Option<&Arch>,
    weights: Option<&Path>,
    device: &Device,
    fold: bool,
) -> Result<(Model, Option<WeightsFormat>)> {
    let (model, format) = match weights {
        None => {
            let arch = arch.ok_or_else(|| Error::Input("give an architecture or a weights file".into()))?;
            (random::random_model(arch.network(arch.default_num_classes())?, device)?, None)
        }
        Some(path) if is_darknet_weights(path) => {
            let Some(Arch::DarknetCfg(cfg)) = arch else {
                return Err(Error::weights(path, "darknet .weights need a darknet .cfg architecture (--cfg)"));
            };
            let net = crate::darknet::parse_cfg_file(cfg)?;
            let read = darknet::read_weights(path, &net, device)?;
            if let Some(missing) = read.incomplete() {
                return Err(Error::weights(path, missing));
            }
            let vb = VarBuilder::from_tensors(read.tensors, DType::F32, device);
            (Model::load_unfolded(net, vb)?, Some(WeightsFormat::Darknet))
        }
        Some(path) => {
            match native::read_network(path)? {
                Some(net) => {
                    let model = Model::load_unfolded(net, file_builder(path, device)?)
                        .map_err(|e| Error::weights(path, e.to_string()))?;
                    (model, Some(WeightsFormat::Native))
                }
                None => {
                    let Some(Arch::Builtin(name)) = arch else {
                        return Err(Error::weights(path, "not a cspserve file: name its built-in architecture (--arch) to load it as a timm checkpoint"));
                    };
                    let tensors = read_safetensors(path, device)?;
                    let classes = class_count(name, &tensors).map_err(|e| Error::weights(path, e))?;
                    let net = crate::backbones::build(name, classes)?;
                    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
                    let model = Model::load_unfolded(net, vb).map_err(|e| Error::weights(path, e.to_string()))?;
                    (model, Some(WeightsFormat::Timm))
                }
            }
        }
    };
    let model = if fold { model.folded()? } else { model };
    Ok((model, format))
}

/// The class count a state dict was trained for: from `head.fc.weight` for classifiers, from the
/// first prediction conv (`anchors * (5 + classes)` outputs) for detectors.
fn class_count(arch: &str, tensors: &HashMap<String, Tensor>) -> std::result::Result<usize, String> {
    let shape_of = |key: &str| tensors.get(key).map(|t| t.dims().to_vec()).ok_or(format!("missing tensor `{key}`"));
    if crate::backbones::task(arch) != Some(crate::backbones::Task::Detection) {
        return Ok(shape_of("head.fc.weight")?[0]);
    }
    let net = crate::backbones::build(arch, crate::backbones::default_num_classes(arch)).map_err(|e| e.to_string())?;
    let head = net.layers.iter().enumerate().find_map(|(i, l)| match &l.op {
        crate::network::Op::Yolo(spec) => Some((i, spec.mask.len())),
        _ => None,
    });
    let Some((i, anchors)) = head else { return Err(format!("`{arch}` has no detection head")) };
    let crate::network::Op::Conv(conv) = &net.layers[i - 1].op else {
        return Err(format!("`{arch}`: the layer before its first head is not a convolution"));
    };
    let out = shape_of(&format!("{}.conv.weight", conv.name))?[0];
    if anchors == 0 || out % anchors != 0 || out / anchors < 6 {
        return Err(format!("`{}.conv.weight` has {out} outputs, not {anchors} x (5 + classes)", conv.name));
    }
    Ok(out / anchors - 5)
}

fn is_darknet_weights(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "weights")
}

fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::weights(path, e.to_string()))?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::weights(path, e.to_string()))
}

fn file_builder(path: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_tensors(read_safetensors(path, device)?, DType::F32, device))
}
