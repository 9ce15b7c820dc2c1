//! Training and evaluation for the CSP models of `csp-models`: datasets (image folders, COCO
//! JSON, YOLO txt, generated shapes), augmentation, losses, optimiser, checkpoints, metrics.

pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod evaluate;
pub mod loss;
pub mod metrics_log;
pub mod optim;
pub mod params;
pub mod plots;
pub mod schedule;
pub mod synth;
pub mod trainer;
