//! Image decoding with limits checked from the header first (decompression bombs are refused
//! before any pixel is allocated), then the model's own preprocessing.
//!
//! What users see is what the model gets: the EXIF orientation (JPEG, PNG, WebP) is applied, an
//! animation (GIF, WebP, APNG) contributes its first frame, grey and 16-bit images become 8-bit RGB,
//! and transparency is composited over white, as a viewer shows a transparent picture on a light page.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use csp_models::heads::Letterbox;
use csp_models::preprocess::{Preprocess, Resize};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits as ImageLimits, Rgb, RgbImage};

use super::types::InferError;

/// The formats the server decodes, for error messages.
pub(crate) const FORMATS: &str = "PNG, JPEG, GIF, BMP, WebP";

/// Decoder scratch memory allowed beyond the decoded pixels (palettes, line buffers, metadata).
const DECODER_SLACK_BYTES: u64 = 1 << 20;

/// A decoded and preprocessed image: the model input [3, H, W] and how it maps back.
pub(crate) struct Prepared {
    pub input: Tensor,
    /// Size of the image as shown, after its EXIF orientation.
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
    let img = decode(index, bytes, max_pixels)?;
    let (w, h) = (img.width(), img.height());
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

/// Decodes one encoded image into upright 8-bit RGB, refusing it from its header when it has
/// more than `max_pixels` pixels.
pub(crate) fn decode(index: usize, bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, InferError> {
    let bad = |reason: String| InferError::BadImage { index, reason };
    if bytes.is_empty() {
        return Err(bad("empty image (zero bytes)".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(bad(format!("not an image in a supported format ({FORMATS}){}", what_it_looks_like(bytes))));
    };
    // The JPEG decoder fills a cut-off scan with grey instead of failing: require the end marker.
    if format == ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        return Err(bad("truncated JPEG (no end-of-image marker)".into()));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| bad(format!("unreadable {format:?} header: {e}")))?;
    if w == 0 || h == 0 {
        return Err(bad(format!("image has no pixels ({w}x{h})")));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(InferError::TooLarge(format!(
            "image {index} is {w}x{h} = {pixels} pixels, over the limit of {max_pixels}"
        )));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(e.to_string()))?;
    let mut limits = ImageLimits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // Decoded RGBA at 16 bits per channel is the largest a supported format produces.
    limits.max_alloc = Some(pixels * 8 + DECODER_SLACK_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| bad(format!("cannot decode {format:?}: {e}")))?;
    // Malformed metadata only loses the orientation; the pixels may still be fine.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| bad(format!("cannot decode {format:?}: {e}")))?;
    img.apply_orientation(orientation);
    Ok(flatten(img))
}

/// 8-bit RGB of what a viewer shows: transparency composited over white, grey spread to RGB.
fn flatten(img: DynamicImage) -> DynamicImage {
    if !img.color().has_alpha() {
        return match img {
            DynamicImage::ImageRgb8(_) => img,
            other => DynamicImage::ImageRgb8(other.to_rgb8()),
        };
    }
    let rgba = img.to_rgba16();
    let over_white = |c: u16, a: u16| {
        let (c, a) = (u32::from(c), u32::from(a));
        // In 16-bit units: c*a + 65535*(65535-a), back to 8 bits with rounding.
        let v = (c * a + 65535 * (65535 - a) + 32767) / 65535;
        ((v * 255 + 32767) / 65535) as u8
    };
    let rgb = RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        Rgb([over_white(r, a), over_white(g, a), over_white(b, a)])
    });
    DynamicImage::ImageRgb8(rgb)
}

/// A hint for bodies that are clearly not images (a web page, SVG, JSON or plain text), so the
/// message says what was sent instead of only what was expected.
fn what_it_looks_like(bytes: &[u8]) -> &'static str {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).to_ascii_lowercase();
    let head = head.trim_start_matches('\u{feff}').trim_start();
    if head.contains("<svg") {
        "; this looks like SVG, a vector format: send it rasterised as PNG"
    } else if head.starts_with("<!doctype html") || head.starts_with("<html") {
        "; this looks like an HTML page"
    } else if head.starts_with('{') || head.starts_with('[') {
        "; this looks like JSON: send it with content-type application/json"
    } else if bytes.iter().take(256).all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
        "; this looks like text"
    } else {
        ""
    }
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
