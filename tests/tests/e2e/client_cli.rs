//! The `csp-client` binary itself: real command lines, exit codes and messages.

use std::process::{Command, Output};

use csp_e2e::fixtures::fixtures;
use csp_e2e::{images, ServerBuilder};

use crate::client_support::{client_bin, temp_dir};

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut command = Command::new(client_bin());
    command.args(args);
    // Settings from the environment running the tests must not leak in.
    for var in ["CSP_URL", "CSP_GRPC_URL", "CSP_API_KEY", "CSP_CA_CERT", "CSP_CLIENT_CERT", "CSP_CLIENT_KEY"] {
        command.env_remove(var);
    }
    command.output().expect("run csp-client")
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn nothing_listening_is_a_clear_error_and_a_failure() {
    for args in [
        &["health", "--url", "http://127.0.0.1:1"][..],
        &["models", "--grpc", "--grpc-url", "127.0.0.1:1"][..],
        &["bench", "--url", "http://127.0.0.1:1", "-m", "cls", "--requests", "2", "--image-size", "32x32"][..],
    ] {
        let output = run(args);
        let (stdout, stderr) = text(&output);
        assert!(!output.status.success(), "{args:?}: {stdout}");
        assert!(stderr.contains("cannot connect to http://127.0.0.1:1"), "{args:?}: {stderr}");
    }
    // Bad arguments: clap's usage error.
    let output = run(&["bench", "-m", "cls", "--concurrency", "1,x"]);
    assert_eq!(output.status.code(), Some(2), "{:?}", text(&output));
    let output = run(&["classify", "-m", "cls", "/definitely/not/here.png"]);
    assert!(!output.status.success());
    assert!(text(&output).1.contains("cannot read /definitely/not/here.png"), "{:?}", text(&output));
}

#[test]
fn commands_against_a_real_server() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).start();
    let url = server.url("");
    let grpc_url = format!("http://{}", server.grpc);
    let dir = temp_dir("client_cli");
    let image = dir.join("one.png");
    std::fs::write(&image, images::png(64, 48, 1)).unwrap();
    let image = image.to_str().unwrap();
    let base = ["--url", url.as_str(), "--grpc-url", grpc_url.as_str()];
    let with = |rest: &[&str]| -> Vec<String> { base.iter().chain(rest).map(|s| s.to_string()).collect() };

    let output = run(&with(&["health"]));
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).0.contains("live yes, ready yes"), "{:?}", text(&output));

    let output = run(&with(&["classify", "-m", "cls", "--top-k", "2", "--json", image]));
    assert!(output.status.success(), "{:?}", text(&output));
    let line: serde_json::Value = serde_json::from_str(text(&output).0.trim()).unwrap();
    assert_eq!(line["classes"].as_array().unwrap().len(), 2);

    // The server's 4xx message, and a non-zero exit.
    let output = run(&with(&["classify", "-m", "nope", image]));
    assert!(!output.status.success());
    let (stdout, _) = text(&output);
    assert!(stdout.contains("HTTP 404") && stdout.contains("nope"), "{stdout}");

    let draw = dir.join("drawn");
    let output = run(&with(&[
        "detect",
        "--grpc",
        "-m",
        "det",
        "--score-threshold",
        "0",
        "--draw",
        draw.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]));
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(draw.join("one.png").is_file(), "{:?}", text(&output));

    let output = run(&with(&["stream", "-m", "cls", "--window", "2", image, image, image]));
    assert!(output.status.success(), "{:?}", text(&output));
    assert_eq!(text(&output).0.lines().filter(|l| l.starts_with('[')).count(), 3);

    let output = run(&with(&[
        "bench",
        "-m",
        "cls",
        "--protocol",
        "grpc",
        "--concurrency",
        "1,2",
        "--requests",
        "6",
        "--image-size",
        "64x48",
        "--json",
    ]));
    assert!(output.status.success(), "{:?}", text(&output));
    let records: Vec<serde_json::Value> = text(&output).0.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2);
    assert_eq!((records[0]["concurrency"].as_u64(), records[1]["requests"].as_u64()), (Some(1), Some(6)));
    assert_eq!(records[1]["server_requests"], 6);

    let output = run(&with(&["bench", "-m", "cls", "--rate", "50", "--duration", "200ms", "--image-size", "32x32"]));
    assert!(output.status.success(), "{:?}", text(&output));
    let (stdout, _) = text(&output);
    assert!(stdout.starts_with("protocol") && stdout.contains("r=50/s"), "{stdout}");

    // Without --task, bench asks the server what the model does: the detector gets detect requests.
    let output = run(&with(&["bench", "-m", "det", "--requests", "3", "--image-size", "64x48", "--json"]));
    assert!(output.status.success(), "{:?}", text(&output));
    let record: serde_json::Value = serde_json::from_str(text(&output).0.trim()).unwrap();
    assert_eq!((record["errors"].as_u64(), record["server_requests"].as_u64()), (Some(0), Some(3)), "{record}");
    let output = run(&with(&["bench", "-m", "nope", "--requests", "1", "--image-size", "32x32"]));
    assert!(!output.status.success());
    assert!(text(&output).1.contains("the server has no model `nope` (it serves: cls, det)"), "{:?}", text(&output));
}
