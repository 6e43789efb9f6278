//! Batch normalization in training mode, forward and backward, over `[N, C, S]` data (`S` the
//! product of the spatial dimensions, 1 for a fully connected layer), each in two passes.
//!
//! - forward: `μ_c = mean(x)`, `σ²_c = mean((x − μ_c)²)` (biased, as Burn's `BatchNorm`),
//!   `y = γ_c·(x − μ_c)/sqrt(σ²_c + ε) + β_c`; the statistics are summed in f64.
//! - backward, with `x̂ = (x − μ)·r`, `r = 1/sqrt(σ² + ε)` and `M = N·S`: `∂β_c = Σ dy`,
//!   `∂γ_c = Σ dy·x̂`, `∂x = γ_c·r_c·(dy − ∂β_c/M − x̂·∂γ_c/M)`.
//!
//! Statistics run in parallel over channels, the element-wise passes over images.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::uninit::as_slots;

/// The shape `[N, C, S]` of batch-normalized data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormShape {
    /// Images `N`.
    pub batch: usize,
    /// Channels `C`.
    pub channels: usize,
    /// Values per channel and image `S`.
    pub spatial: usize,
}

impl NormShape {
    /// Values in all.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per channel, `N·S`.
    fn per_channel(&self) -> usize {
        self.batch * self.spatial
    }

    /// The runs of channel `c`: `S` values in each image.
    fn runs<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (image, s) = (self.channels * self.spatial, self.spatial);
        (0..self.batch).map(move |n| &data[n * image + c * s..n * image + (c + 1) * s])
    }

    fn check(&self, what: &str, len: usize) {
        assert_eq!(
            len,
            self.len(),
            "batch norm: {what} should hold {} values ({self:?})",
            self.len()
        );
    }
}

/// Per-channel statistics of a forward pass: the mean and the inverse standard deviation
/// `1/sqrt(σ² + ε)`, with the biased variance `σ²` itself for the running statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct NormStats {
    /// `μ_c`.
    pub mean: Vec<f32>,
    /// `σ²_c`, biased.
    pub variance: Vec<f32>,
    /// `1/sqrt(σ²_c + ε)`.
    pub inv_std: Vec<f32>,
}

/// Writes `y = γ·(x − μ)/sqrt(σ² + ε) + β` for the batch statistics of `x`, and returns them.
///
/// # Panics
/// If a length does not match `shape`.
pub fn batch_norm_forward(
    x: &[f32],
    shape: NormShape,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    y: &mut [f32],
) -> NormStats {
    // SAFETY: `batch_norm_forward_into` writes only initialized values.
    batch_norm_forward_into(x, shape, gamma, beta, epsilon, unsafe { as_slots(y) })
}

/// [`batch_norm_forward`] into slots it writes every one of (so `y` need not be initialized).
pub(crate) fn batch_norm_forward_into(
    x: &[f32],
    shape: NormShape,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    y: &mut [MaybeUninit<f32>],
) -> NormStats {
    shape.check("the input", x.len());
    shape.check("the output", y.len());
    assert!(
        gamma.len() == shape.channels && beta.len() == shape.channels,
        "batch norm: γ and β need {} values, got {} and {}",
        shape.channels,
        gamma.len(),
        beta.len()
    );
    let m = shape.per_channel().max(1) as f64;
    let (mean, variance): (Vec<f32>, Vec<f32>) = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            // One pass: the sums of `d = x − K` and `d²` for a `K` from the channel (its first
            // value), so that the difference below does not cancel digits of a large mean.
            let shift = shape.runs(x, c).next().map_or(0.0, |run| run[0] as f64);
            let (sum, squares) = shape
                .runs(x, c)
                .map(|run| lane_moments(run, shift))
                .fold((0.0, 0.0), |(s, q), (rs, rq)| (s + rs, q + rq));
            let mean_shifted = sum / m;
            let variance = (squares / m - mean_shifted * mean_shifted).max(0.0);
            ((shift + mean_shifted) as f32, variance as f32)
        })
        .unzip();
    let inv_std: Vec<f32> = variance
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    // y = (x − μ)·a + β with a = γ·r: `x − μ` first, so that a mean far from 0 costs no
    // digits.
    let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, r)| g * r).collect();
    for_each_image(shape, y, |n, c, out| {
        let src = &x[(n * shape.channels + c) * shape.spatial..][..shape.spatial];
        let (mean, scale, beta) = (mean[c], scale[c], beta[c]);
        for (o, &v) in out.iter_mut().zip(src) {
            o.write((v - mean) * scale + beta);
        }
    });
    NormStats {
        mean,
        variance,
        inv_std,
    }
}

/// The gradients `(∂x, ∂γ, ∂β)` of a training-mode batch norm from its output gradient `dy`,
/// its input `x` and the statistics its forward used; `∂x` is written to `dx`.
///
/// # Panics
/// If a length does not match `shape`.
pub fn batch_norm_backward(
    dy: &[f32],
    x: &[f32],
    shape: NormShape,
    stats: (&[f32], &[f32]),
    gamma: &[f32],
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    // SAFETY: `batch_norm_backward_into` writes only initialized values.
    batch_norm_backward_into(dy, x, shape, stats, gamma, unsafe { as_slots(dx) })
}

/// [`batch_norm_backward`] into slots it writes every one of (so `dx` need not be
/// initialized).
pub(crate) fn batch_norm_backward_into(
    dy: &[f32],
    x: &[f32],
    shape: NormShape,
    stats: (&[f32], &[f32]),
    gamma: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> (Vec<f32>, Vec<f32>) {
    let (mean, inv_std) = stats;
    shape.check("the output gradient", dy.len());
    shape.check("the input", x.len());
    shape.check("the input gradient", dx.len());
    assert!(
        [mean.len(), inv_std.len(), gamma.len()] == [shape.channels; 3],
        "batch norm backward: μ, 1/σ and γ need {} values each",
        shape.channels
    );
    let (d_gamma, d_beta): (Vec<f32>, Vec<f32>) = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let (mut dot, mut sum) = (0f64, 0f64);
            for (g, v) in shape.runs(dy, c).zip(shape.runs(x, c)) {
                sum += lane_sum(g, |g| g);
                dot += lane_dot(g, v, mean[c]);
            }
            ((dot * inv_std[c] as f64) as f32, sum as f32)
        })
        .unzip();
    let m = shape.per_channel().max(1) as f32;
    // dx = k·dy − k·∂β/M − k·r·(x − μ)·∂γ/M with k = γ·r.
    for_each_image(shape, dx, |n, c, out| {
        let at = (n * shape.channels + c) * shape.spatial;
        let (g, v) = (&dy[at..][..shape.spatial], &x[at..][..shape.spatial]);
        let k = gamma[c] * inv_std[c];
        let offset = k * d_beta[c] / m;
        let slope = k * inv_std[c] * d_gamma[c] / m;
        for ((o, &g), &v) in out.iter_mut().zip(g).zip(v) {
            o.write(k * g - offset - slope * (v - mean[c]));
        }
    });
    (d_gamma, d_beta)
}

/// Partial sums a reduction keeps: independent adds that the compiler can put in vector
/// registers, where one running sum would make each add wait for the last.
const LANES: usize = 8;

/// `Σ term(v)` over `values`, each term and the sums in f64.
#[inline]
fn lane_sum(values: &[f32], term: impl Fn(f64) -> f64) -> f64 {
    lane_sum_pairs(values, values, |v, _| term(v as f64))
}

/// `(Σ d, Σ d²)` with `d = v − shift` over `values`, in f64.
#[inline]
fn lane_moments(values: &[f32], shift: f64) -> (f64, f64) {
    let (mut sums, mut squares) = ([0f64; 4 * LANES], [0f64; 4 * LANES]);
    let chunks = values.chunks_exact(4 * LANES);
    let (mut sum, mut square) = (0.0, 0.0);
    for &v in chunks.remainder() {
        let d = v as f64 - shift;
        (sum, square) = (sum + d, square + d * d);
    }
    for chunk in chunks {
        for lane in 0..4 * LANES {
            let d = chunk[lane] as f64 - shift;
            sums[lane] += d;
            squares[lane] += d * d;
        }
    }
    (
        sums.iter().sum::<f64>() + sum,
        squares.iter().sum::<f64>() + square,
    )
}

/// `Σ g·(v − mean)` over `grads` and `values` (`v − mean` in f32, the product and sums in f64).
#[inline]
fn lane_dot(grads: &[f32], values: &[f32], mean: f32) -> f64 {
    lane_sum_pairs(grads, values, |g, v| g as f64 * (v - mean) as f64)
}

/// `Σ term(a_i, b_i)` over the pairs of `a` and `b`, in [`LANES`] partial sums of f64.
#[inline]
fn lane_sum_pairs(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f64) -> f64 {
    let mut sums = [0f64; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = (a_chunks.remainder().iter())
        .zip(b_chunks.remainder())
        .map(|(&a, &b)| term(a, b))
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((sum, &a), &b) in sums.iter_mut().zip(a).zip(b) {
            *sum += term(a, b);
        }
    }
    sums.iter().sum::<f64>() + tail
}

/// Calls `f(n, c, run)` on every image `n` and channel `c`'s run of `out`, images in parallel.
fn for_each_image(
    shape: NormShape,
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync,
) {
    let image = shape.channels * shape.spatial;
    if image == 0 {
        return;
    }
    let per_image = |(n, out): (usize, &mut [MaybeUninit<f32>])| {
        for (c, run) in out.chunks_mut(shape.spatial.max(1)).enumerate() {
            f(n, c, run)
        }
    };
    if shape.len() >= 1 << 15 {
        out.par_chunks_mut(image).enumerate().for_each(per_image);
    } else {
        out.chunks_mut(image).enumerate().for_each(per_image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 6.0 - 2.0
            })
            .collect()
    }

    /// The loss `Σ r·y` of the forward, in f64 from the definition.
    fn loss(x: &[f64], shape: NormShape, gamma: &[f64], beta: &[f64], eps: f64, r: &[f32]) -> f64 {
        let m = shape.per_channel() as f64;
        let mut total = 0.0;
        for c in 0..shape.channels {
            let idx = |n: usize, s: usize| (n * shape.channels + c) * shape.spatial + s;
            let all =
                || (0..shape.batch).flat_map(move |n| (0..shape.spatial).map(move |s| idx(n, s)));
            let mean = all().map(|i| x[i]).sum::<f64>() / m;
            let var = all().map(|i| (x[i] - mean).powi(2)).sum::<f64>() / m;
            for i in all() {
                total += r[i] as f64 * (gamma[c] * (x[i] - mean) / (var + eps).sqrt() + beta[c]);
            }
        }
        total
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        for shape in [
            NormShape {
                batch: 3,
                channels: 4,
                spatial: 5,
            },
            NormShape {
                batch: 5,
                channels: 7,
                spatial: 1,
            },
            NormShape {
                batch: 1,
                channels: 2,
                spatial: 9,
            },
            // Runs of two whole lane chunks and a tail.
            NormShape {
                batch: 2,
                channels: 3,
                spatial: 19,
            },
        ] {
            let eps = 1e-4;
            // A mean far from 0 next to a small spread (the one-pass statistics must not
            // cancel its digits), in every other shape.
            let offset = if shape.spatial % 2 == 1 { 100.0 } else { 0.0 };
            let x: Vec<f32> = values(shape.len(), 1).iter().map(|v| v + offset).collect();
            let r = values(shape.len(), 2);
            let gamma = values(shape.channels, 3);
            let beta = values(shape.channels, 4);
            let mut y = vec![0.0; shape.len()];
            let stats = batch_norm_forward(&x, shape, &gamma, &beta, eps, &mut y);
            let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
            let (xd, gd, bd) = (f64s(&x), f64s(&gamma), f64s(&beta));
            let expected = loss(&xd, shape, &gd, &bd, eps, &r);
            let got: f64 = y.iter().zip(&r).map(|(&y, &r)| y as f64 * r as f64).sum();
            assert!(
                (got - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                "{shape:?} forward: {got} vs {expected}"
            );

            let mut dx = vec![0.0; shape.len()];
            let (dg, db) = batch_norm_backward(
                &r,
                &x,
                shape,
                (&stats.mean, &stats.inv_std),
                &gamma,
                &mut dx,
            );
            // Central differences of the f64 loss.
            let h = 1e-5;
            let numeric = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
            for i in 0..x.len() {
                let d = numeric(&|e| {
                    let mut xp = xd.clone();
                    xp[i] += e;
                    loss(&xp, shape, &gd, &bd, eps, &r)
                });
                assert!(
                    (dx[i] as f64 - d).abs() < 2e-3 * (1.0 + d.abs()),
                    "{shape:?} dx[{i}]: {} vs {d}",
                    dx[i]
                );
            }
            for c in 0..shape.channels {
                let d = numeric(&|e| {
                    let mut gp = gd.clone();
                    gp[c] += e;
                    loss(&xd, shape, &gp, &bd, eps, &r)
                });
                assert!(
                    (dg[c] as f64 - d).abs() < 1e-3 * (1.0 + d.abs()),
                    "{shape:?} dγ[{c}]"
                );
                let d = numeric(&|e| {
                    let mut bp = bd.clone();
                    bp[c] += e;
                    loss(&xd, shape, &gd, &bp, eps, &r)
                });
                assert!(
                    (db[c] as f64 - d).abs() < 1e-3 * (1.0 + d.abs()),
                    "{shape:?} dβ[{c}]"
                );
            }
        }
    }
}
