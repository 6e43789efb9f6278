//! The paper's shift-based batch normalization.

use burn::{
    config::Config,
    module::{Initializer, Module, Param, RunningState},
    tensor::Tensor,
};

use crate::{QnnBackend, quant::ap2};

/// Configuration of a [`ShiftBatchNorm`] layer.
#[derive(Config, Debug)]
pub struct ShiftBatchNormConfig {
    /// Channels (dimension 1 of the input).
    pub num_features: usize,
    /// Added to the variance before the inverse square root (default `1e-4`, the paper's).
    #[config(default = 1e-4)]
    pub epsilon: f64,
    /// Weight of the current batch in the running statistics (default `0.1`, the paper's α).
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// Shift-based batch normalization (BNN paper, Algorithm 3): every multiplication is by a power
/// of two, `AP2(v) = sgn(v)·2^round(log2|v|)` ([`ap2`]), so it is a shift.
///
/// Per channel, over the batch and every position (inputs `[N, C]`, `[N, C, L]` or
/// `[N, C, H, W]`):
/// - training: `μ = mean(x)`, `c = x − μ`, `σ² = mean(c·AP2(c))`,
///   `x̂ = c·AP2(1/sqrt(σ² + ε))`, `y = AP2(γ)·x̂ + β`; the running mean and variance move by
///   `momentum` towards `μ` and `σ²`. The gradient flows through `AP2` straight through.
/// - evaluation (no autodiff): the same with the running mean and variance.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::nn::ShiftBatchNormConfig;
///
/// let device = Default::default();
/// let bn = ShiftBatchNormConfig::new(8).init::<NdArray>(&device);
/// let x = Tensor::<NdArray, 4>::random([4, 8, 5, 5], Distribution::Default, &device);
/// assert_eq!(bn.forward(x).dims(), [4, 8, 5, 5]);
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct ShiftBatchNorm<B: QnnBackend> {
    /// Scale `γ` `[C]` (applied as `AP2(γ)`).
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift `β` `[C]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Running mean `[C]`.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (shift-based) variance `[C]`.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Weight of a batch in the running statistics.
    pub momentum: f64,
    /// Added to the variance.
    pub epsilon: f64,
}

impl ShiftBatchNormConfig {
    /// Initializes the layer on `device`: `γ = 1`, `β = 0`, running mean 0, variance 1.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> ShiftBatchNorm<B> {
        let n = self.num_features;
        ShiftBatchNorm {
            gamma: Initializer::Ones.init([n], device),
            beta: Initializer::Zeros.init([n], device),
            running_mean: RunningState::new(Tensor::zeros([n], device)),
            running_var: RunningState::new(Tensor::ones([n], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }
}

impl<B: QnnBackend> ShiftBatchNorm<B> {
    /// Normalizes `[N, C, ..]`: batch statistics when autodiff is on (training), running
    /// statistics otherwise.
    ///
    /// # Panics
    /// If `D < 2` or dimension 1 is not `C`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        assert!(
            D >= 2,
            "ShiftBatchNorm: the input needs rank ≥ 2 ([batch, channels, ..]), got {D}"
        );
        let channels = self.gamma.dims()[0];
        assert_eq!(
            x.dims()[1],
            channels,
            "ShiftBatchNorm: input {:?} does not have {channels} channels in dimension 1",
            x.dims()
        );
        if B::ad_enabled(&x.device()) {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    /// Evaluation mode's `(mean, AP2(1/sqrt(var + ε)), AP2(γ), β)`, per channel: the layer
    /// computes `((x − mean)·inv_std)·AP2(γ) + β`.
    pub fn eval_parameters(&self) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
        let mean = self.running_mean.value();
        let inv_std = ap2((self.running_var.value() + self.epsilon).sqrt().recip());
        (mean, inv_std, ap2(self.gamma.val()), self.beta.val())
    }

    fn forward_eval<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (mean, inv_std, gamma, beta) = self.eval_parameters();
        let shape = channel_shape::<D>(self.gamma.dims()[0]);
        (x - mean.reshape(shape)) * inv_std.reshape(shape) * gamma.reshape(shape)
            + beta.reshape(shape)
    }

    fn forward_train<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let channels = dims[1];
        let shape = channel_shape::<D>(channels);
        let per_channel = |t: Tensor<B, D>| t.swap_dims(0, 1).reshape([channels as i32, -1]);

        let mean = per_channel(x.clone()).mean_dim(1).reshape(shape);
        let centered = x - mean.clone();
        let var = per_channel(centered.clone() * ap2(centered.clone()))
            .mean_dim(1)
            .reshape(shape);
        let inv_std = ap2((var.clone() + self.epsilon).sqrt().recip());
        let y = centered * inv_std * ap2(self.gamma.val()).reshape(shape)
            + self.beta.val().reshape(shape);

        let m = self.momentum;
        let update = |running: &RunningState<Tensor<B, 1>>, batch: Tensor<B, D>| {
            let batch = batch.detach().reshape([channels]);
            let old = running.value_sync().to_device(&batch.device());
            running.update(old * (1.0 - m) + batch * m);
        };
        update(&self.running_mean, mean);
        update(&self.running_var, var);
        y
    }
}

/// `[1, C, 1, ..]`.
fn channel_shape<const D: usize>(channels: usize) -> [usize; D] {
    let mut shape = [1; D];
    shape[1] = channels;
    shape
}
