//! Class names: COCO's 80 detection classes built in, or a labels file (one name a line).

use std::path::Path;

use crate::error::{Error, Result};

/// COCO 2017's 80 detection classes, in the order darknet and every COCO-trained detector use.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// COCO's own category ids (1..=90, with gaps) for the 80 classes, as the annotation files and
/// the evaluation server expect them.
pub const COCO_CATEGORY_IDS: [u32; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
];

/// COCO's 80 class names as owned strings.
pub fn coco_labels() -> Vec<String> {
    COCO_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// Names from a labels text: one a line, surrounding whitespace trimmed, blank lines ignored.
pub fn parse_labels(text: &str) -> Result<Vec<String>> {
    let names: Vec<String> = text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_string).collect();
    if names.is_empty() {
        return Err(Error::Input("labels list has no names (expected one class name per line)".into()));
    }
    Ok(names)
}

/// Reads a labels file (darknet's `coco.names` format).
pub fn load_labels(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Input(format!("labels file `{}`: {e}", path.display())))?;
    parse_labels(&text).map_err(|_| {
        Error::Input(format!("labels file `{}` has no names (expected one class name per line)", path.display()))
    })
}
