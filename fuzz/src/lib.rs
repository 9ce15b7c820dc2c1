//! Fuzz targets for every parser that reads untrusted or operator-supplied bytes. Each target
//! takes arbitrary bytes and must return without panicking; refusing the input is fine. It
//! says whether the input was accepted, which the smoke test uses to check that seeds are valid.
//!
//! The targets are run two ways: `tests/fuzz_smoke.rs` replays the seed corpus and the crash
//! regressions and then runs a short, blind (not coverage-guided) mutation loop, as part of
//! `cargo test`; `fuzz/libfuzzer` wraps the same functions for coverage-guided runs with
//! cargo-fuzz (`scripts/fuzz.sh`).

pub mod mutate;
pub mod targets;

/// One fuzz target: its name (the corpus and regression folder), the function, and tokens the
/// mutator splices in because random bytes rarely produce them.
pub struct Target {
    pub name: &'static str,
    /// Runs one input; true when the code under test accepted it (for seed checks and statistics).
    pub run: fn(&[u8]) -> bool,
    pub dictionary: &'static [&'static [u8]],
}

/// Every target, in the order the smoke test runs them.
pub const TARGETS: &[Target] = &[
    Target { name: "image", run: targets::image::decode_and_preprocess, dictionary: targets::image::DICTIONARY },
    Target { name: "http_images", run: targets::http::images_request, dictionary: targets::http::IMAGES_DICTIONARY },
    Target { name: "http_v2", run: targets::http::v2_infer, dictionary: targets::http::V2_DICTIONARY },
    Target { name: "grpc", run: targets::grpc::request_messages, dictionary: targets::grpc::DICTIONARY },
    Target { name: "darknet_cfg", run: targets::darknet::cfg, dictionary: targets::darknet::CFG_DICTIONARY },
    Target {
        name: "darknet_weights",
        run: targets::darknet::weights,
        dictionary: targets::darknet::WEIGHTS_DICTIONARY,
    },
    Target { name: "safetensors", run: targets::safetensors::load, dictionary: targets::safetensors::DICTIONARY },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The first line of `bytes` (without its `\n`) and the rest; no newline means no first line.
/// Targets whose input has a small header (a URI, a content type) carry it this way, so seeds
/// stay readable and mutations reach the header too.
pub fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}
