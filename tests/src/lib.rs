//! End-to-end test harness for `csp-server`: starts the real binary on free loopback ports,
//! generates small model files to serve, and gives REST and gRPC clients for it.
//!
//! The binaries are found next to the test executable (`<target>/<profile>/csp-server` and
//! `csp-model`), or at `CSP_SERVER_BIN` / `CSP_MODEL_BIN`. `cargo test --workspace` builds
//! them; `cargo test -p csp-e2e` alone needs `cargo build -p csp-server -p csp-models --bins
//! --features csp-server/fault-injection` first (the backend fault test needs the feature's hooks).

pub mod fixtures;
pub mod images;
pub mod load;
pub mod metrics;
pub mod rest;
pub mod server;
pub mod tls;

pub use csp_server::grpc::pb;
pub use server::{Server, ServerBuilder};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A workspace binary built in the same target directory and profile as this test executable
/// (`<target>/<profile>/deps/<test>` -> `<target>/<profile>/<name>`), or the path in `env_var`.
pub fn workspace_binary(name: &str, env_var: &str, build_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env_var}={} is not a file", path.display());
        return path;
    }
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the `{name}` binary is not at {}: build it first with `{build_hint}` (same profile and \
         CARGO_TARGET_DIR as the tests; `cargo test --workspace` does it), or set {env_var}",
        path.display()
    );
    path
}

/// `<target>/<profile>`, from this test executable's path (`<target>/<profile>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(|deps| if deps.ends_with("deps") { deps.parent() } else { Some(deps) })
        .expect("the test executable lies in <target>/<profile>/deps")
        .to_path_buf()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Largest absolute difference between two equally long slices (panics on a length mismatch).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
