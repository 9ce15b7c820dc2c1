//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) into the prost messages
//! and tonic clients this crate uses. No server stubs: the server has its own.

use std::error::Error;
use std::path::PathBuf;

const PROTOS: [&str; 2] = ["inference.proto", "cspserve.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(proto).display());
    }
    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_imports(true);
    compiler.open_files(PROTOS)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Images go out as reference-counted buffers: one encoded image is shared by every request.
        .bytes(".")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
