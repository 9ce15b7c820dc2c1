//! Building blocks: activations, conv + batch norm + activation, pooling.

mod activation;
mod conv;
mod pool;

pub use activation::Activation;
pub use conv::{BatchNorm, ConvLayer, ConvSpec, BN_EPS};
pub use pool::{global_avg_pool, max_pool, max_pool_out};
