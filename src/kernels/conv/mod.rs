//! Binary 2-D convolution: the signs of an NCHW `f32` input against the signs of OIHW `f32`
//! weights, exact, with zero or `+1` padding and an optional fused sign epilogue; and a bit
//! domain path ([`PackedActivations`], [`convolve_to_signs`], [`PackedActivations::max_pool2x2`])
//! that chains binary layers without writing floats.
//!
//! # Semantics
//! With `sign(v) = +1` for `v ≥ 0` (including `−0.0` and NaN) and `−1` for `v < 0`,
//! `out[b, o, y, x] = Σ_{c,i,j} s(b, c, y·sh + i·dh − ph, x·sw + j·dw − pw) · sign(w[o, c, i, j])`
//! where `s` is `sign(input)` inside the image and, outside it, 0 for [`PaddingMode::Zero`] and `+1`
//! for [`PaddingMode::PlusOne`]. Sizes follow [`ConvCall::output_size`].
//!
//! # Entry points
//! - [`convolve_nchw`]: NCHW floats in, NCHW floats out ([`ConvEpilogue::Raw`] dot products or
//!   [`ConvEpilogue::Sign`] `±1`).
//! - [`convolve_packed`]: [`PackedActivations`] in, NCHW floats out.
//! - [`convolve_to_signs`]: floats or packed signs in, packed signs out (the sign epilogue
//!   written as bits).
//! - each on the instruction set [`active_isa`] gives; [`crate::kernels::isa::with_isa`] pins one.
//!
//! # Layout and algorithm
//! - **Weights** ([`ConvWeightBlocks`], packed once): in blocks of 8 output channels; a block is
//!   `kh·kw·ceil(c/64)` steps (tap-major, `t = i·kw + j`, then channel word) of 8 interleaved
//!   words, one per channel (bit `b` of a word is the sign of input channel `64·word + b`; bits
//!   past `c` are 0, as are the words of channels past `o`).
//! - **Input** (packed per call into a reused per-thread scratch buffer): per image, per padded
//!   row (`h + 2·ph` rows), per column phase `q < sw`, per channel word, the padded columns
//!   `X ≡ q (mod sw)` at index `X / sw`, one word a pixel. Padding is bit 0 (`+1`). So for a tap
//!   `(i, j)` the input words of 8 adjacent output pixels are 8 adjacent words, whatever the
//!   stride and dilation: an implicit GEMM with no im2col copy.
//! - **Tiles** (see `conv_tile`): 3 vectors of 8 output pixels × 8 channels, each lane counting
//!   the popcount of its own pixel (weights broadcast), so counts need no reduction and a
//!   vector-channel pair is a run of 8 floats of the NCHW output (or one byte of 8 packed
//!   signs per pixel).
//! - **Zero padding**: bits cannot hold 0, so padded taps are `+1` and the epilogue subtracts,
//!   per output, the sum of the weight signs over its padded taps. That correction depends only
//!   on which kernel rows and columns fall outside the image, so it is tabulated per class of
//!   output rows (same set of valid kernel rows) × output column × channel, folded with
//!   `K_eff = kh·kw·c` into a *base* `K_eff − correction`, and cached in the weights per
//!   geometry (the last 4): the epilogue is `dot = base − 2·popcount`.
//! - **Sign epilogue**: `dot` is an integer, so `dot ≥ threshold` (or `≤` where negated) is a
//!   bound on the popcount itself, one per base value: the table of those *count limits* is
//!   built from the base table and kept with it for the last thresholds used (a layer calls
//!   with the same ones every time), and the tiles compare their 64-bit counts with it, with
//!   no conversion to floats, writing a vector's 8 sign bytes with one masked store.
//! - **Threads**: one parallel region a call. The work is a list of items — pack a band of rows
//!   of an image, or compute a chunk of 8 tiles against a group of channel blocks — that the
//!   threads claim in order from an atomic counter (so the load balances itself); a compute
//!   item first waits for the bands it reads. Packing runs one image ahead of computing, and
//!   small batches split images into bands and the channel blocks into groups, so batch 1 keeps
//!   both cores busy.

mod epilogue;
mod geometry;
mod input;
mod schedule;
#[cfg(test)]
mod tests;
mod weights;

use std::{
    cell::Cell,
    mem::MaybeUninit,
    ops::Range,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use rayon::prelude::*;

use super::{
    CheckedIsa,
    conv_tile::{self, BLOCK, Block, Finish, Frame, InPtr, LANES, MAX_MR, OutPtr, RowLayout, Tile},
    isa::{Isa, active_isa},
    uninit::as_slots,
    words_per_row,
};

pub use epilogue::*;
pub use geometry::*;
pub use input::*;
use schedule::*;
pub use weights::*;

/// Binary convolution (see the module docs) of NCHW floats into NCHW floats, on the active
/// instruction set.
///
/// `input_nchw` holds `geometry.input_len()` values, `out_nchw` `geometry.output_len()`; the
/// geometry's channels and kernel must be those of `weights`. Panics (with the reason) on an
/// impossible geometry or wrong lengths.
pub fn convolve_nchw(
    input_nchw: &[f32],
    weights: &ConvWeightBlocks,
    geometry: &ConvCall,
    pad: PaddingMode,
    epilogue: ConvEpilogue<'_>,
    out_nchw: &mut [f32],
) {
    // SAFETY: the tiles write only the values they compute.
    let out_nchw = unsafe { as_slots(out_nchw) };
    convolve_nchw_into(input_nchw, weights, geometry, pad, epilogue, out_nchw);
}

/// [`convolve_nchw`] into slots it writes every one of (so `out_nchw` need not be
/// initialized: a training step's outputs are not zeroed first).
pub(crate) fn convolve_nchw_into(
    input_nchw: &[f32],
    weights: &ConvWeightBlocks,
    geometry: &ConvCall,
    pad: PaddingMode,
    epilogue: ConvEpilogue<'_>,
    out_nchw: &mut [MaybeUninit<f32>],
) {
    let isa = active_isa();
    let input = ConvInput::Nchw(input_nchw);
    convolve(
        isa,
        input,
        weights,
        geometry,
        pad,
        epilogue,
        Output::Floats(out_nchw),
    );
}

/// [`convolve_nchw`] of packed signs (of the geometry's batch, channels and size).
pub fn convolve_packed(
    input: &PackedActivations,
    weights: &ConvWeightBlocks,
    geometry: &ConvCall,
    pad: PaddingMode,
    epilogue: ConvEpilogue<'_>,
    out_nchw: &mut [f32],
) {
    let isa = active_isa();
    let input = ConvInput::Packed(input);
    // SAFETY: the tiles write only the values they compute.
    let out_nchw = unsafe { as_slots(out_nchw) };
    convolve(
        isa,
        input,
        weights,
        geometry,
        pad,
        epilogue,
        Output::Floats(out_nchw),
    );
}

/// Binary convolution followed by the sign epilogue (as [`ConvEpilogue::Sign`] with
/// `thresholds`), straight into packed signs (`[batch, out_channels, oh, ow]`), for the next
/// binary layer — no floats written or read between layers.
pub fn convolve_to_signs(
    input: ConvInput<'_>,
    weights: &ConvWeightBlocks,
    geometry: &ConvCall,
    pad: PaddingMode,
    thresholds: &SignThresholds,
) -> PackedActivations {
    let isa = active_isa();
    let [oh, ow] = geometry
        .output_size()
        .unwrap_or_else(|e| panic!("convolve_to_signs: {e}"));
    let (n, o) = (geometry.batch, geometry.out_channels);
    let mut words = vec![0u64; n * oh * words_per_row(o) * ow];
    let epilogue = thresholds.epilogue();
    convolve(
        isa,
        input,
        weights,
        geometry,
        pad,
        epilogue,
        Output::Bits(&mut words),
    );
    PackedActivations {
        batch: n,
        channels: o,
        height: oh,
        width: ow,
        words,
    }
}
