//! Building blocks: activations, conv + batch norm + activation, pooling, the fully connected layer.

mod activation;
mod bn_train;
mod conv;
mod conv_grad;
mod linear;
mod pool;

pub use activation::Activation;
pub(crate) use activation::{with_simd, SimdJob};
pub use bn_train::batch_norm_act_train;
pub use conv::{BatchNorm, ConvLayer, ConvSpec, BN_EPS};
pub use conv_grad::conv2d_train;
pub use linear::linear_cpu;
pub use pool::{global_avg_pool, global_avg_pool_cpu, max_pool, max_pool_differentiable, max_pool_out};
