//! The bit-plane first layer in training, on the CPU: its forward `(P − 127.5·M)/127.5` from the
//! 8-bit codes and the weight signs (`P` on AMX tiles where [`super::amx_bf16`] runs, else
//! through the im2col blocks of [`super::im2col`]), and its weight gradient through the im2col
//! blocks (zero padding).
//!
//! `P = codes ⊛ sign(w)` sums products of integers below 2^24, so it is exact in any order, and
//! `M`, the sum of the weight signs over the taps inside the image, is an exact integer too:
//! the output equals the layer's float formula bit for bit, and so its packed inference form.

use rayon::prelude::*;

use super::{
    amx_bf16::{self, AmxBf16},
    backward::Bits,
    conv::ConvGeometry,
    im2col,
};
use crate::nn::HALF_RANGE;

/// `M` `[C_out, H_out, W_out]`: for each output position, the sum of the weight signs
/// (`weight_signs`, `[C_out, C_in, k_h, k_w]` as ±1) over the taps that read inside the image.
fn inside_sums(weight_signs: &[f32], g: &ConvGeometry, [oh, ow]: [usize; 2]) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let taps = kh * kw;
    let mut sums = vec![0f32; g.out_channels * oh * ow];
    let inside = |o: usize, k: usize, axis: usize, size: usize| {
        (o * g.stride[axis] + k * g.dilation[axis])
            .checked_sub(g.padding[axis])
            .is_some_and(|i| i < size)
    };
    for co in 0..g.out_channels {
        // The signs summed over input channels, per tap.
        let mut tap_sums = vec![0f32; taps];
        for ci in 0..g.in_channels {
            let w = &weight_signs[(co * g.in_channels + ci) * taps..][..taps];
            tap_sums.iter_mut().zip(w).for_each(|(t, v)| *t += v);
        }
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = 0f32;
                for ky in (0..kh).filter(|&ky| inside(oy, ky, 0, g.height)) {
                    for kx in (0..kw).filter(|&kx| inside(ox, kx, 1, g.width)) {
                        m += tap_sums[ky * kw + kx];
                    }
                }
                sums[(co * oh + oy) * ow + ox] = m;
            }
        }
    }
    sums
}

/// The layer's output `[N, C_out, H_out, W_out]` from the 8-bit `codes` `[N, C_in, H, W]` (as
/// floats `0 ..= 255`) and `weight_signs` (±1, `[C_out, C_in, k_h, k_w]`): `(P − 127.5·M)/127.5`
/// with zero padding, written to `out`.
///
/// ```
/// use burn_qnn::kernels::{bit_plane::bit_plane_conv2d_forward, conv::ConvGeometry};
///
/// let g = ConvGeometry {
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
    g: &ConvGeometry,
    out: &mut [f32],
) {
    let on_tiles = AmxBf16::active().is_some_and(|proof| {
        let taps = g.kernel[0] * g.kernel[1];
        let weight =
            |o: usize, i: usize, tap: usize| weight_signs[(o * g.in_channels + i) * taps + tap];
        amx_bf16::conv2d(proof, codes, amx_bf16::Input::Exact, 0.0, weight, g, out)
    });
    if !on_tiles {
        im2col::conv2d_forward(codes, weight_signs, g, out);
    }
    let [oh, ow] = g.output_size().expect("checked by the convolution");
    let sums = inside_sums(weight_signs, g, [oh, ow]);
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
    g: &ConvGeometry,
    out: &mut [f32],
) {
    assert_eq!(
        weight_blocked.len(),
        g.weights_len(),
        "bit-plane conv2d weight gradient: weight bits"
    );
    let scaled: Vec<f32> = codes.iter().map(|&c| c / HALF_RANGE - 1.0).collect();
    im2col::conv2d_weight_grad(grad_out, &scaled, g, out);
    weight_blocked.cut(0, out);
}
