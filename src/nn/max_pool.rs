//! Max-pooling whose training pass keeps only the index of each window's maximum.

use burn::tensor::Tensor;

use crate::QnnBackend;

/// Burn's `max_pool2d(x, kernel, stride, [0, 0], [1, 1], false)` on `x` `[N, C, H, W]`: each
/// output the largest value of its `kernel` window (windows `stride` apart, no padding), with
/// the gradient of each output going to the first maximum of its window, as Burn's. Under
/// `Autodiff` it is one node of [`QnnBackend::qnn_max_pool2d_with_indices`] that keeps only the
/// indices; on `NdArray` the forward and backward are the slice kernels of
/// [`crate::kernels::pool`] instead of Burn's per-element loops. The networks of
/// [`crate::models`] use it.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Tensor, module::max_pool2d};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let x = Tensor::<B, 4>::from_floats([[[[1.0, 3.0, 2.0, 2.0], [0.0, 3.0, 2.0, 5.0]]]], &device)
///     .require_grad();
/// let y = burn_qnn::nn::max_pool2d(x.clone(), [2, 2], [2, 2]);
/// let burn = max_pool2d(x.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false);
/// assert_eq!(y.to_data(), burn.to_data());
/// // Each window's gradient goes to its first maximum only.
/// let grad = x.grad(&y.sum().backward()).unwrap();
/// assert_eq!(grad.to_data().to_vec::<f32>().unwrap(), [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
/// ```
///
/// # Panics
/// If a window or stride size is 0.
pub fn max_pool2d<B: QnnBackend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Tensor<B, 4> {
    assert!(
        kernel.iter().chain(&stride).all(|&v| v > 0),
        "max_pool2d: window {kernel:?} and stride {stride:?} must be positive"
    );
    B::qnn_max_pool2d(x, kernel, stride)
}
