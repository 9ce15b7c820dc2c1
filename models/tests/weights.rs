//! Our safetensors format round-trips; bad files give errors that name the problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use csp_models::backbones::timm::TimmCspConfig;
use csp_models::weights::{self, native, Arch};
use csp_models::Model;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csp-weights-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A small timm-layout network with random weights and non-trivial batch-norm statistics.
fn small_model() -> Model {
    let mut cfg = TimmCspConfig::cspdarknet53();
    cfg.stem.out_channels = 8;
    cfg.stages.truncate(2);
    cfg.stages[0].out_channels = 16;
    cfg.stages[1].out_channels = 32;
    let net = cfg.build("tiny_cspdarknet", 5);
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Model::load_unfolded(net, vb).unwrap();
    // Give batch norm statistics that are not the identity, so folding is exercised.
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let shape = var.shape().clone();
        if name.ends_with("running_var") {
            var.set(&(Tensor::rand(0.5f32, 2.0, shape, &Device::Cpu).unwrap())).unwrap();
        } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
            var.set(&(Tensor::randn(0f32, 0.2, shape, &Device::Cpu).unwrap())).unwrap();
        }
    }
    model
}

fn input() -> Tensor {
    Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() / scale
}

#[test]
fn native_round_trip_unfolded_and_folded() {
    let model = small_model();
    let x = input();
    let reference = model.forward(&x).unwrap();
    for fold in [false, true] {
        let path = tmp(&format!("roundtrip-{fold}.safetensors"));
        let to_save = if fold { model.folded().unwrap() } else { model.clone() };
        native::save(&to_save, &path).unwrap();
        // The file alone rebuilds the model.
        let loaded = weights::load_model(None, Some(&path), &Device::Cpu, true).unwrap();
        assert_eq!(loaded.net.arch, "tiny_cspdarknet");
        assert_eq!(loaded.net.num_classes, 5);
        let d = max_rel_diff(&loaded.forward(&x).unwrap(), &reference);
        assert!(d < 1e-5, "fold={fold}: diff {d}");
    }
    // Folding changes the output by rounding only.
    let d = max_rel_diff(&model.folded().unwrap().forward(&x).unwrap(), &reference);
    assert!(d < 1e-5, "folded vs unfolded: {d}");
}

fn save_plain(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

fn timm_like_tensors() -> HashMap<String, Tensor> {
    small_model().tensors().into_iter().collect()
}

fn load_err(arch: Option<&Arch>, path: &Path) -> String {
    match weights::load_model(arch, Some(path), &Device::Cpu, true) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn timm_layout_needs_arch_and_matching_tensors() {
    // A full-size timm name with a tiny state dict: the first conv's shape is wrong.
    let path = tmp("timm-small.safetensors");
    save_plain(&timm_like_tensors(), &path);
    let arch = Arch::Builtin("cspdarknet53".into());
    let e = load_err(Some(&arch), &path);
    assert!(e.contains("stem.conv1.conv.weight") && e.contains("shape"), "{e}");
    // Without an architecture the file cannot be interpreted.
    let e = load_err(None, &path);
    assert!(e.contains("--arch"), "{e}");

    // A missing tensor is named.
    let mut t = timm_like_tensors();
    t.remove("stages.1.conv_exp.bn.running_var");
    let path = tmp("missing.safetensors");
    let model = small_model();
    native::save(&model, &path).unwrap();
    let meta = native::read_metadata(&path).unwrap();
    write_with_metadata(&t, meta, &path);
    let e = load_err(None, &path);
    assert!(e.contains("stages.1.conv_exp.bn.running_var"), "{e}");
}

fn write_with_metadata(t: &HashMap<String, Tensor>, meta: HashMap<String, String>, path: &Path) {
    let views: Vec<(String, Tensor)> = t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    safetensors::serialize_to_file(views, Some(meta), path).unwrap();
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    let path = tmp("full.safetensors");
    native::save(&small_model(), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let p = tmp(&format!("cut-{cut}.safetensors"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(None, &p);
        assert!(e.contains(&*p.display().to_string()), "cut {cut}: {e}");
    }
    let p = tmp("garbage.safetensors");
    std::fs::write(&p, b"this is not a weights file at all, just text").unwrap();
    let e = load_err(None, &p);
    assert!(e.contains("not a safetensors file"), "{e}");

    let p = tmp("does-not-exist.safetensors");
    let e = load_err(None, &p);
    assert!(e.contains("does-not-exist"), "{e}");
}

#[test]
fn bad_network_metadata_is_an_error() {
    let path = tmp("badmeta.safetensors");
    let t = timm_like_tensors();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), native::FORMAT.to_string());
    meta.insert("version".to_string(), native::VERSION.to_string());
    meta.insert("network".to_string(), "{\"arch\": 3}".to_string());
    write_with_metadata(&t, meta.clone(), &path);
    assert!(load_err(None, &path).contains("network"));
    meta.insert("version".to_string(), "99".to_string());
    write_with_metadata(&t, meta, &path);
    assert!(load_err(None, &path).contains("version"));
}

#[test]
fn plain_safetensors_of_a_builtin_detector_keep_their_class_count() {
    let net = csp_models::backbones::build("cspdensenetb_ref_prn", 3).unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Model::load_unfolded(net, vb).unwrap();
    let path = tmp("detector-plain.safetensors");
    save_plain(&model.tensors().into_iter().collect(), &path);
    let arch = Arch::Builtin("cspdensenetb_ref_prn".into());
    let loaded = weights::load_model(Some(&arch), Some(&path), &Device::Cpu, true).unwrap();
    assert_eq!(loaded.net.num_classes, 3);
}
