//! The GEMM micro-kernel: an MR x NR block of output += an MR-row panel (weights; pixels when
//! transposed) times an NR-column panel (input; weights when transposed), over `kc` steps of the
//! reduction. Everything else (packing, blocking, threads, epilogue) is in the driver; only this
//! loop needs SIMD.
//!
//! Three ways to find the rows: the input's at a stride (`strided`, also for a packed left side),
//! at offsets from one base (`shifted`, an implicit im2col), or MR pixels each read at the row's
//! offset from where it lies (`gathered`, transposed).
//!
//! 6 x 16 fits AVX2 exactly: 12 accumulators of 8 lanes, two input loads and one broadcast per
//! step, 15 of the 16 ymm registers. With AVX-512 a row is one register, so 6 accumulators would
//! leave the FMA units waiting on each other's results (4 cycles of latency, 2 units): the
//! reduction's even and odd steps sum into two sets of 6, added at the end. Picked at run time:
//! AVX-512F, else AVX2 + FMA, where the CPU has them, else the portable loop (which the compiler
//! vectorizes for SSE2 or NEON).

/// Output rows (weight panel height).
pub const MR: usize = 6;
/// Output columns (input panel width).
pub const NR: usize = 16;

/// `c[r * ldc + j] (+)= sum_p a[p * MR + r] * b[p * ldb + j]` for r < MR, j < NR; with
/// `accumulate` false, c is overwritten.
///
/// # Safety
/// `a` holds `kc * MR` floats, `b` `kc` rows of `NR` floats at stride `ldb`, and `c` rows `0..MR`
/// of `NR` floats at stride `ldc`; `c` aliases neither input.
pub type Kernel =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, accumulate: bool);

/// As [`Kernel`], with row p of b at `base + offsets[p]` (an implicit im2col: each row a shifted
/// view of a padded input plane).
///
/// # Safety
/// As [`Kernel`], for `offsets` of `kc` entries and `NR` floats at each `base + offsets[p]`.
pub type ShiftedKernel = unsafe fn(
    kc: usize,
    a: *const f32,
    base: *const f32,
    offsets: *const usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
);

/// The transposed GEMM's kernel: c[r * ldc + j] (+)= sum_p x_r[offsets[p]] * b[p * NR + j], where
/// `x_r = rows[r]`: the MR rows of the output are pixels, each read where it lies in the input (in
/// place, or in a padded copy) at GEMM row p's offset, and b is a packed `[kc][NR]` weight panel.
///
/// # Safety
/// `rows` holds MR pointers, each valid at every `offsets[p]` for p < kc; `b` holds `kc * NR`
/// floats, `c` rows `0..MR` of `NR` floats at stride `ldc`, aliasing nothing read.
pub type GatheredKernel = unsafe fn(
    kc: usize,
    rows: &[*const f32; MR],
    offsets: *const usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
);

/// As [`Kernel`] on two adjacent panels of the right side: an MR x 2 NR block of c, the second
/// panel's row p at `b + p * ldb + next`.
///
/// # Safety
/// As [`Kernel`], for both panels, and c rows of `2 * NR` floats.
pub type PairKernel = unsafe fn(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    next: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
);

/// As [`GatheredKernel`] on two adjacent weight panels, the second at `b + next`: an MR x 2 NR
/// block of c.
///
/// # Safety
/// As [`GatheredKernel`], for both panels, and c rows of `2 * NR` floats.
pub type PairGatheredKernel = unsafe fn(
    kc: usize,
    rows: &[*const f32; MR],
    offsets: *const usize,
    b: *const f32,
    next: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
);

/// One instruction set's kernels (see [`Isa`]).
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    pub strided: Kernel,
    pub shifted: ShiftedKernel,
    pub gathered: GatheredKernel,
    /// Kernels for two right-side panels at once, where the CPU has the registers to make that
    /// pay (AVX-512: 12 accumulators, 2 loads and 6 broadcasts per 12 FMAs, where one panel needs
    /// 7 loads per 6). The driver takes panels in pairs when it has them, one at a time otherwise.
    pub pairs: Option<Pairs>,
}

/// See [`Kernels::pairs`]. `shifted` reads each row's second panel NR floats after its first.
#[derive(Clone, Copy, Debug)]
pub struct Pairs {
    pub strided: PairKernel,
    pub shifted: ShiftedKernel,
    pub gathered: PairGatheredKernel,
}

/// The instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F: a row of 16 per register, panels in pairs.
    Avx512,
    /// AVX2 + FMA: a row of 16 in two registers.
    Avx2,
    /// Plain Rust, vectorized by the compiler for the baseline target (SSE2, NEON).
    Portable,
}

impl Isa {
    /// Those this CPU runs, fastest first; `Portable` always, last.
    pub fn supported() -> Vec<Isa> {
        let mut sets = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                sets.push(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                sets.push(Isa::Avx2);
            }
        }
        sets.push(Isa::Portable);
        sets
    }

    /// The set the fast engine uses: the fastest this CPU runs, or the one the `CSP_CPU_ISA`
    /// environment variable names (`avx512`, `avx2` or `portable`) where the CPU runs it (for
    /// comparisons, and for CPUs whose AVX-512 clocks down). Read once.
    pub fn fastest() -> Isa {
        static FASTEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *FASTEST.get_or_init(|| {
            let supported = Isa::supported();
            let named = std::env::var("CSP_CPU_ISA").ok().and_then(|v| Isa::parse(&v));
            match named {
                Some(isa) if supported.contains(&isa) => isa,
                _ => supported[0],
            }
        })
    }

    /// `avx512`, `avx2` or `portable`.
    pub fn parse(name: &str) -> Option<Isa> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "avx512" => Isa::Avx512,
            "avx2" => Isa::Avx2,
            "portable" => Isa::Portable,
            _ => return None,
        })
    }

    /// This set's kernels; None where the CPU lacks the instructions.
    pub fn kernels(self) -> Option<Kernels> {
        if !Isa::supported().contains(&self) {
            return None;
        }
        Some(match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Kernels {
                strided: avx512,
                shifted: avx512_shifted,
                gathered: avx512_gathered,
                pairs: Some(Pairs {
                    strided: avx512_pair,
                    shifted: avx512_shifted_pair,
                    gathered: avx512_gathered_pair,
                }),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                Kernels { strided: avx2_fma, shifted: avx2_fma_shifted, gathered: avx2_fma_gathered, pairs: None }
            }
            _ => PORTABLE,
        })
    }
}

/// The reference loops, on any CPU.
pub const PORTABLE: Kernels =
    Kernels { strided: portable, shifted: portable_shifted, gathered: portable_gathered, pairs: None };

/// The three entry points of one kernel body, `$body(kc, left, right, c, ldc, accumulate)`: they
/// differ only in where step p's rows are, and each is compiled with the attributes given (the
/// target features of its body).
macro_rules! entry_points {
    ($(#[$attr:meta])* $vis:vis $body:ident: $strided:ident, $shifted:ident, $gathered:ident) => {
        /// # Safety
        /// See [`Kernel`]; the CPU must have the target features this is compiled with.
        $(#[$attr])*
        $vis unsafe fn $strided(
            kc: usize,
            a: *const f32,
            b: *const f32,
            ldb: usize,
            c: *mut f32,
            ldc: usize,
            accumulate: bool,
        ) {
            $body(kc, |p, r| a.add(p * MR + r), |p| b.add(p * ldb), c, ldc, accumulate)
        }

        /// # Safety
        /// See [`ShiftedKernel`]; the CPU must have the target features this is compiled with.
        $(#[$attr])*
        $vis unsafe fn $shifted(
            kc: usize,
            a: *const f32,
            base: *const f32,
            offsets: *const usize,
            c: *mut f32,
            ldc: usize,
            accumulate: bool,
        ) {
            $body(kc, |p, r| a.add(p * MR + r), |p| base.add(*offsets.add(p)), c, ldc, accumulate)
        }

        /// # Safety
        /// See [`GatheredKernel`]; the CPU must have the target features this is compiled with.
        $(#[$attr])*
        $vis unsafe fn $gathered(
            kc: usize,
            rows: &[*const f32; MR],
            offsets: *const usize,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            accumulate: bool,
        ) {
            let rows = *rows;
            $body(kc, |p, r| rows[r].add(*offsets.add(p)), |p| b.add(p * NR), c, ldc, accumulate)
        }
    };
}

// The reference loops, also the fallback on CPUs without AVX2 + FMA.
entry_points!(pub portable_body: portable, portable_shifted, portable_gathered);

/// Every kernel's loop: step p multiplies the MR values at `left(p, r)` by the NR at `right(p)`.
#[inline(always)]
unsafe fn portable_body(
    kc: usize,
    left: impl Fn(usize, usize) -> *const f32,
    right: impl Fn(usize) -> *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[0f32; NR]; MR];
    if accumulate {
        for (r, out) in acc.iter_mut().enumerate() {
            out.copy_from_slice(std::slice::from_raw_parts(c.add(r * ldc), NR));
        }
    }
    for p in 0..kc {
        let bp = std::slice::from_raw_parts(right(p), NR);
        for (r, out) in acc.iter_mut().enumerate() {
            let ar = *left(p, r);
            for (v, bv) in out.iter_mut().zip(bp) {
                *v = ar.mul_add(*bv, *v);
            }
        }
    }
    for (r, out) in acc.iter().enumerate() {
        std::slice::from_raw_parts_mut(c.add(r * ldc), NR).copy_from_slice(out);
    }
}

entry_points!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    avx2_body: avx2_fma, avx2_fma_shifted, avx2_fma_gathered
);

/// As [`portable_body`], 8 lanes at a time: 12 accumulators, two loads of the right side and one
/// broadcast of the left per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2_body(
    kc: usize,
    left: impl Fn(usize, usize) -> *const f32,
    right: impl Fn(usize) -> *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm256_setzero_ps(); MR];
    let mut hi = [_mm256_setzero_ps(); MR];
    if accumulate {
        for r in 0..MR {
            lo[r] = _mm256_loadu_ps(c.add(r * ldc));
            hi[r] = _mm256_loadu_ps(c.add(r * ldc + 8));
        }
    }
    for p in 0..kc {
        let b = right(p);
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for r in 0..MR {
            let ar = _mm256_broadcast_ss(&*left(p, r));
            lo[r] = _mm256_fmadd_ps(ar, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(ar, b1, hi[r]);
        }
    }
    for r in 0..MR {
        _mm256_storeu_ps(c.add(r * ldc), lo[r]);
        _mm256_storeu_ps(c.add(r * ldc + 8), hi[r]);
    }
}

entry_points!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    avx512_body: avx512, avx512_shifted, avx512_gathered
);

/// As [`portable_body`], a row of 16 per register: even steps of the reduction into one set of
/// accumulators, odd steps into another (12 independent FMA chains), summed at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn avx512_body(
    kc: usize,
    left: impl Fn(usize, usize) -> *const f32,
    right: impl Fn(usize) -> *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut even = [_mm512_setzero_ps(); MR];
    let mut odd = [_mm512_setzero_ps(); MR];
    if accumulate {
        for (r, sum) in even.iter_mut().enumerate() {
            *sum = _mm512_loadu_ps(c.add(r * ldc));
        }
    }
    let mut p = 0;
    while p + 1 < kc {
        let (b0, b1) = (_mm512_loadu_ps(right(p)), _mm512_loadu_ps(right(p + 1)));
        for r in 0..MR {
            even[r] = _mm512_fmadd_ps(_mm512_set1_ps(*left(p, r)), b0, even[r]);
            odd[r] = _mm512_fmadd_ps(_mm512_set1_ps(*left(p + 1, r)), b1, odd[r]);
        }
        p += 2;
    }
    if p < kc {
        let b0 = _mm512_loadu_ps(right(p));
        for (r, sum) in even.iter_mut().enumerate() {
            *sum = _mm512_fmadd_ps(_mm512_set1_ps(*left(p, r)), b0, *sum);
        }
    }
    for r in 0..MR {
        _mm512_storeu_ps(c.add(r * ldc), _mm512_add_ps(even[r], odd[r]));
    }
}

/// # Safety
/// See [`PairKernel`]; the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_pair(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    next: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    avx512_pair_body(kc, |p, r| a.add(p * MR + r), |p| b.add(p * ldb), next, c, ldc, accumulate)
}

/// # Safety
/// See [`ShiftedKernel`] and [`Pairs`]; the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_shifted_pair(
    kc: usize,
    a: *const f32,
    base: *const f32,
    offsets: *const usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    avx512_pair_body(kc, |p, r| a.add(p * MR + r), |p| base.add(*offsets.add(p)), NR, c, ldc, accumulate)
}

/// # Safety
/// See [`PairGatheredKernel`]; the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_gathered_pair(
    kc: usize,
    rows: &[*const f32; MR],
    offsets: *const usize,
    b: *const f32,
    next: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let rows = *rows;
    avx512_pair_body(kc, |p, r| rows[r].add(*offsets.add(p)), |p| b.add(p * NR), next, c, ldc, accumulate)
}

/// Two panels of 16 columns, one register each, per row: 12 accumulators, each broadcast used twice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn avx512_pair_body(
    kc: usize,
    left: impl Fn(usize, usize) -> *const f32,
    right: impl Fn(usize) -> *const f32,
    next: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm512_setzero_ps(); MR];
    let mut hi = [_mm512_setzero_ps(); MR];
    if accumulate {
        for r in 0..MR {
            lo[r] = _mm512_loadu_ps(c.add(r * ldc));
            hi[r] = _mm512_loadu_ps(c.add(r * ldc + NR));
        }
    }
    for p in 0..kc {
        let b = right(p);
        let (b0, b1) = (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(next)));
        for r in 0..MR {
            let ar = _mm512_set1_ps(*left(p, r));
            lo[r] = _mm512_fmadd_ps(ar, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(ar, b1, hi[r]);
        }
    }
    for r in 0..MR {
        _mm512_storeu_ps(c.add(r * ldc), lo[r]);
        _mm512_storeu_ps(c.add(r * ldc + NR), hi[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Kernels> {
        Isa::supported().into_iter().filter_map(Isa::kernels).collect()
    }

    #[test]
    fn the_dispatched_kernel_matches_the_portable_one() {
        let kc = 37;
        let a: Vec<f32> = (0..kc * MR).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        // Rows of B at a stride wider than NR, as a 1x1 conv's input rows are read in place.
        let ldb = NR + 5;
        let b: Vec<f32> = (0..kc * ldb).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        let ldc = NR + 3;
        for (kernels, accumulate) in all().into_iter().flat_map(|k| [(k, false), (k, true)]) {
            let start: Vec<f32> = (0..MR * ldc).map(|i| i as f32).collect();
            let (mut ours, mut reference) = (start.clone(), start.clone());
            // SAFETY: the buffers have the sizes the kernel contract asks for.
            unsafe {
                (kernels.strided)(kc, a.as_ptr(), b.as_ptr(), ldb, ours.as_mut_ptr(), ldc, accumulate);
                portable(kc, a.as_ptr(), b.as_ptr(), ldb, reference.as_mut_ptr(), ldc, accumulate);
            }
            for r in 0..MR {
                for j in 0..ldc {
                    let (x, y) = (ours[r * ldc + j], reference[r * ldc + j]);
                    if j >= NR {
                        assert_eq!(x, start[r * ldc + j], "column {j} is outside the block");
                    } else {
                        let exact: f32 = (0..kc).map(|p| a[p * MR + r] * b[p * ldb + j]).sum::<f32>()
                            + if accumulate { start[r * ldc + j] } else { 0.0 };
                        assert!((x - y).abs() <= 1e-4 * exact.abs().max(1.0), "{r},{j}: {x} vs {y}");
                        assert!((x - exact).abs() <= 1e-3 * exact.abs().max(1.0), "{r},{j}: {x} vs {exact}");
                    }
                }
            }
        }
    }

    #[test]
    fn gathered_pixels_read_what_the_rows_and_offsets_name() {
        let kc = 29;
        let x: Vec<f32> = (0..300).map(|i| ((i * 7 % 17) as f32 - 8.0) / 4.0).collect();
        let b: Vec<f32> = (0..kc * NR).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        // Pixels scattered over the input, GEMM rows at offsets in no particular order.
        let starts = [0usize, 3, 4, 40, 41, 97];
        let offsets: Vec<usize> = (0..kc).map(|p| (p * 61) % 190).collect();
        let rows: [*const f32; MR] = starts.map(|s| x[s..].as_ptr());
        let ldc = NR + 2;
        for kernels in all() {
            for accumulate in [false, true] {
                let mut ours: Vec<f32> = (0..MR * ldc).map(|i| i as f32).collect();
                let start = ours.clone();
                // SAFETY: every start + offset is inside x; c has MR rows of ldc.
                unsafe {
                    (kernels.gathered)(kc, &rows, offsets.as_ptr(), b.as_ptr(), ours.as_mut_ptr(), ldc, accumulate)
                };
                for r in 0..MR {
                    for j in 0..ldc {
                        let got = ours[r * ldc + j];
                        if j >= NR {
                            assert_eq!(got, start[r * ldc + j], "column {j} is outside the block");
                            continue;
                        }
                        let want: f32 = (0..kc).map(|p| x[starts[r] + offsets[p]] * b[p * NR + j]).sum::<f32>()
                            + if accumulate { start[r * ldc + j] } else { 0.0 };
                        assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{r},{j}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn shifted_rows_read_what_the_offsets_name() {
        let (kc, ldc) = (23, NR);
        let a: Vec<f32> = (0..kc * MR).map(|i| ((i * 3 % 7) as f32 - 3.0) / 2.0).collect();
        let b: Vec<f32> = (0..200 + NR).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        // Rows in no particular order, overlapping, as shifted views of one plane are.
        let offsets: Vec<usize> = (0..kc).map(|p| (p * 37) % 200).collect();
        let gathered: Vec<f32> = offsets.iter().flat_map(|&o| b[o..o + NR].to_vec()).collect();
        for kernels in all() {
            let (mut ours, mut reference) = (vec![0f32; MR * ldc], vec![0f32; MR * ldc]);
            // SAFETY: every offset leaves NR floats in b; the other buffers fit the contract.
            unsafe {
                (kernels.shifted)(kc, a.as_ptr(), b.as_ptr(), offsets.as_ptr(), ours.as_mut_ptr(), ldc, false);
                portable(kc, a.as_ptr(), gathered.as_ptr(), NR, reference.as_mut_ptr(), ldc, false);
            }
            for (x, y) in ours.iter().zip(&reference) {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn pair_kernels_compute_two_panels_as_the_portable_kernel_does_one_at_a_time() {
        let (ldc, next) = (2 * NR + 3, 40 * NR + 7);
        let x: Vec<f32> = (0..64 * (2 * NR + 1) + next + 2 * NR).map(|i| ((i * 7 % 17) as f32 - 8.0) / 4.0).collect();
        let offsets: Vec<usize> = (0..64).map(|p| (p * 61) % 390).collect();
        let starts = [0usize, 3, 4, 40, 41, 97];
        let rows: [*const f32; MR] = starts.map(|s| x[s..].as_ptr());
        let a: Vec<f32> = (0..64 * MR).map(|i| ((i * 3 % 7) as f32 - 3.0) / 2.0).collect();
        let pairs: Vec<Pairs> = all().into_iter().filter_map(|k| k.pairs).collect();
        // Odd and even lengths, one step, and rows read at a stride wider than two panels.
        for (kc, accumulate) in [(1, false), (2, true), (37, false), (64, true)] {
            let start: Vec<f32> = (0..MR * ldc).map(|i| i as f32 / 8.0).collect();
            let mut want = [start.clone(), start.clone(), start.clone()];
            // SAFETY: every read stays inside x and a; c has MR rows of ldc >= 2 NR.
            unsafe {
                for half in 0..2 {
                    let (c, second) = (want[0].as_mut_ptr().add(half * NR), half * next);
                    portable(kc, a.as_ptr(), x.as_ptr().add(second), 2 * NR + 1, c, ldc, accumulate);
                    let c = want[1].as_mut_ptr().add(half * NR);
                    portable_shifted(kc, a.as_ptr(), x.as_ptr().add(half * NR), offsets.as_ptr(), c, ldc, accumulate);
                    let c = want[2].as_mut_ptr().add(half * NR);
                    portable_gathered(kc, &rows, offsets.as_ptr(), x.as_ptr().add(second), c, ldc, accumulate);
                }
            }
            for p in &pairs {
                let mut got = [start.clone(), start.clone(), start.clone()];
                // SAFETY: as above.
                unsafe {
                    (p.strided)(kc, a.as_ptr(), x.as_ptr(), 2 * NR + 1, next, got[0].as_mut_ptr(), ldc, accumulate);
                    (p.shifted)(kc, a.as_ptr(), x.as_ptr(), offsets.as_ptr(), got[1].as_mut_ptr(), ldc, accumulate);
                    (p.gathered)(kc, &rows, offsets.as_ptr(), x.as_ptr(), next, got[2].as_mut_ptr(), ldc, accumulate);
                }
                for (kernel, (got, want)) in got.iter().zip(&want).enumerate() {
                    for (i, (g, w)) in got.iter().zip(want).enumerate() {
                        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "kernel {kernel} kc {kc} at {i}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
