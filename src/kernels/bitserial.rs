//! Bit-serial GEMM of unsigned codes stored as bit planes.

use super::{
    isa::{Isa, active_isa},
    words_per_row,
};

/// `out[i·n + j] = Σ_t a[i, t] · s[j, t]`: unsigned `a_bits`-bit codes (bit planes, `m` rows)
/// times ±1 signs (`n` packed rows): `Σ_p 2^p (popcount(a_i^p) − 2·popcount(a_i^p AND b_j))`.
pub fn bitserial_binary_gemm(
    a: &[u64],
    a_bits: u32,
    b: &[u64],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    bitserial_binary_gemm_with(active_isa(), a, a_bits, b, m, n, k, out)
}

/// [`bitserial_binary_gemm`] on a given instruction set.
#[allow(clippy::too_many_arguments)]
pub fn bitserial_binary_gemm_with(
    _isa: Isa,
    a: &[u64],
    a_bits: u32,
    b: &[u64],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let words = words_per_row(k);
    let planes = a_bits as usize;
    assert_eq!(
        a.len(),
        m * planes * words,
        "bitserial_binary_gemm: lhs length"
    );
    assert_eq!(b.len(), n * words, "bitserial_binary_gemm: rhs length");
    assert_eq!(out.len(), m * n, "bitserial_binary_gemm: output length");
    for i in 0..m {
        for j in 0..n {
            let bj = &b[j * words..(j + 1) * words];
            let mut sum = 0i64;
            for p in 0..planes {
                let ap = &a[(i * planes + p) * words..(i * planes + p + 1) * words];
                let ones: i64 = ap.iter().map(|x| x.count_ones() as i64).sum();
                let neg: i64 = ap
                    .iter()
                    .zip(bj)
                    .map(|(x, y)| (x & y).count_ones() as i64)
                    .sum();
                sum += (ones - 2 * neg) << p;
            }
            out[i * n + j] = sum as f32;
        }
    }
}

/// `out[i·n + j] = Σ_t a[i, t] · b[j, t]` for unsigned codes of `a_bits` and `b_bits` bits, both
/// as bit planes: `Σ_p Σ_q 2^(p+q) popcount(a_i^p AND b_j^q)`.
#[allow(clippy::too_many_arguments)]
pub fn bitserial_gemm(
    a: &[u64],
    a_bits: u32,
    b: &[u64],
    b_bits: u32,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    bitserial_gemm_with(active_isa(), a, a_bits, b, b_bits, m, n, k, out)
}

/// [`bitserial_gemm`] on a given instruction set.
#[allow(clippy::too_many_arguments)]
pub fn bitserial_gemm_with(
    _isa: Isa,
    a: &[u64],
    a_bits: u32,
    b: &[u64],
    b_bits: u32,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let words = words_per_row(k);
    let (pa, pb) = (a_bits as usize, b_bits as usize);
    assert_eq!(a.len(), m * pa * words, "bitserial_gemm: lhs length");
    assert_eq!(b.len(), n * pb * words, "bitserial_gemm: rhs length");
    assert_eq!(out.len(), m * n, "bitserial_gemm: output length");
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0i64;
            for p in 0..pa {
                let ap = &a[(i * pa + p) * words..(i * pa + p + 1) * words];
                for q in 0..pb {
                    let bq = &b[(j * pb + q) * words..(j * pb + q + 1) * words];
                    let ones: i64 = ap
                        .iter()
                        .zip(bq)
                        .map(|(x, y)| (x & y).count_ones() as i64)
                        .sum();
                    sum += ones << (p + q);
                }
            }
            out[i * n + j] = sum as f32;
        }
    }
}
