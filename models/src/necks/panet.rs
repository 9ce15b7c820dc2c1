//! SPP + PANet, layer for layer as in the official `csresnext50-panet-spp.cfg` and
//! `csdarknet53-panet-spp.cfg` (which share this part), for any number of scales.
//!
//! With widths w_i = `channels` x 2^i from the finest scale (128, 256, 512 in the cfgs):
//! - SPP on the coarsest backbone map: 1x1 w, 3x3 2w, 1x1 w; stride-1 max pools of each size in
//!   `spp_pools` on that map, concatenated largest window first with the map itself; 1x1 w,
//!   3x3 2w, 1x1 w. That is P_top.
//! - Top-down: P_{i+1} -> 1x1 w_i -> 2x upsampling; the backbone map of scale i -> 1x1 w_i;
//!   concatenated [lateral, upsampled] -> five convs (1x1 w_i, 3x3 2w_i, 1x1, 3x3, 1x1) = P_i.
//! - Bottom-up: N_0 = P_0; N_{i-1} -> 3x3/2 w_i; concatenated [down, P_i] -> five convs = N_i.
//! - Each N_i gets a head: 3x3 2w_i, then the prediction conv; heads come finest first, the head
//!   of scale i right after N_i as in the cfgs.

use serde::{Deserialize, Serialize};

use super::{concat, feature, read, Feature, YoloHeads, ACTIVATION};
use crate::error::{Error, Result};
use crate::network::{NetworkBuilder, Op};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PanetSppConfig {
    /// Width at the finest scale; doubles per coarser scale.
    pub channels: usize,
    /// Window sizes of SPP's stride-1 max pools (output size unchanged).
    pub spp_pools: Vec<usize>,
}

impl Default for PanetSppConfig {
    /// The official cfgs: 128 / 256 / 512 and pools of 5, 9 and 13.
    fn default() -> Self {
        PanetSppConfig { channels: 128, spp_pools: vec![5, 9, 13] }
    }
}

/// 1x1 w, 3x3 2w, 1x1 w, repeated: `n` convs alternating, starting and ending with a 1x1.
fn alternating(b: &mut NetworkBuilder, prefix: &str, width: usize, n: usize) -> usize {
    for j in 0..n {
        let (k, c) = if j % 2 == 0 { (1, width) } else { (3, 2 * width) };
        b.conv(&format!("{prefix}.conv{j}"), c, k, 1, 1, ACTIVATION);
    }
    b.last()
}

impl PanetSppConfig {
    /// Emits SPP, PANet and the heads after the backbone in `b`; returns the yolo layers,
    /// finest head first.
    pub fn build(&self, b: &mut NetworkBuilder, features: &[Feature], heads: &YoloHeads) -> Result<Vec<usize>> {
        heads.validate()?;
        if self.channels == 0 || self.spp_pools.contains(&0) {
            return Err(Error::graph("panet: width and pool sizes must be positive"));
        }
        let strides = heads.strides();
        let width = |i: usize| self.channels << i;
        let top = strides.len() - 1;
        let c_top = feature(features, strides[top])?;

        // SPP block on the coarsest map.
        read(b, c_top.layer, "neck.spp.read");
        let x = alternating(b, "neck.spp.pre", width(top), 3);
        let mut pooled = Vec::with_capacity(self.spp_pools.len() + 1);
        for &size in &self.spp_pools {
            read(b, x, &format!("neck.spp.pool{size}.read"));
            pooled.push(b.push(Op::MaxPool { size, stride: 1, padding: size - 1 }, format!("neck.spp.pool{size}")));
        }
        pooled.reverse();
        pooled.push(x);
        concat(b, &pooled, "neck.spp.concat");
        let mut p = vec![0; strides.len()];
        p[top] = alternating(b, "neck.spp.post", width(top), 3);

        // Top-down path.
        for i in (0..top).rev() {
            let (s, coarse) = (strides[i], strides[i + 1]);
            if !coarse.is_multiple_of(s) {
                return Err(Error::graph(format!("panet: stride {coarse} does not upsample to {s}")));
            }
            let name = format!("neck.td{s}");
            read(b, p[i + 1], &format!("{name}.read"));
            b.conv(&format!("{name}.reduce"), width(i), 1, 1, 1, ACTIVATION);
            let up = b.push(Op::Upsample { stride: coarse / s }, format!("{name}.up"));
            let c = feature(features, s)?;
            read(b, c.layer, &format!("{name}.lateral.read"));
            let lateral = b.conv(&format!("{name}.lateral"), width(i), 1, 1, 1, ACTIVATION);
            concat(b, &[lateral, up], &format!("{name}.concat"));
            p[i] = alternating(b, &name, width(i), 5);
        }

        // Bottom-up path, each scale's head right after its map.
        let mut yolos = Vec::with_capacity(strides.len());
        let mut n = p[0];
        for i in 0..=top {
            let s_i = strides[i];
            if i > 0 {
                let name = format!("neck.bu{s_i}");
                let factor = s_i / strides[i - 1];
                if factor != 2 {
                    return Err(Error::graph(format!(
                        "panet: bottom-up steps must halve the size, not divide by {factor}"
                    )));
                }
                read(b, n, &format!("{name}.read"));
                let down = b.conv(&format!("{name}.down"), width(i), 3, 2, 1, ACTIVATION);
                concat(b, &[down, p[i]], &format!("{name}.concat"));
                n = alternating(b, &name, width(i), 5);
            }
            read(b, n, &format!("head.p{s_i}.read"));
            b.conv(&format!("head.p{s_i}.conv"), 2 * width(i), 3, 1, 1, ACTIVATION);
            yolos.push(heads.predict(b, s_i)?);
        }
        Ok(yolos)
    }
}
