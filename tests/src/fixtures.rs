//! Small models written at test time (the server never serves random weights, so every model it
//! serves here is an explicit file): a reduced CSPDarknet-53 classifier in our safetensors
//! format, and a two-head YOLO detector as a darknet `.cfg` + `.weights` pair.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use csp_models::backbones::timm::TimmCspConfig;
use csp_models::Model;

/// Classes of the test classifier.
pub const CLASSES: usize = 10;
/// Classes of the test detector.
pub const DETECTOR_CLASSES: usize = 3;
/// Both models take 64x64 inputs.
pub const INPUT_SIZE: usize = 64;

pub struct Fixtures {
    pub dir: PathBuf,
    /// Native safetensors (the network is in its metadata), [N,3,64,64] -> [N,10] logits.
    pub classifier: PathBuf,
    /// `class0` ... `class9`, one per line.
    pub labels: PathBuf,
    pub detector_cfg: PathBuf,
    pub detector_weights: PathBuf,
    /// `cls` (classifier with labels) and `det` (detector), each with its task checked.
    pub standard_config: PathBuf,
}

/// The fixtures, generated once per test process.
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| generate().unwrap_or_else(|e| panic!("generating test models: {e:#}")))
}

fn generate() -> anyhow::Result<Fixtures> {
    // Under the target directory, so `cargo clean` removes it; one folder per test process.
    let root = crate::profile_dir().join("csp-e2e");
    remove_stale(&root);
    let dir = root.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir)?;
    let classifier = dir.join("classifier.safetensors");
    write_classifier(&classifier)?;
    let labels = dir.join("labels.txt");
    let names: Vec<String> = (0..CLASSES).map(|i| format!("class{i}")).collect();
    std::fs::write(&labels, names.join("\n") + "\n")?;
    let detector_cfg = dir.join("tiny_yolo.cfg");
    let detector_weights = dir.join("tiny_yolo.weights");
    write_detector(&detector_cfg, &detector_weights)?;
    let standard_config = dir.join("standard.toml");
    std::fs::write(
        &standard_config,
        format!(
            "[[models]]\nname = \"cls\"\ntask = \"classify\"\nweights = {:?}\nlabels = {:?}\n\n\
             [[models]]\nname = \"det\"\ntask = \"detect\"\narch = {:?}\nweights = {:?}\n",
            classifier.display().to_string(),
            labels.display().to_string(),
            detector_cfg.display().to_string(),
            detector_weights.display().to_string(),
        ),
    )?;
    Ok(Fixtures { dir, classifier, labels, detector_cfg, detector_weights, standard_config })
}

/// Removes the fixture folders of test processes that are gone (Linux: no `/proc/<pid>`).
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// CSPDarknet-53's layout with two narrow, one-block stages: a few thousand parameters.
fn write_classifier(path: &Path) -> anyhow::Result<()> {
    let mut cfg = TimmCspConfig::cspdarknet53();
    cfg.stem.out_channels = 8;
    cfg.stages.truncate(2);
    for (stage, width) in cfg.stages.iter_mut().zip([16, 32]) {
        stage.depth = 1;
        stage.out_channels = width;
    }
    let mut net = cfg.build("tiny_cspdarknet", CLASSES);
    net.input_size = (INPUT_SIZE, INPUT_SIZE);
    let vars = VarMap::new();
    let model = Model::load_unfolded(net, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
    csp_models::weights::native::save(&model, path)?;
    Ok(())
}

/// Five stride-2 convolutions; YOLO heads at strides 32 (2x2) and 16 (4x4).
const DETECTOR_CFG: &str = "\
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=24
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=3,4,5
anchors=6,8, 10,14, 16,20, 24,30, 36,40, 50,56
classes=3
num=6

[route]
layers=3

[convolutional]
filters=24
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=6,8, 10,14, 16,20, 24,30, 36,40, 50,56
classes=3
num=6
";

fn write_detector(cfg_path: &Path, weights_path: &Path) -> anyhow::Result<()> {
    std::fs::write(cfg_path, DETECTOR_CFG)?;
    let net = csp_models::darknet::parse_cfg_file(cfg_path)?;
    anyhow::ensure!(net.num_classes == DETECTOR_CLASSES, "detector cfg has {} classes", net.num_classes);
    let vars = VarMap::new();
    let model = Model::load_unfolded(net, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
    csp_models::weights::darknet::write_model_weights(weights_path, &model)?;
    Ok(())
}

/// Writes a config file next to the fixtures, named after the calling test.
pub fn write_config(name: &str, text: &str) -> PathBuf {
    let path = fixtures().dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG): model inputs for parity checks.
pub fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Elements of one [3, 64, 64] input.
pub const INPUT_ELEMENTS: usize = 3 * INPUT_SIZE * INPUT_SIZE;
