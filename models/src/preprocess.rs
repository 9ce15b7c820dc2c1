//! Image preprocessing: the model's own resize, crop and normalisation, carried in its config.

use candle_core::{Device, Tensor};
use image::{imageops::FilterType, DynamicImage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::heads::letterbox::{Letterbox, LETTERBOX_GREY};

/// Centre crop resizes the whole image, then crops, as timm does; past this many times the
/// input's pixels it crops first instead (only very elongated images, about 6:1 and beyond, get there).
const MAX_RESIZE_OVERSHOOT: u64 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Resize {
    /// Resize the short side to `size / crop_pct`, then crop the centre (timm eval, darknet classifier with 1.0).
    CenterCrop { crop_pct: f32 },
    /// Keep the aspect ratio, pad with grey (0.5) to the full size (darknet detectors); the
    /// geometry is [`Letterbox::new`]'s.
    Letterbox,
    /// Stretch to the input size.
    Stretch,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub resize: Resize,
    /// Per-channel RGB mean and std applied after scaling to [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// timm's `.ra_in1k` defaults for the CSP models: 0.887 crop, ImageNet mean/std.
    pub const TIMM: Preprocess = Preprocess {
        resize: Resize::CenterCrop { crop_pct: 0.887 },
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// Darknet classifiers: RGB in [0, 1], short side resize and centre crop.
    pub const DARKNET_CLASSIFIER: Preprocess =
        Preprocess { resize: Resize::CenterCrop { crop_pct: 1.0 }, mean: [0.0; 3], std: [1.0; 3] };
    /// Darknet detectors: RGB in [0, 1], letterboxed.
    pub const DARKNET_DETECTOR: Preprocess = Preprocess { resize: Resize::Letterbox, mean: [0.0; 3], std: [1.0; 3] };

    /// Decodes an encoded image (PNG, JPEG, BMP, WebP).
    pub fn decode(bytes: &[u8]) -> Result<DynamicImage> {
        image::load_from_memory(bytes).map_err(|e| Error::Image(e.to_string()))
    }

    /// The model input for one image: [3, h, w] f32.
    pub fn apply(&self, img: &DynamicImage, (h, w): (usize, usize), device: &Device) -> Result<Tensor> {
        if h == 0 || w == 0 {
            return Err(Error::Input(format!("model input size must be non-empty, got {h}x{w}")));
        }
        let (h32, w32) = (h as u32, w as u32);
        // `offset`: where the resized image sits in the input; the rest is letterbox grey.
        let (rgb, offset) = match self.resize {
            Resize::Stretch => (img.resize_exact(w32, h32, FilterType::Triangle).to_rgb8(), (0, 0)),
            Resize::CenterCrop { crop_pct } => {
                let (iw, ih) = (img.width().max(1) as f32, img.height().max(1) as f32);
                let short = (h.min(w) as f32 / crop_pct).floor();
                let scale = short / iw.min(ih);
                let (rw, rh) = (((iw * scale).round() as u32).max(w32), ((ih * scale).round() as u32).max(h32));
                if u64::from(rw) * u64::from(rh) > MAX_RESIZE_OVERSHOOT * u64::from(w32) * u64::from(h32) {
                    // A very thin image (1x200000) would resize to far more pixels than the crop
                    // keeps (gigabytes): cut the kept part out of the source first.
                    let (cx, cy) = (w32 as f32 / scale, h32 as f32 / scale);
                    let (sw, sh) =
                        ((cx.round() as u32).clamp(1, img.width()), (cy.round() as u32).clamp(1, img.height()));
                    let region = img.crop_imm((img.width() - sw) / 2, (img.height() - sh) / 2, sw, sh);
                    (region.resize_exact(w32, h32, FilterType::Triangle).to_rgb8(), (0, 0))
                } else {
                    let resized = img.resize_exact(rw, rh, FilterType::Triangle);
                    (resized.crop_imm((rw - w32) / 2, (rh - h32) / 2, w32, h32).to_rgb8(), (0, 0))
                }
            }
            Resize::Letterbox => {
                // Same geometry as `heads::Letterbox`, which maps the detections back.
                let src = (img.width().max(1) as usize, img.height().max(1) as usize);
                let lb = Letterbox::new(src, (w, h))?;
                let (rw, rh) = (lb.resized.0 as u32, lb.resized.1 as u32);
                (img.resize_exact(rw, rh, FilterType::Triangle).to_rgb8(), lb.offset)
            }
        };
        // Padding is darknet's exact 0.5 grey in [0, 1] units, then normalised like the pixels.
        let mut data = vec![0f32; 3 * h * w];
        for (c, plane) in data.chunks_exact_mut(h * w).enumerate() {
            plane.fill((LETTERBOX_GREY - self.mean[c]) / self.std[c]);
        }
        for (x, y, p) in rgb.enumerate_pixels() {
            let (x, y) = (x as usize + offset.0, y as usize + offset.1);
            if x >= w || y >= h {
                continue;
            }
            for c in 0..3 {
                let v = p.0[c] as f32 / 255.0;
                data[c * h * w + y * w + x] = (v - self.mean[c]) / self.std[c];
            }
        }
        Ok(Tensor::from_vec(data, (3, h, w), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_image_is_cropped_before_resizing() {
        // Resized whole, 1x200000 would become 64x12800000 (2.4 GB of RGB) before the crop.
        let colour = image::Rgb([200u8, 40, 30]);
        let thin = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 200_000, colour));
        let square = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 64, colour));
        let p = Preprocess::DARKNET_CLASSIFIER;
        let a = p.apply(&thin, (64, 64), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = p.apply(&square, (64, 64), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
    }
}
