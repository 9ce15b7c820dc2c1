//! One error type for the model crate; binaries wrap it in `anyhow`, the server maps it to statuses.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown architecture `{0}` (run `csp-model list` for the known names)")]
    UnknownArch(String),

    #[error("{path}:{line}: {msg}")]
    Cfg { path: String, line: usize, msg: String },

    #[error("invalid network: {0}")]
    Graph(String),

    #[error("weights `{path}`: {msg}")]
    Weights { path: PathBuf, msg: String },

    #[error("bad input: {0}")]
    Input(String),

    #[error("image: {0}")]
    Image(String),

    #[error("device: {0}")]
    Device(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn graph(msg: impl Into<String>) -> Self {
        Error::Graph(msg.into())
    }
    pub fn weights(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Weights { path: path.into(), msg: msg.into() }
    }
}
