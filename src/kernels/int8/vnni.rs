//! The int8 products on AVX-512 VNNI. `VPDPBUSD` multiplies unsigned by signed bytes, so `a`
//! enters as `a + 128` (its sign bit flipped) and `128 · Σ_t b[j, t]` is taken off each result
//! once; the arithmetic wraps modulo 2^32, and the result, which fits in an `i32`, is exact.
//!
//! `b` is repacked into panels of [`PANEL`] rows, four consecutive values of each row side by
//! side ([`Panels`]), so that one 64-byte load holds four values of 16 rows. Each step then
//! broadcasts four values of a row of `a` and adds their products with 16 rows of `b` into 16
//! sums at once: [`ROWS`] rows of `a` against a panel keep `2·ROWS` registers of sums, with no
//! horizontal reduction, two loads of `b` for every `2·ROWS` `VPDPBUSD`.

use super::CheckedInt8;

/// Rows of `b` in a panel: two registers of 16 sums.
const PANEL: usize = 32;
/// Rows of `a` multiplied against a panel at a time.
const ROWS: usize = 8;

/// `b` `[n, k]` in panels of [`PANEL`] rows, and each row's offset `128 · Σ_t b[j, t]`
/// (wrapping; zero past row `n`, `PANEL · ⌈n / PANEL⌉` in all). Panel `p`, group `g` of four
/// values, row `r`, value `q`: byte `((p·G + g)·PANEL + r)·4 + q` is `b[(PANEL·p + r)·k + 4g + q]`,
/// `G = ⌈k/4⌉`, and 0 past the matrix.
pub(super) struct Panels {
    n: usize,
    k: usize,
    panels: Vec<i8>,
    offsets: Vec<i32>,
}

impl Panels {
    /// `b` `[n, k]` (length checked by the caller) in panels.
    pub(super) fn new(b: &[i8], n: usize, k: usize) -> Panels {
        let groups = k.div_ceil(4);
        let panel_count = n.div_ceil(PANEL);
        let mut panels = vec![0i8; panel_count * groups * PANEL * 4];
        let mut offsets = vec![0i32; panel_count * PANEL];
        for (j, row) in b.chunks_exact(k).enumerate().take(n) {
            let (p, r) = (j / PANEL, j % PANEL);
            let at = |g: usize| ((p * groups + g) * PANEL + r) * 4;
            let quads = row.chunks_exact(4);
            let tail = quads.remainder();
            for (g, quad) in quads.enumerate() {
                // Four bytes of a known length: one move, not a call of `memmove`.
                let quad: &[i8; 4] = quad.try_into().expect("chunks of four");
                let to: &mut [i8; 4] = (&mut panels[at(g)..at(g) + 4]).try_into().expect("four");
                *to = *quad;
            }
            if !tail.is_empty() {
                let start = at(k / 4);
                panels[start..start + tail.len()].copy_from_slice(tail);
            }
            offsets[j] = row
                .iter()
                .map(|&v| i32::from(v))
                .sum::<i32>()
                .wrapping_mul(128);
        }
        Panels {
            n,
            k,
            panels,
            offsets,
        }
    }
}

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` with `b` in `panels` (lengths checked by the
/// caller).
pub(super) fn gemm_accumulate(
    isa: CheckedInt8,
    a: &[i8],
    panels: &Panels,
    m: usize,
    out: &mut [i32],
) {
    assert_eq!(
        isa.isa(),
        super::Int8Isa::Avx512Vnni,
        "the VNNI int8 kernel needs AVX-512 VNNI"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let Panels {
            n,
            k,
            panels,
            offsets,
        } = panels;
        // SAFETY: `isa` proves the CPU has AVX-512 F, BW and VNNI; `panels` and `offsets` are
        // `Panels::new`'s for `[n, k]`, and the caller checked `a` `[m, k]` and `out` `[m, n]`.
        unsafe { x86::gemm(a, panels, offsets, m, *n, *k, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "AVX-512 is never available off x86-64 ({a:p}, {m}, {out:p}, {})",
        panels.n
    );
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PANEL, ROWS};

    /// `out += a · bᵀ` from `b`'s panels and offsets ([`super::Panels`]): blocks of
    /// [`ROWS`] rows of `a`, then of 4, then single rows.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI; `a` must hold `[m, k]`, `out` `[m, n]`, and
    /// `panels`, `offsets` be those of `Panels::new(b, n, k)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemm(
        a: &[i8],
        panels: &[i8],
        offsets: &[i32],
        m: usize,
        n: usize,
        k: usize,
        out: &mut [i32],
    ) {
        let mut i = 0;
        // SAFETY (each block): the rows `i..i + R` exist, as the caller's lengths promise.
        while m - i >= ROWS {
            unsafe { block::<ROWS>(a, i, panels, offsets, n, k, out) };
            i += ROWS;
        }
        if m - i >= 4 {
            unsafe { block::<4>(a, i, panels, offsets, n, k, out) };
            i += 4;
        }
        while i < m {
            unsafe { block::<1>(a, i, panels, offsets, n, k, out) };
            i += 1;
        }
    }

    /// Four values of row `row` of `a` from `4·group`, as one little-endian word with each
    /// byte's sign bit flipped (`v + 128` as an unsigned byte); values past the row's end are
    /// 0 (their products meet the panels' zero padding).
    ///
    /// # Safety
    /// Row `row` of `a` `[.., k]` must exist and `4·group < k`.
    #[inline(always)]
    unsafe fn quad(a: &[i8], row: usize, k: usize, group: usize) -> i32 {
        let start = row * k + 4 * group;
        let word = if 4 * group + 4 <= k {
            // SAFETY: the four bytes lie within the row.
            unsafe { std::ptr::read_unaligned(a.as_ptr().add(start).cast::<i32>()) }
        } else {
            let mut bytes = [0u8; 4];
            for (q, byte) in bytes.iter_mut().enumerate().take(k - 4 * group) {
                *byte = a[start + q] as u8;
            }
            i32::from_le_bytes(bytes)
        };
        word ^ 0x8080_8080_u32 as i32
    }

    /// `out[i, ..] += a[i, ..] · bᵀ` for the `R` rows from `first`, every panel in turn.
    ///
    /// # Safety
    /// As [`gemm`], with rows `first..first + R` of `a`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(
        a: &[i8],
        first: usize,
        panels: &[i8],
        offsets: &[i32],
        n: usize,
        k: usize,
        out: &mut [i32],
    ) {
        let groups = k.div_ceil(4);
        let panel_bytes = groups * PANEL * 4;
        for (p, panel) in panels.chunks_exact(panel_bytes).enumerate() {
            let mut sums = [[_mm512_setzero_si512(); 2]; R];
            for (g, step) in panel.chunks_exact(PANEL * 4).enumerate() {
                // SAFETY: a step holds 128 bytes; rows `first..first + R` exist and `4g < k`.
                unsafe {
                    let low = _mm512_loadu_si512(step.as_ptr().cast());
                    let high = _mm512_loadu_si512(step.as_ptr().add(64).cast());
                    for (r, sums) in sums.iter_mut().enumerate() {
                        let va = _mm512_set1_epi32(quad(a, first + r, k, g));
                        sums[0] = _mm512_dpbusd_epi32(sums[0], va, low);
                        sums[1] = _mm512_dpbusd_epi32(sums[1], va, high);
                    }
                }
            }
            for (r, sums) in sums.iter().enumerate() {
                for (half, &sum) in sums.iter().enumerate() {
                    let j = p * PANEL + half * 16;
                    if j >= n {
                        continue;
                    }
                    let lanes = (n - j).min(16);
                    let mask: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
                    // SAFETY: `offsets` holds whole panels; the mask keeps `out`'s accesses
                    // within row `first + r`'s `n` values.
                    unsafe {
                        let offset = _mm512_loadu_si512(offsets.as_ptr().add(j).cast());
                        let at = out.as_mut_ptr().add((first + r) * n + j);
                        let old = _mm512_maskz_loadu_epi32(mask, at);
                        let new = _mm512_add_epi32(old, _mm512_sub_epi32(sum, offset));
                        _mm512_mask_storeu_epi32(at, mask, new);
                    }
                }
            }
        }
    }
}
