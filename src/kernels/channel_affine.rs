//! A per-channel scale and bias over `[N, C, S]` values in one pass: what a layer does after its
//! product (`y·α + b`, per output channel), which Burn's broadcasting tensor ops take several
//! slow passes for on burn-ndarray.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::batch_norm::{NormShape, PARALLEL_MIN, for_each_image_slice};

/// `out = x·scale[c] + bias[c]` for each value of channel `c` of `x` `[N, C, S]`, rounding to
/// f32 after the product and after the sum as the two tensor operations `x * scale` then
/// `+ bias` do (no fused multiply-add); a missing `scale` or `bias` skips its step. Writes every
/// slot of `out`.
///
/// # Panics
/// If `x` or `out` does not hold `shape.len()` values, or `scale` or `bias` not
/// `shape.channels`.
pub fn scale_and_shift_into(
    x: &[f32],
    shape: NormShape,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(
        x.len() == shape.len() && out.len() == shape.len(),
        "channel scale and bias: input and output should hold {} values ({shape:?}), got {} and {}",
        shape.len(),
        x.len(),
        out.len()
    );
    for (what, v) in [("scale", scale), ("bias", bias)] {
        if let Some(v) = v {
            assert_eq!(
                v.len(),
                shape.channels,
                "channel scale and bias: the {what} has {} values for {} channels",
                v.len(),
                shape.channels
            );
        }
    }
    let image = shape.channels * shape.spatial;
    let run = shape.spatial.max(1);
    for_each_image_slice(shape, out, |n, out| {
        let x = &x[n * image..][..image];
        if run == 1 {
            // `[N, C]`: a row of channels, each its own scale and bias.
            return affine_row(x, scale, bias, out);
        }
        for (c, (x, out)) in x.chunks(run).zip(out.chunks_mut(run)).enumerate() {
            let (a, b) = (scale.map(|s| s[c]), bias.map(|b| b[c]));
            for (o, &v) in out.iter_mut().zip(x) {
                let v = a.map_or(v, |a| v * a);
                o.write(b.map_or(v, |b| v + b));
            }
        }
    });
}

/// `out[c] = x[c]·scale[c] + bias[c]` along one row of channels, one loop per case so that each
/// vectorizes.
fn affine_row(
    x: &[f32],
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    match (scale, bias) {
        (Some(a), Some(b)) => {
            for (((o, &v), &a), &b) in out.iter_mut().zip(x).zip(a).zip(b) {
                o.write(v * a + b);
            }
        }
        (Some(a), None) => {
            for ((o, &v), &a) in out.iter_mut().zip(x).zip(a) {
                o.write(v * a);
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &b) in out.iter_mut().zip(x).zip(b) {
                o.write(v + b);
            }
        }
        (None, None) => {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write(v);
            }
        }
    }
}

/// Per channel `c`, the sum of the values of channel `c` of `x` `[N, C, S]` (over images and
/// positions), accumulated in f64: the gradient of a per-channel bias.
///
/// # Panics
/// If `x` does not hold `shape.len()` values.
pub fn channel_sums(x: &[f32], shape: NormShape) -> Vec<f32> {
    assert_eq!(
        x.len(),
        shape.len(),
        "channel sums: the input should hold {} values ({shape:?})",
        shape.len()
    );
    let (channels, run) = (shape.channels, shape.spatial);
    if run == 1 && channels > 0 {
        // `[N, C]`: rows added up, each channel in its own lane.
        let mut sums = vec![0f64; channels];
        for row in x.chunks_exact(channels) {
            for (sum, &v) in sums.iter_mut().zip(row) {
                *sum += f64::from(v);
            }
        }
        return sums.into_iter().map(|s| s as f32).collect();
    }
    let channel = |c: usize| {
        let total: f64 = (0..shape.batch)
            .map(|n| run_sum(&x[(n * channels + c) * run..][..run]))
            .sum();
        total as f32
    };
    if shape.len() >= PARALLEL_MIN {
        (0..channels).into_par_iter().map(channel).collect()
    } else {
        (0..channels).map(channel).collect()
    }
}

/// The sum of `values` in f64, in 8 independent partial sums (so that the adds vectorize).
fn run_sum(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use burn::{
        backend::NdArray,
        tensor::{Tensor, TensorData},
    };
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use crate::QnnBackend;

    /// The backend op equals Burn's broadcasting `y * scale` then `+ bias`, bit for bit, with
    /// and without each part, on shapes above and below the parallel size, special values
    /// included.
    #[test]
    fn equals_burns_broadcasting_ops() {
        let mut rng = StdRng::seed_from_u64(3);
        let device = Default::default();
        for &dims in &[
            [2, 3, 4, 5],
            [3, 70, 13, 11],
            [1, 1, 1, 1],
            [4, 9, 0, 3],
            [9, 300, 1, 1],
            [200, 400, 1, 1],
        ] {
            let len: usize = dims.iter().product();
            let mut values: Vec<f32> = (0..len).map(|_| rng.random_range(-50.0..50.0)).collect();
            for (i, v) in values.iter_mut().enumerate().step_by(17) {
                *v = [f32::NAN, f32::INFINITY, -0.0, 1e38][i % 4];
            }
            let y = Tensor::<NdArray, 4>::from_data(TensorData::new(values, dims), &device);
            let vector = |rng: &mut StdRng| {
                let v: Vec<f32> = (0..dims[1]).map(|_| rng.random_range(-3.0..3.0)).collect();
                Tensor::<NdArray, 1>::from_data(TensorData::new(v, [dims[1]]), &device)
            };
            let (scale, bias) = (vector(&mut rng), vector(&mut rng));
            for (scale, bias) in [
                (Some(scale.clone()), Some(bias.clone())),
                (Some(scale.clone()), None),
                (None, Some(bias.clone())),
            ] {
                let shape = [1, dims[1], 1, 1];
                let mut expected = y.clone();
                if let Some(s) = &scale {
                    expected = expected * s.clone().reshape(shape);
                }
                if let Some(b) = &bias {
                    expected = expected + b.clone().reshape(shape);
                }
                let got = NdArray::qnn_channel_affine(y.clone(), scale.clone(), bias.clone());
                let bits = |t: Tensor<NdArray, 4>| {
                    let v = t.into_data().to_vec::<f32>().unwrap();
                    v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
                };
                assert_eq!(bits(got), bits(expected), "{dims:?}");
            }
        }
    }

    /// Under autodiff, a bias alone is one node: the output gradient passes to the input
    /// unchanged and each bias value gets the sum of its channel's output gradients (checked
    /// against that sum in f64), with the forward values of Burn's broadcasting add.
    #[test]
    fn bias_gradient_is_the_channel_sum() {
        use burn::backend::Autodiff;
        type A = Autodiff<NdArray>;
        let mut rng = StdRng::seed_from_u64(4);
        let device = Default::default();
        for &dims in &[
            [3, 5, 4, 7],
            [2, 70, 17, 13],
            [4, 3, 1, 1],
            [150, 300, 1, 1],
        ] {
            let len: usize = dims.iter().product();
            let random = |rng: &mut StdRng, n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()
            };
            let (y_values, w_values, b_values) = (
                random(&mut rng, len),
                random(&mut rng, len),
                random(&mut rng, dims[1]),
            );
            let y = Tensor::<A, 4>::from_data(TensorData::new(y_values.clone(), dims), &device)
                .require_grad();
            let bias =
                Tensor::<A, 1>::from_data(TensorData::new(b_values.clone(), [dims[1]]), &device)
                    .require_grad();
            let weights =
                Tensor::<A, 4>::from_data(TensorData::new(w_values.clone(), dims), &device);
            let out = A::qnn_channel_affine(y.clone(), None, Some(bias.clone()));
            let expected = y.clone().inner() + bias.clone().inner().reshape([1, dims[1], 1, 1]);
            assert_eq!(
                out.clone().inner().into_data(),
                expected.into_data(),
                "{dims:?}"
            );
            let grads = (out * weights).sum().backward();
            let grad_y = y.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            assert_eq!(grad_y, w_values, "{dims:?}: the input's gradient");
            let grad_b = bias
                .grad(&grads)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let spatial = dims[2] * dims[3];
            for (c, &g) in grad_b.iter().enumerate() {
                let sum: f64 = (0..dims[0])
                    .flat_map(|n| w_values[(n * dims[1] + c) * spatial..][..spatial].iter())
                    .map(|&v| f64::from(v))
                    .sum();
                assert!(
                    (f64::from(g) - sum).abs() <= 1e-5 * sum.abs().max(1.0),
                    "{dims:?}: channel {c}: {g} instead of {sum}"
                );
            }
        }
    }
}
