//! Binary 2-D convolution: the signs of an NCHW `f32` input against the signs of OIHW `f32`
//! weights, exact, with zero or `+1` padding and an optional fused sign epilogue; and a bit
//! domain path ([`PackedActivations`], [`binary_conv2d_signs`], [`PackedActivations::max_pool2x2`])
//! that chains binary layers without writing floats.
//!
//! # Semantics
//! With `sign(v) = +1` for `v ≥ 0` (including `−0.0` and NaN) and `−1` for `v < 0`,
//! `out[b, o, y, x] = Σ_{c,i,j} s(b, c, y·sh + i·dh − ph, x·sw + j·dw − pw) · sign(w[o, c, i, j])`
//! where `s` is `sign(input)` inside the image and, outside it, 0 for [`PadMode::Zero`] and `+1`
//! for [`PadMode::PlusOne`]. Sizes follow [`ConvGeometry::output_size`].
//!
//! # Entry points
//! - [`binary_conv2d`]: NCHW floats in, NCHW floats out ([`ConvEpilogue::Raw`] dot products or
//!   [`ConvEpilogue::Sign`] `±1`).
//! - [`binary_conv2d_packed`]: [`PackedActivations`] in, NCHW floats out.
//! - [`binary_conv2d_signs`]: floats or packed signs in, packed signs out (the sign epilogue
//!   written as bits).
//! - each with a `_with(isa, …)` twin that forces an instruction set.
//!
//! # Layout and algorithm
//! - **Weights** ([`PackedConvWeights`], packed once): in blocks of 8 output channels; a block is
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
//! - **Threads**: one parallel region a call. The work is a list of items — pack a band of rows
//!   of an image, or compute a chunk of 8 tiles against a group of channel blocks — that the
//!   threads claim in order from an atomic counter (so the load balances itself); a compute
//!   item first waits for the bands it reads. Packing runs one image ahead of computing, and
//!   small batches split images into bands and the channel blocks into groups, so batch 1 keeps
//!   both cores busy.

use std::{
    cell::Cell,
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
    words_per_row,
};

/// The largest `kh·kw·c` supported: every dot product and correction is an integer of at most
/// this magnitude, exact in `f32`.
pub const MAX_TAPS_BITS: usize = 1 << 24;

/// The shape of a 2-D convolution; every pair is `[vertical, horizontal]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Images `n`.
    pub batch: usize,
    /// Input channels `c`.
    pub in_channels: usize,
    /// Input height `h`.
    pub height: usize,
    /// Input width `w`.
    pub width: usize,
    /// Output channels `o`.
    pub out_channels: usize,
    /// Kernel size `[kh, kw]` (at least 1).
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]` (at least 1).
    pub stride: [usize; 2],
    /// Padding `[ph, pw]` on both sides of each axis.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]` (at least 1).
    pub dilation: [usize; 2],
}

/// Why a [`ConvGeometry`] is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvGeometryError {
    /// A kernel size, stride or dilation is 0.
    #[error("conv2d: {name} must be at least 1 on both axes, got {value:?}")]
    Zero {
        /// `kernel`, `stride` or `dilation`.
        name: &'static str,
        /// The offending pair.
        value: [usize; 2],
    },
    /// The dilated kernel is larger than the padded input, so there is no output position.
    #[error(
        "conv2d: the dilated kernel spans {extent} {axis} but the padded input has only {padded} \
         ({axis} {size} + 2 × padding {padding})"
    )]
    KernelTooLarge {
        /// `rows` or `columns`.
        axis: &'static str,
        /// `dilation·(kernel − 1) + 1`.
        extent: usize,
        /// `size + 2·padding`.
        padded: usize,
        /// The input size on the axis.
        size: usize,
        /// The padding on the axis.
        padding: usize,
    },
    /// `kh·kw·c` exceeds [`MAX_TAPS_BITS`], or a size overflows `usize`.
    #[error("conv2d: the geometry is too large ({0})")]
    TooLarge(&'static str),
}

impl ConvGeometry {
    /// The output size `[oh, ow]`: `oh = (h + 2·ph − dh·(kh − 1) − 1) / sh + 1`, likewise `ow`;
    /// an error if a kernel size, stride or dilation is 0, the dilated kernel exceeds the padded
    /// input, or the sizes overflow.
    pub fn output_size(&self) -> Result<[usize; 2], ConvGeometryError> {
        for (name, value) in [
            ("kernel", self.kernel),
            ("stride", self.stride),
            ("dilation", self.dilation),
        ] {
            if value.contains(&0) {
                return Err(ConvGeometryError::Zero { name, value });
            }
        }
        let overflow = ConvGeometryError::TooLarge("size overflow");
        let mut out = [0; 2];
        for (axis, name) in ["rows", "columns"].into_iter().enumerate() {
            let size = [self.height, self.width][axis];
            let padded = self.padding[axis]
                .checked_mul(2)
                .and_then(|p| p.checked_add(size))
                .ok_or(overflow.clone())?;
            let extent = (self.kernel[axis] - 1)
                .checked_mul(self.dilation[axis])
                .ok_or(overflow.clone())?
                + 1;
            if extent > padded {
                return Err(ConvGeometryError::KernelTooLarge {
                    axis: name,
                    extent,
                    padded,
                    size,
                    padding: self.padding[axis],
                });
            }
            out[axis] = (padded - extent) / self.stride[axis] + 1;
        }
        let taps = self.kernel[0]
            .checked_mul(self.kernel[1])
            .and_then(|t| t.checked_mul(self.in_channels))
            .ok_or(overflow.clone())?;
        if taps > MAX_TAPS_BITS {
            return Err(ConvGeometryError::TooLarge("kh·kw·c exceeds 2^24"));
        }
        let lens = [
            [self.batch, self.in_channels, self.height, self.width],
            [self.batch, self.out_channels, out[0], out[1]],
        ];
        for dims in lens {
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or(overflow.clone())?;
        }
        Ok(out)
    }

    /// Checks the geometry (see [`ConvGeometry::output_size`]).
    pub fn validate(&self) -> Result<(), ConvGeometryError> {
        self.output_size().map(|_| ())
    }

    /// Values of the NCHW input: `n·c·h·w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    /// Values of the OIHW weights: `o·c·kh·kw`.
    pub fn weights_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Values of the NCHW output, `n·o·oh·ow`.
    pub fn output_len(&self) -> Result<usize, ConvGeometryError> {
        let [oh, ow] = self.output_size()?;
        Ok(self.batch * self.out_channels * oh * ow)
    }

    /// Binary multiply-accumulates of the convolution (`n·o·oh·ow·c·kh·kw`), for throughput
    /// figures.
    pub fn macs(&self) -> Result<u64, ConvGeometryError> {
        let taps = (self.in_channels * self.kernel[0] * self.kernel[1]) as u64;
        Ok(self.output_len()? as u64 * taps)
    }
}

/// The value of taps outside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    /// 0, as a float convolution of padded ±1 data: padded taps add nothing.
    Zero,
    /// `+1` (as in Larq Compute Engine): padded taps add the weight's sign; cheapest.
    PlusOne,
}

/// What [`binary_conv2d`] writes.
#[derive(Clone, Copy, Debug)]
pub enum ConvEpilogue<'a> {
    /// The dot products (integers, exact in `f32`).
    Raw,
    /// `±1`: output channel `o` is `+1` where `dot ≥ threshold[o]` (`dot ≤ threshold[o]` where
    /// `negate[o]`), else `−1`. A NaN threshold gives `−1`; `−∞` (not negated) a constant `+1`.
    /// [`SignThresholds::from_affine`] builds the pair for `sign(a·dot + b)`.
    Sign {
        /// One per output channel.
        threshold: &'a [f32],
        /// One per output channel.
        negate: &'a [bool],
    },
}

/// Per-channel thresholds of a [`ConvEpilogue::Sign`].
#[derive(Clone, Debug, PartialEq)]
pub struct SignThresholds {
    /// One per output channel.
    pub threshold: Vec<f32>,
    /// One per output channel.
    pub negate: Vec<bool>,
}

impl SignThresholds {
    /// Thresholds that give, for every integer `dot` with `|dot| ≤ max_dot` (at most
    /// [`MAX_TAPS_BITS`]; [`PackedConvWeights::max_dot`] bounds every output), exactly
    /// `sign(a[o]·dot + b[o])` evaluated in `f32` as `(a * dot) + b` (two roundings, no fused
    /// multiply-add), with `sign(v) = +1` for `v ≥ 0` or NaN, else `−1` — e.g. a batch norm
    /// followed by a sign activation.
    ///
    /// As a function of `dot` that sign is monotone (non-decreasing for `a > 0`, non-increasing
    /// for `a < 0`, rounding being monotone), so it switches at one integer, found by bisection
    /// on the float expression itself. `a = ±0` gives the constant `sign(b)` (encoded as
    /// threshold `−∞` for `+1`, `+∞` for `−1`), and a NaN `a` the constant `+1` (the expression
    /// is NaN).
    pub fn from_affine(a: &[f32], b: &[f32], max_dot: usize) -> SignThresholds {
        assert_eq!(a.len(), b.len(), "SignThresholds: a and b lengths differ");
        assert!(
            max_dot <= MAX_TAPS_BITS,
            "SignThresholds: max_dot above 2^24"
        );
        let m = max_dot as i64;
        let (threshold, negate) = a
            .iter()
            .zip(b)
            .map(|(&a, &b)| {
                // `+1` unless the value is below 0 (NaN gives `+1`).
                let plus = |d: i64| {
                    ((a * d as f32) + b).partial_cmp(&0.0) != Some(std::cmp::Ordering::Less)
                };
                let constant =
                    |on: bool| (if on { f32::NEG_INFINITY } else { f32::INFINITY }, false);
                if a.is_nan() || a == 0.0 {
                    constant(plus(0))
                } else if a > 0.0 {
                    // The smallest `d` in `[−m, m]` with `plus(d)`, if any.
                    match first_true(-m, m, plus) {
                        Some(d) if d == -m => (f32::NEG_INFINITY, false),
                        Some(d) => (d as f32, false),
                        None => constant(false),
                    }
                } else {
                    // The largest `d` with `plus(d)`: `plus(d)` holds for `d ≤` it.
                    match first_true(-m, m, |d| !plus(d)) {
                        Some(d) if d == -m => constant(false),
                        Some(d) => ((d - 1) as f32, true),
                        None => (f32::INFINITY, true),
                    }
                }
            })
            .unzip();
        SignThresholds { threshold, negate }
    }

    /// The epilogue with these thresholds.
    pub fn epilogue(&self) -> ConvEpilogue<'_> {
        ConvEpilogue::Sign {
            threshold: &self.threshold,
            negate: &self.negate,
        }
    }
}

/// The smallest `d` in `lo ..= hi` where the non-decreasing predicate `p` holds, if any.
fn first_true(mut lo: i64, hi: i64, p: impl Fn(i64) -> bool) -> Option<i64> {
    if !p(hi) {
        return None;
    }
    let mut hi = hi;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if p(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The geometry that a base table depends on besides the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BaseKey {
    size: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    pad: PadMode,
}

/// `K_eff − correction` for every output channel, output column and class of output rows.
#[derive(Debug)]
struct BaseTable {
    /// The class of each output row.
    row_class: Vec<usize>,
    /// `values[(class·o + channel)·ow + x]`.
    values: Vec<f32>,
}

/// Cached base tables per packed weights.
const BASE_CACHE_ENTRIES: usize = 4;

/// Sign weights packed once for [`binary_conv2d`] (see the module docs for the layout), with the
/// per-tap sums of their signs for the zero-padding correction.
pub struct PackedConvWeights {
    out_channels: usize,
    in_channels: usize,
    kernel: [usize; 2],
    /// `ceil(o/8)` blocks of `kh·kw·ceil(c/64)·8` words.
    words: Vec<u64>,
    /// `tap_sums[o·kh·kw + t] = Σ_c sign(w[o, c, t])`.
    tap_sums: Vec<i32>,
    /// The last base tables used, most recent last.
    cache: Mutex<Vec<(BaseKey, Arc<BaseTable>)>>,
}

impl Clone for PackedConvWeights {
    fn clone(&self) -> Self {
        PackedConvWeights {
            out_channels: self.out_channels,
            in_channels: self.in_channels,
            kernel: self.kernel,
            words: self.words.clone(),
            tap_sums: self.tap_sums.clone(),
            cache: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for PackedConvWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConvWeights")
            .field("out_channels", &self.out_channels)
            .field("in_channels", &self.in_channels)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl PackedConvWeights {
    /// Packs the signs of OIHW weights (`o·c·kh·kw` values; `+1` for `v ≥ 0`, `−0.0` and NaN).
    pub fn new(
        weights_oihw: &[f32],
        out_channels: usize,
        in_channels: usize,
        kernel: [usize; 2],
    ) -> PackedConvWeights {
        let [kh, kw] = kernel;
        let taps = kh * kw;
        assert_eq!(
            weights_oihw.len(),
            out_channels * in_channels * taps,
            "PackedConvWeights: expected {out_channels}·{in_channels}·{kh}·{kw} weights"
        );
        let cw = words_per_row(in_channels);
        let steps = taps * cw;
        let mut words = vec![0u64; out_channels.div_ceil(BLOCK) * steps * BLOCK];
        let mut tap_sums = vec![0i32; out_channels * taps];
        for o in 0..out_channels {
            let block = &mut words[(o / BLOCK) * steps * BLOCK..][..steps * BLOCK];
            for c in 0..in_channels {
                let kernel = &weights_oihw[(o * in_channels + c) * taps..][..taps];
                for (t, &v) in kernel.iter().enumerate() {
                    let negative = v < 0.0;
                    tap_sums[o * taps + t] += if negative { -1 } else { 1 };
                    let step = t * cw + c / 64;
                    block[step * BLOCK + o % BLOCK] |= u64::from(negative) << (c % 64);
                }
            }
        }
        PackedConvWeights {
            out_channels,
            in_channels,
            kernel,
            words,
            tap_sums,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// Packs sign weights from rows in the crate's convolution layout: for each output channel
    /// `o` and tap `t = i·kw + j`, `ceil(c/64)` words of channel signs at
    /// `rows[(o·kh·kw + t)·ceil(c/64) ..]` (bit 1 = −1, bits past `c` zero) — the bytes of a
    /// packed tensor `[o, kh, kw, c]`.
    pub fn from_tap_rows(
        rows: &[u64],
        out_channels: usize,
        in_channels: usize,
        kernel: [usize; 2],
    ) -> PackedConvWeights {
        let taps = kernel[0] * kernel[1];
        let cw = words_per_row(in_channels);
        assert_eq!(
            rows.len(),
            out_channels * taps * cw,
            "PackedConvWeights: expected {out_channels}·{taps}·{cw} words"
        );
        let steps = taps * cw;
        let mut words = vec![0u64; out_channels.div_ceil(BLOCK) * steps * BLOCK];
        let mut tap_sums = vec![0i32; out_channels * taps];
        for o in 0..out_channels {
            let block = &mut words[(o / BLOCK) * steps * BLOCK..][..steps * BLOCK];
            for t in 0..taps {
                let tap = &rows[(o * taps + t) * cw..][..cw];
                let negatives: u32 = tap.iter().map(|w| w.count_ones()).sum();
                tap_sums[o * taps + t] = in_channels as i32 - 2 * negatives as i32;
                for (w, &word) in tap.iter().enumerate() {
                    block[(t * cw + w) * BLOCK + o % BLOCK] = word;
                }
            }
        }
        PackedConvWeights {
            out_channels,
            in_channels,
            kernel,
            words,
            tap_sums,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// Output channels `o`.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Input channels `c`.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Kernel size `[kh, kw]`.
    pub fn kernel(&self) -> [usize; 2] {
        self.kernel
    }

    /// `kh·kw·c`, the largest magnitude of any output dot product.
    pub fn max_dot(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.in_channels
    }

    /// The packed words (see the module docs for the layout).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Panics unless the geometry has these weights' channels and kernel.
    fn check_geometry(&self, g: &ConvGeometry) {
        assert!(
            g.in_channels == self.in_channels
                && g.out_channels == self.out_channels
                && g.kernel == self.kernel,
            "binary_conv2d: the geometry has {}→{} channels and kernel {:?}, the weights {}→{} and {:?}",
            g.in_channels,
            g.out_channels,
            g.kernel,
            self.in_channels,
            self.out_channels,
            self.kernel
        );
    }

    /// The base table of a (validated) geometry, from the cache or computed and cached.
    fn base_table(&self, g: &ConvGeometry, out_size: [usize; 2], pad: PadMode) -> Arc<BaseTable> {
        let key = BaseKey {
            size: [g.height, g.width],
            stride: g.stride,
            padding: g.padding,
            dilation: g.dilation,
            pad,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            let entry = cache.remove(i);
            let table = entry.1.clone();
            cache.push(entry);
            return table;
        }
        let table = Arc::new(self.compute_base_table(g, out_size, pad));
        if cache.len() == BASE_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((key, table.clone()));
        table
    }

    /// Computes the base table: rows and columns fall into classes by the set of kernel rows
    /// (columns) inside the image; the correction of class pair `(r, s)` and channel `o` is
    /// `Σ_{(i, j) padded} tap_sums[o, i, j]`.
    fn compute_base_table(
        &self,
        g: &ConvGeometry,
        [oh, ow]: [usize; 2],
        pad: PadMode,
    ) -> BaseTable {
        let o = self.out_channels;
        let k_eff = self.max_dot() as f32;
        if pad == PadMode::PlusOne {
            return BaseTable {
                row_class: vec![0; oh],
                values: vec![k_eff; o * ow],
            };
        }
        let [kh, kw] = self.kernel;
        let (row_class, row_sets) =
            classes(oh, kh, g.stride[0], g.dilation[0], g.padding[0], g.height);
        let (col_class, col_sets) =
            classes(ow, kw, g.stride[1], g.dilation[1], g.padding[1], g.width);
        // small[(r·cols + s)·o + oc] = base of row class r, column class s, channel oc.
        let mut small = vec![0f32; row_sets.len() * col_sets.len() * o];
        for (r, rows) in row_sets.iter().enumerate() {
            for (s, cols) in col_sets.iter().enumerate() {
                for oc in 0..o {
                    let sums = &self.tap_sums[oc * kh * kw..][..kh * kw];
                    let mut padded = 0i64;
                    for i in 0..kh {
                        for j in 0..kw {
                            if !(rows[i] && cols[j]) {
                                padded += i64::from(sums[i * kw + j]);
                            }
                        }
                    }
                    small[(r * col_sets.len() + s) * o + oc] = k_eff - padded as f32;
                }
            }
        }
        let mut values = vec![0f32; row_sets.len() * o * ow];
        for r in 0..row_sets.len() {
            for oc in 0..o {
                for (x, &s) in col_class.iter().enumerate() {
                    values[(r * o + oc) * ow + x] = small[(r * col_sets.len() + s) * o + oc];
                }
            }
        }
        BaseTable { row_class, values }
    }
}

/// Classes of the `out` output positions along one axis by the set of kernel taps inside the
/// image: the class of each position, and each class's set (`set[i]`: tap `i` is inside).
fn classes(
    out: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: usize,
    size: usize,
) -> (Vec<usize>, Vec<Vec<bool>>) {
    let mut sets: Vec<Vec<bool>> = Vec::new();
    let class = (0..out)
        .map(|y| {
            let set: Vec<bool> = (0..kernel)
                .map(|i| {
                    let p = y * stride + i * dilation;
                    p >= padding && p - padding < size
                })
                .collect();
            match sets.iter().position(|s| *s == set) {
                Some(c) => c,
                None => {
                    sets.push(set);
                    sets.len() - 1
                }
            }
        })
        .collect();
    (class, sets)
}

/// Where the packed input of a geometry keeps each word (see the module docs).
#[derive(Clone, Copy, Debug)]
struct InputLayout {
    /// Channel words per pixel.
    words: usize,
    /// Words between consecutive channel words of a pixel (one phase of one padded row).
    word_stride: usize,
    /// Words of one padded row (all phases and channel words).
    row_words: usize,
    /// Words of one image.
    image_words: usize,
    /// Padded rows `h + 2·ph`.
    rows: usize,
}

impl InputLayout {
    fn new(g: &ConvGeometry, ow: usize) -> InputLayout {
        let words = words_per_row(g.in_channels);
        let [sw, dw, kw] = [g.stride[1], g.dilation[1], g.kernel[1]];
        let padded_width = g.width + 2 * g.padding[1];
        // Every phase holds its padded columns, and the lanes past the output's last column
        // (up to a whole vector) still read inside the row at every tap.
        let word_stride = padded_width
            .div_ceil(sw)
            .max(ow.div_ceil(LANES) * LANES + (kw - 1) * dw / sw);
        let row_words = sw * words * word_stride;
        let rows = g.height + 2 * g.padding[0];
        InputLayout {
            words,
            word_stride,
            row_words,
            image_words: rows * row_words,
            rows,
        }
    }

    /// The offset of each tap `(i, j)` (`i·kw + j`) from an output pixel's first word.
    fn tap_offsets(&self, g: &ConvGeometry) -> Vec<usize> {
        let [kh, kw] = g.kernel;
        let [dh, dw] = g.dilation;
        let sw = g.stride[1];
        (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i, j)))
            .map(|(i, j)| {
                let (phase, index) = ((j * dw) % sw, (j * dw) / sw);
                i * dh * self.row_words + phase * self.words * self.word_stride + index
            })
            .collect()
    }
}

/// The input of a binary convolution.
#[derive(Clone, Copy, Debug)]
pub enum ConvInput<'a> {
    /// NCHW floats (`geometry.input_len()` values); only their signs count.
    Nchw(&'a [f32]),
    /// Signs already packed, e.g. by a previous [`binary_conv2d_signs`].
    Packed(&'a PackedActivations),
}

/// Sign activations (`±1`) packed as bits, for chaining binary layers without floats.
///
/// Layout ("row-planar"): image `b`, row `y`, channel word `wd`, column `x` is word
/// `((b·h + y)·words_per_row(c) + wd)·w + x`; its bit `t` is channel `64·wd + t`, 1 for `−1`
/// (`x < 0`; `+0`, `−0.0` and NaN are `+1`), and bits of channels `≥ c` are 0. (So the words of a
/// row and channel word are the row's pixels side by side — the layout the convolution reads.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedActivations {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    words: Vec<u64>,
}

impl PackedActivations {
    /// Takes words already in this type's layout, for `[batch, channels, height, width]`.
    ///
    /// # Panics
    /// If `words` has not `batch·height·ceil(channels/64)·width` words, or a bit of a channel
    /// `≥ channels` is set.
    pub fn from_words(
        words: Vec<u64>,
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> PackedActivations {
        let cw = words_per_row(channels);
        assert_eq!(
            words.len(),
            batch * height * cw * width,
            "PackedActivations::from_words: word count"
        );
        if !channels.is_multiple_of(64) && width > 0 {
            let padding = !0u64 << (channels % 64);
            let last_word = |row: &[u64]| row[(cw - 1) * width..].iter().all(|w| w & padding == 0);
            assert!(
                words.chunks_exact(cw * width).all(last_word),
                "PackedActivations::from_words: bits set past channel {channels}"
            );
        }
        PackedActivations {
            batch,
            channels,
            height,
            width,
            words,
        }
    }

    /// Packs the signs of NCHW floats (`batch·channels·height·width` values).
    pub fn from_nchw(
        input: &[f32],
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> PackedActivations {
        Self::from_nchw_with(active_isa(), input, batch, channels, height, width)
    }

    /// [`PackedActivations::from_nchw`] on a given instruction set (the portable path where the
    /// CPU lacks it).
    pub fn from_nchw_with(
        isa: Isa,
        input: &[f32],
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> PackedActivations {
        assert_eq!(
            input.len(),
            batch * channels * height * width,
            "PackedActivations::from_nchw: input length"
        );
        let isa = CheckedIsa::new(isa).isa();
        let cw = words_per_row(channels);
        let rows = RowLayout {
            channels,
            height,
            width,
            words: cw,
            word_stride: width,
            row_words: cw * width,
            stride: 1,
            padding: 0,
        };
        let mut words = vec![0u64; batch * height * cw * width];
        let image_values = channels * height * width;
        let parallel = input.len() >= PACK_PAR_MIN_VALUES && rayon::current_num_threads() > 1;
        let bands = if parallel {
            (2 * rayon::current_num_threads())
                .div_ceil(batch.max(1))
                .clamp(1, height.max(1))
        } else {
            1
        };
        let mut tasks = Vec::with_capacity(batch * bands);
        if rows.row_words > 0 {
            for (image, mut rest) in words.chunks_mut(height * rows.row_words).enumerate() {
                for band in 0..bands {
                    let band_rows = band_rows(height, band, bands);
                    let (chunk, tail) =
                        std::mem::take(&mut rest).split_at_mut(band_rows.len() * rows.row_words);
                    rest = tail;
                    tasks.push((image, band_rows, chunk));
                }
            }
        }
        let job = |(image, band, chunk): (usize, Range<usize>, &mut [u64])| {
            let pixels = &input[image * image_values..][..image_values];
            conv_tile::pack_rows(isa, pixels, &rows, band, chunk);
        };
        if parallel {
            tasks.into_par_iter().for_each(job);
        } else {
            tasks.into_iter().for_each(job);
        }
        PackedActivations {
            batch,
            channels,
            height,
            width,
            words,
        }
    }

    /// Unpacks into NCHW `±1` floats (`batch·channels·height·width` values).
    pub fn to_nchw(&self, out: &mut [f32]) {
        let [n, c, h, w] = self.shape();
        assert_eq!(
            out.len(),
            n * c * h * w,
            "PackedActivations::to_nchw: output length"
        );
        let cw = words_per_row(c);
        for (image, out) in out.chunks_mut((c * h * w).max(1)).enumerate().take(n) {
            for (ch, plane) in out.chunks_mut((h * w).max(1)).enumerate().take(c) {
                let (wd, bit) = (ch / 64, ch % 64);
                for (y, row) in plane.chunks_mut(w.max(1)).enumerate().take(h) {
                    let src = &self.words[((image * h + y) * cw + wd) * w..][..w];
                    for (o, &word) in row.iter_mut().zip(src) {
                        *o = if (word >> bit) & 1 == 1 { -1.0 } else { 1.0 };
                    }
                }
            }
        }
    }

    /// 2 × 2 max pooling with stride 2 (output `floor(h/2) × floor(w/2)`), in the bit domain:
    /// the max of `±1` values is `+1` unless all are `−1`, so the output bit is the AND of the
    /// 4 input bits.
    pub fn max_pool2x2(&self) -> PackedActivations {
        self.sign_of_max_pool2x2(&[])
    }

    /// The signs that a monotone sign function of 2 × 2 max-pooled values gives, from the signs
    /// it gives before pooling (`self`): where channel `c`'s function rises with the value (its
    /// bit in `falling`, word `c / 64`, is 0), the sign of the max is the max of the signs (AND
    /// of the `−1` bits, as [`PackedActivations::max_pool2x2`]); where it falls (bit 1), the
    /// sign of the max is the min of the signs (OR of the bits). So a layer's pooling can follow
    /// its sign epilogue. Words missing from `falling` count as 0.
    pub fn sign_of_max_pool2x2(&self, falling: &[u64]) -> PackedActivations {
        let [n, c, h, w] = self.shape();
        let (h2, w2, cw) = (h / 2, w / 2, words_per_row(c));
        let mut words = vec![0u64; n * h2 * cw * w2];
        let job = |(row, dst): (usize, &mut [u64])| {
            // `row` counts (image, output row, channel word).
            let (image, y, wd) = (row / (h2 * cw), row / cw % h2, row % cw);
            let at = |yy: usize| ((image * h + yy) * cw + wd) * w;
            let (top, bottom) = (
                &self.words[at(2 * y)..][..w],
                &self.words[at(2 * y + 1)..][..w],
            );
            let or = falling.get(wd).copied().unwrap_or(0);
            for (x, d) in dst.iter_mut().enumerate() {
                let quad = [top[2 * x], top[2 * x + 1], bottom[2 * x], bottom[2 * x + 1]];
                let all = quad[0] & quad[1] & quad[2] & quad[3];
                let any = quad[0] | quad[1] | quad[2] | quad[3];
                *d = (all & !or) | (any & or);
            }
        };
        if w2 > 0 {
            if words.len() >= PACK_PAR_MIN_VALUES && rayon::current_num_threads() > 1 {
                words
                    .par_chunks_mut(w2)
                    .enumerate()
                    .with_min_len(64)
                    .for_each(job);
            } else {
                words.chunks_mut(w2).enumerate().for_each(job);
            }
        }
        PackedActivations {
            batch: n,
            channels: c,
            height: h2,
            width: w2,
            words,
        }
    }

    /// `[batch, channels, height, width]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.batch, self.channels, self.height, self.width]
    }

    /// The packed words (see the type docs for the layout).
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

/// Input values below which one thread packs them.
const PACK_PAR_MIN_VALUES: usize = 1 << 16;

/// Packs band `band` of `bands` of image `image` of the input into its packed rows `dst`:
/// image rows `h·band/bands .. h·(band+1)/bands`, and the padding rows above (first band) or
/// below (last band). Every word of `dst` is written; padding is 0.
fn pack_band(
    isa: Isa,
    input: ConvInput<'_>,
    g: &ConvGeometry,
    layout: &InputLayout,
    (image, band, bands): (usize, usize, usize),
    dst: &mut [u64],
) {
    dst.fill(0);
    let (c, h, w) = (g.in_channels, g.height, g.width);
    let rows = band_rows(h, band, bands);
    let first = if band == 0 { g.padding[0] } else { 0 };
    let inner = &mut dst[first * layout.row_words..][..rows.len() * layout.row_words];
    let row_layout = RowLayout {
        channels: c,
        height: h,
        width: w,
        words: layout.words,
        word_stride: layout.word_stride,
        row_words: layout.row_words,
        stride: g.stride[1],
        padding: g.padding[1],
    };
    match input {
        ConvInput::Nchw(values) => {
            let image_values = c * h * w;
            let pixels = &values[image * image_values..][..image_values];
            conv_tile::pack_rows(isa, pixels, &row_layout, rows, inner);
        }
        ConvInput::Packed(packed) => {
            if w == 0 || layout.row_words == 0 {
                return;
            }
            for (y, row) in rows.zip(inner.chunks_exact_mut(layout.row_words)) {
                for wd in 0..layout.words {
                    let src = &packed.words[((image * h + y) * layout.words + wd) * w..][..w];
                    if g.stride[1] == 1 {
                        row[row_layout.at(wd, 0)..][..w].copy_from_slice(src);
                    } else {
                        for (x, &word) in src.iter().enumerate() {
                            row[row_layout.at(wd, x)] = word;
                        }
                    }
                }
            }
        }
    }
}

/// Image rows of band `band` of `bands` of an image of `h` rows.
fn band_rows(h: usize, band: usize, bands: usize) -> Range<usize> {
    h * band / bands..h * (band + 1) / bands
}

thread_local! {
    /// The packed-input buffer of the last call on this thread, reused to avoid page faults.
    static SCRATCH: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
}

/// Binary convolution (see the module docs) of NCHW floats into NCHW floats, on the active
/// instruction set.
///
/// `input_nchw` holds `geometry.input_len()` values, `out_nchw` `geometry.output_len()`; the
/// geometry's channels and kernel must be those of `weights`. Panics (with the reason) on an
/// impossible geometry or wrong lengths.
pub fn binary_conv2d(
    input_nchw: &[f32],
    weights: &PackedConvWeights,
    geometry: &ConvGeometry,
    pad: PadMode,
    epilogue: ConvEpilogue<'_>,
    out_nchw: &mut [f32],
) {
    binary_conv2d_with(
        active_isa(),
        input_nchw,
        weights,
        geometry,
        pad,
        epilogue,
        out_nchw,
    )
}

/// [`binary_conv2d`] on a given instruction set (the portable path where the CPU lacks it).
pub fn binary_conv2d_with(
    isa: Isa,
    input_nchw: &[f32],
    weights: &PackedConvWeights,
    geometry: &ConvGeometry,
    pad: PadMode,
    epilogue: ConvEpilogue<'_>,
    out_nchw: &mut [f32],
) {
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

/// [`binary_conv2d`] of packed signs (of the geometry's batch, channels and size).
pub fn binary_conv2d_packed(
    input: &PackedActivations,
    weights: &PackedConvWeights,
    geometry: &ConvGeometry,
    pad: PadMode,
    epilogue: ConvEpilogue<'_>,
    out_nchw: &mut [f32],
) {
    binary_conv2d_packed_with(
        active_isa(),
        input,
        weights,
        geometry,
        pad,
        epilogue,
        out_nchw,
    )
}

/// [`binary_conv2d_packed`] on a given instruction set (the portable path where the CPU lacks
/// it).
pub fn binary_conv2d_packed_with(
    isa: Isa,
    input: &PackedActivations,
    weights: &PackedConvWeights,
    geometry: &ConvGeometry,
    pad: PadMode,
    epilogue: ConvEpilogue<'_>,
    out_nchw: &mut [f32],
) {
    let input = ConvInput::Packed(input);
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
pub fn binary_conv2d_signs(
    input: ConvInput<'_>,
    weights: &PackedConvWeights,
    geometry: &ConvGeometry,
    pad: PadMode,
    thresholds: &SignThresholds,
) -> PackedActivations {
    binary_conv2d_signs_with(active_isa(), input, weights, geometry, pad, thresholds)
}

/// [`binary_conv2d_signs`] on a given instruction set (the portable path where the CPU lacks
/// it).
pub fn binary_conv2d_signs_with(
    isa: Isa,
    input: ConvInput<'_>,
    weights: &PackedConvWeights,
    geometry: &ConvGeometry,
    pad: PadMode,
    thresholds: &SignThresholds,
) -> PackedActivations {
    let [oh, ow] = geometry
        .output_size()
        .unwrap_or_else(|e| panic!("binary_conv2d_signs: {e}"));
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

/// Where a call writes.
enum Output<'a> {
    /// NCHW floats.
    Floats(&'a mut [f32]),
    /// Packed signs (all zero on entry).
    Bits(&'a mut [u64]),
}

/// Checks the arguments and runs one convolution.
fn convolve(
    isa: Isa,
    input: ConvInput<'_>,
    weights: &PackedConvWeights,
    geometry: &ConvGeometry,
    pad: PadMode,
    epilogue: ConvEpilogue<'_>,
    output: Output<'_>,
) {
    let g = geometry;
    let out_size = g
        .output_size()
        .unwrap_or_else(|e| panic!("binary_conv2d: {e}"));
    weights.check_geometry(g);
    match input {
        ConvInput::Nchw(values) => {
            assert_eq!(values.len(), g.input_len(), "binary_conv2d: input length")
        }
        ConvInput::Packed(packed) => assert_eq!(
            packed.shape(),
            [g.batch, g.in_channels, g.height, g.width],
            "binary_conv2d: packed input shape"
        ),
    }
    let [oh, ow] = out_size;
    let o = g.out_channels;
    let out = match output {
        Output::Floats(out) => {
            assert_eq!(
                out.len(),
                g.batch * o * oh * ow,
                "binary_conv2d: output length"
            );
            OutPtr::floats(out)
        }
        Output::Bits(out) => {
            assert!(
                matches!(epilogue, ConvEpilogue::Sign { .. }),
                "binary_conv2d: bits need signs"
            );
            assert_eq!(
                out.len(),
                g.batch * oh * words_per_row(o) * ow,
                "binary_conv2d: output length"
            );
            OutPtr::bits(out)
        }
    };
    if let ConvEpilogue::Sign { threshold, negate } = epilogue {
        assert_eq!(threshold.len(), o, "binary_conv2d: thresholds");
        assert_eq!(negate.len(), o, "binary_conv2d: negate flags");
    }
    if g.batch * o * oh * ow == 0 {
        return;
    }
    let isa = CheckedIsa::new(isa).isa();
    let table = weights.base_table(g, out_size, pad);
    let layout = InputLayout::new(g, ow);
    let total = g.batch * layout.image_words;
    let mut buf = SCRATCH.take();
    if buf.len() < total {
        buf.resize(total, 0);
    }
    let buf_ptr = BufPtr {
        ptr: buf.as_mut_ptr(),
        len: total,
    };
    let tap_offsets = layout.tap_offsets(g);
    let conv = Conv {
        isa,
        input,
        buf: buf_ptr,
        frame: Frame {
            // SAFETY: `buf` is neither touched nor dropped until `conv.run()` returns; tiles
            // read only packed images (see `Conv::run`).
            input: unsafe { InPtr::new(buf_ptr.ptr, total) },
            max_tap_offset: tap_offsets.iter().copied().max().unwrap_or(0),
            tap_offsets: &tap_offsets,
            words: layout.words,
            word_stride: layout.word_stride,
            base: &table.values,
            base_channel_stride: ow,
            out_channel_stride: oh * ow,
        },
        layout,
        geometry: *g,
        out_size,
        row_class: &table.row_class,
        weights,
        epilogue,
        out,
    };
    conv.run();
    SCRATCH.set(buf);
}

/// Word-pair popcounts (one per pixel, channel and 64 input bits) below which one thread
/// does the whole convolution.
const PAR_MIN_WORK: usize = 1 << 17;
/// Word-pair popcounts of a compute item at the least, when splitting the channel blocks.
const ITEM_MIN_WORK: usize = 1 << 16;
/// Compute items per thread that the channel split aims for, for load balance.
const ITEMS_PER_THREAD: usize = 16;
/// Tiles of a compute item: their input stays in L1 while the item's weight blocks stream from
/// L2.
const CHUNK_TILES: usize = 8;
/// Busy-wait rounds before a thread waiting for packed input starts yielding.
const SPINS_BEFORE_YIELD: u32 = 1 << 12;

/// A unit of work of a call, claimed by one thread.
#[derive(Clone, Debug)]
enum Item {
    /// Pack band `band` of image `image`.
    Pack { image: usize, band: usize },
    /// Compute tiles `tiles` against channel blocks `blocks`, once bands `needs` (numbered
    /// `image·bands + band`) are packed.
    Compute {
        tiles: Range<usize>,
        blocks: Range<usize>,
        needs: Range<usize>,
    },
}

/// The packed-input buffer of a call, written by pack items (disjoint bands) while compute
/// items read the finished images.
#[derive(Clone, Copy, Debug)]
struct BufPtr {
    ptr: *mut u64,
    len: usize,
}

// SAFETY: `Conv::run` hands each band of the buffer to exactly one pack item, and lets compute
// items read a band only after it is written (release/acquire on `done`); the buffer outlives
// the call.
unsafe impl Send for BufPtr {}
// SAFETY: as above.
unsafe impl Sync for BufPtr {}

/// One call, ready to run: the geometry, weights, base table and the buffers.
struct Conv<'a> {
    isa: Isa,
    input: ConvInput<'a>,
    buf: BufPtr,
    frame: Frame<'a>,
    layout: InputLayout,
    geometry: ConvGeometry,
    out_size: [usize; 2],
    row_class: &'a [usize],
    weights: &'a PackedConvWeights,
    epilogue: ConvEpilogue<'a>,
    out: OutPtr,
}

impl Conv<'_> {
    /// Vectors of 8 output pixels in a row of the output.
    fn vectors_per_row(&self) -> usize {
        self.out_size[1].div_ceil(LANES)
    }

    /// Vectors of one image.
    fn vectors_per_image(&self) -> usize {
        self.out_size[0] * self.vectors_per_row()
    }

    /// Vectors of the whole output.
    fn vectors(&self) -> usize {
        self.geometry.batch * self.vectors_per_image()
    }

    /// The tile of vectors `first .. first + mr`.
    fn tile(&self, first: usize, mr: usize) -> Tile {
        let [oh, ow] = self.out_size;
        let per_row = self.vectors_per_row();
        let o = self.geometry.out_channels;
        let mut tile = Tile {
            mr,
            ..Tile::default()
        };
        for r in 0..mr {
            let v = first + r;
            let (image, rest) = (v / (oh * per_row), v % (oh * per_row));
            let (y, x0) = (rest / per_row, LANES * (rest % per_row));
            tile.input[r] = image * self.layout.image_words
                + y * self.geometry.stride[0] * self.layout.row_words
                + x0;
            tile.out[r] = image * o * oh * ow + y * ow + x0;
            tile.base[r] = self.row_class[y] * o * ow + x0;
            tile.bits[r] = (image * oh + y) * words_per_row(o) * ow + x0;
            tile.lanes[r] = (ow - x0).min(LANES);
        }
        tile
    }

    /// Output channel block `ob`.
    fn block(&self, ob: usize) -> Block<'_> {
        let [oh, ow] = self.out_size;
        let o = self.geometry.out_channels;
        let steps = self.frame.tap_offsets.len() * self.layout.words;
        let o0 = ob * BLOCK;
        let channels = (o - o0).min(BLOCK);
        let finish = match self.epilogue {
            ConvEpilogue::Raw => Finish::Raw,
            ConvEpilogue::Sign { threshold, negate } => {
                let mut t = [0.0; BLOCK];
                let mut n = [false; BLOCK];
                t[..channels].copy_from_slice(&threshold[o0..o0 + channels]);
                n[..channels].copy_from_slice(&negate[o0..o0 + channels]);
                Finish::Sign {
                    threshold: t,
                    negate: n,
                }
            }
        };
        Block {
            weights: &self.weights.words[ob * steps * BLOCK..][..steps * BLOCK],
            channels,
            out: o0 * oh * ow,
            base: o0 * ow,
            bits_word: o0 / 64 * ow,
            bits_byte: o0 / 8 % 8,
            finish,
        }
    }

    /// Computes tiles `tiles` (of `MAX_MR` vectors) against channel blocks `blocks`.
    ///
    /// # Safety
    /// The packed rows that the tiles read are written, and nobody writes them meanwhile.
    unsafe fn compute(&self, tiles: Range<usize>, blocks: Range<usize>) {
        let vectors = self.vectors();
        let mut chunk = [Tile::default(); CHUNK_TILES];
        for c0 in tiles.clone().step_by(CHUNK_TILES) {
            let count = (tiles.end - c0).min(CHUNK_TILES);
            for (k, tile) in chunk.iter_mut().enumerate().take(count) {
                let first = (c0 + k) * MAX_MR;
                *tile = self.tile(first, (vectors - first).min(MAX_MR));
            }
            for ob in blocks.clone() {
                let block = self.block(ob);
                for tile in &chunk[..count] {
                    // SAFETY: `isa` is checked; the tile's input words are packed (caller).
                    unsafe { conv_tile::tile(self.isa, &self.frame, tile, &block, self.out) };
                }
            }
        }
    }

    /// The words of band `band` of `bands` of image `image` in the packed-input buffer.
    fn band_words(&self, image: usize, band: usize, bands: usize) -> Range<usize> {
        let rows = band_rows(self.geometry.height, band, bands);
        let ph = self.geometry.padding[0];
        let top = if band == 0 { 0 } else { ph + rows.start };
        let bottom = if band + 1 == bands {
            self.layout.rows
        } else {
            ph + rows.end
        };
        let base = image * self.layout.image_words;
        base + top * self.layout.row_words..base + bottom * self.layout.row_words
    }

    /// The bands (numbered `image·bands + band`) holding every packed row that tiles `tiles`
    /// read: rows `y·sh ..= y·sh + (kh − 1)·dh` (padded) of each vector's output row `y`. The
    /// numbering follows the buffer, so they form a range.
    fn needed_bands(&self, tiles: &Range<usize>, bands: usize) -> Range<usize> {
        let g = &self.geometry;
        let per_image = self.vectors_per_image().max(1);
        let per_row = self.vectors_per_row().max(1);
        let band_of = |vector: usize, last: bool| {
            let (image, y) = (vector / per_image, vector % per_image / per_row);
            let row = y * g.stride[0]
                + if last {
                    (g.kernel[0] - 1) * g.dilation[0]
                } else {
                    0
                };
            // Padding rows above belong to the first band, those below to the last.
            let band = match row.checked_sub(g.padding[0]) {
                None => 0,
                Some(r) if r >= g.height => bands - 1,
                Some(r) => (0..bands)
                    .rfind(|&b| band_rows(g.height, b, bands).start <= r)
                    .unwrap_or(0),
            };
            image * bands + band
        };
        let first = tiles.start * MAX_MR;
        let last = (tiles.end * MAX_MR).min(self.vectors()) - 1;
        band_of(first, false)..band_of(last, true) + 1
    }

    /// The work items in claiming order, with the bands per image. Images are packed one ahead
    /// of the compute items that read them, so that a compute item rarely waits, and every item
    /// comes after the pack items it depends on.
    fn schedule(&self, threads: usize) -> (Vec<Item>, usize) {
        let n = self.geometry.batch;
        let tiles = self.vectors().div_ceil(MAX_MR);
        let blocks = self.geometry.out_channels.div_ceil(BLOCK);
        let steps = self.frame.tap_offsets.len() * self.layout.words;
        let chunks = tiles.div_ceil(CHUNK_TILES);
        let chunk_work = CHUNK_TILES * MAX_MR * LANES * blocks * BLOCK * steps.max(1);
        let (bands, groups) = if threads <= 1 {
            (1, 1)
        } else {
            let bands = (2 * threads)
                .div_ceil(n)
                .clamp(1, self.geometry.height.max(1));
            let groups = (threads * ITEMS_PER_THREAD)
                .div_ceil(chunks)
                .min(chunk_work / ITEM_MIN_WORK)
                .clamp(1, blocks);
            (bands, groups)
        };
        let block_bounds = bounds(blocks, groups);
        let mut items = Vec::with_capacity(n * bands + chunks * groups);
        let mut packed = 0;
        let mut pack_through = |items: &mut Vec<Item>, image: usize| {
            while packed <= image.min(n - 1) {
                items.extend((0..bands).map(|band| Item::Pack {
                    image: packed,
                    band,
                }));
                packed += 1;
            }
        };
        pack_through(&mut items, 1);
        for chunk in 0..chunks {
            let tiles = chunk * CHUNK_TILES..((chunk + 1) * CHUNK_TILES).min(tiles);
            let needs = self.needed_bands(&tiles, bands);
            pack_through(&mut items, needs.end.div_ceil(bands));
            for g in block_bounds.windows(2) {
                items.push(Item::Compute {
                    tiles: tiles.clone(),
                    blocks: g[0]..g[1],
                    needs: needs.clone(),
                });
            }
        }
        pack_through(&mut items, n);
        (items, bands)
    }

    /// Runs the call: the threads claim the items in order; a compute item first waits until
    /// the bands it reads are packed. That never deadlocks: a pack item comes before every item that
    /// waits for it, so it was claimed earlier by a thread that is running it, and packing waits
    /// for nothing.
    fn run(&self) {
        let tiles = self.vectors().div_ceil(MAX_MR);
        let blocks = self.geometry.out_channels.div_ceil(BLOCK);
        let steps = self.frame.tap_offsets.len() * self.layout.words;
        let work = tiles * MAX_MR * LANES * blocks * BLOCK * steps.max(1);
        let threads = rayon::current_num_threads();
        let threads = if work < PAR_MIN_WORK { 1 } else { threads };
        let (items, bands) = self.schedule(threads);
        let next = AtomicUsize::new(0);
        let done: Vec<AtomicBool> = (0..self.geometry.batch * bands)
            .map(|_| AtomicBool::new(false))
            .collect();
        let worker = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                match item {
                    Item::Pack { image, band } => {
                        let words = self.band_words(*image, *band, bands);
                        assert!(words.end <= self.buf.len, "conv: band out of bounds");
                        // SAFETY: the band lies in the buffer (checked) and is handed to this
                        // item alone; no compute item reads it before `done` says it is written.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                self.buf.ptr.add(words.start),
                                words.len(),
                            )
                        };
                        let image_band = (*image, *band, bands);
                        pack_band(
                            self.isa,
                            self.input,
                            &self.geometry,
                            &self.layout,
                            image_band,
                            dst,
                        );
                        done[image * bands + band].store(true, Ordering::Release);
                    }
                    Item::Compute {
                        tiles,
                        blocks,
                        needs,
                    } => {
                        for flag in &done[needs.clone()] {
                            wait_until(flag);
                        }
                        // SAFETY: the bands the tiles read are packed (acquired above) and no
                        // pack item writes them again.
                        unsafe { self.compute(tiles.clone(), blocks.clone()) };
                    }
                }
            }
        };
        if threads <= 1 {
            worker();
        } else {
            (0..threads).into_par_iter().for_each(|_| worker());
        }
    }
}

/// Waits until `flag` is set (acquiring what was released with it): spins, then yields the
/// CPU.
fn wait_until(flag: &AtomicBool) {
    let mut spins = 0u32;
    while !flag.load(Ordering::Acquire) {
        if spins < SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// `parts + 1` boundaries splitting `0..len` into near-equal parts.
fn bounds(len: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, len.max(1));
    (0..=parts).map(|t| len * t / parts).collect()
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// `+1` for `v ≥ 0`, `−0.0` and NaN, else `−1`.
    fn sign(v: f32) -> f32 {
        if v < 0.0 { -1.0 } else { 1.0 }
    }

    /// Values with every sign case: ordinary, ±0, NaN of both signs, ±∞, tiny negatives.
    fn values(rng: &mut StdRng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| match rng.random_range(0..16) {
                0 => 0.0,
                1 => -0.0,
                2 => f32::NAN,
                3 => f32::from_bits(0xffc0_0000),
                4 => f32::INFINITY,
                5 => f32::NEG_INFINITY,
                6 => -1e-45,
                _ => rng.random_range(-1.0..1.0),
            })
            .collect()
    }

    /// The convolution of the ±1 values, from the definition, in floats.
    fn reference(input: &[f32], weights: &[f32], g: &ConvGeometry, pad: PadMode) -> Vec<f32> {
        let [oh, ow] = g.output_size().unwrap();
        let (c, h, w, o) = (g.in_channels, g.height, g.width, g.out_channels);
        let [kh, kw] = g.kernel;
        let pad_value = match pad {
            PadMode::Zero => 0.0,
            PadMode::PlusOne => 1.0,
        };
        let mut out = vec![0.0; g.batch * o * oh * ow];
        for b in 0..g.batch {
            for oc in 0..o {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut sum = 0.0f32;
                        for ci in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let yy = (y * g.stride[0] + i * g.dilation[0]) as isize
                                        - g.padding[0] as isize;
                                    let xx = (x * g.stride[1] + j * g.dilation[1]) as isize
                                        - g.padding[1] as isize;
                                    let inside = (0..h as isize).contains(&yy)
                                        && (0..w as isize).contains(&xx);
                                    let s = if inside {
                                        let at = ((b * c + ci) * h + yy as usize) * w + xx as usize;
                                        sign(input[at])
                                    } else {
                                        pad_value
                                    };
                                    sum += s * sign(weights[((oc * c + ci) * kh + i) * kw + j]);
                                }
                            }
                        }
                        out[((b * o + oc) * oh + y) * ow + x] = sum;
                    }
                }
            }
        }
        out
    }

    fn geometry(
        [batch, in_channels, height, width, out_channels]: [usize; 5],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> ConvGeometry {
        ConvGeometry {
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    /// Runs every available path and pad mode on random data and compares with the reference.
    fn check(rng: &mut StdRng, g: &ConvGeometry) {
        let input = values(rng, g.input_len());
        let raw = values(rng, g.weights_len());
        let weights = PackedConvWeights::new(&raw, g.out_channels, g.in_channels, g.kernel);
        for pad in [PadMode::Zero, PadMode::PlusOne] {
            let expected = reference(&input, &raw, g, pad);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; g.output_len().unwrap()];
                binary_conv2d_with(isa, &input, &weights, g, pad, ConvEpilogue::Raw, &mut out);
                assert_eq!(out, expected, "{isa:?} {pad:?} {g:?}");
            }
        }
    }

    const CHANNELS: [usize; 7] = [1, 3, 31, 63, 64, 65, 130];
    const KERNELS: [[usize; 2]; 4] = [[1, 1], [3, 3], [5, 3], [3, 5]];

    #[test]
    fn matches_reference_on_random_geometries() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut checked = 0;
        while checked < 60 {
            let pick =
                |rng: &mut StdRng, options: &[usize]| options[rng.random_range(0..options.len())];
            let kernel = KERNELS[rng.random_range(0..KERNELS.len())];
            let g = geometry(
                [
                    pick(&mut rng, &[1, 3]),
                    CHANNELS[checked % CHANNELS.len()],
                    pick(&mut rng, &[1, 2, 5, 7, 9, 11, 13]),
                    pick(&mut rng, &[1, 3, 6, 9, 11, 17, 19]),
                    pick(&mut rng, &[1, 5, 8, 17]),
                ],
                kernel,
                [pick(&mut rng, &[1, 2]), pick(&mut rng, &[1, 2])],
                [pick(&mut rng, &[0, 1, 2]), pick(&mut rng, &[0, 1, 2])],
                [pick(&mut rng, &[1, 2]), pick(&mut rng, &[1, 2])],
            );
            if g.validate().is_ok() {
                check(&mut rng, &g);
                checked += 1;
            }
        }
    }

    #[test]
    fn matches_reference_on_every_channel_count_and_kernel() {
        let mut rng = StdRng::seed_from_u64(2);
        for c in CHANNELS {
            for kernel in KERNELS {
                check(
                    &mut rng,
                    &geometry([1, c, 7, 9, 9], kernel, [1, 1], [1, 2], [1, 1]),
                );
            }
        }
    }

    #[test]
    fn strides_paddings_and_dilations_per_axis() {
        let mut rng = StdRng::seed_from_u64(3);
        for stride in [[1, 1], [2, 1], [1, 2], [2, 2], [3, 2]] {
            for padding in [[0, 0], [1, 0], [0, 2], [2, 1], [3, 3]] {
                for dilation in [[1, 1], [2, 1], [1, 2], [2, 3]] {
                    let g = geometry([2, 65, 9, 12, 10], [3, 3], stride, padding, dilation);
                    if g.validate().is_ok() {
                        check(&mut rng, &g);
                    }
                }
            }
        }
    }

    /// Kernels as large as the padded input, and paddings wider than the kernel (rows of
    /// outputs that see only padding).
    #[test]
    fn extreme_paddings() {
        let mut rng = StdRng::seed_from_u64(4);
        check(
            &mut rng,
            &geometry([1, 3, 3, 5, 4], [5, 3], [1, 1], [1, 0], [1, 2]),
        );
        check(
            &mut rng,
            &geometry([2, 31, 2, 2, 3], [1, 1], [1, 1], [3, 2], [1, 1]),
        );
        check(
            &mut rng,
            &geometry([1, 64, 1, 1, 9], [3, 3], [1, 1], [2, 2], [1, 1]),
        );
        check(
            &mut rng,
            &geometry([1, 7, 4, 4, 3], [3, 3], [2, 3], [4, 1], [2, 1]),
        );
    }

    /// Shapes large enough to split between threads: batch 1 with many channels (split by
    /// channel blocks), and a batch of larger images (split by pixels).
    #[test]
    fn matches_reference_when_split_between_threads() {
        let mut rng = StdRng::seed_from_u64(5);
        check(
            &mut rng,
            &geometry([1, 130, 8, 8, 70], [3, 3], [1, 1], [1, 1], [1, 1]),
        );
        check(
            &mut rng,
            &geometry([3, 64, 19, 17, 24], [3, 3], [1, 1], [1, 1], [1, 1]),
        );
        check(
            &mut rng,
            &geometry([2, 65, 33, 31, 17], [5, 3], [2, 1], [2, 1], [1, 2]),
        );
    }

    #[test]
    fn sign_thresholds_match_the_affine_sign_for_every_dot() {
        let mut rng = StdRng::seed_from_u64(6);
        let specials = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-30,
            -3e38,
            0.1,
            -0.3,
            7.0,
        ];
        let mut a: Vec<f32> = Vec::new();
        let mut b: Vec<f32> = Vec::new();
        for &x in &specials {
            for &y in &specials {
                a.push(x);
                b.push(y);
            }
        }
        for _ in 0..300 {
            a.push(rng.random_range(-3.0..3.0));
            b.push(rng.random_range(-40.0..40.0));
            a.push(rng.random_range(-1.0..1.0) * 1e-7);
            b.push(rng.random_range(-1.0..1.0) * 1e-6);
        }
        for max_dot in [0, 1, 7, 64, 300] {
            let th = SignThresholds::from_affine(&a, &b, max_dot);
            for ch in 0..a.len() {
                for d in -(max_dot as i64)..=max_dot as i64 {
                    let d = d as f32;
                    let expected = sign(a[ch] * d + b[ch]);
                    let on = if th.negate[ch] {
                        d <= th.threshold[ch]
                    } else {
                        d >= th.threshold[ch]
                    };
                    let got = if on { 1.0 } else { -1.0 };
                    assert_eq!(got, expected, "a={} b={} dot={d}", a[ch], b[ch]);
                }
            }
        }
    }

    /// The fused epilogue against `sign(a·dot + b)` of the reference dot products, on every
    /// path, with constant channels (`a = 0`, NaN) among them.
    #[test]
    fn sign_epilogue_matches_reference() {
        let mut rng = StdRng::seed_from_u64(7);
        for g in [
            geometry([1, 65, 9, 11, 19], [3, 3], [1, 1], [1, 1], [1, 1]),
            geometry([3, 31, 7, 6, 10], [5, 3], [2, 1], [2, 0], [1, 2]),
            geometry([1, 130, 8, 8, 70], [3, 3], [1, 1], [1, 1], [1, 1]),
        ] {
            let input = values(&mut rng, g.input_len());
            let raw = values(&mut rng, g.weights_len());
            let weights = PackedConvWeights::new(&raw, g.out_channels, g.in_channels, g.kernel);
            let o = g.out_channels;
            let a: Vec<f32> = (0..o)
                .map(|i| match i % 7 {
                    0 => 0.0,
                    1 => f32::NAN,
                    2 | 3 => -rng.random_range(0.01..2.0),
                    _ => rng.random_range(0.01..2.0),
                })
                .collect();
            let b: Vec<f32> = (0..o).map(|_| rng.random_range(-20.0..20.0)).collect();
            let th = SignThresholds::from_affine(&a, &b, weights.max_dot());
            let plane = g.output_len().unwrap() / (g.batch * o);
            for pad in [PadMode::Zero, PadMode::PlusOne] {
                let dots = reference(&input, &raw, &g, pad);
                let expected: Vec<f32> = dots
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        let ch = i / plane % o;
                        sign(a[ch] * d + b[ch])
                    })
                    .collect();
                for isa in Isa::available() {
                    let mut out = vec![f32::NAN; expected.len()];
                    binary_conv2d_with(isa, &input, &weights, &g, pad, th.epilogue(), &mut out);
                    assert_eq!(out, expected, "{isa:?} {pad:?} {g:?}");
                }
            }
        }
    }

    /// One set of weights used with many image sizes and geometries in turn (more than the
    /// base-table cache holds), twice.
    #[test]
    fn weights_reused_across_geometries() {
        let mut rng = StdRng::seed_from_u64(8);
        let (o, c, kernel) = (11, 40, [3, 3]);
        let raw = values(&mut rng, o * c * 9);
        let weights = PackedConvWeights::new(&raw, o, c, kernel);
        let shapes = [
            ([1, c, 5, 5, o], [1, 1], [1, 1], [1, 1]),
            ([2, c, 8, 6, o], [1, 1], [1, 1], [1, 1]),
            ([1, c, 9, 9, o], [2, 2], [1, 1], [1, 1]),
            ([1, c, 9, 9, o], [1, 1], [0, 2], [1, 1]),
            ([1, c, 9, 9, o], [1, 1], [2, 2], [2, 2]),
            ([1, c, 12, 4, o], [1, 1], [1, 1], [1, 1]),
        ];
        for _ in 0..2 {
            for &(dims, stride, padding, dilation) in &shapes {
                let g = geometry(dims, kernel, stride, padding, dilation);
                let input = values(&mut rng, g.input_len());
                for pad in [PadMode::Zero, PadMode::PlusOne] {
                    let mut out = vec![f32::NAN; g.output_len().unwrap()];
                    binary_conv2d(&input, &weights, &g, pad, ConvEpilogue::Raw, &mut out);
                    assert_eq!(out, reference(&input, &raw, &g, pad), "{pad:?} {g:?}");
                }
            }
        }
        let clone = weights.clone();
        let g = geometry([1, c, 5, 5, o], kernel, [1, 1], [1, 1], [1, 1]);
        let input = values(&mut rng, g.input_len());
        let mut out = vec![0.0; g.output_len().unwrap()];
        binary_conv2d(
            &input,
            &clone,
            &g,
            PadMode::Zero,
            ConvEpilogue::Raw,
            &mut out,
        );
        assert_eq!(out, reference(&input, &raw, &g, PadMode::Zero));
    }

    #[test]
    fn output_size_follows_the_formula() {
        let g = geometry([1, 3, 32, 31, 8], [3, 5], [2, 3], [1, 2], [2, 1]);
        // (32 + 2 − 2·2 − 1)/2 + 1 = 15, (31 + 4 − 4 − 1)/3 + 1 = 11.
        assert_eq!(g.output_size(), Ok([15, 11]));
        assert_eq!(g.output_len(), Ok(15 * 11 * 8));
        assert_eq!(g.macs(), Ok(15 * 11 * 8 * 3 * 15));
        let same = geometry([1, 3, 32, 32, 8], [3, 3], [1, 1], [1, 1], [1, 1]);
        assert_eq!(same.output_size(), Ok([32, 32]));
    }

    #[test]
    fn impossible_geometries_are_reported() {
        let base = geometry([1, 3, 5, 5, 4], [3, 3], [1, 1], [0, 0], [1, 1]);
        let zero_stride = ConvGeometry {
            stride: [1, 0],
            ..base
        };
        assert!(matches!(
            zero_stride.output_size(),
            Err(ConvGeometryError::Zero { name: "stride", .. })
        ));
        let zero_kernel = ConvGeometry {
            kernel: [0, 3],
            ..base
        };
        assert!(zero_kernel.validate().is_err());
        let too_big = ConvGeometry {
            dilation: [3, 1],
            ..base
        };
        let err = too_big.output_size().unwrap_err();
        assert!(matches!(
            err,
            ConvGeometryError::KernelTooLarge {
                axis: "rows",
                extent: 7,
                padded: 5,
                ..
            }
        ));
        assert!(err.to_string().contains("spans 7 rows"), "{err}");
        let huge = ConvGeometry {
            in_channels: 1 << 22,
            ..base
        };
        assert!(matches!(
            huge.validate(),
            Err(ConvGeometryError::TooLarge(_))
        ));
    }

    #[test]
    #[should_panic(expected = "dilated kernel spans")]
    fn conv_panics_on_impossible_geometry() {
        let g = geometry([1, 3, 2, 2, 4], [3, 3], [1, 1], [0, 0], [1, 1]);
        let weights = PackedConvWeights::new(&[1.0; 4 * 3 * 9], 4, 3, [3, 3]);
        binary_conv2d(
            &[0.0; 12],
            &weights,
            &g,
            PadMode::Zero,
            ConvEpilogue::Raw,
            &mut [],
        );
    }

    #[test]
    #[should_panic(expected = "the weights")]
    fn conv_panics_on_mismatched_weights() {
        let g = geometry([1, 3, 4, 4, 4], [3, 3], [1, 1], [1, 1], [1, 1]);
        let weights = PackedConvWeights::new(&[1.0; 4 * 2 * 9], 4, 2, [3, 3]);
        let mut out = vec![0.0; 64];
        binary_conv2d(
            &[0.0; 48],
            &weights,
            &g,
            PadMode::Zero,
            ConvEpilogue::Raw,
            &mut out,
        );
    }

    #[test]
    fn empty_shapes() {
        let mut rng = StdRng::seed_from_u64(9);
        for isa in Isa::available() {
            let g = geometry([0, 3, 4, 4, 5], [3, 3], [1, 1], [1, 1], [1, 1]);
            let w = PackedConvWeights::new(&values(&mut rng, 5 * 3 * 9), 5, 3, [3, 3]);
            binary_conv2d_with(isa, &[], &w, &g, PadMode::Zero, ConvEpilogue::Raw, &mut []);
            let g = geometry([2, 3, 4, 4, 0], [3, 3], [1, 1], [1, 1], [1, 1]);
            let w = PackedConvWeights::new(&[], 0, 3, [3, 3]);
            let input = values(&mut rng, g.input_len());
            binary_conv2d_with(
                isa,
                &input,
                &w,
                &g,
                PadMode::Zero,
                ConvEpilogue::Raw,
                &mut [],
            );
        }
        // No input channels: every dot product is 0.
        check(
            &mut rng,
            &geometry([2, 0, 4, 5, 3], [3, 3], [1, 1], [1, 1], [1, 1]),
        );
        // Images of zero width or height, seen only through padding.
        check(
            &mut rng,
            &geometry([1, 5, 0, 3, 3], [1, 1], [1, 1], [1, 0], [1, 1]),
        );
    }

    /// Packed signs from the definition (row-planar layout).
    fn ref_packed(values: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<u64> {
        let cw = words_per_row(c);
        let mut out = vec![0u64; n * h * cw * w];
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        if values[((b * c + ch) * h + y) * w + x] < 0.0 {
                            out[((b * h + y) * cw + ch / 64) * w + x] |= 1 << (ch % 64);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn packed_activations_match_definition_and_round_trip() {
        let mut rng = StdRng::seed_from_u64(20);
        for shape in [
            [1, 1, 1, 1],
            [2, 3, 5, 7],
            [1, 65, 9, 8],
            [3, 130, 4, 17],
            [1, 128, 32, 32],
        ] {
            let [n, c, h, w] = shape;
            let values = values(&mut rng, n * c * h * w);
            for isa in Isa::available() {
                let packed = PackedActivations::from_nchw_with(isa, &values, n, c, h, w);
                assert_eq!(packed.shape(), shape);
                assert_eq!(
                    packed.words(),
                    ref_packed(&values, shape),
                    "{isa:?} {shape:?}"
                );
                let mut back = vec![0.0; values.len()];
                packed.to_nchw(&mut back);
                let signs: Vec<f32> = values.iter().map(|&v| sign(v)).collect();
                assert_eq!(back, signs, "{isa:?} {shape:?}");
            }
        }
    }

    #[test]
    fn max_pool_matches_float_max() {
        let mut rng = StdRng::seed_from_u64(21);
        for [n, c, h, w] in [
            [1, 1, 2, 2],
            [2, 3, 5, 7],
            [1, 65, 8, 9],
            [2, 130, 6, 4],
            [1, 4, 1, 5],
        ] {
            let values = values(&mut rng, n * c * h * w);
            let pooled = PackedActivations::from_nchw(&values, n, c, h, w).max_pool2x2();
            let (h2, w2) = (h / 2, w / 2);
            assert_eq!(pooled.shape(), [n, c, h2, w2]);
            let mut expected = vec![0.0; n * c * h2 * w2];
            for (i, e) in expected.iter_mut().enumerate() {
                let (bc, y, x) = (i / (h2 * w2), i / w2 % h2, i % w2);
                let at = |yy: usize, xx: usize| sign(values[(bc * h + yy) * w + xx]);
                *e = at(2 * y, 2 * x)
                    .max(at(2 * y, 2 * x + 1))
                    .max(at(2 * y + 1, 2 * x))
                    .max(at(2 * y + 1, 2 * x + 1));
            }
            let mut got = vec![0.0; expected.len()];
            pooled.to_nchw(&mut got);
            assert_eq!(got, expected, "{:?}", [n, c, h, w]);
        }
    }

    /// Signs taken before pooling, pooled per channel by the direction of the sign function,
    /// equal the signs of the max-pooled values.
    #[test]
    fn sign_of_max_pool_matches_sign_after_pooling() {
        let mut rng = StdRng::seed_from_u64(23);
        for [n, c, h, w] in [[1, 3, 4, 4], [2, 70, 5, 7], [1, 130, 6, 2]] {
            // Finite values: a monotone function of a max needs ordered values.
            let values: Vec<f32> = (0..n * c * h * w)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let cut: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
            let falling: Vec<bool> = (0..c).map(|_| rng.random_bool(0.5)).collect();
            // Channel `ch`'s sign function: `v − cut` where rising, `cut − v` where falling.
            let f = |ch: usize, v: f32| {
                if falling[ch] {
                    cut[ch] - v
                } else {
                    v - cut[ch]
                }
            };
            let before: Vec<f32> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| f(i / (h * w) % c, v))
                .collect();
            let mut mask = vec![0u64; c.div_ceil(64)];
            for (ch, _) in falling.iter().enumerate().filter(|(_, f)| **f) {
                mask[ch / 64] |= 1 << (ch % 64);
            }
            let pooled =
                PackedActivations::from_nchw(&before, n, c, h, w).sign_of_max_pool2x2(&mask);
            let (h2, w2) = (h / 2, w / 2);
            let expected: Vec<f32> = (0..n * c * h2 * w2)
                .map(|i| {
                    let (bc, y, x) = (i / (h2 * w2), i / w2 % h2, i % w2);
                    let at = |yy: usize, xx: usize| values[(bc * h + yy) * w + xx];
                    let max = at(2 * y, 2 * x)
                        .max(at(2 * y, 2 * x + 1))
                        .max(at(2 * y + 1, 2 * x))
                        .max(at(2 * y + 1, 2 * x + 1));
                    sign(f(bc % c, max))
                })
                .collect();
            let mut got = vec![0.0; expected.len()];
            pooled.to_nchw(&mut got);
            assert_eq!(got, expected, "{:?}", [n, c, h, w]);
        }
    }

    /// Words taken as they are round-trip; a set padding bit is refused.
    #[test]
    fn packed_activations_from_words() {
        let mut rng = StdRng::seed_from_u64(24);
        let values = values(&mut rng, 2 * 70 * 3 * 5);
        let packed = PackedActivations::from_nchw(&values, 2, 70, 3, 5);
        let again = PackedActivations::from_words(packed.words().to_vec(), 2, 70, 3, 5);
        assert_eq!(again, packed);
        let mut dirty = packed.words().to_vec();
        // Row 0, channel word 1, column 0: bit 6 is channel 70, past the last.
        dirty[5] |= 1 << 6;
        let refused =
            std::panic::catch_unwind(|| PackedActivations::from_words(dirty, 2, 70, 3, 5));
        assert!(refused.is_err());
    }

    /// Packed input gives the same outputs as float input, and the packed sign output holds
    /// the signs that the float sign epilogue writes (padding bits 0), on every path.
    #[test]
    fn packed_input_and_sign_output_match_the_float_path() {
        let mut rng = StdRng::seed_from_u64(22);
        for g in [
            geometry([1, 65, 9, 11, 19], [3, 3], [1, 1], [1, 1], [1, 1]),
            geometry([3, 31, 7, 6, 70], [5, 3], [2, 1], [2, 0], [1, 2]),
            geometry([2, 130, 8, 8, 130], [3, 3], [1, 2], [1, 1], [1, 1]),
            geometry([1, 3, 5, 13, 5], [1, 1], [2, 2], [0, 1], [1, 1]),
        ] {
            let input = values(&mut rng, g.input_len());
            let raw = values(&mut rng, g.weights_len());
            let weights = PackedConvWeights::new(&raw, g.out_channels, g.in_channels, g.kernel);
            let o = g.out_channels;
            let a: Vec<f32> = (0..o)
                .map(|i| if i % 5 == 0 { -1.0 } else { 0.5 })
                .collect();
            let b: Vec<f32> = (0..o).map(|_| rng.random_range(-9.0..9.0)).collect();
            let th = SignThresholds::from_affine(&a, &b, weights.max_dot());
            let packed =
                PackedActivations::from_nchw(&input, g.batch, g.in_channels, g.height, g.width);
            let [oh, ow] = g.output_size().unwrap();
            for pad in [PadMode::Zero, PadMode::PlusOne] {
                let expected = reference(&input, &raw, &g, pad);
                for isa in Isa::available() {
                    let mut out = vec![f32::NAN; expected.len()];
                    binary_conv2d_packed_with(
                        isa,
                        &packed,
                        &weights,
                        &g,
                        pad,
                        ConvEpilogue::Raw,
                        &mut out,
                    );
                    assert_eq!(out, expected, "{isa:?} {pad:?} {g:?}");
                    let mut signs = vec![f32::NAN; expected.len()];
                    binary_conv2d_with(isa, &input, &weights, &g, pad, th.epilogue(), &mut signs);
                    let want = ref_packed(&signs, [g.batch, o, oh, ow]);
                    for source in [ConvInput::Nchw(&input), ConvInput::Packed(&packed)] {
                        let bits = binary_conv2d_signs_with(isa, source, &weights, &g, pad, &th);
                        assert_eq!(bits.shape(), [g.batch, o, oh, ow]);
                        assert_eq!(bits.words(), want, "{isa:?} {pad:?} {g:?}");
                    }
                }
            }
        }
    }

    /// conv → sign → max-pool → conv in the bit domain against the float pipeline.
    #[test]
    fn chained_binary_layers() {
        let mut rng = StdRng::seed_from_u64(23);
        let g1 = geometry([2, 3, 10, 10, 70], [3, 3], [1, 1], [1, 1], [1, 1]);
        let g2 = geometry([2, 70, 5, 5, 9], [3, 3], [1, 1], [1, 1], [1, 1]);
        let input = values(&mut rng, g1.input_len());
        let raw1 = values(&mut rng, g1.weights_len());
        let raw2 = values(&mut rng, g2.weights_len());
        let w1 = PackedConvWeights::new(&raw1, 70, 3, [3, 3]);
        let w2 = PackedConvWeights::new(&raw2, 9, 70, [3, 3]);
        let th = SignThresholds::from_affine(&[1.0; 70], &[0.0; 70], w1.max_dot());
        // Floats: conv, sign, 2×2 max, conv.
        let dots = reference(&input, &raw1, &g1, PadMode::Zero);
        let mut pooled = vec![0.0; 2 * 70 * 25];
        for (i, p) in pooled.iter_mut().enumerate() {
            let (bc, y, x) = (i / 25, i / 5 % 5, i % 5);
            let at = |yy: usize, xx: usize| sign(dots[(bc * 10 + yy) * 10 + xx]);
            *p = at(2 * y, 2 * x)
                .max(at(2 * y, 2 * x + 1))
                .max(at(2 * y + 1, 2 * x))
                .max(at(2 * y + 1, 2 * x + 1));
        }
        let expected = reference(&pooled, &raw2, &g2, PadMode::Zero);
        // Bits.
        let a = binary_conv2d_signs(ConvInput::Nchw(&input), &w1, &g1, PadMode::Zero, &th);
        let a = a.max_pool2x2();
        let mut out = vec![0.0; expected.len()];
        binary_conv2d_packed(&a, &w2, &g2, PadMode::Zero, ConvEpilogue::Raw, &mut out);
        assert_eq!(out, expected);
    }

    #[test]
    #[should_panic(expected = "packed input shape")]
    fn packed_input_must_match_the_geometry() {
        let g = geometry([1, 3, 4, 4, 4], [3, 3], [1, 1], [1, 1], [1, 1]);
        let weights = PackedConvWeights::new(&[1.0; 4 * 3 * 9], 4, 3, [3, 3]);
        let packed = PackedActivations::from_nchw(&[0.0; 60], 1, 3, 4, 5);
        let mut out = vec![0.0; 64];
        binary_conv2d_packed(
            &packed,
            &weights,
            &g,
            PadMode::Zero,
            ConvEpilogue::Raw,
            &mut out,
        );
    }

    /// Calls from inside rayon tasks (workers busy, nested parallel regions, the scratch buffer
    /// of a thread re-entered) give the same results.
    #[test]
    fn concurrent_and_nested_calls() {
        use rayon::prelude::*;
        let mut rng = StdRng::seed_from_u64(24);
        let g = geometry([2, 64, 12, 12, 24], [3, 3], [1, 1], [1, 1], [1, 1]);
        let input = values(&mut rng, g.input_len());
        let raw = values(&mut rng, g.weights_len());
        let weights = PackedConvWeights::new(&raw, 24, 64, [3, 3]);
        let expected = reference(&input, &raw, &g, PadMode::Zero);
        let results: Vec<Vec<f32>> = (0..8)
            .into_par_iter()
            .map(|_| {
                let mut out = vec![0.0; expected.len()];
                binary_conv2d(
                    &input,
                    &weights,
                    &g,
                    PadMode::Zero,
                    ConvEpilogue::Raw,
                    &mut out,
                );
                out
            })
            .collect();
        for out in results {
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn weight_packing_layout() {
        // o = 9 (two blocks), c = 65 (two words), 1×2 kernel.
        let (o, c) = (9, 65);
        let mut raw = vec![1.0f32; o * c * 2];
        // Channel 8 (block 1, lane 0), input channel 64 (word 1), tap 1: negative.
        raw[(8 * c + 64) * 2 + 1] = -1.0;
        // Channel 2 (block 0, lane 2), input channel 3 (word 0), tap 0: negative.
        raw[(2 * c + 3) * 2] = -2.0;
        let w = PackedConvWeights::new(&raw, o, c, [1, 2]);
        let steps = 2 * 2;
        assert_eq!(w.words().len(), 2 * steps * BLOCK);
        let mut expected = vec![0u64; 2 * steps * BLOCK];
        expected[BLOCK * (steps + 3)] = 1; // block 1, step (tap 1, word 1), lane 0, bit 0
        expected[2] = 1 << 3; // block 0, step (tap 0, word 0), lane 2, bit 3
        assert_eq!(w.words(), expected);
        assert_eq!(w.max_dot(), 130);
    }
}
