//! Parameter, FLOPs and memory-traffic accounting, per layer and in total.
//!
//! Conventions follow the paper: FLOPs = 2 x multiply-adds of convolutions and linear layers
//! (darknet's BFLOPs); "conv weight params" counts convolution and linear weights only (the
//! paper's table), "params" every learnable parameter (conv weights and biases, batch-norm
//! scale and shift, linear weights and biases: timm's count). CIO is the paper's memory-traffic
//! measure: the sum over convolutions of input plus output sizes, in elements.
//!
//! Detectors add the paper's pyramid-memory measure (figures 7 and 8): the feature maps produced
//! while building the feature pyramid, i.e. the sum of the output elements (C x H x W, one image)
//! of every neck layer. Neck layers are those whose origin starts with [`NECK_PREFIX`]: the
//! built-in detectors name their lateral convs, resampled copies, concatenations, max-outs and
//! PANet/SPP blocks so, and keep the per-head layers (3x3 conv, SAM, prediction conv, yolo)
//! under `head.`; the backbone is not counted, nor are one-layer routes (they re-read a map,
//! they make none). Darknet cfgs carry no such names and report 0.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::network::{Network, Op, Shape};

/// Origin prefix of the layers that build a detector's feature pyramid.
pub const NECK_PREFIX: &str = "neck.";

#[derive(Clone, Debug, Serialize)]
pub struct LayerCost {
    pub index: usize,
    pub kind: &'static str,
    pub name: String,
    pub output: Shape,
    pub params: usize,
    pub conv_weight_params: usize,
    pub flops: u64,
    pub cio: u64,
    /// Whether the layer builds the feature pyramid (counts towards `Summary::neck_elems`).
    pub neck: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub arch: String,
    pub input: (usize, usize),
    pub params: usize,
    pub conv_weight_params: usize,
    pub flops: u64,
    /// FLOPs / 1e9, the paper's unit.
    pub bflops: f64,
    /// Convolution input + output elements.
    pub cio: u64,
    /// Output elements of the neck layers for one image (see the module docs).
    pub neck_elems: u64,
    pub layers: Vec<LayerCost>,
}

/// Accounts the network for one image of `h` x `w`.
pub fn summarize(net: &Network, h: usize, w: usize) -> Result<Summary> {
    let shapes = net.shapes(h, w)?;
    let input = Shape { c: net.input_channels, h, w };
    let mut layers = Vec::with_capacity(shapes.len());
    for (i, (layer, &out)) in net.layers.iter().zip(&shapes).enumerate() {
        let inp = if i == 0 { input } else { shapes[i - 1] };
        let (name, params, weights, flops, cio) = match &layer.op {
            Op::Conv(c) => {
                let weights = c.out_channels * (c.in_channels / c.groups) * c.kernel * c.kernel;
                // With batch norm: scale + shift; without: the conv's own bias.
                let extra = if c.batch_norm { 2 * c.out_channels } else { c.out_channels };
                // Shapes bound each knob, but a huge layer can still overflow its product.
                let flops = (2 * weights as u64)
                    .checked_mul((out.h * out.w) as u64)
                    .ok_or_else(|| Error::graph(format!("layer {i} ({}): FLOPs overflow", c.name)))?;
                (c.name.clone(), weights + extra, weights, flops, (inp.elems() + out.elems()) as u64)
            }
            Op::Linear(l) => {
                let weights = l.in_features * l.out_features;
                (l.name.clone(), weights + l.out_features, weights, 2 * weights as u64, 0)
            }
            _ => (String::new(), 0, 0, 0, 0),
        };
        // A one-layer route only re-reads a map: no new feature map.
        let alias = matches!(&layer.op, Op::Route { layers, groups: 1, .. } if layers.len() == 1);
        let neck = layer.origin.starts_with(NECK_PREFIX) && !alias;
        let kind = layer.op.kind();
        let conv_weight_params = weights;
        layers.push(LayerCost { index: i, kind, name, output: out, params, conv_weight_params, flops, cio, neck });
    }
    let flops: u64 = layers.iter().map(|l| l.flops).sum();
    Ok(Summary {
        arch: net.arch.clone(),
        input: (h, w),
        params: layers.iter().map(|l| l.params).sum(),
        conv_weight_params: layers.iter().map(|l| l.conv_weight_params).sum(),
        flops,
        bflops: flops as f64 / 1e9,
        cio: layers.iter().map(|l| l.cio).sum(),
        neck_elems: layers.iter().filter(|l| l.neck).map(|l| l.output.elems() as u64).sum(),
        layers,
    })
}
