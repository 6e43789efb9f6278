//! Folding batch norm and sign into per-channel integer thresholds.

/// Burn's `BatchNorm` in evaluation mode on one value, op for op in f32:
/// `((v − mean)/sqrt(var + ε))·γ + β`.
fn batch_norm(v: f32, mean: f32, var: f32, gamma: f32, beta: f32, epsilon: f64) -> f32 {
    let std = (var + epsilon as f32).sqrt();
    (v - mean) / std * gamma + beta
}

/// For each channel, the range `[lo, hi]` of integer products `y ∈ [−k, k]` (plus the
/// channel's bias, as the layer adds it in f32) whose batch norm output binarizes to `+1`
/// (`≥ 0`, or NaN). The output is monotone in `y`, so the set is one range; ends are ±∞ where
/// the range reaches past `±k`, and `lo = +∞`, `hi = −∞` where it is empty.
pub(super) fn fold(
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    bias: Option<&[f32]>,
    k: usize,
) -> (Vec<f32>, Vec<f32>) {
    let k = k as i64;
    (0..mean.len())
        .map(|c| {
            let positive = |y: i64| {
                let v = y as f32 + bias.map_or(0.0, |b| b[c]);
                let out = batch_norm(v, mean[c], var[c], gamma[c], beta[c], epsilon);
                out >= 0.0 || out.is_nan()
            };
            let ones: Vec<i64> = (-k..=k).filter(|&y| positive(y)).collect();
            match (ones.first(), ones.last()) {
                (Some(&first), Some(&last)) => {
                    debug_assert_eq!(ones.len() as i64, last - first + 1, "monotone");
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
        })
        .unzip()
}
