//! The bit-plane forward's product `P` for stride 1 and no dilation, as a direct convolution
//! on AVX-512: each output row is computed 16 pixels at a time against 8 output channels, the
//! 16 input codes a tap reads loaded once (one run of the zero-padded image) and multiplied by
//! the 8 channels' weight signs into 8 registers of sums; then the layer's `(P − 127.5·M)/127.5`
//! is written straight to the output.
//!
//! With 3 input channels (the paper's images) an im2col product has only `27` terms a row,
//! too few for a GEMM to run at speed, and its output needs a second pass for `M`. Here every
//! code is loaded once per tap and 8 channels, and nothing is written twice. `P` sums products
//! of integers below 2^24, exact in any order, so the output is the same bit for bit.

use rayon::prelude::*;

use super::HALF_RANGE;
use crate::kernels::{CheckedIsa, conv::ConvCall, isa::Isa};

/// Output channels a pass: 8 registers of sums.
const CHANNELS: usize = 8;
/// Output pixels a register.
const PIXELS: usize = 16;

/// Writes `out` `[N, C_out, H_out, W_out]` `= (P − 127.5·M)/127.5` where `P = codes ⊛ w` with
/// zero padding, `w` the weight signs `[C_out, C_in, k_h, k_w]` and `M` the inside sums
/// `[C_out, H_out, W_out]`, and returns `true`; or returns `false` without writing where this
/// kernel does not apply (stride or dilation not 1, an empty input, or no AVX-512 on the active
/// path).
///
/// The caller has checked the lengths against `g`.
pub(super) fn forward(
    isa: CheckedIsa,
    codes: &[f32],
    weight_signs: &[f32],
    inside_sums: &[f32],
    g: &ConvCall,
    out: &mut [f32],
) -> bool {
    let empty_input = g.in_channels * g.height * g.width == 0;
    if isa.isa() != Isa::Avx512 || g.stride != [1, 1] || g.dilation != [1, 1] || empty_input {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let grid = Grid::of(g);
        let weights = channel_blocks(weight_signs, g);
        let image_out = g.out_channels * grid.out[0] * grid.out[1];
        let image_in = g.in_channels * g.height * g.width;
        if image_out == 0 {
            return true;
        }
        out.par_chunks_mut(image_out)
            .zip(codes.par_chunks(image_in))
            .for_each_init(
                || vec![0f32; grid.len(g.in_channels)],
                |padded, (out, codes)| {
                    grid.fill(codes, g, padded);
                    // SAFETY: `isa` proves AVX-512 F; the grid, weights, sums and output hold
                    // the lengths `x86::image` reads and writes (`Grid::of`, `channel_blocks`,
                    // and the caller's checks).
                    unsafe { x86::image(padded, &weights, inside_sums, &grid, g, out) };
                },
            );
    }
    true
}

/// The zero-padded image: `C_in` planes of `rows` rows of `width` codes, the image at row
/// `p_h`, column `p_w`, and each row long enough that 16 codes from any output column a
/// register starts at, plus the kernel's width, lie inside it.
#[derive(Clone, Copy, Debug)]
struct Grid {
    rows: usize,
    width: usize,
    out: [usize; 2],
}

impl Grid {
    fn of(g: &ConvCall) -> Grid {
        let out = g.output_size().expect("checked by the caller");
        Grid {
            rows: g.height + 2 * g.padding[0],
            width: out[1].next_multiple_of(PIXELS) + g.kernel[1] - 1,
            out,
        }
    }

    fn len(&self, channels: usize) -> usize {
        channels * self.rows * self.width
    }

    /// Copies one image's codes into the grid; the rest of it stays 0 (it is never written).
    fn fill(&self, codes: &[f32], g: &ConvCall, padded: &mut [f32]) {
        let [ph, pw] = g.padding;
        for (plane, image) in padded
            .chunks_exact_mut(self.rows * self.width)
            .zip(codes.chunks_exact(g.height * g.width))
        {
            for (y, row) in image.chunks_exact(g.width).enumerate() {
                plane[(y + ph) * self.width + pw..][..g.width].copy_from_slice(row);
            }
        }
    }
}

/// The weight signs by blocks of [`CHANNELS`] output channels, tap-major inside a block
/// (`[block][c·k_h·k_w + i·k_w + j][channel]`), 0 for channels past `C_out`.
fn channel_blocks(weight_signs: &[f32], g: &ConvCall) -> Vec<f32> {
    let taps = g.in_channels * g.kernel[0] * g.kernel[1];
    let blocks = g.out_channels.div_ceil(CHANNELS);
    let mut out = vec![0f32; blocks * taps * CHANNELS];
    for (o, row) in weight_signs.chunks_exact(taps.max(1)).enumerate() {
        let (block, lane) = (o / CHANNELS, o % CHANNELS);
        for (t, &w) in row.iter().enumerate() {
            out[(block * taps + t) * CHANNELS + lane] = w;
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CHANNELS, Grid, HALF_RANGE, PIXELS};
    use crate::kernels::conv::ConvCall;

    /// One image's output `[C_out, H_out, W_out]` from its padded codes.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `padded` holds `Grid::len(C_in)` values, `weights`
    /// `channel_blocks`' blocks, `sums` and `out` `C_out·H_out·W_out` values each.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image(
        padded: &[f32],
        weights: &[f32],
        sums: &[f32],
        grid: &Grid,
        g: &ConvCall,
        out: &mut [f32],
    ) {
        let [kh, kw] = g.kernel;
        let [oh, ow] = grid.out;
        let taps = g.in_channels * kh * kw;
        let plane = grid.rows * grid.width;
        let half = _mm512_set1_ps(HALF_RANGE);
        for (block, w) in weights.chunks_exact((taps * CHANNELS).max(1)).enumerate() {
            let o0 = block * CHANNELS;
            let channels = (g.out_channels - o0).min(CHANNELS);
            for oy in 0..oh {
                for x0 in (0..ow).step_by(PIXELS) {
                    let mut p = [_mm512_setzero_ps(); CHANNELS];
                    let mut t = 0;
                    for c in 0..g.in_channels {
                        for i in 0..kh {
                            let row = c * plane + (oy + i) * grid.width + x0;
                            for j in 0..kw {
                                // SAFETY: `x0 + j + 16 ≤ grid.width` (`Grid::of`) and row
                                // `oy + i < rows`; tap `t < taps` of the block's weights.
                                unsafe {
                                    let v = _mm512_loadu_ps(padded.as_ptr().add(row + j));
                                    let signs = w.as_ptr().add(t * CHANNELS);
                                    for (k, p) in p.iter_mut().enumerate() {
                                        let s = _mm512_set1_ps(*signs.add(k));
                                        *p = _mm512_fmadd_ps(s, v, *p);
                                    }
                                }
                                t += 1;
                            }
                        }
                    }
                    let lanes = (ow - x0).min(PIXELS);
                    let mask: __mmask16 = if lanes == PIXELS {
                        !0
                    } else {
                        (1 << lanes) - 1
                    };
                    for (k, &p) in p.iter().enumerate().take(channels) {
                        let at = ((o0 + k) * oh + oy) * ow + x0;
                        // SAFETY: the mask keeps the accesses within row `oy` of channel
                        // `o0 + k` of `sums` and `out`.
                        unsafe {
                            let m = _mm512_maskz_loadu_ps(mask, sums.as_ptr().add(at));
                            // As the scalar formula: `(P − M·127.5) / 127.5`, each step
                            // rounded once.
                            let y = _mm512_div_ps(_mm512_sub_ps(p, _mm512_mul_ps(m, half)), half);
                            _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), mask, y);
                        }
                    }
                }
            }
        }
    }
}
