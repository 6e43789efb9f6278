//! x86-64 packing primitives: compare to zero (or extract code bits) 16 (AVX-512) or 8 (AVX2)
//! values at a time into bit masks.
//!
//! Each function is `#[target_feature]`: callers must have checked the CPU (see
//! [`super::CheckedIsa`]). Chunks are at most 64 values and give one word per plane; bits past the
//! chunk's end are 0.

use std::arch::x86_64::*;

use super::pack::code;

/// The most bits a code may have on the SIMD plane paths (codes stay exact in `f32` and `i32`).
pub(crate) const SIMD_MAX_BITS: u32 = 24;

/// Rows ahead that column packing prefetches: a band reads a short segment of many rows, too
/// short for the hardware prefetchers to follow.
const PREFETCH_ROWS: usize = 8;

/// Prefetches the segment `PREFETCH_ROWS` rows (of `n` values) below `chunk` into L1.
#[inline]
fn prefetch_ahead(chunk: &[f32], n: usize) {
    let ahead = chunk.as_ptr().wrapping_add(PREFETCH_ROWS * n);
    for line in (0..chunk.len()).step_by(16) {
        // SAFETY: a prefetch never faults, whatever the address; `wrapping_add` keeps the
        // pointer arithmetic defined.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
    }
}

/// Sign word of ≤ 64 values: bit `t` is `chunk[t] < 0`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn signs64_avx512(chunk: &[f32]) -> u64 {
    let zero = _mm512_setzero_ps();
    let mut word = 0u64;
    for (q, part) in chunk.chunks(16).enumerate() {
        // SAFETY: the masked load reads only the `part.len()` values of `part`.
        let v = unsafe { _mm512_maskz_loadu_ps(lane_mask16(part.len()), part.as_ptr()) };
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
        word |= u64::from(neg) << (16 * q);
    }
    word
}

/// Sign and straight-through band words of ≤ 64 values: bit `t` of the first is
/// `chunk[t] < 0`, of the second `|chunk[t]| > 1` or NaN (`!(−1 ≤ v ≤ 1)`).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn signs_and_band64_avx512(chunk: &[f32]) -> (u64, u64) {
    let (zero, low, high) = (
        _mm512_setzero_ps(),
        _mm512_set1_ps(-1.0),
        _mm512_set1_ps(1.0),
    );
    let (mut signs, mut band) = (0u64, 0u64);
    for (q, part) in chunk.chunks(16).enumerate() {
        let lanes = lane_mask16(part.len());
        // SAFETY: the masked load reads only the `part.len()` values of `part`.
        let v = unsafe { _mm512_maskz_loadu_ps(lanes, part.as_ptr()) };
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
        // Ordered comparisons are false for NaN, so NaN falls outside the band.
        let inside =
            _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, low) & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, high);
        signs |= u64::from(negative) << (16 * q);
        band |= u64::from(!inside & lanes) << (16 * q);
    }
    (signs, band)
}

/// The mask of the first `len ≤ 16` lanes.
#[inline]
fn lane_mask16(len: usize) -> __mmask16 {
    ((1u32 << len) - 1) as __mmask16
}

/// Bit planes of ≤ 64 codes of `bits ≤ SIMD_MAX_BITS` bits: `out[p]` bit `t` is bit `p` of
/// `code(chunk[t], bits)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn planes64_avx512(chunk: &[f32], bits: u32, out: &mut [u64]) {
    if bits <= 8 {
        return planes64_bytes_avx512(chunk, bits, out);
    }
    out.fill(0);
    let zero = _mm512_setzero_ps();
    let top = _mm512_set1_ps(((1u32 << bits) - 1) as f32);
    for (q, part) in chunk.chunks(16).enumerate() {
        // SAFETY: the masked load reads only the `part.len()` values of `part`.
        let v = unsafe { _mm512_maskz_loadu_ps(lane_mask16(part.len()), part.as_ptr()) };
        // `max(v, 0)` gives 0 for NaN (the second operand) and −0.0, then saturate and truncate.
        let codes = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(v, zero), top));
        for (p, o) in out.iter_mut().enumerate() {
            let bit = _mm512_test_epi32_mask(codes, _mm512_set1_epi32(1 << p));
            *o |= u64::from(bit) << (16 * q);
        }
    }
}

/// [`planes64_avx512`] for `bits ≤ 8`: the 64 codes narrowed to bytes in one vector, then one
/// byte test a plane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn planes64_bytes_avx512(chunk: &[f32], bits: u32, out: &mut [u64]) {
    let zero = _mm512_setzero_ps();
    let top = _mm512_set1_ps(((1u32 << bits) - 1) as f32);
    let mut bytes = [_mm_setzero_si128(); 4];
    for (q, part) in chunk.chunks(16).enumerate() {
        // SAFETY: the masked load reads only the `part.len()` values of `part`.
        let v = unsafe { _mm512_maskz_loadu_ps(lane_mask16(part.len()), part.as_ptr()) };
        // `max(v, 0)` gives 0 for NaN (the second operand) and −0.0, then saturate and truncate.
        let codes = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(v, zero), top));
        bytes[q] = _mm512_cvtepi32_epi8(codes);
    }
    let mut all = _mm512_castsi128_si512(bytes[0]);
    all = _mm512_inserti32x4::<1>(all, bytes[1]);
    all = _mm512_inserti32x4::<2>(all, bytes[2]);
    all = _mm512_inserti32x4::<3>(all, bytes[3]);
    for (p, o) in out.iter_mut().enumerate() {
        *o = _mm512_test_epi8_mask(all, _mm512_set1_epi8(1 << p));
    }
}

/// Sign words of a row: `dst[w]` packs `row[64w ..]`.
#[target_feature(enable = "avx512f")]
pub(crate) fn signs_row_avx512(row: &[f32], dst: &mut [u64]) {
    for (d, chunk) in dst.iter_mut().zip(row.chunks(64)) {
        *d = signs64_avx512(chunk);
    }
}

/// Sign words of a band of row segments: `m[tile][t]` packs the 64 values from column
/// `c0 + 64·tile` of row `r0 + t`, for `t < rows` and as many tiles as `m` holds (fewer values
/// past column `n`).
#[target_feature(enable = "avx512f")]
pub(crate) fn signs_band_avx512(
    src: &[f32],
    n: usize,
    (r0, rows): (usize, usize),
    c0: usize,
    m: &mut [[u64; 64]],
) {
    let width = n.saturating_sub(c0).min(64 * m.len());
    for t in 0..rows {
        let start = (r0 + t) * n + c0;
        for (tile, chunk) in m.iter_mut().zip(src[start..start + width].chunks(64)) {
            prefetch_ahead(chunk, n);
            tile[t] = signs64_avx512(chunk);
        }
    }
}

/// Sign word of ≤ 64 values: bit `t` is `chunk[t] < 0`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn signs64_avx2(chunk: &[f32]) -> u64 {
    let zero = _mm256_setzero_ps();
    let mut word = 0u64;
    for (q, part) in chunk.chunks(8).enumerate() {
        let bits = if part.len() == 8 {
            // SAFETY: `part` holds 8 values.
            let v = unsafe { _mm256_loadu_ps(part.as_ptr()) };
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(v, zero)) as u64
        } else {
            part.iter()
                .enumerate()
                .fold(0, |acc, (t, &x)| acc | (u64::from(x < 0.0) << t))
        };
        word |= bits << (8 * q);
    }
    word
}

/// Bit planes of ≤ 64 codes of `bits ≤ SIMD_MAX_BITS` bits: `out[p]` bit `t` is bit `p` of
/// `code(chunk[t], bits)`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn planes64_avx2(chunk: &[f32], bits: u32, out: &mut [u64]) {
    out.fill(0);
    let zero = _mm256_setzero_ps();
    let top = _mm256_set1_ps(((1u32 << bits) - 1) as f32);
    for (q, part) in chunk.chunks(8).enumerate() {
        if part.len() < 8 {
            for (t, &x) in part.iter().enumerate() {
                let c = code(x, bits);
                for (p, o) in out.iter_mut().enumerate() {
                    *o |= u64::from((c >> p) & 1) << (8 * q + t);
                }
            }
            continue;
        }
        // SAFETY: `part` holds 8 values.
        let v = unsafe { _mm256_loadu_ps(part.as_ptr()) };
        // `max(v, 0)` gives 0 for NaN (the second operand) and −0.0, then saturate and truncate.
        let codes = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, zero), top));
        for (p, o) in out.iter_mut().enumerate() {
            let shift = _mm_cvtsi32_si128(31 - p as i32);
            let at_sign = _mm256_castsi256_ps(_mm256_sll_epi32(codes, shift));
            *o |= (_mm256_movemask_ps(at_sign) as u64) << (8 * q);
        }
    }
}

/// Sign words of a row: `dst[w]` packs `row[64w ..]`.
#[target_feature(enable = "avx2")]
pub(crate) fn signs_row_avx2(row: &[f32], dst: &mut [u64]) {
    for (d, chunk) in dst.iter_mut().zip(row.chunks(64)) {
        *d = signs64_avx2(chunk);
    }
}

/// Sign words of a band of row segments: `m[tile][t]` packs the 64 values from column
/// `c0 + 64·tile` of row `r0 + t`, for `t < rows` and as many tiles as `m` holds (fewer values
/// past column `n`).
#[target_feature(enable = "avx2")]
pub(crate) fn signs_band_avx2(
    src: &[f32],
    n: usize,
    (r0, rows): (usize, usize),
    c0: usize,
    m: &mut [[u64; 64]],
) {
    let width = n.saturating_sub(c0).min(64 * m.len());
    for t in 0..rows {
        let start = (r0 + t) * n + c0;
        for (tile, chunk) in m.iter_mut().zip(src[start..start + width].chunks(64)) {
            prefetch_ahead(chunk, n);
            tile[t] = signs64_avx2(chunk);
        }
    }
}

/// Bit planes of a row: `dst[p·words + w]` packs plane `p` of `row[64w ..]`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn planes_row_avx512(row: &[f32], bits: u32, dst: &mut [u64]) {
    let mut tmp = [0u64; SIMD_MAX_BITS as usize];
    let tmp = &mut tmp[..bits as usize];
    let words = dst.len() / bits as usize;
    for (w, chunk) in row.chunks(64).enumerate() {
        planes64_avx512(chunk, bits, tmp);
        for (p, &plane) in tmp.iter().enumerate() {
            dst[p * words + w] = plane;
        }
    }
}

/// Bit planes of a row: `dst[p·words + w]` packs plane `p` of `row[64w ..]`.
#[target_feature(enable = "avx2")]
pub(crate) fn planes_row_avx2(row: &[f32], bits: u32, dst: &mut [u64]) {
    let mut tmp = [0u64; SIMD_MAX_BITS as usize];
    let tmp = &mut tmp[..bits as usize];
    let words = dst.len() / bits as usize;
    for (w, chunk) in row.chunks(64).enumerate() {
        planes64_avx2(chunk, bits, tmp);
        for (p, &plane) in tmp.iter().enumerate() {
            dst[p * words + w] = plane;
        }
    }
}

/// Bit planes of a band of row segments: `m[tile·bits + p][t]` is plane `p` of the 64 values
/// from column `c0 + 64·tile` of row `r0 + t`, for `t < rows` and as many tiles as `m` holds.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn planes_band_avx512(
    src: &[f32],
    n: usize,
    (r0, rows): (usize, usize),
    c0: usize,
    bits: u32,
    m: &mut [[u64; 64]],
) {
    let b = bits as usize;
    let width = n.saturating_sub(c0).min(64 * (m.len() / b));
    let mut tmp = [0u64; SIMD_MAX_BITS as usize];
    let tmp = &mut tmp[..b];
    for t in 0..rows {
        let start = (r0 + t) * n + c0;
        for (tile, chunk) in m.chunks_mut(b).zip(src[start..start + width].chunks(64)) {
            prefetch_ahead(chunk, n);
            planes64_avx512(chunk, bits, tmp);
            for (plane, &word) in tile.iter_mut().zip(tmp.iter()) {
                plane[t] = word;
            }
        }
    }
}

/// Bit planes of a band of row segments: `m[tile·bits + p][t]` is plane `p` of the 64 values
/// from column `c0 + 64·tile` of row `r0 + t`, for `t < rows` and as many tiles as `m` holds.
#[target_feature(enable = "avx2")]
pub(crate) fn planes_band_avx2(
    src: &[f32],
    n: usize,
    (r0, rows): (usize, usize),
    c0: usize,
    bits: u32,
    m: &mut [[u64; 64]],
) {
    let b = bits as usize;
    let width = n.saturating_sub(c0).min(64 * (m.len() / b));
    let mut tmp = [0u64; SIMD_MAX_BITS as usize];
    let tmp = &mut tmp[..b];
    for t in 0..rows {
        let start = (r0 + t) * n + c0;
        for (tile, chunk) in m.chunks_mut(b).zip(src[start..start + width].chunks(64)) {
            prefetch_ahead(chunk, n);
            planes64_avx2(chunk, bits, tmp);
            for (plane, &word) in tile.iter_mut().zip(tmp.iter()) {
                plane[t] = word;
            }
        }
    }
}
