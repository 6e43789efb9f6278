//! The three-part bf16 split of f32 values, and the AVX-512 passes that lay gradients and signs
//! out for the tiles.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::kernels::backward::Bits;
#[cfg(target_arch = "x86_64")]
use crate::kernels::transpose::transpose_words16;

/// The top 16 bits of an f32: a bf16 in place.
const TOP: u32 = 0xffff_0000;
/// The exponent bits of an f32.
const EXPONENT: u32 = 0x7f80_0000;
/// bf16 `+1.0`; setting bit 15 gives `−1.0`.
pub(super) const BF16_ONE: u16 = 0x3f80;

/// The bf16 parts `[hi, mid, lo]` of `v`, whose sum is exactly `v`: `hi` is the top 16 bits of
/// `v`, `mid` the top 16 bits of `v − hi`, and `lo = v − hi − mid`, which has at most 8
/// significant bits and so is a bf16 (where it is not below the smallest normal f32, 2⁻¹²⁶).
/// Infinities and NaN keep their value in `hi` (a NaN as a quiet NaN) and have zero `mid` and
/// `lo`.
///
/// ```
/// use burn_qnn::kernels::amx_bf16::split3;
///
/// let bf16 = |b: u16| f32::from_bits(u32::from(b) << 16);
/// for v in [1.0f32, -0.1, std::f32::consts::PI, 3.0e-30, -7.5e20] {
///     let [hi, mid, lo] = split3(v);
///     assert_eq!(bf16(hi) + bf16(mid) + bf16(lo), v);
/// }
/// ```
pub fn split3(v: f32) -> [u16; 3] {
    let bits = v.to_bits();
    let hi = bits & TOP;
    if bits & EXPONENT == EXPONENT {
        let hi = if v.is_nan() { hi | 0x7fc0_0000 } else { hi };
        return [(hi >> 16) as u16, 0, 0];
    }
    let rest = v - f32::from_bits(hi);
    let mid = rest.to_bits() & TOP;
    let lo = (rest - f32::from_bits(mid)).to_bits();
    [(hi >> 16) as u16, (mid >> 16) as u16, (lo >> 16) as u16]
}

/// Whether the CPU has the AVX-512 features the layout passes use (F, BW and VL).
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Lanes `0 .. n` (`n ≤ 16`).
#[inline(always)]
fn lanes(n: usize) -> u16 {
    if n >= 16 { u16::MAX } else { (1u16 << n) - 1 }
}

/// The three parts of 16 values, each as f32 bits with the part in the top 16 bits (the lower
/// 16 zero): [`split3`] on each lane.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn parts16(v: __m512) -> [__m512i; 3] {
    let top = _mm512_set1_epi32(TOP as i32);
    let bits = _mm512_castps_si512(v);
    let hi = _mm512_and_si512(bits, top);
    let rest = _mm512_sub_ps(v, _mm512_castsi512_ps(hi));
    let mid = _mm512_and_si512(_mm512_castps_si512(rest), top);
    let lo = _mm512_and_si512(
        _mm512_castps_si512(_mm512_sub_ps(rest, _mm512_castsi512_ps(mid))),
        top,
    );
    let exponent = _mm512_set1_epi32(EXPONENT as i32);
    let special = _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, exponent), exponent);
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let hi = _mm512_mask_or_epi32(hi, nan, hi, _mm512_set1_epi32(0x7fc0_0000));
    [
        hi,
        _mm512_maskz_mov_epi32(!special, mid),
        _mm512_maskz_mov_epi32(!special, lo),
    ]
}

/// For each `i`: `out[s][i]` = part `s` of `even[i]` in the low half and part `s` of `odd[i]`
/// (0 where `odd` is `None`) in the high half: the bf16 pairs of two channels, interleaved as a
/// tile's pairs of summed values.
///
/// # Panics
/// If a length differs from `even`'s.
pub(super) fn split_pairs(
    _proof: super::AmxBf16,
    even: &[f32],
    odd: Option<&[f32]>,
    out: [&mut [u32]; 3],
) {
    let n = even.len();
    assert!(odd.is_none_or(|odd| odd.len() == n) && out.iter().all(|o| o.len() == n));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the proof says the CPU has AVX-512 F and BW; the lengths are checked above.
    unsafe {
        split_pairs_avx512(even, odd, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (even, odd, out);
        unreachable!("AMX runs only on x86-64")
    }
}

/// [`split_pairs`] 16 values at a time.
///
/// # Safety
/// The CPU must have AVX-512 F and BW, and every slice `even.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn split_pairs_avx512(even: &[f32], odd: Option<&[f32]>, out: [&mut [u32]; 3]) {
    let [o0, o1, o2] = out;
    let top = _mm512_set1_epi32(TOP as i32);
    for start in (0..even.len()).step_by(16) {
        let mask = lanes(even.len() - start);
        // SAFETY: masked loads and stores touch lanes `start .. start + 16` of slices of
        // `even.len()` values only where the mask is set, which stops at their end.
        unsafe {
            let low = parts16(_mm512_maskz_loadu_ps(mask, even.as_ptr().add(start)));
            let high = match odd {
                Some(odd) => parts16(_mm512_maskz_loadu_ps(mask, odd.as_ptr().add(start))),
                None => [_mm512_setzero_si512(); 3],
            };
            for (s, dst) in [o0.as_mut_ptr(), o1.as_mut_ptr(), o2.as_mut_ptr()]
                .into_iter()
                .enumerate()
            {
                let pair = _mm512_or_si512(
                    _mm512_srli_epi32::<16>(low[s]),
                    _mm512_and_si512(high[s], top),
                );
                _mm512_mask_storeu_epi32(dst.add(start).cast(), mask, pair);
            }
        }
    }
}

/// For each `i`: `out[i]` holds `even[i]` in the low half and `odd[i]` (0 where `odd` is `None`)
/// in the high half, as bf16: their signs (`±1`, `−1` where `v < 0`) where `signs`, else their
/// values cut to bf16 (exact for values that are bf16, such as integers up to 256).
///
/// # Panics
/// If a length differs from `even`'s.
pub(super) fn value_pairs(
    _proof: super::AmxBf16,
    signs: bool,
    even: &[f32],
    odd: Option<&[f32]>,
    out: &mut [u32],
) {
    let n = even.len();
    assert!(odd.is_none_or(|odd| odd.len() == n) && out.len() == n);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the proof says the CPU has AVX-512 F and BW; the lengths are checked above.
    unsafe {
        value_pairs_avx512(signs, even, odd, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (signs, even, odd, out);
        unreachable!("AMX runs only on x86-64")
    }
}

/// [`value_pairs`] 16 values at a time.
///
/// # Safety
/// The CPU must have AVX-512 F and BW, and every slice `even.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn value_pairs_avx512(signs: bool, even: &[f32], odd: Option<&[f32]>, out: &mut [u32]) {
    let top = _mm512_set1_epi32(TOP as i32);
    let (plus, minus) = (
        _mm512_set1_epi32(0x3f80_0000),
        _mm512_set1_epi32(0xbf80_0000u32 as i32),
    );
    let bf16 = |v: __m512| {
        if signs {
            let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
            _mm512_mask_blend_epi32(negative, plus, minus)
        } else {
            _mm512_and_si512(_mm512_castps_si512(v), top)
        }
    };
    for start in (0..even.len()).step_by(16) {
        let mask = lanes(even.len() - start);
        // SAFETY: as in `split_pairs_avx512`.
        unsafe {
            let low = bf16(_mm512_maskz_loadu_ps(mask, even.as_ptr().add(start)));
            let high = match odd {
                Some(odd) => bf16(_mm512_maskz_loadu_ps(mask, odd.as_ptr().add(start))),
                None => _mm512_setzero_si512(),
            };
            let pair = _mm512_or_si512(_mm512_srli_epi32::<16>(low), high);
            _mm512_mask_storeu_epi32(out.as_mut_ptr().add(start).cast(), mask, pair);
        }
    }
}

/// `out[s][i]` = part `s` of `values[i]` (as bf16 bits).
///
/// # Panics
/// If a length differs from `values`'s.
pub(super) fn split_values(_proof: super::AmxBf16, values: &[f32], out: [&mut [u16]; 3]) {
    assert!(out.iter().all(|o| o.len() == values.len()));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the proof says the CPU has AVX-512 F, BW and VL; the lengths are checked above.
    unsafe {
        split_values_avx512(values, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (values, out);
        unreachable!("AMX runs only on x86-64")
    }
}

/// [`split_values`] 16 values at a time.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VL, and every slice `values.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn split_values_avx512(values: &[f32], out: [&mut [u16]; 3]) {
    let [o0, o1, o2] = out;
    for start in (0..values.len()).step_by(16) {
        let mask = lanes(values.len() - start);
        // SAFETY: as in `split_pairs_avx512`.
        unsafe {
            let parts = parts16(_mm512_maskz_loadu_ps(mask, values.as_ptr().add(start)));
            for (part, dst) in
                parts
                    .into_iter()
                    .zip([o0.as_mut_ptr(), o1.as_mut_ptr(), o2.as_mut_ptr()])
            {
                let halves = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(part));
                _mm256_mask_storeu_epi16(dst.add(start).cast(), mask, halves);
            }
        }
    }
}

/// The 16 × 16 block of `u32` at `src` (rows `src_stride` apart) written transposed to `dst`
/// (rows `dst_stride` apart): `dst[j·dst_stride + i] = src[i·src_stride + j]`.
///
/// # Panics
/// If a block reaches past its slice.
pub(super) fn transpose16(
    _proof: super::AmxBf16,
    src: &[u32],
    src_stride: usize,
    dst: &mut [u32],
    dst_stride: usize,
) {
    assert!(src.len() >= 15 * src_stride + 16 && dst.len() >= 15 * dst_stride + 16);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the proof says the CPU has AVX-512 F; the extents are checked above.
    unsafe {
        transpose16_avx512(src.as_ptr(), src_stride, dst.as_mut_ptr(), dst_stride)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (src, dst);
        unreachable!("AMX runs only on x86-64")
    }
}

/// [`transpose16`] in registers ([`transpose_words16`]).
///
/// # Safety
/// The CPU must have AVX-512 F; `src` must hold 16 rows of 16 values `src_stride` apart and
/// `dst` 16 rows `dst_stride` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16_avx512(src: *const u32, src_stride: usize, dst: *mut u32, dst_stride: usize) {
    // SAFETY: the caller's contract.
    let rows: [__m512i; 16] =
        std::array::from_fn(|i| unsafe { _mm512_loadu_si512(src.add(i * src_stride).cast()) });
    // SAFETY: the CPU has AVX-512 F (this function's contract).
    let columns = unsafe { transpose_words16(rows) };
    for (j, column) in columns.into_iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm512_storeu_si512(dst.add(j * dst_stride).cast(), column) };
    }
}

/// The ±1 bf16 values of bits `start .. start + out.len()` (bit 1 → −1) into `out`.
pub(super) fn expand_signs(_proof: super::AmxBf16, bits: Bits<'_>, start: usize, out: &mut [u16]) {
    assert!(
        start + out.len() <= bits.len(),
        "expand_signs: past the bits"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the proof says the CPU has AVX-512 F and BW; the extent is checked above.
    unsafe {
        expand_signs_avx512(bits, start, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (bits, start, out);
        unreachable!("AMX runs only on x86-64")
    }
}

/// [`expand_signs`] 32 values a blend.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn expand_signs_avx512(bits: Bits<'_>, start: usize, out: &mut [u16]) {
    let plus = _mm512_set1_epi16(BF16_ONE as i16);
    let minus = _mm512_set1_epi16((BF16_ONE | 0x8000) as i16);
    for at in (0..out.len()).step_by(32) {
        let n = (out.len() - at).min(32);
        let word = (bits.word_at(start + at) as u32) & (u32::MAX >> (32 - n));
        let values = _mm512_mask_blend_epi16(word, plus, minus);
        let keep = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        // SAFETY: the masked store writes lanes `at .. at + n` of `out` only.
        unsafe { _mm512_mask_storeu_epi16(out.as_mut_ptr().add(at).cast(), keep, values) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::amx_bf16::AmxBf16;

    fn bf16(b: u16) -> f32 {
        f32::from_bits(u32::from(b) << 16)
    }

    /// Values of every magnitude, sign and special kind.
    fn values() -> Vec<f32> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut v: Vec<f32> = (0..4000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let bits = state as u32;
                // Every other value from random bits (any exponent), the rest moderate.
                if i % 2 == 0 {
                    f32::from_bits(bits)
                } else {
                    (bits as f32 / u32::MAX as f32 - 0.5) * 8.0
                }
            })
            .collect();
        v.extend([
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7f80_0001),
            1.0 + f32::EPSILON,
        ]);
        v
    }

    /// The parts sum to the value exactly, for every normal value whose `lo` part is normal too;
    /// specials keep their kind.
    #[test]
    fn three_parts_sum_to_the_value() {
        for v in values() {
            let [hi, mid, lo] = split3(v);
            if v.is_nan() {
                assert!(bf16(hi).is_nan() && mid == 0 && lo == 0, "{v:e}");
            } else if v.is_infinite() {
                assert_eq!((bf16(hi), mid, lo), (v, 0, 0));
            } else if v.abs() >= f32::MIN_POSITIVE * 65536.0 * 256.0 || v == 0.0 {
                let sum = (bf16(hi) as f64) + (bf16(mid) as f64) + (bf16(lo) as f64);
                assert_eq!(sum, v as f64, "{v:e} ({:#x})", v.to_bits());
            } else {
                // Tiny values: the error stays below the smallest normal f32.
                let sum = bf16(hi) + bf16(mid) + bf16(lo);
                assert!((sum - v).abs() < f32::MIN_POSITIVE, "{v:e}");
            }
        }
    }

    #[test]
    fn simd_passes_match_the_scalar_split() {
        let Some(proof) = AmxBf16::if_available() else {
            eprintln!("skipped: this machine has no AMX-BF16");
            return;
        };
        let v = values();
        for len in [0, 1, 15, 16, 17, 40, v.len()] {
            let (even, odd) = (&v[..len], &v[v.len() - len..]);
            let mut out = [vec![0u16; len], vec![0u16; len], vec![0u16; len]];
            let [a, b, c] = &mut out;
            split_values(proof, even, [a, b, c]);
            for (i, &x) in even.iter().enumerate() {
                assert_eq!([out[0][i], out[1][i], out[2][i]], split3(x), "{x:e}");
            }
            for odd in [Some(odd), None] {
                let mut pairs = [vec![0u32; len], vec![0u32; len], vec![0u32; len]];
                let [a, b, c] = &mut pairs;
                split_pairs(proof, even, odd, [a, b, c]);
                for i in 0..len {
                    let low = split3(even[i]);
                    let high = odd.map_or([0; 3], |odd| split3(odd[i]));
                    for s in 0..3 {
                        let expected = u32::from(low[s]) | u32::from(high[s]) << 16;
                        assert_eq!(pairs[s][i], expected, "value {i} part {s}");
                    }
                }
            }
        }
        for len in [0, 1, 15, 16, 17, 40] {
            let (even, odd) = (&v[v.len() - len..], &v[..len]);
            for signs in [true, false] {
                let mut pairs = vec![0u32; len];
                value_pairs(proof, signs, even, Some(odd), &mut pairs);
                let half = |x: f32| {
                    if signs {
                        if x < 0.0 { 0xbf80 } else { 0x3f80 }
                    } else {
                        x.to_bits() >> 16
                    }
                };
                for i in 0..len {
                    let expected = half(even[i]) | half(odd[i]) << 16;
                    assert_eq!(pairs[i], expected, "value {i}, signs {signs}");
                }
            }
        }
        let src: Vec<u32> = (0..40 * 20).collect();
        let mut dst = vec![0u32; 16 * 24];
        transpose16(proof, &src[3..], 40, &mut dst, 24);
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(dst[j * 24 + i], src[3 + i * 40 + j]);
            }
        }
        let words = [0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210, u64::MAX];
        let bits = Bits::new(&words, 190);
        for (start, len) in [(0, 64), (5, 33), (70, 100), (100, 90), (0, 0)] {
            let mut out = vec![0u16; len];
            expand_signs(proof, bits, start, &mut out);
            for (j, &b) in out.iter().enumerate() {
                let expected = if bits.bit(start + j) == 1 { -1.0 } else { 1.0 };
                assert_eq!(bf16(b), expected, "start {start}, value {j}");
            }
        }
    }
}
