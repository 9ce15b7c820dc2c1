//! Pooling with darknet's semantics.

use candle_core::shape::Dim;
use candle_core::{CpuStorage, DType, Result, Storage, Tensor, D};

/// Darknet max pooling: output = (in + padding - size) / stride + 1, window offset -padding/2,
/// positions outside the image count as -inf. PyTorch's `MaxPool2d(k, s, p)` is the case
/// `padding = 2p`.
pub fn max_pool(x: &Tensor, size: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return max_pool_cpu(x, size, stride, padding);
    }
    max_pool_candle(x, size, stride, padding)
}

/// [`max_pool`] with candle's ops: pad with -inf, then candle's pool.
fn max_pool_candle(x: &Tensor, size: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = pad_neg_inf(x, D::Minus2, h, size, stride, padding)?;
    let x = pad_neg_inf(&x, D::Minus1, w, size, stride, padding)?;
    x.max_pool2d_with_stride(size, stride)
}

/// [`max_pool`] on an f32 CPU tensor, directly: the window max is separable, so a pass down the
/// columns then one along the column maxima (2 x size comparisons per output, not size^2), planes
/// in parallel, the -inf padding implicit (out-of-image positions are skipped).
fn max_pool_cpu(x: &Tensor, size: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if size == 0 || stride == 0 {
        candle_core::bail!("max pool: size {size} and stride {stride} must be positive")
    }
    let (oh, ow) = (max_pool_out(h, size, stride, padding), max_pool_out(w, size, stride, padding));
    let before = (padding / 2) as isize;
    // In-image part [lo, hi) of the window starting at out * stride - before.
    let window = |out: usize, len: usize| {
        let start = (out * stride) as isize - before;
        (start.clamp(0, len as isize) as usize, (start + size as isize).clamp(0, len as isize) as usize)
    };
    // Output columns whose window lies inside a row.
    let inside_start = (0..ow).find(|&ox| (ox * stride) as isize >= before).unwrap_or(ow);
    let inside_end = (inside_start..ow).find(|&ox| (ox * stride + size) as isize - before > w as isize).unwrap_or(ow);
    let inside = inside_start..inside_end;
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!("max pool: f32 CPU tensor expected")
    };
    let input = &data[layout.start_offset()..][..n * c * h * w];
    let mut out = vec![0f32; n * c * oh * ow];
    if oh * ow > 0 && h * w > 0 {
        crate::team::for_each_chunk(&mut out, oh * ow, |i, out| {
            let plane = &input[i * h * w..][..h * w];
            // Down the columns first, over whole rows (contiguous, so it vectorizes), then along
            // the one row of maxima each output row needs.
            let mut maxima = vec![f32::NEG_INFINITY; w];
            for (oy, line) in out.chunks_exact_mut(ow).enumerate() {
                let (lo, hi) = window(oy, h);
                maxima.fill(f32::NEG_INFINITY);
                for row in plane[lo * w..hi * w].chunks_exact(w) {
                    maxima.iter_mut().zip(row).for_each(|(m, &v)| *m = larger(*m, v));
                }
                // Windows inside the row: `size` strided passes, no clamping; the edges one by one.
                let inner = &mut line[inside.clone()];
                inner.fill(f32::NEG_INFINITY);
                if !inside.is_empty() {
                    for k in 0..size {
                        let from = inside.start * stride + k - before as usize;
                        let column = maxima[from..].iter().step_by(stride);
                        inner.iter_mut().zip(column).for_each(|(o, &m)| *o = larger(*o, m));
                    }
                }
                for ox in (0..inside.start).chain(inside.end..ow) {
                    let (lo, hi) = window(ox, w);
                    line[ox] = maxima[lo..hi].iter().fold(f32::NEG_INFINITY, |a, &b| larger(a, b));
                }
            }
        });
    }
    drop(storage);
    Tensor::from_vec(out, (n, c, oh, ow), x.device())
}

/// The larger of a running maximum (never NaN: it starts at -inf) and a value, NaN skipped as
/// `f32::max` would: one compare and select where `f32::max` needs a NaN check too.
#[inline(always)]
fn larger(max: f32, value: f32) -> f32 {
    if value > max {
        value
    } else {
        max
    }
}

/// [`max_pool`] from ops candle can differentiate (its own max-pool backward needs
/// size == stride): the window max is separable, so take the max over `size` strided row
/// selections, then over `size` column selections.
pub fn max_pool_differentiable(x: &Tensor, size: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = pad_neg_inf(x, D::Minus2, h, size, stride, padding)?;
    let x = pad_neg_inf(&x, D::Minus1, w, size, stride, padding)?;
    let x = window_max(&x, 2, max_pool_out(h, size, stride, padding), size, stride)?;
    window_max(&x, 3, max_pool_out(w, size, stride, padding), size, stride)
}

/// Along `dim` (already padded): out[i] = max over k < size of x[i * stride + k].
fn window_max(x: &Tensor, dim: usize, out: usize, size: usize, stride: usize) -> Result<Tensor> {
    // index_select needs a contiguous input; a route's slice or an unpadded input may not be.
    let x = &x.contiguous()?;
    let mut acc: Option<Tensor> = None;
    for k in 0..size {
        let picked = if stride == 1 {
            x.narrow(dim, k, out)?
        } else {
            let idx = Tensor::arange_step(k as u32, (k + (out - 1) * stride + 1) as u32, stride as u32, x.device())?;
            x.index_select(&idx, dim)?
        };
        acc = Some(match acc {
            None => picked,
            Some(a) => a.maximum(&picked)?,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("max pool of size 0".into()))
}

pub fn max_pool_out(len: usize, size: usize, stride: usize, padding: usize) -> usize {
    (len + padding).saturating_sub(size) / stride + 1
}

fn pad_neg_inf(x: &Tensor, dim: D, len: usize, size: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let before = padding / 2;
    let out = max_pool_out(len, size, stride, padding);
    let after = ((out - 1) * stride + size).saturating_sub(len + before);
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let dim = dim.to_index(x.shape(), "pad")?;
    let mut parts = Vec::with_capacity(3);
    let fill = |n: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(f32::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())
    };
    if before > 0 {
        parts.push(fill(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(fill(after)?);
    }
    // The last window may end before the padded edge; cut what no window reads.
    let y = Tensor::cat(&parts, dim)?;
    let needed = (out - 1) * stride + size;
    if y.dim(dim)? > needed {
        y.narrow(dim, 0, needed)
    } else {
        Ok(y)
    }
}

/// Global average pooling to [N, C, 1, 1].
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)
}

/// [`global_avg_pool`] on an f32 CPU tensor, one plane after another (candle's two reductions took
/// 0.1-0.3 ms on [1, 2048, 7, 7], this about a hundredth of that); `None` for other tensors and
/// empty planes.
pub fn global_avg_pool_cpu(x: &Tensor) -> Result<Option<Tensor>> {
    let Ok((n, c, h, w)) = x.dims4() else { return Ok(None) };
    if h * w == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else { return Ok(None) };
    let plane = h * w;
    let input = &data[layout.start_offset()..][..n * c * plane];
    let means: Vec<f32> = input.chunks_exact(plane).map(|p| sum(p) / plane as f32).collect();
    drop(storage);
    Ok(Some(Tensor::from_vec(means, (n, c, 1, 1), x.device())?))
}

/// Eight running sums, so the loop vectorizes without reordering a sum.
fn sum(values: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cpu_global_avg_pool_matches_candle() {
        for (n, c, h, w) in [(1, 2048, 7, 7), (2, 5, 3, 11), (3, 4, 1, 1), (1, 3, 9, 8)] {
            let x = Tensor::randn(0f32, 1f32, (n, c, h, w), &Device::Cpu).unwrap();
            let ours = global_avg_pool_cpu(&x).unwrap().expect("f32 on the CPU");
            let reference = global_avg_pool(&x).unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-6, "{n}x{c}x{h}x{w}: max |diff| {diff}");
        }
        let half = Tensor::zeros((1, 2, 3, 3), candle_core::DType::F16, &Device::Cpu).unwrap();
        assert!(global_avg_pool_cpu(&half).unwrap().is_none());
    }

    /// The direct CPU pool against candle's ops: stem pools, SPP's stride-1 pools, darknet's
    /// odd paddings, odd sizes, and a window wider than the image.
    #[test]
    fn cpu_pool_matches_candle() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 11.0 * 8.0, &Device::Cpu).unwrap().reshape((2, 3, 11, 8)).unwrap();
        let x = (x * 0.37).unwrap().sin().unwrap();
        for (size, stride, padding) in
            [(2, 2, 0), (3, 2, 2), (3, 2, 1), (5, 1, 4), (9, 1, 8), (13, 1, 12), (2, 1, 1), (3, 3, 0), (15, 1, 14)]
        {
            let want = max_pool_candle(&x, size, stride, padding).unwrap();
            let got = max_pool(&x, size, stride, padding).unwrap();
            assert_eq!(got.dims(), want.dims(), "size {size} stride {stride} padding {padding}");
            let diff = (want - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0, "size {size} stride {stride} padding {padding}");
        }
    }

    /// A transposed (non-contiguous) input, as a route's slice can be: both pools agree on it.
    #[test]
    fn differentiable_pool_takes_non_contiguous_input() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 7.0 * 9.0, &Device::Cpu).unwrap().reshape((2, 3, 7, 9)).unwrap();
        let x = (x.sin().unwrap()).transpose(2, 3).unwrap();
        assert!(!x.is_contiguous());
        for (size, stride, padding) in [(2, 2, 0), (3, 2, 2), (5, 1, 4)] {
            let want = max_pool(&x.contiguous().unwrap(), size, stride, padding).unwrap();
            let got = max_pool_differentiable(&x, size, stride, padding).unwrap();
            let diff = (want - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0, "size {size} stride {stride} padding {padding}");
        }
    }
}
