//! Parameters of the friendly endpoints, from the query string, JSON body fields or multipart
//! text fields, validated into the core's `ClassifyParams` / `DetectParams` / `RequestOptions`.

use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::Uri;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use crate::core::{ClassifyParams, DetectParams, RequestOptions, Task};

const CLASSIFY_KEYS: &[&str] = &["top_k", "classes", "timeout"];
const DETECT_KEYS: &[&str] = &["score_threshold", "iou_threshold", "max_detections", "classes", "timeout"];

/// The parameter names an endpoint accepts.
pub fn supported(task: Task) -> &'static [&'static str] {
    match task {
        Task::Classify => CLASSIFY_KEYS,
        Task::Detect => DETECT_KEYS,
    }
}

/// One raw parameter value: text (query string, form field) or a JSON body field.
#[derive(Clone, Copy, Debug)]
pub enum Raw<'a> {
    Text(&'a str),
    Json(&'a Value),
}

/// Parameters as the client sent them; unset ones take the core's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    pub top_k: Option<usize>,
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    pub max_detections: Option<usize>,
    pub classes: Option<Vec<usize>>,
    /// Milliseconds the request may wait before it starts computing.
    pub timeout_ms: Option<f64>,
}

impl Params {
    /// Parses the request's query string (`?top_k=3&classes=1,2`).
    pub fn from_query(task: Task, uri: &Uri) -> ApiResult<Params> {
        let mut params = Params::default();
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::invalid(format!("malformed query string: {}", e.body_text())))?;
        for (key, value) in &pairs {
            params.set(task, key, Raw::Text(value))?;
        }
        Ok(params)
    }

    /// Sets one parameter, rejecting unknown names, repeats and out-of-range values.
    pub fn set(&mut self, task: Task, key: &str, raw: Raw<'_>) -> ApiResult<()> {
        if !supported(task).contains(&key) {
            return Err(unsupported(task, key));
        }
        let fresh = match key {
            "top_k" => self.top_k.replace(positive_int(key, raw)?).is_none(),
            "max_detections" => self.max_detections.replace(positive_int(key, raw)?).is_none(),
            "score_threshold" => self.score_threshold.replace(unit_interval(key, raw)?).is_none(),
            "iou_threshold" => self.iou_threshold.replace(unit_interval(key, raw)?).is_none(),
            "classes" => self.classes.replace(class_ids(raw)?).is_none(),
            "timeout" => self.timeout_ms.replace(timeout_ms(raw)?).is_none(),
            _ => return Err(unsupported(task, key)),
        };
        if fresh {
            Ok(())
        } else {
            Err(ApiError::invalid(format!("parameter `{key}` given more than once")))
        }
    }

    /// Takes every parameter set in `other`; a parameter set in both is an error.
    pub fn merge(&mut self, other: Params) -> ApiResult<()> {
        fn take<T>(key: &str, mine: &mut Option<T>, theirs: Option<T>) -> ApiResult<()> {
            match (mine.is_some(), theirs) {
                (true, Some(_)) => Err(ApiError::invalid(format!("parameter `{key}` given more than once"))),
                (_, Some(value)) => {
                    *mine = Some(value);
                    Ok(())
                }
                (_, None) => Ok(()),
            }
        }
        take("top_k", &mut self.top_k, other.top_k)?;
        take("score_threshold", &mut self.score_threshold, other.score_threshold)?;
        take("iou_threshold", &mut self.iou_threshold, other.iou_threshold)?;
        take("max_detections", &mut self.max_detections, other.max_detections)?;
        take("classes", &mut self.classes, other.classes)?;
        take("timeout", &mut self.timeout_ms, other.timeout_ms)
    }

    /// Class ids must exist in the model.
    pub fn check_classes(&self, num_classes: usize) -> ApiResult<()> {
        match self.classes.iter().flatten().find(|&&id| id >= num_classes) {
            Some(id) => Err(ApiError::invalid(format!(
                "class id {id} in `classes` is out of range: the model has {num_classes} classes"
            ))),
            None => Ok(()),
        }
    }

    pub fn classify(&self) -> ClassifyParams {
        let defaults = ClassifyParams::default();
        ClassifyParams { top_k: self.top_k.unwrap_or(defaults.top_k), classes: self.classes.clone() }
    }

    pub fn detect(&self) -> DetectParams {
        let d = DetectParams::default();
        DetectParams {
            score_threshold: self.score_threshold.unwrap_or(d.score_threshold),
            iou_threshold: self.iou_threshold.unwrap_or(d.iou_threshold),
            max_detections: self.max_detections.unwrap_or(d.max_detections),
            classes: self.classes.clone(),
        }
    }

    /// The deadline from the client's `timeout`; without one the core applies its default.
    pub fn options(&self) -> RequestOptions {
        deadline_after(self.timeout_ms.map(|ms| Duration::from_secs_f64((ms / 1e3).min(MAX_TIMEOUT_SECS))))
    }
}

/// Longer timeouts are clamped (to about ten years) so the deadline stays representable.
const MAX_TIMEOUT_SECS: f64 = 3.15e8;

/// `RequestOptions` with a deadline `timeout` from now.
pub fn deadline_after(timeout: Option<Duration>) -> RequestOptions {
    let capped = timeout.map(|t| t.min(Duration::from_secs_f64(MAX_TIMEOUT_SECS)));
    RequestOptions { deadline: capped.and_then(|t| Instant::now().checked_add(t)) }
}

fn unsupported(task: Task, key: &str) -> ApiError {
    let endpoint = task.as_str();
    ApiError::invalid(format!(
        "unsupported parameter `{key}` for {endpoint} (supported: {})",
        supported(task).join(", ")
    ))
}

fn describe(raw: Raw<'_>) -> String {
    match raw {
        Raw::Text(text) => format!("`{text}`"),
        Raw::Json(value) => value.to_string(),
    }
}

fn number(key: &str, raw: Raw<'_>) -> ApiResult<f64> {
    let parsed = match raw {
        Raw::Text(text) => text.trim().parse::<f64>().ok(),
        Raw::Json(Value::String(text)) => text.trim().parse::<f64>().ok(),
        Raw::Json(value) => value.as_f64(),
    };
    parsed
        .filter(|v| v.is_finite())
        .ok_or_else(|| ApiError::invalid(format!("parameter `{key}` must be a number, got {}", describe(raw))))
}

fn positive_int(key: &str, raw: Raw<'_>) -> ApiResult<usize> {
    let value = number(key, raw)?;
    if value >= 1.0 && value.fract() == 0.0 && value <= u32::MAX as f64 {
        Ok(value as usize)
    } else {
        Err(ApiError::invalid(format!("parameter `{key}` must be an integer >= 1, got {}", describe(raw))))
    }
}

fn unit_interval(key: &str, raw: Raw<'_>) -> ApiResult<f32> {
    let value = number(key, raw)?;
    if (0.0..=1.0).contains(&value) {
        Ok(value as f32)
    } else {
        Err(ApiError::invalid(format!("parameter `{key}` must be in [0, 1], got {}", describe(raw))))
    }
}

fn timeout_ms(raw: Raw<'_>) -> ApiResult<f64> {
    let value = number("timeout", raw)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!("parameter `timeout` (milliseconds) must be > 0, got {}", describe(raw))))
    }
}

/// `classes`: comma-separated ids in text, an array of ids (or such a string) in JSON.
fn class_ids(raw: Raw<'_>) -> ApiResult<Vec<usize>> {
    let bad = || {
        ApiError::invalid(format!(
            "parameter `classes` must be class ids (non-negative integers, comma-separated), got {}",
            describe(raw)
        ))
    };
    let from_text = |text: &str| -> ApiResult<Vec<usize>> {
        text.split(',').map(|item| item.trim().parse::<usize>().map_err(|_| bad())).collect()
    };
    let ids: Vec<usize> = match raw {
        Raw::Text(text) => from_text(text)?,
        Raw::Json(Value::String(text)) => from_text(text)?,
        Raw::Json(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_u64().and_then(|id| usize::try_from(id).ok()).ok_or_else(bad))
            .collect::<ApiResult<_>>()?,
        Raw::Json(_) => return Err(bad()),
    };
    if ids.is_empty() {
        return Err(bad());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(task: Task, query: &str) -> ApiResult<Params> {
        Params::from_query(task, &format!("/v1/models/m/x?{query}").parse::<Uri>().unwrap())
    }

    fn query_err(task: Task, q: &str) -> String {
        query(task, q).unwrap_err().message
    }

    #[test]
    fn parses_classify_query() {
        let p = query(Task::Classify, "top_k=3&classes=1,%202,7&timeout=250").unwrap();
        assert_eq!(p.top_k, Some(3));
        assert_eq!(p.classes, Some(vec![1, 2, 7]));
        assert_eq!(p.timeout_ms, Some(250.0));
        let c = p.classify();
        assert_eq!(c.top_k, 3);
        assert_eq!(c.classes, Some(vec![1, 2, 7]));
    }

    #[test]
    fn parses_detect_query_and_fills_defaults() {
        let p = query(Task::Detect, "score_threshold=0.5&max_detections=10").unwrap();
        let d = p.detect();
        assert_eq!(d.score_threshold, 0.5);
        assert_eq!(d.max_detections, 10);
        assert_eq!(d.iou_threshold, DetectParams::default().iou_threshold);
        assert_eq!(d.classes, None);
        assert!(
            Params::from_query(Task::Detect, &"/v1/models/m/detect".parse().unwrap()).unwrap() == Params::default()
        );
    }

    #[test]
    fn rejects_unknown_and_misplaced_parameters() {
        assert!(query_err(Task::Classify, "foo=1").starts_with("unsupported parameter `foo`"));
        assert!(query_err(Task::Classify, "score_threshold=0.3").starts_with("unsupported parameter `score_threshold`"));
        assert!(query_err(Task::Detect, "top_k=3").starts_with("unsupported parameter `top_k`"));
    }

    #[test]
    fn rejects_out_of_range_values() {
        assert!(query_err(Task::Classify, "top_k=0").contains(">= 1"));
        assert!(query_err(Task::Classify, "top_k=2.5").contains(">= 1"));
        assert!(query_err(Task::Classify, "top_k=abc").contains("must be a number"));
        assert!(query_err(Task::Detect, "score_threshold=1.5").contains("[0, 1]"));
        assert!(query_err(Task::Detect, "iou_threshold=-0.1").contains("[0, 1]"));
        assert!(query_err(Task::Detect, "iou_threshold=NaN").contains("must be a number"));
        assert!(query_err(Task::Detect, "max_detections=0").contains(">= 1"));
        assert!(query_err(Task::Detect, "classes=1,,2").contains("class ids"));
        assert!(query_err(Task::Detect, "classes=-1").contains("class ids"));
        assert!(query_err(Task::Detect, "classes=").contains("class ids"));
        assert!(query_err(Task::Detect, "timeout=0").contains("> 0"));
        assert!(query_err(Task::Detect, "timeout=1&timeout=2").contains("more than once"));
    }

    #[test]
    fn json_values_accept_numbers_arrays_and_strings() {
        let mut p = Params::default();
        p.set(Task::Detect, "score_threshold", Raw::Json(&json!(0.1))).unwrap();
        p.set(Task::Detect, "max_detections", Raw::Json(&json!("20"))).unwrap();
        p.set(Task::Detect, "classes", Raw::Json(&json!([0, 2]))).unwrap();
        assert_eq!(p.detect().max_detections, 20);
        assert_eq!(p.classes, Some(vec![0, 2]));
        let mut q = Params::default();
        assert!(q.set(Task::Detect, "classes", Raw::Json(&json!([1.5]))).is_err());
        assert!(q.set(Task::Detect, "classes", Raw::Json(&json!({"a": 1}))).is_err());
        assert!(q.set(Task::Detect, "max_detections", Raw::Json(&json!(true))).is_err());
        assert!(q.set(Task::Classify, "classes", Raw::Json(&json!("3, 4"))).is_ok());
    }

    #[test]
    fn merge_refuses_a_parameter_given_twice() {
        let mut query = query(Task::Classify, "top_k=2").unwrap();
        let body = Params { classes: Some(vec![1]), ..Params::default() };
        query.merge(body).unwrap();
        assert_eq!(query.top_k, Some(2));
        assert_eq!(query.classes, Some(vec![1]));
        let again = Params { top_k: Some(4), ..Params::default() };
        assert!(query.merge(again).unwrap_err().message.contains("`top_k` given more than once"));
    }

    #[test]
    fn class_ids_must_exist_in_the_model() {
        let p = Params { classes: Some(vec![0, 999]), ..Params::default() };
        assert!(p.check_classes(1000).is_ok());
        assert!(p.check_classes(80).unwrap_err().message.contains("999"));
    }

    #[test]
    fn timeout_sets_a_deadline_and_huge_timeouts_do_not_overflow() {
        let before = Instant::now();
        let p = Params { timeout_ms: Some(100.0), ..Params::default() };
        let deadline = p.options().deadline.unwrap();
        assert!(deadline >= before + Duration::from_millis(100));
        assert!(deadline <= Instant::now() + Duration::from_millis(100));
        assert!(Params::default().options().deadline.is_none());
        let huge = Params { timeout_ms: Some(1e300), ..Params::default() };
        assert!(huge.options().deadline.unwrap() > Instant::now() + Duration::from_secs(86_400 * 365));
        assert!(deadline_after(Some(Duration::MAX)).deadline.is_some());
    }
}
