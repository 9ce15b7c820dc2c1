//! CSPNet models in candle: the paper's backbones (and their plain baselines), weight loading
//! (native safetensors, timm safetensors, darknet `.cfg` + `.weights`) and cost accounting.

pub mod backbones;
pub mod blocked;
pub mod csp;
pub mod darknet;
pub mod detectors;
pub mod device;
pub mod draw;
pub mod error;
pub mod flops;
pub mod fusion;
pub mod heads;
pub mod layers;
pub mod model;
pub mod necks;
pub mod network;
pub mod preprocess;
pub mod team;
pub mod weights;

pub use error::{Error, Result};
pub use model::Model;
pub use network::Network;
