//! The images a command sends: files named on the command line (folders are read one level
//! deep), or synthetic images of a given size encoded as JPEG.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use image::{ImageFormat, RgbImage};

use crate::ClientError;

/// File extensions taken from a folder (files named directly are sent whatever their name).
const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// One encoded image and where it came from.
#[derive(Clone, Debug)]
pub struct ImageFile {
    /// The file's path, or `synthetic-<i>-WxH.jpg` for generated images.
    pub name: String,
    pub bytes: Bytes,
}

/// Files and folders -> image files, in the order given (a folder's images sorted by name).
pub fn collect_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ClientError> {
    let mut out = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| ClientError::Input(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| ClientError::Input(format!("cannot list {}: {e}", path.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && has_image_extension(p))
                .collect();
            if found.is_empty() {
                return Err(ClientError::Input(format!("no images ({}) in {}", EXTENSIONS.join(", "), path.display())));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads every image named by `paths` (files or folders).
pub fn load(paths: &[PathBuf]) -> Result<Vec<ImageFile>, ClientError> {
    collect_paths(paths)?
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).map_err(|e| ClientError::Input(format!("cannot read {}: {e}", path.display())))?;
            if bytes.is_empty() {
                return Err(ClientError::Input(format!("{} is empty", path.display())));
            }
            Ok(ImageFile { name: path.display().to_string(), bytes: Bytes::from(bytes) })
        })
        .collect()
}

/// `WxH` (also `W*H`) -> (width, height), each 1..=16384.
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) =
        text.split_once(['x', 'X', '*']).ok_or_else(|| format!("image size must look like 640x480, got `{text}`"))?;
    let dim = |s: &str| s.trim().parse::<u32>().ok().filter(|v| (1..=16_384).contains(v));
    match (dim(w), dim(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!("image size must be two whole numbers in 1..=16384, like 640x480; got `{text}`")),
    }
}

/// `count` different synthetic images of `width` x `height`, JPEG-encoded (quality 90): smooth
/// gradients with some texture, so they compress like photographs rather than flat colour.
pub fn synthetic(width: u32, height: u32, count: usize) -> Result<Vec<ImageFile>, ClientError> {
    (0..count.max(1))
        .map(|i| {
            let img = pattern(width, height, i as u32);
            let mut out = Cursor::new(Vec::new());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&img)
                .map_err(|e| ClientError::Input(format!("cannot encode a {width}x{height} JPEG: {e}")))?;
            Ok(ImageFile { name: format!("synthetic-{i}-{width}x{height}.jpg"), bytes: Bytes::from(out.into_inner()) })
        })
        .collect()
}

fn pattern(width: u32, height: u32, seed: u32) -> RgbImage {
    let s = seed as f32 * 0.7 + 1.0;
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        // A little deterministic noise: hash of the coordinates.
        let noise = ((x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ seed.wrapping_mul(83_492_791)) % 32)
            as f32
            - 16.0;
        let r = 127.5 + 110.0 * (6.0 * fx * s).sin() + noise;
        let g = 127.5 + 110.0 * (5.0 * fy + s).cos() + noise;
        let b = 255.0 * ((fx + fy * s) * 0.5).fract();
        image::Rgb([r.clamp(0.0, 255.0) as u8, g.clamp(0.0, 255.0) as u8, b as u8])
    })
}

/// The media type of an encoded image, from its first bytes.
pub fn content_type(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => "image/png",
        Ok(ImageFormat::Jpeg) => "image/jpeg",
        Ok(ImageFormat::Bmp) => "image/bmp",
        Ok(ImageFormat::WebP) => "image/webp",
        Ok(ImageFormat::Gif) => "image/gif",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert_eq!(parse_size("32X16"), Ok((32, 16)));
        assert!(parse_size("640").is_err());
        assert!(parse_size("0x10").is_err());
        assert!(parse_size("axb").is_err());
    }

    #[test]
    fn synthetic_images_are_jpegs_of_the_size_asked_and_differ() {
        let imgs = synthetic(40, 30, 2).unwrap();
        assert_eq!(imgs.len(), 2);
        assert_ne!(imgs[0].bytes, imgs[1].bytes);
        for img in &imgs {
            assert_eq!(content_type(&img.bytes), "image/jpeg");
            let decoded = image::load_from_memory(&img.bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (40, 30));
        }
    }

    #[test]
    fn folders_give_their_images_sorted_and_empty_ones_are_errors() {
        let dir = std::env::temp_dir().join(format!("csp-client-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jpeg = synthetic(8, 8, 1).unwrap().remove(0).bytes;
        std::fs::write(dir.join("b.JPG"), &jpeg).unwrap();
        std::fs::write(dir.join("a.jpg"), &jpeg).unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let found = collect_paths(std::slice::from_ref(&dir)).unwrap();
        let names: Vec<_> = found.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.jpg", "b.JPG"]);
        assert_eq!(load(std::slice::from_ref(&dir)).unwrap().len(), 2);
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(collect_paths(&[empty]).unwrap_err().to_string().contains("no images"));
        assert!(load(&[dir.join("missing.png")]).unwrap_err().to_string().contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
