//! Augmentation keeps images and boxes aligned; with augmentation off (or in evaluation) the
//! detector input is exactly the server's `Preprocess::apply` letterbox.

use std::path::PathBuf;

use candle_core::Device;
use csp_models::heads::Letterbox;
use csp_models::preprocess::Preprocess;
use csp_train::data::{
    color_jitter, hflip_boxes, hflip_planar, random_resized_crop, BoxLabel, ColorJitter, DetAugment, DetDataset,
    DetLoader, DetSample, LoaderConfig,
};
use image::{Rgb, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A red rectangle on black, its box, written to a temporary PNG.
fn red_box_dataset(name: &str, (w, h): (u32, u32), rects: &[[u32; 4]]) -> (PathBuf, DetDataset) {
    let dir = std::env::temp_dir().join(format!("csp-train-aug-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut img = RgbImage::new(w, h);
    for &[x0, y0, x1, y1] in rects {
        for y in y0..y1 {
            for x in x0..x1 {
                img.put_pixel(x, y, Rgb([255, 0, 0]));
            }
        }
    }
    let path = dir.join("image.png");
    img.save(&path).unwrap();
    let boxes = rects.iter().map(|r| BoxLabel::from_corners(0, r.map(|v| v as f32))).collect();
    let sample = DetSample { path, width: w as usize, height: h as usize, boxes };
    (dir, DetDataset { classes: vec!["box".into()], samples: vec![sample] })
}

fn det_config(train: bool, preprocess: Preprocess) -> LoaderConfig {
    LoaderConfig { batch_size: 1, workers: 0, seed: 3, train, size: (64, 96), preprocess, ..LoaderConfig::default() }
}

#[test]
fn flipping_twice_is_the_identity() {
    let data: Vec<f32> = (0..3 * 4 * 5).map(|v| v as f32).collect();
    let mut flipped = data.clone();
    hflip_planar(&mut flipped, 4, 5);
    assert_eq!(&flipped[..5], &[4.0, 3.0, 2.0, 1.0, 0.0]);
    hflip_planar(&mut flipped, 4, 5);
    assert_eq!(flipped, data);
    let boxes = vec![BoxLabel::from_corners(2, [1.0, 2.0, 4.0, 5.0])];
    let mut once = boxes.clone();
    hflip_boxes(&mut once, 10.0);
    assert_eq!(once[0].corners(), [6.0, 2.0, 9.0, 5.0]);
    hflip_boxes(&mut once, 10.0);
    assert_eq!(once, boxes);
}

#[test]
fn evaluation_and_unaugmented_training_equal_the_server_letterbox() {
    let (dir, dataset) = red_box_dataset("exact", (50, 30), &[[5, 4, 20, 25], [30, 0, 50, 10]]);
    let img = image::open(&dataset.samples[0].path).unwrap();
    let mean_std = Preprocess { mean: [0.4, 0.5, 0.6], std: [0.2, 0.3, 0.25], ..Preprocess::DARKNET_DETECTOR };
    for preprocess in [Preprocess::DARKNET_DETECTOR, mean_std] {
        let expected = preprocess.apply(&img, (64, 96), &Device::Cpu).unwrap().flatten_all().unwrap();
        let expected = expected.to_vec1::<f32>().unwrap();
        let lb = Letterbox::new((50, 30), (96, 64)).unwrap();
        let eval = DetLoader::new(dataset.clone(), det_config(false, preprocess)).unwrap();
        let plain =
            DetLoader::new(dataset.clone(), det_config(true, preprocess)).unwrap().with_augment(DetAugment::NONE);
        for batch in [eval.batch(0, 0).unwrap(), plain.batch(0, 0).unwrap()] {
            assert_eq!(batch.images.data, expected);
            assert_eq!(batch.letterboxes, vec![lb]);
            let mapped: Vec<[f32; 4]> = batch.boxes[0].iter().map(BoxLabel::corners).collect();
            let want: Vec<[f32; 4]> = dataset.samples[0].boxes.iter().map(|b| lb.forward_box(b.corners())).collect();
            assert_eq!(mapped, want);
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The box of the pixels that are clearly red (red - green > 0.5), in [0, 1] planar data.
fn red_extent(data: &[f32], h: usize, w: usize) -> Option<[f32; 4]> {
    let mut e: Option<[f32; 4]> = None;
    for y in 0..h {
        for x in 0..w {
            if data[y * w + x] - data[h * w + y * w + x] > 0.5 {
                let (fx, fy) = (x as f32, y as f32);
                e = Some(match e {
                    None => [fx, fy, fx + 1.0, fy + 1.0],
                    Some(b) => [b[0].min(fx), b[1].min(fy), b[2].max(fx + 1.0), b[3].max(fy + 1.0)],
                });
            }
        }
    }
    e
}

#[test]
fn augmented_boxes_follow_the_pixels() {
    let (dir, dataset) = red_box_dataset("follow", (80, 60), &[[12, 20, 44, 47]]);
    let augment = DetAugment { jitter: ColorJitter::NONE, flip: 0.5, scale: (0.5, 1.5), ..DetAugment::default() };
    let loader = DetLoader::new(dataset, det_config(true, Preprocess::DARKNET_DETECTOR)).unwrap().with_augment(augment);
    let (mut flipped, mut kept) = (0, 0);
    for epoch in 0..40 {
        let batch = loader.batch(epoch, 0).unwrap();
        let (h, w) = (batch.images.height, batch.images.width);
        let pixels = red_extent(&batch.images.data, h, w);
        match (batch.boxes[0].first(), pixels) {
            (Some(b), Some(p)) => {
                kept += 1;
                // Resampling blurs the edge by about a pixel either way.
                for (u, v) in b.corners().into_iter().zip(p) {
                    assert!((u - v).abs() <= 1.5, "epoch {epoch}: box {b:?} vs red pixels {p:?}");
                }
                let centre = (b.x0 + b.x1) / 2.0;
                flipped += usize::from(centre > w as f32 / 2.0);
            }
            // Dropped boxes may leave a sliver of red behind (under min_visible).
            (None, _) => {}
            (Some(b), None) => panic!("epoch {epoch}: box {b:?} but no red pixels"),
        }
    }
    // The box starts left of centre: flips show up as boxes right of centre.
    assert!(kept >= 30 && flipped > 5 && flipped < kept - 5, "kept {kept}, right of centre {flipped}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn multi_scale_sizes_and_explicit_sizes() {
    let (dir, dataset) = red_box_dataset("sizes", (40, 40), &[[5, 5, 30, 30]]);
    let loader = DetLoader::new(dataset, det_config(true, Preprocess::DARKNET_DETECTOR)).unwrap();
    let batch = loader.batch_at(0, 0, (128, 160)).unwrap();
    assert_eq!((batch.images.n, batch.images.height, batch.images.width), (1, 128, 160));
    assert_eq!(batch.images.data.len(), 3 * 128 * 160);
    assert_eq!(loader.size_for(0, 0), (64, 96));
    let ms = csp_train::data::MultiScale { min: 32, max: 320, every: 2 };
    let loader = loader.with_multi_scale(ms).unwrap();
    let sizes: Vec<_> = (0..40).map(|s| loader.size_for(1, s)).collect();
    assert!(sizes.iter().all(|&(h, w)| h == w && h % 32 == 0 && (32..=320).contains(&h)));
    assert!(sizes.chunks(2).all(|p| p[0] == p[1]), "one size per `every` steps");
    assert!(sizes.iter().any(|&s| s != sizes[0]));
    let bad = csp_train::data::MultiScale { min: 40, max: 320, every: 2 };
    assert!(loader.with_multi_scale(bad).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn classification_crop_and_jitter() {
    let mut img = RgbImage::new(40, 30);
    img.enumerate_pixels_mut().for_each(|(x, y, p)| *p = Rgb([(x * 6) as u8, (y * 8) as u8, 100]));
    let crop =
        |seed| random_resized_crop(&img, (24, 32), (0.3, 1.0), (0.75, 1.33), &mut ChaCha8Rng::seed_from_u64(seed));
    assert_eq!(crop(1).dimensions(), (32, 24));
    assert_eq!(crop(1), crop(1));
    assert_ne!(crop(1), crop(2));
    // A full-image crop is the plain resize.
    let full =
        random_resized_crop(&img, (30, 40), (1.0, 1.0), (40.0 / 30.0, 40.0 / 30.0), &mut ChaCha8Rng::seed_from_u64(0));
    assert_eq!(full, img);
    let data: Vec<f32> = (0..3 * 50).map(|v| (v % 17) as f32 / 16.0).collect();
    let mut same = data.clone();
    color_jitter(&mut same, &ColorJitter::NONE, &mut ChaCha8Rng::seed_from_u64(0));
    assert_eq!(same, data);
    let strong = ColorJitter { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.5 };
    let mut jittered = data.clone();
    color_jitter(&mut jittered, &strong, &mut ChaCha8Rng::seed_from_u64(0));
    assert_ne!(jittered, data);
    assert!(jittered.iter().all(|v| (0.0..=1.0).contains(v)));
}
