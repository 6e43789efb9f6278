//! Batch normalization in evaluation mode, as Burn's `BatchNorm` computes it, and its sign.
//!
//! Burn's `BatchNorm` outside training computes, per channel `c`, op for op in `f32`:
//! `y = ((x − mean_c) / sqrt(var_c + ε))·γ_c + β_c` with the running statistics. [`EvalNorm`]
//! computes the same bits (with `sqrt(var_c + ε)` once per channel, which changes no bit), so
//! that the packed and host paths of the crate give exactly the values of a model's Burn layers.
//! The sign follows the crate's convention ([`crate::quant::sign`]): `+1` for `y ≥ 0` and for
//! NaN, `−1` for `y < 0`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{batch_norm::NormShape, uninit::as_slots};

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
        let per_image = |(x, out): (&[f32], &mut [MaybeUninit<f32>])| {
            for (c, (x, out)) in x.chunks(run).zip(out.chunks_mut(run)).enumerate() {
                let (mean, std, gamma, beta) =
                    (self.mean[c], self.std[c], self.gamma[c], self.beta[c]);
                for (o, &v) in out.iter_mut().zip(x) {
                    let positive = binarizes_positive(normalize(v, mean, std, gamma, beta));
                    o.write(if positive { 1.0 } else { -1.0 });
                }
            }
        };
        if shape.len() >= PARALLEL_MIN {
            x.par_chunks(image)
                .zip(out.par_chunks_mut(image))
                .for_each(per_image);
        } else {
            x.chunks(image)
                .zip(out.chunks_mut(image))
                .for_each(per_image);
        }
    }
}

/// Values from which [`EvalNorm::signs`] runs images in parallel.
const PARALLEL_MIN: usize = 1 << 15;

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
