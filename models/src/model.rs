//! Runs a [`Network`]: loads its parameters through a `VarBuilder` (file, tensors or a `VarMap`
//! for training) and executes the layers in order, keeping each output only as long as a later
//! layer still reads it.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::blocked::Isa;
use crate::device::Precision;
use crate::error::{Error, Result};
use crate::fusion::Plan;
use crate::layers::{
    global_avg_pool, global_avg_pool_cpu, linear_cpu, max_pool, max_pool_differentiable, Activation, ConvLayer,
};
use crate::network::{Network, Op};

#[derive(Clone, Debug)]
enum Params {
    None,
    Conv(ConvLayer),
    Linear(candle_nn::Linear),
}

/// Batch statistics of one batch-normed conv in a training pass.
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// The conv's [`crate::layers::ConvSpec`] name: its running statistics are
    /// `<conv>.bn.running_mean` and `<conv>.bn.running_var`.
    pub conv: String,
    pub mean: Tensor,
    /// Unbiased variance.
    pub var: Tensor,
}

/// running = (1 - momentum) * running + momentum * batch, for every batch-normed conv in `stats`,
/// in the `VarMap` the model was built from (training; momentum 1 sets them: random weights).
pub fn update_running_stats(varmap: &candle_nn::VarMap, stats: &[BatchStats], momentum: f64) -> Result<()> {
    let vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    for s in stats {
        for (suffix, batch) in [("running_mean", &s.mean), ("running_var", &s.var)] {
            let name = format!("{}.bn.{suffix}", s.conv);
            let v = vars.get(&name).ok_or_else(|| Error::graph(format!("no running statistic `{name}`")))?;
            let next = ((v.as_tensor() * (1.0 - momentum))? + (batch.to_dtype(v.dtype())? * momentum)?)?;
            v.set(&next)?;
        }
    }
    Ok(())
}

/// How inference runs a folded model's convolutions on the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// The blocked executor ([`crate::blocked`]): conv + bias + activation (+ residual) in one
    /// kernel, maps in 16-channel blocks. Folded f32 models on the CPU; other devices and dtypes
    /// use candle's ops either way.
    #[default]
    Fast,
    /// candle's own ops throughout: the reference path.
    Candle,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Fast => "fast",
            Engine::Candle => "candle",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Model {
    pub net: Network,
    params: Vec<Params>,
    device: Device,
    precision: Precision,
    /// The convs packed for the blocked executor (`Engine::Fast`, f32 on the CPU): see
    /// [`crate::blocked`].
    blocked: Option<Arc<crate::blocked::Prepared>>,
}

impl Model {
    /// Builds the model with unfolded batch norm (training, conversion). Checks the graph first.
    pub fn load_unfolded(net: Network, vb: VarBuilder) -> Result<Self> {
        let (h, w) = net.input_size;
        net.shapes(h, w)?;
        let device = vb.device().clone();
        let mut params = Vec::with_capacity(net.layers.len());
        for layer in &net.layers {
            params.push(match &layer.op {
                Op::Conv(spec) => Params::Conv(ConvLayer::load(spec, vb.clone())?),
                Op::Linear(l) => {
                    let vb = vb.pp(&l.name);
                    let bound = 1.0 / (l.in_features as f64).sqrt();
                    let init = candle_nn::Init::Uniform { lo: -bound, up: bound };
                    let weight = vb.get_with_hints((l.out_features, l.in_features), "weight", init)?;
                    let bias = vb.get_with_hints(l.out_features, "bias", init)?;
                    Params::Linear(candle_nn::Linear::new(weight, Some(bias)))
                }
                _ => Params::None,
            });
        }
        Ok(Model { net, params, device, precision: Precision::F32, blocked: None })
    }

    /// Builds the inference model: batch norm folded into the convolutions.
    pub fn load(net: Network, vb: VarBuilder) -> Result<Self> {
        Self::load_unfolded(net, vb)?.folded()
    }

    pub fn folded(&self) -> Result<Self> {
        let mut m = self.clone();
        for (p, layer) in m.params.iter_mut().zip(&mut m.net.layers) {
            if let Params::Conv(c) = p {
                *c = c.fold()?;
                // The folded network has no batch norm: saving it writes conv biases instead.
                layer.op = Op::Conv(c.spec.clone());
            }
        }
        m.with_engine(Engine::default())
    }

    /// The same model with its convolutions on `engine` (see [`Engine`]). `Fast` applies to
    /// folded f32 models on the CPU; others stay on candle's ops.
    pub fn with_engine(&self, engine: Engine) -> Result<Self> {
        let mut m = self.clone();
        m.blocked = match engine {
            Engine::Fast if m.blocked.is_none() => m.prepare_blocked(Isa::fastest())?,
            Engine::Fast => m.blocked,
            Engine::Candle => None,
        };
        Ok(m)
    }

    /// The blocked executor's convs, on `isa`'s kernels: None unless every conv is folded (no
    /// batch norm) and f32 on the CPU.
    fn prepare_blocked(&self, isa: Isa) -> Result<Option<Arc<crate::blocked::Prepared>>> {
        if !self.device.is_cpu() || self.precision != Precision::F32 {
            return Ok(None);
        }
        let conv = |i: usize| -> Option<(Vec<f32>, Vec<f32>)> {
            let Params::Conv(c) = &self.params[i] else { return None };
            if c.bn.is_some() || c.weight.dtype() != DType::F32 {
                return None;
            }
            let weight = c.weight.flatten_all().ok()?.to_vec1::<f32>().ok()?;
            let bias = match &c.bias {
                Some(b) => b.to_vec1::<f32>().ok()?,
                None => vec![0.0; c.spec.out_channels],
            };
            Some((weight, bias))
        };
        Ok(crate::blocked::Prepared::new(&self.net, conv, isa)?.map(Arc::new))
    }

    /// The same model on the fast engine with `isa`'s kernels (tests and comparisons); None
    /// where the CPU lacks them or the model is not on the fast engine.
    pub fn with_cpu_isa(&self, isa: Isa) -> Option<Self> {
        self.blocked.as_ref()?;
        let mut m = self.clone();
        m.blocked = Some(m.prepare_blocked(isa).ok()??);
        Some(m)
    }

    /// The same model computing in `precision`: parameters converted (from f32, so converting
    /// back and forth loses nothing beyond the one rounding), inputs converted on the way in and
    /// outputs back to f32 on the way out. Not f32: candle's ops, whatever the engine.
    pub fn with_precision(&self, precision: Precision) -> Result<Self> {
        if self.device.is_cpu() {
            precision.check_cpu()?;
        }
        let dtype = precision.dtype();
        let mut m = self.clone();
        for p in &mut m.params {
            match p {
                Params::Conv(c) => *c = c.to_dtype(dtype)?,
                Params::Linear(l) => {
                    let bias = l.bias().map(|b| b.to_dtype(dtype)).transpose()?;
                    *l = candle_nn::Linear::new(l.weight().to_dtype(dtype)?, bias);
                }
                Params::None => {}
            }
        }
        m.precision = precision;
        if precision != Precision::F32 {
            m.blocked = None;
        }
        Ok(m)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The engine the convolutions run on.
    pub fn engine(&self) -> Engine {
        if self.blocked.is_some() {
            Engine::Fast
        } else {
            Engine::Candle
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Named parameter tensors in our checkpoint layout (unfolded when loaded unfolded).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (i, p) in self.params.iter().enumerate() {
            match p {
                Params::Conv(c) => {
                    let n = &c.spec.name;
                    out.push((format!("{n}.conv.weight"), c.weight.clone()));
                    if let Some(b) = &c.bias {
                        out.push((format!("{n}.conv.bias"), b.clone()));
                    }
                    if let Some(bn) = &c.bn {
                        out.push((format!("{n}.bn.weight"), bn.weight.clone()));
                        out.push((format!("{n}.bn.bias"), bn.bias.clone()));
                        out.push((format!("{n}.bn.running_mean"), bn.running_mean.clone()));
                        out.push((format!("{n}.bn.running_var"), bn.running_var.clone()));
                    }
                }
                Params::Linear(l) => {
                    let n = &l_name(&self.net, i);
                    out.push((format!("{n}.weight"), l.weight().clone()));
                    if let Some(b) = l.bias() {
                        out.push((format!("{n}.bias"), b.clone()));
                    }
                }
                Params::None => {}
            }
        }
        out
    }

    /// Inference on a [N, C, H, W] batch. Returns the output of [`Network::output_layer`]:
    /// [N, classes] logits for classifiers, the raw map otherwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, self.net.output_layer())
    }

    /// Output of layer `upto` (feature extraction); a 1x1 map comes back as [N, C].
    pub fn run(&self, x: &Tensor, upto: usize) -> Result<Tensor> {
        let y = self.run_many(x, &[upto])?.pop().ok_or_else(|| Error::graph("no output"))?;
        if y.rank() == 4 && y.dim(2)? == 1 && y.dim(3)? == 1 {
            Ok(y.flatten_from(1)?)
        } else {
            Ok(y)
        }
    }

    /// The raw map fed to every `Yolo` layer, in layer order: [N, anchors * (5 + classes), H, W]
    /// each, before any decoding.
    pub fn forward_heads(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let heads: Vec<usize> =
            self.net.layers.iter().enumerate().filter(|(_, l)| matches!(l.op, Op::Yolo(_))).map(|(i, _)| i).collect();
        if heads.is_empty() {
            return Err(Error::Input(format!("`{}` has no yolo heads", self.net.arch)));
        }
        self.run_many(x, &heads)
    }

    /// Outputs of the layers `wanted`, in that order, from one pass that stops at the last of
    /// them; every other output is dropped as soon as no later layer reads it.
    pub fn run_many(&self, x: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let n = x.dim(0).unwrap_or(1);
        if n > 1 && self.engine() == Engine::Fast && x.device().is_cpu() {
            // One image at a time on each thread: its maps stay in cache from layer to layer, where
            // a whole batch's would not (cspresnet50 at batch 8 took 1.35x the per-image time of
            // batch 1 when run layer by layer), and no layer waits for the other threads. The
            // images left over once every thread has had its share (n mod threads) run one by
            // one on the whole team, rather than leave threads idle.
            let image = |i: usize| self.run_image(&x.narrow(0, i, 1)?, wanted);
            let shared = n - n % crate::team::threads();
            let slots: Vec<std::sync::Mutex<Option<Result<Vec<Tensor>>>>> =
                (0..shared).map(|_| std::sync::Mutex::new(None)).collect();
            crate::team::for_each(shared, |i| {
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(image(i));
            });
            let per_image = slots
                .into_iter()
                .map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every image ran"))
                .chain((shared..n).map(image))
                .collect::<Result<Vec<_>>>()?;
            return (0..wanted.len())
                .map(|w| Ok(Tensor::cat(&per_image.iter().map(|outs| &outs[w]).collect::<Vec<_>>(), 0)?))
                .collect();
        }
        let outs = match n {
            1 => self.run_image(x, wanted)?,
            _ => self.run_layers(x, wanted, None)?,
        };
        // Callers read f32 whatever the model computes in.
        outs.into_iter().map(|t| Ok(t.to_dtype(DType::F32)?)).collect()
    }

    /// One image: on the blocked executor where the model has it and the image is f32 on the
    /// CPU, else layer by layer.
    fn run_image(&self, x: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        match &self.blocked {
            Some(blocked) if x.device().is_cpu() && x.dtype() == DType::F32 => blocked.run(self, x, wanted),
            _ => self.run_layers(x, wanted, None),
        }
    }

    /// Training pass: like [`Model::run_many`], but batch norm uses batch statistics and every
    /// op is one candle can differentiate. Also returns, per batch-normed conv, its name and
    /// the (detached) batch mean and unbiased variance, for the running-statistics update.
    pub fn forward_train(&self, x: &Tensor, wanted: &[usize]) -> Result<(Vec<Tensor>, Vec<BatchStats>)> {
        let mut stats = Vec::new();
        let outs = self.run_layers(x, wanted, Some(&mut stats))?;
        Ok((outs, stats))
    }

    /// Index of every `Yolo` layer, in layer order.
    pub fn head_layers(&self) -> Vec<usize> {
        self.net.layers.iter().enumerate().filter(|(_, l)| matches!(l.op, Op::Yolo(_))).map(|(i, _)| i).collect()
    }

    /// `train`: collect batch statistics and use differentiable pooling/upsampling.
    fn run_layers(&self, x: &Tensor, wanted: &[usize], mut train: Option<&mut Vec<BatchStats>>) -> Result<Vec<Tensor>> {
        let Some(&upto) = wanted.iter().max() else { return Ok(vec![]) };
        if upto >= self.net.layers.len() {
            return Err(Error::Input(format!("layer {upto} requested, the network has {}", self.net.layers.len())));
        }
        let mut keep = vec![false; upto + 1];
        for &w in wanted {
            keep[w] = true;
        }
        let (_, c, _, _) = x.dims4().map_err(|_| Error::Input(format!("expected [N, C, H, W], got {:?}", x.dims())))?;
        if c != self.net.input_channels {
            return Err(Error::Input(format!("expected {} channels, got {c}", self.net.input_channels)));
        }
        let x = x.to_dtype(self.precision.dtype())?;
        // Every layer runs as it is (no fusions): the reference path and training.
        let plan = Plan::new(&self.net, false, &keep);
        let mut outs: Vec<Option<Tensor>> = vec![None; upto + 1];
        for i in 0..=upto {
            let get = |j: usize| -> Result<&Tensor> {
                outs[j].as_ref().ok_or_else(|| Error::graph(format!("output of layer {j} was dropped")))
            };
            let prev = || -> Result<&Tensor> {
                if i == 0 {
                    Ok(&x)
                } else {
                    get(i - 1)
                }
            };
            let y = match (&self.net.layers[i].op, &self.params[i]) {
                (Op::Conv(_), Params::Conv(c)) => Some(match train.as_deref_mut() {
                    None => c.forward(prev()?)?,
                    Some(stats) => {
                        let (y, batch) = c.forward_train(prev()?)?;
                        if let Some((mean, var)) = batch {
                            stats.push(BatchStats {
                                conv: c.spec.name.clone(),
                                mean: mean.detach(),
                                var: var.detach(),
                            });
                        }
                        y
                    }
                }),
                (op, params) => Some(self.run_layer(i, op, params, &prev, &get, train.is_some())?),
            };
            outs[i] = y;
            // Free what no later layer reads and the caller did not ask for.
            if i > 0 && plan.last_use[i - 1] <= i && !keep[i - 1] {
                outs[i - 1] = None;
            }
            for r in self.net.layers[i].op.references() {
                if plan.last_use[r] <= i && !keep[r] {
                    outs[r] = None;
                }
            }
        }
        wanted
            .iter()
            .map(|&w| outs[w].clone().ok_or_else(|| Error::graph(format!("output of layer {w} was dropped"))))
            .collect()
    }

    /// Layer `i` of an inference pass on the usual ops, for the blocked executor's layers
    /// without a blocked version (`prev` and `get` as in [`Model::run_layer`]).
    pub(crate) fn run_other<'a>(
        &self,
        i: usize,
        prev: &dyn Fn() -> Result<&'a Tensor>,
        get: &dyn Fn(usize) -> Result<&'a Tensor>,
    ) -> Result<Tensor> {
        let op = &self.net.layers[i].op;
        match (op, &self.params[i]) {
            (Op::Conv(_), Params::Conv(c)) => Ok(c.forward(prev()?)?),
            (op, params) => self.run_layer(i, op, params, prev, get, false),
        }
    }

    /// Layer `i` on its own: every op but a conv in inference (which `run_layers` runs with the
    /// plan's fusions). `train`: differentiable pooling and upsampling.
    fn run_layer<'a>(
        &self,
        i: usize,
        op: &Op,
        params: &Params,
        prev: &dyn Fn() -> Result<&'a Tensor>,
        get: &dyn Fn(usize) -> Result<&'a Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        // The fast engine's own CPU code for the classifier's last layers; candle's ops otherwise
        // (the reference engine, training, other devices and dtypes: these return None there).
        let fast = || !train && self.engine() == Engine::Fast;
        Ok(match (op, params) {
            (Op::Linear(_), Params::Linear(l)) => {
                let x = prev()?.flatten_from(1)?;
                let own = if fast() { linear_cpu(&x, l.weight(), l.bias())? } else { None };
                own.map_or_else(|| l.forward(&x), Ok)?
            }
            (Op::MaxPool { size, stride, padding }, _) if train => {
                max_pool_differentiable(prev()?, *size, *stride, *padding)?
            }
            (Op::MaxPool { size, stride, padding }, _) => max_pool(prev()?, *size, *stride, *padding)?,
            (Op::AvgPool, _) => {
                let x = prev()?;
                let own = if fast() { global_avg_pool_cpu(x)? } else { None };
                own.map_or_else(|| global_avg_pool(x), Ok)?
            }
            (Op::Route { layers, groups, group_id }, _) => {
                let parts = layers
                    .iter()
                    .map(|&l| {
                        let t = get(l)?;
                        if *groups == 1 {
                            return Ok(t.clone());
                        }
                        let n = t.dim(1)? / groups;
                        Ok(t.narrow(1, group_id * n, n)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                if parts.len() == 1 {
                    parts[0].clone()
                } else {
                    Tensor::cat(&parts, 1)?
                }
            }
            (Op::Slice { from, start, len }, _) => get(*from)?.narrow(1, *start, *len)?,
            (Op::Shortcut { from, activation }, _) => shortcut(prev()?, get(*from)?, *activation)?,
            (Op::Upsample { stride }, _) => {
                let t = prev()?;
                let (n, c, h, w) = t.dims4()?;
                if train {
                    // candle's upsample backward overwrites instead of accumulating the
                    // gradient; a broadcast is the same op with a correct backward.
                    let s = *stride;
                    t.reshape((n, c, h, 1, w, 1))?.broadcast_as((n, c, h, s, w, s))?.reshape((n, c, h * s, w * s))?
                } else {
                    t.upsample_nearest2d(h * stride, w * stride)?
                }
            }
            (Op::Maxout { out_channels }, _) => {
                let t = prev()?;
                let (n, c, h, w) = t.dims4()?;
                // Channel k goes to group k mod M: view as [N, c/M, M, H, W] and max over dim 1.
                t.reshape((n, c / out_channels, *out_channels, h, w))?.max(1)?
            }
            (Op::Softmax, _) => candle_nn::ops::softmax(prev()?, 1)?,
            (Op::Yolo(_), _) => prev()?.clone(),
            (Op::Sam { from }, _) => (prev()? * get(*from)?)?,
            (Op::ScaleChannels { from }, _) => get(*from)?.broadcast_mul(prev()?)?,
            (op, _) => return Err(Error::graph(format!("layer {i} ({}) has no parameters loaded", op.kind()))),
        })
    }

    /// Softmax probabilities for classifier logits [N, classes].
    pub fn probabilities(logits: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax(logits, D::Minus1)?)
    }
}

/// Darknet's shortcut: `a` + `from` on the leading channels both have (the rest of `a` as it is),
/// then `activation`.
fn shortcut(a: &Tensor, from: &Tensor, activation: Activation) -> Result<Tensor> {
    let b = sample_like(from, a)?;
    let (ca, cb) = (a.dim(1)?, b.dim(1)?);
    let sum = if ca == cb {
        (a + &b)?
    } else {
        let n = ca.min(cb);
        let head = (a.narrow(1, 0, n)? + b.narrow(1, 0, n)?)?;
        if n == ca {
            head
        } else {
            Tensor::cat(&[head, a.narrow(1, n, ca - n)?], 1)?
        }
    };
    Ok(activation.forward(&sum)?)
}

/// Darknet's shortcut reads a larger `from` map at every `stride`-th pixel (stride = the integer
/// width ratio) over the size of `like`; equal sizes pass through.
fn sample_like(from: &Tensor, like: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = like.dims4()?;
    let (_, _, hf, wf) = from.dims4()?;
    if (hf, wf) == (h, w) {
        return Ok(from.clone());
    }
    let stride = (wf / w.max(1)).max(1);
    let pick = |n: usize| Tensor::arange_step(0u32, (n * stride) as u32, stride as u32, from.device());
    Ok(from.index_select(&pick(h)?, 2)?.index_select(&pick(w)?, 3)?)
}

fn l_name(net: &Network, i: usize) -> String {
    match &net.layers[i].op {
        Op::Linear(l) => l.name.clone(),
        _ => format!("layers.{i}"),
    }
}
