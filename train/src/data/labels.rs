//! Class-name files: one name per line (darknet's `.names`), the format `csp-server` reads.

use std::path::Path;

use anyhow::{Context, Result};

/// The labels file every dataset root carries (`csp-train synth` writes it).
pub const LABELS_FILE: &str = "labels.txt";

pub fn read_labels_file(path: &Path) -> Result<Vec<String>> {
    Ok(csp_models::heads::load_labels(path)?)
}

pub fn write_labels_file(path: &Path, names: &[String]) -> Result<()> {
    let mut text = names.join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing labels file `{}`", path.display()))
}
