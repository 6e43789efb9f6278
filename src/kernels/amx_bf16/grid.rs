//! A stride-1 convolution over a zero-padded, flattened, channels-last grid, on tiles: the
//! machinery the forward convolutions and the input gradient share.
//!
//! With the image's rows padded to the grid's width, the input a tap reads for the output at
//! flat position `r` is at `r + offset(tap)`, one offset per tap: a tile of 16 positions of one
//! tap is 16 consecutive rows of the channels-last grid (each row 32 channels, one cache line),
//! so no im2col matrix is built. The few padding columns of each output row are computed and
//! dropped.

use rayon::prelude::*;

use crate::kernels::amx::Lines;

use super::{
    AmxBf16, split,
    tiles::{Step, TilePlan},
};
use crate::kernels::conv::ConvCall;

/// Rows and columns of a tile block, and channels a tile step sums.
pub(super) const BLOCK: usize = 32;
/// bf16 values in one tile (16 rows of 32).
const TILE: usize = 16 * BLOCK;

/// The flattened-grid offset of each tap `(ky, kx)`, row-major: `ky·d_h·width + kx·d_w`.
pub(super) fn tap_offsets(g: &ConvCall, width: usize) -> Vec<usize> {
    let [kh, kw] = g.kernel;
    (0..kh * kw)
        .map(|tap| (tap / kw) * g.dilation[0] * width + (tap % kw) * g.dilation[1])
        .collect()
}

/// The output size of `g` where the tiles take it: stride 1 and no size zero (other
/// convolutions run on the other paths).
pub(super) fn stride_one_output(g: &ConvCall) -> Option<[usize; 2]> {
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

/// Writes `pad` on the border of each padded image in `planes` (planes of `plane_len` values,
/// each starting with a grid of `[hp, wp]` = `[h + 2·p_h, w + 2·p_w]` values row-major, the image
/// at `[p_h, p_w]`); the images and anything past the grid stay as they are.
pub(super) fn fill_border<T: Copy>(
    planes: &mut [T],
    plane_len: usize,
    [h, w]: [usize; 2],
    [ph, pw]: [usize; 2],
    pad: T,
) {
    let wp = w + 2 * pw;
    for plane in planes.chunks_mut(plane_len) {
        for (y, line) in plane[..(h + 2 * ph) * wp].chunks_mut(wp).enumerate() {
            if (ph..ph + h).contains(&y) {
                line[..pw].fill(pad);
                line[pw + w..].fill(pad);
            } else {
                line.fill(pad);
            }
        }
    }
}

/// Images per group: one group per thread, of consecutive images.
pub(super) fn images_per_group(batch: usize) -> usize {
    batch.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// `out[r][o] = Σ_tap Σ_i a[r + offset(tap)][i] · w(tap, i, o)` for the output positions `r`,
/// over a grid `a` of `parts` parts (summed), channels last.
pub(super) struct GridConv {
    inputs: usize,
    outputs: usize,
    /// Input channels, padded to 32.
    pub(super) in32: usize,
    /// Output channels, padded to 32.
    pub(super) out32: usize,
    /// Positions of the grid (with room for every tap's reach from every output), a multiple
    /// of 16.
    pub(super) grid_len: usize,
    /// Output positions, a multiple of 32.
    pub(super) rows: usize,
    taps: usize,
    parts: usize,
    tiles: TilePlan,
}

impl GridConv {
    /// The convolution of a grid of at least `grid_min` positions with `inputs` channels to
    /// `outputs` channels at `rows` output positions, taps at `offsets`, `a` in `parts` parts.
    pub(super) fn new(
        inputs: usize,
        outputs: usize,
        offsets: &[usize],
        rows: usize,
        grid_min: usize,
        parts: usize,
    ) -> Self {
        let rows = rows.next_multiple_of(BLOCK);
        let max_offset = offsets.iter().max().copied().unwrap_or(0);
        let grid_len = grid_min.max(rows + max_offset).next_multiple_of(16);
        let (in32, out32) = (
            inputs.next_multiple_of(BLOCK),
            outputs.next_multiple_of(BLOCK),
        );
        // Step (tap, block of 32 input channels): 2 × 16 positions of the grid at the tap's
        // offset, against the weights' two tiles of 16 output channels.
        let (in_blocks, out16) = (in32 / BLOCK, out32 / 16);
        let steps: Vec<Step> = (0..offsets.len() * in_blocks)
            .map(|step| {
                let a0 = offsets[step / in_blocks] * in32 + step % in_blocks * BLOCK;
                let b0 = step * out16 * TILE;
                Step {
                    a0,
                    a1: a0 + 16 * in32,
                    b0,
                    b1: b0 + TILE,
                }
            })
            .collect();
        let tiles = TilePlan::new(&steps, in32, BLOCK, grid_len * in32, parts);
        Self {
            inputs,
            outputs,
            in32,
            out32,
            grid_len,
            rows,
            taps: offsets.len(),
            parts,
            tiles,
        }
    }

    /// The weights as pair-layout tiles, `weight(tap, i, o)` (bf16 bits) for each tap, input
    /// and output channel: per step (tap, block of 32 input channels), per 16 output channels,
    /// 16 rows (input channel pairs) of 16 × 2 bf16.
    /// Tiles are filled in parallel (this runs once per call, on every layer).
    pub(super) fn weights(&self, weight: impl Fn(usize, usize, usize) -> u16 + Sync) -> Lines {
        let (in_blocks, out16) = (self.in32 / BLOCK, self.out32 / 16);
        let mut tiles = Lines::zeros(2 * self.taps * in_blocks * out16 * TILE);
        let fill = |(tile, values): (usize, &mut [u16])| {
            let (ob, step) = (tile % out16, tile / out16);
            let (tap, ib) = (step / in_blocks, step % in_blocks);
            // Row `pair` holds, for each of 16 outputs, inputs `2·pair` and `2·pair + 1`; the
            // padding inputs and outputs stay 0.
            let outputs = (ob * 16..(ob * 16 + 16).min(self.outputs)).enumerate();
            for (pair, row) in values.chunks_exact_mut(BLOCK).enumerate() {
                for j in 0..2 {
                    let i = ib * BLOCK + 2 * pair + j;
                    if i >= self.inputs {
                        break;
                    }
                    for (at, o) in outputs.clone() {
                        row[2 * at + j] = weight(tap, i, o);
                    }
                }
            }
        };
        tiles
            .view_mut::<u16>()
            .par_chunks_mut(TILE)
            .enumerate()
            .for_each(fill);
        tiles
    }

    /// Values of one part of the planar grid: `in32 / 2` rows (channel pairs) of `grid_len`
    /// pairs.
    pub(super) fn part_len(&self) -> usize {
        self.in32 / 2 * self.grid_len
    }

    /// Buffers for one thread: the planar grid (channel pairs × positions, per part), the grid
    /// channels last, the sums (positions × output channels) and the sums by channel.
    pub(super) fn buffers(&self) -> GridBuffers {
        GridBuffers {
            planar: Lines::zeros(4 * self.parts * self.part_len()),
            last: Lines::zeros(4 * self.parts * self.part_len()),
            sums: Lines::zeros(4 * self.rows * self.out32),
            by_channel: Lines::zeros(4 * self.out32 * self.rows),
        }
    }

    /// From the planar grid in `buffers`: the grid channels last, the sums over the taps, and
    /// the sums by output channel (`by_channel[o·rows + r]`).
    pub(super) fn run(&self, proof: AmxBf16, weights: &Lines, buffers: &mut GridBuffers) {
        let pairs = self.in32 / 2;
        let (src, dst) = (buffers.planar.view::<u32>(), buffers.last.view_mut::<u32>());
        for part in (0..self.parts).map(|s| s * self.part_len()) {
            for pair in (0..pairs).step_by(16) {
                for r in (0..self.grid_len).step_by(16) {
                    split::transpose16(
                        proof,
                        &src[part + pair * self.grid_len + r..],
                        self.grid_len,
                        &mut dst[part + r * pairs + pair..],
                        pairs,
                    );
                }
            }
        }
        let (a, b) = (buffers.last.view::<u16>(), weights.view::<u16>());
        let sums = buffers.sums.view_mut::<f32>();
        for r0 in (0..self.rows).step_by(BLOCK) {
            for ob in (0..self.out32 / 16).step_by(2) {
                self.tiles.block(
                    proof,
                    &a[r0 * self.in32..],
                    &b[ob * TILE..],
                    &mut sums[r0 * self.out32 + ob * 16..],
                    self.out32,
                    false,
                );
            }
        }
        let (src, dst) = (
            buffers.sums.view::<u32>(),
            buffers.by_channel.view_mut::<u32>(),
        );
        for r in (0..self.rows).step_by(16) {
            for o in (0..self.out32).step_by(16) {
                split::transpose16(
                    proof,
                    &src[r * self.out32 + o..],
                    self.out32,
                    &mut dst[o * self.rows + r..],
                    self.rows,
                );
            }
        }
    }
}

/// One thread's buffers of a [`GridConv`].
pub(super) struct GridBuffers {
    /// The grid, planar: per part, per input channel pair, `grid_len` bf16 pairs (the even
    /// channel in the low half).
    pub(super) planar: Lines,
    last: Lines,
    sums: Lines,
    by_channel: Lines,
}

impl GridBuffers {
    /// The planar grid's pairs, to write.
    pub(super) fn planar_mut(&mut self) -> &mut [u32] {
        self.planar.view_mut()
    }

    /// The sums of output channel `o` at the grid's positions.
    pub(super) fn channel(&self, o: usize, rows: usize) -> &[f32] {
        &self.by_channel.view::<f32>()[o * rows..(o + 1) * rows]
    }
}
