//! The bit-plane first convolution on the CPU: 8-bit codes times weight signs, in `i16` lanes,
//! then its batch norm and sign as integer ranges, written as packed sign bits.
//!
//! The layer's output is `((P − 127.5·M)/127.5 + bias)` through batch norm and sign, where `P`
//! is the integer product of codes and signs and `M` the sum of the signs of the taps inside
//! the image. `M` changes only near the borders, so the ranges of `P` that give `+1` are kept
//! per class of output rows, class of output columns and channel.

use rayon::prelude::*;

use crate::kernels::eval_norm::binarizes_positive;
use crate::{
    inference::{record::PackedLayerRecord, thresholds::positive_range},
    kernels::{
        CheckedIsa,
        conv::{PackedActivations, classes},
        first_conv::{LANES, PAIR, PixelWeights, code_pair, pixels, sign_index},
        isa::active_isa,
        words_per_row,
    },
    nn::HALF_RANGE,
    ops::ConvGeometry,
};

/// The largest 8-bit code.
const MAX_CODE: i64 = 255;

/// Code-times-sign products a thread computes at the least (about 5 µs of work): a layer with
/// no more runs on the calling thread.
const MIN_PRODUCTS_PER_THREAD: usize = 1 << 18;

/// A first convolution (stride 1, no dilation), its batch norm and sign.
#[derive(Debug)]
pub(crate) struct FirstConv {
    in_channels: usize,
    out_channels: usize,
    /// `out_channels` rounded up to [`LANES`].
    padded_out: usize,
    kernel: [usize; 2],
    padding: [usize; 2],
    input: [usize; 2],
    output: [usize; 2],
    /// The weight signs in pairs of taps, `[tap / 2][padded_out][tap % 2]` (the layout of
    /// [`pixel`]), tap `(c·k_h + i)·k_w + j`; 0 for padding channels and the padding tap.
    signs: Vec<i8>,
    /// Taps a pixel gathers: `c_in·k_h·k_w` rounded up to a pair.
    padded_taps: usize,
    /// The class of each output row and of each output column.
    row_class: Vec<usize>,
    col_class: Vec<usize>,
    col_classes: usize,
    /// `[(row class·col classes + col class)·padded_out + o]`: the products `P` in `lo ..= hi`
    /// give `+1` (padding channels: all, so their bits stay 0).
    lo: Vec<i16>,
    hi: Vec<i16>,
}

/// For each output position along an axis (stride 1, no dilation), the index of its range of
/// kernel taps inside the input, and the ranges `first..end` (the kernels' border classes,
/// whose tap sets are contiguous here).
fn tap_classes(
    input: usize,
    output: usize,
    kernel: usize,
    padding: usize,
) -> (Vec<usize>, Vec<(usize, usize)>) {
    let (class, sets) = classes(output, kernel, 1, 1, padding, input);
    let ranges = sets
        .iter()
        .map(|inside| {
            let first = inside.iter().position(|&t| t).unwrap_or(0);
            let end = inside
                .iter()
                .rposition(|&t| t)
                .map_or(first, |last| last + 1);
            (first, end)
        })
        .collect();
    (class, ranges)
}

/// An `f32` range end as `i16`: ±∞ (and anything past the products' reach) saturate.
fn saturate(v: f32) -> i16 {
    v.clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

impl FirstConv {
    /// The layer of `record` on `input`-sized images, or `None` if its products could leave
    /// the `i16` lanes or the record holds no batch norm.
    pub(crate) fn new(
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
        let norm = layer.output.eval_norm()?;
        let padded_out = c_out.div_ceil(LANES) * LANES;
        let cw = words_per_row(c_in);
        let rows = super::conv_rows_of(&layer.weights, geometry)?;
        let words = rows.words();
        let padded_taps = (c_in * taps).next_multiple_of(PAIR);
        let sign_at = |tap: usize, o: usize| sign_index(tap, o, padded_out);
        // The record's rows: `[o, i, j, c]`, `cw` words a tap, bit 1 for −1.
        let mut signs = vec![0i8; padded_taps * padded_out];
        for o in 0..c_out {
            for t in 0..taps {
                for c in 0..c_in {
                    let negative = (words[(o * taps + t) * cw + c / 64] >> (c % 64)) & 1 == 1;
                    signs[sign_at(c * taps + t, o)] = if negative { -1 } else { 1 };
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
                        .map(|(c, t)| i64::from(signs[sign_at(c * taps + t, o)]))
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
            padded_taps,
            row_class,
            col_class,
            col_classes: col_ranges.len(),
            lo,
            hi,
        })
    }

    /// Packed signs `[n, C_out, H_out, W_out]` from codes `[n, C_in, H, W]`.
    pub(crate) fn forward(&self, codes: &[u8], n: usize) -> PackedActivations {
        let [oh, ow] = self.output;
        let [h, w] = self.input;
        let [ph, pw] = self.padding;
        let [kh, kw] = self.kernel;
        let c = self.in_channels;
        // Codes with a border of zeros, so gathering a pixel's taps needs no bounds checks.
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let mut padded = vec![0u8; n * c * hp * wp];
        for (plane, src) in padded
            .chunks_exact_mut(hp * wp)
            .zip(codes.chunks_exact(h * w))
        {
            for (y, row) in src.chunks_exact(w).enumerate() {
                plane[(y + ph) * wp + pw..][..w].copy_from_slice(row);
            }
        }
        // Where each tap reads in an image's padded codes, from its output pixel's corner; the
        // padding tap (odd taps) reads nothing.
        let tap_offsets: Vec<Option<usize>> = (0..self.padded_taps)
            .map(|t| {
                let (plane, i, j) = (t / (kh * kw), t / kw % kh, t % kw);
                (plane < c).then_some((plane * hp + i) * wp + j)
            })
            .collect();
        let weights = PixelWeights {
            channels: self.padded_out,
            signs: &self.signs,
            lo: &self.lo,
            hi: &self.hi,
        };
        let cw = words_per_row(self.out_channels);
        let isa = CheckedIsa::new(active_isa());
        let mut words = vec![0u64; n * oh * cw * ow];
        let no_codes = vec![0u8; ow];
        let scratch = || (vec![0u16; tap_offsets.len() / PAIR * ow], vec![0usize; ow]);
        let row_of_pixels = |(pairs, classes): &mut (Vec<u16>, Vec<usize>),
                             (row, dst): (usize, &mut [u64])| {
            let (image, y) = (row / oh, row % oh);
            let image = &padded[image * c * hp * wp..][..c * hp * wp];
            // The row's codes of a tap: the padding tap's are 0.
            let codes_of =
                |tap: Option<usize>| tap.map_or(&no_codes[..], |at| &image[at + y * wp..][..ow]);
            for (step, taps) in pairs
                .chunks_exact_mut(ow)
                .zip(tap_offsets.chunks_exact(PAIR))
            {
                let (first, second) = (codes_of(taps[0]), codes_of(taps[1]));
                for ((pair, &a), &b) in step.iter_mut().zip(first).zip(second) {
                    *pair = code_pair(a, b);
                }
            }
            for (class, &col) in classes.iter_mut().zip(&self.col_class) {
                *class = self.row_class[y] * self.col_classes + col;
            }
            pixels(isa, &weights, pairs, classes, dst);
        };
        // Rows a thread takes at the least: a small layer runs on this thread alone, where
        // handing work to another would cost more than the work.
        let row_products = ow * self.padded_out * self.padded_taps;
        let min_rows = MIN_PRODUCTS_PER_THREAD.div_ceil(row_products.max(1));
        if n * oh <= min_rows {
            let mut scratch = scratch();
            for job in words.chunks_mut(cw * ow).enumerate() {
                row_of_pixels(&mut scratch, job);
            }
        } else {
            words
                .par_chunks_mut(cw * ow)
                .enumerate()
                .with_min_len(min_rows)
                .for_each_init(scratch, row_of_pixels);
        }
        PackedActivations::from_words(words, n, self.out_channels, oh, ow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
