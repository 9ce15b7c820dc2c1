//! Bad gRPC requests: each gets INVALID_ARGUMENT / NOT_FOUND with a message, never INTERNAL, and
//! the server stays healthy. The REST table, with the image corpus, is input_corpus.rs.

use bytes::Bytes;
use csp_e2e::fixtures::{fixtures, random_values, INPUT_ELEMENTS};
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::pb::inference as kserve;
use csp_e2e::{images, ServerBuilder};
use kserve::model_infer_request::InferInputTensor;
use tonic::Code;

const MAX_BODY: usize = 300_000;
const MAX_IMAGES: usize = 4;
const MAX_PIXELS: u64 = 1_000_000;

fn limited_server() -> csp_e2e::Server {
    ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-body-bytes", &MAX_BODY.to_string()])
        .args(["--max-images-per-request", &MAX_IMAGES.to_string()])
        .args(["--max-image-pixels", &MAX_PIXELS.to_string()])
        .start()
}

fn image_request(model: &str, images: Vec<Vec<u8>>) -> csp::ClassifyRequest {
    csp::ClassifyRequest {
        model: model.into(),
        images: images.into_iter().map(Bytes::from).collect(),
        ..Default::default()
    }
}

fn infer_request(model: &str, inputs: Vec<InferInputTensor>) -> kserve::ModelInferRequest {
    kserve::ModelInferRequest { model_name: model.into(), inputs, ..Default::default() }
}

fn fp32(shape: Vec<i64>, datatype: &str, values: Vec<f32>) -> InferInputTensor {
    InferInputTensor {
        name: "input".into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents: Some(kserve::InferTensorContents { fp32_contents: values, ..Default::default() }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_requests_get_invalid_argument() {
    let server = limited_server();
    let mut api = server.csp().await;
    let mut v2 = server.kserve().await;
    let png = images::png(48, 48, 1);
    let one = random_values(INPUT_ELEMENTS, 1);
    let (mut with_nan, mut with_inf) = (one.clone(), one.clone());
    with_nan[100] = f32::NAN;
    with_inf[0] = f32::INFINITY;
    let mut failures = Vec::new();
    let mut check = |name: &str, result: Result<(), tonic::Status>, want: Code| match result {
        Ok(()) => failures.push(format!("{name}: succeeded, want {want:?}")),
        Err(status) if status.code() != want => {
            failures.push(format!("{name}: got {:?} ({}), want {want:?}", status.code(), status.message()))
        }
        Err(status) if status.message().is_empty() => failures.push(format!("{name}: no error message")),
        Err(_) => {}
    };

    let classify_cases: Vec<(&str, csp::ClassifyRequest, Code)> = vec![
        ("no images", image_request("cls", vec![]), Code::InvalidArgument),
        ("text image", image_request("cls", vec![b"plain text".to_vec()]), Code::InvalidArgument),
        ("empty image", image_request("cls", vec![vec![]]), Code::InvalidArgument),
        ("truncated JPEG", image_request("cls", vec![images::truncated_jpeg()]), Code::InvalidArgument),
        ("truncated PNG", image_request("cls", vec![images::truncated_png()]), Code::InvalidArgument),
        ("PNG bomb", image_request("cls", vec![images::png_bomb(100_000, 100_000)]), Code::InvalidArgument),
        ("over the pixel limit", image_request("cls", vec![images::solid_png(1200, 1000)]), Code::InvalidArgument),
        ("unknown model", image_request("nope", vec![png.clone()]), Code::NotFound),
        ("classify on a detector", image_request("det", vec![png.clone()]), Code::InvalidArgument),
        ("too many images", image_request("cls", vec![png.clone(); MAX_IMAGES + 1]), Code::InvalidArgument),
        (
            "top_k = 0",
            csp::ClassifyRequest { top_k: Some(0), ..image_request("cls", vec![png.clone()]) },
            Code::InvalidArgument,
        ),
        (
            "class out of range",
            csp::ClassifyRequest { classes: vec![99], ..image_request("cls", vec![png.clone()]) },
            Code::InvalidArgument,
        ),
    ];
    for (name, request, want) in classify_cases {
        check(name, api.classify(request).await.map(|_| ()), want);
    }
    let detect = |score: Option<f32>, iou: Option<f32>| csp::DetectRequest {
        model: "det".into(),
        images: vec![Bytes::from(png.clone())],
        score_threshold: score,
        iou_threshold: iou,
        ..Default::default()
    };
    check("score_threshold > 1", api.detect(detect(Some(1.5), None)).await.map(|_| ()), Code::InvalidArgument);
    check("iou_threshold NaN", api.detect(detect(None, Some(f32::NAN))).await.map(|_| ()), Code::InvalidArgument);
    let on_classifier = csp::DetectRequest { model: "cls".into(), ..detect(None, None) };
    check("detect on a classifier", api.detect(on_classifier).await.map(|_| ()), Code::InvalidArgument);

    let unknown_param = kserve::ModelInferRequest {
        parameters: [(
            "colour".to_string(),
            kserve::InferParameter {
                parameter_choice: Some(kserve::infer_parameter::ParameterChoice::StringParam("red".into())),
            },
        )]
        .into(),
        ..infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP32", one.clone())])
    };
    let mismatched_raw = kserve::ModelInferRequest {
        raw_input_contents: vec![Bytes::from(vec![0u8; 100])],
        ..infer_request("cls", vec![InferInputTensor { contents: None, ..fp32(vec![1, 3, 64, 64], "FP32", vec![]) }])
    };
    let infer_cases: Vec<(&str, kserve::ModelInferRequest, Code)> = vec![
        (
            "wrong shape",
            infer_request("cls", vec![fp32(vec![1, 3, 32, 32], "FP32", vec![0.0; 3 * 32 * 32])]),
            Code::InvalidArgument,
        ),
        (
            "wrong datatype",
            infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP64", one.clone())]),
            Code::InvalidArgument,
        ),
        (
            "count mismatch",
            infer_request("cls", vec![fp32(vec![2, 3, 64, 64], "FP32", one.clone())]),
            Code::InvalidArgument,
        ),
        (
            "negative dimension",
            infer_request("cls", vec![fp32(vec![-1, 3, 64, 64], "FP32", one.clone())]),
            Code::InvalidArgument,
        ),
        ("no inputs", infer_request("cls", vec![]), Code::InvalidArgument),
        (
            "NaN in the tensor",
            infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP32", with_nan)]),
            Code::InvalidArgument,
        ),
        (
            "Inf in the tensor",
            infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP32", with_inf)]),
            Code::InvalidArgument,
        ),
        ("unknown parameter", unknown_param, Code::InvalidArgument),
        ("raw contents of the wrong size", mismatched_raw, Code::InvalidArgument),
        ("unknown model", infer_request("nope", vec![fp32(vec![1, 3, 64, 64], "FP32", one.clone())]), Code::NotFound),
        (
            "unknown version",
            kserve::ModelInferRequest {
                model_version: "9".into(),
                ..infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP32", one.clone())])
            },
            Code::NotFound,
        ),
    ];
    for (name, request, want) in infer_cases {
        check(name, v2.model_infer(request).await.map(|_| ()), want);
    }
    // A message over --max-body-bytes is refused by the transport itself, before any handler:
    // tonic reports OUT_OF_RANGE for an oversized message.
    let huge = image_request("cls", vec![vec![7u8; MAX_BODY + 50_000]]);
    check("message over --max-body-bytes", api.classify(huge).await.map(|_| ()), Code::OutOfRange);
    assert!(failures.is_empty(), "{} bad gRPC requests were mishandled:\n{}", failures.len(), failures.join("\n"));

    assert!(v2.server_ready(kserve::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ok = api.classify(image_request("cls", vec![png])).await.expect("a good request after the bad ones");
    assert_eq!(ok.into_inner().results.len(), 1);
    assert!(!server.output().contains("panicked"), "the server panicked:\n{}", server.output());
}
