//! Batch norm on batch statistics fused with the activation, for training on the CPU.
//!
//! Written as candle ops, the normalisation and activation are ~15 elementwise ops and
//! broadcast reductions whose backward passes allocate a fresh map each; on the CPU they cost
//! more than the convolution itself. Here the forward is one pass per channel and the backward
//! two, with the textbook batch-norm gradient:
//! dx = gamma * inv_std / m * (m * dz - sum(dz) - xhat * sum(dz * xhat)), dz = dy * act'(z).

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, D};

use super::{Activation, BN_EPS};

/// act(gamma * (x - mean) / sqrt(var + eps) + beta) with the batch's mean and biased variance
/// per channel of an NCHW `x`, differentiable w.r.t. x, gamma and beta. Falls back to candle
/// ops off the CPU or for dtypes other than f32/f64.
pub fn batch_norm_act_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, act: Activation) -> Result<Tensor> {
    let cpu = matches!(x.device(), Device::Cpu);
    let same = x.dtype() == gamma.dtype() && x.dtype() == beta.dtype();
    if cpu && same && matches!(x.dtype(), DType::F32 | DType::F64) && x.rank() == 4 {
        return x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, BnAct { act });
    }
    let c = x.dim(1)?;
    let flat = x.transpose(0, 1)?.reshape((c, ()))?;
    let mean = flat.mean(D::Minus1)?;
    let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(D::Minus1)?;
    let scale = ((var + BN_EPS)?.sqrt()?.recip()? * gamma)?.reshape((1, c, 1, 1))?;
    let y = x.broadcast_sub(&mean.reshape((1, c, 1, 1))?)?.broadcast_mul(&scale)?;
    act.forward(&y.broadcast_add(&beta.reshape((1, c, 1, 1))?)?)
}

struct BnAct {
    act: Activation,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The activation and its derivative at z.
fn act_and_slope(act: Activation, z: f64) -> (f64, f64) {
    match act {
        Activation::Linear => (z, 1.0),
        Activation::Relu => (z.max(0.0), if z > 0.0 { 1.0 } else { 0.0 }),
        Activation::Leaky { slope } => {
            let s = slope as f64;
            if z > 0.0 {
                (z, 1.0)
            } else {
                (z * s, s)
            }
        }
        Activation::Logistic => {
            let s = sigmoid(z);
            (s, s * (1.0 - s))
        }
        Activation::Swish => {
            let s = sigmoid(z);
            (z * s, s + z * s * (1.0 - s))
        }
        Activation::Mish => {
            // Darknet's softplus threshold, as `Activation::forward`.
            let sp = if z > 20.0 { z } else { z.exp().ln_1p() };
            let t = sp.tanh();
            let dsp = if z > 20.0 { 1.0 } else { sigmoid(z) };
            (z * t, t + z * (1.0 - t * t) * dsp)
        }
    }
}

fn values(s: &CpuStorage, l: &Layout) -> Result<Vec<f64>> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("bn: non-contiguous".into()))?;
    Ok(match s {
        CpuStorage::F32(v) => v[a..b].iter().map(|&x| x as f64).collect(),
        CpuStorage::F64(v) => v[a..b].to_vec(),
        _ => return Err(candle_core::Error::Msg("bn: f32 or f64 only".into())),
    })
}

/// Per-channel mean and 1/sqrt(biased var + eps) of an NCHW buffer.
fn channel_stats(x: &[f64], n: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut inv = vec![0.0; c];
    for ch in 0..c {
        let plane = |i: usize| &x[(i * c + ch) * hw..][..hw];
        let mu = (0..n).map(|i| plane(i).iter().sum::<f64>()).sum::<f64>() / m;
        let var = (0..n).map(|i| plane(i).iter().map(|v| (v - mu) * (v - mu)).sum::<f64>()).sum::<f64>() / m;
        mean[ch] = mu;
        inv[ch] = 1.0 / (var + BN_EPS).sqrt();
    }
    (mean, inv)
}

fn storage(v: Vec<f64>, dtype: DType) -> CpuStorage {
    match dtype {
        DType::F64 => CpuStorage::F64(v),
        _ => CpuStorage::F32(v.into_iter().map(|x| x as f32).collect()),
    }
}

impl CustomOp3 for BnAct {
    fn name(&self) -> &'static str {
        "batch-norm-act-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let (x, gamma, beta) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        let (mean, inv) = channel_stats(&x, n, c, hw);
        let mut y = vec![0.0; x.len()];
        for (p, (src, dst)) in x.chunks_exact(hw).zip(y.chunks_exact_mut(hw)).enumerate() {
            let ch = p % c;
            let (mu, k, b) = (mean[ch], inv[ch] * gamma[ch], beta[ch]);
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = act_and_slope(self.act, (v - mu) * k + b).0;
            }
        }
        let dtype = if matches!(s1, CpuStorage::F64(_)) { DType::F64 } else { DType::F32 };
        Ok((storage(y, dtype), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let hw = h * w;
        let m = (n * hw) as f64;
        let host = |t: &Tensor| -> Result<Vec<f64>> { t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>() };
        let (xv, g, b, dy) = (host(x)?, host(gamma)?, host(beta)?, host(&grad.contiguous()?)?);
        let (mean, inv) = channel_stats(&xv, n, c, hw);
        // dz = dy * act'(z), and per channel sum(dz) (= dbeta) and sum(dz * xhat) (= dgamma).
        let mut dz = vec![0.0; xv.len()];
        let (mut dbeta, mut dgamma) = (vec![0.0; c], vec![0.0; c]);
        for p in 0..n * c {
            let ch = p % c;
            let range = p * hw..(p + 1) * hw;
            for i in range {
                let xhat = (xv[i] - mean[ch]) * inv[ch];
                let d = dy[i] * act_and_slope(self.act, g[ch] * xhat + b[ch]).1;
                dz[i] = d;
                dbeta[ch] += d;
                dgamma[ch] += d * xhat;
            }
        }
        let mut dx = dz;
        for p in 0..n * c {
            let ch = p % c;
            let k = g[ch] * inv[ch] / m;
            for i in p * hw..(p + 1) * hw {
                let xhat = (xv[i] - mean[ch]) * inv[ch];
                dx[i] = k * (m * dx[i] - dbeta[ch] - xhat * dgamma[ch]);
            }
        }
        let dtype = x.dtype();
        let make = |v: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
            Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
        };
        Ok((Some(make(dx, x.dims())?), Some(make(dgamma, gamma.dims())?), Some(make(dbeta, beta.dims())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Same values and gradients as the candle-op formulation, for every activation.
    #[test]
    fn matches_candle_ops() -> Result<()> {
        let d = Device::Cpu;
        let acts = [
            Activation::Linear,
            Activation::Relu,
            Activation::DARKNET_LEAKY,
            Activation::Mish,
            Activation::Swish,
            Activation::Logistic,
        ];
        for act in acts {
            let x = Var::from_tensor(&Tensor::randn(0.5f64, 2.0, (3, 4, 5, 6), &d)?)?;
            let g = Var::from_tensor(&Tensor::randn(1f64, 0.3, 4, &d)?)?;
            let b = Var::from_tensor(&Tensor::randn(0f64, 0.3, 4, &d)?)?;
            let r = Tensor::randn(0f64, 1.0, (3, 4, 5, 6), &d)?;
            let fused = batch_norm_act_train(&x, &g, &b, act)?;
            // The reference: the candle-op path (forced by a non-4D detour would change shapes,
            // so rebuild it here).
            let c = 4;
            let flat = x.transpose(0, 1)?.reshape((c, ()))?;
            let mean = flat.mean(D::Minus1)?;
            let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(D::Minus1)?;
            let scale = ((var + BN_EPS)?.sqrt()?.recip()? * g.as_tensor())?.reshape((1, c, 1, 1))?;
            let y = x.broadcast_sub(&mean.reshape((1, c, 1, 1))?)?.broadcast_mul(&scale)?;
            let reference = act.forward(&y.broadcast_add(&b.reshape((1, c, 1, 1))?)?)?;
            let diff = |a: &Tensor, b: &Tensor| -> Result<f64> { (a - b)?.abs()?.max_all()?.to_scalar::<f64>() };
            assert!(diff(&fused, &reference)? < 1e-9, "{act:?} forward");
            let gf = (fused * &r)?.sum_all()?.backward()?;
            let gr = (reference * &r)?.sum_all()?.backward()?;
            for v in [&x, &g, &b] {
                let e = diff(gf.get(v).expect("grad"), gr.get(v).expect("grad"))?;
                assert!(e < 1e-8, "{act:?} gradient differs by {e}");
            }
        }
        Ok(())
    }
}
