//! An optimizer that applies the paper's latent-weight rules after each step: the per-layer
//! learning-rate scale (optional) and clipping to `[−1, 1]`.

use burn::{
    module::AutodiffModule,
    optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer},
    tensor::backend::AutodiffBackend,
};

use crate::{
    QnnBackend,
    nn::{LatentLrScale, LatentWeightsBefore},
};

/// Wraps a Burn [`Optimizer`] and, after each of its steps, applies the paper's rules to the
/// module's latent weights (the `weight`s of the binary and quantized layers, the same
/// parameters [`clip_latent_weights`](crate::nn::clip_latent_weights) clips):
///
/// 1. with [`LatentLrScale::Glorot`] ([`ClipLatentWeights::with_lr_scale`]; off by default),
///    each latent weight `W` of the step becomes `W_old + scale·(W_step − W_old)`, where
///    `W_step` is the inner optimizer's result and `scale` is
///    [`glorot_lr_scale`](crate::nn::glorot_lr_scale) of the layer's fans
///    ([`latent_weight_fans`](crate::nn::latent_weight_fans): `(d_input, d_output)` for a
///    fully connected layer, `(C_in·k_h·k_w, C_out·k_h·k_w)` for a convolution) — the rule of
///    the authors' Theano code (BinaryNet, `W_LR_scale = "Glorot"`);
/// 2. then every latent weight is clipped to `[−1, 1]`.
///
/// Every other parameter (biases, batch norm, float layers) is exactly as the inner optimizer
/// made it. The optimizer state is the inner optimizer's, computed from the gradients as
/// usual, and so is the record: checkpoints and resuming work as with the inner optimizer
/// alone (the scale is configuration, not state).
///
/// **What the scale means for each optimizer.** For an optimizer whose update of a parameter
/// is `−lr·u`, with `u` and the state depending only on the gradients, the parameter and the
/// step count, never on the rate (Burn's SGD with or without momentum and weight decay, Adam,
/// AdamW, whose decoupled decay `lr·λ·W` scales too), step 1 is exactly that optimizer run at
/// `lr·scale` on the latent weights, up to f32 rounding. Optimizers whose update is not linear
/// in the rate (L-BFGS, for instance) get their delta scaled, which is not the same. For [`ShiftAdaMax`](crate::optim::ShiftAdaMax), whose step
/// size is `AP2(lr/(1−β1^t))`, the scaled update is its (power-of-two) step times `scale` — not
/// the step of `ShiftAdaMax` at `AP2` of `lr·scale`, which would round the scaled rate to a
/// power of two; the authors' code scales the update the same way, after their optimizer.
///
/// The scale costs one copy of the latent weights per step (kept to compute the delta);
/// without it the wrapper only clips.
///
/// Use it wherever Burn takes an optimizer, e.g. in burn-train's `Learner`:
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::{AdamConfig, GradientsParams, Optimizer};
/// use burn::tensor::Tensor;
/// use burn_qnn::{
///     learner::ClipLatentWeights,
///     nn::{BinaryLinearConfig, LatentLrScale},
/// };
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = BinaryLinearConfig::new(2, 1).init::<B>(&device);
/// let x = Tensor::<B, 2>::from_floats([[1.0, -1.0]], &device);
/// let grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
/// let mut optim = ClipLatentWeights::new(AdamConfig::new().init());
/// let layer = optim.step(10.0, layer, grads); // a huge step
/// assert!(layer.weight.val().abs().max().into_scalar() <= 1.0);
///
/// // The paper's recipe: Adam with the Glorot per-layer scale on the latent weights.
/// type Layer = burn_qnn::nn::BinaryLinear<B>;
/// let optim = ClipLatentWeights::new(AdamConfig::new().init::<B, Layer>())
///     .with_lr_scale(LatentLrScale::Glorot);
/// assert_eq!(optim.lr_scale(), LatentLrScale::Glorot);
/// ```
#[derive(Debug, Clone)]
pub struct ClipLatentWeights<O> {
    inner: O,
    lr_scale: LatentLrScale,
}

impl<O> ClipLatentWeights<O> {
    /// Clips after each step of `inner`, without a learning-rate scale.
    pub fn new(inner: O) -> Self {
        Self {
            inner,
            lr_scale: LatentLrScale::None,
        }
    }

    /// Scales the latent weights' updates by `lr_scale` (before clipping); see the type's
    /// documentation.
    pub fn with_lr_scale(mut self, lr_scale: LatentLrScale) -> Self {
        self.lr_scale = lr_scale;
        self
    }

    /// The latent weights' learning-rate scale.
    pub fn lr_scale(&self) -> LatentLrScale {
        self.lr_scale
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// Unwraps the optimizer.
    pub fn into_inner(self) -> O {
        self.inner
    }
}

impl<O, M, B> Optimizer<M, B> for ClipLatentWeights<O>
where
    O: Optimizer<M, B>,
    M: AutodiffModule<B>,
    B: AutodiffBackend + QnnBackend,
{
    type Record = O::Record;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        super::record_reads::exclusively(|| {
            let before = LatentWeightsBefore::of(&module, self.lr_scale);
            before.finish(self.inner.step(lr, module, grads), true)
        })
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        super::record_reads::exclusively(|| {
            let before = LatentWeightsBefore::of(&module, self.lr_scale);
            before.finish(self.inner.step_multi(lr, module, grads), true)
        })
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
            ..self
        }
    }
}
