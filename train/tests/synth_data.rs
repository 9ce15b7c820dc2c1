//! The generator, the readers and the loaders together: determinism, annotation consistency,
//! round trips through all three formats, loader determinism across worker counts.

use std::path::{Path, PathBuf};

use csp_models::preprocess::Preprocess;
use csp_train::data::{
    ClassDataset, ClassLoader, DetDataset, DetFormat, DetLoader, LoaderConfig, MultiScale, LABELS_FILE,
};
use csp_train::synth::{run, SynthArgs, SynthFormat};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csp-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn synth(name: &str, images: usize, seed: u64, format: SynthFormat) -> PathBuf {
    let out = temp_dir(name);
    run(&SynthArgs::new(&out, images, seed, format)).unwrap();
    out
}

/// Every file under `dir` with its bytes, sorted by relative path.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn same_seed_same_bytes_other_seed_other_images() {
    let a = synth("det-a", 12, 5, SynthFormat::Coco);
    let mut args = SynthArgs::new(temp_dir("det-b"), 12, 5, SynthFormat::Coco);
    args.workers = Some(3);
    run(&args).unwrap();
    let c = synth("det-c", 12, 6, SynthFormat::Coco);
    let (ta, tb, tc) = (tree(&a), tree(&args.out), tree(&c));
    assert_eq!(ta.len(), 12 + 2 + 2, "12 images, 2 annotation files, labels.txt, synth.json");
    assert!(ta == tb, "same seed, different worker count: bytes differ");
    let pngs = |t: &[(PathBuf, Vec<u8>)]| {
        t.iter().filter(|(p, _)| p.extension().unwrap() == "png").cloned().collect::<Vec<_>>()
    };
    let (pa, pc) = (pngs(&ta), pngs(&tc));
    assert!(pa.iter().zip(&pc).all(|(x, y)| x.1 != y.1), "another seed must change every image");
    for d in [a, args.out, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn refuses_a_non_empty_output() {
    let out = synth("nonempty", 2, 0, SynthFormat::Yolo);
    let err = run(&SynthArgs::new(&out, 2, 0, SynthFormat::Yolo)).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn coco_and_yolo_read_back_the_same_boxes() {
    let coco = synth("rt-coco", 20, 11, SynthFormat::Coco);
    let yolo = synth("rt-yolo", 20, 11, SynthFormat::Yolo);
    for split in ["train", "val"] {
        let c = DetDataset::open(&coco, split, DetFormat::Coco).unwrap();
        let y = DetDataset::open(&yolo, split, DetFormat::Yolo).unwrap();
        assert_eq!(c.samples.len(), if split == "train" { 16 } else { 4 });
        assert_eq!(c.classes, ["circle", "square", "triangle", "star", "hexagon", "cross"]);
        assert_eq!(c.classes, y.classes);
        for (cs, ys) in c.samples.iter().zip(&y.samples) {
            assert_eq!(cs.path.file_name(), ys.path.file_name());
            assert_eq!((cs.width, cs.height), (160, 128));
            assert_eq!((ys.width, ys.height), (160, 128));
            assert!(!cs.boxes.is_empty() && cs.boxes.len() <= 5);
            assert_eq!(cs.boxes.len(), ys.boxes.len());
            for (a, b) in cs.boxes.iter().zip(&ys.boxes) {
                assert_eq!(a.class, b.class);
                // Integer pixel boxes in COCO; YOLO's 6 normalised decimals round them slightly.
                for (u, v) in a.corners().into_iter().zip(b.corners()) {
                    assert_eq!(u, u.round());
                    assert!((u - v).abs() < 1e-3, "{a:?} vs {b:?}");
                }
                assert!(a.x0 >= 0.0 && a.y0 >= 0.0 && a.x1 <= 160.0 && a.y1 <= 128.0 && a.width() >= 1.0);
            }
        }
    }
    std::fs::remove_dir_all(coco).unwrap();
    std::fs::remove_dir_all(yolo).unwrap();
}

#[test]
fn folder_reads_back_balanced_classes() {
    let out = synth("rt-folder", 24, 3, SynthFormat::Folder);
    let train = ClassDataset::open(&out, "train").unwrap();
    let val = ClassDataset::open(&out, "val").unwrap();
    assert_eq!(std::fs::read_to_string(out.join(LABELS_FILE)).unwrap().lines().count(), 6);
    assert_eq!((train.samples.len(), val.samples.len()), (19, 5));
    assert_eq!(train.classes, val.classes);
    for s in train.samples.iter().chain(&val.samples) {
        // Image i is of class i % 6 and lives in that class's folder.
        let i: usize = s.path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        assert_eq!(s.label, i % 6);
        assert_eq!(s.path.parent().unwrap().file_name().unwrap().to_str().unwrap(), train.classes[s.label]);
        assert_eq!(image::image_dimensions(&s.path).unwrap(), (64, 64));
    }
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn class_loader_is_deterministic_across_workers_and_resume() {
    let out = synth("ld-class", 14, 1, SynthFormat::Folder);
    let dataset = ClassDataset::open(&out, "train").unwrap();
    let config = |workers| LoaderConfig {
        batch_size: 4,
        workers,
        seed: 9,
        size: (48, 48),
        preprocess: Preprocess::TIMM,
        ..LoaderConfig::default()
    };
    let one = ClassLoader::new(dataset.clone(), config(0)).unwrap();
    let three = ClassLoader::new(dataset.clone(), config(3)).unwrap();
    assert_eq!(one.steps_per_epoch(), 11 / 4);
    let a: Vec<_> = one.batches(2).map(Result::unwrap).collect();
    let b: Vec<_> = three.batches(2).map(Result::unwrap).collect();
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.images.data, y.images.data);
        assert_eq!(x.labels, y.labels);
        assert_eq!(x.images.data.len(), 4 * 3 * 48 * 48);
    }
    // Stopping early (the consumer drops the iterator) must not hang the workers.
    let first = three.batches(2).next().unwrap().unwrap();
    assert_eq!(first.images.data, a[0].images.data);
    let resumed: Vec<_> = three.batches_from(2, 1).map(Result::unwrap).collect();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].images.data, a[1].images.data);
    // Another epoch reshuffles and re-augments.
    let other = one.batch(3, 0).unwrap();
    assert_ne!(other.images.data, a[0].images.data);
    // Evaluation batches are exactly the served model's input.
    let eval =
        ClassLoader::new(ClassDataset::open(&out, "val").unwrap(), LoaderConfig { train: false, ..config(2) }).unwrap();
    let batch = eval.batch(0, 0).unwrap();
    let img = image::open(&eval.dataset().samples[batch.indices[0]].path).unwrap();
    let expected = Preprocess::TIMM.apply(&img, (48, 48), &candle_core::Device::Cpu).unwrap();
    assert_eq!(batch.images.data[..3 * 48 * 48], expected.flatten_all().unwrap().to_vec1::<f32>().unwrap()[..]);
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn det_loader_is_deterministic_and_keeps_boxes_inside() {
    let out = synth("ld-det", 10, 2, SynthFormat::Yolo);
    let dataset = DetDataset::open(&out, "train", DetFormat::Yolo).unwrap();
    let config = |workers| LoaderConfig {
        batch_size: 3,
        workers,
        seed: 4,
        size: (96, 96),
        preprocess: Preprocess::DARKNET_DETECTOR,
        ..LoaderConfig::default()
    };
    let ms = MultiScale { min: 64, max: 128, every: 1 };
    let one = DetLoader::new(dataset.clone(), config(0)).unwrap().with_multi_scale(ms).unwrap();
    let two = DetLoader::new(dataset, config(2)).unwrap().with_multi_scale(ms).unwrap();
    let a: Vec<_> = one.batches(0).map(Result::unwrap).collect();
    let b: Vec<_> = two.batches(0).map(Result::unwrap).collect();
    assert_eq!(a.len(), 2);
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.images.data, y.images.data);
        assert_eq!(x.boxes, y.boxes);
        let (h, w) = one.size_for(0, step);
        assert_eq!((x.images.height, x.images.width), (h, w));
        assert!(h % 32 == 0 && (64..=128).contains(&h));
        for b in x.boxes.iter().flatten() {
            assert!(b.x0 >= 0.0 && b.y0 >= 0.0 && b.x1 <= w as f32 && b.y1 <= h as f32 && b.width() >= 2.0);
        }
    }
    std::fs::remove_dir_all(out).unwrap();
}
