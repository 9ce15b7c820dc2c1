//! A training convolution for the CPU whose input gradient is itself a forward convolution.
//!
//! candle differentiates `conv2d` w.r.t. its input with `conv_transpose2d`, which on the CPU is
//! 6-11x slower than the forward conv (measured on 3x3 and 1x1 convs, batch 16) and dominated
//! training time. The same gradient is the forward conv of the output gradient, dilated by the
//! stride and zero-padded, with the kernel transposed (in/out) and flipped (spatially).

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

/// `x.conv2d(w, padding, stride, 1, groups)` with the faster backward on the CPU when it applies
/// (groups 1, padding < kernel); anything else is candle's own op.
pub fn conv2d_train(x: &Tensor, w: &Tensor, padding: usize, stride: usize, groups: usize) -> Result<Tensor> {
    let k = w.dim(2)?;
    let fits = matches!(x.device(), Device::Cpu)
        && groups == 1
        && padding < k
        && w.dim(3)? == k
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == w.dtype();
    if !fits {
        return x.conv2d(w, padding, stride, 1, groups);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, FastGradConv { padding, stride })
}

struct FastGradConv {
    padding: usize,
    stride: usize,
}

/// The tensor a contiguous CPU storage + layout describes (a copy).
fn tensor_of(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let (start, end) =
        l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("conv2d_train: non-contiguous input".into()))?;
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], l.shape(), &Device::Cpu),
        CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], l.shape(), &Device::Cpu),
        _ => Err(candle_core::Error::Msg("conv2d_train: f32 or f64 only".into())),
    }
}

impl CustomOp2 for FastGradConv {
    fn name(&self) -> &'static str {
        "conv2d-fast-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = tensor_of(s1, l1)?.conv2d(&tensor_of(s2, l2)?, self.padding, self.stride, 1, 1)?;
        let shape = y.shape().clone();
        let flat = y.flatten_all()?;
        let storage = match y.dtype() {
            DType::F64 => CpuStorage::F64(flat.to_vec1::<f64>()?),
            _ => CpuStorage::F32(flat.to_vec1::<f32>()?),
        };
        Ok((storage, shape))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (p, s) = (self.padding, self.stride);
        let (_, _, xh, xw) = x.dims4()?;
        let (_, _, k, _) = w.dims4()?;
        let (n, c, gh, gw) = grad.dims4()?;
        // Weight gradient: as candle computes it (batch and channels swapped, stride as dilation).
        let gk = x.transpose(0, 1)?.conv2d(&grad.transpose(0, 1)?, p, 1, s, 1)?.transpose(0, 1)?;
        let gk = if gk.dim(2)? != k || gk.dim(3)? != k { gk.narrow(2, 0, k)?.narrow(3, 0, k)? } else { gk };
        // Input gradient: zeros between the output gradient's pixels (stride), pad k-1-p on the
        // top/left and k-1-p plus the rows/columns the forward conv never reached on the
        // bottom/right, then a stride-1 conv with the flipped, in/out-transposed kernel.
        let dilated = if s == 1 {
            grad.clone()
        } else {
            let g = grad.reshape((n, c, gh, 1, gw, 1))?;
            let g = g.pad_with_zeros(3, 0, s - 1)?.pad_with_zeros(5, 0, s - 1)?;
            g.reshape((n, c, gh * s, gw * s))?.narrow(2, 0, (gh - 1) * s + 1)?.narrow(3, 0, (gw - 1) * s + 1)?
        };
        let reach_h = (gh - 1) * s + k - 2 * p;
        let reach_w = (gw - 1) * s + k - 2 * p;
        let edge = k - 1 - p;
        let padded =
            dilated.pad_with_zeros(2, edge, edge + (xh - reach_h))?.pad_with_zeros(3, edge, edge + (xw - reach_w))?;
        let flipped = w.transpose(0, 1)?.contiguous()?.flip(&[2, 3])?.contiguous()?;
        let gx = padded.conv2d(&flipped, 0, 1, 1, 1)?;
        Ok((Some(gx), Some(gk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Gradients of sum(conv(x, w) * r) from this op and from candle's. Square inputs only:
    /// candle's backward takes the output padding of both sides from the height.
    #[test]
    fn gradients_match_candle() -> Result<()> {
        for &(n, cin, cout, h, w_, k, s, p) in &[
            (2, 3, 4, 7, 9, 3, 1, 1),
            (2, 3, 4, 8, 8, 3, 2, 1),
            (1, 3, 2, 9, 9, 3, 2, 1),
            (1, 2, 3, 9, 9, 1, 2, 0),
            (2, 2, 2, 6, 6, 1, 1, 0),
            (1, 4, 2, 11, 11, 5, 2, 2),
        ] {
            let d = Device::Cpu;
            let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (n, cin, h, w_), &d)?)?;
            let wt = Var::from_tensor(&Tensor::randn(0f64, 1.0, (cout, cin, k, k), &d)?)?;
            let y_ref = x.conv2d(&wt, p, s, 1, 1)?;
            let r = Tensor::randn(0f64, 1.0, y_ref.shape(), &d)?;
            let g_ref = (&y_ref * &r)?.sum_all()?.backward()?;
            let y = conv2d_train(&x, &wt, p, s, 1)?;
            let g = (&y * &r)?.sum_all()?.backward()?;
            let diff = |a: &Tensor, b: &Tensor| -> Result<f64> { (a - b)?.abs()?.max_all()?.to_scalar::<f64>() };
            assert!(diff(&y, &y_ref)? < 1e-10);
            for v in [&x, &wt] {
                let (a, b) = (g.get(v).expect("grad"), g_ref.get(v).expect("grad"));
                assert!(diff(a, b)? < 1e-9, "case k{k} s{s} p{p}: {}", diff(a, b)?);
            }
        }
        Ok(())
    }
}
