//! Batch normalization in training mode, forward and backward, over `[N, C, S]` data (`S` the
//! product of the spatial dimensions, 1 for a fully connected layer), each in two passes.
//!
//! - forward: `μ_c = mean(x)`, `σ²_c = mean((x − μ_c)²)` (biased, as Burn's `BatchNorm`),
//!   `y = γ_c·(x − μ_c)/sqrt(σ²_c + ε) + β_c`; the statistics are summed in f64.
//! - backward, with `x̂ = (x − μ)·r`, `r = 1/sqrt(σ² + ε)` and `M = N·S`: `∂β_c = Σ dy`,
//!   `∂γ_c = Σ dy·x̂`, `∂x = γ_c·r_c·(dy − ∂β_c/M − x̂·∂γ_c/M)`.
//!
//! Both run image by image, images in parallel, as the layers around them do (so that each
//! thread reads mostly what it wrote): per-image partial sums, added up per channel in image
//! order (the same result on any number of threads), then the element-wise pass. The f64
//! reductions run on AVX-512 where the CPU has it, lane for lane as the portable code (the same
//! bits).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{
    CheckedIsa,
    isa::{Isa, active_isa},
    uninit::as_slots,
};

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

    /// Channel `c`'s run in image `n`.
    fn run<'a>(&self, data: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &data[(n * self.channels + c) * self.spatial..][..self.spatial]
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
    let isa = CheckedIsa::new(active_isa());
    // One pass: the sums of `d = x − K` and `d²` for a `K` from the channel (its first
    // value), so that the difference below does not cancel digits of a large mean.
    let shift: Vec<f64> = (0..shape.channels)
        .map(|c| shape.run(x, 0, c).first().map_or(0.0, |&v| v as f64))
        .collect();
    let sums = if shape.spatial == 1 {
        row_sums(shape, |n, c| {
            tail_moments(std::slice::from_ref(&x[n * shape.channels + c]), shift[c])
        })
    } else {
        per_channel_sums(shape, |n, c| isa.moments(shape.run(x, n, c), shift[c]))
    };
    let (mean, variance): (Vec<f32>, Vec<f32>) = sums
        .into_iter()
        .zip(&shift)
        .map(|((sum, squares), &shift)| {
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
        let (mean, scale, beta) = (mean[c], scale[c], beta[c]);
        for (o, &v) in out.iter_mut().zip(shape.run(x, n, c)) {
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
    let isa = CheckedIsa::new(active_isa());
    let sums = if shape.spatial == 1 {
        row_sums(shape, |n, c| {
            let at = n * shape.channels + c;
            tail_sum_and_dot(
                std::slice::from_ref(&dy[at]),
                std::slice::from_ref(&x[at]),
                mean[c],
            )
        })
    } else {
        per_channel_sums(shape, |n, c| {
            isa.sum_and_dot(shape.run(dy, n, c), shape.run(x, n, c), mean[c])
        })
    };
    let (d_gamma, d_beta): (Vec<f32>, Vec<f32>) = sums
        .into_iter()
        .zip(inv_std)
        .map(|((sum, dot), &inv_std)| ((dot * inv_std as f64) as f32, sum as f32))
        .unzip();
    let m = shape.per_channel().max(1) as f32;
    // dx = k·dy − k·∂β/M − k·r·(x − μ)·∂γ/M with k = γ·r: the factors once a channel.
    let factors: Vec<[f32; 3]> = (0..shape.channels)
        .map(|c| {
            let k = gamma[c] * inv_std[c];
            [k, k * d_beta[c] / m, k * inv_std[c] * d_gamma[c] / m]
        })
        .collect();
    for_each_image(shape, dx, |n, c, out| {
        let ([k, offset, slope], mean) = (factors[c], mean[c]);
        let values = shape.run(dy, n, c).iter().zip(shape.run(x, n, c));
        for (o, (&g, &v)) in out.iter_mut().zip(values) {
            o.write(k * g - offset - slope * (v - mean));
        }
    });
    (d_gamma, d_beta)
}

/// Partial sums a reduction keeps: independent adds that the compiler can put in vector
/// registers, where one running sum would make each add wait for the last.
const LANES: usize = 8;

/// `(Σ d, Σ d²)` with `d = v − shift`, one running sum each: the values past the last whole
/// lane chunk, or a run of one value.
#[inline(always)]
fn tail_moments(values: &[f32], shift: f64) -> (f64, f64) {
    values.iter().fold((0.0, 0.0), |(s, q), &v| {
        let d = v as f64 - shift;
        (s + d, q + d * d)
    })
}

/// `(Σ g, Σ g·(v − mean))`, one running sum each: the values past the last whole lane chunk,
/// or a run of one value.
#[inline(always)]
fn tail_sum_and_dot(grads: &[f32], values: &[f32], mean: f32) -> (f64, f64) {
    grads
        .iter()
        .zip(values)
        .fold((0.0, 0.0), |(s, d), (&g, &v)| {
            (s + g as f64, d + g as f64 * (v - mean) as f64)
        })
}

/// The lanes' sum, from 0 in lane order (as the vector paths add them).
#[inline(always)]
fn lane_order_sum(lanes: &[f64]) -> f64 {
    lanes.iter().fold(0.0, |total, &lane| total + lane)
}

/// `(Σ d, Σ d²)` with `d = v − shift` over `values`, in f64.
#[inline(always)]
fn lane_moments(values: &[f32], shift: f64) -> (f64, f64) {
    let (mut sums, mut squares) = ([0f64; 4 * LANES], [0f64; 4 * LANES]);
    let chunks = values.chunks_exact(4 * LANES);
    let (sum, square) = tail_moments(chunks.remainder(), shift);
    for chunk in chunks {
        for lane in 0..4 * LANES {
            let d = chunk[lane] as f64 - shift;
            sums[lane] += d;
            squares[lane] += d * d;
        }
    }
    (
        lane_order_sum(&sums) + sum,
        lane_order_sum(&squares) + square,
    )
}

/// `(Σ g, Σ g·(v − mean))` over `grads` and `values` (`v − mean` in f32, the products and sums
/// in f64), in one pass.
#[inline(always)]
fn lane_sum_and_dot(grads: &[f32], values: &[f32], mean: f32) -> (f64, f64) {
    let (mut sums, mut dots) = ([0f64; 2 * LANES], [0f64; 2 * LANES]);
    let (g_chunks, v_chunks) = (
        grads.chunks_exact(2 * LANES),
        values.chunks_exact(2 * LANES),
    );
    let (sum, dot) = tail_sum_and_dot(g_chunks.remainder(), v_chunks.remainder(), mean);
    for (g, v) in g_chunks.zip(v_chunks) {
        for lane in 0..2 * LANES {
            sums[lane] += g[lane] as f64;
        }
        for lane in 0..2 * LANES {
            dots[lane] += g[lane] as f64 * (v[lane] - mean) as f64;
        }
    }
    (lane_order_sum(&sums) + sum, lane_order_sum(&dots) + dot)
}

/// The reductions on this CPU's widest vectors where there is a path for them (the same lanes
/// and order on each, so the same results).
impl CheckedIsa {
    /// [`lane_moments`].
    #[inline]
    fn moments(self, values: &[f32], shift: f64) -> (f64, f64) {
        if values.len() < 4 * LANES {
            // No whole chunk: the tail's sums alone, inline (a fully connected layer's runs
            // are single values, one call per image and channel).
            let (sum, square) = tail_moments(values, shift);
            return (0.0 + sum, 0.0 + square);
        }
        match self.isa() {
            // SAFETY: a checked instruction set runs on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::moments_avx512(values, shift) },
            _ => lane_moments(values, shift),
        }
    }

    /// [`lane_sum_and_dot`].
    #[inline]
    fn sum_and_dot(self, grads: &[f32], values: &[f32], mean: f32) -> (f64, f64) {
        if grads.len() < 2 * LANES {
            // No whole chunk: the tail's sums alone, inline (as in `moments`).
            let (sum, dot) = tail_sum_and_dot(grads, values, mean);
            return (0.0 + sum, 0.0 + dot);
        }
        match self.isa() {
            // SAFETY: a checked instruction set runs on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::sum_and_dot_avx512(grads, values, mean) },
            _ => lane_sum_and_dot(grads, values, mean),
        }
    }
}

/// The reductions on AVX-512: the lanes of [`lane_moments`] and [`lane_sum_and_dot`] in zmm
/// registers (8 f64 each), the same operations in the same order, so the same results.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LANES, tail_moments, tail_sum_and_dot};

    /// `Σ` of the lanes in lane order, as the portable reductions add them.
    #[target_feature(enable = "avx512f")]
    fn lane_order_sum<const N: usize>(registers: [__m512d; N]) -> f64 {
        let mut total = 0.0;
        for register in registers {
            let mut lanes = [0f64; 8];
            // SAFETY: `lanes` holds 8 f64.
            unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), register) };
            for lane in lanes {
                total += lane;
            }
        }
        total
    }

    /// [`super::lane_moments`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn moments_avx512(values: &[f32], shift: f64) -> (f64, f64) {
        let chunks = values.chunks_exact(4 * LANES);
        let (sum, square) = tail_moments(chunks.remainder(), shift);
        let k = _mm512_set1_pd(shift);
        let (mut sums, mut squares) = ([_mm512_setzero_pd(); 4], [_mm512_setzero_pd(); 4]);
        for chunk in chunks {
            for r in 0..4 {
                // SAFETY: the chunk holds 32 values; `r·8 + 8 ≤ 32`.
                let v = unsafe { _mm256_loadu_ps(chunk.as_ptr().add(8 * r)) };
                let d = _mm512_sub_pd(_mm512_cvtps_pd(v), k);
                sums[r] = _mm512_add_pd(sums[r], d);
                squares[r] = _mm512_add_pd(squares[r], _mm512_mul_pd(d, d));
            }
        }
        (lane_order_sum(sums) + sum, lane_order_sum(squares) + square)
    }

    /// [`super::lane_sum_and_dot`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_and_dot_avx512(
        grads: &[f32],
        values: &[f32],
        mean: f32,
    ) -> (f64, f64) {
        let (g_chunks, v_chunks) = (
            grads.chunks_exact(2 * LANES),
            values.chunks_exact(2 * LANES),
        );
        let (sum, dot) = tail_sum_and_dot(g_chunks.remainder(), v_chunks.remainder(), mean);
        let m = _mm256_set1_ps(mean);
        let (mut sums, mut dots) = ([_mm512_setzero_pd(); 2], [_mm512_setzero_pd(); 2]);
        for (g, v) in g_chunks.zip(v_chunks) {
            for r in 0..2 {
                // SAFETY: both chunks hold 16 values; `r·8 + 8 ≤ 16`.
                let (g, v) = unsafe {
                    (
                        _mm256_loadu_ps(g.as_ptr().add(8 * r)),
                        _mm256_loadu_ps(v.as_ptr().add(8 * r)),
                    )
                };
                let g = _mm512_cvtps_pd(g);
                sums[r] = _mm512_add_pd(sums[r], g);
                let centered = _mm512_cvtps_pd(_mm256_sub_ps(v, m));
                dots[r] = _mm512_add_pd(dots[r], _mm512_mul_pd(g, centered));
            }
        }
        (lane_order_sum(sums) + sum, lane_order_sum(dots) + dot)
    }
}

/// Per channel, the sums over images of the pairs `f(n, c)`: each image's pairs in parallel,
/// then each channel's added in image order, so the result does not depend on the threads.
fn per_channel_sums(
    shape: NormShape,
    f: impl Fn(usize, usize) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    let mut partial = vec![(0.0, 0.0); shape.batch * shape.channels];
    if !partial.is_empty() {
        let per_image = |(n, sums): (usize, &mut [(f64, f64)])| {
            for (c, sum) in sums.iter_mut().enumerate() {
                *sum = f(n, c);
            }
        };
        if shape.len() >= PARALLEL_MIN {
            partial
                .par_chunks_mut(shape.channels)
                .enumerate()
                .for_each(per_image);
        } else {
            partial
                .chunks_mut(shape.channels)
                .enumerate()
                .for_each(per_image);
        }
    }
    (0..shape.channels)
        .map(|c| {
            (0..shape.batch)
                .map(|n| partial[n * shape.channels + c])
                .fold((0.0, 0.0), |(s, q), (a, b)| (s + a, q + b))
        })
        .collect()
}

/// [`per_channel_sums`] where each run is one value (`S = 1`, a fully connected layer's
/// `[N, C]`): the same sums in the same order (each image's pair added to the channel's total),
/// image by image on this thread, with no partial sums kept.
fn row_sums(shape: NormShape, f: impl Fn(usize, usize) -> (f64, f64)) -> Vec<(f64, f64)> {
    let mut totals = vec![(0.0, 0.0); shape.channels];
    for n in 0..shape.batch {
        for (c, (sum, second)) in totals.iter_mut().enumerate() {
            let (a, b) = f(n, c);
            (*sum, *second) = (*sum + a, *second + b);
        }
    }
    totals
}

/// Values from which the passes over `[N, C, S]` values run in parallel.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// Calls `f(n, c, run)` on every image `n` and channel `c`'s run of `out`, images in parallel.
fn for_each_image(
    shape: NormShape,
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync,
) {
    for_each_image_slice(shape, out, |n, out| {
        for (c, run) in out.chunks_mut(shape.spatial.max(1)).enumerate() {
            f(n, c, run)
        }
    });
}

/// Calls `f(n, image)` on the values of every image `n` of `out` (`[N, C, S]` in `shape`'s
/// layout, `C·S` values an image), images in parallel where there are enough values for
/// threads to pay.
pub(crate) fn for_each_image_slice<T: Send>(
    shape: NormShape,
    out: &mut [T],
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let image = shape.channels * shape.spatial;
    if image == 0 {
        return;
    }
    let per_image = |(n, out): (usize, &mut [T])| f(n, out);
    if shape.len() >= PARALLEL_MIN {
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

    /// Every instruction set's reductions give the portable ones' bits, on lengths around the
    /// lane chunks.
    #[test]
    fn reductions_are_the_same_on_every_isa() {
        let portable = CheckedIsa::new(Isa::Portable);
        for isa in Isa::available() {
            let isa = CheckedIsa::new(isa);
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 47, 100, 1031] {
                let (g, v) = (values(len, 7), values(len, 8));
                let shifted: Vec<f32> = v.iter().map(|v| v * 1e3 + 1e4).collect();
                assert_eq!(
                    isa.moments(&shifted, 1e4),
                    portable.moments(&shifted, 1e4),
                    "{isa:?} moments, {len} values"
                );
                assert_eq!(
                    isa.sum_and_dot(&g, &v, 0.25),
                    portable.sum_and_dot(&g, &v, 0.25),
                    "{isa:?} sum and dot, {len} values"
                );
            }
        }
    }

    /// The sums of runs of one value are those of the general path, bit for bit (the same
    /// additions in the same order), on sums that rounding makes depend on their order.
    #[test]
    fn single_value_runs_sum_as_the_general_path() {
        for (batch, channels) in [(1, 1), (5, 7), (50, 256), (300, 130)] {
            let shape = NormShape {
                batch,
                channels,
                spatial: 1,
            };
            let v = values(shape.len() * 2, 9);
            let pair = |n: usize, c: usize| {
                let i = 2 * (n * channels + c);
                ((v[i] as f64) * 1e8 + 0.1, (v[i + 1] as f64).powi(3) / 3.0)
            };
            assert_eq!(
                row_sums(shape, pair),
                per_channel_sums(shape, pair),
                "{shape:?}"
            );
        }
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
