//! Darknet `[yolo]` box decoding. A head's map is [N, A * (5 + C), H, W], laid out
//! [anchor][x, y, w, h, obj, classes...][H][W]. With s = scale_x_y:
//! centre = ((col + sigmoid(tx) * s - (s - 1) / 2) / W, (row + ...) / H) of the network input,
//! size = exp(tw) * anchor (anchors are network-input pixels), class score = sigmoid(obj) * sigmoid(cls).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::network::{Network, Op, YoloSpec};

/// What decoding needs to know about one `[yolo]` head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct YoloHead {
    /// This head's anchors (the masked ones), (width, height) in network-input pixels,
    /// in the order of the map's anchor blocks.
    pub anchors: Vec<(f32, f32)>,
    pub classes: usize,
    pub scale_x_y: f32,
}

/// A decoded box before NMS: corners in network-input pixels and every class's score.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// `[x1, y1, x2, y2]` in network-input pixels (not clamped).
    pub bbox: [f32; 4],
    /// objectness * class probability, one per class.
    pub scores: Vec<f32>,
}

impl Candidate {
    /// The best class and its score (the first on ties; NaN scores never win).
    pub fn best(&self) -> Option<(usize, f32)> {
        best_of(self.scores.iter().copied().enumerate())
    }
}

/// Highest finite-comparable score among `(class, score)` pairs; NaN is skipped.
pub(crate) fn best_of(scores: impl Iterator<Item = (usize, f32)>) -> Option<(usize, f32)> {
    scores.filter(|(_, s)| !s.is_nan()).fold(None, |best, (c, s)| match best {
        Some((_, b)) if b >= s => best,
        _ => Some((c, s)),
    })
}

impl YoloHead {
    pub fn new(anchors: Vec<(f32, f32)>, classes: usize, scale_x_y: f32) -> Result<Self> {
        if anchors.is_empty() {
            return Err(Error::Input("a yolo head needs at least one anchor".into()));
        }
        if anchors.iter().any(|&(w, h)| !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0)) {
            return Err(Error::Input(format!("yolo anchors must be positive, got {anchors:?}")));
        }
        if !(scale_x_y.is_finite() && scale_x_y > 0.0) {
            return Err(Error::Input(format!("yolo scale_x_y must be positive, got {scale_x_y}")));
        }
        Ok(YoloHead { anchors, classes, scale_x_y })
    }

    /// The head a darknet `[yolo]` section describes: its masked anchors, classes, scale_x_y.
    pub fn from_spec(spec: &YoloSpec) -> Result<Self> {
        let anchors = spec
            .mask
            .iter()
            .map(|&m| {
                spec.anchors.get(m).map(|a| (a[0], a[1])).ok_or_else(|| {
                    Error::Input(format!("yolo mask {m} names a missing anchor (there are {})", spec.anchors.len()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        YoloHead::new(anchors, spec.classes, spec.scale_x_y)
    }

    /// Every `[yolo]` layer of a network with its index, in layer order.
    pub fn from_network(net: &Network) -> Result<Vec<(usize, YoloHead)>> {
        net.layers
            .iter()
            .enumerate()
            .filter_map(|(i, layer)| match &layer.op {
                Op::Yolo(spec) => Some(YoloHead::from_spec(spec).map(|h| (i, h))),
                _ => None,
            })
            .collect()
    }

    /// Channels of the map this head reads.
    pub fn channels(&self) -> usize {
        self.anchors.len() * (self.classes + 5)
    }

    /// Decodes one head's map: per image, the boxes whose best class score exceeds
    /// `score_threshold` (strictly, as darknet). `net` is the network input (width, height).
    pub fn decode(&self, map: &Tensor, net: (usize, usize), score_threshold: f32) -> Result<Vec<Vec<Candidate>>> {
        let (n, c, gh, gw) = map
            .dims4()
            .map_err(|_| Error::Input(format!("a yolo map must be [N, C, H, W], got shape {:?}", map.dims())))?;
        if c != self.channels() {
            return Err(Error::Input(format!(
                "yolo map has {c} channels, the head expects {} ({} anchors x ({} classes + 5))",
                self.channels(),
                self.anchors.len(),
                self.classes
            )));
        }
        if net.0 == 0 || net.1 == 0 {
            return Err(Error::Input(format!("network input size must be non-empty, got {}x{}", net.0, net.1)));
        }
        let a = self.anchors.len();
        let cells = gh * gw;
        // The activations run where the map lives; only the result comes to the CPU.
        let raw = map.to_dtype(DType::F32)?.reshape((n, a, self.classes + 5, cells))?;
        let logistic = candle_nn::ops::sigmoid(&raw)?;
        // Replace the sigmoid of w and h with exp: [x, y] from logistic, [w, h] raw exp, rest logistic.
        let wh = raw.narrow(2, 2, 2)?.exp()?;
        let act = Tensor::cat(&[logistic.narrow(2, 0, 2)?, wh, logistic.narrow(2, 4, self.classes + 1)?], 2)?;
        let data = act.flatten_all()?.to_vec1::<f32>()?;

        let s = self.scale_x_y;
        let shift = 0.5 * (s - 1.0);
        let (net_w, net_h) = (net.0 as f32, net.1 as f32);
        let chan = |img: usize, anchor: usize, k: usize| ((img * a + anchor) * (self.classes + 5) + k) * cells;
        let mut out = Vec::with_capacity(n);
        for img in 0..n {
            let mut found = Vec::new();
            for (anchor, &(aw, ah)) in self.anchors.iter().enumerate() {
                let obj = &data[chan(img, anchor, 4)..][..cells];
                for (cell, &objectness) in obj.iter().enumerate() {
                    // obj * cls <= obj: a cell whose objectness fails fails for every class.
                    if objectness.is_nan() || objectness <= score_threshold {
                        continue;
                    }
                    let scores: Vec<f32> =
                        (0..self.classes).map(|k| objectness * data[chan(img, anchor, 5 + k) + cell]).collect();
                    if !scores.iter().any(|&p| p > score_threshold) {
                        continue;
                    }
                    let at = |k: usize| data[chan(img, anchor, k) + cell];
                    let (row, col) = ((cell / gw) as f32, (cell % gw) as f32);
                    let cx = (col + at(0) * s - shift) / gw as f32 * net_w;
                    let cy = (row + at(1) * s - shift) / gh as f32 * net_h;
                    let (bw, bh) = (at(2) * aw, at(3) * ah);
                    let bbox = [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0];
                    // exp overflow or NaN logits: a box nobody can place.
                    if bbox.iter().all(|v| v.is_finite()) {
                        found.push(Candidate { bbox, scores });
                    }
                }
            }
            out.push(found);
        }
        Ok(out)
    }
}

/// Decodes one head from plain parameters (see [`YoloHead::decode`]).
pub fn decode(
    map: &Tensor,
    anchors: &[(f32, f32)],
    classes: usize,
    scale_x_y: f32,
    net: (usize, usize),
    score_threshold: f32,
) -> Result<Vec<Vec<Candidate>>> {
    YoloHead::new(anchors.to_vec(), classes, scale_x_y)?.decode(map, net, score_threshold)
}

/// Decodes all heads of a model and combines their boxes per image. Every map must have the
/// same batch size.
pub fn decode_heads(
    heads: &[(Tensor, YoloHead)],
    net: (usize, usize),
    score_threshold: f32,
) -> Result<Vec<Vec<Candidate>>> {
    let mut all: Option<Vec<Vec<Candidate>>> = None;
    for (map, head) in heads {
        let per_image = head.decode(map, net, score_threshold)?;
        match all.as_mut() {
            None => all = Some(per_image),
            Some(acc) if acc.len() == per_image.len() => {
                for (dst, src) in acc.iter_mut().zip(per_image) {
                    dst.extend(src);
                }
            }
            Some(acc) => {
                return Err(Error::Input(format!(
                    "yolo maps disagree on the batch size ({} vs {})",
                    acc.len(),
                    per_image.len()
                )))
            }
        }
    }
    Ok(all.unwrap_or_default())
}
