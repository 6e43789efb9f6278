//! The AVX2 register tile: popcount by nibble lookup (`VPSHUFB`), byte counters summed for up to
//! 31 steps, then widened with `VPSADBW`; a 2 × 4 tile of `ymm` byte counters.

use super::engine::{Panel, TileKernel};

/// The AVX2 kernel. A value exists only on CPUs with AVX2.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _checked: (),
}

impl Avx2 {
    /// The kernel, where this CPU runs it.
    pub(crate) fn new() -> Option<Avx2> {
        super::isa::Isa::Avx2
            .is_available()
            .then_some(Avx2 { _checked: () })
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl TileKernel for Avx2 {
    const MR: usize = 2;
    const NR: usize = 4;

    fn panel(self, _: &Panel<'_>, _: &mut [u32], _: usize, _: bool) {
        unreachable!("Avx2 is never available off x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
impl TileKernel for Avx2 {
    const MR: usize = 2;
    const NR: usize = 4;

    fn panel(self, panel: &Panel<'_>, counts: &mut [u32], cstride: usize, accumulate: bool) {
        panel.check(Self::MR, counts, cstride);
        let mut c0 = 0;
        while c0 < panel.nc {
            let nr = Self::NR.min(panel.nc - c0);
            let mut sums = [[0u64; 4]; 2];
            // SAFETY: `self` exists only where the CPU has AVX2 (see `new`), and `check` proved
            // that the panel's rows, so columns `c0 .. c0 + nr`, lie inside their slices.
            unsafe { x86::dispatch(panel, c0, nr, &mut sums) };
            for (r, row) in sums.iter().enumerate().take(panel.mr) {
                let dst = &mut counts[r * cstride + c0..r * cstride + c0 + nr];
                for (d, &s) in dst.iter_mut().zip(row) {
                    *d = if accumulate { *d + s as u32 } else { s as u32 };
                }
            }
            c0 += nr;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::engine::{BitOp, Panel};

    /// Byte counters can take this many steps (8 at most each) before they could overflow.
    const MAX_STEPS: usize = 31;

    /// Runs the tile of columns `c0 .. c0 + nr`, monomorphised for its shape and operation,
    /// writing `sums[r][c]`.
    ///
    /// # Safety
    /// The CPU has AVX2; the panel passed [`Panel::check`] for a kernel of 2 rows, and
    /// `1 ≤ nr ≤ 4`, `c0 + nr ≤ nc`.
    pub(super) unsafe fn dispatch(
        panel: &Panel<'_>,
        c0: usize,
        nr: usize,
        sums: &mut [[u64; 4]; 2],
    ) {
        let tile = Tile {
            panel,
            b: &panel.b[c0 * panel.stride..],
        };
        // SAFETY: forwarded contract.
        unsafe {
            match (panel.op, panel.mr) {
                (BitOp::Xor, 1) => by_nr::<1, true>(&tile, nr, sums),
                (BitOp::Xor, _) => by_nr::<2, true>(&tile, nr, sums),
                (BitOp::And, 1) => by_nr::<1, false>(&tile, nr, sums),
                (BitOp::And, _) => by_nr::<2, false>(&tile, nr, sums),
            }
        }
    }

    /// A tile: the panel's rows of `A` and `B` rows from `b` on.
    struct Tile<'p, 'a> {
        panel: &'p Panel<'a>,
        b: &'a [u64],
    }

    /// [`dispatch`] on the column count.
    ///
    /// # Safety
    /// As [`dispatch`].
    unsafe fn by_nr<const MR: usize, const XOR: bool>(
        tile: &Tile<'_, '_>,
        nr: usize,
        sums: &mut [[u64; 4]; 2],
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match nr {
                1 => kernel::<MR, 1, XOR>(tile, sums),
                2 => kernel::<MR, 2, XOR>(tile, sums),
                3 => kernel::<MR, 3, XOR>(tile, sums),
                _ => kernel::<MR, 4, XOR>(tile, sums),
            }
        }
    }

    /// Row pointers and stride of one side of a tile.
    #[derive(Clone, Copy)]
    struct Rows {
        base: *const u64,
        stride: usize,
    }

    /// The `MR × NR` tile: runs of up to [`MAX_STEPS`] 4-word steps, then the zero-padded tail.
    ///
    /// # Safety
    /// As [`dispatch`], with `mr = MR`, `nr = NR`.
    #[target_feature(enable = "avx2")]
    unsafe fn kernel<const MR: usize, const NR: usize, const XOR: bool>(
        tile: &Tile<'_, '_>,
        sums: &mut [[u64; 4]; 2],
    ) {
        let panel = tile.panel;
        let a = Rows {
            base: panel.a.as_ptr(),
            stride: panel.stride,
        };
        let b = Rows {
            base: tile.b.as_ptr(),
            stride: panel.stride,
        };
        let (w0, w1) = (panel.words.start, panel.words.end);
        let full_end = w0 + (w1 - w0) / 4 * 4;
        let mut wide = [[_mm256_setzero_si256(); NR]; MR];
        let mut w = w0;
        while w < full_end {
            let steps = MAX_STEPS.min((full_end - w) / 4);
            let mut bytes = [[_mm256_setzero_si256(); NR]; MR];
            for s in 0..steps {
                // SAFETY: words `w + 4s .. w + 4s + 4` lie inside every row (`≤ full_end`).
                unsafe { step::<MR, NR, XOR>(&mut bytes, a, b, w + 4 * s) };
            }
            widen(&mut wide, &bytes);
            w += 4 * steps;
        }
        if w < w1 {
            tail::<MR, NR, XOR>(&mut wide, tile, w);
        }
        for (dst, row) in sums.iter_mut().zip(&wide) {
            for (d, v) in dst.iter_mut().zip(row) {
                *d = horizontal_sum(*v);
            }
        }
    }

    /// The last `w1 − w < 4` words, copied into zero-padded rows.
    #[target_feature(enable = "avx2")]
    fn tail<const MR: usize, const NR: usize, const XOR: bool>(
        wide: &mut [[__m256i; NR]; MR],
        tile: &Tile<'_, '_>,
        w: usize,
    ) {
        let len = tile.panel.words.end - w;
        let pad = |rows: &[u64], r: usize| {
            let mut out = [0u64; 4];
            let start = r * tile.panel.stride + w;
            out[..len].copy_from_slice(&rows[start..start + len]);
            out
        };
        let mut ta = [[0u64; 4]; MR];
        let mut tb = [[0u64; 4]; NR];
        for (r, t) in ta.iter_mut().enumerate() {
            *t = pad(tile.panel.a, r);
        }
        for (c, t) in tb.iter_mut().enumerate() {
            *t = pad(tile.b, c);
        }
        let a = Rows {
            base: ta.as_ptr().cast(),
            stride: 4,
        };
        let b = Rows {
            base: tb.as_ptr().cast(),
            stride: 4,
        };
        let mut bytes = [[_mm256_setzero_si256(); NR]; MR];
        // SAFETY: `ta` and `tb` hold 4 words a row.
        unsafe { step::<MR, NR, XOR>(&mut bytes, a, b, 0) };
        widen(wide, &bytes);
    }

    /// One step of 4 words: `bytes[r][c] += popcount(op(a_r, b_c))` byte-wise.
    ///
    /// # Safety
    /// The CPU has AVX2; words `w .. w + 4` lie inside rows `r < MR` of `a` and `c < NR` of `b`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step<const MR: usize, const NR: usize, const XOR: bool>(
        bytes: &mut [[__m256i; NR]; MR],
        a: Rows,
        b: Rows,
        w: usize,
    ) {
        let mut av = [_mm256_setzero_si256(); MR];
        for (r, ar) in av.iter_mut().enumerate() {
            // SAFETY: caller.
            *ar = unsafe { _mm256_loadu_si256(a.base.add(r * a.stride + w).cast()) };
        }
        for c in 0..NR {
            // SAFETY: caller.
            let bv = unsafe { _mm256_loadu_si256(b.base.add(c * b.stride + w).cast()) };
            for (row, &ar) in bytes.iter_mut().zip(&av) {
                let x = if XOR {
                    _mm256_xor_si256(ar, bv)
                } else {
                    _mm256_and_si256(ar, bv)
                };
                row[c] = _mm256_add_epi8(row[c], popcount_bytes(x));
            }
        }
    }

    /// The popcount of every byte of `x`, by nibble lookup.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn popcount_bytes(x: __m256i) -> __m256i {
        let lut = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2,
            3, 3, 4,
        );
        let nibble = _mm256_set1_epi8(0x0f);
        let lo = _mm256_and_si256(x, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), nibble);
        _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi))
    }

    /// Adds the byte counters, summed per 64-bit lane, into the wide counters.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn widen<const MR: usize, const NR: usize>(
        wide: &mut [[__m256i; NR]; MR],
        bytes: &[[__m256i; NR]; MR],
    ) {
        let zero = _mm256_setzero_si256();
        for (wr, br) in wide.iter_mut().zip(bytes) {
            for (w, &b) in wr.iter_mut().zip(br) {
                *w = _mm256_add_epi64(*w, _mm256_sad_epu8(b, zero));
            }
        }
    }

    /// The sum of the four 64-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn horizontal_sum(v: __m256i) -> u64 {
        let s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        (_mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s)) as u64
    }
}
