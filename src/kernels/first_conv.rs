//! The pixel kernel of the bit-plane first convolution on the CPU: one output pixel's 8-bit
//! codes times the weight signs, in `i16` lanes, compared with per-channel ranges and written as
//! packed sign bits. The instruction set is the crate's ([`super::isa::active_isa`], so
//! `BURN_QNN_ISA` reaches it): AVX2 where the checked path is AVX2 or AVX-512, portable code
//! elsewhere.

use super::{CheckedIsa, isa::Isa};

/// Channels per pass of the pixel kernel: two vectors of 16 `i16` lanes, one 32-bit mask.
pub(crate) const LANES: usize = 32;

/// One output pixel: `P[o] = Σ_t codes[t]·signs[t][o]`, and bit `o` of `bits` set (`−1`) where
/// `P[o]` is outside `lo[o] ..= hi[o]`. `signs` has `codes.len()` rows of `lo.len()` (a
/// multiple of [`LANES`]) channels.
pub(crate) fn pixel(
    isa: CheckedIsa,
    codes: &[i16],
    signs: &[i16],
    lo: &[i16],
    hi: &[i16],
    bits: &mut [u64],
) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a checked AVX-512 or AVX2 path runs on this CPU, which then has AVX2.
        Isa::Avx512 | Isa::Avx2 => unsafe { x86::pixel_avx2(codes, signs, lo, hi, bits) },
        _ => pixel_portable(codes, signs, lo, hi, bits),
    }
}

fn pixel_portable(codes: &[i16], signs: &[i16], lo: &[i16], hi: &[i16], bits: &mut [u64]) {
    let o = lo.len();
    bits.fill(0);
    let mut dots = [0i16; LANES];
    for chunk in 0..o / LANES {
        dots.fill(0);
        for (&code, row) in codes.iter().zip(signs.chunks_exact(o)) {
            for (d, &s) in dots.iter_mut().zip(&row[chunk * LANES..][..LANES]) {
                *d += code * s;
            }
        }
        for (t, &p) in dots.iter().enumerate() {
            let ch = chunk * LANES + t;
            let negative = p < lo[ch] || p > hi[ch];
            bits[ch / 64] |= u64::from(negative) << (ch % 64);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::LANES;

    /// [`super::pixel_portable`] in AVX2: `vpsignw` applies each weight sign to the broadcast
    /// code, two compares find the products outside their range, and a pack and `vpmovmskb`
    /// turn 32 lanes into 32 bits.
    #[target_feature(enable = "avx2")]
    pub(super) fn pixel_avx2(
        codes: &[i16],
        signs: &[i16],
        lo: &[i16],
        hi: &[i16],
        bits: &mut [u64],
    ) {
        let o = lo.len();
        assert!(o.is_multiple_of(LANES) && signs.len() == codes.len() * o && hi.len() == o);
        assert!(bits.len() * 64 >= o);
        bits.fill(0);
        for chunk in 0..o / LANES {
            let base = chunk * LANES;
            // SAFETY: every load and store is within the slices, by the asserts above
            // (`base + 32 ≤ o`, rows of `o` signs).
            unsafe {
                let (mut a, mut b) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for (t, &code) in codes.iter().enumerate() {
                    let code = _mm256_set1_epi16(code);
                    let row = signs.as_ptr().add(t * o + base);
                    a = _mm256_add_epi16(
                        a,
                        _mm256_sign_epi16(code, _mm256_loadu_si256(row.cast())),
                    );
                    b = _mm256_add_epi16(
                        b,
                        _mm256_sign_epi16(code, _mm256_loadu_si256(row.add(16).cast())),
                    );
                }
                let outside = |p: __m256i, at: usize| {
                    let lo = _mm256_loadu_si256(lo.as_ptr().add(at).cast());
                    let hi = _mm256_loadu_si256(hi.as_ptr().add(at).cast());
                    _mm256_or_si256(_mm256_cmpgt_epi16(lo, p), _mm256_cmpgt_epi16(p, hi))
                };
                let (ma, mb) = (outside(a, base), outside(b, base + 16));
                // Bytes in lane order 0–7 of a, 0–7 of b, 8–15 of a, 8–15 of b: reorder the
                // 64-bit quarters to a's 16 bytes then b's.
                let packed = _mm256_permute4x64_epi64(_mm256_packs_epi16(ma, mb), 0b11_01_10_00);
                let mask = _mm256_movemask_epi8(packed) as u32;
                bits[base / 64] |= u64::from(mask) << (base % 64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set's pixel kernel agrees with the definition, channel counts past one
    /// pass included.
    #[test]
    fn pixel_kernels_match_the_definition() {
        let mut seed = 9u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for (taps, o) in [(27usize, 32usize), (9, 64), (75, 96)] {
            let codes: Vec<i16> = (0..taps).map(|_| next(256) as i16).collect();
            let signs: Vec<i16> = (0..taps * o)
                .map(|_| if next(2) == 0 { -1 } else { 1 })
                .collect();
            let lo: Vec<i16> = (0..o).map(|_| next(4000) as i16 - 2000).collect();
            let hi: Vec<i16> = lo
                .iter()
                .map(|&l| l.saturating_add(next(3000) as i16))
                .collect();
            let mut expected = vec![0u64; o.div_ceil(64)];
            for ch in 0..o {
                let p: i32 = (0..taps)
                    .map(|t| i32::from(codes[t]) * i32::from(signs[t * o + ch]))
                    .sum();
                let negative = p < i32::from(lo[ch]) || p > i32::from(hi[ch]);
                expected[ch / 64] |= u64::from(negative) << (ch % 64);
            }
            let mut got = vec![!0u64; expected.len()];
            pixel_portable(&codes, &signs, &lo, &hi, &mut got);
            assert_eq!(got, expected, "portable, {taps} taps, {o} channels");
            for isa in Isa::available() {
                let mut got = vec![!0u64; expected.len()];
                pixel(CheckedIsa::new(isa), &codes, &signs, &lo, &hi, &mut got);
                assert_eq!(got, expected, "{isa:?}, {taps} taps, {o} channels");
            }
        }
    }
}
