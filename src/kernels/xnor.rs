//! XNOR-popcount GEMM of packed sign rows.
//!
//! Register-tiled popcount kernels (3 × 8 `zmm` accumulators on AVX-512, 2 × 4 on AVX2 and
//! portable), `B` blocked to stay in L2, `k` blocked to keep the `A` rows of a tile in L1, and
//! rayon tasks over rows and columns of the output (columns too, so `m = 1` spreads over threads).
//! From 128 rows of `A` on, AVX-512 runs a tile with the output columns in its lanes instead
//! (8 rows × 24 columns, `B` copied once into groups of 8 rows side by side), which needs no
//! horizontal sum at the end of a tile.

use rayon::prelude::*;

use super::{
    backward::Bits,
    engine::{self, BitOp, Problem},
    int8::{self, Int8Isa, MAX_EXACT_LEN},
    isa::{Isa, active_isa},
    words_per_row,
};

/// `out[i·n + j] = k − 2·popcount(a_i XOR b_j)`: the dot product of ±1 row `i` of `a` (`m` rows)
/// and ±1 row `j` of `b` (`n` rows), both packed with `words_per_row(k)` words a row.
///
/// Runs the XOR-popcount kernels of the active instruction set ([`super::isa::active_isa`]) on
/// every machine. The exact int8 route ([`xnor_gemm_int8`]) gives the same values but was
/// slower wherever it was timed, AMX included: at 2048³ on an Intel Xeon with AMX (2 cores) it
/// took 9.9 ms against 5.9 ms for the popcount kernel. Its AMX products alone take well under
/// half of that; expanding both operands from bits to bytes, laying out `b` in tiles and
/// converting the sums take the rest. On AVX-512 VNNI the int8 route is slower still (16.9 ms
/// against 3.4 ms on an AMD Zen 4). The `xnor_matmul` bench's `kernel_popcount` and
/// `kernel_int8_<path>` entries time both.
pub fn xnor_gemm(a: &[u64], b: &[u64], m: usize, n: usize, k: usize, out: &mut [f32]) {
    let isa = active_isa();
    let words = check(a, b, m, n, k, out);
    let problem = Problem {
        op: BitOp::Xor,
        a,
        a_planes: 1,
        m,
        b,
        b_planes: 1,
        n,
        words,
    };
    let k = k as f32;
    let checked = super::CheckedIsa::new(isa);
    engine::run(
        isa,
        &problem,
        out,
        |_, counts: &[u32], _, out: &mut [f32]| dots_from_differences(checked, k, counts, out),
    );
}

/// `out[j] = k − 2·counts[j]` (rounded once, as the float expression): the dot products of ±1
/// rows of `k` signs from the numbers of signs in which they differ. Vectorised on AVX-512.
fn dots_from_differences(isa: super::CheckedIsa, k: f32, counts: &[u32], out: &mut [f32]) {
    assert_eq!(counts.len(), out.len(), "dots_from_differences: lengths");
    #[cfg(target_arch = "x86_64")]
    if isa.isa() == Isa::Avx512 {
        // SAFETY: the checked instruction set is AVX-512, which has AVX-512F; the lengths match.
        unsafe { x86::dots_from_differences_avx512(k, counts, out) };
        return;
    }
    let _ = isa;
    for (o, &differ) in out.iter_mut().zip(counts) {
        *o = k - 2.0 * differ as f32;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::dots_from_differences`], 16 values a step (`k − 2·c` by one fused
    /// multiply-add: `2·c` is exact, so it rounds as the float expression).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `counts` and `out` have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots_from_differences_avx512(k: f32, counts: &[u32], out: &mut [f32]) {
        let (k, minus_two) = (_mm512_set1_ps(k), _mm512_set1_ps(-2.0));
        for (o, c) in out.chunks_mut(16).zip(counts.chunks(16)) {
            let mask = (u32::from(u16::MAX) >> (16 - c.len())) as __mmask16;
            // SAFETY: the masked lanes lie inside both chunks (`c.len() == o.len() ≤ 16`).
            unsafe {
                let c = _mm512_cvtepu32_ps(_mm512_maskz_loadu_epi32(mask, c.as_ptr().cast()));
                _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, _mm512_fmadd_ps(minus_two, c, k));
            }
        }
    }
}

/// [`xnor_gemm`] as an exact int8 product ([`int8::gemm`], on the path
/// [`int8::active_int8_isa`] picks) of the ±1 rows expanded from their bits into bytes: on AMX,
/// one `TDPBSSD` multiplies 16 × 64 by 64 × 16 values. Returns the int8 path that ran; a `k`
/// beyond [`MAX_EXACT_LEN`] (where an int8 product of any bytes could overflow) runs
/// [`xnor_gemm`] instead, and returns `None`.
///
/// # Panics
/// If a length does not match `m`, `n` and `k`.
pub fn xnor_gemm_int8(
    a: &[u64],
    b: &[u64],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) -> Option<Int8Isa> {
    let words = check(a, b, m, n, k, out);
    if k > MAX_EXACT_LEN {
        xnor_gemm(a, b, m, n, k, out);
        return None;
    }
    if m == 0 || n == 0 || k == 0 {
        out.fill(0.0);
        return Some(int8::active_int8_isa());
    }
    let expand = |bits: &[u64], rows: usize| {
        let mut values = vec![0i8; rows * k];
        values
            .par_chunks_mut(k)
            .zip(bits.par_chunks(words))
            .for_each(|(row, words)| Bits::new(words, k).expand(0, row));
        values
    };
    let (a_values, b_values) = (expand(a, m), expand(b, n));
    let mut sums = vec![0i32; m * n];
    let isa = int8::gemm(&a_values, &b_values, m, n, k, &mut sums);
    // Exact: |sum| ≤ k ≤ MAX_EXACT_LEN < 2^24.
    out.par_iter_mut()
        .zip(sums.par_iter())
        .for_each(|(o, &sum)| *o = sum as f32);
    Some(isa)
}

/// Panics unless `a`, `b` and `out` hold `[m, k]`, `[n, k]` (packed) and `[m, n]`; returns the
/// words a packed row takes.
fn check(a: &[u64], b: &[u64], m: usize, n: usize, k: usize, out: &[f32]) -> usize {
    let words = words_per_row(k);
    super::check_len("xnor_gemm: lhs length", a.len(), &[m, words]);
    super::check_len("xnor_gemm: rhs length", b.len(), &[n, words]);
    super::check_len("xnor_gemm: output length", out.len(), &[m, n]);
    words
}

/// Runs the XOR-popcount register tile of `isa` (the portable one where the CPU lacks it) on
/// rows resident in L1, single-threaded, `iterations` times, and returns the binary
/// multiply-accumulates done (bits XOR-ed and counted). Timing the call gives the machine's
/// ceiling in MAC/s for one core, to compare [`xnor_gemm`] against.
pub fn popcount_ceiling(isa: Isa, iterations: usize) -> u64 {
    engine::ceiling(isa, iterations)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::kernels::int8::with_int8_isa;
    use crate::kernels::isa::with_isa;
    use crate::kernels::pack::pack_signs;

    /// Random ±1 values.
    fn signs(rng: &mut StdRng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| if rng.random() { 1.0 } else { -1.0 })
            .collect()
    }

    fn packed(values: &[f32], rows: usize, k: usize) -> Vec<u64> {
        let mut out = vec![0; rows * words_per_row(k)];
        pack_signs(values, rows, k, &mut out);
        out
    }

    /// The float product of the ±1 matrices, from the definition.
    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
            }
        }
        out
    }

    fn check(rng: &mut StdRng, m: usize, n: usize, k: usize) {
        let (a, b) = (signs(rng, m * k), signs(rng, n * k));
        check_values(&a, &b, m, n, k);
    }

    fn check_values(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) {
        let (pa, pb) = (packed(a, m, k), packed(b, n, k));
        let expected = reference(a, b, m, n, k);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; m * n];
            with_isa(isa, || xnor_gemm(&pa, &pb, m, n, k, &mut out));
            assert_eq!(out, expected, "{isa:?} m={m} n={n} k={k}");
        }
        for isa in Int8Isa::available() {
            let mut out = vec![f32::NAN; m * n];
            let ran = with_int8_isa(isa, || xnor_gemm_int8(&pa, &pb, m, n, k, &mut out));
            assert_eq!(ran, (k <= MAX_EXACT_LEN).then_some(isa));
            assert_eq!(out, expected, "int8 {isa:?} m={m} n={n} k={k}");
        }
        let mut out = vec![f32::NAN; m * n];
        xnor_gemm(&pa, &pb, m, n, k, &mut out);
        assert_eq!(out, expected, "dispatched, m={m} n={n} k={k}");
    }

    #[test]
    fn matches_definition_for_every_k() {
        let mut rng = StdRng::seed_from_u64(10);
        for k in [1, 31, 63, 64, 65, 127, 511, 513, 1000, 4097] {
            check(&mut rng, 7, 11, k);
        }
    }

    /// Every word-count remainder mod 8 (each tail of the 512-bit kernels), after 0–3 full
    /// 8-word steps, with whole and partial last words, and tails after a full `k` block.
    #[test]
    fn matches_definition_for_every_word_tail() {
        let mut rng = StdRng::seed_from_u64(14);
        for words in 1..=32 {
            for k in [64 * words, 64 * words - 17] {
                check(&mut rng, 7, 11, k);
            }
        }
        for words in [256 + 1, 256 + 4, 256 + 5, 256 + 18] {
            check(&mut rng, 4, 9, 64 * words - 3);
        }
    }

    #[test]
    fn matches_definition_on_edge_shapes() {
        let mut rng = StdRng::seed_from_u64(11);
        for (m, n, k) in [
            (1, 1, 65),
            (1, 37, 1000),
            (37, 1, 1000),
            (4, 9, 127),
            (5, 17, 64),
            (10, 25, 300),
        ] {
            check(&mut rng, m, n, k);
        }
    }

    #[test]
    fn matches_definition_when_split_between_threads() {
        let mut rng = StdRng::seed_from_u64(12);
        check(&mut rng, 1, 2000, 4097);
        check(&mut rng, 67, 70, 1000);
        check(&mut rng, 200, 9, 4097);
    }

    #[test]
    fn k_blocks_and_column_blocks() {
        let mut rng = StdRng::seed_from_u64(13);
        // 5 000 words a row: several k blocks; 60 rows of `b` exceed one L2 column block.
        check(&mut rng, 4, 60, 5_000 * 64 - 5);
    }

    #[test]
    fn all_plus_and_all_minus() {
        for k in [1, 64, 65, 1000] {
            let plus = vec![1.0; 5 * k];
            let minus = vec![-1.0; 9 * k];
            check_values(&plus, &minus[..5 * k], 5, 5, k);
            check_values(&minus, &minus, 9, 9, k);
            check_values(&plus, &plus, 5, 5, k);
        }
    }

    #[test]
    fn empty_shapes() {
        for isa in Isa::available() {
            with_isa(isa, || xnor_gemm(&[], &[0; 2], 0, 2, 64, &mut []));
            let mut out = [f32::NAN; 3];
            with_isa(isa, || xnor_gemm(&[], &[], 1, 3, 0, &mut out));
            assert_eq!(out, [0.0; 3]);
        }
        for isa in Int8Isa::available() {
            let mut out = [f32::NAN; 3];
            with_int8_isa(isa, || xnor_gemm_int8(&[], &[], 1, 3, 0, &mut out));
            assert_eq!(out, [0.0; 3], "{isa:?}");
            with_int8_isa(isa, || xnor_gemm_int8(&[], &[0; 2], 0, 2, 64, &mut []));
        }
    }

    #[test]
    fn ceiling_reports_bits() {
        for isa in Isa::available() {
            assert!(popcount_ceiling(isa, 2) > 0);
        }
    }
}
