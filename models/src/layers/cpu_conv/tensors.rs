//! The fused conv on candle tensors directly, for the graph executor's fusions: several inputs
//! read as one concatenation, and a residual added in the epilogue (see `crate::fusion`).

use candle_core::{CpuStorage, Device, Layout, Result, Storage, Tensor};

use super::{CpuConv, Planes, Residual};
use crate::layers::Activation;

impl CpuConv {
    /// The conv of `inputs` concatenated along channels, plus `residual` (added after the conv's
    /// activation, then its own activation). `None` when this kernel cannot read them as they are:
    /// not f32 on the CPU, images not contiguous, or sizes that do not line up (the caller then
    /// uses candle's ops).
    pub fn forward_tensors(
        &self,
        inputs: &[&Tensor],
        residual: Option<(&Tensor, Activation)>,
    ) -> Result<Option<Tensor>> {
        let Some(first) = inputs.first() else { return Ok(None) };
        let Ok((n, _, h, w)) = first.dims4() else { return Ok(None) };
        let (oh, ow) = self.spec.out_size(h, w);
        let guards: Vec<_> = inputs.iter().map(|t| t.storage_and_layout()).collect();
        let mut planes = Vec::with_capacity(inputs.len());
        for (storage, layout) in &guards {
            match planes_of(storage, layout, (n, h, w)) {
                Some(p) => planes.push(p),
                None => return Ok(None),
            }
        }
        if planes.iter().map(|p| p.channels).sum::<usize>() != self.spec.in_channels {
            return Ok(None);
        }
        let residual_guard = residual.map(|(t, activation)| (t.storage_and_layout(), activation));
        let residual = match &residual_guard {
            Some(((storage, layout), activation)) => match planes_of(storage, layout, (n, oh, ow)) {
                Some(p) if p.channels == self.spec.out_channels => {
                    Some(Residual { planes: p, activation: *activation })
                }
                _ => return Ok(None),
            },
            None => None,
        };
        let out = self.run_fused(&planes, n, h, w, residual.as_ref());
        drop(guards);
        Ok(Some(Tensor::from_vec(out, (n, self.spec.out_channels, oh, ow), &Device::Cpu)?))
    }
}

/// The planes of an `[n, C, h, w]` f32 CPU tensor whose images are each contiguous (a contiguous
/// tensor, or a channel slice of one).
fn planes_of<'a>(storage: &'a Storage, layout: &Layout, (n, h, w): (usize, usize, usize)) -> Option<Planes<'a>> {
    let Storage::Cpu(CpuStorage::F32(data)) = storage else { return None };
    let &[tn, c, th, tw] = layout.dims() else { return None };
    if (tn, th, tw) != (n, h, w) {
        return None;
    }
    let stride = layout.stride();
    let dense = (w == 1 || stride[3] == 1) && (h == 1 || stride[2] == w) && (c == 1 || stride[1] == h * w);
    if !dense {
        return None;
    }
    let planes =
        Planes { data: &data[layout.start_offset()..], channels: c, image_stride: if n > 1 { stride[0] } else { 0 } };
    planes.fits(n, h * w).then_some(planes)
}
