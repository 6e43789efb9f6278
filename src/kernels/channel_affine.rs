//! A per-channel scale and bias over `[N, C, S]` values in one pass: what a layer does after its
//! product (`y·α + b`, per output channel), which Burn's broadcasting tensor ops take several
//! slow passes for on burn-ndarray.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::batch_norm::NormShape;

/// Values from which the images run in parallel.
const PARALLEL_MIN: usize = 1 << 15;

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
    if image == 0 {
        return;
    }
    let run = shape.spatial.max(1);
    let per_image = |(x, out): (&[f32], &mut [MaybeUninit<f32>])| {
        for (c, (x, out)) in x.chunks(run).zip(out.chunks_mut(run)).enumerate() {
            let (a, b) = (scale.map(|s| s[c]), bias.map(|b| b[c]));
            for (o, &v) in out.iter_mut().zip(x) {
                let v = a.map_or(v, |a| v * a);
                o.write(b.map_or(v, |b| v + b));
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
        for &dims in &[[2, 3, 4, 5], [3, 70, 13, 11], [1, 1, 1, 1], [4, 9, 0, 3]] {
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
}
