//! Safetensors weights: our native format (the network JSON in the header metadata) and the
//! generic tensor reader the server loads every safetensors file with.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use csp_models::weights::native::{metadata_from_bytes, network_from_metadata};
use csp_models::Model;

/// Input: a safetensors file. One carrying a network is built into a model (batch norm folded)
/// as the server does; it is not run, since a mutated network may ask for any input size.
pub fn load(bytes: &[u8]) -> bool {
    let path = Path::new("fuzz.safetensors");
    let device = Device::Cpu;
    let network = metadata_from_bytes(bytes, path).and_then(|m| network_from_metadata(&m, path));
    let Ok(tensors) = candle_core::safetensors::load_buffer(bytes, &device) else { return false };
    match network {
        Ok(Some(net)) => {
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
            Model::load_unfolded(net, vb).and_then(|m| m.folded()).is_ok()
        }
        // A safetensors file without our metadata: the tensors are all the server reads alone.
        Ok(None) => true,
        Err(_) => false,
    }
}

pub const DICTIONARY: &[&[u8]] = &[
    b"\"__metadata__\"",
    b"\"format\":\"cspserve\"",
    b"\"version\":\"1\"",
    b"\"network\":",
    b"\"dtype\":\"F32\"",
    b"\"dtype\":\"F16\"",
    b"\"dtype\":\"BF16\"",
    b"\"dtype\":\"U8\"",
    b"\"dtype\":\"F64\"",
    b"\"shape\":[",
    b"\"data_offsets\":[",
    b"\\\"input_size\\\":[",
    b"\\\"layers\\\":[",
    b"\\\"out_channels\\\":",
    b"\\\"stride\\\":",
    b"\\\"groups\\\":",
    b"\\\"Route\\\"",
    b"18446744073709551615",
    b"4294967296",
    b"0",
];
