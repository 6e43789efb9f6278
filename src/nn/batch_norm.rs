//! Burn's `BatchNorm` with its training-mode pass as one fused backend op.

use burn::{nn::BatchNorm, tensor::Tensor};

use crate::QnnBackend;

/// `norm.forward(x)` for Burn's [`BatchNorm`] on `x` `[N, C, ..]`, with the training-mode pass
/// (under `Autodiff`) as one node of [`QnnBackend::qnn_batch_norm_train`]: on `NdArray` two
/// passes over the data forward and two backward, where Burn's composite of tensor ops makes
/// about twenty. The output, the gradients and the update of the running statistics
/// (`running = (1 − momentum)·running + momentum·batch`, biased variance) are Burn's, up to the
/// rounding of the sums; outside training it is `norm.forward(x)` itself. The networks of
/// [`crate::models`] use it after every layer.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::BatchNormConfig;
/// use burn::tensor::{Distribution, Tensor};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let norm = BatchNormConfig::new(3).init::<B>(&device);
/// let x = Tensor::<B, 4>::random([4, 3, 5, 5], Distribution::Default, &device);
/// let fused = burn_qnn::nn::batch_norm(&norm, x.clone());
/// let burn = BatchNormConfig::new(3).init::<B>(&device).forward(x);
/// let diff = (fused - burn).abs().max().into_scalar();
/// assert!(diff < 1e-4);
/// ```
///
/// # Panics
/// As `BatchNorm::forward`, if `x` has fewer than two dimensions.
pub fn batch_norm<B: QnnBackend, const D: usize>(
    norm: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    assert!(
        D >= 2,
        "batch_norm: the input needs a batch and a channel dimension, got a {D}-d tensor"
    );
    if !B::ad_enabled(&x.device()) {
        return norm.forward(x);
    }
    let (y, mean, variance) =
        B::qnn_batch_norm_train(x, norm.gamma.val(), norm.beta.val(), norm.epsilon);
    let update = |running: Tensor<B, 1>, batch: Tensor<B, 1>| {
        running
            .mul_scalar(1.0 - norm.momentum)
            .add(batch.detach().mul_scalar(norm.momentum))
            .detach()
    };
    let device = y.device();
    norm.running_mean.update(update(
        norm.running_mean.value_sync().to_device(&device),
        mean,
    ));
    norm.running_var.update(update(
        norm.running_var.value_sync().to_device(&device),
        variance,
    ));
    y
}
