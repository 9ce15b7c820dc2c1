//! Darknet `.cfg` parsing (with the cost summary the server computes at load) and `.weights`
//! loading against a small fixed cfg, up to a forward pass.

use std::path::Path;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use csp_models::darknet::parse_cfg_str;
use csp_models::weights::darknet::read_weights_bytes;
use csp_models::{flops, Model, Network};

/// Input: cfg text (invalid UTF-8 is replaced, so mutations keep reaching the parser).
pub fn cfg(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Ok(net) = parse_cfg_str(&text, "fuzz.cfg") else { return false };
    let (h, w) = net.input_size;
    flops::summarize(&net, h, w).is_ok()
}

/// The cfg `weights` inputs are read for: batch-normalised, biased and grouped convolutions.
pub const WEIGHTS_CFG: &str = "[net]
height=8
width=8
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=4
size=3
groups=2
stride=2
pad=1
activation=linear

[convolutional]
batch_normalize=1
filters=2
size=1
stride=1
pad=0
activation=mish
";

fn weights_net() -> &'static Network {
    static NET: OnceLock<Network> = OnceLock::new();
    // The cfg is a constant that the seed generator and the tests also parse.
    NET.get_or_init(|| parse_cfg_str(WEIGHTS_CFG, "fuzz.cfg").expect("WEIGHTS_CFG parses"))
}

/// Input: a `.weights` file for [`WEIGHTS_CFG`]. A complete one is loaded as the server loads
/// it (batch norm folded) and run once, as the server's warm-up does.
pub fn weights(bytes: &[u8]) -> bool {
    let net = weights_net();
    let device = Device::Cpu;
    let Ok(read) = read_weights_bytes(bytes, Path::new("fuzz.weights"), net, &device) else { return false };
    if read.incomplete().is_some() {
        return false;
    }
    let vb = VarBuilder::from_tensors(read.tensors, DType::F32, &device);
    let Ok(model) = Model::load_unfolded(net.clone(), vb).and_then(|m| m.folded()) else { return false };
    let (h, w) = net.input_size;
    let Ok(x) = Tensor::zeros((1, net.input_channels, h, w), DType::F32, &device) else { return false };
    model.forward(&x).is_ok()
}

pub const CFG_DICTIONARY: &[&[u8]] = &[
    b"[net]\n",
    b"[convolutional]\n",
    b"[maxpool]\n",
    b"[avgpool]\n",
    b"[route]\n",
    b"[shortcut]\n",
    b"[upsample]\n",
    b"[softmax]\n",
    b"[yolo]\n",
    b"[sam]\n",
    b"[scale_channels]\n",
    b"width=",
    b"height=",
    b"channels=",
    b"filters=",
    b"size=",
    b"stride=",
    b"stride_x=",
    b"pad=",
    b"padding=",
    b"groups=",
    b"group_id=",
    b"layers=",
    b"from=",
    b"mask=",
    b"anchors=",
    b"classes=",
    b"num=",
    b"batch_normalize=1\n",
    b"activation=",
    b"-1",
    b"-100",
    b"0",
    b"18446744073709551615",
    b"4294967296",
    b",",
    b"#",
    b"\n",
];

pub const WEIGHTS_DICTIONARY: &[&[u8]] = &[
    b"\0\0\0\0\x02\0\0\0\0\0\0\0",
    b"\0\0\0\0\x01\0\0\0\0\0\0\0",
    b"\0\0\xc0\x7f",
    b"\0\0\x80\x7f",
    b"\0\0\x80\xff",
    b"\xff\xff\x7f\x7f",
    b"\0\0\0\0",
];
