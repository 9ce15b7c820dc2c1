//! Encoded images through the server's decoder and a model's preprocessing.

use csp_models::preprocess::Preprocess;
use csp_server::core::prepare_image;

/// Pixel limit for fuzzing: the server's default (40 M) lets one mutated header cost seconds of
/// decoding; the checks are the same at any limit.
const MAX_PIXELS: u64 = 1 << 20;

/// A non-square network input, so resizing runs in both directions.
const INPUT_SIZE: (usize, usize) = (24, 40);

/// The three resize modes (letterbox, stretch, centre crop); the input length picks one, so the
/// same bytes always take the same path.
const PREPROCESS: [Preprocess; 3] = [Preprocess::DARKNET_DETECTOR, Preprocess::DARKNET_CLASSIFIER, Preprocess::TIMM];

pub fn decode_and_preprocess(bytes: &[u8]) -> bool {
    let preprocess = &PREPROCESS[bytes.len() % PREPROCESS.len()];
    prepare_image(bytes, MAX_PIXELS, preprocess, INPUT_SIZE).is_ok()
}

pub const DICTIONARY: &[&[u8]] = &[
    b"\x89PNG\r\n\x1a\n",
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"acTL",
    b"fcTL",
    b"eXIf",
    b"\xff\xd8\xff",
    b"\xff\xd9",
    b"\xff\xc0",
    b"\xff\xc4",
    b"\xff\xda",
    b"\xff\xe1",
    b"Exif\0\0",
    b"II*\0",
    b"MM\0*",
    b"GIF89a",
    b"NETSCAPE2.0",
    b"BM",
    b"RIFF",
    b"WEBPVP8 ",
    b"VP8L",
    b"VP8X",
    b"ANIM",
    b"ANMF",
];
