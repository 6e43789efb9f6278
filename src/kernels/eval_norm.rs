//! Batch normalization in evaluation mode, as Burn's `BatchNorm` computes it, and its sign.
//!
//! Burn's `BatchNorm` outside training computes, per channel `c`, op for op in `f32`:
//! `y = ((x − mean_c) / sqrt(var_c + ε))·γ_c + β_c` with the running statistics. [`EvalNorm`]
//! computes the same bits (with `sqrt(var_c + ε)` once per channel, which changes no bit), so
//! that the packed and host paths of the crate give exactly the values of a model's Burn layers.
//! The sign follows the crate's convention ([`crate::quant::sign`]): `+1` for `y ≥ 0` and for
//! NaN, `−1` for `y < 0`.

use std::mem::MaybeUninit;

use super::{
    batch_norm::{NormShape, for_each_image_slice},
    uninit::as_slots,
};

/// `sqrt(var + ε)` of a channel, in Burn's `f32` operations.
#[inline]
pub(crate) fn norm_std(var: f32, epsilon: f64) -> f32 {
    (var + epsilon as f32).sqrt()
}

/// One value through a channel's batch norm: `(v − mean)/std·γ + β` in `f32`, with `std` from
/// [`norm_std`].
#[inline(always)]
pub(crate) fn normalize(v: f32, mean: f32, std: f32, gamma: f32, beta: f32) -> f32 {
    (v - mean) / std * gamma + beta
}

/// Whether a value binarizes to `+1`: `v ≥ 0`, or NaN (the crate's sign).
#[inline(always)]
pub(crate) fn binarizes_positive(v: f32) -> bool {
    v >= 0.0 || v.is_nan()
}

/// The per-channel parameters of a batch norm in evaluation mode, ready to apply: running mean,
/// `std = sqrt(running var + ε)`, `γ` and `β`.
///
/// ```
/// use burn_qnn::kernels::{batch_norm::NormShape, eval_norm::EvalNorm};
///
/// // Two channels: the first centred on 1, the second flipped by γ < 0.
/// let norm = EvalNorm::new(vec![1.0, 0.0], &[4.0, 1.0], vec![1.0, -1.0], vec![0.0, 0.0], 0.0);
/// assert_eq!(norm.apply(0, 3.0), 1.0); // (3 − 1)/2
/// let x = [0.5, 1.0, 2.0, -2.0]; // one image, two channels of two values
/// let shape = NormShape { batch: 1, channels: 2, spatial: 2 };
/// let mut signs = [0.0; 4];
/// norm.signs(&x, shape, &mut signs);
/// assert_eq!(signs, [-1.0, 1.0, -1.0, 1.0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EvalNorm {
    /// Running mean per channel.
    pub mean: Vec<f32>,
    /// `sqrt(var + ε)` per channel.
    pub std: Vec<f32>,
    /// Scale `γ` per channel.
    pub gamma: Vec<f32>,
    /// Shift `β` per channel.
    pub beta: Vec<f32>,
}

impl EvalNorm {
    /// The batch norm of running mean `mean`, running variance `var`, `gamma`, `beta` and
    /// `epsilon`.
    ///
    /// # Panics
    /// If the four vectors do not have the same length.
    pub fn new(mean: Vec<f32>, var: &[f32], gamma: Vec<f32>, beta: Vec<f32>, epsilon: f64) -> Self {
        assert!(
            var.len() == mean.len() && gamma.len() == mean.len() && beta.len() == mean.len(),
            "batch norm: mean, variance, γ and β need one value per channel, got {}, {}, {} and {}",
            mean.len(),
            var.len(),
            gamma.len(),
            beta.len()
        );
        Self {
            std: var.iter().map(|&var| norm_std(var, epsilon)).collect(),
            mean,
            gamma,
            beta,
        }
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// The batch norm of value `v` of channel `c`.
    #[inline(always)]
    pub fn apply(&self, c: usize, v: f32) -> f32 {
        normalize(v, self.mean[c], self.std[c], self.gamma[c], self.beta[c])
    }

    /// [`EvalNorm::apply`] in place to a row holding one value per channel.
    pub fn apply_to_row(&self, row: &mut [f32]) {
        for (c, v) in row.iter_mut().enumerate().take(self.channels()) {
            *v = self.apply(c, *v);
        }
    }

    /// Whether value `v` of channel `c` binarizes to `+1` after the batch norm.
    #[inline(always)]
    fn binarizes_positive(&self, c: usize, v: f32) -> bool {
        binarizes_positive(self.apply(c, v))
    }

    /// The values of channel `c` that binarize to `+1` after the batch norm, NaN aside (which
    /// does), as one range `[lo, hi]` of floats (`lo = +∞, hi = −∞` where there are none):
    /// the batch norm and sign folded into a comparison. `None` where the channel's parameters
    /// do not make the norm monotone in `v` (`γ = 0`, `std` not positive, a parameter not
    /// finite), whose values must go through [`EvalNorm::apply`].
    ///
    /// With finite parameters, `std > 0` and `γ ≠ 0`, each f32 step of the norm is monotone in
    /// `v` over all non-NaN values, infinities included, and none makes a NaN, so the
    /// positive values are one range, which bisection over the floats' order finds exactly.
    pub fn sign_range(&self, c: usize) -> Option<(f32, f32)> {
        let (mean, std, gamma, beta) = (self.mean[c], self.std[c], self.gamma[c], self.beta[c]);
        let finite = mean.is_finite() && std.is_finite() && gamma.is_finite() && beta.is_finite();
        if !finite || std <= 0.0 || gamma == 0.0 {
            return None;
        }
        let holds = |key: i64| self.binarizes_positive(c, float_of_key(key));
        let range = monotone_range(
            key_of_float(f32::NEG_INFINITY),
            key_of_float(f32::INFINITY),
            holds,
        );
        Some(
            range.map_or((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi)| {
                (float_of_key(lo), float_of_key(hi))
            }),
        )
    }

    /// Writes `sign(norm(x))` (`±1.0`) for `x` of `shape`, images in parallel.
    ///
    /// # Panics
    /// If `x` or `out` does not hold `shape.len()` values, or `shape.channels` is not
    /// [`EvalNorm::channels`].
    pub fn signs(&self, x: &[f32], shape: NormShape, out: &mut [f32]) {
        // SAFETY: `signs_into` writes only initialized values.
        self.signs_into(x, shape, unsafe { as_slots(out) });
    }

    /// [`EvalNorm::signs`] into slots it writes every one of (so `out` need not be
    /// initialized).
    pub(crate) fn signs_into(&self, x: &[f32], shape: NormShape, out: &mut [MaybeUninit<f32>]) {
        assert!(
            x.len() == shape.len() && out.len() == shape.len(),
            "batch norm: input and output should hold {} values ({shape:?}), got {} and {}",
            shape.len(),
            x.len(),
            out.len()
        );
        assert_eq!(
            shape.channels,
            self.channels(),
            "batch norm: the input has {} channels, the norm {}",
            shape.channels,
            self.channels()
        );
        let image = shape.channels * shape.spatial;
        if image == 0 {
            return;
        }
        let run = shape.spatial.max(1);
        // Folding costs a bisection a channel: worth it where a channel has many values.
        let ranges: Vec<Option<(f32, f32)>> = if shape.batch * run >= FOLD_MIN_VALUES {
            (0..self.channels()).map(|c| self.sign_range(c)).collect()
        } else {
            vec![None; self.channels()]
        };
        for_each_image_slice(shape, out, |n, out| {
            let x = &x[n * image..][..image];
            for (c, (x, out)) in x.chunks(run).zip(out.chunks_mut(run)).enumerate() {
                if let Some((lo, hi)) = ranges[c] {
                    for (o, &v) in out.iter_mut().zip(x) {
                        // NaN fails both comparisons, so it binarizes to +1 as the norm's NaN.
                        let positive = !(v < lo || v > hi);
                        o.write(if positive { 1.0 } else { -1.0 });
                    }
                } else {
                    for (o, &v) in out.iter_mut().zip(x) {
                        o.write(if self.binarizes_positive(c, v) {
                            1.0
                        } else {
                            -1.0
                        });
                    }
                }
            }
        });
    }
}

/// Values per channel from which [`EvalNorm::signs`] folds each channel into a range first.
const FOLD_MIN_VALUES: usize = 256;

/// Where `holds` is true among the integers `lo ..= hi`, for a `holds` monotone on them
/// (rising or falling): one range `[first, last]`, or `None`. Found by bisection, so `holds`
/// runs about `log2(hi − lo)` times.
pub(crate) fn monotone_range(lo: i64, hi: i64, holds: impl Fn(i64) -> bool) -> Option<(i64, i64)> {
    match (holds(lo), holds(hi)) {
        (true, true) => Some((lo, hi)),
        (false, false) => None,
        // Rising: from the first that holds.
        (false, true) => Some((first_where(lo, hi, &holds), hi)),
        // Falling: up to the last that holds.
        (true, false) => Some((lo, first_where(lo, hi, |y| !holds(y)) - 1)),
    }
}

/// The first `y` in `lo ..= hi` where `p` holds, for `p` false at `lo`, true at `hi` and
/// monotone between.
fn first_where(mut lo: i64, mut hi: i64, p: impl Fn(i64) -> bool) -> i64 {
    // Invariant: `p(lo)` is false, `p(hi)` true.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if p(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// An integer key in the order of the floats (non-NaN; `−0` and `+0` share key 0).
fn key_of_float(v: f32) -> i64 {
    let magnitude = i64::from(v.to_bits() & 0x7fff_ffff);
    if v.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    }
}

/// The float of a key of [`key_of_float`] (`+0` for 0).
fn float_of_key(key: i64) -> f32 {
    let magnitude = f32::from_bits(key.unsigned_abs() as u32);
    if key < 0 { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signs equal, value by value, the sign of the definition computed without the
    /// per-channel `std` (`((v − mean)/sqrt(var + ε))·γ + β`), for all kinds of values: exact
    /// zeros of the norm, NaN, −0, infinities, γ of both signs and 0.
    #[test]
    fn signs_are_the_sign_of_the_definition() {
        let shape = NormShape {
            batch: 3,
            channels: 4,
            spatial: 5,
        };
        let mean = vec![0.5, -1.0, 2.0, 0.0];
        let var = [4.0, 0.25, 1e-9, 0.0];
        let gamma = vec![1.5, -2.0, 0.0, 1.0];
        let beta = vec![0.0, 0.25, -0.0, -1.0];
        let epsilon = 1e-5;
        let specials = [0.5, -1.0, 2.0, 1.0, f32::NAN, -0.0, f32::INFINITY];
        let x: Vec<f32> = (0..shape.len())
            .map(|i| {
                if i % 3 == 0 {
                    specials[i % specials.len()]
                } else {
                    (i as f32 * 0.37).sin() * 3.0
                }
            })
            .collect();
        let norm = EvalNorm::new(mean.clone(), &var, gamma.clone(), beta.clone(), epsilon);
        let mut out = vec![0.0; shape.len()];
        norm.signs(&x, shape, &mut out);
        for (i, (&v, &s)) in x.iter().zip(&out).enumerate() {
            let c = (i / shape.spatial) % shape.channels;
            let y = (v - mean[c]) / (var[c] + epsilon as f32).sqrt() * gamma[c] + beta[c];
            let expected = if y >= 0.0 || y.is_nan() { 1.0 } else { -1.0 };
            assert_eq!(s, expected, "value {i} ({v}) of channel {c}: norm {y}");
        }
        // Both signs occur, so the check above compared something.
        assert!(out.contains(&1.0) && out.contains(&-1.0));
    }

    /// With many values a channel (the folded comparison), the signs still equal the
    /// definition's, value by value: random values, values at and next to each channel's
    /// switching point, infinities, NaN, ±0 and huge values whose norm overflows; γ of both
    /// signs, tiny and huge `std`, and channels that cannot fold (γ = 0, `std` = 0, NaN mean).
    #[test]
    fn folded_signs_are_the_sign_of_the_definition() {
        use rand::{Rng, SeedableRng, rngs::StdRng};

        let mean = vec![0.3, -2.0, 1e30, 0.0, 0.5, 0.0, f32::NAN, 7.0];
        let var = [1.0, 1e-12, 1e30, 4.0, 0.0, 1.0, 1.0, 2.5];
        let gamma = vec![1.7, -0.3, 2.0, -1e-20, 1.0, 0.0, 1.0, 3e38];
        let beta = vec![0.1, -0.7, 0.0, 1e-3, 0.0, -1.0, 0.0, -3e38];
        let epsilon = 0.0;
        let norm = EvalNorm::new(mean.clone(), &var, gamma.clone(), beta.clone(), epsilon);
        let foldable: Vec<bool> = (0..8).map(|c| norm.sign_range(c).is_some()).collect();
        assert_eq!(
            foldable,
            [true, true, true, true, false, false, false, true]
        );

        let shape = NormShape {
            batch: 2,
            channels: 8,
            spatial: 400,
        };
        let mut rng = StdRng::seed_from_u64(3);
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
        ];
        let mut x = vec![0.0; shape.len()];
        for (i, v) in x.iter_mut().enumerate() {
            let c = (i / shape.spatial) % shape.channels;
            *v = match i % 4 {
                0 => specials[(i / 4) % specials.len()],
                // At and next to the switching point (the range's ends).
                1 | 2 => match norm.sign_range(c) {
                    Some((lo, hi)) => {
                        let end = if lo.is_finite() { lo } else { hi };
                        let step = rng.random_range(-3i32..=3);
                        f32::from_bits((end.to_bits() as i32 + step) as u32)
                    }
                    None => rng.random_range(-5.0..5.0),
                },
                _ => rng.random_range(-1e3..1e3) * 10f32.powi(rng.random_range(-6..6)),
            };
        }
        let mut out = vec![0.0; shape.len()];
        norm.signs(&x, shape, &mut out);
        let mut both = [false; 2];
        for (i, (&v, &s)) in x.iter().zip(&out).enumerate() {
            let c = (i / shape.spatial) % shape.channels;
            let y = (v - mean[c]) / (var[c] + epsilon as f32).sqrt() * gamma[c] + beta[c];
            let expected = if y >= 0.0 || y.is_nan() { 1.0 } else { -1.0 };
            assert_eq!(s, expected, "value {i} ({v:e}) of channel {c}: norm {y}");
            both[usize::from(s > 0.0)] = true;
        }
        assert_eq!(both, [true, true]);
    }

    #[test]
    fn monotone_range_finds_both_directions() {
        assert_eq!(monotone_range(-5, 5, |y| y >= 2), Some((2, 5)));
        assert_eq!(monotone_range(-5, 5, |y| y <= -3), Some((-5, -3)));
        assert_eq!(monotone_range(-5, 5, |_| true), Some((-5, 5)));
        assert_eq!(monotone_range(-5, 5, |_| false), None);
        for v in [
            0.0,
            -0.0,
            1.5,
            -1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ] {
            assert_eq!(
                float_of_key(key_of_float(v)),
                v.abs().copysign(if v == 0.0 { 1.0 } else { v })
            );
        }
        assert!(key_of_float(-1.0) < key_of_float(-0.5) && key_of_float(0.5) < key_of_float(1.0));
    }

    #[test]
    #[should_panic(expected = "the input has 3 channels, the norm 2")]
    fn channel_mismatch_panics() {
        let norm = EvalNorm::new(vec![0.0; 2], &[1.0; 2], vec![1.0; 2], vec![0.0; 2], 0.0);
        let shape = NormShape {
            batch: 1,
            channels: 3,
            spatial: 1,
        };
        norm.signs(&[0.0; 3], shape, &mut [0.0; 3]);
    }
}
