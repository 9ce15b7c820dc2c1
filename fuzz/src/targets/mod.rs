//! The target functions, one module per input family.

pub mod darknet;
pub mod grpc;
pub mod http;
pub mod image;
pub mod safetensors;
