//! The other layers CSP networks run between convs, on blocked maps: max pooling (darknet's
//! semantics, as `layers::max_pool`), nearest upsampling, and a residual add that no conv could
//! take. A pixel is 16 channels, so every loop body is one vector wide; the loops run through
//! `with_simd`, compiled for AVX-512 or AVX2 where the CPU has them. Tasks are a block's rows.

use super::kernel::LANES;
use super::map::Map;
use super::{Part, Shared};
use crate::layers::{max_pool_out, with_simd, Activation, SimdJob};

type Pixel = [f32; LANES];

/// Rows of one output block per task: about 16 K floats, whole rows.
fn rows_per_task(w: usize) -> usize {
    (1024 / w.max(1)).max(1)
}

/// `f(block, rows)` for every block of `out` and its output rows in tasks of `rows_per_task`.
fn for_each_rows(out: &Map, f: impl Fn(usize, std::ops::Range<usize>) + Sync) {
    let per = rows_per_task(out.w);
    let tasks = out.h.div_ceil(per);
    crate::team::for_each(out.blocks() * tasks, |t| {
        let (block, first) = (t / tasks, (t % tasks) * per);
        f(block, first..(first + per).min(out.h))
    });
}

/// The running maximum and a value: NaN skipped, as `layers::max_pool` does.
#[inline(always)]
fn larger(max: &mut f32, value: f32) {
    if value > *max {
        *max = value;
    }
}

#[inline(always)]
fn pixel(data: &[f32], at: usize) -> &Pixel {
    data[at..at + LANES].try_into().expect("a pixel")
}

/// # Safety
/// `at..at + 16` is inside the output, which only this task writes there.
#[inline(always)]
unsafe fn store(out: Shared, at: usize, v: &Pixel) {
    std::ptr::copy_nonoverlapping(v.as_ptr(), out.ptr().add(at), LANES);
}

/// Darknet max pooling: output (in + padding - size) / stride + 1, windows from out * stride -
/// padding / 2, positions outside the image skipped. Separable: the window's rows first (a line
/// of column maxima per output row), then along that line.
pub fn max_pool(x: Part<&Map>, size: usize, stride: usize, padding: usize, border: usize) -> Map {
    let m = x.map;
    assert!(m.lanes == LANES && size > 0 && stride > 0, "max pool of a blocked map");
    let (oh, ow) = (max_pool_out(m.h, size, stride, padding), max_pool_out(m.w, size, stride, padding));
    let write = |out: &Map, dst: Shared| {
        for_each_rows(out, |block, rows| {
            with_simd(Pool { x: &x, out, dst, block, rows: rows.clone(), size, stride, before: padding / 2 })
        })
    };
    // SAFETY: every output pixel of every block, all lanes.
    unsafe { Map::written(x.channels, oh, ow, border, write) }
}

struct Pool<'a> {
    x: &'a Part<&'a Map>,
    out: &'a Map,
    dst: Shared,
    block: usize,
    rows: std::ops::Range<usize>,
    size: usize,
    stride: usize,
    before: usize,
}

impl SimdJob for Pool<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Pool { x, out, dst, block, rows, size, stride, before } = self;
        let m = x.map;
        let input = &m.data[(x.first_block + block) * m.block_len()..][..m.block_len()];
        let window = |o: usize, len: usize| {
            let start = (o * stride) as isize - before as isize;
            (start.clamp(0, len as isize) as usize, (start + size as isize).clamp(0, len as isize) as usize)
        };
        let row_len = m.w * LANES;
        let mut columns = vec![f32::NEG_INFINITY; row_len];
        for oy in rows {
            let (lo, hi) = window(oy, m.h);
            columns.fill(f32::NEG_INFINITY);
            for y in lo..hi {
                let row = &input[m.at(y as isize, 0)..][..row_len];
                columns.iter_mut().zip(row).for_each(|(c, v)| larger(c, *v));
            }
            let to = block * out.block_len() + out.at(oy as isize, 0);
            for ox in 0..out.w {
                let (lo, hi) = window(ox, m.w);
                let mut max = [f32::NEG_INFINITY; LANES];
                for c in columns[lo * LANES..hi * LANES].chunks_exact(LANES) {
                    max.iter_mut().zip(c).for_each(|(m, v)| larger(m, *v));
                }
                // SAFETY: inside the output; this task alone writes block `block`'s rows `rows`.
                unsafe { store(dst, to + ox * LANES, &max) };
            }
        }
    }
}

/// Nearest-neighbour upsampling by `stride`.
pub fn upsample(x: Part<&Map>, stride: usize, border: usize) -> Map {
    let m = x.map;
    assert!(m.lanes == LANES && stride > 0, "upsampling a blocked map");
    let write = |out: &Map, dst: Shared| {
        for_each_rows(out, |block, rows| {
            let input = &m.data[(x.first_block + block) * m.block_len()..][..m.block_len()];
            for oy in rows {
                let (from, to) = (m.at((oy / stride) as isize, 0), block * out.block_len() + out.at(oy as isize, 0));
                for ox in 0..out.w {
                    // SAFETY: inside the output; this task alone writes these rows of this block.
                    unsafe { store(dst, to + ox * LANES, pixel(input, from + (ox / stride) * LANES)) };
                }
            }
        })
    };
    // SAFETY: every output pixel of every block, all lanes.
    unsafe { Map::written(x.channels, m.h * stride, m.w * stride, border, write) }
}

/// `activation(a + b)`, parts of one shape.
pub fn add(a: Part<&Map>, b: Part<&Map>, activation: Activation, border: usize) -> Map {
    let (ma, mb) = (a.map, b.map);
    assert!(
        ma.lanes == LANES && mb.lanes == LANES && (a.channels, ma.h, ma.w) == (b.channels, mb.h, mb.w),
        "adding maps"
    );
    let write = |out: &Map, dst: Shared| {
        for_each_rows(out, |block, rows| {
            with_simd(Add { a: &a, b: &b, out, dst, block, rows: rows.clone(), activation })
        })
    };
    // SAFETY: every output pixel of every block, all lanes.
    unsafe { Map::written(a.channels, ma.h, ma.w, border, write) }
}

struct Add<'a> {
    a: &'a Part<&'a Map>,
    b: &'a Part<&'a Map>,
    out: &'a Map,
    dst: Shared,
    block: usize,
    rows: std::ops::Range<usize>,
    activation: Activation,
}

impl SimdJob for Add<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Add { a, b, out, dst, block, rows, activation } = self;
        fn line<'m>(p: &Part<&'m Map>, block: usize, y: usize) -> &'m [f32] {
            let m = p.map;
            &m.data[(p.first_block + block) * m.block_len() + m.at(y as isize, 0)..][..m.w * LANES]
        }
        let mut sum = vec![0f32; out.w * LANES];
        for y in rows {
            sum.iter_mut().zip(line(a, block, y).iter().zip(line(b, block, y))).for_each(|(s, (x, y))| *s = x + y);
            activation.apply(&mut sum, 0.0);
            let to = block * out.block_len() + out.at(y as isize, 0);
            // SAFETY: inside the output; this task alone writes these rows of this block.
            unsafe { std::ptr::copy_nonoverlapping(sum.as_ptr(), dst.ptr().add(to), sum.len()) };
        }
    }
}
