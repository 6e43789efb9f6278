//! The int8 products on AVX-512 VNNI. `VPDPBUSD` multiplies unsigned by signed bytes, so `a`
//! enters as `a + 128` (its sign bit flipped) and `128 · Σ_t b[j, t]` is taken off each result
//! once; the arithmetic wraps modulo 2^32, and the result, which fits in an `i32`, is exact.
//! One row of `a` against four rows of `b`, 64 bytes a step, the tail through masked loads.

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
        super::Int8Isa::Avx512Vnni,
        "the VNNI int8 kernel needs AVX-512 VNNI"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let offsets: Vec<i32> = b
            .chunks_exact(k)
            .map(|row| {
                row.iter()
                    .map(|&v| i32::from(v))
                    .sum::<i32>()
                    .wrapping_mul(128)
            })
            .collect();
        super::by_four_rows(a, b, m, n, k, out, |a_row, rows, j0| {
            // SAFETY: `isa` proves the CPU has AVX-512 F, BW and VNNI; every row holds `k`
            // values.
            let mut sums = unsafe { x86::dot4(a_row, rows) };
            for (sum, offset) in sums.iter_mut().zip(&offsets[j0..]) {
                *sum = sum.wrapping_sub(*offset);
            }
            sums
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 is never available off x86-64 ({a:p}, {b:p}, {m}, {n}, {k}, {out:p})");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `Σ_t (a[t] + 128) · rows[r][t]`, modulo 2^32, for four rows of `a.len()` values.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI, and every row must hold `a.len()` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dot4(a: &[i8], rows: [&[i8]; 4]) -> [i32; 4] {
        let k = a.len();
        let flip = _mm512_set1_epi8(i8::MIN);
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut t = 0;
        while t < k {
            let mask: __mmask64 = if k - t >= 64 {
                !0
            } else {
                (1u64 << (k - t)) - 1
            };
            // SAFETY: the mask keeps every load within the k values from t on.
            unsafe {
                let va = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, a.as_ptr().add(t)), flip);
                for (acc, row) in acc.iter_mut().zip(rows) {
                    let vb = _mm512_maskz_loadu_epi8(mask, row.as_ptr().add(t));
                    *acc = _mm512_dpbusd_epi32(*acc, va, vb);
                }
            }
            t += 64;
        }
        acc.map(|acc| _mm512_reduce_add_epi32(acc))
    }
}
