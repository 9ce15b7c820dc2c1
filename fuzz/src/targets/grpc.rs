//! Protobuf request messages: v2 `ModelInferRequest` and cspserve's `ClassifyRequest` /
//! `DetectRequest`, decoded from wire bytes and taken up to inference.

pub fn request_messages(bytes: &[u8]) -> bool {
    csp_server::grpc::fuzz::request_messages(bytes)
}

/// Field keys (field number << 3 | wire type) and values the request messages use.
pub const DICTIONARY: &[&[u8]] = &[
    b"\x0a",
    b"\x12",
    b"\x1a",
    b"\x22",
    b"\x2a",
    b"\x32",
    b"\x3a",
    b"\x18",
    b"\x1d",
    b"\x25",
    b"\x28",
    b"input",
    b"image",
    b"FP32",
    b"BYTES",
    b"timeout",
    b"top_k",
    b"classes",
    b"score_threshold",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x80\x80\x80\x80\x10",
];
