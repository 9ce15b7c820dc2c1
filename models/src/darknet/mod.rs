//! Darknet `.cfg` files as networks. Each section after `[net]` becomes exactly one layer, so
//! darknet's layer numbers, our layer indices and the weight names (`layers.{i}.conv.weight`,
//! `layers.{i}.bn.running_var`) all agree; every layer's origin is `file:line`.

mod build;
mod cfg;

use std::path::Path;

use crate::error::{Error, Result};
use crate::network::Network;

pub use build::layer_name;

/// Parses a darknet `.cfg` file; the architecture is named after the file stem.
pub fn parse_cfg_file(path: &Path) -> Result<Network> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Cfg {
        path: shown.clone(),
        line: 0,
        msg: format!("cannot read: {e}"),
    })?;
    parse_cfg_str(&text, &shown)
}

/// Parses cfg text. `name` labels errors and origins (`name:line`); its file stem names the
/// architecture.
pub fn parse_cfg_str(text: &str, name: &str) -> Result<Network> {
    let sections = cfg::parse_sections(text, name)?;
    let arch = Path::new(name).file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty()).unwrap_or(name);
    build::build_network(&sections, name, arch)
}
