//! Shared by the `client_*` tests: a `csp_client` connection to a harness server, test images
//! as the client's image files, and the `csp-client` binary.

use std::path::PathBuf;
use std::time::Duration;

use csp_client::images::ImageFile;
use csp_client::{Connection, TlsOptions};
use csp_e2e::{images, Server};

pub fn connection(server: &Server) -> Connection {
    connection_with_key(server, None)
}

pub fn connection_with_key(server: &Server, key: Option<&str>) -> Connection {
    Connection::new(
        &server.url(""),
        &format!("http://{}", server.grpc),
        key.map(str::to_owned),
        Duration::from_secs(60),
        false,
        &TlsOptions::default(),
    )
    .expect("client connection")
}

/// `count` different PNGs of varied sizes, named `img-<i>.png`.
pub fn pngs(count: u32) -> Vec<ImageFile> {
    (0..count)
        .map(|i| ImageFile { name: format!("img-{i}.png"), bytes: images::png(48 + 8 * i, 40 + 4 * i, i).into() })
        .collect()
}

/// The `csp-client` binary next to the test executable (or at `CSP_CLIENT_BIN`).
pub fn client_bin() -> PathBuf {
    csp_e2e::workspace_binary("csp-client", "CSP_CLIENT_BIN", "cargo build -p csp-client")
}

/// A fresh folder under the fixtures' one, named after the test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = csp_e2e::fixtures::fixtures().dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test folder");
    dir
}
