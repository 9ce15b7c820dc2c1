//! The bundled default models (models/default/): a server started without any model flag serves
//! them, and they recognise generated shapes from a seed they were not trained on.

use csp_e2e::rest::{client, get_json, ok_json};
use csp_e2e::ServerBuilder;
use csp_models::heads::Detection;
use csp_train::data::{ClassDataset, DetDataset, DetFormat};
use csp_train::eval::DetectionEval;
use csp_train::synth::{self, SynthArgs, SynthFormat};
use reqwest::StatusCode;

/// Well below what the bundled models measure (README), well above what random weights give (0).
const MIN_AP50: f64 = 0.3;
const MIN_TOP1: f64 = 0.4;

fn generated(name: &str, images: usize, format: SynthFormat) -> std::path::PathBuf {
    let dir = csp_e2e::profile_dir().join("csp-e2e-default").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A seed the training data did not use (scripts/train-default.sh uses 1 and 2).
    let mut args = SynthArgs::new(&dir, images, 77, format);
    args.val_fraction = 1.0;
    synth::run(&args).unwrap_or_else(|e| panic!("generating {name}: {e:#}"));
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_model_flags_serves_the_bundled_models() {
    let server = ServerBuilder::new().start();
    let http = client();
    let (status, list) = get_json(&http, &server.url("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shapes-detector", "shapes-classifier"]);

    let det_dir = generated("det", 24, SynthFormat::Coco);
    let dataset = DetDataset::open(&det_dir, "val", DetFormat::Coco).unwrap();
    assert!(dataset.samples.len() >= 20);
    let mut eval = DetectionEval::new(dataset.classes.len());
    for sample in &dataset.samples {
        let image = std::fs::read(&sample.path).unwrap();
        let url = server.url("/v1/models/shapes-detector/detect?score_threshold=0.01");
        let response = http.post(url).header("content-type", "image/png").body(image).send().await.unwrap();
        let body = ok_json(response).await;
        let detections: Vec<Detection> = serde_json::from_value(body["results"][0]["detections"].clone())
            .unwrap_or_else(|e| panic!("detections in {body}: {e}"));
        for d in &detections {
            assert_eq!(d.label.as_deref(), Some(dataset.classes[d.class_id].as_str()), "{d:?}");
        }
        eval.add_image(&detections, &sample.boxes).unwrap();
    }
    let ap = eval.summarize();
    assert!(ap.ap50 >= MIN_AP50, "AP50 {:.3} on generated shapes (AP {:.3})", ap.ap50, ap.ap);

    let cls_dir = generated("cls", 60, SynthFormat::Folder);
    let dataset = ClassDataset::open(&cls_dir, "val").unwrap();
    let mut correct = 0;
    for sample in &dataset.samples {
        let image = std::fs::read(&sample.path).unwrap();
        let url = server.url("/v1/models/shapes-classifier/classify?top_k=1");
        let response = http.post(url).header("content-type", "image/png").body(image).send().await.unwrap();
        let body = ok_json(response).await;
        let top = &body["results"][0]["classes"][0];
        assert_eq!(top["label"].as_str(), Some(dataset.classes[top["index"].as_u64().unwrap() as usize].as_str()));
        correct += usize::from(top["index"].as_u64() == Some(sample.label as u64));
    }
    let top1 = correct as f64 / dataset.samples.len() as f64;
    assert!(top1 >= MIN_TOP1, "top-1 {top1:.3} on {} generated shapes", dataset.samples.len());
}
