//! Request parameters of the v2 protocol (`ModelInferRequest.parameters`) as core parameters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::pb::inference::infer_parameter::ParameterChoice;
use super::pb::inference::InferParameter;
use crate::core::{ClassifyParams, DetectParams, InferError, Task};

/// Parameters Triton's clients send on their own (sequence batching, priority); they do not apply
/// to these models and are accepted so those clients work unchanged.
pub(crate) const IGNORED: [&str; 5] =
    ["sequence_id", "sequence_start", "sequence_end", "priority", "binary_data_output"];

/// What a v2 request's parameters ask for.
#[derive(Debug, Default)]
pub struct V2Params {
    /// Triton's `timeout` parameter, in microseconds.
    pub timeout: Option<Duration>,
    pub top_k: Option<usize>,
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    pub max_detections: Option<usize>,
    pub classes: Option<Vec<usize>>,
}

fn invalid(msg: String) -> InferError {
    InferError::InvalidInput(msg)
}

fn kind(p: &InferParameter) -> &'static str {
    match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(_)) => "bool",
        Some(ParameterChoice::Int64Param(_)) => "int64",
        Some(ParameterChoice::StringParam(_)) => "string",
        Some(ParameterChoice::DoubleParam(_)) => "double",
        Some(ParameterChoice::Uint64Param(_)) => "uint64",
        None => "empty",
    }
}

fn as_count(name: &str, p: &InferParameter) -> Result<usize, InferError> {
    let n = match &p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(*v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => Some(*v),
        _ => return Err(invalid(format!("parameter `{name}` must be an integer, got a {} value", kind(p)))),
    };
    n.and_then(|n| usize::try_from(n).ok()).ok_or_else(|| invalid(format!("parameter `{name}` must not be negative")))
}

fn as_f32(name: &str, p: &InferParameter) -> Result<f32, InferError> {
    let v = match &p.parameter_choice {
        Some(ParameterChoice::DoubleParam(v)) => *v,
        Some(ParameterChoice::Int64Param(v)) => *v as f64,
        Some(ParameterChoice::Uint64Param(v)) => *v as f64,
        Some(ParameterChoice::StringParam(s)) => {
            s.trim().parse().map_err(|_| invalid(format!("parameter `{name}` is not a number: `{s}`")))?
        }
        _ => return Err(invalid(format!("parameter `{name}` must be a number, got a {} value", kind(p)))),
    };
    if !v.is_finite() {
        return Err(invalid(format!("parameter `{name}` must be a finite number")));
    }
    Ok(v as f32)
}

/// `classes`: one class index, or a comma-separated list of them.
fn as_classes(p: &InferParameter) -> Result<Vec<usize>, InferError> {
    match &p.parameter_choice {
        Some(ParameterChoice::StringParam(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(|_| invalid(format!("parameter `classes`: `{t}` is not a class index"))))
            .collect(),
        _ => Ok(vec![as_count("classes", p)?]),
    }
}

impl V2Params {
    pub fn parse(params: &HashMap<String, InferParameter>) -> Result<Self, InferError> {
        let mut out = V2Params::default();
        for (name, p) in params {
            match name.as_str() {
                "timeout" => out.timeout = Some(Duration::from_micros(as_count(name, p)? as u64)),
                "top_k" => out.top_k = Some(as_count(name, p)?),
                "score_threshold" => out.score_threshold = Some(as_f32(name, p)?),
                "iou_threshold" => out.iou_threshold = Some(as_f32(name, p)?),
                "max_detections" => out.max_detections = Some(as_count(name, p)?),
                "classes" => out.classes = Some(as_classes(p)?),
                n if IGNORED.contains(&n) => {}
                other => {
                    return Err(invalid(format!(
                        "unsupported parameter `{other}` (supported: timeout, top_k, score_threshold, \
                         iou_threshold, max_detections, classes)"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The request's own deadline from its `timeout` parameter.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        self.timeout.map(|t| now + t)
    }

    fn named_task_params(&self) -> Vec<(&'static str, Task)> {
        let mut set = Vec::new();
        if self.top_k.is_some() {
            set.push(("top_k", Task::Classify));
        }
        for (name, on) in [
            ("score_threshold", self.score_threshold.is_some()),
            ("iou_threshold", self.iou_threshold.is_some()),
            ("max_detections", self.max_detections.is_some()),
        ] {
            if on {
                set.push((name, Task::Detect));
            }
        }
        set
    }

    /// Refuses post-processing parameters on a raw tensor request, which returns raw outputs.
    pub fn check_raw(&self) -> Result<(), InferError> {
        let mut names: Vec<&str> = self.named_task_params().into_iter().map(|(n, _)| n).collect();
        if self.classes.is_some() {
            names.push("classes");
        }
        match names.first() {
            Some(n) => Err(invalid(format!(
                "parameter `{n}` applies to the `image` input; the `input` tensor returns raw outputs"
            ))),
            None => Ok(()),
        }
    }

    pub fn classify(&self) -> Result<ClassifyParams, InferError> {
        self.refuse_other_task(Task::Classify)?;
        let mut p = ClassifyParams { classes: self.classes.clone(), ..ClassifyParams::default() };
        if let Some(k) = self.top_k {
            p.top_k = k;
        }
        Ok(p)
    }

    pub fn detect(&self) -> Result<DetectParams, InferError> {
        self.refuse_other_task(Task::Detect)?;
        let mut p = DetectParams { classes: self.classes.clone(), ..DetectParams::default() };
        if let Some(v) = self.score_threshold {
            p.score_threshold = v;
        }
        if let Some(v) = self.iou_threshold {
            p.iou_threshold = v;
        }
        if let Some(v) = self.max_detections {
            p.max_detections = v;
        }
        Ok(p)
    }

    fn refuse_other_task(&self, task: Task) -> Result<(), InferError> {
        match self.named_task_params().into_iter().find(|(_, t)| *t != task) {
            Some((name, _)) => Err(invalid(format!(
                "parameter `{name}` does not apply to a {} model",
                match task {
                    Task::Classify => "classification",
                    Task::Detect => "detection",
                }
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(choice: ParameterChoice) -> InferParameter {
        InferParameter { parameter_choice: Some(choice) }
    }

    fn map(items: Vec<(&str, ParameterChoice)>) -> HashMap<String, InferParameter> {
        items.into_iter().map(|(k, v)| (k.to_string(), p(v))).collect()
    }

    #[test]
    fn parses_task_parameters() {
        let params = V2Params::parse(&map(vec![
            ("score_threshold", ParameterChoice::DoubleParam(0.5)),
            ("iou_threshold", ParameterChoice::StringParam("0.6".into())),
            ("max_detections", ParameterChoice::Uint64Param(10)),
            ("classes", ParameterChoice::StringParam("0, 2,7".into())),
            ("timeout", ParameterChoice::Int64Param(1500)),
            ("priority", ParameterChoice::Int64Param(1)),
        ]))
        .unwrap();
        assert_eq!(params.timeout, Some(Duration::from_micros(1500)));
        let d = params.detect().unwrap();
        assert_eq!((d.score_threshold, d.iou_threshold, d.max_detections), (0.5, 0.6, 10));
        assert_eq!(d.classes, Some(vec![0, 2, 7]));
        assert!(params.classify().unwrap_err().to_string().contains("`score_threshold` does not apply"));
        assert!(params.check_raw().is_err());

        let c = V2Params::parse(&map(vec![("top_k", ParameterChoice::Int64Param(3))])).unwrap();
        assert_eq!(c.classify().unwrap().top_k, 3);
        assert!(c.detect().is_err());
        let none = V2Params::parse(&HashMap::new()).unwrap();
        assert_eq!(none.classify().unwrap().top_k, ClassifyParams::default().top_k);
        assert!(none.check_raw().is_ok());
    }

    #[test]
    fn refuses_bad_parameters() {
        let cases = [
            ("top_k", ParameterChoice::Int64Param(-1), "must not be negative"),
            ("top_k", ParameterChoice::BoolParam(true), "must be an integer, got a bool"),
            ("score_threshold", ParameterChoice::StringParam("high".into()), "not a number"),
            ("score_threshold", ParameterChoice::DoubleParam(f64::NAN), "finite"),
            ("classes", ParameterChoice::StringParam("1,x".into()), "`x` is not a class index"),
            ("colour", ParameterChoice::StringParam("red".into()), "unsupported parameter `colour`"),
        ];
        for (name, choice, msg) in cases {
            let err = V2Params::parse(&map(vec![(name, choice)])).unwrap_err();
            assert!(matches!(&err, InferError::InvalidInput(m) if m.contains(msg)), "{name}: {err}");
        }
    }
}
