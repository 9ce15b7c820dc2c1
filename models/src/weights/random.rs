//! Randomly initialised weights, for tests, CPU/GPU parity checks and benchmarks.
//!
//! Fresh batch norms hold mean 0 and variance 1, so in inference each conv only scales its input by
//! the init's gain (about 1/3 in variance): after fifty layers the signal is gone and the output is
//! the classifier's bias whatever the image, which would make any parity check pass vacuously. So
//! the running statistics are calibrated once on a fixed random batch, as a trained network's are on
//! its data: every batch-normed activation then has unit scale at any depth.

use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::error::Result;
use crate::model::{update_running_stats, Model};
use crate::network::Network;

/// Calibration batch: two images, small enough to be quick for the largest detector.
const CALIBRATION_BATCH: usize = 2;
const CALIBRATION_SIDE: usize = 128;

pub fn random_model(net: Network, device: &Device) -> Result<Model> {
    let vm = VarMap::new();
    let model = Model::load_unfolded(net, VarBuilder::from_varmap(&vm, candle_core::DType::F32, device))?;
    let side = calibration_side(&model.net);
    let n = CALIBRATION_BATCH * model.net.input_channels * side * side;
    let x = Tensor::from_vec(noise(n), (CALIBRATION_BATCH, model.net.input_channels, side, side), device)?;
    let last = model.net.layers.len().saturating_sub(1);
    let (_, stats) = model.forward_train(&x, &[last])?;
    update_running_stats(&vm, &stats, 1.0)?;
    Ok(model)
}

/// 128 (a multiple of every stride used here, 32 or 64) when the network's own input is larger and
/// stride-aligned, else its own size.
fn calibration_side(net: &Network) -> usize {
    let (h, w) = net.input_size;
    let own = h.min(w);
    if own > CALIBRATION_SIDE && own % 32 == 0 {
        CALIBRATION_SIDE
    } else {
        own
    }
}

/// Uniform [0, 1) values from a fixed seed (a 64-bit LCG), so every run calibrates alike.
fn noise(n: usize) -> Vec<f32> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of the calibration: different images give clearly different outputs.
    #[test]
    fn a_random_deep_network_still_depends_on_its_input() {
        let net = crate::backbones::build("cspdarknet53", 10).unwrap();
        let model = random_model(net, &Device::Cpu).unwrap().folded().unwrap();
        let a = Tensor::from_vec(noise(3 * 64 * 64), (1, 3, 64, 64), &Device::Cpu).unwrap();
        let b = (a.ones_like().unwrap() - &a).unwrap();
        let out = model.forward(&Tensor::cat(&[&a, &b], 0).unwrap()).unwrap();
        let rows = out.to_vec2::<f32>().unwrap();
        let spread = rows[0].iter().zip(&rows[1]).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        let scale = rows[0].iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(spread > 0.05 * scale, "outputs barely depend on the input: spread {spread}, scale {scale}");
    }

    #[test]
    fn noise_is_uniform_in_unit_interval() {
        let v = noise(10_000);
        assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
