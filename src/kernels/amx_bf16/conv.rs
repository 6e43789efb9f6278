//! The stride-1 binary convolution's input and weight gradients as implicit GEMMs on tiles.
//!
//! Channel counts are padded to multiples of 32 in the tile operands (the padded rows and
//! columns of the sums are dropped). Images run in parallel, a group per thread, each with its
//! own operand buffers (taken from the thread's spares, see `lines`).

use rayon::prelude::*;

use crate::kernels::amx::Lines;

use super::{
    AmxBf16,
    grid::{BLOCK, GridConv, fill_border, images_per_group, stride_one_output, tap_offsets},
    split::{self, BF16_ONE},
    tiles::{Step, TilePlan},
};
use crate::kernels::{
    backward::Bits,
    conv::{ConvCall, PaddingMode},
};

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `x` on AMX tiles (see
/// [`crate::kernels::backward::binary_conv2d_input_grad`], whose checks the caller has made):
/// `false`, writing nothing, where the geometry is not one this path takes (stride other than 1,
/// padding wider than the dilated kernel's reach, an empty size).
///
/// The output gradient, zero-padded by `d·(k − 1) − p` on each side into a grid of width `wq`,
/// convolved with the flipped weights gives the input gradient at grid position `y·wq + x`.
pub(crate) fn input_grad(
    proof: AmxBf16,
    grad_out: &[f32],
    weight_signs: Bits<'_>,
    input_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) -> bool {
    let Some([oh, ow]) = stride_one_output(g) else {
        return false;
    };
    let reach = |axis: usize| g.dilation[axis] * (g.kernel[axis] - 1);
    let (Some(pad_h), Some(pad_w)) = (
        reach(0).checked_sub(g.padding[0]),
        reach(1).checked_sub(g.padding[1]),
    ) else {
        return false;
    };
    let (c_in, c_out, h, w) = (g.in_channels, g.out_channels, g.height, g.width);
    let (hq, wq) = (oh + 2 * pad_h, ow + 2 * pad_w);
    let conv = GridConv::new(
        c_out,
        c_in,
        &tap_offsets(g, wq),
        (h - 1) * wq + w,
        hq * wq,
        3,
    );
    let [kh, kw] = g.kernel;
    let weights = conv.weights(|tap, co, ci| {
        let (ky, kx) = (kh - 1 - tap / kw, kw - 1 - tap % kw);
        BF16_ONE | (weight_signs.bit(((co * c_in + ci) * kh + ky) * kw + kx) as u16) << 15
    });
    let (image_len, plane) = (c_in * h * w, oh * ow);
    let group = images_per_group(g.batch);
    out.par_chunks_mut(group * image_len)
        .enumerate()
        .for_each(|(first, images)| {
            let mut buffers = conv.buffers();
            for (i, dx) in images.chunks_mut(image_len).enumerate() {
                let n = first * group + i;
                let grad = &grad_out[n * c_out * plane..(n + 1) * c_out * plane];
                let part = conv.part_len();
                let planar = buffers.planar_mut();
                let (p0, rest) = planar.split_at_mut(part);
                let (p1, p2) = rest.split_at_mut(part);
                for pair in 0..c_out.div_ceil(2) {
                    let even = &grad[2 * pair * plane..][..plane];
                    let odd =
                        (2 * pair + 1 < c_out).then(|| &grad[(2 * pair + 1) * plane..][..plane]);
                    for oy in 0..oh {
                        let cols = oy * ow..(oy + 1) * ow;
                        let at = pair * conv.grid_len + (oy + pad_h) * wq + pad_w;
                        split::split_pairs(
                            proof,
                            &even[cols.clone()],
                            odd.map(|odd| &odd[cols.clone()]),
                            [
                                &mut p0[at..at + ow],
                                &mut p1[at..at + ow],
                                &mut p2[at..at + ow],
                            ],
                        );
                    }
                }
                conv.run(proof, &weights, &mut buffers);
                for (ci, plane) in dx.chunks_mut(h * w).enumerate() {
                    let sums = buffers.channel(ci, conv.rows);
                    for (y, row) in plane.chunks_mut(w).enumerate() {
                        row.copy_from_slice(&sums[y * wq..][..w]);
                    }
                }
                input_blocked.cut(n * image_len, dx);
            }
        });
    true
}

/// The weight gradient's shapes. The input is padded by `p` into a grid of width `wp`; the
/// output at flat position `q = oy·wp + ox` reads tap `(ky, kx)` at `q + offset(tap)`, and the
/// sum over `q` (zero gradient at the grid's padding columns) gives each tap's gradient. Tiles:
/// 32 output channels (rows) by 32 input channels of one tap (columns), summing 32 positions a
/// step; the input in position pairs, once from even and once from odd positions, so that every
/// tap's tiles start on a pair.
struct WeightGradPlan {
    c_in: usize,
    c_out: usize,
    ci32: usize,
    co32: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    pad: [usize; 2],
    wp: usize,
    /// Flat output positions `(oh − 1)·wp + ow`, rounded up to 32.
    q32: usize,
    /// Values in one input channel's row of the padded grid, a multiple of 32.
    lx: usize,
    offsets: Vec<usize>,
    /// The blocks of a chunk of [`CHUNK`] positions, and of the last, shorter chunk.
    tiles: TilePlan,
    last: Option<TilePlan>,
}

/// Positions a weight-gradient block sums: the gradient's three parts for 32 output channels
/// (24 KiB) stay in L1 while every tap and input block runs over them.
const CHUNK: usize = 128;

impl WeightGradPlan {
    fn new(g: &ConvCall) -> Option<Self> {
        let [oh, ow] = stride_one_output(g)?;
        let (hp, wp) = (g.height + 2 * g.padding[0], g.width + 2 * g.padding[1]);
        let q32 = ((oh - 1) * wp + ow).next_multiple_of(BLOCK);
        let offsets = tap_offsets(g, wp);
        let max_offset = offsets.iter().max().copied().unwrap_or(0);
        let lx = (hp * wp + 1)
            .max(q32 + max_offset + 2)
            .next_multiple_of(BLOCK);
        let (ci32, co32) = (
            g.in_channels.next_multiple_of(BLOCK),
            g.out_channels.next_multiple_of(BLOCK),
        );
        // Step: 32 positions; the gradient's 2 × 16 channel rows, against 16 position pairs of
        // two tiles of 16 input channels.
        let plan = |positions: usize| {
            let steps: Vec<Step> = (0..positions / BLOCK)
                .map(|step| {
                    let b0 = step * 16 * 2 * ci32;
                    Step {
                        a0: step * BLOCK,
                        a1: step * BLOCK + 16 * q32,
                        b0,
                        b1: b0 + BLOCK,
                    }
                })
                .collect();
            TilePlan::new(&steps, q32, 2 * ci32, co32 * q32, 3)
        };
        let tiles = plan(CHUNK.min(q32));
        let last = (q32 > CHUNK && !q32.is_multiple_of(CHUNK)).then(|| plan(q32 % CHUNK));
        Some(Self {
            c_in: g.in_channels,
            c_out: g.out_channels,
            ci32,
            co32,
            h: g.height,
            w: g.width,
            oh,
            ow,
            pad: g.padding,
            wp,
            q32,
            lx,
            offsets,
            tiles,
            last,
        })
    }

    /// A buffer for the padded input, channels first, with `pad` (bf16) on the grid's border
    /// of each channel.
    fn input_buffer(&self, pad: u16) -> Lines {
        let mut buffer = Lines::zeros(2 * self.ci32 * self.lx);
        let channels = &mut buffer.view_mut::<u16>()[..self.c_in * self.lx];
        fill_border(channels, self.lx, [self.h, self.w], self.pad, pad);
        buffer
    }
}

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `w` on AMX tiles (see
/// [`crate::kernels::backward::binary_conv2d_weight_grad`], whose checks the caller has made):
/// `false`, writing nothing, where the geometry is not one this path takes (stride other than 1,
/// an empty size).
pub(crate) fn weight_grad(
    proof: AmxBf16,
    grad_out: &[f32],
    input_signs: Bits<'_>,
    pad: PaddingMode,
    weight_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) -> bool {
    let Some(plan) = WeightGradPlan::new(g) else {
        return false;
    };
    let pad = match pad {
        PaddingMode::Zero => 0,
        PaddingMode::PlusOne => BF16_ONE,
    };
    let taps = plan.offsets.len();
    let plane = plan.oh * plan.ow;
    let group = images_per_group(g.batch);
    let groups: Vec<usize> = (0..g.batch).step_by(group).collect();
    let sum_stride = taps * plan.ci32;
    let sums: Vec<Lines> = groups
        .into_par_iter()
        .map(|first| {
            let mut sum = Lines::zeros(4 * plan.co32 * sum_stride);
            let mut x = plan.input_buffer(pad);
            let mut shifted = Lines::zeros(2 * plan.ci32 * plan.lx);
            let pair_rows = plan.lx / 2;
            let mut pairs = [
                Lines::zeros(4 * pair_rows * plan.ci32),
                Lines::zeros(4 * pair_rows * plan.ci32),
            ];
            let part = plan.co32 * plan.q32;
            let mut flat = Lines::zeros(3 * 2 * part);
            for n in first..(first + group).min(g.batch) {
                // The input's signs on the padded grid, then in position pairs from even and
                // from odd positions (the second from the grid shifted by one).
                let xs = x.view_mut::<u16>();
                for ci in 0..plan.c_in {
                    for y in 0..plan.h {
                        let at = ci * plan.lx + (y + plan.pad[0]) * plan.wp + plan.pad[1];
                        let start = ((n * plan.c_in + ci) * plan.h + y) * plan.w;
                        split::expand_signs(proof, input_signs, start, &mut xs[at..at + plan.w]);
                    }
                }
                let xs = x.view::<u16>();
                let one_on = shifted.view_mut::<u16>();
                one_on[..xs.len() - 1].copy_from_slice(&xs[1..]);
                for (source, pairs) in [x.view::<u32>(), shifted.view::<u32>()]
                    .into_iter()
                    .zip(&mut pairs)
                {
                    let dst = pairs.view_mut::<u32>();
                    for ci in (0..plan.ci32).step_by(16) {
                        for p in (0..pair_rows).step_by(16) {
                            split::transpose16(
                                proof,
                                &source[ci * pair_rows + p..],
                                pair_rows,
                                &mut dst[p * plan.ci32 + ci..],
                                plan.ci32,
                            );
                        }
                    }
                }
                // The gradient split, each channel's rows on the flat grid.
                let grad = &grad_out[n * plan.c_out * plane..(n + 1) * plan.c_out * plane];
                let parts = flat.view_mut::<u16>();
                let (f0, rest) = parts.split_at_mut(part);
                let (f1, f2) = rest.split_at_mut(part);
                for (co, channel) in grad.chunks(plane).enumerate() {
                    for (oy, row) in channel.chunks(plan.ow).enumerate() {
                        let at = co * plan.q32 + oy * plan.wp;
                        split::split_values(
                            proof,
                            row,
                            [
                                &mut f0[at..at + plan.ow],
                                &mut f1[at..at + plan.ow],
                                &mut f2[at..at + plan.ow],
                            ],
                        );
                    }
                }
                let (a, c) = (flat.view::<u16>(), sum.view_mut::<f32>());
                for q0 in (0..plan.q32).step_by(CHUNK) {
                    let tiles = match &plan.last {
                        Some(last) if q0 + CHUNK > plan.q32 => last,
                        _ => &plan.tiles,
                    };
                    for ob in (0..plan.co32).step_by(BLOCK) {
                        for (tap, &offset) in plan.offsets.iter().enumerate() {
                            let b = pairs[offset % 2].view::<u16>();
                            let row = (q0 + offset) / 2 * 2 * plan.ci32;
                            for cib in (0..plan.ci32).step_by(BLOCK) {
                                tiles.block(
                                    proof,
                                    &a[ob * plan.q32 + q0..],
                                    &b[row + 2 * cib..],
                                    &mut c[ob * sum_stride + tap * plan.ci32 + cib..],
                                    sum_stride,
                                    true,
                                );
                            }
                        }
                    }
                }
            }
            sum
        })
        .collect();
    // out[co, ci, tap] = Σ_groups sum[co, tap, ci]
    let sums: Vec<&[f32]> = sums.iter().map(Lines::view).collect();
    out.par_chunks_mut(taps * plan.c_in)
        .enumerate()
        .for_each(|(co, row)| {
            for (ci, taps_of_ci) in row.chunks_mut(taps).enumerate() {
                for (tap, value) in taps_of_ci.iter_mut().enumerate() {
                    let at = co * sum_stride + tap * plan.ci32 + ci;
                    *value = sums.iter().map(|sum| sum[at]).sum();
                }
            }
        });
    weight_blocked.cut(0, out);
    true
}
