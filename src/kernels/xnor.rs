//! XNOR-popcount GEMM of packed sign rows.

use super::{
    isa::{Isa, active_isa},
    words_per_row,
};

/// `out[i·n + j] = k − 2·popcount(a_i XOR b_j)`: the dot product of ±1 row `i` of `a` (`m` rows)
/// and ±1 row `j` of `b` (`n` rows), both packed with `words_per_row(k)` words a row.
pub fn xnor_gemm(a: &[u64], b: &[u64], m: usize, n: usize, k: usize, out: &mut [f32]) {
    xnor_gemm_with(active_isa(), a, b, m, n, k, out)
}

/// [`xnor_gemm`] on a given instruction set.
pub fn xnor_gemm_with(
    _isa: Isa,
    a: &[u64],
    b: &[u64],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let words = words_per_row(k);
    assert_eq!(a.len(), m * words, "xnor_gemm: lhs length");
    assert_eq!(b.len(), n * words, "xnor_gemm: rhs length");
    assert_eq!(out.len(), m * n, "xnor_gemm: output length");
    for i in 0..m {
        for j in 0..n {
            let ai = &a[i * words..(i + 1) * words];
            let bj = &b[j * words..(j + 1) * words];
            let ones: u32 = ai.iter().zip(bj).map(|(x, y)| (x ^ y).count_ones()).sum();
            out[i * n + j] = k as f32 - 2.0 * ones as f32;
        }
    }
}
