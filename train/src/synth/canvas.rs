//! A float RGB canvas in [0, 1], quantised to 8 bits once the scene is complete.

use image::RgbImage;

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<[f32; 3]>,
}

impl Canvas {
    pub fn filled(width: usize, height: usize, color: [f32; 3]) -> Self {
        Canvas { width, height, pixels: vec![color; width * height] }
    }

    pub fn blend(&mut self, x: usize, y: usize, color: [f32; 3], alpha: f32) {
        let p = &mut self.pixels[y * self.width + x];
        for c in 0..3 {
            p[c] += (color[c] - p[c]) * alpha;
        }
    }

    pub fn to_image(&self) -> RgbImage {
        let mut img = RgbImage::new(self.width as u32, self.height as u32);
        for (dst, src) in img.pixels_mut().zip(&self.pixels) {
            dst.0 = src.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
        img
    }
}
