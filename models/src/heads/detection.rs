//! The detector's answer for one object.

use serde::{Deserialize, Serialize};

/// One detected object in the original image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Corners `[x1, y1, x2, y2]` in original-image pixels, clamped to the image.
    pub bbox: [f32; 4],
    /// Objectness times class probability.
    pub score: f32,
    pub class_id: usize,
    /// The class name, when the model's labels are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Detection {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
}
