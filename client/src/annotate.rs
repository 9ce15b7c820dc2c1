//! `detect --draw DIR`: annotated copies of the images, boxes and "label score" tags drawn with
//! csp-models' own drawing code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use csp_models::heads::Detection;
use image::ImageFormat;

use crate::ClientError;

/// Picks unique output names in one folder: `photo.jpg`, then `photo-1.jpg`, ...
#[derive(Default)]
pub struct Names {
    used: HashSet<PathBuf>,
}

impl Names {
    /// The path for an annotated copy of `source` in `dir`: same stem; PNG stays PNG, every
    /// other format becomes JPEG.
    pub fn next(&mut self, dir: &Path, source: &str, bytes: &[u8]) -> PathBuf {
        let stem = Path::new(source).file_stem().and_then(|s| s.to_str()).unwrap_or("image").to_owned();
        let ext = match image::guess_format(bytes) {
            Ok(ImageFormat::Png) => "png",
            _ => "jpg",
        };
        let mut path = dir.join(format!("{stem}.{ext}"));
        let mut k = 1;
        while !self.used.insert(path.clone()) {
            path = dir.join(format!("{stem}-{k}.{ext}"));
            k += 1;
        }
        path
    }
}

/// Decodes `bytes`, draws `detections` on it and writes it to `out` (format from the extension).
pub fn write_annotated(bytes: &[u8], detections: &[Detection], out: &Path) -> Result<(), ClientError> {
    let mut img = image::load_from_memory(bytes)
        .map_err(|e| ClientError::Input(format!("cannot decode the image to draw on it: {e}")))?
        .to_rgb8();
    csp_models::draw::draw_detections(&mut img, detections);
    img.save(out).map_err(|e| ClientError::Input(format!("cannot write {}: {e}", out.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_keep_png() {
        let jpeg = crate::images::synthetic(8, 8, 1).unwrap().remove(0).bytes;
        let mut png = Vec::new();
        image::RgbImage::new(4, 4).write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png).unwrap();
        let mut names = Names::default();
        let dir = Path::new("/out");
        assert_eq!(names.next(dir, "a/cat.jpeg", &jpeg), dir.join("cat.jpg"));
        assert_eq!(names.next(dir, "b/cat.jpg", &jpeg), dir.join("cat-1.jpg"));
        assert_eq!(names.next(dir, "b/cat.png", &png), dir.join("cat.png"));
        assert_eq!(names.next(dir, "x.bmp", &jpeg), dir.join("x.jpg"));
    }

    #[test]
    fn draws_boxes_into_the_written_file() {
        let jpeg = crate::images::synthetic(64, 48, 1).unwrap().remove(0).bytes;
        let out = std::env::temp_dir().join(format!("csp-client-annotate-{}.png", std::process::id()));
        let det = Detection { bbox: [8.0, 8.0, 40.0, 40.0], score: 0.9, class_id: 1, label: Some("dog".into()) };
        write_annotated(&jpeg, &[det], &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!(*img.get_pixel(8, 20), csp_models::draw::class_color(1));
        std::fs::remove_file(&out).unwrap();
        assert!(write_annotated(b"not an image", &[], &out).is_err());
    }
}
