//! The stride-1 binary convolution's input and weight gradients as implicit GEMMs on tiles.
//!
//! Channel counts are padded to multiples of 32 in the tile operands (the padded rows and
//! columns of the sums are dropped). Images run in parallel, a group per thread, each with its
//! own operand buffers, allocated once per call.

use rayon::prelude::*;

use super::{
    AmxBf16,
    split::{self, BF16_ONE},
    tiles::{Step, TilePlan},
};
use crate::kernels::{
    backward::Bits,
    conv::{ConvGeometry, PadMode},
};

/// Rows and columns of a tile block, and positions or channels a tile step sums.
const BLOCK: usize = 32;

/// `values` as the bf16 halves they hold (little-endian: the low half first).
fn halves(values: &[u32]) -> &[u16] {
    // SAFETY: a `u32` is two `u16` (alignment 2 divides 4), every bit pattern is a valid `u16`,
    // and the view borrows `values`.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), 2 * values.len()) }
}

/// `values` as the bf16 halves they hold, to write.
fn halves_mut(values: &mut [u32]) -> &mut [u16] {
    // SAFETY: as in `halves`; the view borrows `values` mutably.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), 2 * values.len()) }
}

/// The flattened-grid offset of each tap `(ky, kx)`, row-major: `ky·d_h·width + kx·d_w`.
fn tap_offsets(g: &ConvGeometry, width: usize) -> Vec<usize> {
    let [kh, kw] = g.kernel;
    (0..kh * kw)
        .map(|tap| (tap / kw) * g.dilation[0] * width + (tap % kw) * g.dilation[1])
        .collect()
}

/// Whether every size of `g` is positive (empty convolutions run on the f32 path).
fn non_empty(g: &ConvGeometry) -> Option<[usize; 2]> {
    let [oh, ow] = g.output_size().ok()?;
    (g.batch > 0
        && g.in_channels > 0
        && g.out_channels > 0
        && g.height > 0
        && g.width > 0
        && oh > 0
        && ow > 0
        && g.stride == [1, 1])
    .then_some([oh, ow])
}

/// Image groups: one per thread, of consecutive images.
fn images_per_group(batch: usize) -> usize {
    batch.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// The input gradient's shapes. The output gradient is zero-padded by `d·(k − 1) − p` on each
/// side (`pad`) into a grid of width `wq`; the input gradient at `(y, x)` is then the sum over
/// taps of the flipped weights times the padded gradient at flat position
/// `y·wq + x + offset(tap)`.
struct InputGradPlan {
    c_in: usize,
    c_out: usize,
    ci32: usize,
    co32: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    pad: [usize; 2],
    wq: usize,
    /// Flat output positions `(h − 1)·wq + w`, rounded up to 32.
    r32: usize,
    /// Channel-pair rows of the padded gradient, in pairs.
    lq: usize,
    offsets: Vec<usize>,
    tiles: TilePlan,
}

impl InputGradPlan {
    fn new(g: &ConvGeometry) -> Option<Self> {
        let [oh, ow] = non_empty(g)?;
        let reach = |axis: usize| g.dilation[axis] * (g.kernel[axis] - 1);
        let pad = [
            reach(0).checked_sub(g.padding[0])?,
            reach(1).checked_sub(g.padding[1])?,
        ];
        let (hq, wq) = (oh + 2 * pad[0], ow + 2 * pad[1]);
        debug_assert_eq!((hq - reach(0), wq - reach(1)), (g.height, g.width));
        let r32 = ((g.height - 1) * wq + g.width).next_multiple_of(BLOCK);
        // The taps of the flipped kernel, in the order of the steps.
        let offsets = tap_offsets(g, wq);
        let lq = (hq * wq).max(r32 + offsets.iter().max().copied().unwrap_or(0));
        let (ci32, co32) = (
            g.in_channels.next_multiple_of(BLOCK),
            g.out_channels.next_multiple_of(BLOCK),
        );
        // Step (tap, block of 32 output channels): the weights' 32 × 32 block, and 16 channel
        // pairs of the gradient at the tap's offset.
        let blocks = co32 / BLOCK;
        let steps: Vec<Step> = (0..offsets.len() * blocks)
            .map(|step| {
                let (tap, block) = (step / blocks, step % blocks);
                Step {
                    a0: step * BLOCK * BLOCK,
                    a1: step * BLOCK * BLOCK + 16 * BLOCK,
                    b: 2 * (block * 16 * lq + offsets[tap]),
                }
            })
            .collect();
        let tiles = TilePlan::new(&steps, BLOCK, 2 * lq, co32 * lq);
        Some(Self {
            c_in: g.in_channels,
            c_out: g.out_channels,
            ci32,
            co32,
            h: g.height,
            w: g.width,
            oh,
            ow,
            pad,
            wq,
            r32,
            lq,
            offsets,
            tiles,
        })
    }

    /// The tile operand of the flipped weights: per block of 32 input channels, per step (tap,
    /// block of 32 output channels), 32 rows (input channels) of 32 bf16 (output channels).
    fn weights(&self, g: &ConvGeometry, signs: Bits<'_>) -> Vec<u16> {
        let [kh, kw] = g.kernel;
        let steps = self.offsets.len() * self.co32 / BLOCK;
        let mut a = vec![0u16; self.ci32 / BLOCK * steps * BLOCK * BLOCK];
        for (index, value) in a.iter_mut().enumerate() {
            let (k, row) = (index % BLOCK, index / BLOCK % BLOCK);
            let step = index / (BLOCK * BLOCK) % steps;
            let ci = index / (steps * BLOCK * BLOCK) * BLOCK + row;
            let (tap, co) = (
                step / (self.co32 / BLOCK),
                step % (self.co32 / BLOCK) * BLOCK + k,
            );
            if ci < self.c_in && co < self.c_out {
                let (ky, kx) = (kh - 1 - tap / kw, kw - 1 - tap % kw);
                let bit = signs.bit(((co * self.c_in + ci) * kh + ky) * kw + kx);
                *value = BF16_ONE | (bit as u16) << 15;
            }
        }
        a
    }
}

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `x` on AMX tiles (see
/// [`crate::kernels::backward::binary_conv2d_input_grad`], whose checks the caller has made):
/// `false`, writing nothing, where the geometry is not one this path takes (stride other than 1,
/// padding wider than the dilated kernel's reach, an empty size).
pub(crate) fn input_grad(
    proof: AmxBf16,
    grad_out: &[f32],
    weight_signs: Bits<'_>,
    input_blocked: Bits<'_>,
    g: &ConvGeometry,
    out: &mut [f32],
) -> bool {
    let Some(plan) = InputGradPlan::new(g) else {
        return false;
    };
    let a = plan.weights(g, weight_signs);
    let image_len = plan.c_in * plan.h * plan.w;
    let grad_len = plan.c_out * plan.oh * plan.ow;
    let group = images_per_group(g.batch);
    out.par_chunks_mut(group * image_len)
        .enumerate()
        .for_each(|(first, images)| {
            let part = plan.co32 / 2 * plan.lq;
            let mut padded = vec![0u32; 3 * part];
            let mut sums = vec![0f32; plan.ci32 * plan.r32];
            for (i, dx) in images.chunks_mut(image_len).enumerate() {
                let n = first * group + i;
                let grad = &grad_out[n * grad_len..(n + 1) * grad_len];
                // The gradient's channel pairs, split, into the padded grid.
                for pair in 0..plan.c_out.div_ceil(2) {
                    let plane = plan.oh * plan.ow;
                    let even = &grad[2 * pair * plane..][..plane];
                    let odd = (2 * pair + 1 < plan.c_out)
                        .then(|| &grad[(2 * pair + 1) * plane..][..plane]);
                    for oy in 0..plan.oh {
                        let cols = oy * plan.ow..(oy + 1) * plan.ow;
                        let at = pair * plan.lq + (oy + plan.pad[0]) * plan.wq + plan.pad[1];
                        let (p0, rest) = padded.split_at_mut(part);
                        let (p1, p2) = rest.split_at_mut(part);
                        split::split_pairs(
                            proof,
                            &even[cols.clone()],
                            odd.map(|odd| &odd[cols.clone()]),
                            [
                                &mut p0[at..at + plan.ow],
                                &mut p1[at..at + plan.ow],
                                &mut p2[at..at + plan.ow],
                            ],
                        );
                    }
                }
                let b = halves(&padded);
                let steps_len = plan.offsets.len() * plan.co32 / BLOCK * BLOCK * BLOCK;
                for cb in 0..plan.ci32 / BLOCK {
                    for r0 in (0..plan.r32).step_by(BLOCK) {
                        plan.tiles.block(
                            proof,
                            &a[cb * steps_len..],
                            &b[2 * r0..],
                            &mut sums[cb * BLOCK * plan.r32 + r0..],
                            plan.r32,
                            false,
                        );
                    }
                }
                for (ci, plane) in dx.chunks_mut(plan.h * plan.w).enumerate() {
                    for (y, row) in plane.chunks_mut(plan.w).enumerate() {
                        row.copy_from_slice(&sums[ci * plan.r32 + y * plan.wq..][..plan.w]);
                    }
                }
                input_blocked.cut(n * image_len, dx);
            }
        });
    true
}

/// The weight gradient's shapes. The input is padded by `p` into a grid of width `wp`; the
/// output at flat position `q = oy·wp + ox` reads tap `(ky, kx)` at `q + offset(tap)`, and the
/// sum over `q` (zero gradient at the grid's padding columns) gives each tap's gradient.
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
    hp: usize,
    wp: usize,
    /// Flat output positions `(oh − 1)·wp + ow`, rounded up to 32.
    q32: usize,
    /// Values in one input channel's row of the padded grid.
    lx: usize,
    offsets: Vec<usize>,
    tiles: TilePlan,
}

impl WeightGradPlan {
    fn new(g: &ConvGeometry) -> Option<Self> {
        let [oh, ow] = non_empty(g)?;
        let (hp, wp) = (g.height + 2 * g.padding[0], g.width + 2 * g.padding[1]);
        let q32 = ((oh - 1) * wp + ow).next_multiple_of(BLOCK);
        let offsets = tap_offsets(g, wp);
        let lx = (hp * wp).max(q32 + offsets.iter().max().copied().unwrap_or(0));
        let co32 = g.out_channels.next_multiple_of(BLOCK);
        // Step: 32 positions; the input's 2 × 16 channel rows, and 16 position pairs of the
        // gradient (pairs of 32 output channels).
        let steps: Vec<Step> = (0..q32 / BLOCK)
            .map(|step| Step {
                a0: step * BLOCK,
                a1: step * BLOCK + 16 * lx,
                b: step * 16 * 2 * co32,
            })
            .collect();
        let tiles = TilePlan::new(&steps, lx, 2 * co32, q32 * co32);
        Some(Self {
            c_in: g.in_channels,
            c_out: g.out_channels,
            ci32: g.in_channels.next_multiple_of(BLOCK),
            co32,
            h: g.height,
            w: g.width,
            oh,
            ow,
            pad: g.padding,
            hp,
            wp,
            q32,
            lx,
            offsets,
            tiles,
        })
    }

    /// A buffer for the padded input, with `pad` (bf16) on the grid's border of each channel.
    fn input_buffer(&self, pad: u16) -> Vec<u16> {
        let mut x = vec![0u16; self.ci32 * self.lx];
        for plane in x.chunks_mut(self.lx).take(self.c_in) {
            for (y, row) in plane[..self.hp * self.wp].chunks_mut(self.wp).enumerate() {
                let inside = (self.pad[0]..self.pad[0] + self.h).contains(&y);
                for (x, value) in row.iter_mut().enumerate() {
                    if !(inside && (self.pad[1]..self.pad[1] + self.w).contains(&x)) {
                        *value = pad;
                    }
                }
            }
        }
        x
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
    pad: PadMode,
    weight_blocked: Bits<'_>,
    g: &ConvGeometry,
    out: &mut [f32],
) -> bool {
    let Some(plan) = WeightGradPlan::new(g) else {
        return false;
    };
    let pad = match pad {
        PadMode::Zero => 0,
        PadMode::PlusOne => BF16_ONE,
    };
    let taps = plan.offsets.len();
    let plane = plan.oh * plan.ow;
    let group = images_per_group(g.batch);
    let groups: Vec<usize> = (0..g.batch).step_by(group).collect();
    let sums: Vec<Vec<f32>> = groups
        .into_par_iter()
        .map(|first| {
            let mut sum = vec![0f32; taps * plan.ci32 * plan.co32];
            let mut x = plan.input_buffer(pad);
            let part = plan.co32 * plan.q32;
            // Pairs of positions as `u32`, written as bf16 halves.
            let mut flat = vec![0u32; 3 * part / 2];
            let mut pairs = vec![0u32; 3 * part / 2];
            for n in first..(first + group).min(g.batch) {
                for ci in 0..plan.c_in {
                    for y in 0..plan.h {
                        let at = ci * plan.lx + (y + plan.pad[0]) * plan.wp + plan.pad[1];
                        let start = ((n * plan.c_in + ci) * plan.h + y) * plan.w;
                        split::expand_signs(proof, input_signs, start, &mut x[at..at + plan.w]);
                    }
                }
                // The gradient split, each channel's row on the flat grid, then transposed into
                // position pairs × channels.
                let grad = &grad_out[n * plan.c_out * plane..(n + 1) * plan.c_out * plane];
                for (co, channel) in grad.chunks(plane).enumerate() {
                    for (oy, row) in channel.chunks(plan.ow).enumerate() {
                        let at = co * plan.q32 + oy * plan.wp;
                        let (f0, rest) = halves_mut(&mut flat).split_at_mut(part);
                        let (f1, f2) = rest.split_at_mut(part);
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
                let half = plan.q32 / 2;
                for (s, words) in flat.chunks(half * plan.co32).enumerate() {
                    let dst = &mut pairs[s * part / 2..(s + 1) * part / 2];
                    for co in (0..plan.co32).step_by(16) {
                        for p in (0..half).step_by(16) {
                            split::transpose16(
                                proof,
                                &words[co * half + p..],
                                half,
                                &mut dst[p * plan.co32 + co..],
                                plan.co32,
                            );
                        }
                    }
                }
                let b = halves(&pairs);
                for (tap, &offset) in plan.offsets.iter().enumerate() {
                    for cb in 0..plan.ci32 / BLOCK {
                        for ob in 0..plan.co32 / BLOCK {
                            plan.tiles.block(
                                proof,
                                &x[cb * BLOCK * plan.lx + offset..],
                                &b[2 * ob * BLOCK..],
                                &mut sum[(tap * plan.ci32 + cb * BLOCK) * plan.co32 + ob * BLOCK..],
                                plan.co32,
                                true,
                            );
                        }
                    }
                }
            }
            sum
        })
        .collect();
    // out[co, ci, tap] = Σ_groups sum[tap, ci, co]
    for (index, value) in out.iter_mut().enumerate() {
        let (tap, ci, co) = (
            index % taps,
            index / taps % plan.c_in,
            index / (taps * plan.c_in),
        );
        let at = (tap * plan.ci32 + ci) * plan.co32 + co;
        *value = sums.iter().map(|sum| sum[at]).sum();
    }
    weight_blocked.cut(0, out);
    true
}
