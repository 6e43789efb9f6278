//! What a binary convolution writes per output: raw dot products or signs by per-channel
//! thresholds ([`ConvEpilogue`], [`SignThresholds`]).

use super::*;

/// What [`convolve_nchw`] writes.
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
    /// [`MAX_TAPS_BITS`]; [`ConvWeightBlocks::max_dot`] bounds every output), exactly
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

/// Thresholds are clamped to this magnitude, beyond every dot product (`|dot| ≤ 2·2²⁴`).
const FAR: f64 = (1u64 << 40) as f64;

/// The sign epilogue of one output as a bound on its popcount, so that the tiles compare
/// integer counts and convert nothing: for `dot = base − 2·count` (`base` an integer, as every
/// base-table value is, and `count ≥ 0`), the output is `+1` exactly where
/// `(count ≤ limit) != negate`, which is [`ConvEpilogue::Sign`]'s `dot ≥ threshold`
/// (`dot ≤ threshold` where `negate`), a NaN threshold included (never `+1`).
///
/// `dot` is an integer, so `dot ≥ t ⇔ dot ≥ ⌈t⌉` and `dot ≤ t ⇔ dot ≤ ⌊t⌋`; then
/// `base − 2·count ≥ ⌈t⌉ ⇔ count ≤ ⌊(base − ⌈t⌉)/2⌋`, and
/// `base − 2·count ≤ ⌊t⌋ ⇔ count ≥ ⌈(base − ⌊t⌋)/2⌉ ⇔ ¬(count ≤ ⌈(base − ⌊t⌋)/2⌉ − 1)`.
pub(super) fn count_limit(base: f32, threshold: f32, negate: bool) -> i64 {
    debug_assert_eq!(base.fract(), 0.0, "count_limit: base {base} not an integer");
    if threshold.is_nan() {
        // Never `+1`: `count ≤ limit` must fail (plain) or hold (negated) for every count.
        return if negate { i64::MAX } else { -1 };
    }
    let rounded = if negate {
        threshold.floor()
    } else {
        threshold.ceil()
    };
    let t = f64::from(rounded).clamp(-FAR, FAR) as i64;
    let base = base as i64;
    let limit = if negate {
        // ⌈x/2⌉ − 1 = ⌊(x + 1)/2⌋ − 1
        (base - t + 1).div_euclid(2) - 1
    } else {
        (base - t).div_euclid(2)
    };
    limit.max(-1)
}

/// The smallest `d` in `lo ..= hi` where the non-decreasing predicate `p` holds, if any.
pub(super) fn first_true(mut lo: i64, hi: i64, p: impl Fn(i64) -> bool) -> Option<i64> {
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
