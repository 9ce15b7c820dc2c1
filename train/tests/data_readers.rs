//! Readers reject malformed input with errors that name the file and the problem.

use std::path::{Path, PathBuf};

use csp_train::data::{read_coco, read_yolo, ClassDataset, DetDataset, DetFormat};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("csp-train-read-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn png(path: &Path, (w, h): (u32, u32)) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::new(w, h).save(path).unwrap();
}

fn err_text(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.unwrap_err())
}

const CATS: &str = r#""categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]"#;

#[test]
fn coco_maps_sparse_ids_and_clips_boxes() {
    let d = dir("coco-ok");
    let json = d.join("a.json");
    let text = format!(
        r#"{{"images": [{{"id": 5, "file_name": "x.png", "width": 20, "height": 10}}],
            "annotations": [{{"id": 1, "image_id": 5, "category_id": 7, "bbox": [15, 2, 10, 4]}},
                            {{"id": 2, "image_id": 5, "category_id": 3, "bbox": [1, 1, 2, 2], "iscrowd": 1}},
                            {{"id": 3, "image_id": 5, "category_id": 3, "bbox": [25, 1, 2, 2]}}], {CATS}}}"#
    );
    std::fs::write(&json, text).unwrap();
    let ds = read_coco(&json, &d.join("img")).unwrap();
    assert_eq!(ds.classes, ["a", "b"]);
    assert_eq!(ds.samples[0].path, d.join("img").join("x.png"));
    // Category 7 is the second by id; the box is clipped at x = 20; crowd and outside boxes go.
    assert_eq!(ds.samples[0].boxes, vec![csp_train::data::BoxLabel { class: 1, x0: 15.0, y0: 2.0, x1: 20.0, y1: 6.0 }]);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn coco_errors_name_the_file_and_the_problem() {
    let d = dir("coco-bad");
    let json = d.join("bad.json");
    let image = r#"{"id": 1, "file_name": "x.png", "width": 20, "height": 10}"#;
    let cases = [
        ("{not json", "malformed"),
        (r#"{"images": [], "annotations": [], "categories": []}"#, "no categories"),
        (
            &format!(
                r#"{{"images": [{image}], "annotations": [{{"id": 9, "image_id": 2, "category_id": 3, "bbox": [0,0,1,1]}}], {CATS}}}"#
            ),
            "unknown image id 2",
        ),
        (
            &format!(
                r#"{{"images": [{image}], "annotations": [{{"id": 9, "image_id": 1, "category_id": 4, "bbox": [0,0,1,1]}}], {CATS}}}"#
            ),
            "unknown category id 4",
        ),
        (
            &format!(
                r#"{{"images": [{image}], "annotations": [{{"id": 9, "image_id": 1, "category_id": 3, "bbox": [0,0,-1,1]}}], {CATS}}}"#
            ),
            "invalid bbox",
        ),
        (&format!(r#"{{"images": [{image}, {image}], "annotations": [], {CATS}}}"#), "image id 1 appears twice"),
    ];
    for (text, want) in cases {
        std::fs::write(&json, text).unwrap();
        let msg = err_text(read_coco(&json, &d));
        assert!(msg.contains("bad.json") && msg.contains(want), "{want}: {msg}");
    }
    assert!(err_text(read_coco(&d.join("missing.json"), &d)).contains("missing.json"));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn yolo_reads_boxes_and_rejects_bad_lines() {
    let d = dir("yolo");
    png(&d.join("images/a.png"), (100, 50));
    png(&d.join("images/b.png"), (100, 50));
    std::fs::create_dir_all(d.join("labels")).unwrap();
    std::fs::write(d.join("labels/a.txt"), "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.2 0.2\n").unwrap();
    let classes = vec!["x".to_string(), "y".to_string()];
    let ds = read_yolo(&d.join("images"), &d.join("labels"), classes.clone()).unwrap();
    assert_eq!(ds.samples.len(), 2);
    let b = ds.samples[0].boxes[0];
    assert_eq!((b.class, b.x0, b.y0, b.x1, b.y1), (1, 40.0, 15.0, 60.0, 35.0));
    // Clipped at the left/top edge; `b.png` has no label file: a background image.
    assert_eq!(ds.samples[0].boxes[1].corners(), [0.0, 0.0, 20.0, 10.0]);
    assert!(ds.samples[1].boxes.is_empty());
    // The bad line comes second: errors name the file and line 2.
    for (line, want) in [
        ("0 0.5 0.5 0.2", "expected `class cx cy w h`"),
        ("2 0.5 0.5 0.2 0.2", "class 2 is out of range"),
        ("0 0.5 1.7 0.2 0.2", "outside [0, 1]"),
        ("0 0.5 abc 0.2 0.2", "`abc` is not a number"),
        ("x 0.5 0.5 0.2 0.2", "class `x` is not an index"),
    ] {
        std::fs::write(d.join("labels/a.txt"), format!("0 0.5 0.5 0.1 0.1\n{line}\n")).unwrap();
        let msg = err_text(read_yolo(&d.join("images"), &d.join("labels"), classes.clone()));
        assert!(msg.contains("a.txt") && msg.contains("line 2") && msg.contains(want), "{want}: {msg}");
    }
    let msg = err_text(DetDataset::open(&d, "train", DetFormat::Yolo));
    assert!(msg.contains("labels.txt"), "{msg}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn image_folder_errors() {
    let d = dir("folder");
    png(&d.join("train/cat/1.png"), (8, 8));
    png(&d.join("train/dog/2.jpg"), (8, 8));
    std::fs::write(d.join("train/dog/notes.txt"), "not an image").unwrap();
    png(&d.join("val/cat/3.png"), (8, 8));
    png(&d.join("val/cow/4.png"), (8, 8));
    let train = ClassDataset::open(&d, "train").unwrap();
    assert_eq!(train.classes, ["cat", "dog"]);
    assert_eq!(train.samples.iter().map(|s| s.label).collect::<Vec<_>>(), [0, 1]);
    let msg = err_text(ClassDataset::open(&d, "val"));
    assert!(msg.contains("`cow` is not one of the classes") && msg.contains("val"), "{msg}");
    assert!(err_text(ClassDataset::open(&d, "test")).contains("test"));
    std::fs::remove_dir_all(d).unwrap();
}
