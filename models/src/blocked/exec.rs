//! Runs a folded network on blocked maps, one image at a time (see the module docs): convs,
//! pooling, upsampling and residual adds on blocked maps, routes and slices as views of them,
//! every other layer on the usual ops through NCHW tensors.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::conv::Conv;
use super::kernel::Isa;
use super::kernel::{Kernels, LANES};
use super::map::Map;
use super::{ops, Part};
use crate::error::{Error, Result};
use crate::fusion::{Plan, Step};
use crate::layers::Activation;
use crate::model::Model;
use crate::network::{Network, Op};

/// A network's convs packed for the blocked engine, and the border every map gets.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Per layer, for its convs.
    convs: Vec<Option<Conv>>,
    /// The largest padding of a conv that reads a map (the stem reads the input with its own).
    border: usize,
}

impl Prepared {
    /// The network's convs from `conv(i)`: the folded f32 weights (`[out, in / groups, k, k]`)
    /// and biases of layer i. None when any conv has none (then the engine does not apply).
    pub fn new(
        net: &Network,
        conv: impl Fn(usize) -> Option<(Vec<f32>, Vec<f32>)>,
        isa: Isa,
    ) -> Result<Option<Prepared>> {
        let Some(kernels) = Kernels::of(isa) else { return Ok(None) };
        let (h, w) = net.input_size;
        let shapes = net.shapes(h, w)?;
        // Every layer's output as parts (channels only): what a conv reading it is packed for.
        let mut parts: Vec<Vec<Part<()>>> = Vec::with_capacity(net.layers.len());
        let mut convs = Vec::with_capacity(net.layers.len());
        for (i, layer) in net.layers.iter().enumerate() {
            let whole = vec![Part { map: (), first_block: 0, channels: shapes[i].c }];
            let view = views(&layer.op, &|j| parts.get(j).cloned());
            parts.push(view.unwrap_or(whole));
            convs.push(match &layer.op {
                Op::Conv(spec) => {
                    let Some((weight, bias)) = conv(i) else { return Ok(None) };
                    let (inputs, lanes) = match i {
                        0 => (vec![net.input_channels], 1),
                        _ => (parts[i - 1].iter().map(|p| p.channels).collect(), LANES),
                    };
                    Some(Conv::new(spec, &weight, &bias, &inputs, lanes, kernels))
                }
                _ => None,
            });
        }
        let border = net
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.op {
                Op::Conv(spec) if i > 0 => Some(spec.padding),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Ok(Some(Prepared { convs, border }))
    }

    /// The outputs of layers `wanted` for one image `x` (`[1, C, H, W]`, f32 on the CPU), as NCHW
    /// tensors, from one pass that stops at the last of them.
    pub fn run(&self, model: &Model, x: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let net = &model.net;
        let Some(&upto) = wanted.iter().max() else { return Ok(vec![]) };
        if upto >= net.layers.len() {
            return Err(Error::Input(format!("layer {upto} requested, the network has {}", net.layers.len())));
        }
        let (n, c, _, _) = x.dims4().map_err(|_| Error::Input(format!("expected [N, C, H, W], got {:?}", x.dims())))?;
        if n != 1 || c != net.input_channels {
            return Err(Error::Input(format!(
                "expected one image of {} channels, got {:?}",
                net.input_channels,
                x.dims()
            )));
        }
        let mut keep = vec![false; upto + 1];
        wanted.iter().for_each(|&w| keep[w] = true);
        let plan = Plan::new(net, true, &keep);
        let mut run = Run { border: self.border, input: Held::tensor(x.clone()), values: vec![None; upto + 1] };
        for i in 0..=upto {
            let op = &net.layers[i].op;
            if plan.steps[i] == Step::IntoNextShortcut {
                continue;
            }
            let value = match op {
                Op::Conv(_) => Held::map(self.conv(&mut run, i, None)?),
                Op::Shortcut { from, activation } if i > 0 && plan.steps[i - 1] == Step::IntoNextShortcut => {
                    // The conv before runs here, with the add in its epilogue where the shapes allow.
                    let conv =
                        self.convs[i - 1].as_ref().ok_or_else(|| Error::graph("a shortcut's conv is not prepared"))?;
                    let residual = run.map(*from)?;
                    let (h, w) = run.size(i.checked_sub(2))?;
                    let (oh, ow) = conv.spec.out_size(h, w);
                    if (residual.channels, residual.map.h, residual.map.w) == (conv.spec.out_channels, oh, ow) {
                        Held::map(self.conv(&mut run, i - 1, Some((residual.as_ref(), *activation)))?)
                    } else {
                        run.values[i - 1] = Some(Held::map(self.conv(&mut run, i - 1, None)?));
                        let value = run.other(model, i)?;
                        run.values[i - 1] = None;
                        value
                    }
                }
                Op::Shortcut { from, activation } => {
                    let (a, b) = (run.map(i - 1)?, run.map(*from)?);
                    if (a.channels, a.map.h, a.map.w) == (b.channels, b.map.h, b.map.w) {
                        Held::map(ops::add(a.as_ref(), b.as_ref(), *activation, self.border))
                    } else {
                        run.other(model, i)?
                    }
                }
                Op::MaxPool { size, stride, padding } => {
                    Held::map(ops::max_pool(run.source_map(i)?.as_ref(), *size, *stride, *padding, self.border))
                }
                Op::Upsample { stride } => Held::map(ops::upsample(run.source_map(i)?.as_ref(), *stride, self.border)),
                Op::Route { .. } | Op::Slice { .. } => {
                    let mut sources = Vec::new();
                    for j in op.references() {
                        sources.push((j, run.parts(j)?));
                    }
                    let parts_of = |j: usize| sources.iter().find(|(l, _)| *l == j).map(|(_, p)| p.clone());
                    match views(op, &parts_of) {
                        Some(view) => Held { parts: Some(view), tensor: None },
                        None => run.other(model, i)?,
                    }
                }
                Op::Yolo(_) if i > 0 => run.held(i - 1)?.clone(),
                _ => run.other(model, i)?,
            };
            run.values[i] = Some(value);
            // Free what no later layer reads and the caller did not ask for.
            if i > 0 && plan.last_use[i - 1] <= i && !keep[i - 1] {
                run.values[i - 1] = None;
            }
            for r in op.references() {
                if plan.last_use[r] <= i && !keep[r] {
                    run.values[r] = None;
                }
            }
        }
        wanted.iter().map(|&w| run.tensor(w)).collect()
    }

    /// Conv `i` on its input (the image itself for layer 0), plus `residual`.
    fn conv(&self, run: &mut Run, i: usize, residual: Option<(Part<&Map>, Activation)>) -> Result<Map> {
        let conv = self.convs[i].as_ref().ok_or_else(|| Error::graph(format!("conv {i} is not prepared")))?;
        if i == 0 {
            let x = run.input.tensor.as_ref().expect("the input tensor");
            let (_, c, h, w) = x.dims4()?;
            let image = x.flatten_all()?.to_vec1::<f32>()?;
            let planar = Map::planar(&image, c, h, w, conv.spec.padding);
            let part = Part { map: &planar, first_block: 0, channels: c };
            return Ok(conv.run(&[part], residual, self.border));
        }
        let parts = run.parts(i - 1)?;
        let refs: Vec<Part<&Map>> =
            parts.iter().map(|p| Part { map: &*p.map, first_block: p.first_block, channels: p.channels }).collect();
        Ok(conv.run(&refs, residual, self.border))
    }
}

/// A route's or slice's output as views of its sources' parts (`parts_of(j)`: layer j's), where
/// every piece starts on a block; None otherwise, and for any other layer.
fn views<M: Clone>(op: &Op, parts_of: &dyn Fn(usize) -> Option<Vec<Part<M>>>) -> Option<Vec<Part<M>>> {
    match op {
        Op::Route { layers, groups, group_id } => {
            let mut out = Vec::new();
            for &l in layers {
                let parts = parts_of(l)?;
                if *groups == 1 {
                    out.extend(parts);
                } else {
                    let c = parts.iter().map(|p| p.channels).sum::<usize>() / groups;
                    out.extend(Part::slice(&parts, group_id * c, c)?);
                }
            }
            Some(out)
        }
        Op::Slice { from, start, len } => Part::slice(&parts_of(*from)?, *start, *len),
        _ => None,
    }
}

/// A layer's output, in either form or both (each made from the other when first needed).
#[derive(Clone, Default)]
struct Held {
    parts: Option<Vec<Part<Arc<Map>>>>,
    tensor: Option<Tensor>,
}

impl Held {
    fn map(map: Map) -> Held {
        let channels = map.channels;
        Held { parts: Some(vec![Part { map: Arc::new(map), first_block: 0, channels }]), tensor: None }
    }

    fn tensor(t: Tensor) -> Held {
        Held { parts: None, tensor: Some(t) }
    }
}

/// One pass's state.
struct Run {
    border: usize,
    /// The network input, for layer 0.
    input: Held,
    values: Vec<Option<Held>>,
}

impl Run {
    fn held(&self, j: usize) -> Result<&Held> {
        self.values[j].as_ref().ok_or_else(|| Error::graph(format!("output of layer {j} was dropped")))
    }

    fn held_mut(&mut self, j: Option<usize>) -> Result<&mut Held> {
        match j {
            None => Ok(&mut self.input),
            Some(j) => self.values[j].as_mut().ok_or_else(|| Error::graph(format!("output of layer {j} was dropped"))),
        }
    }

    /// The height and width of layer j's output (None: the input's).
    fn size(&mut self, j: Option<usize>) -> Result<(usize, usize)> {
        let held = self.held_mut(j)?;
        Ok(match (&held.parts, &held.tensor) {
            (Some(parts), _) => (parts[0].map.h, parts[0].map.w),
            (None, Some(t)) => (t.dim(2)?, t.dim(3)?),
            (None, None) => unreachable!("a value in one form at least"),
        })
    }

    /// Layer j's output as blocked parts (converted from NCHW the first time).
    fn parts(&mut self, j: usize) -> Result<Vec<Part<Arc<Map>>>> {
        self.parts_of(Some(j))
    }

    fn parts_of(&mut self, j: Option<usize>) -> Result<Vec<Part<Arc<Map>>>> {
        let border = self.border;
        let held = self.held_mut(j)?;
        if held.parts.is_none() {
            let t = held.tensor.as_ref().expect("a value in one form at least");
            held.parts = Some(vec![blocked(t, border)?]);
        }
        Ok(held.parts.clone().expect("just made"))
    }

    /// Layer j's output as one part (a concat's parts copied into one map).
    fn map(&mut self, j: usize) -> Result<Part<Arc<Map>>> {
        self.single(Some(j))
    }

    /// The part layer i reads: its previous layer's output, or the input.
    fn source_map(&mut self, i: usize) -> Result<Part<Arc<Map>>> {
        self.single(i.checked_sub(1))
    }

    fn single(&mut self, j: Option<usize>) -> Result<Part<Arc<Map>>> {
        let mut parts = self.parts_of(j)?;
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        blocked(&self.tensor_of(j)?, self.border)
    }

    /// Layer j's output as an NCHW tensor (converted from its parts the first time).
    fn tensor(&mut self, j: usize) -> Result<Tensor> {
        self.tensor_of(Some(j))
    }

    fn tensor_of(&mut self, j: Option<usize>) -> Result<Tensor> {
        let held = self.held_mut(j)?;
        if held.tensor.is_none() {
            let parts = held.parts.as_ref().expect("a value in one form at least");
            let (h, w) = (parts[0].map.h, parts[0].map.w);
            let mut data = Vec::new();
            for p in parts {
                p.map.planes_into(p.first_block, p.channels, &mut data);
            }
            let c = data.len() / (h * w).max(1);
            held.tensor = Some(Tensor::from_vec(data, (1, c, h, w), &Device::Cpu)?);
        }
        Ok(held.tensor.clone().expect("just made"))
    }

    /// Layer i on the usual ops, its inputs as NCHW tensors.
    fn other(&mut self, model: &Model, i: usize) -> Result<Held> {
        let op = &model.net.layers[i].op;
        let mut inputs: Vec<(Option<usize>, Tensor)> = Vec::new();
        if op.reads_previous() {
            inputs.push((i.checked_sub(1), self.tensor_of(i.checked_sub(1))?));
        }
        for r in op.references() {
            inputs.push((Some(r), self.tensor(r)?));
        }
        let find = |j: Option<usize>| -> Result<&Tensor> {
            inputs
                .iter()
                .find(|(k, _)| *k == j)
                .map(|(_, t)| t)
                .ok_or_else(|| Error::graph(format!("layer {i} reads {j:?}")))
        };
        let prev = || find(i.checked_sub(1));
        let get = |j: usize| find(Some(j));
        Ok(Held::tensor(model.run_other(i, &prev, &get)?))
    }
}

/// One NCHW image (`[1, C, H, W]`) as one blocked part, its map with `border`.
fn blocked(t: &Tensor, border: usize) -> Result<Part<Arc<Map>>> {
    let (_, c, h, w) = t.dims4()?;
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    let map = Map::from_planes(|ch| &data[ch * h * w..][..h * w], c, h, w, border);
    Ok(Part { map: Arc::new(map), first_block: 0, channels: c })
}
