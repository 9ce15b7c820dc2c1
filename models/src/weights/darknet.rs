//! Darknet `.weights` files: a header (int32 major, minor, revision; `seen` as u64 from version
//! 0.2 on, u32 before), then for each convolution in layer order, with no separators: bias[n];
//! with batch norm scale[n], rolling_mean[n], rolling_var[n]; then the weights in
//! (out, in/groups, k, k) order. All little-endian f32. With batch norm "bias" is the BN shift.
//!
//! Partial files (a backbone's first K convolutions, as darknet's `partial` writes) are normal:
//! reading stops cleanly at the last complete convolution and [`DarknetWeights::incomplete`]
//! says where the file ended.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::layers::ConvSpec;
use crate::model::Model;
use crate::network::Network;

/// Version written by [`write_weights`]: 0.2.0, so `seen` is a u64.
const WRITE_VERSION: (i32, i32, i32) = (0, 2, 0);

/// Versions above this are not darknet files (darknet itself writes 0.1 or 0.2).
const MAX_MAJOR: i32 = 10;
const MAX_MINOR: i32 = 1000;

pub struct DarknetWeights {
    /// Parameters in our layout: `<conv>.conv.weight`, `<conv>.bn.{weight,bias,running_mean,
    /// running_var}` or `<conv>.conv.bias`.
    pub tensors: HashMap<String, Tensor>,
    /// (major, minor, revision) from the header.
    pub version: (i32, i32, i32),
    /// Images seen in training, from the header.
    pub seen: u64,
    /// Convolutions read in full, counted from the first.
    pub convs_read: usize,
    /// Convolutions in the network.
    pub convs_total: usize,
    truncated: Option<String>,
}

impl DarknetWeights {
    /// `Some(message)` when the file ended before the last convolution.
    pub fn incomplete(&self) -> Option<String> {
        self.truncated.clone()
    }
}

/// Little-endian cursor over the file bytes; every failure names the offset.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if self.bytes.len() - self.pos < n {
            return Err(Error::weights(
                self.path,
                format!(
                    "file is {} bytes: it ends inside the header ({what} at byte offset {})",
                    self.bytes.len(),
                    self.pos
                ),
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn floats(&mut self, n: usize) -> Vec<f32> {
        let s = &self.bytes[self.pos..self.pos + 4 * n];
        self.pos += 4 * n;
        s.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// f32 counts of one convolution's record: (bias-like vectors, weights).
fn record_len(spec: &ConvSpec) -> (usize, usize) {
    let (o, i, kh, kw) = spec.weight_shape();
    let vectors = if spec.batch_norm { 4 } else { 1 };
    (vectors * spec.out_channels, o * i * kh * kw)
}

/// Reads `path` for the convolutions of `net`, naming tensors by each conv's `name`.
pub fn read_weights(path: &Path, net: &Network, device: &Device) -> Result<DarknetWeights> {
    let bytes = std::fs::read(path).map_err(|e| Error::weights(path, format!("cannot read: {e}")))?;
    read_weights_bytes(&bytes, path, net, device)
}

/// [`read_weights`] on the file's bytes; `path` only labels errors.
pub fn read_weights_bytes(bytes: &[u8], path: &Path, net: &Network, device: &Device) -> Result<DarknetWeights> {
    let mut r = Reader { bytes, pos: 0, path };
    let major = r.i32("major version")?;
    let minor = r.i32("minor version")?;
    let revision = r.i32("revision")?;
    if !(0..=MAX_MAJOR).contains(&major) || !(0..=MAX_MINOR).contains(&minor) || revision < 0 {
        return Err(Error::weights(
            path,
            format!(
                "not a darknet weights file: implausible header at byte offset 0 (version {major}.{minor}.{revision})"
            ),
        ));
    }
    let seen = if major * 10 + minor >= 2 {
        let b = r.take(8, "`seen` (u64)")?;
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    } else {
        let b = r.take(4, "`seen` (u32)")?;
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
    };

    let convs: Vec<(usize, &ConvSpec)> = net
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match &l.op {
            crate::network::Op::Conv(c) => Some((i, c)),
            _ => None,
        })
        .collect();
    let total = convs.len();
    let mut tensors = HashMap::new();
    let mut truncated = None;
    let mut convs_read = 0;
    for (k, &(layer, spec)) in convs.iter().enumerate() {
        let (vectors, weights) = record_len(spec);
        let need = 4 * (vectors + weights);
        if r.remaining() < need {
            let have = r.remaining();
            let (place, detail) = if have == 0 {
                ("before", format!("only the first {k} convolutions have weights"))
            } else {
                ("inside", format!("{have} of its {need} bytes are present; the {k} convolutions before it were read"))
            };
            truncated = Some(format!(
                "file ends at byte offset {} {place} layer {layer} (conv {} of {total}): {detail}",
                bytes.len(),
                k + 1
            ));
            break;
        }
        read_conv(&mut r, spec, device, &mut tensors)?;
        convs_read += 1;
    }
    if truncated.is_none() && r.remaining() > 0 {
        return Err(Error::weights(
            path,
            format!(
                "{} bytes remain after the last of {total} convolutions (byte offset {} of {}): the file does not match this cfg",
                r.remaining(),
                r.pos,
                bytes.len()
            ),
        ));
    }
    Ok(DarknetWeights { tensors, version: (major, minor, revision), seen, convs_read, convs_total: total, truncated })
}

fn read_conv(r: &mut Reader, spec: &ConvSpec, device: &Device, out: &mut HashMap<String, Tensor>) -> Result<()> {
    let n = spec.out_channels;
    let name = &spec.name;
    let bias = Tensor::from_vec(r.floats(n), n, device)?;
    if spec.batch_norm {
        out.insert(format!("{name}.bn.bias"), bias);
        for key in ["weight", "running_mean", "running_var"] {
            out.insert(format!("{name}.bn.{key}"), Tensor::from_vec(r.floats(n), n, device)?);
        }
    } else {
        out.insert(format!("{name}.conv.bias"), bias);
    }
    let shape = spec.weight_shape();
    let (o, i, kh, kw) = shape;
    out.insert(format!("{name}.conv.weight"), Tensor::from_vec(r.floats(o * i * kh * kw), shape, device)?);
    Ok(())
}

/// Writes darknet weights (version 0.2.0, `seen` = 0) for the convolutions of `net`, taking
/// each from `tensors` under the names [`read_weights`] produces.
pub fn write_weights(path: &Path, net: &Network, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let (major, minor, revision) = WRITE_VERSION;
    for v in [major, minor, revision] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&0u64.to_le_bytes());
    for spec in net.convs() {
        let name = &spec.name;
        let n = spec.out_channels;
        let (o, i, kh, kw) = spec.weight_shape();
        let mut parts: Vec<(String, Vec<usize>)> = vec![];
        if spec.batch_norm {
            for key in ["bias", "weight", "running_mean", "running_var"] {
                parts.push((format!("{name}.bn.{key}"), vec![n]));
            }
        } else {
            parts.push((format!("{name}.conv.bias"), vec![n]));
        }
        parts.push((format!("{name}.conv.weight"), vec![o, i, kh, kw]));
        for (key, dims) in parts {
            let t = tensors.get(&key).ok_or_else(|| Error::weights(path, format!("missing tensor `{key}`")))?;
            if t.dims() != dims.as_slice() {
                return Err(Error::weights(
                    path,
                    format!("tensor `{key}` has shape {:?}, the network needs {dims:?}", t.dims()),
                ));
            }
            for v in t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let mut file = std::fs::File::create(path).map_err(|e| Error::weights(path, format!("cannot create: {e}")))?;
    file.write_all(&buf).map_err(|e| Error::weights(path, format!("cannot write: {e}")))?;
    Ok(())
}

/// Writes a model's parameters in darknet's format, laid out for `model.net` (a folded model
/// has no batch norm, so its file matches the cfg only with `batch_normalize=0`).
pub fn write_model_weights(path: &Path, model: &Model) -> Result<()> {
    let tensors: HashMap<String, Tensor> = model.tensors().into_iter().collect();
    write_weights(path, &model.net, &tensors)
}
