//! The bit-plane first layer in training, on the CPU: its forward `(P − 127.5·M)/127.5` from the
//! 8-bit codes and the weight signs (for stride 1 and no dilation, a direct convolution on
//! AVX-512 that writes the output in one pass; else `P` on AMX tiles where
//! [`super::amx_bf16`] runs, or through the im2col blocks of [`super::im2col`]), and its weight
//! gradient through the im2col blocks (zero padding).
//!
//! `P = codes ⊛ sign(w)` sums products of integers below 2^24, so it is exact in any order, and
//! `M`, the sum of the weight signs over the taps inside the image, is an exact integer too:
//! the output equals the layer's float formula bit for bit, and so its packed inference form.

use std::ops::Range;

use rayon::prelude::*;

mod direct;

use super::{
    CheckedIsa,
    amx_bf16::{self, AmxBf16},
    backward::Bits,
    check_len,
    conv::ConvCall,
    im2col,
    isa::active_isa,
};
use crate::nn::HALF_RANGE;

/// `M` `[C_out, H_out, W_out]`: for each output position, the sum of the weight signs
/// (`weight_signs`, `[C_out, C_in, k_h, k_w]` as ±1) over the taps that read inside the image.
fn inside_sums(weight_signs: &[f32], g: &ConvCall, [oh, ow]: [usize; 2]) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let taps = kh * kw;
    let mut sums = vec![0f32; g.out_channels * oh * ow];
    if sums.is_empty() {
        return sums;
    }
    // Along each axis, the kernel offsets whose taps fall inside the image: a run of them.
    let inside = |out: usize, k: usize, axis: usize, size: usize| -> Vec<Range<usize>> {
        (0..out)
            .map(|o| {
                let reads_inside = |k: &usize| {
                    (o * g.stride[axis] + k * g.dilation[axis])
                        .checked_sub(g.padding[axis])
                        .is_some_and(|i| i < size)
                };
                let first = (0..k).find(reads_inside).unwrap_or(k);
                let end = (first..k).find(|k| !reads_inside(k)).unwrap_or(k);
                first..end
            })
            .collect()
    };
    let (rows, cols) = (inside(oh, kh, 0, g.height), inside(ow, kw, 1, g.width));
    sums.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(co, sums)| {
            // The signs summed over input channels, per tap.
            let mut tap_sums = vec![0f32; taps];
            for ci in 0..g.in_channels {
                let w = &weight_signs[(co * g.in_channels + ci) * taps..][..taps];
                tap_sums.iter_mut().zip(w).for_each(|(t, v)| *t += v);
            }
            // Per output column, each kernel row's sum over the columns inside.
            let column_sums: Vec<f32> = cols
                .iter()
                .flat_map(|kx| {
                    let tap_sums = &tap_sums;
                    (0..kh).map(move |ky| tap_sums[ky * kw..][kx.clone()].iter().sum::<f32>())
                })
                .collect();
            for (row, ky) in sums.chunks_exact_mut(ow).zip(&rows) {
                for (m, column) in row.iter_mut().zip(column_sums.chunks_exact(kh)) {
                    *m = column[ky.clone()].iter().sum();
                }
            }
        });
    sums
}

/// The 8-bit code of an input in `[−1, 1]`: `round((x + 1)·127.5)`, ties to even as Burn's
/// `round`, clamped to `[0, 255]` (the upper bound first, so NaN becomes 255 as in
/// burn-ndarray's `clamp`). Clamping before rounding gives the same value (both bounds are
/// integers), and lets the rounding be two additions that vectorize: `v + 2²³` has no fraction
/// bits for `v` in `[0, 255]`, so the addition rounds to an integer, ties to even.
pub(crate) fn pixel_code(x: f32) -> f32 {
    let scaled = (x + 1.0) * HALF_RANGE;
    let below_top = if scaled < 255.0 { scaled } else { 255.0 };
    let clamped = if below_top > 0.0 { below_top } else { 0.0 };
    (clamped + ROUND) - ROUND
}

/// `2²³`: floats from here up to `2²⁴` are the integers, held in the low mantissa bits.
const ROUND: f32 = 8_388_608.0;

/// [`pixel_code`] as a byte. The code plus `2²³` holds the code in its low mantissa byte, which
/// vectorizes where a float-to-integer conversion (with its saturation) does not.
pub(crate) fn pixel_code_byte(x: f32) -> u8 {
    (pixel_code(x) + ROUND).to_bits() as u8
}

/// The 8-bit codes of inputs in `[−1, 1]` ([`crate::nn::pixel_codes`]), in parallel:
/// `round((x + 1)·127.5)`, ties to even as Burn's `round`, clamped to `[0, 255]` (the upper
/// bound first, so NaN becomes 255 as in burn-ndarray's `clamp`): the same bits as that
/// function's tensor ops on `NdArray`.
pub fn pixel_codes(values: &[f32]) -> Vec<f32> {
    values
        .par_iter()
        .with_min_len(1 << 14)
        .map(|&x| pixel_code(x))
        .collect()
}

/// The layer's output `[N, C_out, H_out, W_out]` from the 8-bit `codes` `[N, C_in, H, W]` (as
/// floats `0 ..= 255`) and `weight_signs` (±1, `[C_out, C_in, k_h, k_w]`): `(P − 127.5·M)/127.5`
/// with zero padding, written to `out`.
///
/// ```
/// use burn_qnn::kernels::{bit_plane::bit_plane_conv2d_forward, conv::ConvCall};
///
/// let g = ConvCall {
///     batch: 1, in_channels: 1, height: 1, width: 2, out_channels: 1,
///     kernel: [1, 3], stride: [1, 1], padding: [0, 1], dilation: [1, 1],
/// };
/// let mut out = [0.0; 2];
/// // Codes 255 and 0 are the inputs 1 and −1; the padded tap adds nothing.
/// bit_plane_conv2d_forward(&[255.0, 0.0], &[1.0, -1.0, 1.0], &g, &mut out);
/// assert_eq!(out, [-1.0 - 1.0, 1.0 + 1.0]);
/// ```
///
/// # Panics
/// If the geometry is impossible or a length does not match it.
pub fn bit_plane_conv2d_forward(
    codes: &[f32],
    weight_signs: &[f32],
    g: &ConvCall,
    out: &mut [f32],
) {
    let [oh, ow] = g
        .output_size()
        .unwrap_or_else(|e| panic!("bit-plane conv2d: {e}"));
    check_len(
        "bit-plane conv2d: input length",
        codes.len(),
        &[g.input_len()],
    );
    check_len(
        "bit-plane conv2d: weight length",
        weight_signs.len(),
        &[g.weights_len()],
    );
    check_len(
        "bit-plane conv2d: output length",
        out.len(),
        &[g.batch, g.out_channels, oh, ow],
    );
    let sums = inside_sums(weight_signs, g, [oh, ow]);
    let isa = CheckedIsa::new(active_isa());
    if direct::forward(isa, codes, weight_signs, &sums, g, out) {
        return;
    }
    let on_tiles = AmxBf16::active().is_some_and(|proof| {
        let taps = g.kernel[0] * g.kernel[1];
        let weight =
            |o: usize, i: usize, tap: usize| weight_signs[(o * g.in_channels + i) * taps + tap];
        amx_bf16::conv2d(proof, codes, amx_bf16::Input::Exact, 0.0, weight, g, out)
    });
    if !on_tiles {
        im2col::conv2d_forward(codes, weight_signs, g, out);
    }
    if sums.is_empty() {
        return;
    }
    out.par_chunks_exact_mut(sums.len()).for_each(|image| {
        for (y, m) in image.iter_mut().zip(&sums) {
            *y = (*y - m * HALF_RANGE) / HALF_RANGE;
        }
    });
}

/// The layer's weight gradient `[C_out, C_in, k_h, k_w]`: `grad_out` against the scaled inputs
/// `code/127.5 − 1` that each tap reads (zero on padding), then zero wherever `weight_blocked`
/// is set (the straight-through estimator's `|w| > 1`), written to `out`.
///
/// # Panics
/// If the geometry is impossible or a length does not match it.
pub fn bit_plane_conv2d_weight_grad(
    grad_out: &[f32],
    codes: &[f32],
    weight_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) {
    assert_eq!(
        weight_blocked.len(),
        g.weights_len(),
        "bit-plane conv2d weight gradient: weight bits"
    );
    let scaled: Vec<f32> = codes
        .par_iter()
        .with_min_len(1 << 14)
        .map(|&c| c / HALF_RANGE - 1.0)
        .collect();
    im2col::conv2d_weight_grad(grad_out, &scaled, g, out);
    weight_blocked.cut(0, out);
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    /// The parallel codes are the bits of the layer's tensor ops: halfway values (ties to even),
    /// values beyond `[−1, 1]` (clamped), NaN, over more than one parallel chunk.
    #[test]
    fn pixel_codes_are_the_tensor_ops_bits() {
        let mut values: Vec<f32> = (0..40_000)
            .map(|i| (i as f32 * 0.618_034).fract() * 2.6 - 1.3)
            .collect();
        // Inputs whose scaled value is a tie `c + ½`.
        values.extend((0..255).filter_map(|c| {
            let x = (c as f32 + 0.5) / HALF_RANGE - 1.0;
            ((x + 1.0) * HALF_RANGE == c as f32 + 0.5).then_some(x)
        }));
        let ties = values.len() - 40_000;
        assert!(ties > 10, "only {ties} ties");
        values.extend([f32::NAN, -0.0, 1.0, -1.0, f32::INFINITY]);
        let n = values.len();
        let tensor = Tensor::<NdArray, 1>::from_data(
            TensorData::new(values.clone(), [n]),
            &Default::default(),
        );
        let expected: Vec<f32> = crate::nn::pixel_codes(tensor).into_data().to_vec().unwrap();
        let got = pixel_codes(&values);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                g == e || (g.is_nan() && e.is_nan()),
                "value {i} ({}): {g} vs {e}",
                values[i]
            );
        }
    }

    /// The forward on every instruction set (AVX-512's direct kernel where this CPU has it,
    /// the im2col product elsewhere) gives the layer's formula bit for bit:
    /// `(P − 127.5·M)/127.5`, `P` the codes times the weight signs with zero padding and `M`
    /// the signs of the taps inside the image, on shapes around the kernel's 16 pixels and 8
    /// channels, with and without padding, and strides and dilations the direct kernel leaves
    /// to the im2col product.
    #[test]
    fn forward_is_the_formula_on_every_path() {
        use crate::kernels::isa::{Isa, with_isa};
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let shapes = [
            // batch, c_in, h, w, c_out, kernel, padding, stride, dilation
            (2, 3, 8, 8, 8, [3, 3], [1, 1], [1, 1], [1, 1]),
            (3, 3, 5, 17, 9, [3, 3], [1, 1], [1, 1], [1, 1]),
            (1, 1, 4, 33, 17, [1, 3], [0, 1], [1, 1], [1, 1]),
            (2, 2, 7, 6, 5, [2, 3], [0, 0], [1, 1], [1, 1]),
            (1, 4, 6, 20, 16, [3, 2], [2, 1], [1, 1], [1, 1]),
            (2, 3, 9, 9, 4, [3, 3], [1, 1], [2, 2], [1, 1]),
            (1, 2, 9, 9, 3, [3, 3], [2, 2], [1, 1], [2, 2]),
        ];
        for (batch, c_in, h, w, c_out, kernel, padding, stride, dilation) in shapes {
            let g = ConvCall {
                batch,
                in_channels: c_in,
                height: h,
                width: w,
                out_channels: c_out,
                kernel,
                stride,
                padding,
                dilation,
            };
            let codes: Vec<f32> = (0..g.input_len()).map(|_| next(256) as f32).collect();
            let signs: Vec<f32> = (0..g.weights_len())
                .map(|_| if next(2) == 0 { -1.0 } else { 1.0 })
                .collect();
            let [oh, ow] = g.output_size().unwrap();
            let mut expected = vec![0f32; batch * c_out * oh * ow];
            for (at, y) in expected.iter_mut().enumerate() {
                let (n, o, oy, ox) = (
                    at / (c_out * oh * ow),
                    at / (oh * ow) % c_out,
                    at / ow % oh,
                    at % ow,
                );
                let (mut p, mut m) = (0f32, 0f32);
                for c in 0..c_in {
                    for i in 0..kernel[0] {
                        for j in 0..kernel[1] {
                            let iy = (oy * stride[0] + i * dilation[0]).checked_sub(padding[0]);
                            let ix = (ox * stride[1] + j * dilation[1]).checked_sub(padding[1]);
                            if let (Some(iy), Some(ix)) = (iy, ix)
                                && iy < h
                                && ix < w
                            {
                                let s = signs[((o * c_in + c) * kernel[0] + i) * kernel[1] + j];
                                p += codes[((n * c_in + c) * h + iy) * w + ix] * s;
                                m += s;
                            }
                        }
                    }
                }
                *y = (p - m * HALF_RANGE) / HALF_RANGE;
            }
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; expected.len()];
                with_isa(isa, || {
                    bit_plane_conv2d_forward(&codes, &signs, &g, &mut out)
                });
                let same = out
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa:?}, {g:?}: {out:?} vs {expected:?}");
            }
        }
    }
}
