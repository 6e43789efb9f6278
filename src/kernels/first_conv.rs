//! The pixel kernel of the bit-plane first convolution on the CPU: a row of output pixels' 8-bit
//! codes times the weight signs, summed in `i16` lanes, compared with per-channel ranges and
//! written as packed sign bits. The taps go in pairs: each `i16` lane takes the sum of two codes
//! times their signs at once (`vpmaddubsw`), and two pixels share each load of the signs. The
//! instruction set is the crate's ([`super::isa::active_isa`], so `BURN_QNN_ISA` reaches it):
//! AVX2 where the checked path is AVX2 or AVX-512, portable code elsewhere.

use super::{CheckedIsa, isa::Isa};

/// Channels per pass of the pixel kernel: two vectors of 16 `i16` lanes, one 32-bit mask.
pub(crate) const LANES: usize = 32;

/// Taps per pair: the two codes one `i16` lane sums at once.
pub(crate) const PAIR: usize = 2;

/// Where [`pixels`]'s `signs` hold the sign of tap `tap` for channel `channel` of `channels`:
/// the two taps of a pair side by side, per channel, pair after pair.
pub(crate) fn sign_index(tap: usize, channel: usize, channels: usize) -> usize {
    ((tap / PAIR) * channels + channel) * PAIR + tap % PAIR
}

/// The two codes of a pair of taps as one `u16`: the first tap's code in the low byte.
pub(crate) fn code_pair(first: u8, second: u8) -> u16 {
    u16::from_le_bytes([first, second])
}

/// A layer's constant operands for [`pixels`].
pub(crate) struct PixelWeights<'a> {
    /// Output channels, a multiple of [`LANES`].
    pub channels: usize,
    /// Per pair `p` and channel `o`, the two signs of taps `2p` and `2p + 1` side by side
    /// ([`sign_index`]).
    pub signs: &'a [i8],
    /// Whole classes of `channels` ranges: the sums in `lo ..= hi` give `+1`.
    pub lo: &'a [i16],
    /// See `lo`.
    pub hi: &'a [i16],
}

/// A row of `count = classes.len()` output pixels: `P[x][o] = Σ_t code(x, t)·signs(t, o)`, and
/// bit `o` of pixel `x` set (`−1`) where `P[x][o]` is outside its range `lo[r + o] ..=
/// hi[r + o]`, `r = classes[x]·channels`.
///
/// - `pairs` holds, pair of taps after pair, the `count` pixels' codes of that pair
///   ([`code_pair`]): `pairs[p·count + x]` for taps `2p` and `2p + 1` (a last tap of code 0
///   where the taps are odd).
/// - `bits` receives the words word-major: word `w` of pixel `x` at `w·count + x`.
///
/// The sums must fit `i16` (the caller checks `255·taps ≤ i16::MAX`).
pub(crate) fn pixels(
    isa: CheckedIsa,
    weights: &PixelWeights,
    pairs: &[u16],
    classes: &[usize],
    bits: &mut [u64],
) {
    let (count, o) = (classes.len(), weights.channels);
    let steps = pairs.len() / count.max(1);
    assert!(
        count > 0
            && o.is_multiple_of(LANES)
            && pairs.len() == steps * count
            && weights.signs.len() == steps * PAIR * o
            && weights.lo.len() == weights.hi.len()
            && classes.iter().all(|&r| (r + 1) * o <= weights.lo.len())
            && bits.len() == o.div_ceil(64) * count,
        "first_conv::pixels: operand lengths"
    );
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a checked AVX-512 or AVX2 path runs on this CPU, which then has AVX2; the
        // lengths are checked above.
        Isa::Avx512 | Isa::Avx2 => unsafe { x86::pixels_avx2(weights, pairs, classes, bits) },
        _ => pixels_portable(weights, pairs, classes, bits),
    }
}

fn pixels_portable(weights: &PixelWeights, pairs: &[u16], classes: &[usize], bits: &mut [u64]) {
    let (count, o) = (classes.len(), weights.channels);
    bits.fill(0);
    for (x, &class) in classes.iter().enumerate() {
        let mut dots = vec![0i16; o];
        for (p, row) in weights.signs.chunks_exact(PAIR * o).enumerate() {
            let [first, second] = pairs[p * count + x].to_le_bytes();
            for (d, s) in dots.iter_mut().zip(row.chunks_exact(PAIR)) {
                *d += i16::from(first) * i16::from(s[0]) + i16::from(second) * i16::from(s[1]);
            }
        }
        for (ch, &p) in dots.iter().enumerate() {
            let at = class * o + ch;
            let negative = p < weights.lo[at] || p > weights.hi[at];
            bits[(ch / 64) * count + x] |= u64::from(negative) << (ch % 64);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LANES, PAIR, PixelWeights};

    /// [`super::pixels_portable`] in AVX2, in blocks of two pixels by 64 channels (32 where
    /// fewer are left): each pair of codes is broadcast, `vpmaddubsw` multiplies it by 16
    /// channels' sign pairs and sums each pair (at most 510: no saturation), two compares find
    /// the sums outside their range, and a pack and `vpmovmskb` turn 32 lanes into 32 bits.
    ///
    /// # Safety
    /// The CPU has AVX2, and the lengths are as [`super::pixels`] checks.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pixels_avx2(
        weights: &PixelWeights,
        pairs: &[u16],
        classes: &[usize],
        bits: &mut [u64],
    ) {
        let (count, o) = (classes.len(), weights.channels);
        let mut base = 0;
        while base < o {
            let wide = o - base >= 2 * LANES;
            let mut x = 0;
            while x < count {
                let two = x + 1 < count;
                let at = Block { base, x };
                // SAFETY: as this function's (the caller's lengths), with `base` a multiple of
                // 64 below `o`, `base + 32·passes ≤ o` and `x + pixels ≤ count`.
                unsafe {
                    match (two, wide) {
                        (true, true) => block::<2, 2>(weights, pairs, classes, bits, at),
                        (true, false) => block::<2, 1>(weights, pairs, classes, bits, at),
                        (false, true) => block::<1, 2>(weights, pairs, classes, bits, at),
                        (false, false) => block::<1, 1>(weights, pairs, classes, bits, at),
                    }
                }
                x += if two { 2 } else { 1 };
            }
            base += if wide { 2 * LANES } else { LANES };
        }
    }

    /// Where a block starts: its first channel and first pixel.
    #[derive(Clone, Copy)]
    struct Block {
        base: usize,
        x: usize,
    }

    /// Pixels `x .. x + X`, channels `base .. base + 32·P` of [`pixels_avx2`].
    ///
    /// # Safety
    /// As [`pixels_avx2`], with `base` a multiple of 64, `base + 32·P ≤ o` and
    /// `x + X ≤ count`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block<const X: usize, const P: usize>(
        weights: &PixelWeights,
        pairs: &[u16],
        classes: &[usize],
        bits: &mut [u64],
        Block { base, x }: Block,
    ) {
        let (count, o) = (classes.len(), weights.channels);
        let steps = pairs.len() / count;
        let PixelWeights { signs, lo, hi, .. } = *weights;
        // SAFETY: every load is within the slices, by the caller's lengths: `pairs` holds
        // `steps` rows of `count` pairs, of which this reads `x .. x + X`; `signs` rows of
        // `2·o` bytes a pair, of which this reads `2·(base .. base + 32·P)`; and `lo`, `hi`
        // whole classes of `o` channels.
        unsafe {
            let mut sums = [[[_mm256_setzero_si256(); 2]; P]; X];
            for step in 0..steps {
                let row = signs.as_ptr().add((step * o + base) * PAIR);
                let weights: [[__m256i; 2]; P] = std::array::from_fn(|pass| {
                    std::array::from_fn(|half| {
                        _mm256_loadu_si256(row.add(LANES * PAIR * pass + 32 * half).cast())
                    })
                });
                let codes = pairs.as_ptr().add(step * count + x);
                for (pixel, sums) in sums.iter_mut().enumerate() {
                    let pair = _mm256_set1_epi16(codes.add(pixel).read() as i16);
                    for (sum, &w) in sums
                        .as_flattened_mut()
                        .iter_mut()
                        .zip(weights.as_flattened())
                    {
                        *sum = _mm256_add_epi16(*sum, _mm256_maddubs_epi16(pair, w));
                    }
                }
            }
            for (pixel, sums) in sums.into_iter().enumerate() {
                let range = classes[x + pixel] * o + base;
                let outside = |p: __m256i, at: usize| {
                    let lo = _mm256_loadu_si256(lo.as_ptr().add(at).cast());
                    let hi = _mm256_loadu_si256(hi.as_ptr().add(at).cast());
                    _mm256_or_si256(_mm256_cmpgt_epi16(lo, p), _mm256_cmpgt_epi16(p, hi))
                };
                let mut word = 0u64;
                for (pass, [a, b]) in sums.into_iter().enumerate() {
                    let at = range + pass * LANES;
                    let (ma, mb) = (outside(a, at), outside(b, at + 16));
                    // Bytes in lane order 0–7 of a, 0–7 of b, 8–15 of a, 8–15 of b: reorder
                    // the 64-bit quarters to a's 16 bytes then b's.
                    let packed =
                        _mm256_permute4x64_epi64(_mm256_packs_epi16(ma, mb), 0b11_01_10_00);
                    let mask = _mm256_movemask_epi8(packed) as u32;
                    word |= u64::from(mask) << (pass * LANES);
                }
                bits[(base / 64) * count + x + pixel] = word;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set's pixel kernel agrees with the definition: odd taps, odd pixel
    /// counts (a last block of one pixel), channels past one block of 64 and a last pass of 32.
    #[test]
    fn pixel_kernels_match_the_definition() {
        let mut seed = 9u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let shapes = [
            (27usize, 32usize, 1usize),
            (9, 64, 2),
            (75, 96, 3),
            (27, 160, 7),
        ];
        for (taps, o, count) in shapes {
            let steps = taps.div_ceil(PAIR);
            let class_count = 3;
            let mut codes: Vec<Vec<u8>> = (0..count)
                .map(|_| (0..taps).map(|_| next(256) as u8).collect())
                .collect();
            for pixel in &mut codes {
                pixel.resize(steps * PAIR, 0);
            }
            let pairs: Vec<u16> = (0..steps)
                .flat_map(|p| codes.iter().map(move |c| code_pair(c[2 * p], c[2 * p + 1])))
                .collect();
            // The last pair's second sign is random too: its code is 0.
            let sign = |_| if next(2) == 0 { -1i8 } else { 1 };
            let signs: Vec<i8> = (0..steps * PAIR * o).map(sign).collect();
            let lo: Vec<i16> = (0..class_count * o)
                .map(|_| next(4000) as i16 - 2000)
                .collect();
            let hi: Vec<i16> = lo
                .iter()
                .map(|&l| l.saturating_add(next(3000) as i16))
                .collect();
            let classes: Vec<usize> = (0..count)
                .map(|_| next(class_count as u64) as usize)
                .collect();
            let weights = PixelWeights {
                channels: o,
                signs: &signs,
                lo: &lo,
                hi: &hi,
            };
            let words = o.div_ceil(64);
            let mut expected = vec![0u64; words * count];
            for (x, pixel) in codes.iter().enumerate() {
                for ch in 0..o {
                    let p: i32 = (0..taps)
                        .map(|t| i32::from(pixel[t]) * i32::from(signs[sign_index(t, ch, o)]))
                        .sum();
                    let at = classes[x] * o + ch;
                    let negative = p < i32::from(lo[at]) || p > i32::from(hi[at]);
                    expected[(ch / 64) * count + x] |= u64::from(negative) << (ch % 64);
                }
            }
            let mut got = vec![!0u64; expected.len()];
            pixels_portable(&weights, &pairs, &classes, &mut got);
            assert_eq!(
                got, expected,
                "portable, {taps} taps, {o} channels, {count} pixels"
            );
            for isa in Isa::available() {
                let mut got = vec![!0u64; expected.len()];
                pixels(CheckedIsa::new(isa), &weights, &pairs, &classes, &mut got);
                assert_eq!(
                    got, expected,
                    "{isa:?}, {taps} taps, {o} channels, {count} pixels"
                );
            }
        }
    }
}
