//! The bit-plane first convolution on the CPU: 8-bit codes times weight signs, in `i16` lanes,
//! then its batch norm and sign as integer ranges, written as packed sign bits.
//!
//! The layer's output is `((P − 127.5·M)/127.5 + bias)` through batch norm and sign, where `P`
//! is the integer product of codes and signs and `M` the sum of the signs of the taps inside
//! the image. `M` changes only near the borders, so the ranges of `P` that give `+1` are kept
//! per class of output rows, class of output columns and channel.

use rayon::prelude::*;

use super::Norm;
use crate::{
    inference::{
        record::PackedLayerRecord,
        thresholds::{binarizes_positive, positive_range},
    },
    kernels::{conv::PackedActivations, words_per_row},
    nn::HALF_RANGE,
    ops::ConvGeometry,
};

/// The largest 8-bit code.
const MAX_CODE: i64 = 255;

/// Channels per pass of the pixel kernel: two vectors of 16 `i16` lanes, one 32-bit mask.
const LANES: usize = 32;

/// A first convolution (stride 1, no dilation), its batch norm and sign.
#[derive(Debug)]
pub(super) struct FirstConv {
    in_channels: usize,
    out_channels: usize,
    /// `out_channels` rounded up to [`LANES`].
    padded_out: usize,
    kernel: [usize; 2],
    padding: [usize; 2],
    input: [usize; 2],
    output: [usize; 2],
    /// The weight signs `[tap][padded_out]`, tap `(c·k_h + i)·k_w + j`; 0 for padding channels.
    signs: Vec<i16>,
    /// The class of each output row and of each output column.
    row_class: Vec<usize>,
    col_class: Vec<usize>,
    col_classes: usize,
    /// `[(row class·col classes + col class)·padded_out + o]`: the products `P` in `lo ..= hi`
    /// give `+1` (padding channels: all, so their bits stay 0).
    lo: Vec<i16>,
    hi: Vec<i16>,
}

/// For each output position along an axis, the index of its range of kernel taps inside the
/// input, and how many distinct ranges there are.
fn tap_classes(
    input: usize,
    output: usize,
    kernel: usize,
    padding: usize,
) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let classes = (0..output)
        .map(|y| {
            // Taps `i` with `0 ≤ y + i − padding < input`.
            let first = padding.saturating_sub(y);
            let end = (input + padding).saturating_sub(y).min(kernel);
            let range = (first, end.max(first));
            match ranges.iter().position(|&r| r == range) {
                Some(class) => class,
                None => {
                    ranges.push(range);
                    ranges.len() - 1
                }
            }
        })
        .collect();
    (classes, ranges)
}

/// An `f32` range end as `i16`: ±∞ (and anything past the products' reach) saturate.
fn saturate(v: f32) -> i16 {
    v.clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

impl FirstConv {
    /// The layer of `record` on `input`-sized images, or `None` if its products could leave
    /// the `i16` lanes or the record holds no batch norm.
    pub(super) fn new(
        layer: &PackedLayerRecord,
        geometry: &ConvGeometry,
        input: [usize; 2],
    ) -> Option<FirstConv> {
        let [c_in, c_out] = geometry.channels;
        let [kh, kw] = geometry.kernel;
        let taps = kh * kw;
        let k = MAX_CODE * (c_in * taps) as i64;
        if k >= i64::from(i16::MAX) || geometry.stride != [1, 1] || geometry.dilation != [1, 1] {
            return None;
        }
        let norm = Norm::from_record(&layer.output)?;
        let padded_out = c_out.div_ceil(LANES) * LANES;
        let cw = words_per_row(c_in);
        let rows = super::conv_rows_of(&layer.weights, geometry)?;
        let words = rows.words();
        // The record's rows: `[o, i, j, c]`, `cw` words a tap, bit 1 for −1.
        let mut signs = vec![0i16; c_in * taps * padded_out];
        for o in 0..c_out {
            for t in 0..taps {
                for c in 0..c_in {
                    let negative = (words[(o * taps + t) * cw + c / 64] >> (c % 64)) & 1 == 1;
                    signs[(c * taps + t) * padded_out + o] = if negative { -1 } else { 1 };
                }
            }
        }
        let output = geometry.output_size(input);
        let (row_class, row_ranges) = tap_classes(input[0], output[0], kh, geometry.padding[0]);
        let (col_class, col_ranges) = tap_classes(input[1], output[1], kw, geometry.padding[1]);
        let classes = row_ranges.len() * col_ranges.len();
        let (mut lo, mut hi) = (
            vec![i16::MIN; classes * padded_out],
            vec![i16::MAX; classes * padded_out],
        );
        for (r, &(i0, i1)) in row_ranges.iter().enumerate() {
            for (s, &(j0, j1)) in col_ranges.iter().enumerate() {
                let at = (r * col_ranges.len() + s) * padded_out;
                for o in 0..c_out {
                    let inside: i64 = (0..c_in)
                        .flat_map(|c| {
                            (i0..i1).flat_map(move |i| (j0..j1).map(move |j| (c, i * kw + j)))
                        })
                        .map(|(c, t)| i64::from(signs[(c * taps + t) * padded_out + o]))
                        .sum();
                    let shift = inside as f32 * HALF_RANGE;
                    let bias = layer.bias.as_ref().map_or(0.0, |b| b[o]);
                    let (l, h) = positive_range(k, |p| {
                        // As the tensor path: `(P − M·127.5)/127.5`, then `+ bias` if any.
                        let mut v = (p as f32 - shift) / HALF_RANGE;
                        if layer.bias.is_some() {
                            v += bias;
                        }
                        binarizes_positive(norm.apply(o, v))
                    });
                    lo[at + o] = saturate(l);
                    hi[at + o] = saturate(h);
                }
            }
        }
        Some(FirstConv {
            in_channels: c_in,
            out_channels: c_out,
            padded_out,
            kernel: geometry.kernel,
            padding: geometry.padding,
            input,
            output,
            signs,
            row_class,
            col_class,
            col_classes: col_ranges.len(),
            lo,
            hi,
        })
    }

    /// Packed signs `[n, C_out, H_out, W_out]` from codes `[n, C_in, H, W]`.
    pub(super) fn forward(&self, codes: &[i16], n: usize) -> PackedActivations {
        let [oh, ow] = self.output;
        let [h, w] = self.input;
        let [ph, pw] = self.padding;
        let [kh, kw] = self.kernel;
        let c = self.in_channels;
        // Codes with a border of zeros, so gathering a pixel's taps needs no bounds checks.
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let mut padded = vec![0i16; n * c * hp * wp];
        for (plane, src) in padded
            .chunks_exact_mut(hp * wp)
            .zip(codes.chunks_exact(h * w))
        {
            for (y, row) in src.chunks_exact(w).enumerate() {
                plane[(y + ph) * wp + pw..][..w].copy_from_slice(row);
            }
        }
        let cw = words_per_row(self.out_channels);
        let mut words = vec![0u64; n * oh * cw * ow];
        words.par_chunks_mut(cw * ow).enumerate().for_each_init(
            || {
                (
                    vec![0i16; c * kh * kw],
                    vec![0u64; self.padded_out.div_ceil(64)],
                )
            },
            |(taps, bits), (row, dst)| {
                let (image, y) = (row / oh, row % oh);
                let image = &padded[image * c * hp * wp..][..c * hp * wp];
                for x in 0..ow {
                    let mut at = 0;
                    for plane in image.chunks_exact(hp * wp) {
                        for i in 0..kh {
                            taps[at..at + kw].copy_from_slice(&plane[(y + i) * wp + x..][..kw]);
                            at += kw;
                        }
                    }
                    let class = self.row_class[y] * self.col_classes + self.col_class[x];
                    let ranges = class * self.padded_out..(class + 1) * self.padded_out;
                    pixel(
                        taps,
                        &self.signs,
                        &self.lo[ranges.clone()],
                        &self.hi[ranges],
                        bits,
                    );
                    for (wd, &word) in bits.iter().enumerate().take(cw) {
                        dst[wd * ow + x] = word;
                    }
                }
            },
        );
        PackedActivations::from_words(words, n, self.out_channels, oh, ow)
    }
}

/// One output pixel: `P[o] = Σ_t codes[t]·signs[t][o]`, and bit `o` of `bits` set (`−1`) where
/// `P[o]` is outside `lo[o] ..= hi[o]`. `signs` has `codes.len()` rows of `lo.len()` (a
/// multiple of [`LANES`]) channels.
fn pixel(codes: &[i16], signs: &[i16], lo: &[i16], hi: &[i16], bits: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { x86::pixel_avx2(codes, signs, lo, hi, bits) };
        return;
    }
    pixel_portable(codes, signs, lo, hi, bits)
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

    /// The AVX2 pixel kernel and the portable one agree with the definition, channel counts
    /// past one pass included.
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
            let mut got = vec![!0u64; expected.len()];
            pixel(&codes, &signs, &lo, &hi, &mut got);
            assert_eq!(got, expected, "active, {taps} taps, {o} channels");
        }
    }

    /// Output positions along an axis group by the kernel taps that fall inside the input.
    #[test]
    fn tap_classes_group_border_positions() {
        let (classes, ranges) = tap_classes(5, 5, 3, 1);
        assert_eq!(classes, [0, 1, 1, 1, 2]);
        assert_eq!(ranges, [(1, 3), (0, 3), (0, 2)]);
        let (classes, ranges) = tap_classes(4, 2, 3, 0);
        assert_eq!(classes, [0, 0]);
        assert_eq!(ranges, [(0, 3)]);
    }
}
