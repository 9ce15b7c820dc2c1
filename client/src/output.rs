//! Human-readable and JSON output of single requests, model lists and health.

use serde_json::json;

use crate::target::{Health, ModelSummary};
use crate::types::{ImageResult, InferResponse, Timed};
use crate::ClientError;

/// One image's answer as printed: a header line, then one line per class or box.
pub fn image_text(name: &str, result: &ImageResult, latency_ms: f64, server_ms: f64) -> String {
    let mut out = format!("{name}  {}x{}", result.width, result.height);
    if let Some(dets) = &result.detections {
        out += &format!("  {} object{}", dets.len(), if dets.len() == 1 { "" } else { "s" });
    }
    out += &format!("  {latency_ms:.1} ms (server {server_ms:.1} ms)\n");
    for (rank, class) in result.classes.iter().flatten().enumerate() {
        let label = class.label.as_deref().unwrap_or("");
        out += &format!("  {:>2}. {:>6.4}  {label} [{}]\n", rank + 1, class.score, class.index);
    }
    for det in result.detections.iter().flatten() {
        let label = det.label.clone().unwrap_or_else(|| format!("class {}", det.class_id));
        let [x1, y1, x2, y2] = det.bbox;
        out += &format!("  {:>6.4}  {label} [{}]  box {x1:.1},{y1:.1} - {x2:.1},{y2:.1}\n", det.score, det.class_id);
    }
    out
}

/// One image's answer as one JSON line.
pub fn image_json(name: &str, index: usize, response: &Timed<InferResponse>, result: &ImageResult) -> String {
    let mut value = json!({
        "image": name,
        "index": index,
        "model": response.value.model,
        "latency_ms": response.latency.as_secs_f64() * 1e3,
        "server_timing": response.value.timing,
    });
    if let (Some(map), Ok(serde_json::Value::Object(fields))) = (value.as_object_mut(), serde_json::to_value(result)) {
        map.extend(fields);
    }
    value.to_string()
}

/// A failed image as one JSON line.
pub fn error_json(name: &str, index: usize, error: &ClientError) -> String {
    json!({ "image": name, "index": index, "error": error.to_string(), "error_kind": error.kind() }).to_string()
}

pub fn models_text(models: &[ModelSummary]) -> String {
    if models.is_empty() {
        return "the server has no models\n".into();
    }
    let header = [
        "name",
        "task",
        "architecture",
        "input",
        "classes",
        "params",
        "BFLOPs",
        "device",
        "dtype",
        "batch",
        "delay ms",
    ];
    let rows: Vec<[String; 11]> = models
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.task.clone(),
                m.architecture.clone(),
                format!("{}x{}", m.input_width, m.input_height),
                m.num_classes.to_string(),
                format!("{:.2}M", m.params as f64 / 1e6),
                format!("{:.2}", m.bflops),
                m.device.clone(),
                m.dtype.clone(),
                m.max_batch_size.to_string(),
                m.max_queue_delay_ms.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
            + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn health_text(url: &str, health: Health) -> String {
    let word = |b: bool| if b { "yes" } else { "no" };
    format!("{url}: live {}, ready {}\n", word(health.live), word(health.ready))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Class;
    use csp_models::heads::Detection;

    #[test]
    fn classes_and_boxes_print_one_per_line() {
        let result = ImageResult {
            width: 64,
            height: 48,
            classes: Some(vec![
                Class { index: 3, label: Some("cat".into()), score: 0.75 },
                Class { index: 1, label: None, score: 0.25 },
            ]),
            detections: None,
        };
        let text = image_text("a.jpg", &result, 12.34, 10.0);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with("a.jpg  64x48  12.3 ms"), "{text}");
        assert!(text.contains("1. 0.7500  cat [3]"), "{text}");
        let det = Detection { bbox: [1.0, 2.0, 30.0, 40.0], score: 0.5, class_id: 2, label: None };
        let result = ImageResult { width: 64, height: 48, classes: None, detections: Some(vec![det]) };
        let text = image_text("b.png", &result, 1.0, 1.0);
        assert!(text.contains("1 object ") && text.contains("class 2 [2]  box 1.0,2.0 - 30.0,40.0"), "{text}");
    }
}
