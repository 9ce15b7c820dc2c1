//! The classifier's fully connected layer on the CPU, as dot products: each weight row is read
//! once for every image of the batch. At batch 1 the layer is a stream of weights (cspresnext50:
//! 2048 x 1000, 8 MB) with two flops per float read; candle's matmul took 0.5-0.8 ms on it here
//! (0.8-1.2% of a forward pass).

use candle_core::{CpuStorage, Device, Result, Storage, Tensor};

use super::activation::{with_simd, SimdJob};

/// Weight rows per task: 128 KiB of weights at 2048 inputs.
const ROWS_PER_TASK: usize = 16;

/// `x w^T + b` for `x` [N, in] and `weight` [out, in]; `None` when the tensors are not f32 on the
/// CPU, or have no inputs (the caller then uses candle's ops).
pub fn linear_cpu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (Ok((n, k)), Ok((m, wk))) = (x.dims2(), weight.dims2()) else { return Ok(None) };
    if k == 0 || k != wk || bias.is_some_and(|b| b.dims() != [m]) {
        return Ok(None);
    }
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let bias = bias.map(|b| b.contiguous()).transpose()?;
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let bs = bias.as_ref().map(|b| b.storage_and_layout());
    let (Storage::Cpu(CpuStorage::F32(xd)), Storage::Cpu(CpuStorage::F32(wd))) = (&*xs, &*ws) else {
        return Ok(None);
    };
    let bias = match &bs {
        Some((storage, layout)) => match &**storage {
            Storage::Cpu(CpuStorage::F32(b)) => Some(&b[layout.start_offset()..][..m]),
            _ => return Ok(None),
        },
        None => None,
    };
    let (xd, wd) = (&xd[xl.start_offset()..][..n * k], &wd[wl.start_offset()..][..m * k]);
    // Output features by task, images inner: [m][n], transposed at the end (n * m floats).
    let mut by_feature = vec![0f32; m * n];
    crate::team::for_each_chunk(&mut by_feature, ROWS_PER_TASK * n, |task, out| {
        let first = task * ROWS_PER_TASK;
        let rows = &wd[first * k..][..out.len() / n * k];
        with_simd(Dots { rows, xs: xd, k, out, bias: bias.map(|b| &b[first..]) })
    });
    drop((xs, ws, bs));
    let out: Vec<f32> = (0..n * m).map(|i| by_feature[(i % m) * n + i / m]).collect();
    Ok(Some(Tensor::from_vec(out, (n, m), &Device::Cpu)?))
}

/// `out[r][b] = rows[r] . xs[b] + bias[r]` for a task's weight rows.
struct Dots<'a> {
    rows: &'a [f32],
    xs: &'a [f32],
    k: usize,
    out: &'a mut [f32],
    bias: Option<&'a [f32]>,
}

impl SimdJob for Dots<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Dots { rows, xs, k, out, bias } = self;
        let n = xs.len() / k;
        for (r, (row, out)) in rows.chunks_exact(k).zip(out.chunks_exact_mut(n)).enumerate() {
            let b = bias.map_or(0.0, |b| b[r]);
            for (o, x) in out.iter_mut().zip(xs.chunks_exact(k)) {
                *o = dot(row, x) + b;
            }
        }
    }
}

/// Sixteen running sums (two vectors of 8), so the loop vectorizes without reordering a sum.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_at_odd_sizes_with_and_without_bias() {
        for (n, k, m) in [(1, 2048, 1000), (3, 37, 5), (8, 16, 33), (2, 1, 17)] {
            let x = Tensor::randn(0f32, 1f32, (n, k), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1f32, (m, k), &Device::Cpu).unwrap();
            let b = Tensor::randn(0f32, 1f32, m, &Device::Cpu).unwrap();
            for bias in [Some(&b), None] {
                let ours = linear_cpu(&x, &w, bias).unwrap().expect("f32 on the CPU");
                let mut reference = x.matmul(&w.t().unwrap()).unwrap();
                if let Some(b) = bias {
                    reference = reference.broadcast_add(b).unwrap();
                }
                let diff = (ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let scale = reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
                assert!(diff <= 1e-5 * scale, "n {n} k {k} m {m}: max |diff| {diff} of {scale}");
            }
        }
    }

    #[test]
    fn other_dtypes_are_left_to_candle() {
        let x = Tensor::zeros((1, 4), candle_core::DType::F16, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 4), candle_core::DType::F16, &Device::Cpu).unwrap();
        assert!(linear_cpu(&x, &w, None).unwrap().is_none());
    }
}
