//! Image decoding with limits checked from the header first (decompression bombs are refused
//! before any pixel is allocated), then the model's own preprocessing.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use csp_models::heads::Letterbox;
use csp_models::preprocess::{Preprocess, Resize};
use image::{ImageFormat, ImageReader, Limits as ImageLimits};

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
    // The JPEG decoder fills a cut-off scan with grey instead of failing: require the end marker.
    if reader.format() == Some(ImageFormat::Jpeg) && !has_jpeg_end(bytes) {
        return Err(bad("truncated JPEG (no end-of-image marker)".into()));
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
        Resize::Letterbox => Some(
            Letterbox::new((w as usize, h as usize), (input_size.1, input_size.0)).map_err(|e| bad(e.to_string()))?,
        ),
        Resize::Stretch => Some(
            Letterbox::stretched((w as usize, h as usize), (input_size.1, input_size.0))
                .map_err(|e| bad(e.to_string()))?,
        ),
        Resize::CenterCrop { .. } => None,
    };
    Ok(Prepared { input, width: w, height: h, letterbox })
}

/// Whether the file ends with JPEG's end-of-image marker (FF D9), allowing a little trailing padding.
/// Inside entropy-coded data an FF byte is always followed by 00, so the marker cannot occur there.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 8, y as u8 * 10, 90]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn truncated_jpeg_is_refused_whole_one_is_not() {
        let p = Preprocess::DARKNET_CLASSIFIER;
        let full = jpeg();
        assert!(prepare(0, &full, 1 << 20, &p, (16, 16)).is_ok());
        let cut = &full[..full.len() * 2 / 3];
        match prepare(0, cut, 1 << 20, &p, (16, 16)) {
            Err(InferError::BadImage { reason, .. }) => assert!(reason.contains("truncated"), "{reason}"),
            other => panic!("expected BadImage, got {:?}", other.map(|_| ())),
        }
    }
}
