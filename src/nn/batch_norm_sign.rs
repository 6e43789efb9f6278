//! Batch norm followed by the sign: the activation between two binary layers, in one pass
//! outside training.

use burn::{
    config::Config,
    module::Module,
    nn::{BatchNorm, BatchNormConfig},
    tensor::Tensor,
};

use super::host_vector;
use crate::{QnnBackend, kernels::eval_norm::EvalNorm, quant};

/// Configuration of a [`BatchNormSign`] layer.
#[derive(Config, Debug)]
pub struct BatchNormSignConfig {
    /// Channels (dimension 1 of the input).
    pub num_features: usize,
    /// Added to the variance (default `1e-5`, as Burn's `BatchNorm`).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the current batch in the running statistics (default `0.1`, as Burn's
    /// `BatchNorm`).
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// Burn's [`BatchNorm`] followed by the sign: `quant::sign(norm.forward(x))`, the activation a
/// binary network puts between its binary layers.
///
/// - training (autodiff on): Burn's batch norm with the batch's statistics (as one fused node,
///   [`crate::nn::batch_norm`]), then [`quant::sign`]: output `±1`, gradient through the sign's
///   straight-through estimator (`1` where `|norm(x)| ≤ 1`, else `0`) and the batch norm.
/// - evaluation: `sign(((x − mean)/sqrt(var + ε))·γ + β)` with the running statistics, in the
///   operations of Burn's `BatchNorm`, so exactly `quant::sign(norm.forward(x))`; on `NdArray`
///   and `Flex` in one pass over `x` instead of Burn's five (plus the sign's), which is most of
///   the time a packed model ([`crate::inference::pack`]) spends outside its binary products.
///
/// Use it where a model writes `quant::sign(norm.forward(x))`: after a binary layer whose
/// output is binarized again (by the next binary layer, or for a residual addition of signs).
/// Inputs `[N, C]`, `[N, C, L]` or `[N, C, H, W]`; the output has the input's shape. Its record
/// is a `BatchNorm` record in the field `norm`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::nn::BatchNormSignConfig;
///
/// let device = Default::default();
/// let act = BatchNormSignConfig::new(8).init::<NdArray>(&device);
/// let x = Tensor::<NdArray, 4>::random([2, 8, 5, 5], Distribution::Default, &device);
/// let y = act.forward(x.clone());
/// // Exactly the sign of Burn's batch norm, in one pass.
/// assert_eq!(y.into_data(), burn_qnn::quant::sign(act.norm.forward(x)).into_data());
/// ```
#[derive(Module, Debug)]
pub struct BatchNormSign<B: QnnBackend> {
    /// The batch norm before the sign.
    pub norm: BatchNorm<B>,
}

impl BatchNormSignConfig {
    /// Initializes the layer on `device`: `γ = 1`, `β = 0`, running mean 0 and variance 1, as
    /// Burn's `BatchNorm`.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BatchNormSign<B> {
        BatchNormSign {
            norm: BatchNormConfig::new(self.num_features)
                .with_epsilon(self.epsilon)
                .with_momentum(self.momentum)
                .init(device),
        }
    }
}

impl<B: QnnBackend> BatchNormSign<B> {
    /// `sign(norm(x))` for `x` `[N, C, ..]`: batch statistics when autodiff is on (training),
    /// running statistics otherwise.
    ///
    /// # Panics
    /// As Burn's `BatchNorm::forward`, if `x` has fewer than two dimensions or dimension 1 is
    /// not the layer's channels.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if B::ad_enabled(&x.device()) {
            return quant::sign(super::batch_norm(&self.norm, x));
        }
        assert!(
            D >= 2,
            "BatchNormSign: the input needs a batch and a channel dimension, got a {D}-d tensor"
        );
        sign_of_norm(&self.norm, x)
    }
}

impl<B: QnnBackend> BatchNormSign<B> {
    /// The batch norm in evaluation mode (running statistics) on the host, for folding into
    /// the thresholds of the layer before it.
    pub(crate) fn eval_norm(&self) -> EvalNorm {
        let norm = &self.norm;
        EvalNorm::new(
            host_vector(norm.running_mean.value()),
            &host_vector(norm.running_var.value()),
            host_vector(norm.gamma.val()),
            host_vector(norm.beta.val()),
            norm.epsilon,
        )
    }
}

/// `quant::sign(norm.forward(x))` outside training, as [`QnnBackend::qnn_batch_norm_sign`]
/// computes it with the running statistics.
///
/// # Panics
/// If dimension 1 of `x` is not the norm's channels.
pub(crate) fn sign_of_norm<B: QnnBackend, const D: usize>(
    norm: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let channels = norm.gamma.dims()[0];
    assert_eq!(
        x.dims()[1],
        channels,
        "BatchNormSign: the input {:?} should have {channels} channels in dimension 1",
        x.dims()
    );
    let device = x.device();
    B::qnn_batch_norm_sign(
        x,
        norm.running_mean.value().to_device(&device),
        norm.running_var.value().to_device(&device),
        norm.gamma.val(),
        norm.beta.val(),
        norm.epsilon,
    )
}
