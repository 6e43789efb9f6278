//! The int8 products on AVX2: 16 bytes of each operand sign-extended to `i16`, multiplied and
//! summed in pairs by `VPMADDWD` into `i32` lanes, one row of `a` against four rows of `b`.

use super::CheckedInt8;

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` (lengths checked by the caller).
pub(super) fn gemm_accumulate(
    isa: CheckedInt8,
    a: &[i8],
    b: &[i8],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
) {
    assert_eq!(
        isa.isa(),
        super::Int8Isa::Avx2,
        "the AVX2 int8 kernel needs AVX2"
    );
    // SAFETY: `isa` proves the CPU has AVX2; every row holds `k` values.
    #[cfg(target_arch = "x86_64")]
    super::by_four_rows(a, b, m, n, k, out, |a_row, rows, _| unsafe {
        x86::dot4(a_row, rows)
    });
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX2 is never available off x86-64 ({a:p}, {b:p}, {m}, {n}, {k}, {out:p})");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `Σ_t a[t] · rows[r][t]` for four rows of `a.len()` values.
    ///
    /// # Safety
    /// The CPU must have AVX2, and every row must hold `a.len()` values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot4(a: &[i8], rows: [&[i8]; 4]) -> [i32; 4] {
        let k = a.len();
        let full = k / 16 * 16;
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut t = 0;
        while t < full {
            // SAFETY: t + 16 ≤ k and each row holds k values.
            unsafe {
                let va = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(t).cast()));
                for (acc, row) in acc.iter_mut().zip(rows) {
                    let vb = _mm256_cvtepi8_epi16(_mm_loadu_si128(row.as_ptr().add(t).cast()));
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(va, vb));
                }
            }
            t += 16;
        }
        let mut sums = [0i32; 4];
        for ((sum, acc), row) in sums.iter_mut().zip(acc).zip(rows) {
            let halves = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            );
            let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32::<0b01_00_11_10>(halves));
            let total = _mm_add_epi32(pairs, _mm_shuffle_epi32::<0b10_11_00_01>(pairs));
            *sum =
                _mm_cvtsi128_si32(total) + super::super::portable::dot(&a[full..], &row[full..k]);
        }
        sums
    }
}
