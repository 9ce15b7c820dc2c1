#!/usr/bin/env python3
"""Writes the image input corpus of tests/tests/e2e/input_corpus.rs into tests/fixtures/corpus/.

The files are committed: the tests never run this script (CI needs no Python). Rerun it only to
change the corpus, then commit what it writes. Needs Pillow (with WebP) and numpy:

    scripts/gen_corpus.py [--det DET.png] [--cls CLS.png] [--cls2 CLS2.png] [--out DIR]

The three base pictures come from the repository's own shapes generator (byte-identical for a
seed), so the bundled default models give meaningful answers on them; the defaults below are
where these two commands put them:

    csp-train synth --out /tmp/corpus-det --images 16 --seed 91 --format coco --val-fraction 1.0
        -> val/images/000001.png   (160x128, one cross off centre)           = det.jpg
    csp-train synth --out /tmp/corpus-cls --images 24 --seed 92 --format folder --val-fraction 1.0
        -> val/cross/000017.png    (64x64, a cross the classifier is sure of) = cls.png
        -> val/triangle/000002.png (64x64, a triangle)                       = second animation frame

Every valid file is the cls or det picture in another encoding, layout or orientation; the test
compares the server's answer on it with its answer on cls.png / det.jpg (the same pixels, upright,
8-bit RGB). Malformed files are cut or patched copies of valid ones, or hand-built headers.
"""

import argparse
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "tests" / "fixtures" / "corpus"

# EXIF orientation -> the PIL transpose that turns the upright picture into the stored one
# (the inverse of what a viewer applies when it shows the file).
STORED_FOR_ORIENTATION = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],  # viewer turns it 90 degrees clockwise
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],  # viewer turns it 90 degrees counter-clockwise
}


def exif_with_orientation(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def stored(img, orientation):
    for t in STORED_FOR_ORIENTATION[orientation]:
        img = img.transpose(t)
    return img


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_raw(width, height, bit_depth, color_type, rows, extra_chunks=()):
    """A PNG from already filtered rows (each row starts with its filter byte)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    for kind, data in extra_chunks:
        out += png_chunk(kind, data)
    out += png_chunk(b"IDAT", zlib.compress(rows, 9)) + png_chunk(b"IEND", b"")
    return out


def png16(pixels):
    """16-bit PNG (grey, grey+alpha, RGB or RGBA) from a uint16 array of shape [h, w, c]."""
    h, w, c = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return png_raw(w, h, 16, color_type, rows)


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def to16(a8):
    return a8.astype(np.uint16) * 257


def valid_files(det, cls, cls2):
    files = {}
    rgb = np.asarray(cls)
    files["cls.png"] = encode(cls, "PNG", optimize=True)
    files["cls.jpg"] = encode(cls, "JPEG", quality=95)
    files["cls-progressive.jpg"] = encode(cls, "JPEG", quality=95, progressive=True)
    files["cls-cmyk.jpg"] = encode(cls.convert("CMYK"), "JPEG", quality=95)
    files["cls-gray.jpg"] = encode(cls.convert("L"), "JPEG", quality=95)
    gray = cls.convert("L")
    files["cls-gray.png"] = encode(gray, "PNG", optimize=True)
    files["cls-gray-rgb.png"] = encode(gray.convert("RGB"), "PNG", optimize=True)
    g = np.asarray(gray)
    files["cls-gray16.png"] = png16(to16(g)[:, :, None])
    files["cls-gray-alpha.png"] = encode(Image.merge("LA", [gray, Image.new("L", cls.size, 255)]), "PNG")
    files["cls-rgb16.png"] = png16(to16(rgb))
    files["cls-rgba-opaque.png"] = encode(cls.convert("RGBA"), "PNG", optimize=True)
    # Right half transparent over garbage colours, a band of half-transparent pixels: the server
    # composites over white, so the answer must equal that of cls-over-white.png.
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, 40:] = 0
    alpha[:, 32:40] = 128
    garbage = rgb.copy()
    garbage[:, 40:] = [255, 0, 255]
    rgba = np.dstack([garbage, alpha])
    files["cls-rgba.png"] = encode(Image.fromarray(rgba, "RGBA"), "PNG", optimize=True)
    files["cls-rgba16.png"] = png16(to16(rgba))
    a = alpha.astype(np.uint32)[:, :, None]
    over_white = (garbage.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    files["cls-over-white.png"] = encode(Image.fromarray(over_white.astype(np.uint8), "RGB"), "PNG", optimize=True)
    files["cls-palette.png"] = encode(cls.quantize(256, dither=Image.Dither.NONE), "PNG", optimize=True)
    files["cls.bmp"] = encode(cls, "BMP")
    files["cls-lossless.webp"] = encode(cls, "WEBP", lossless=True)
    files["cls-lossy.webp"] = encode(cls, "WEBP", quality=90)
    # Animations: frame 1 is the cross, frame 2 the triangle; the answer must be frame 1's.
    frames = [cls, cls2]
    files["cls-anim.gif"] = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["cls2.jpg"] = encode(cls2, "JPEG", quality=95)
    files["cls-anim.webp"] = encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0, quality=90
    )
    # EXIF orientation in PNG (eXIf chunk) and WebP, on a non-square crop so the size reveals it.
    crop = cls.crop((0, 8, 64, 56))
    files["cls-crop.png"] = encode(crop, "PNG", optimize=True)
    files["cls-crop-exif6.png"] = encode(stored(crop, 6), "PNG", exif=exif_with_orientation(6), optimize=True)
    files["cls-crop-exif8.webp"] = encode(stored(crop, 8), "WEBP", lossless=True, exif=exif_with_orientation(8))
    # The detector picture in every EXIF orientation (phones write 3, 6 and 8; 2, 4, 5, 7 mirror).
    files["det.jpg"] = encode(det, "JPEG", quality=90)
    for o in STORED_FOR_ORIENTATION:
        files[f"det-exif{o}.jpg"] = encode(stored(det, o), "JPEG", quality=90, exif=exif_with_orientation(o))
    # Tiny and thin pictures of one colour: as a classifier sees them, the same as a square of it.
    red = (200, 40, 30)
    files["1x1.png"] = encode(Image.new("RGB", (1, 1), red), "PNG")
    files["1x1.gif"] = encode(Image.new("RGB", (1, 1), red), "GIF")
    files["1x1.jpg"] = encode(Image.new("RGB", (1, 1), red), "JPEG", quality=100)
    files["solid-64.png"] = encode(Image.new("RGB", (64, 64), red), "PNG")
    files["thin-1x512.png"] = encode(Image.new("RGB", (1, 512), red), "PNG")
    files["thin-512x1.png"] = encode(Image.new("RGB", (512, 1), red), "PNG")
    # Within a 1M-pixel limit, yet a naive resize of the short side to 64 would need 64x these.
    files["thin-1x200000.png"] = encode(Image.new("RGB", (1, 200_000), red), "PNG", optimize=True)
    files["thin-200000x1.png"] = encode(Image.new("RGB", (200_000, 1), red), "PNG", optimize=True)
    return files


def gif_header(width, height):
    """GIF89a with a 2-colour global palette, one image descriptor of the full size, and a tiny LZW stream."""
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    out += b"\x02\x02\x4c\x01\x00"  # min code size 2, one sub-block: clear, 0, end
    return out + b"\x3b"


def bmp_header(width, height):
    """A 24-bit BMP header claiming width x height, with no pixel data behind it."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def png_bomb_real(width, height):
    """A genuine 1-bit PNG of width x height zeros: a few KB that decode to width*height pixels."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def invalid_files(valid):
    files = {}
    files["page.html"] = b"<!DOCTYPE html>\n<html><head><title>cat</title></head><body><img src=cat.jpg></body></html>\n"
    files["shape.svg"] = (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<circle cx="32" cy="32" r="20" fill="red"/></svg>\n'
    )
    files["truncated.gif"] = valid["cls-anim.gif"][:200]
    files["truncated.webp"] = valid["cls-lossless.webp"][: len(valid["cls-lossless.webp"]) // 2]
    files["truncated.bmp"] = valid["cls.bmp"][:1000]
    files["header-only.png"] = valid["cls.png"][:33]
    png = bytearray(valid["cls-gray.png"])
    idat = png.index(b"IDAT")
    png[idat + 20 : idat + 60] = b"\xa5" * 40  # inside the zlib stream: bad CRC and bad deflate data
    files["corrupt.png"] = bytes(png)
    jpg = bytearray(valid["1x1.jpg"])
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 9] = 0  # zero colour components
    files["corrupt-sof.jpg"] = bytes(jpg)
    files["bomb-65535.png"] = png_raw(65535, 65535, 8, 2, zlib.decompress(zlib.compress(b"\x00" * 16)))
    files["bomb-65535.gif"] = gif_header(65535, 65535)
    files["bomb-65535.bmp"] = bmp_header(65535, 65535)
    # A genuine lossless WebP at the format's largest size: 38 bytes that decode to 268M pixels.
    files["bomb-16383.webp"] = encode(Image.new("RGB", (16383, 16383), (200, 40, 30)), "WEBP", lossless=True, quality=0, method=0)
    jpg = bytearray(valid["1x1.jpg"])
    jpg[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
    files["bomb-65535.jpg"] = bytes(jpg)
    files["bomb-deflate-4000.png"] = png_bomb_real(4000, 4000)
    files["zero-size.png"] = png_raw(0, 0, 8, 2, b"")
    files["gif-no-frames.gif"] = b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0x80, 0, 0) + b"\x00" * 6 + b"\x3b"
    return files


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--det", type=Path, default=Path("/tmp/corpus-det/val/images/000001.png"))
    p.add_argument("--cls", type=Path, default=Path("/tmp/corpus-cls/val/cross/000017.png"))
    p.add_argument("--cls2", type=Path, default=Path("/tmp/corpus-cls/val/triangle/000002.png"))
    p.add_argument("--out", type=Path, default=CORPUS)
    args = p.parse_args()
    det = Image.open(args.det).convert("RGB")
    # 16 colours (the classifier's answer does not change) keep the lossless variants small.
    cls = Image.open(args.cls).convert("RGB").quantize(16, dither=Image.Dither.NONE).convert("RGB")
    cls2 = Image.open(args.cls2).convert("RGB")
    valid = valid_files(det, cls, cls2)
    files = {**valid, **invalid_files(valid)}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        (args.out / name).write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"{len(files)} files, {total} bytes in {args.out}")


if __name__ == "__main__":
    main()
