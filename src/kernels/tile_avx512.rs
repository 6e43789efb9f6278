//! The AVX-512 register tile: `VPXORQ`/`VPANDQ` + `VPOPCNTQ` + `VPADDQ` on 512-bit vectors, with a
//! 3 × 8 tile of `zmm` accumulators (24 of the 32 registers, plus 3 rows of `A` and one of `B`).

use super::engine::{Panel, TileKernel};

/// The AVX-512 kernel. A value exists only on CPUs with AVX-512F/BW/VL and VPOPCNTDQ.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512 {
    _checked: (),
}

impl Avx512 {
    /// The kernel, where this CPU runs it (AVX-512F/BW/VL and VPOPCNTDQ).
    pub(crate) fn new() -> Option<Avx512> {
        super::isa::Isa::Avx512
            .is_available()
            .then_some(Avx512 { _checked: () })
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl TileKernel for Avx512 {
    const MR: usize = 3;
    const NR: usize = 8;

    fn panel(self, _: &Panel<'_>, _: &mut [u32], _: usize, _: bool) {
        unreachable!("Avx512 is never available off x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
impl TileKernel for Avx512 {
    const MR: usize = 3;
    const NR: usize = 8;

    fn panel(self, panel: &Panel<'_>, counts: &mut [u32], cstride: usize, accumulate: bool) {
        panel.check(Self::MR, counts, cstride);
        let args = Args::new(panel, counts, cstride, accumulate);
        // SAFETY: `self` exists only where the CPU has the target features (see `new`), and
        // `check` proved that the panel's rows and counts lie inside their slices.
        unsafe { x86::dispatch(panel.op, panel.mr, panel.nc, &args) }
    }
}

/// A panel and its counts as raw pointers, for the AVX-512 tiles (this one and
/// [`super::tile_avx512_columns`]); each kernel's `dispatch` states what they must point to.
#[cfg(target_arch = "x86_64")]
pub(super) struct Args {
    pub a: *const u64,
    pub b: *const u64,
    pub stride: usize,
    pub w0: usize,
    pub w1: usize,
    pub counts: *mut u32,
    pub cstride: usize,
    pub accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
impl Args {
    /// The pointers of `panel` and `counts` (checked by the caller before they are used).
    pub(super) fn new(
        panel: &Panel<'_>,
        counts: &mut [u32],
        cstride: usize,
        accumulate: bool,
    ) -> Args {
        Args {
            a: panel.a.as_ptr(),
            b: panel.b.as_ptr(),
            stride: panel.stride,
            w0: panel.words.start,
            w1: panel.words.end,
            counts: counts.as_mut_ptr(),
            cstride,
            accumulate,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::engine::BitOp;
    use super::Args;

    /// Covers the panel with tiles monomorphised for its row count and operation.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VL and VPOPCNTDQ; `1 ≤ mr ≤ 3`; rows `r < mr` of `a` and `c < nc` of
    /// `b` (`stride` words apart) hold `w1 ≥ w0` words; `counts` rows `r < mr` (`cstride` apart)
    /// hold `nc` values.
    pub(super) unsafe fn dispatch(op: BitOp, mr: usize, nc: usize, args: &Args) {
        // SAFETY: forwarded contract.
        unsafe {
            match (op, mr) {
                (BitOp::Xor, 1) => panel::<1, true>(nc, args),
                (BitOp::Xor, 2) => panel::<2, true>(nc, args),
                (BitOp::Xor, _) => panel::<3, true>(nc, args),
                (BitOp::And, 1) => panel::<1, false>(nc, args),
                (BitOp::And, 2) => panel::<2, false>(nc, args),
                (BitOp::And, _) => panel::<3, false>(nc, args),
            }
        }
    }

    /// Full `MR × 8` tiles over the panel's columns, then one narrower tile for the rest.
    ///
    /// # Safety
    /// As [`dispatch`], with `mr = MR`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
    unsafe fn panel<const MR: usize, const XOR: bool>(nc: usize, args: &Args) {
        let mut c0 = 0;
        while c0 + 8 <= nc {
            // SAFETY: columns `c0 .. c0 + 8` lie inside the panel (caller).
            unsafe { kernel::<MR, 8, XOR>(args, c0) };
            c0 += 8;
        }
        // SAFETY: columns `c0 .. nc` lie inside the panel (caller).
        unsafe {
            match nc - c0 {
                0 => {}
                1 => kernel::<MR, 1, XOR>(args, c0),
                2 => kernel::<MR, 2, XOR>(args, c0),
                3 => kernel::<MR, 3, XOR>(args, c0),
                4 => kernel::<MR, 4, XOR>(args, c0),
                5 => kernel::<MR, 5, XOR>(args, c0),
                6 => kernel::<MR, 6, XOR>(args, c0),
                _ => kernel::<MR, 7, XOR>(args, c0),
            }
        }
    }

    /// The `MR × NR` tile at column `c0`: full 8-word steps (the first one initialising the
    /// accumulators) and a masked 8-word step for a tail of 5–7 words, then the reduction; a tail
    /// of 1–4 words instead folds the accumulators to 256 bits and takes a masked 4-word step,
    /// which halves its cost and that of the reduction.
    ///
    /// # Safety
    /// As [`dispatch`], with `mr = MR` and columns `c0 .. c0 + NR` inside the panel.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
    unsafe fn kernel<const MR: usize, const NR: usize, const XOR: bool>(args: &Args, c0: usize) {
        // SAFETY: column `c0` is inside the panel (caller).
        let b = unsafe { args.b.add(c0 * args.stride) };
        let mut acc = [[_mm512_setzero_si512(); NR]; MR];
        let mut w = args.w0;
        // Single rows (matrix-vector products) stream `B` from memory; the peeled first step only
        // pays off for taller tiles.
        if MR > 1 && w + 8 <= args.w1 {
            // SAFETY: words `w .. w + 8` lie inside every row (`w + 8 ≤ w1`).
            unsafe { step::<MR, NR, XOR, false, true>(&mut acc, args, b, w, 0xFF) };
            w += 8;
        }
        while w + 8 <= args.w1 {
            // SAFETY: words `w .. w + 8` lie inside every row (`w + 8 ≤ w1`).
            unsafe { step::<MR, NR, XOR, false, false>(&mut acc, args, b, w, 0xFF) };
            w += 8;
        }
        if args.w1 - w > 4 {
            let mask = (1u8 << (args.w1 - w)) - 1;
            // SAFETY: the masked loads touch only words `w .. w1`, inside every row.
            unsafe { step::<MR, NR, XOR, true, false>(&mut acc, args, b, w, mask) };
            w = args.w1;
        }
        if w == args.w1 {
            for (r, row) in acc.iter().enumerate() {
                let sums = _mm512_cvtepi64_epi32(reduce8_512(row));
                // SAFETY: counts row `r < MR` holds columns `c0 .. c0 + NR`.
                unsafe { store_row::<NR>(sums, args, r, c0) };
            }
            return;
        }
        let mut half = [[_mm256_setzero_si256(); NR]; MR];
        for (h, a) in half.iter_mut().zip(&acc) {
            for (h, &a) in h.iter_mut().zip(a) {
                *h = _mm256_add_epi64(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
            }
        }
        let mask = (1u8 << (args.w1 - w)) - 1;
        // SAFETY: the masked loads touch only words `w .. w1` (at most 4), inside every row.
        unsafe { step4::<MR, NR, XOR>(&mut half, args, b, w, mask) };
        for (r, row) in half.iter().enumerate() {
            // SAFETY: counts row `r < MR` holds columns `c0 .. c0 + NR`.
            unsafe { store_row::<NR>(reduce8_256(row), args, r, c0) };
        }
    }

    /// One step of 8 words: `acc[r][c] += popcount(op(a_r, b_c))` lane-wise (or `=` when
    /// `INIT`), with `b` the tile's first row of `B`.
    ///
    /// # Safety
    /// The CPU has the features; the 8 words at `w` (only those in `mask` when `MASKED`) lie inside
    /// rows `r < MR` of `args.a` and `c < NR` of `b`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
    unsafe fn step<
        const MR: usize,
        const NR: usize,
        const XOR: bool,
        const MASKED: bool,
        const INIT: bool,
    >(
        acc: &mut [[__m512i; NR]; MR],
        args: &Args,
        b: *const u64,
        w: usize,
        mask: __mmask8,
    ) {
        let mut a = [_mm512_setzero_si512(); MR];
        for (r, ar) in a.iter_mut().enumerate() {
            // SAFETY: row `r` holds words `w ..` (caller).
            *ar = unsafe { load::<MASKED>(args.a.add(r * args.stride + w), mask) };
        }
        for c in 0..NR {
            // SAFETY: row `c` holds words `w ..` (caller).
            let b = unsafe { load::<MASKED>(b.add(c * args.stride + w), mask) };
            for (row, &ar) in acc.iter_mut().zip(&a) {
                let x = if XOR {
                    _mm512_xor_si512(ar, b)
                } else {
                    _mm512_and_si512(ar, b)
                };
                let pop = _mm512_popcnt_epi64(x);
                row[c] = if INIT {
                    pop
                } else {
                    _mm512_add_epi64(row[c], pop)
                };
            }
        }
    }

    /// One masked step of at most 4 words on 256-bit accumulators: `acc[r][c] +=
    /// popcount(op(a_r, b_c))` lane-wise over the words in `mask`.
    ///
    /// # Safety
    /// The CPU has the features; the words at `w` in `mask` lie inside rows `r < MR` of `args.a`
    /// and `c < NR` of `b`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
    unsafe fn step4<const MR: usize, const NR: usize, const XOR: bool>(
        acc: &mut [[__m256i; NR]; MR],
        args: &Args,
        b: *const u64,
        w: usize,
        mask: __mmask8,
    ) {
        let mut a = [_mm256_setzero_si256(); MR];
        for (r, ar) in a.iter_mut().enumerate() {
            // SAFETY: row `r` holds the masked words at `w` (caller).
            *ar = unsafe { _mm256_maskz_loadu_epi64(mask, args.a.add(r * args.stride + w).cast()) };
        }
        for c in 0..NR {
            // SAFETY: row `c` holds the masked words at `w` (caller).
            let b = unsafe { _mm256_maskz_loadu_epi64(mask, b.add(c * args.stride + w).cast()) };
            for (row, &ar) in acc.iter_mut().zip(&a) {
                let x = if XOR {
                    _mm256_xor_si256(ar, b)
                } else {
                    _mm256_and_si256(ar, b)
                };
                row[c] = _mm256_add_epi64(row[c], _mm256_popcnt_epi64(x));
            }
        }
    }

    /// Loads 8 words (only the lanes in `mask`, the rest zero, when `MASKED`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; the loaded words lie inside an allocation.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load<const MASKED: bool>(p: *const u64, mask: __mmask8) -> __m512i {
        // SAFETY: caller.
        unsafe {
            if MASKED {
                _mm512_maskz_loadu_epi64(mask, p.cast())
            } else {
                _mm512_loadu_si512(p.cast())
            }
        }
    }

    /// Stores (or adds) the `NR` counts `sums` of row `r` at column `c0`.
    ///
    /// # Safety
    /// The CPU has AVX2; counts row `r` holds columns `c0 .. c0 + NR`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store_row<const NR: usize>(sums: __m256i, args: &Args, r: usize, c0: usize) {
        // SAFETY: counts row `r` holds columns `c0 .. c0 + NR` (caller).
        let dst = unsafe { args.counts.add(r * args.cstride + c0) };
        if NR == 8 {
            // SAFETY: 8 values at `dst` (caller).
            unsafe {
                let dst = dst.cast::<__m256i>();
                let sums = if args.accumulate {
                    _mm256_add_epi32(sums, _mm256_loadu_si256(dst))
                } else {
                    sums
                };
                _mm256_storeu_si256(dst, sums);
            }
        } else {
            let mut tmp = [0u32; 8];
            // SAFETY: `tmp` holds 8 values.
            unsafe { _mm256_storeu_si256(tmp.as_mut_ptr().cast(), sums) };
            for (c, &s) in tmp.iter().enumerate().take(NR) {
                // SAFETY: `c < NR` values at `dst` (caller).
                unsafe {
                    let d = dst.add(c);
                    *d = if args.accumulate { *d + s } else { s };
                }
            }
        }
    }

    /// 32-bit lane `i` of the result is the sum of the 4 (64-bit) lanes of `x[i]` (`x[i]` zero
    /// for `i ≥ NR`), truncated to 32 bits (a transpose-and-add tree).
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn reduce8_256<const NR: usize>(row: &[__m256i; NR]) -> __m256i {
        let mut x = [_mm256_setzero_si256(); 8];
        x[..NR].copy_from_slice(row);
        // 128-bit lane `l` of `pair(p, q)` = [p lanes 2l + (2l+1), q lanes 2l + (2l+1)].
        let pair = |p: __m256i, q: __m256i| {
            _mm256_add_epi64(_mm256_unpacklo_epi64(p, q), _mm256_unpackhi_epi64(p, q))
        };
        // Adds the two 128-bit lanes of each input: [p.0 + p.1, q.0 + q.1].
        let fold = |p: __m256i, q: __m256i| {
            _mm256_add_epi64(
                _mm256_permute2x128_si256::<0x20>(p, q),
                _mm256_permute2x128_si256::<0x31>(p, q),
            )
        };
        let lo = fold(pair(x[0], x[1]), pair(x[2], x[3]));
        let hi = fold(pair(x[4], x[5]), pair(x[6], x[7]));
        // The low halves of the 64-bit sums: 32-bit elements 0, 2, … of `lo`, then of `hi`.
        let even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        _mm256_permutex2var_epi32(lo, even, hi)
    }

    /// Lane `i` of the result is the sum of the 8 lanes of `x[i]` (`x[i]` zero for `i ≥ NR`; a
    /// transpose-and-add tree).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce8_512<const NR: usize>(row: &[__m512i; NR]) -> __m512i {
        let mut x = [_mm512_setzero_si512(); 8];
        x[..NR].copy_from_slice(row);
        // Lane pairs: 128-bit lane `l` of `pair(x0, x1)` = [x0 lanes 2l+(2l+1), x1 lanes ...].
        let pair = |p: __m512i, q: __m512i| {
            _mm512_add_epi64(_mm512_unpacklo_epi64(p, q), _mm512_unpackhi_epi64(p, q))
        };
        // Adds 128-bit lanes (0, 1) and (2, 3) of each input into [p.01, p.23, q.01, q.23].
        let fold = |p: __m512i, q: __m512i| {
            _mm512_add_epi64(
                _mm512_shuffle_i64x2::<0b10_00_10_00>(p, q),
                _mm512_shuffle_i64x2::<0b11_01_11_01>(p, q),
            )
        };
        let y01 = pair(x[0], x[1]);
        let y23 = pair(x[2], x[3]);
        let y45 = pair(x[4], x[5]);
        let y67 = pair(x[6], x[7]);
        fold(fold(y01, y23), fold(y45, y67))
    }
}
