//! The web demo page at `/`: served with its assets, then driven in Debian's headless Chromium by
//! `tests/browser/demo.mjs` (playwright-core) against the real server, which requires an API key
//! so the page's key field is exercised too. Screenshots land in `<target>/<profile>/web-page/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use csp_e2e::fixtures::fixtures;
use csp_e2e::rest::client;
use csp_e2e::{images, profile_dir, ServerBuilder};
use reqwest::StatusCode;

const KEY: &str = "demo-page-key";
/// Two headless Chromium sessions on a busy 2-core machine.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);
const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// What the browser test needs, or what is missing.
fn browser_prerequisites() -> Result<(), String> {
    let mut missing = Vec::new();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => missing.push("node (Node.js >= 20)".to_string()),
    }
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        missing.push(format!("the npm packages ({} is missing)", playwright.display()));
    }
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!("Debian's chromium ({CHROMIUM})"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the browser test cannot run: missing {}. Install them with `scripts/setup-browser.sh`",
            missing.join(", ")
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_are_served_without_a_key() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).args(["--api-key", KEY]).start();
    let http = client();
    let page = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<select id=\"model\""), "not the demo page: {html}");
    for (asset, content_type) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let start = html.find(&format!("/static/{asset}?v=")).unwrap_or_else(|| panic!("{asset} not linked"));
        let end = start + html[start..].find('"').expect("closing quote");
        let response = http.get(server.url(&html[start..end])).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let served_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(served_type.starts_with(content_type), "{asset}: {served_type}");
        assert!(response.headers()["cache-control"].to_str().unwrap().contains("max-age"));
        assert!(!response.bytes().await.unwrap().is_empty());
    }
    let missing = http.get(server.url("/static/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[test]
fn demo_page_in_headless_chromium() {
    if let Err(message) = browser_prerequisites() {
        panic!("{message}");
    }
    let server = ServerBuilder::new().config(&fixtures().standard_config).args(["--api-key", KEY]).start();
    let out = profile_dir().join("web-page");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("create the screenshot directory");
    let image = out.join("input.jpg");
    std::fs::write(&image, images::jpeg(640, 480, 3)).expect("write the test image");

    let log_path = out.join("browser.log");
    let log = std::fs::File::create(&log_path).expect("create the browser log");
    let mut child = Command::new("node")
        .arg(browser_dir().join("demo.mjs"))
        .arg(server.url(""))
        .arg(&out)
        .arg(format!("--image={}", image.display()))
        .arg(format!("--api-key={KEY}"))
        .args(["--detector=det", "--classifier=cls"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .expect("start node");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let Some(status) = status else {
        panic!("the browser test ran past {BROWSER_TIMEOUT:?}:\n{output}\nserver:\n{}", server.output());
    };
    assert!(status.success(), "the browser test failed ({status}):\n{output}\nserver:\n{}", server.output());
    assert!(out.join("ok").is_file(), "the browser test exited 0 without finishing:\n{output}");
    for shot in ["desktop-detect.png", "desktop-classify.png", "desktop-error.png", "phone-detect.png"] {
        let path = out.join(shot);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} missing or empty", path.display());
    }
    println!("{output}screenshots: {}", out.display());
}
