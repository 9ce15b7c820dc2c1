//! The container's start command, tested without Docker: `csp-server` started with exactly the
//! ENTRYPOINT, CMD and ENV of docker/Dockerfile's final stage answers a detect request, the image's
//! HEALTHCHECK command passes against it, and every probe path of the deployment manifests answers.
//!
//! Two things are mapped, explicitly: the bundled models' folder in the image onto models/default
//! in the repository, and the listen addresses onto free loopback ports (the harness passes
//! `--http-addr`/`--grpc-addr`, which take precedence over the image's CSP_*_ADDR). Any other
//! container path, instruction or environment variable the test does not know fails it: a change of
//! the Dockerfile that this test cannot follow must change the test too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use csp_e2e::rest::{client, get_json, ok_json};
use csp_e2e::ServerBuilder;
use csp_train::data::{DetDataset, DetFormat};
use csp_train::synth::{self, SynthArgs, SynthFormat};
use reqwest::StatusCode;

use crate::client_support::client_bin;

/// Where the image holds the bundled models, and where the repository has them.
const BUNDLED_IN_IMAGE: &str = "/opt/cspserve/models/default";
const BUNDLED_IN_REPO: &str = "models/default";
/// The health check's client reads this one; every other CSP_* variable must be the server's.
const CLIENT_URL_VAR: &str = "CSP_URL";
/// Instructions of the final stage that do not change what the server is started with.
const INERT: [&str; 4] = ["ARG", "RUN", "USER", "VOLUME"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The final stage of a Dockerfile, as far as starting the server goes.
#[derive(Debug, Default)]
struct Stage {
    env: BTreeMap<String, String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    expose: Vec<u16>,
    healthcheck: Vec<String>,
    /// (sources, destination) of every COPY.
    copies: Vec<(Vec<String>, String)>,
}

/// Exec form only: the shell form would run through /bin/sh, which this test does not imitate.
fn exec_form(instruction: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{instruction} {rest}: not in exec form ({e})"))
}

fn final_stage(path: &Path) -> Stage {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let from = lines.iter().rposition(|l| l.starts_with("FROM ")).expect("a FROM instruction");
    let mut stage = Stage::default();
    for line in &lines[from + 1..] {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match instruction {
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("ENV {pair}: expected KEY=VALUE"));
                    assert!(
                        !value.contains(['"', '\'', '$']),
                        "ENV {pair}: quoting and substitution are not supported"
                    );
                    stage.env.insert(key.to_owned(), value.to_owned());
                }
            }
            "ENTRYPOINT" => stage.entrypoint = exec_form(instruction, rest),
            "CMD" => stage.cmd = exec_form(instruction, rest),
            "EXPOSE" => stage.expose.extend(rest.split_whitespace().map(|p| p.parse::<u16>().expect("EXPOSE PORT"))),
            "HEALTHCHECK" => {
                let (_, cmd) = rest.split_once("CMD ").expect("HEALTHCHECK [OPTIONS] CMD [...]");
                stage.healthcheck = exec_form(instruction, cmd.trim());
            }
            "COPY" => {
                let mut words: Vec<String> =
                    rest.split_whitespace().filter(|w| !w.starts_with("--")).map(String::from).collect();
                let destination = words.pop().expect("COPY destination");
                stage.copies.push((words, destination));
            }
            other => assert!(INERT.contains(&other), "{}: instruction `{line}` is not supported here", path.display()),
        }
    }
    stage
}

/// The container path `value` as a path of this machine: only the bundled models are mapped.
fn host_value(value: &str) -> String {
    if !value.starts_with('/') {
        return value.to_owned();
    }
    let rest = value.strip_prefix(BUNDLED_IN_IMAGE).unwrap_or_else(|| panic!("container path {value} is not mapped"));
    format!("{}{rest}", repo().join(BUNDLED_IN_REPO).display())
}

/// `0.0.0.0:PORT` -> PORT
fn listen_port(value: &str) -> u16 {
    let port = value.strip_prefix("0.0.0.0:").unwrap_or_else(|| panic!("{value}: expected 0.0.0.0:PORT"));
    port.parse().unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// The CSP_* variables `csp-server --help` names.
fn server_env_vars() -> Vec<String> {
    let bin = csp_e2e::workspace_binary("csp-server", "CSP_SERVER_BIN", "cargo build -p csp-server");
    let out = Command::new(bin).arg("--help").output().expect("csp-server --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let vars: Vec<String> =
        help.split("[env: ").skip(1).filter_map(|s| s.split(['=', ']']).next()).map(String::from).collect();
    assert!(vars.iter().any(|v| v == "CSP_HTTP_ADDR"), "no env vars in csp-server --help:\n{help}");
    vars
}

/// Checks what the image's start command depends on, then maps it: the server's arguments and
/// environment as this machine runs them.
fn start_command(stage: &Stage) -> (Vec<String>, Vec<(String, String)>) {
    let (program, args) = stage.entrypoint.split_first().expect("an ENTRYPOINT");
    assert_eq!(program, "csp-server", "the ENTRYPOINT runs csp-server from PATH");
    let binaries = stage.copies.iter().find(|(_, dest)| dest == "/usr/local/bin/").expect("COPY ... /usr/local/bin/");
    assert!(binaries.0.iter().any(|s| s.ends_with("/csp-server")), "csp-server is copied to /usr/local/bin/");
    let bundled = stage.copies.iter().find(|(_, dest)| dest == BUNDLED_IN_IMAGE).expect("COPY of the bundled models");
    assert!(bundled.0.len() == 1 && bundled.0[0].ends_with(&format!("/{BUNDLED_IN_REPO}")), "{bundled:?}");

    let server_vars = server_env_vars();
    let mut env = Vec::new();
    for (key, value) in &stage.env {
        if key == CLIENT_URL_VAR {
            continue;
        }
        assert!(server_vars.contains(key), "ENV {key}: not a variable csp-server reads ({server_vars:?})");
        env.push((key.clone(), host_value(value)));
    }
    let mut args: Vec<String> = args.iter().chain(&stage.cmd).cloned().collect();
    args.iter_mut().for_each(|a| *a = host_value(a));
    (args, env)
}

fn env_value<'a>(stage: &'a Stage, key: &str) -> &'a str {
    stage.env.get(key).unwrap_or_else(|| panic!("the Dockerfile sets no {key}"))
}

/// One generated scene of the shapes the bundled detector was trained on, from a seed it never saw.
fn shapes_image() -> Vec<u8> {
    let dir = csp_e2e::profile_dir().join("csp-e2e-docker").join(format!("scene-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = SynthArgs::new(&dir, 2, 91, SynthFormat::Coco);
    args.val_fraction = 1.0;
    synth::run(&args).unwrap_or_else(|e| panic!("generating a scene: {e:#}"));
    let dataset = DetDataset::open(&dir, "val", DetFormat::Coco).expect("the generated scene");
    let sample = dataset.samples.iter().find(|s| !s.boxes.is_empty()).expect("a scene with shapes");
    std::fs::read(&sample.path).expect("the scene's image")
}

/// `path: /...` lines of the Kubernetes manifests and Prometheus' `metrics_path`.
fn manifest_paths() -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("docker/k8s"))
        .expect("docker/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.push(repo().join("docker/prometheus/prometheus.yml"));
    let mut paths = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let value = line.strip_prefix("path:").or_else(|| line.strip_prefix("metrics_path:"));
            if let Some(path) = value.map(str::trim).filter(|v| v.starts_with('/')) {
                paths.push(path.to_owned());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_start_command_serves_requests() {
    let stage = final_stage(&repo().join("docker/Dockerfile"));
    let http_port = listen_port(env_value(&stage, "CSP_HTTP_ADDR"));
    let grpc_port = listen_port(env_value(&stage, "CSP_GRPC_ADDR"));
    let mut exposed = stage.expose.clone();
    exposed.sort();
    assert_eq!(exposed, [http_port, grpc_port], "EXPOSE is the HTTP and gRPC ports the server listens on");

    let (args, env) = start_command(&stage);
    let mut builder = ServerBuilder::bare().args(args);
    for (key, value) in &env {
        builder = builder.env(key, value.as_str());
    }
    let server = builder.start();
    let http = client();

    let (status, list) = get_json(&http, &server.url("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> =
        list["models"].as_array().expect("models").iter().filter_map(|m| m["name"].as_str()).collect();
    assert!(names.contains(&"shapes-detector"), "the image serves the bundled detector: {names:?}");

    let url = server.url("/v1/models/shapes-detector/detect?score_threshold=0.05");
    let response = http.post(url).header("content-type", "image/png").body(shapes_image()).send().await.unwrap();
    let body = ok_json(response).await;
    let detections = body["results"][0]["detections"].as_array().unwrap_or_else(|| panic!("detections in {body}"));
    assert!(!detections.is_empty(), "no detection in a scene of shapes: {body}");
    for d in detections {
        assert!(d["label"].is_string() && d["score"].as_f64().is_some_and(|s| s > 0.0), "{d}");
    }

    // The HEALTHCHECK as written, its CSP_URL pointed at this server's HTTP port.
    let image_url = env_value(&stage, CLIENT_URL_VAR);
    assert_eq!(image_url, format!("http://127.0.0.1:{http_port}"), "the health check asks the server's HTTP port");
    let (program, check_args) = stage.healthcheck.split_first().expect("a HEALTHCHECK command");
    assert_eq!(program, "csp-client");
    let mut check = Command::new(client_bin());
    check.args(check_args);
    for (key, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("CSP_")) {
        check.env_remove(key);
    }
    let out = check.env(CLIENT_URL_VAR, server.url("")).output().expect("run csp-client");
    assert!(
        out.status.success(),
        "HEALTHCHECK failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let paths = manifest_paths();
    for want in ["/v2/health/ready", "/v2/health/live", "/metrics"] {
        assert!(paths.iter().any(|p| p == want), "no manifest uses {want}: {paths:?}");
    }
    for path in &paths {
        let response = http.get(server.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}, a probe or scrape path of the manifests");
    }
}

/// The CUDA image starts the same server the same way: only the device (and the NVIDIA runtime's
/// own variables) differ, so the CPU test above covers its start command too.
#[test]
fn the_cuda_image_differs_from_the_tested_one_only_in_the_device() {
    let cpu = final_stage(&repo().join("docker/Dockerfile"));
    let cuda = final_stage(&repo().join("docker/Dockerfile.cuda"));
    assert_eq!(cuda.entrypoint, cpu.entrypoint);
    assert_eq!(cuda.cmd, cpu.cmd);
    assert_eq!(cuda.expose, cpu.expose);
    assert_eq!(cuda.healthcheck, cpu.healthcheck);
    assert_eq!(cuda.copies, cpu.copies);
    let mut env = cuda.env.clone();
    assert_eq!(env.remove("CSP_DEVICE").as_deref(), Some("cuda:0"));
    env.retain(|key, _| !key.starts_with("NVIDIA_"));
    assert_eq!(env, cpu.env);
}
