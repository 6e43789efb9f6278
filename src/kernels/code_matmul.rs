//! Products of quantized values through their integer codes: the host body of
//! [`QnnBackend::qnn_code_matmul`](crate::QnnBackend::qnn_code_matmul).
//!
//! With `a = s_a·c_a + o_a` and `b = s_b·c_b + o_b` element-wise (the operands' code grids) and
//! `k` the inner dimension,
//!
//! ```text
//! Σ_t a_it·b_tj = s_a·s_b·Σ_t c_a,it·c_b,tj + s_a·o_b·Σ_t c_a,it + o_a·s_b·Σ_t c_b,tj + k·o_a·o_b
//! ```
//!
//! The first sum is exact on the bit-serial kernel; the row and column sums of the codes are
//! exact too; the rest is f32 arithmetic once per output.

use rayon::prelude::*;

use crate::ops::{Encoding, HostPacked};
use crate::quant::CodeGrid;

/// Rows one parallel task converts to codes.
const ROWS_PER_TASK: usize = 64;

/// Whether every sum of code products (and of codes) of an inner dimension `k` is an integer
/// below 2^24, so that the kernel's f32 results are exact.
pub fn exact_in_f32(a_grid: CodeGrid, b_grid: CodeGrid, k: usize) -> bool {
    let largest =
        k as u128 * u128::from(a_grid.bits.max_code()) * u128::from(b_grid.bits.max_code());
    largest < 1 << 24
}

/// `a·b` of row-major `a` `[m, k]` and `b` `[k, n]` whose values lie on `a_grid` and `b_grid`,
/// with the code sums exact where [`exact_in_f32`] holds (the caller's to check).
///
/// # Panics
/// If a length does not fit `m`, `k`, `n`.
pub fn code_matmul(
    a: &[f32],
    a_grid: CodeGrid,
    b: &[f32],
    b_grid: CodeGrid,
    [m, k, n]: [usize; 3],
) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "code_matmul: lhs length");
    assert_eq!(b.len(), k * n, "code_matmul: rhs length");
    let (a_codes, a_sums) = codes_and_row_sums(a, a_grid, k);
    // The columns of b: the codes of bᵀ, row by row.
    let (b_codes, b_sums) = {
        let (codes, _) = codes_and_row_sums(b, b_grid, n);
        let mut sums = vec![0f32; n];
        for row in codes.chunks_exact(n.max(1)) {
            for (s, &c) in sums.iter_mut().zip(row) {
                *s += c;
            }
        }
        (codes, sums)
    };
    let lhs = HostPacked::pack(&a_codes, &[m, k], Encoding::Codes(a_grid.bits));
    let rhs = HostPacked::pack_columns(&b_codes, &[k, n], Encoding::Codes(b_grid.bits));
    let (mut out, _) = lhs.matmul_transposed(&rhs);
    // In f64: the terms can be much larger than their sum (offsets cancel), and each is exact
    // there, so only the final rounding to f32 remains.
    let [sa, oa, sb, ob] =
        [a_grid.scale, a_grid.offset, b_grid.scale, b_grid.offset].map(f64::from);
    let constant = k as f64 * oa * ob;
    out.par_chunks_mut(n.max(1))
        .zip(&a_sums)
        .for_each(|(row, &a_sum)| {
            let row_term = sa * ob * f64::from(a_sum) + constant;
            for (o, &b_sum) in row.iter_mut().zip(&b_sums) {
                *o = (sa * sb * f64::from(*o) + row_term + oa * sb * f64::from(b_sum)) as f32;
            }
        });
    out
}

/// The codes of `values` (rows of `width`) and the sum of each row's codes.
fn codes_and_row_sums(values: &[f32], grid: CodeGrid, width: usize) -> (Vec<f32>, Vec<f32>) {
    let mut codes = vec![0f32; values.len()];
    let rows = values.len() / width.max(1);
    let mut sums = vec![0f32; rows];
    let task = ROWS_PER_TASK * width.max(1);
    codes
        .par_chunks_mut(task)
        .zip(values.par_chunks(task))
        .zip(sums.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((codes, values), sums)| {
            for ((codes, values), sum) in codes
                .chunks_mut(width.max(1))
                .zip(values.chunks(width.max(1)))
                .zip(sums)
            {
                let mut total = 0f32;
                for (c, &v) in codes.iter_mut().zip(values) {
                    *c = grid.code_of(v);
                    total += *c;
                }
                *sum = total;
            }
        });
    (codes, sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Bits, Quantizer};

    /// The sums of 8-bit × 8-bit codes stay exact in f32 up to an inner dimension of 258.
    #[test]
    fn exactness_bound() {
        let byte = CodeGrid::of(Quantizer::Unsigned(Bits::new(8).unwrap())).unwrap();
        assert!(exact_in_f32(byte, byte, 258));
        assert!(!exact_in_f32(byte, byte, 259));
        let sign = CodeGrid::of(Quantizer::Sign).unwrap();
        assert!(exact_in_f32(sign, sign, (1 << 24) - 1));
    }

    /// Values on both grids multiply to the f64 product of the values, for odd sizes and each
    /// kind of grid.
    #[test]
    fn equals_the_product_of_the_values() {
        let (m, k, n) = (5, 131, 7);
        for (qa, qb) in [
            (Quantizer::Unsigned(Bits::TWO), Quantizer::Signed(Bits::TWO)),
            (Quantizer::Sign, Quantizer::Sign),
            (
                Quantizer::Signed(Bits::new(3).unwrap()),
                Quantizer::Unsigned(Bits::new(4).unwrap()),
            ),
        ] {
            let (ga, gb) = (CodeGrid::of(qa).unwrap(), CodeGrid::of(qb).unwrap());
            let level = |g: CodeGrid, i: usize| {
                g.scale * (i % (g.bits.max_code() as usize + 1)) as f32 + g.offset
            };
            let a: Vec<f32> = (0..m * k).map(|i| level(ga, i * 7 + i / 3)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| level(gb, i * 5 + i / 11)).collect();
            let out = code_matmul(&a, ga, &b, gb, [m, k, n]);
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|t| f64::from(a[i * k + t]) * f64::from(b[t * n + j]))
                        .sum();
                    let got = f64::from(out[i * n + j]);
                    assert!(
                        (got - exact).abs() < 1e-4 * exact.abs().max(1.0),
                        "{qa:?}·{qb:?} [{i}, {j}]: {got} against {exact}"
                    );
                }
            }
        }
    }
}
