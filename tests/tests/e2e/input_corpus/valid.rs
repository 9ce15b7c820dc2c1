//! Valid but unusual images: each is compared with the server's answer on the same picture as a
//! plain upright 8-bit RGB file, on both the classifier (all six scores) and the detector (image
//! size and boxes). Transparency is composited over white (server/src/core/decode.rs), so the
//! transparent cases compare with cls-over-white.png, the same pixels composited by the generator.

use csp_e2e::rest::{ok_json, scores_diff};
use csp_e2e::Server;
use reqwest::Client;
use serde_json::Value;

use super::{class_scores, classify, corpus, post_raw, top_class, DETECTOR};

/// Score and box tolerances for files that carry exactly the reference's pixels (a one-level
/// rounding difference in 16-bit or alpha conversion is allowed for).
const SAME_SCORE: f32 = 0.02;
const SAME_BOX_IOU: f32 = 0.9;
/// A lossy re-encoding (JPEG, lossy WebP, GIF's palette) may move scores a little, not the answer.
const CLOSE_SCORE: f32 = 0.15;
const CLOSE_BOX_IOU: f32 = 0.6;

pub enum Expect {
    /// Exactly the pixels of this reference file (after orientation, alpha and bit depth).
    Same(&'static str),
    /// A lossy encoding of this reference: the same best class and best box.
    Close(&'static str),
    /// One colour in an odd shape: classified like solid-64.png (the same colour); the detector
    /// reports the file's own size and keeps every box inside it.
    Solid { width: f64, height: f64 },
}

pub struct Case {
    pub file: &'static str,
    pub expect: Expect,
}

fn case(file: &'static str, expect: Expect) -> Case {
    Case { file, expect }
}

pub fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        // Formats.
        case("cls.jpg", Close("cls.png")),
        case("cls-progressive.jpg", Close("cls.png")),
        case("cls.bmp", Same("cls.png")),
        case("cls-lossless.webp", Same("cls.png")),
        case("cls-lossy.webp", Close("cls.png")),
        case("cls-palette.png", Same("cls.png")),
        // GIF and WebP animations: frame 1 is cls.png's cross, frame 2 a triangle.
        case("cls-anim.gif", Same("cls.png")),
        case("cls-anim.webp", Close("cls.png")),
        // Colour layouts and depths.
        case("cls-gray.png", Same("cls-gray-rgb.png")),
        case("cls-gray.jpg", Close("cls-gray-rgb.png")),
        case("cls-gray16.png", Same("cls-gray-rgb.png")),
        case("cls-gray-alpha.png", Same("cls-gray-rgb.png")),
        case("cls-rgb16.png", Same("cls.png")),
        case("cls-cmyk.jpg", Close("cls.png")),
        case("cls-rgba-opaque.png", Same("cls.png")),
        case("cls-rgba.png", Same("cls-over-white.png")),
        case("cls-rgba16.png", Same("cls-over-white.png")),
        // EXIF orientation: stored turned or mirrored, shown upright.
        case("cls-crop-exif6.png", Same("cls-crop.png")),
        case("cls-crop-exif8.webp", Same("cls-crop.png")),
        case("det-exif2.jpg", Close("det.jpg")),
        case("det-exif3.jpg", Close("det.jpg")),
        case("det-exif4.jpg", Close("det.jpg")),
        case("det-exif5.jpg", Close("det.jpg")),
        case("det-exif6.jpg", Close("det.jpg")),
        case("det-exif7.jpg", Close("det.jpg")),
        case("det-exif8.jpg", Close("det.jpg")),
        // Tiny and thin.
        case("1x1.png", Solid { width: 1.0, height: 1.0 }),
        case("1x1.gif", Solid { width: 1.0, height: 1.0 }),
        case("1x1.jpg", Solid { width: 1.0, height: 1.0 }),
        case("thin-1x512.png", Solid { width: 1.0, height: 512.0 }),
        case("thin-512x1.png", Solid { width: 512.0, height: 1.0 }),
        case("thin-1x200000.png", Solid { width: 1.0, height: 200_000.0 }),
        case("thin-200000x1.png", Solid { width: 200_000.0, height: 1.0 }),
    ]
}

/// Both models' answers on one file.
struct Answer {
    class: Value,
    detect: Value,
}

async fn answer(http: &Client, server: &Server, file: &str) -> Result<Answer, String> {
    let bytes = corpus(file);
    let class = classify(http, server, bytes.clone()).await;
    let path = format!("/v1/models/{DETECTOR}/detect?score_threshold=0.2");
    let response = post_raw(http, server, &path, "application/octet-stream", bytes)
        .await
        .map_err(|e| format!("detect request failed: {e}"))?;
    let detect = ok_json(response).await["results"][0].clone();
    Ok(Answer { class, detect })
}

pub async fn check(http: &Client, server: &Server, case: &Case) -> Result<(), String> {
    let got = answer(http, server, case.file).await?;
    match case.expect {
        Expect::Same(reference) => {
            let want = answer(http, server, reference).await?;
            same_size(&got, &want)?;
            let diff = scores_diff(&class_scores(&got.class), &class_scores(&want.class));
            if diff > SAME_SCORE {
                return Err(format!(
                    "class scores differ by {diff:.3} from {reference}: {} vs {}",
                    got.class, want.class
                ));
            }
            let (got_boxes, want_boxes) = (boxes(&got.detect)?, boxes(&want.detect)?);
            if got_boxes.len() != want_boxes.len() {
                return Err(format!("{} boxes, {reference} has {}", got_boxes.len(), want_boxes.len()));
            }
            for w in &want_boxes {
                if !got_boxes.iter().any(|g| g.class == w.class && iou(g, w) >= SAME_BOX_IOU) {
                    return Err(format!("no box like {w:?} of {reference} in {got_boxes:?}"));
                }
            }
            Ok(())
        }
        Expect::Close(reference) => {
            let want = answer(http, server, reference).await?;
            same_size(&got, &want)?;
            let (g, w) = (top_class(&got.class), top_class(&want.class));
            if g.is_none() || g != w {
                return Err(format!("best class {g:?}, on {reference} {w:?}"));
            }
            let diff = (got.class["classes"][0]["score"].as_f64().unwrap_or(-1.0)
                - want.class["classes"][0]["score"].as_f64().unwrap_or(-1.0))
            .abs() as f32;
            if diff > CLOSE_SCORE {
                return Err(format!("best score differs by {diff:.3} from {reference}"));
            }
            let (got_boxes, want_boxes) = (boxes(&got.detect)?, boxes(&want.detect)?);
            if let Some(best) = want_boxes.first() {
                if !got_boxes.iter().any(|g| g.class == best.class && iou(g, best) >= CLOSE_BOX_IOU) {
                    return Err(format!("best box {best:?} of {reference} not found in {got_boxes:?}"));
                }
            }
            Ok(())
        }
        Expect::Solid { width, height } => {
            let want = classify(http, server, corpus("solid-64.png")).await;
            let diff = scores_diff(&class_scores(&got.class), &class_scores(&want));
            if diff > SAME_SCORE {
                return Err(format!("class scores differ by {diff:.3} from solid-64.png: {} vs {want}", got.class));
            }
            for r in [&got.class, &got.detect] {
                if r["width"].as_f64() != Some(width) || r["height"].as_f64() != Some(height) {
                    return Err(format!("reported size {}x{}, want {width}x{height}", r["width"], r["height"]));
                }
            }
            for b in boxes(&got.detect)? {
                let [x1, y1, x2, y2] = b.bbox;
                let inside = 0.0 <= x1 && x1 <= x2 && x2 <= width + 0.5 && 0.0 <= y1 && y1 <= y2 && y2 <= height + 0.5;
                if !inside {
                    return Err(format!("box {b:?} outside the {width}x{height} image"));
                }
            }
            Ok(())
        }
    }
}

fn same_size(got: &Answer, want: &Answer) -> Result<(), String> {
    for (g, w) in [(&got.class, &want.class), (&got.detect, &want.detect)] {
        if g["width"] != w["width"] || g["height"] != w["height"] {
            return Err(format!(
                "reported size {}x{}, the upright picture is {}x{} (orientation not applied?)",
                g["width"], g["height"], w["width"], w["height"]
            ));
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Box {
    bbox: [f64; 4],
    class: u64,
}

fn boxes(result: &Value) -> Result<Vec<Box>, String> {
    let list = result["detections"].as_array().ok_or_else(|| format!("no detections in {result}"))?;
    list.iter()
        .map(|d| {
            let coords: Vec<f64> = d["bbox"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
            let bbox: [f64; 4] = coords.try_into().map_err(|_| format!("bad bbox in {d}"))?;
            let class = d["class_id"].as_u64().ok_or_else(|| format!("no class_id in {d}"))?;
            Ok(Box { bbox, class })
        })
        .collect()
}

fn iou(a: &Box, b: &Box) -> f32 {
    let ([ax1, ay1, ax2, ay2], [bx1, by1, bx2, by2]) = (a.bbox, b.bbox);
    let inter = (ax2.min(bx2) - ax1.max(bx1)).max(0.0) * (ay2.min(by2) - ay1.max(by1)).max(0.0);
    let union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter;
    if union <= 0.0 {
        0.0
    } else {
        (inter / union) as f32
    }
}
