//! Adam in one pass per parameter: Burn's `Adam` arithmetic (the same bits), computed by
//! [`QnnBackend::qnn_adam_step`] — on the host backends one parallel pass over the parameter,
//! its gradient and both moments instead of a dozen single-threaded tensor ops.
//!
//! Its state is Burn's own [`AdamState`], so records hold the same fields as Burn's `Adam`.

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::Device;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::QnnBackend;
use crate::kernels::adam::AdamStep;

/// Configuration of a [`FusedAdam`]: the fields and defaults of Burn's `AdamConfig` (without
/// AMSGrad).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::{GradientsParams, Optimizer};
/// use burn::tensor::Tensor;
/// use burn_qnn::optim::FusedAdamConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let model: Linear<B> = LinearConfig::new(4, 2).init(&device);
/// let mut optimizer = FusedAdamConfig::new().init();
/// let loss = model.forward(Tensor::<B, 2>::ones([3, 4], &device)).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let model = optimizer.step(1e-3, model, grads);
/// # let _ = model;
/// ```
#[derive(Config, Debug)]
pub struct FusedAdamConfig {
    /// Decay of the first moment `β₁`, in `[0, 1)`. Default: `0.9`.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second moment `β₂`, in `[0, 1)`. Default: `0.999`.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// `ε` of the denominator, finite and positive. Default: `1e-5` (Burn's).
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Optional coupled [weight decay](WeightDecayConfig): `g + λ·θ`.
    pub weight_decay: Option<WeightDecayConfig>,
    /// Optional [gradient clipping](GradientClippingConfig), applied by the
    /// [`OptimizerAdaptor`] before the optimizer sees the gradient.
    pub grad_clipping: Option<GradientClippingConfig>,
}

impl FusedAdamConfig {
    /// The optimizer.
    ///
    /// # Panics
    /// If `beta_1` or `beta_2` is not in `[0, 1)` or `epsilon` is not finite and positive.
    pub fn build(&self) -> FusedAdam {
        for (name, beta) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            assert!(
                (0.0..1.0).contains(&beta),
                "FusedAdam: {name} must be in [0, 1), got {beta}"
            );
        }
        assert!(
            self.epsilon.is_finite() && self.epsilon > 0.0,
            "FusedAdam: epsilon must be finite and positive, got {}",
            self.epsilon
        );
        FusedAdam {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay.as_ref().map(|d| d.penalty),
        }
    }

    /// The optimizer for a module, as Burn's `AdamConfig::init`.
    ///
    /// # Panics
    /// On an invalid configuration, see [`build`](Self::build).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> OptimizerAdaptor<FusedAdam, M, B>
    where
        B::InnerBackend: QnnBackend,
    {
        let mut optim = OptimizerAdaptor::from(self.build());
        if let Some(config) = &self.grad_clipping {
            optim = optim.with_grad_clipping(config.init());
        }
        optim
    }
}

/// Adam (Kingma & Ba) with Burn's arithmetic, one [`QnnBackend::qnn_adam_step`] per parameter
/// and step. With gradient `g` (plus `λ·θ` under weight decay), step `t` (from 1),
/// `b₂ = sqrt(1 − β₂ᵗ)`:
///
/// ```text
/// m = β₁·m + (1 − β₁)·g
/// v = β₂·v + (1 − β₂)·g²
/// θ = θ − lr · (b₂ / (1 − β₁ᵗ))·m / (sqrt(v) + ε·b₂)
/// ```
///
/// On `NdArray` and `Flex` the results are bit for bit those of Burn's `Adam`; elsewhere the
/// same tensor ops run.
#[derive(Clone, Debug)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: Option<f32>,
}

impl<B: QnnBackend> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(state) => {
                let momentum = state.momentum;
                (
                    momentum.time + 1,
                    Some((momentum.moment_1, momentum.moment_2)),
                )
            }
            None => (1, None),
        };
        let step = AdamStep {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            lr: lr as f32,
            time,
        };
        let (tensor, moment_1, moment_2) = B::qnn_adam_step(tensor, grad, moments, &step);
        let momentum = AdaptiveMomentumState::new(time, moment_1, moment_2);
        (tensor, Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
