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

/// One 64-byte cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zeroed buffer that starts on a cache line, seen as `u16` (bf16), `u32` (bf16 pairs) or
/// `f32` values: tile rows laid out on 64-byte boundaries load fastest.
struct Lines(Vec<Line>);

impl Lines {
    /// At least `bytes` zero bytes.
    fn zeros(bytes: usize) -> Self {
        Self(vec![Line([0; 64]); bytes.div_ceil(64)])
    }

    /// The lines as values of `T`.
    fn view<T: Plain>(&self) -> &[T] {
        // SAFETY: `T` is a plain number type (`Plain`) of alignment at most 64, every bit
        // pattern is a valid `T`, and the lines hold `64 / size_of::<T>()` of them each.
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 64 / size_of::<T>())
        }
    }

    /// The lines as values of `T`, to write.
    fn view_mut<T: Plain>(&mut self) -> &mut [T] {
        // SAFETY: as in `view`; the view borrows the lines mutably.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.0.as_mut_ptr().cast(),
                self.0.len() * 64 / size_of::<T>(),
            )
        }
    }
}

/// Number types any bit pattern of which is a value: what [`Lines`] may be seen as.
trait Plain: Copy {}
impl Plain for u16 {}
impl Plain for u32 {}
impl Plain for f32 {}

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
/// side (`pad`) into a grid of width `wq`, channels last; the input gradient at `(y, x)` is then
/// the sum over taps of the padded gradient at flat position `y·wq + x + offset(tap)` times the
/// flipped weights. Tiles: 32 positions (rows) by 32 input channels (columns), summing 32
/// output channels a step.
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
    /// Positions of the padded grid (with room for every tap's reach), a multiple of 16.
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
        let offsets = tap_offsets(g, wq);
        let max_offset = offsets.iter().max().copied().unwrap_or(0);
        let lq = (hq * wq).max(r32 + max_offset).next_multiple_of(16);
        let (ci32, co32) = (
            g.in_channels.next_multiple_of(BLOCK),
            g.out_channels.next_multiple_of(BLOCK),
        );
        // Step (tap, block of 32 output channels): 2 × 16 positions of the gradient at the tap's
        // offset, against the flipped weights' two tiles of 16 input channels.
        let (co_blocks, ci16) = (co32 / BLOCK, ci32 / 16);
        let steps: Vec<Step> = (0..offsets.len() * co_blocks)
            .map(|step| {
                let a0 = offsets[step / co_blocks] * co32 + step % co_blocks * BLOCK;
                let b0 = step * ci16 * TILE;
                Step {
                    a0,
                    a1: a0 + 16 * co32,
                    b0,
                    b1: b0 + TILE,
                }
            })
            .collect();
        let tiles = TilePlan::new(&steps, co32, BLOCK, lq * co32);
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

    /// The flipped weights as pair-layout tiles: per step (tap, block of 32 output channels),
    /// per 16 input channels, 16 rows (output channel pairs) of 16 × 2 bf16.
    fn weights(&self, g: &ConvGeometry, signs: Bits<'_>) -> Lines {
        let [kh, kw] = g.kernel;
        let (co_blocks, ci16) = (self.co32 / BLOCK, self.ci32 / 16);
        let mut tiles = Lines::zeros(2 * self.offsets.len() * co_blocks * ci16 * TILE);
        for (index, value) in tiles.view_mut::<u16>().iter_mut().enumerate() {
            let (j, c, pair) = (index % 2, index / 2 % 16, index / BLOCK % 16);
            let tile = index / TILE;
            let (cib, step) = (tile % ci16, tile / ci16);
            let (tap, cb) = (step / co_blocks, step % co_blocks);
            let (co, ci) = (cb * BLOCK + 2 * pair + j, cib * 16 + c);
            if ci < self.c_in && co < self.c_out && tap < self.offsets.len() {
                let (ky, kx) = (kh - 1 - tap / kw, kw - 1 - tap % kw);
                let bit = signs.bit(((co * self.c_in + ci) * kh + ky) * kw + kx);
                *value = BF16_ONE | (bit as u16) << 15;
            }
        }
        tiles
    }
}

/// bf16 values in one tile (16 rows of 32).
const TILE: usize = 16 * BLOCK;

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
    let weights = plan.weights(g, weight_signs);
    let b = weights.view::<u16>();
    let image_len = plan.c_in * plan.h * plan.w;
    let plane = plan.oh * plan.ow;
    let group = images_per_group(g.batch);
    out.par_chunks_mut(group * image_len)
        .enumerate()
        .for_each(|(first, images)| {
            let (pairs_len, lq) = (plan.co32 / 2, plan.lq);
            // The gradient's channel pairs on the padded grid, one row per pair and part...
            let mut planar = Lines::zeros(3 * 4 * pairs_len * lq);
            // ...and transposed: channels last.
            let mut last = Lines::zeros(3 * 4 * lq * pairs_len);
            let mut sums = Lines::zeros(4 * plan.r32 * plan.ci32);
            let mut transposed = Lines::zeros(4 * plan.ci32 * plan.r32);
            for (i, dx) in images.chunks_mut(image_len).enumerate() {
                let n = first * group + i;
                let grad = &grad_out[n * plan.c_out * plane..(n + 1) * plan.c_out * plane];
                let rows = planar.view_mut::<u32>();
                let (p0, rest) = rows.split_at_mut(pairs_len * lq);
                let (p1, p2) = rest.split_at_mut(pairs_len * lq);
                for pair in 0..plan.c_out.div_ceil(2) {
                    let even = &grad[2 * pair * plane..][..plane];
                    let odd = (2 * pair + 1 < plan.c_out)
                        .then(|| &grad[(2 * pair + 1) * plane..][..plane]);
                    for oy in 0..plan.oh {
                        let cols = oy * plan.ow..(oy + 1) * plan.ow;
                        let at = pair * lq + (oy + plan.pad[0]) * plan.wq + plan.pad[1];
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
                let (src, dst) = (planar.view::<u32>(), last.view_mut::<u32>());
                for s in 0..3 {
                    let part = s * pairs_len * lq;
                    for pair in (0..pairs_len).step_by(16) {
                        for r in (0..lq).step_by(16) {
                            split::transpose16(
                                proof,
                                &src[part + pair * lq + r..],
                                lq,
                                &mut dst[part + r * pairs_len + pair..],
                                pairs_len,
                            );
                        }
                    }
                }
                let (a, c) = (last.view::<u16>(), sums.view_mut::<f32>());
                for r0 in (0..plan.r32).step_by(BLOCK) {
                    for cib in (0..plan.ci32 / 16).step_by(2) {
                        plan.tiles.block(
                            proof,
                            &a[r0 * plan.co32..],
                            &b[cib * TILE..],
                            &mut c[r0 * plan.ci32 + cib * 16..],
                            plan.ci32,
                            false,
                        );
                    }
                }
                // Positions × channels to channels × positions, then the image's rows.
                let (src, dst) = (sums.view::<u32>(), transposed.view_mut::<u32>());
                for r in (0..plan.r32).step_by(16) {
                    for ci in (0..plan.ci32).step_by(16) {
                        split::transpose16(
                            proof,
                            &src[r * plan.ci32 + ci..],
                            plan.ci32,
                            &mut dst[ci * plan.r32 + r..],
                            plan.r32,
                        );
                    }
                }
                let by_channel = transposed.view::<f32>();
                for (ci, plane) in dx.chunks_mut(plan.h * plan.w).enumerate() {
                    for (y, row) in plane.chunks_mut(plan.w).enumerate() {
                        row.copy_from_slice(&by_channel[ci * plan.r32 + y * plan.wq..][..plan.w]);
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
    hp: usize,
    wp: usize,
    /// Flat output positions `(oh − 1)·wp + ow`, rounded up to 32.
    q32: usize,
    /// Values in one input channel's row of the padded grid, a multiple of 32.
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
        let steps: Vec<Step> = (0..q32 / BLOCK)
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
        let tiles = TilePlan::new(&steps, q32, 2 * ci32, co32 * q32);
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
            hp,
            wp,
            q32,
            lx,
            offsets,
            tiles,
        })
    }

    /// A buffer for the padded input, channels first, with `pad` (bf16) on the grid's border
    /// of each channel.
    fn input_buffer(&self, pad: u16) -> Lines {
        let mut buffer = Lines::zeros(2 * self.ci32 * self.lx);
        let x = buffer.view_mut::<u16>();
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
                for (tap, &offset) in plan.offsets.iter().enumerate() {
                    let b = pairs[offset % 2].view::<u16>();
                    let row = offset / 2 * 2 * plan.ci32;
                    for cib in (0..plan.ci32).step_by(BLOCK) {
                        for ob in (0..plan.co32).step_by(BLOCK) {
                            plan.tiles.block(
                                proof,
                                &a[ob * plan.q32..],
                                &b[row + 2 * cib..],
                                &mut c[ob * sum_stride + tap * plan.ci32 + cib..],
                                sum_stride,
                                true,
                            );
                        }
                    }
                }
            }
            sum
        })
        .collect();
    // out[co, ci, tap] = Σ_groups sum[co, tap, ci]
    for (index, value) in out.iter_mut().enumerate() {
        let (tap, ci, co) = (
            index % taps,
            index / taps % plan.c_in,
            index / (taps * plan.c_in),
        );
        let at = co * sum_stride + tap * plan.ci32 + ci;
        *value = sums.iter().map(|sum| sum.view::<f32>()[at]).sum();
    }
    weight_blocked.cut(0, out);
    true
}
