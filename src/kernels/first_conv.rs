//! The pixel kernel of the bit-plane first convolution on the CPU: one output pixel's 8-bit
//! codes times the weight signs, summed in `i16` lanes, compared with per-channel ranges and
//! written as packed sign bits. The taps go in pairs: each `i16` lane takes the sum of two codes
//! times their signs at once (`vpmaddubsw`). The instruction set is the crate's
//! ([`super::isa::active_isa`], so `BURN_QNN_ISA` reaches it): AVX2 where the checked path is
//! AVX2 or AVX-512, portable code elsewhere.

use super::{CheckedIsa, isa::Isa};

/// Channels per pass of the pixel kernel: two vectors of 16 `i16` lanes, one 32-bit mask.
pub(crate) const LANES: usize = 32;

/// Taps per pair: the two codes one `i16` lane sums at once.
pub(crate) const PAIR: usize = 2;

/// Where [`pixel`]'s `signs` hold the sign of tap `tap` for channel `channel` of `channels`:
/// the two taps of a pair side by side, per channel, pair after pair.
pub(crate) fn sign_index(tap: usize, channel: usize, channels: usize) -> usize {
    ((tap / PAIR) * channels + channel) * PAIR + tap % PAIR
}

/// One output pixel: `P[o] = Σ_t codes[t]·signs(t, o)`, and bit `o` of `bits` set (`−1`) where
/// `P[o]` is outside `lo[o] ..= hi[o]`.
///
/// The taps come in pairs: `codes` has an even length (a last tap of code 0 where needed), and
/// `signs` holds, per pair `p` and channel `o`, the two signs of taps `2p` and `2p + 1` side by
/// side ([`sign_index`], over `lo.len()` channels, a multiple of [`LANES`]). The sums must fit
/// `i16` (the caller checks `255·taps ≤ i16::MAX`).
pub(crate) fn pixel(
    isa: CheckedIsa,
    codes: &[u8],
    signs: &[i8],
    lo: &[i16],
    hi: &[i16],
    bits: &mut [u64],
) {
    let o = lo.len();
    assert!(
        o.is_multiple_of(LANES)
            && codes.len().is_multiple_of(PAIR)
            && signs.len() == codes.len() * o
            && hi.len() == o
            && bits.len() * 64 >= o,
        "first_conv::pixel: operand lengths"
    );
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a checked AVX-512 or AVX2 path runs on this CPU, which then has AVX2; the
        // lengths are checked above.
        Isa::Avx512 | Isa::Avx2 => unsafe { x86::pixel_avx2(codes, signs, lo, hi, bits) },
        _ => pixel_portable(codes, signs, lo, hi, bits),
    }
}

fn pixel_portable(codes: &[u8], signs: &[i8], lo: &[i16], hi: &[i16], bits: &mut [u64]) {
    let o = lo.len();
    bits.fill(0);
    let mut dots = [0i16; LANES];
    for chunk in 0..o / LANES {
        dots.fill(0);
        for (pair, row) in codes.chunks_exact(PAIR).zip(signs.chunks_exact(PAIR * o)) {
            let row = &row[chunk * LANES * PAIR..][..LANES * PAIR];
            for (d, s) in dots.iter_mut().zip(row.chunks_exact(PAIR)) {
                *d += i16::from(pair[0]) * i16::from(s[0]) + i16::from(pair[1]) * i16::from(s[1]);
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

    use super::{LANES, PAIR};

    /// Passes of [`LANES`] channels summed together over one read of the codes: 8 vectors of
    /// sums, half the registers.
    const GROUP: usize = 4;

    /// [`super::pixel_portable`] in AVX2: each pair of codes is broadcast, `vpmaddubsw`
    /// multiplies it by 16 channels' sign pairs and sums each pair (at most 510: no
    /// saturation), two compares find the sums outside their range, and a pack and
    /// `vpmovmskb` turn 32 lanes into 32 bits. Up to [`GROUP`] passes share each broadcast.
    ///
    /// # Safety
    /// The CPU has AVX2, and the lengths are as [`super::pixel`] checks.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pixel_avx2(
        codes: &[u8],
        signs: &[i8],
        lo: &[i16],
        hi: &[i16],
        bits: &mut [u64],
    ) {
        let o = lo.len();
        bits.fill(0);
        let mut base = 0;
        while base < o {
            let passes = ((o - base) / LANES).min(GROUP);
            // SAFETY: as this function's (the caller's lengths), with `base + passes·32 ≤ o`.
            unsafe {
                match passes {
                    4 => passes_avx2::<4>(codes, signs, base, lo, hi, bits),
                    3 => passes_avx2::<3>(codes, signs, base, lo, hi, bits),
                    2 => passes_avx2::<2>(codes, signs, base, lo, hi, bits),
                    _ => passes_avx2::<1>(codes, signs, base, lo, hi, bits),
                }
            }
            base += passes * LANES;
        }
    }

    /// Channels `base .. base + P·32` of [`pixel_avx2`].
    ///
    /// # Safety
    /// As [`pixel_avx2`], and `base + P·32 ≤ lo.len()`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn passes_avx2<const P: usize>(
        codes: &[u8],
        signs: &[i8],
        base: usize,
        lo: &[i16],
        hi: &[i16],
        bits: &mut [u64],
    ) {
        let o = lo.len();
        // SAFETY: every load is within the slices, by the caller's lengths: `codes` holds
        // whole pairs, and `signs` rows of `2·o` bytes a pair, of which this reads
        // `2·(base .. base + P·32)`.
        unsafe {
            let mut sums = [[_mm256_setzero_si256(); 2]; P];
            let pairs = codes.as_ptr().cast::<[u8; PAIR]>();
            for p in 0..codes.len() / PAIR {
                let pair = _mm256_set1_epi16(i16::from_le_bytes(pairs.add(p).read()));
                let row = signs.as_ptr().add((p * o + base) * PAIR);
                for (v, sum) in sums.as_flattened_mut().iter_mut().enumerate() {
                    let signs = _mm256_loadu_si256(row.add(32 * v).cast());
                    *sum = _mm256_add_epi16(*sum, _mm256_maddubs_epi16(pair, signs));
                }
            }
            let outside = |p: __m256i, at: usize| {
                let lo = _mm256_loadu_si256(lo.as_ptr().add(at).cast());
                let hi = _mm256_loadu_si256(hi.as_ptr().add(at).cast());
                _mm256_or_si256(_mm256_cmpgt_epi16(lo, p), _mm256_cmpgt_epi16(p, hi))
            };
            for (pass, [a, b]) in sums.into_iter().enumerate() {
                let at = base + pass * LANES;
                let (ma, mb) = (outside(a, at), outside(b, at + 16));
                // Bytes in lane order 0–7 of a, 0–7 of b, 8–15 of a, 8–15 of b: reorder the
                // 64-bit quarters to a's 16 bytes then b's.
                let packed = _mm256_permute4x64_epi64(_mm256_packs_epi16(ma, mb), 0b11_01_10_00);
                let mask = _mm256_movemask_epi8(packed) as u32;
                bits[at / 64] |= u64::from(mask) << (at % 64);
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
        for (taps, o) in [(27usize, 32usize), (9, 64), (75, 96), (27, 160)] {
            let padded = taps.next_multiple_of(PAIR);
            let mut codes: Vec<u8> = (0..taps).map(|_| next(256) as u8).collect();
            codes.resize(padded, 0);
            // The last pair's second sign is random too: its code is 0.
            let sign = |_| if next(2) == 0 { -1i8 } else { 1 };
            let signs: Vec<i8> = (0..padded * o).map(sign).collect();
            let sign_of = |t: usize, ch: usize| signs[sign_index(t, ch, o)];
            let lo: Vec<i16> = (0..o).map(|_| next(4000) as i16 - 2000).collect();
            let hi: Vec<i16> = lo
                .iter()
                .map(|&l| l.saturating_add(next(3000) as i16))
                .collect();
            let mut expected = vec![0u64; o.div_ceil(64)];
            for ch in 0..o {
                let p: i32 = (0..taps)
                    .map(|t| i32::from(codes[t]) * i32::from(sign_of(t, ch)))
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
