//! Folding batch norm and sign into per-channel integer thresholds.

use crate::kernels::{
    conv::SignThresholds,
    eval_norm::{EvalNorm, binarizes_positive, monotone_range},
    words_per_row,
};

/// The integers `y ∈ [−k, k]` where `positive(y)` holds, for a `positive` that is monotone in
/// `y` (rising or falling), as a range `[lo, hi]`: ends are ±∞ where the range reaches `±k`, and
/// `lo = +∞`, `hi = −∞` where it is empty.
///
/// A float function built from monotone steps (adds, multiplies and divides by constants,
/// rounding to f32, then `≥ 0`) is monotone, so its positive set is one half-line: this finds
/// where it switches by bisection.
pub(crate) fn positive_range(k: i64, positive: impl Fn(i64) -> bool) -> (f32, f32) {
    match monotone_range(-k, k, positive) {
        None => (f32::INFINITY, f32::NEG_INFINITY),
        Some((lo, hi)) => (
            if lo == -k {
                f32::NEG_INFINITY
            } else {
                lo as f32
            },
            if hi == k { f32::INFINITY } else { hi as f32 },
        ),
    }
}

/// For each channel, the range `[lo, hi]` of integer products `y ∈ [−k, k]` (plus the
/// channel's bias, as the layer adds it in f32) whose batch norm output binarizes to `+1`
/// (`≥ 0`, or NaN), as [`positive_range`] gives it.
pub(crate) fn fold(norm: &EvalNorm, bias: Option<&[f32]>, k: usize) -> (Vec<f32>, Vec<f32>) {
    fold_with(norm, k, |c, y| y + bias.map_or(0.0, |b| b[c]))
}

/// [`fold`] of a layer whose output of channel `c` is `output(c, y)` for the integer product
/// `y` (as f32): the ranges of `y` where `norm(output(c, y))` binarizes to `+1`. `output` must
/// be monotone in `y`, as scaling by a factor `≥ 0` and adding a bias are.
pub(crate) fn fold_with(
    norm: &EvalNorm,
    k: usize,
    output: impl Fn(usize, f32) -> f32,
) -> (Vec<f32>, Vec<f32>) {
    (0..norm.channels())
        .map(|c| {
            positive_range(k as i64, |y| {
                binarizes_positive(norm.apply(c, output(c, y as f32)))
            })
        })
        .unzip()
}

/// The convolution kernel's sign thresholds for per-channel ranges `[lo, hi]` of [`fold`], if
/// each is a half-line (or empty, or all), as the ranges of a monotone function are.
pub(crate) fn sign_thresholds(lo: &[f32], hi: &[f32]) -> Option<SignThresholds> {
    let (threshold, negate) = lo
        .iter()
        .zip(hi)
        .map(|(&lo, &hi)| match (lo, hi) {
            // Empty: `dot ≥ +∞` never holds.
            (f32::INFINITY, f32::NEG_INFINITY) => Some((f32::INFINITY, false)),
            (lo, f32::INFINITY) => Some((lo, false)),
            (f32::NEG_INFINITY, hi) => Some((hi, true)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .unzip();
    Some(SignThresholds { threshold, negate })
}

/// One bit per channel whose sign falls as the product rises, the mask that
/// [`PackedActivations::sign_of_max_pool2x2`](crate::kernels::conv::PackedActivations::sign_of_max_pool2x2)
/// takes to pool after the sign.
pub(crate) fn falling_mask(thresholds: &SignThresholds) -> Vec<u64> {
    let mut mask = vec![0u64; words_per_row(thresholds.negate.len())];
    for (c, _) in thresholds.negate.iter().enumerate().filter(|(_, n)| **n) {
        mask[c / 64] |= 1 << (c % 64);
    }
    mask
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// Burn's `BatchNorm` in evaluation mode on one value, op for op in f32:
    /// `((v − mean)/sqrt(var + ε))·γ + β`.
    fn batch_norm(v: f32, mean: f32, var: f32, gamma: f32, beta: f32, epsilon: f64) -> f32 {
        (v - mean) / (var + epsilon as f32).sqrt() * gamma + beta
    }

    /// The range by testing every integer, checking that the positive set is one range.
    fn scanned(k: i64, positive: impl Fn(i64) -> bool) -> (f32, f32) {
        let ones: Vec<i64> = (-k..=k).filter(|&y| positive(y)).collect();
        match (ones.first(), ones.last()) {
            (Some(&first), Some(&last)) => {
                assert_eq!(ones.len() as i64, last - first + 1, "not one range");
                let lo = if first == -k {
                    f32::NEG_INFINITY
                } else {
                    first as f32
                };
                let hi = if last == k {
                    f32::INFINITY
                } else {
                    last as f32
                };
                (lo, hi)
            }
            _ => (f32::INFINITY, f32::NEG_INFINITY),
        }
    }

    /// Bisection finds the range that scanning every integer finds, for batch norms of every
    /// kind: either sign of γ, γ = 0, zero and huge variances, NaN parameters, switch points
    /// inside, at and past the ends.
    #[test]
    fn bisection_equals_a_scan_of_every_integer() {
        let mut rng = StdRng::seed_from_u64(5);
        let pick = |rng: &mut StdRng, special: [f32; 4], lo: f32, hi: f32| {
            if rng.random_bool(0.2) {
                special[rng.random_range(0..4)]
            } else {
                rng.random_range(lo..hi)
            }
        };
        for _ in 0..400 {
            let k: i64 = rng.random_range(1..300);
            let kf = k as f32;
            let mean = pick(&mut rng, [0.0, kf, -kf, f32::NAN], -1.5 * kf, 1.5 * kf);
            let var = pick(&mut rng, [0.0, 1e30, f32::INFINITY, f32::NAN], 0.0, 50.0);
            let gamma = pick(&mut rng, [0.0, -0.0, 1e-30, f32::NAN], -2.0, 2.0);
            let beta = pick(&mut rng, [0.0, -0.0, 5.0, f32::NAN], -2.0, 2.0);
            let bias = pick(&mut rng, [0.0, 0.5, -0.5, 1e9], -3.0, 3.0);
            let epsilon = if rng.random_bool(0.2) { 0.0 } else { 1e-4 };
            let positive = |y: i64| {
                binarizes_positive(batch_norm(y as f32 + bias, mean, var, gamma, beta, epsilon))
            };
            assert_eq!(
                positive_range(k, positive),
                scanned(k, positive),
                "k {k}, mean {mean}, var {var}, γ {gamma}, β {beta}, bias {bias}, ε {epsilon}"
            );
        }
    }
}
