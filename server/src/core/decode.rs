//! Image decoding with limits checked from the header first (decompression bombs are refused
//! before any pixel is allocated), then the model's own preprocessing.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use csp_models::heads::Letterbox;
use csp_models::preprocess::{Preprocess, Resize};
use image::{ImageReader, Limits as ImageLimits};

use super::types::InferError;

/// A decoded and preprocessed image: the model input [3, H, W] and how it maps back.
pub(crate) struct Prepared {
    pub input: Tensor,
    pub width: u32,
    pub height: u32,
    /// For detectors: the mapping from network pixels back to the original image.
    pub letterbox: Option<Letterbox>,
}

pub(crate) fn prepare(
    index: usize,
    bytes: &[u8],
    max_pixels: u64,
    preprocess: &Preprocess,
    input_size: (usize, usize),
) -> Result<Prepared, InferError> {
    let bad = |reason: String| InferError::BadImage { index, reason };
    if bytes.is_empty() {
        return Err(bad("empty image".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(e.to_string()))?;
    if reader.format().is_none() {
        return Err(bad("not a supported image format (PNG, JPEG, BMP, WebP)".into()));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| bad(format!("unreadable image header: {e}")))?;
    if w == 0 || h == 0 {
        return Err(bad(format!("image has no pixels ({w}x{h})")));
    }
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(InferError::TooLarge(format!(
            "image {index} is {w}x{h} = {} pixels, over the limit of {max_pixels}",
            u64::from(w) * u64::from(h)
        )));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(e.to_string()))?;
    let mut limits = ImageLimits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // Decoded RGBA at 16 bits per channel is the largest a supported format produces.
    limits.max_alloc = Some(u64::from(w) * u64::from(h) * 8 + (1 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(format!("cannot decode: {e}")))?;
    let input = preprocess.apply(&img, input_size, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let letterbox = match preprocess.resize {
        Resize::Letterbox => {
            Some(Letterbox::new((w as usize, h as usize), (input_size.1, input_size.0)).map_err(|e| bad(e.to_string()))?)
        }
        Resize::Stretch => Some(
            Letterbox::stretched((w as usize, h as usize), (input_size.1, input_size.0)).map_err(|e| bad(e.to_string()))?,
        ),
        Resize::CenterCrop { .. } => None,
    };
    Ok(Prepared { input, width: w, height: h, letterbox })
}
