//! The `csp-server` command line: help, and start-up failures that must exit non-zero with a
//! message saying what is wrong (the full server is exercised by the `csp-e2e` package).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs csp-server with `args` (no CSP_* settings from the environment, loopback ports in case
/// a start succeeds by mistake) and returns (exit success, stdout, stderr). Killed after 60 s.
fn csp_server(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_csp-server"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CSP_") {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().expect("start csp-server");
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("csp-server {args:?} still running after 60 s:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LOOPBACK: [&str; 4] = ["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"];

fn with_loopback<'a>(args: &[&'a str]) -> Vec<&'a str> {
    LOOPBACK.iter().copied().chain(args.iter().copied()).collect()
}

#[test]
fn help_lists_the_main_flags() {
    let (ok, out, err) = csp_server(&["--help"]);
    assert!(ok, "{err}");
    for flag in [
        "--model",
        "--config",
        "--http-addr",
        "--grpc-addr",
        "--device",
        "--threads",
        "--max-batch-size",
        "--max-queue-delay-ms",
        "--max-queue-size",
        "--max-body-bytes",
        "--api-key",
        "--shutdown-grace",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--engine",
    ] {
        assert!(out.contains(flag), "`{flag}` missing from --help:\n{out}");
    }
    // Every flag can come from the environment.
    assert!(out.contains("CSP_MODEL") && out.contains("CSP_HTTP_ADDR"), "{out}");
}

#[test]
fn unknown_flag_is_refused() {
    let (ok, _, err) = csp_server(&["--no-such-flag"]);
    assert!(!ok);
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn malformed_values_are_refused() {
    let (ok, _, err) = csp_server(&with_loopback(&["--max-batch-size", "many"]));
    assert!(!ok);
    assert!(err.contains("--max-batch-size"), "{err}");
    let (ok, _, err) = csp_server(&["--http-addr", "not-an-address"]);
    assert!(!ok);
    assert!(err.contains("--http-addr"), "{err}");
    let (ok, _, err) = csp_server(&with_loopback(&["--max-batch-size", "0", "--model", "m=x.safetensors"]));
    assert!(!ok);
    assert!(err.contains("--max-batch-size must be at least 1"), "{err}");
    let (ok, _, err) = csp_server(&with_loopback(&["--device", "tpu", "--model", "m=x.safetensors"]));
    assert!(!ok);
    assert!(err.contains("unknown device `tpu`"), "{err}");
}

#[test]
fn no_model_is_refused() {
    let (ok, out, err) = csp_server(&with_loopback(&["--default-config", "/nonexistent/models.toml"]));
    assert!(!ok, "started without a model:\n{out}");
    assert!(err.contains("no model to serve"), "{err}");
    assert!(err.contains("/nonexistent/models.toml"), "{err}");
    assert!(!out.contains("csp-server ready"), "{out}");
}

#[test]
fn model_without_weights_is_refused() {
    let (ok, _, err) = csp_server(&with_loopback(&["--model", "m=cspdarknet53"]));
    assert!(!ok);
    assert!(err.contains("never serves random weights"), "{err}");
}

#[test]
fn missing_weights_file_is_refused() {
    let missing = std::env::temp_dir().join(format!("csp-cli-{}-missing.safetensors", std::process::id()));
    let spec = format!("m={}", missing.display());
    let (ok, out, err) = csp_server(&with_loopback(&["--model", &spec]));
    assert!(!ok, "started with a missing weights file:\n{out}");
    assert!(err.contains(&missing.display().to_string()), "the error does not name the missing file:\n{err}");
    assert!(!out.contains("csp-server ready"), "{out}");

    let (ok, _, err) = csp_server(&with_loopback(&["--config", "/nonexistent/csp-models.toml"]));
    assert!(!ok);
    assert!(err.contains("/nonexistent/csp-models.toml"), "{err}");
}

#[test]
fn tls_needs_both_files_and_names_a_bad_one() {
    let (ok, _, err) = csp_server(&with_loopback(&["--model", "m=m.safetensors", "--tls-cert", "cert.pem"]));
    assert!(!ok);
    assert!(err.contains("--tls-key"), "{err}");
    let (ok, _, err) = csp_server(&with_loopback(&["--model", "m=m.safetensors", "--tls-client-ca", "ca.pem"]));
    assert!(!ok);
    assert!(err.contains("--tls-cert"), "{err}");
    // Checked before any model loads (this weights file does not exist either).
    let missing = "/nonexistent/csp-tls-cert.pem";
    let args = ["--model", "m=m.safetensors", "--tls-cert", missing, "--tls-key", "/nonexistent/key.pem"];
    let (ok, out, err) = csp_server(&with_loopback(&args));
    assert!(!ok, "{out}");
    assert!(err.contains("--tls-cert") && err.contains(missing), "{err}");
}
