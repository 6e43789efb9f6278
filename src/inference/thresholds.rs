//! Folding batch norm and sign into per-channel integer thresholds.

use crate::kernels::{
    conv::SignThresholds,
    eval_norm::{EvalNorm, binarizes_positive, monotone_range},
    pack, words_per_row,
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

/// For each channel `c`, the range `[lo, hi]` of integer products `y ∈ [−k, k]` where the
/// batch norm of the layer's output `y·scale[c] + bias[c]` binarizes to `+1` (`≥ 0`, or NaN),
/// as [`positive_range`] gives it. The output is computed in those two f32 operations as the
/// layer's tensor operations round them (a missing `scale` or `bias` skips its step); scaling
/// and adding are monotone in `y`, so each positive set is one range.
pub(crate) fn fold(
    norm: &EvalNorm,
    k: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    (0..norm.channels())
        .map(|c| {
            positive_range(k as i64, |y| {
                let y = y as f32;
                let y = scale.map_or(y, |a| y * a[c]);
                let y = bias.map_or(y, |b| y + b[c]);
                binarizes_positive(norm.apply(c, y))
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

/// The signs of the rows of `values` (row-major, `d` columns) packed `[n, words_per_row(d)]`:
/// `word(chunk, first)` gives the word of up to 64 values of a row from column `first` (bit
/// `j` set where value `j` is −1).
pub(crate) fn sign_rows(values: &[f32], d: usize, word: impl Fn(&[f32], usize) -> u64) -> Vec<u64> {
    let row_words = words_per_row(d);
    let mut bits = vec![0u64; values.len() / d.max(1) * row_words];
    for (row, words) in values
        .chunks_exact(d.max(1))
        .zip(bits.chunks_exact_mut(row_words.max(1)))
    {
        for ((w, chunk), out) in row.chunks(64).enumerate().zip(words) {
            *out = word(chunk, w * 64);
        }
    }
    bits
}

/// Bit `j` set where value `j` lies outside its range `[lo[j], hi[j]]` (or is NaN), for up to
/// 64 values: both comparisons made for every value, without branches, so that the loop over a
/// full word vectorizes.
fn outside_bits(values: &[f32], lo: &[f32], hi: &[f32]) -> u64 {
    let outside = |v: f32, lo: f32, hi: f32| u8::from(!((v >= lo) & (v <= hi)));
    let mut flags = [0u8; 64];
    let mark = |flags: &mut [u8], values: &[f32], lo: &[f32], hi: &[f32]| {
        for (flag, ((&v, &lo), &hi)) in flags.iter_mut().zip(values.iter().zip(lo).zip(hi)) {
            *flag = outside(v, lo, hi);
        }
    };
    match (
        <&[f32; 64]>::try_from(values),
        <&[f32; 64]>::try_from(lo),
        <&[f32; 64]>::try_from(hi),
    ) {
        // Lengths known at compile time: the loop vectorizes.
        (Ok(values), Ok(lo), Ok(hi)) => mark(&mut flags, values, lo, hi),
        _ => mark(&mut flags, values, lo, hi),
    }
    pack::flags_to_bits(&flags)
}

/// The signs of the rows of `values` (row-major, `d` columns) whose column `c` binarizes to
/// `+1` inside `[lo[c], hi[c]]` (the ranges of [`fold`]), packed `[n, words_per_row(d)]`.
pub(crate) fn range_signs(values: &[f32], d: usize, lo: &[f32], hi: &[f32]) -> Vec<u64> {
    sign_rows(values, d, |chunk, first| {
        let columns = first..first + chunk.len();
        outside_bits(chunk, &lo[columns.clone()], &hi[columns])
    })
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
