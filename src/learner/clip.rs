//! An optimizer that clips latent weights after each step.

use burn::{
    module::AutodiffModule,
    optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer},
    tensor::backend::AutodiffBackend,
};

use crate::nn::clip_latent_weights;

/// Wraps a Burn [`Optimizer`] and clips the latent weights of the module to `[−1, 1]` after
/// each of its steps ([`clip_latent_weights`]): the binary and quantized layers' `weight`s;
/// every other parameter is left as the inner optimizer made it. Its record is the inner
/// optimizer's, so checkpoints and resuming work as with the inner optimizer alone.
///
/// Use it wherever Burn takes an optimizer, e.g. in burn-train's `Learner`:
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::{AdamConfig, GradientsParams, Optimizer};
/// use burn::tensor::Tensor;
/// use burn_qnn::{learner::ClipLatentWeights, nn::BinaryLinearConfig};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = BinaryLinearConfig::new(2, 1).init::<B>(&device);
/// let x = Tensor::<B, 2>::from_floats([[1.0, -1.0]], &device);
/// let grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
/// let mut optim = ClipLatentWeights::new(AdamConfig::new().init());
/// let layer = optim.step(10.0, layer, grads); // a huge step
/// assert!(layer.weight.val().abs().max().into_scalar() <= 1.0);
/// ```
#[derive(Debug, Clone)]
pub struct ClipLatentWeights<O> {
    inner: O,
}

impl<O> ClipLatentWeights<O> {
    /// Clips after each step of `inner`.
    pub fn new(inner: O) -> Self {
        Self { inner }
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
    B: AutodiffBackend,
{
    type Record = O::Record;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        clip_latent_weights(self.inner.step(lr, module, grads))
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        clip_latent_weights(self.inner.step_multi(lr, module, grads))
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self::new(self.inner.load_record(record))
    }
}
