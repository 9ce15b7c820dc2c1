//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and generates the tonic
//! services and prost messages. The encoded descriptor set is written to OUT_DIR for gRPC
//! reflection.

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
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("cspserve_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Image and tensor payloads stay reference-counted buffers: no copy between the wire and the core.
        .bytes(".")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
