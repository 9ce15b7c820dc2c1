//! `bench` against a real server: closed and open loop over REST, gRPC and the gRPC stream,
//! sweeps, and the client's request counts agreeing with the server's `csp_requests_total`.

use std::time::Duration;

use csp_client::app::{self, BenchOutput};
use csp_client::bench::schedule::Schedule;
use csp_client::bench::{Arrivals, BenchConfig, LevelResult, Load, Stop, Workload};
use csp_client::{Params, Protocol, Task};
use csp_e2e::fixtures::fixtures;
use csp_e2e::{metrics, ServerBuilder};

use crate::client_support::{connection, pngs, temp_dir};

fn config(protocol: Protocol, loads: Vec<Load>, stop: Stop) -> BenchConfig {
    BenchConfig {
        protocol,
        workload: Workload {
            task: Task::Classify,
            model: "cls".into(),
            params: Params::default(),
            images: pngs(4).into_iter().map(|i| i.bytes).collect(),
            images_per_request: 1,
        },
        loads,
        stop,
        warmup: Duration::ZERO,
        progress: false,
    }
}

fn assert_sane(r: &LevelResult) {
    assert_eq!(r.errors, 0, "{r:?}");
    let (min, p50, p90, p99, max) =
        (r.min_ms.unwrap(), r.p50_ms.unwrap(), r.p90_ms.unwrap(), r.p99_ms.unwrap(), r.max_ms.unwrap());
    assert!(0.0 < min && min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{r:?}");
    assert!(r.requests_per_s > 0.0 && r.images_per_s >= r.requests_per_s, "{r:?}");
    assert!(r.duration_s > 0.0 && max <= r.duration_s * 1e3 + 1.0, "{r:?}");
    assert_eq!(r.server_requests, Some(r.requests), "the server counted other requests than the client sent: {r:?}");
    let batch = r.server_batch_mean.unwrap();
    assert!((1.0..=8.0).contains(&batch), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loops_over_every_protocol_match_the_server_counts() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).start();
    let conn = connection(&server);
    let http = csp_e2e::rest::client();
    let total = |text: &str| metrics::sum(text, "csp_requests_total", &[("model", "cls")]);
    let before = total(&csp_e2e::rest::metrics(&http, &server).await);
    let mut sent = 0;

    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::GrpcStream] {
        // Closed loop, a request count: exactly that many, spread over the workers.
        let cfg = config(protocol, vec![Load::Closed { concurrency: 3 }], Stop::Requests(12));
        let mut out = Vec::new();
        let (results, failed) = app::bench(&conn, &cfg, &BenchOutput::default(), &mut out).await.unwrap();
        assert_eq!(failed, 0);
        let r = &results[0];
        assert_eq!((r.requests, r.concurrency, r.rate, r.mode), (12, Some(3), None, "closed"), "{protocol}");
        assert!(r.max_in_flight <= 3, "{r:?}");
        assert_sane(r);
        sent += r.requests;

        // Open loop for a duration: exactly the requests due before its end, on schedule.
        let rate = 40.0;
        let duration = Duration::from_millis(400);
        let cfg = config(protocol, vec![Load::Open { rate, arrivals: Arrivals::Uniform }], Stop::Duration(duration));
        let (results, _) = app::bench(&conn, &cfg, &BenchOutput::default(), &mut Vec::new()).await.unwrap();
        let r = &results[0];
        assert_eq!(r.requests, Schedule::uniform_count(rate, duration), "{protocol}: {r:?}");
        assert_eq!((r.mode, r.rate, r.concurrency), ("open", Some(rate), None));
        // The last request is due at 375 ms: the run lasts at least that long.
        assert!(r.duration_s >= 0.375, "{r:?}");
        assert!(r.max_send_lag_ms.is_some(), "{r:?}");
        assert_sane(r);
        sent += r.requests;

        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("protocol") && text.contains(&format!("{protocol}")), "{text}");
    }
    let after = total(&csp_e2e::rest::metrics(&http, &server).await);
    assert_eq!(after - before, sent as f64, "server total over the whole test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_prints_one_json_record_per_level_and_plots() {
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "4", "--max-queue-delay-ms", "5"])
        .start();
    let conn = connection(&server);
    let mut cfg = config(
        Protocol::Rest,
        vec![Load::Closed { concurrency: 1 }, Load::Closed { concurrency: 2 }, Load::Closed { concurrency: 4 }],
        Stop::Duration(Duration::from_millis(300)),
    );
    cfg.warmup = Duration::from_millis(100);
    cfg.workload.images_per_request = 2;
    let plot = temp_dir("client_sweep").join("sweep.png");
    let output = BenchOutput { json: true, plot: Some(plot.clone()) };
    let mut out = Vec::new();
    let (results, failed) = app::bench(&conn, &cfg, &output, &mut out).await.unwrap();
    assert_eq!(failed, 0);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    for (line, (result, concurrency)) in lines.iter().zip(results.iter().zip([1, 2, 4])) {
        for key in ["concurrency", "requests", "errors", "requests_per_s", "images_per_s", "p50_ms", "p90_ms", "p99_ms"]
        {
            assert!(!line[key].is_null(), "{key} missing: {line}");
        }
        assert_eq!(line["concurrency"], concurrency);
        assert_eq!(line["requests"], result.requests);
        assert!(result.warmup_requests > 0, "{result:?}");
        assert_sane(result);
        // Two images per request: twice the image rate, twice the images batched.
        assert!((result.images_per_s - 2.0 * result.requests_per_s).abs() < 1e-9);
    }
    let img = image::open(&plot).expect("the plot is a PNG").to_rgb8();
    assert!(img.width() > 600 && img.height() > 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_counts_rejections_and_fails_the_run() {
    // One queue slot and a long batching delay: concurrent requests beyond it are refused.
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "8", "--max-queue-delay-ms", "200", "--max-queue-size", "1"])
        .start();
    let conn = connection(&server);
    for protocol in [Protocol::Rest, Protocol::Grpc] {
        let cfg = config(protocol, vec![Load::Closed { concurrency: 4 }], Stop::Requests(8));
        let (results, failed) = app::bench(&conn, &cfg, &BenchOutput::default(), &mut Vec::new()).await.unwrap();
        let r = &results[0];
        assert_eq!(r.requests, 8, "{r:?}");
        assert!(r.errors_by_kind.rejected > 0, "{protocol}: {r:?}");
        assert_eq!(r.errors, r.errors_by_kind.rejected, "{r:?}");
        assert_eq!(failed as u64, r.errors);
        assert_eq!(r.server_requests, Some(8), "rejected requests are counted by the server too: {r:?}");
        assert!(r.error_examples[0].contains("rejected"), "{r:?}");
    }
}
