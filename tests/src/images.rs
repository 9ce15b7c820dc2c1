//! Test images: deterministic RGB patterns encoded as PNG or JPEG, and broken or hostile files.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};

/// A smooth pattern that differs per `seed`, so different seeds give different model outputs.
pub fn pattern(width: u32, height: u32, seed: u32) -> RgbImage {
    let s = seed as f32 + 1.0;
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width.max(1) as f32, y as f32 / height.max(1) as f32);
        let r = 127.5 + 127.5 * (6.0 * fx * s).sin();
        let g = 127.5 + 127.5 * (5.0 * fy + s).cos();
        let b = 255.0 * ((fx + fy * s) * 0.5).fract();
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

pub fn png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    encode(&pattern(width, height, seed), ImageFormat::Png)
}

pub fn jpeg(width: u32, height: u32, seed: u32) -> Vec<u8> {
    encode(&pattern(width, height, seed), ImageFormat::Jpeg)
}

/// One flat colour: compresses to almost nothing, so a huge image fits a small body.
pub fn solid_png(width: u32, height: u32) -> Vec<u8> {
    encode(&RgbImage::from_pixel(width, height, image::Rgb([90, 120, 150])), ImageFormat::Png)
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A decompression bomb's header: a valid PNG signature and IHDR claiming `width` x `height`
/// RGB pixels, followed by a tiny IDAT and IEND. Decoding it would allocate width*height*3 bytes.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes: far fewer than the header promises.
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A real JPEG whose frame header (SOF0) is patched to claim `width` x `height`.
pub fn jpeg_with_claimed_size(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg(32, 32, 0);
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG has SOF0");
    // Marker (2), length (2), precision (1), then height and width, big-endian.
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// The first half of a real JPEG: headers intact, scan data cut off.
pub fn truncated_jpeg() -> Vec<u8> {
    let mut bytes = jpeg(128, 96, 3);
    bytes.truncate(bytes.len() / 2);
    bytes
}

/// The first half of a real PNG: the image data stream ends early.
pub fn truncated_png() -> Vec<u8> {
    let mut bytes = png(128, 96, 3);
    bytes.truncate(bytes.len() / 2);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_value() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn bomb_header_reads_as_huge() {
        let reader = image::ImageReader::new(Cursor::new(png_bomb(100_000, 100_000))).with_guessed_format().unwrap();
        assert_eq!(reader.into_dimensions().unwrap(), (100_000, 100_000));
        let reader =
            image::ImageReader::new(Cursor::new(jpeg_with_claimed_size(60_000, 50_000))).with_guessed_format().unwrap();
        assert_eq!(reader.into_dimensions().unwrap(), (60_000, 50_000));
    }

    #[test]
    fn patterns_differ_by_seed() {
        assert_ne!(pattern(8, 8, 0).into_raw(), pattern(8, 8, 1).into_raw());
    }
}
