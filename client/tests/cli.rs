//! The `csp-client` binary's argument handling, without a server. (Its presence also makes
//! `cargo test --workspace` build the binary the end-to-end tests run.)

use std::process::Command;

fn csp_client(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_csp-client")).args(args).output().expect("run csp-client");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_subcommand() {
    let (code, out, _) = csp_client(&["--help"]);
    assert_eq!(code, Some(0));
    for sub in ["classify", "detect", "stream", "models", "health", "bench"] {
        assert!(out.contains(sub), "`{sub}` missing from --help:\n{out}");
    }
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    let (code, _, err) = csp_client(&["bench", "--model", "m", "--concurrency", "zero"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--concurrency"), "{err}");
}

#[test]
fn nothing_listening_is_a_clear_error() {
    // Port 9 (discard) on loopback: nothing serves HTTP there in a test environment.
    let (code, _, err) = csp_client(&["--url", "http://127.0.0.1:9", "health"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("cannot connect to http://127.0.0.1:9"), "{err}");
}
