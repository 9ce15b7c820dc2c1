//! The activations used by CSPNet models, with darknet's names.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Activation {
    Linear,
    Relu,
    /// Leaky ReLU; darknet uses slope 0.1, timm 0.01.
    Leaky {
        slope: f32,
    },
    Mish,
    /// x * sigmoid(x), darknet's `swish`, PyTorch's SiLU.
    Swish,
    /// Sigmoid.
    Logistic,
}

impl Activation {
    pub const DARKNET_LEAKY: Activation = Activation::Leaky { slope: 0.1 };
    pub const TIMM_LEAKY: Activation = Activation::Leaky { slope: 0.01 };

    /// Parses a darknet `activation=` value.
    pub fn from_darknet(name: &str) -> Option<Self> {
        Some(match name {
            "linear" => Activation::Linear,
            "relu" => Activation::Relu,
            "leaky" => Activation::DARKNET_LEAKY,
            "mish" => Activation::Mish,
            "swish" | "silu" => Activation::Swish,
            "logistic" => Activation::Logistic,
            _ => return None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match *self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => x.relu(),
            Activation::Leaky { slope } => candle_nn::ops::leaky_relu(x, slope as f64),
            Activation::Mish => {
                // softplus with darknet's threshold of 20: above it softplus(x) = x, and
                // tanh saturates to 1 in f32 either way, so clamping the exponent is exact.
                let sp = (x.minimum(20f64)?.exp()? + 1.0)?.log()?;
                x * sp.tanh()?
            }
            Activation::Swish => x.silu(),
            Activation::Logistic => candle_nn::ops::sigmoid(x),
        }
    }

    /// values = activation(values + bias), elementwise on the CPU: the fused conv's epilogue, inlined
    /// into callers that are compiled for their CPU's features (see [`with_simd`]).
    #[inline(always)]
    pub(crate) fn apply(self, values: &mut [f32], bias: f32) {
        let each = values.iter_mut();
        match self {
            Activation::Linear => each.for_each(|v| *v += bias),
            Activation::Relu => each.for_each(|v| *v = (*v + bias).max(0.0)),
            Activation::Leaky { slope } => each.for_each(|v| *v = leaky(*v + bias, slope)),
            Activation::Mish => each.for_each(|v| *v = mish(*v + bias)),
            Activation::Swish => each.for_each(|v| *v = swish(*v + bias)),
            Activation::Logistic => each.for_each(|v| *v = logistic(*v + bias)),
        }
    }
}

/// Work whose loops should run as wide as the CPU allows, for [`with_simd`]. `run`, and everything
/// it calls, must be `#[inline(always)]`: the loops are then compiled inside `with_simd`'s AVX-512
/// or AVX2 function. (A closure cannot be used here: it is compiled as a function of its own, for
/// the baseline target, which those functions would merely call.)
pub(crate) trait SimdJob {
    type Output;
    fn run(self) -> Self::Output;
}

/// `job` compiled for AVX-512 where the CPU has it (16 lanes; measured 3-4% faster on whole models
/// than AVX2 on a Sapphire Rapids machine, the conv epilogues being most of it), else for AVX2 +
/// FMA (8 lanes; checked at run time), else for the baseline target. The activations below have
/// no calls in them (see [`exp`]), so their loops vectorize.
#[inline(always)]
pub(crate) fn with_simd<J: SimdJob>(job: J) -> J::Output {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU has all three.
        return unsafe { avx512(job) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has both features.
        return unsafe { avx2_fma(job) };
    }
    job.run()
}

/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512<J: SimdJob>(job: J) -> J::Output {
    job.run()
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<J: SimdJob>(job: J) -> J::Output {
    job.run()
}

#[inline(always)]
fn leaky(x: f32, slope: f32) -> f32 {
    if x < 0.0 {
        x * slope
    } else {
        x
    }
}

/// e^x from multiplies and adds only, where `f32::exp` is a libm call that keeps a loop scalar:
/// e^x = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 (ln 2 in two parts, so r is exact
/// enough), e^r from Cephes' expf polynomial. Relative error below 3e-7. x is clamped to
/// [-87, 88], where 2^n is a normal f32: e^x saturates near 0 and near f32::MAX, which the
/// activations below turn into their limits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n: n + 127 into the exponent field (t's bits are ROUND's plus n).
    let two_n = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    e_r * two_n
}

/// x * tanh(ln(1 + e^x)) with one exp instead of exp, ln and tanh: with n = e^x (e^x + 2),
/// tanh(ln(1 + e^x)) = n / (n + 2). Above 20 it is x in f32, as on the candle path (and e^2x would
/// overflow further up).
#[inline(always)]
fn mish(x: f32) -> f32 {
    let e = exp(x.min(20.0));
    let n = e * (e + 2.0);
    let y = x * n / (n + 2.0);
    if x > 20.0 {
        x
    } else {
        y
    }
}

#[inline(always)]
fn swish(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[inline(always)]
fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm_over_the_whole_range() {
        let mut worst = 0f32;
        for i in -87_000..88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max((ours - libm).abs() / libm);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp(-200.0) < 1e-37 && exp(200.0) > 1e38);
    }

    /// `apply` with a bias of 0.25, as a job for `with_simd`.
    struct Apply<'a>(Activation, &'a mut [f32]);

    impl SimdJob for Apply<'_> {
        type Output = ();
        #[inline(always)]
        fn run(self) {
            self.0.apply(self.1, 0.25)
        }
    }

    #[test]
    fn the_epilogue_matches_the_scalar_formulas() {
        let values: Vec<f32> =
            (-4000..4000).map(|i| i as f32 / 97.0).chain([-150.0, -90.0, 25.0, 95.0, 150.0]).collect();
        let libm = |a: Activation, x: f32| -> f32 {
            match a {
                Activation::Linear => x,
                Activation::Relu => x.max(0.0),
                Activation::Leaky { slope } => {
                    if x < 0.0 {
                        x * slope
                    } else {
                        x
                    }
                }
                Activation::Mish => x * ((x.min(20.0).exp()).ln_1p()).tanh(),
                Activation::Swish => x / (1.0 + (-x).exp()),
                Activation::Logistic => 1.0 / (1.0 + (-x).exp()),
            }
        };
        let all = [
            Activation::Linear,
            Activation::Relu,
            Activation::TIMM_LEAKY,
            Activation::Mish,
            Activation::Swish,
            Activation::Logistic,
        ];
        for a in all {
            // Lengths that leave a vector tail, and both the dispatched and the baseline build.
            for len in [values.len(), 13] {
                let mut dispatched = values[..len].to_vec();
                with_simd(Apply(a, &mut dispatched));
                let mut baseline = values[..len].to_vec();
                a.apply(&mut baseline, 0.25);
                for ((x, d), b) in values.iter().zip(&dispatched).zip(&baseline) {
                    let want = libm(a, x + 0.25);
                    let tolerance = 2e-6 * want.abs().max(1e-3);
                    assert!((d - want).abs() <= tolerance, "{a:?}({x} + 0.25): {d} vs {want}");
                    assert!((b - want).abs() <= tolerance, "{a:?}({x} + 0.25) baseline: {b} vs {want}");
                }
            }
        }
    }
}
