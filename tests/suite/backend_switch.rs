//! The promise of the crate: code written once against `QnnBackend` gives the same numbers on
//! every backend.

use burn::tensor::Tensor;
use burn_qnn::{QnnBackend, quant};

use crate::reference::{tensor, uniform, values};

/// A binary layer written once: binarized inputs times binarized weights.
fn binary_layer<B: QnnBackend>(device: &B::Device) -> Tensor<B, 2> {
    let inputs = tensor::<B, 2>(uniform(5 * 33, -1.0, 1.0, 61), [5, 33], device);
    let weights = tensor::<B, 2>(uniform(33 * 7, -1.0, 1.0, 62), [33, 7], device);
    quant::sign(inputs).matmul(quant::sign(weights))
}

/// The same product computed on the host from the definition of sign.
fn expected() -> Vec<f32> {
    let inputs = uniform(5 * 33, -1.0, 1.0, 61);
    let weights = uniform(33 * 7, -1.0, 1.0, 62);
    let sign = |x: f32| if x < 0.0 { -1.0 } else { 1.0 };
    let mut out = vec![0f32; 5 * 7];
    for i in 0..5 {
        for j in 0..7 {
            out[i * 7 + j] = (0..33)
                .map(|k| sign(inputs[i * 33 + k]) * sign(weights[k * 7 + j]))
                .sum();
        }
    }
    out
}

pub fn same_on<B: QnnBackend>(device: &B::Device) {
    assert_eq!(values(binary_layer::<B>(device)), expected());
}
