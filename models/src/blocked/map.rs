//! One image's feature map in the blocked layout: channels in blocks of `lanes` (16; 1 for the
//! network input, which is read as it comes), each block `[h + 2 border][w + 2 border][lanes]`,
//! with a border of zeros that the convs reading the map take as their padding. Channels past
//! the last real one (up to a whole block) hold finite values that no reader uses.

use super::kernel::LANES;
use super::Shared;

#[derive(Clone, Debug)]
pub struct Map {
    pub data: Vec<f32>,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub border: usize,
    pub lanes: usize,
}

impl Map {
    pub fn blocks(&self) -> usize {
        self.channels.div_ceil(self.lanes)
    }

    /// Padded row length, in pixels.
    pub fn wp(&self) -> usize {
        self.w + 2 * self.border
    }

    /// Padded rows.
    pub fn hp(&self) -> usize {
        self.h + 2 * self.border
    }

    /// Floats per block.
    pub fn block_len(&self) -> usize {
        self.hp() * self.wp() * self.lanes
    }

    /// Where pixel (y, x) of block 0 starts; y and x may reach `border` outside the image.
    pub fn at(&self, y: isize, x: isize) -> usize {
        let b = self.border as isize;
        debug_assert!(y >= -b && x >= -b && y < (self.h + self.border) as isize && x < (self.w + self.border) as isize);
        (((y + b) as usize) * self.wp() + (x + b) as usize) * self.lanes
    }

    /// A map of 16-lane blocks written whole: the border zeroed here, every other float by
    /// `write`, which gets the map's geometry and the start of its buffer (its tasks each write
    /// their own floats there).
    ///
    /// # Safety
    /// `write` writes every float inside the border of every block, the lanes past the last
    /// channel included, and nothing outside the buffer.
    pub(super) unsafe fn written(
        channels: usize,
        h: usize,
        w: usize,
        border: usize,
        write: impl FnOnce(&Map, Shared),
    ) -> Map {
        let mut map = Map { data: Vec::new(), channels, h, w, border, lanes: LANES };
        let len = map.blocks() * map.block_len();
        map.data = Vec::with_capacity(len);
        if border > 0 {
            let (wp, row, block_len) = (map.wp(), map.wp() * LANES, map.block_len());
            let zero = std::mem::MaybeUninit::new(0f32);
            for block in map.data.spare_capacity_mut()[..len].chunks_exact_mut(block_len) {
                block[..border * row].fill(zero);
                let end = block.len() - border * row;
                block[end..].fill(zero);
                for line in block[border * row..end].chunks_exact_mut(row) {
                    line[..border * LANES].fill(zero);
                    line[(wp - border) * LANES..].fill(zero);
                }
            }
        }
        write(&map, Shared(map.data.as_ptr().cast_mut()));
        // SAFETY: the border is written above, the rest by `write` (the caller's promise).
        unsafe { map.data.set_len(len) };
        map
    }

    /// From channels `0..channels` of an NCHW image (`channel(c)` its plane), as 16-lane blocks.
    pub fn from_planes<'a>(
        channel: impl Fn(usize) -> &'a [f32] + Sync,
        channels: usize,
        h: usize,
        w: usize,
        border: usize,
    ) -> Map {
        let write = |map: &Map, dst: Shared| {
            let (block_len, wp, inside) = (map.block_len(), map.wp(), map.at(0, 0));
            crate::team::for_each(map.blocks(), |b| {
                for y in 0..h {
                    let line = b * block_len + inside + y * wp * LANES;
                    for lane in 0..LANES {
                        let c = b * LANES + lane;
                        let row = (c < channels).then(|| &channel(c)[y * w..][..w]);
                        for x in 0..w {
                            let v = row.map_or(0.0, |row| row[x]);
                            // SAFETY: inside block b, which only this task writes.
                            unsafe { dst.ptr().add(line + x * LANES + lane).write(v) };
                        }
                    }
                }
            });
        };
        // SAFETY: every pixel inside the border of every block, all 16 lanes.
        unsafe { Map::written(channels, h, w, border, write) }
    }

    /// An NCHW image (any channel count) as a 1-lane map with a border of `border`, for the first
    /// conv to read as it is.
    pub fn planar(image: &[f32], channels: usize, h: usize, w: usize, border: usize) -> Map {
        let mut map = Map { data: Vec::new(), channels, h, w, border, lanes: 1 };
        let (wp, hp) = (map.wp(), map.hp());
        map.data = vec![0f32; channels * hp * wp];
        for (c, plane) in map.data.chunks_exact_mut(hp * wp).enumerate() {
            for y in 0..h {
                plane[(y + border) * wp + border..][..w].copy_from_slice(&image[(c * h + y) * w..][..w]);
            }
        }
        map
    }

    /// Channels `first_block * lanes..` (`channels` of them) as NCHW planes, appended to `out`.
    pub fn planes_into(&self, first_block: usize, channels: usize, out: &mut Vec<f32>) {
        let (h, w, lanes, wp) = (self.h, self.w, self.lanes, self.wp());
        let start = out.len();
        out.resize(start + channels * h * w, 0.0);
        let inside = self.at(0, 0);
        crate::team::for_each_chunk(&mut out[start..], h * w, |c, plane| {
            let (block, lane) = ((first_block * lanes + c) / lanes, c % lanes);
            let block = &self.data[block * self.block_len() + inside..];
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                let line = &block[y * wp * lanes + lane..];
                row.iter_mut().zip(line.iter().step_by(lanes)).for_each(|(v, x)| *v = *x);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_go_in_and_come_back_out() {
        let (c, h, w) = (21, 5, 7);
        let image: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        for border in [0, 1, 2] {
            let map = Map::from_planes(|ch| &image[ch * h * w..][..h * w], c, h, w, border);
            assert_eq!((map.blocks(), map.data.len()), (2, 2 * (h + 2 * border) * (w + 2 * border) * LANES));
            let mut back = Vec::new();
            map.planes_into(0, c, &mut back);
            assert_eq!(back, image);
            // A block-aligned slice: channels 16..21.
            let mut tail = Vec::new();
            map.planes_into(1, 5, &mut tail);
            assert_eq!(tail, image[16 * h * w..]);
            // The border and the padding channels are zero.
            let inside = |y: usize, x: usize| y >= border && y < h + border && x >= border && x < w + border;
            for (b, block) in map.data.chunks_exact(map.block_len()).enumerate() {
                for (p, pixel) in block.chunks_exact(LANES).enumerate() {
                    let (y, x) = (p / map.wp(), p % map.wp());
                    for (lane, v) in pixel.iter().enumerate() {
                        if !inside(y, x) || b * LANES + lane >= c {
                            assert_eq!(*v, 0.0, "border {border} block {b} pixel ({y}, {x}) lane {lane}");
                        }
                    }
                }
            }
        }
        let planar = Map::planar(&image, c, h, w, 1);
        let mut back = Vec::new();
        planar.planes_into(0, c, &mut back);
        assert_eq!(back, image);
    }
}
