//! The int8 products on AVX2. `VPMADDWD` multiplies pairs of `i16` and adds each pair into an
//! `i32` lane; every `i8` fits an `i16`, and a pair's sum (at most `2 · 128 · 128`) an `i32`, so
//! the sums are exact.
//!
//! `b` is laid out once in panels of [`PANEL`] rows, two consecutive values of each row side by
//! side as `i16` ([`Panels`]), so that one 32-byte load holds a pair of values of 8 rows. The
//! rows of `a` are widened the same way, a block of [`ROWS`] rows at a time, into one `i32` word
//! per pair. Each step broadcasts a row's pair and adds its products with 16 rows of `b` into 16
//! sums at once: `2·ROWS` registers of sums, no horizontal reduction, two loads of `b` for
//! every `2·ROWS` `VPMADDWD`.

use super::CheckedInt8;

/// Rows of `b` in a panel: two registers of 8 sums.
const PANEL: usize = 16;
/// Rows of `a` multiplied against a panel at a time.
const ROWS: usize = 4;

/// `b` `[n, k]` in panels of [`PANEL`] rows: panel `p`, pair `g`, row `r`, value `q` is
/// `i16` number `((p·G + g)·PANEL + r)·2 + q`, which holds `b[(PANEL·p + r)·k + 2g + q]`,
/// `G = ⌈k/2⌉`, and 0 past the matrix.
pub(super) struct Panels {
    n: usize,
    k: usize,
    values: Vec<i16>,
}

impl Panels {
    /// `b` `[n, k]` (length checked by the caller) in panels.
    pub(super) fn new(b: &[i8], n: usize, k: usize) -> Panels {
        let pairs = k.div_ceil(2);
        let mut values = vec![0i16; n.div_ceil(PANEL) * pairs * PANEL * 2];
        for (j, row) in b.chunks_exact(k).enumerate().take(n) {
            let (p, r) = (j / PANEL, j % PANEL);
            for (t, &value) in row.iter().enumerate() {
                values[((p * pairs + t / 2) * PANEL + r) * 2 + t % 2] = i16::from(value);
            }
        }
        Panels { n, k, values }
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
        super::Int8Isa::Avx2,
        "the AVX2 int8 kernel needs AVX2"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let (n, k) = (panels.n, panels.k);
        let mut words = vec![0i32; ROWS * k.div_ceil(2)];
        let mut i = 0;
        while i < m {
            let rows = ROWS.min(m - i);
            widen_rows(&a[i * k..(i + rows) * k], k, &mut words);
            // SAFETY: `isa` proves the CPU has AVX2; `words` holds `ROWS` widened rows, the
            // panels are `Panels::new`'s for `[n, k]`, and the caller checked `out` `[m, n]`.
            unsafe { x86::block(&words, rows, &panels.values, n, k, &mut out[i * n..]) };
            i += rows;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "AVX2 is never available off x86-64 ({a:p}, {m}, {out:p}, {})",
        panels.n
    );
}

/// The rows of `a` (`k` values each) as `i32` words of two `i16`, pair `g` of row `r` at
/// `words[r·G + g]` (low half value `2g`, high half value `2g + 1`, 0 past the row's end).
fn widen_rows(a: &[i8], k: usize, words: &mut [i32]) {
    let pairs = k.div_ceil(2);
    for (row, words) in a.chunks_exact(k).zip(words.chunks_exact_mut(pairs)) {
        for (pair, word) in row.chunks(2).zip(words.iter_mut()) {
            let low = i16::from(pair[0]) as u16;
            let high = pair.get(1).map_or(0, |&v| i16::from(v) as u16);
            *word = (u32::from(low) | (u32::from(high) << 16)) as i32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::PANEL;

    /// `out[r·n + j] += a_r · b_j` for the `rows` widened rows of `a` in `words` (each
    /// `⌈k/2⌉` words) against every panel of `b`.
    ///
    /// # Safety
    /// The CPU must have AVX2; `words` must hold `rows ≤ ROWS` widened rows of `k` values,
    /// `panels` be `Panels::new`'s values for `[n, k]`, and `out` hold `rows` rows of `n`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block(
        words: &[i32],
        rows: usize,
        panels: &[i16],
        n: usize,
        k: usize,
        out: &mut [i32],
    ) {
        // SAFETY: as the caller promises; each arm reads `R` rows of `words`.
        unsafe {
            match rows {
                4 => block_of::<4>(words, panels, n, k, out),
                3 => block_of::<3>(words, panels, n, k, out),
                2 => block_of::<2>(words, panels, n, k, out),
                _ => block_of::<1>(words, panels, n, k, out),
            }
        }
    }

    /// [`block`] for `R` rows.
    ///
    /// # Safety
    /// As [`block`], with `rows = R`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block_of<const R: usize>(
        words: &[i32],
        panels: &[i16],
        n: usize,
        k: usize,
        out: &mut [i32],
    ) {
        let pairs = k.div_ceil(2);
        let panel_len = pairs * PANEL * 2;
        for (p, panel) in panels.chunks_exact(panel_len).enumerate() {
            let mut sums = [[_mm256_setzero_si256(); 2]; R];
            for (g, step) in panel.chunks_exact(PANEL * 2).enumerate() {
                // SAFETY: a step holds 32 `i16` (64 bytes); row `r`'s pair `g` exists.
                unsafe {
                    let low = _mm256_loadu_si256(step.as_ptr().cast());
                    let high = _mm256_loadu_si256(step.as_ptr().add(16).cast());
                    for (r, sums) in sums.iter_mut().enumerate() {
                        let pair = _mm256_set1_epi32(*words.get_unchecked(r * pairs + g));
                        sums[0] = _mm256_add_epi32(sums[0], _mm256_madd_epi16(pair, low));
                        sums[1] = _mm256_add_epi32(sums[1], _mm256_madd_epi16(pair, high));
                    }
                }
            }
            for (r, sums) in sums.iter().enumerate() {
                for (half, &sum) in sums.iter().enumerate() {
                    let j = p * PANEL + half * 8;
                    if j >= n {
                        continue;
                    }
                    let row = &mut out[r * n + j..r * n + n.min(j + 8)];
                    if row.len() == 8 {
                        // SAFETY: the row holds 8 values.
                        unsafe {
                            let at = row.as_mut_ptr().cast();
                            let old = _mm256_loadu_si256(at);
                            _mm256_storeu_si256(at, _mm256_add_epi32(old, sum));
                        }
                    } else {
                        let mut lanes = [0i32; 8];
                        // SAFETY: `lanes` holds 8 values.
                        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
                        for (value, lane) in row.iter_mut().zip(lanes) {
                            *value = value.wrapping_add(lane);
                        }
                    }
                }
            }
        }
    }
}
