//! Our own weights format: a safetensors file whose metadata carries the whole [`Network`], so
//! one file rebuilds the model. Metadata keys: `format` = `cspserve`, `version` = `1`,
//! `network` = the network as JSON.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::network::Network;

pub const FORMAT: &str = "cspserve";
pub const VERSION: &str = "1";

/// Writes the model's parameters (as loaded: unfolded, or folded with batch norm gone from the
/// network) and its network description.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = model.tensors();
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("version".to_string(), VERSION.to_string());
    let json = serde_json::to_string(&model.net).map_err(|e| Error::weights(path, e.to_string()))?;
    metadata.insert("network".to_string(), json);
    let views: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(candle_core::DType::F32)?.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| Error::weights(path, e.to_string()))
}

/// The network stored in a safetensors header, when the file is one of ours. `Ok(None)` for
/// a safetensors file without our metadata (a timm checkpoint, say).
pub fn read_network(path: &Path) -> Result<Option<Network>> {
    network_from_metadata(&read_metadata(path)?, path)
}

/// The network in already-read safetensors metadata; `path` only labels errors.
pub fn network_from_metadata(metadata: &HashMap<String, String>, path: &Path) -> Result<Option<Network>> {
    match metadata.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        _ => return Ok(None),
    }
    if metadata.get("version").map(String::as_str) != Some(VERSION) {
        return Err(Error::weights(path, format!("unsupported cspserve format version {:?}", metadata.get("version"))));
    }
    let json = metadata.get("network").ok_or_else(|| Error::weights(path, "metadata has no `network`"))?;
    let net = serde_json::from_str(json).map_err(|e| Error::weights(path, format!("bad `network` metadata: {e}")))?;
    Ok(Some(net))
}

/// Reads only the header of a safetensors file (validating its framing against the file size).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::weights(path, e.to_string()))?;
    let size = f.metadata()?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| Error::weights(path, "not a safetensors file: shorter than its 8-byte header length"))?;
    let n = header_len(len, size, path)?;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header)?;
    parse_metadata(&header, path)
}

/// [`read_metadata`] on a whole file's bytes; `path` only labels errors.
pub fn metadata_from_bytes(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>> {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(Error::weights(path, "not a safetensors file: shorter than its 8-byte header length"));
    };
    let n = header_len(*len, bytes.len() as u64, path)?;
    parse_metadata(&rest[..n], path)
}

/// The header's length from its 8-byte little-endian prefix, checked to fit a `size`-byte file.
fn header_len(prefix: [u8; 8], size: u64, path: &Path) -> Result<usize> {
    let n = u64::from_le_bytes(prefix);
    if n > 100 << 20 || n + 8 > size {
        return Err(Error::weights(
            path,
            format!("not a safetensors file: header length {n} does not fit a {size}-byte file"),
        ));
    }
    Ok(n as usize)
}

/// The string values of the JSON header's `__metadata__`.
fn parse_metadata(header: &[u8], path: &Path) -> Result<HashMap<String, String>> {
    let header: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| Error::weights(path, format!("not a safetensors file: bad header ({e})")))?;
    let mut out = HashMap::new();
    if let Some(meta) = header.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}
