//! Shift-based AdaMax (Hubara, Courbariaux et al., *Binarized Neural Networks*, Algorithm 4).
//!
//! With gradient `g` at step `t` (`t` starts at 1), the update of a parameter `θ` is
//!
//! ```text
//! m = β1·m + (1 − β1)·g
//! v = max(β2·v, |g|)
//! θ = θ − AP2(α / (1 − β1^t)) · (m · AP2(1 / (v + ε)))
//! ```
//!
//! where `α` is the learning rate handed to the optimizer step and `AP2` is the *approximate
//! power of two* `AP2(x) = sign(x) · 2^round(log2 |x|)`, with `AP2(0) = 0`. Both multipliers
//! of `m` are powers of two, so on fixed-point hardware the update is two bit shifts of `m`.
//!
//! See [`ShiftAdaMax`] for the exact numerical conventions (rounding of ties, where `ε` goes and
//! what happens to parameters that never receive a gradient).

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::SimpleOptimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::{WeightDecay, WeightDecayConfig};
use burn::record::Record;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// Smallest exponent used by [`ap2`]: `2^-149` is the smallest positive (subnormal) `f32`.
const AP2_MIN_EXPONENT: f32 = -149.0;
/// Largest exponent used by [`ap2`]: `2^127` is the largest power of two representable in `f32`.
const AP2_MAX_EXPONENT: f32 = 127.0;

/// Configuration to create a [shift-based AdaMax](ShiftAdaMax) optimizer.
///
/// Defaults follow the BNN paper: `β1 = 0.9`, `β2 = 0.999`, plus `ε = 1e-8` to keep `1/v`
/// finite. Weight decay and gradient clipping are optional and off by default, like in Burn's
/// [`AdamConfig`](burn::optim::AdamConfig).
#[derive(Config, Debug)]
pub struct ShiftAdaMaxConfig {
    /// Decay rate `β1` of the first moment `m`, in `[0, 1)`. Default: `0.9`.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay rate `β2` of the infinity norm `v`, in `[0, 1]`. Default: `0.999`.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Positive constant added to `v` before taking its reciprocal: the update uses
    /// `AP2(1 / (v + ε))`. Default: `1e-8`.
    #[config(default = 1e-8)]
    pub epsilon: f32,
    /// Optional L2 [weight decay](WeightDecayConfig): `g ← g + penalty · θ` before the moments
    /// are updated (the same coupled weight decay as Burn's Adam).
    pub weight_decay: Option<WeightDecayConfig>,
    /// Optional [gradient clipping](GradientClippingConfig), applied by the
    /// [`OptimizerAdaptor`] before the optimizer sees the gradient.
    pub grad_clipping: Option<GradientClippingConfig>,
}

impl ShiftAdaMaxConfig {
    /// Build a [`ShiftAdaMax`] from the config.
    ///
    /// # Panics
    ///
    /// If `beta_1` is not in `[0, 1)`, `beta_2` is not in `[0, 1]`, or `epsilon` is not a
    /// finite positive number.
    pub fn build(&self) -> ShiftAdaMax {
        assert!(
            (0.0..1.0).contains(&self.beta_1),
            "ShiftAdaMax: beta_1 must be in [0, 1), got {}",
            self.beta_1
        );
        assert!(
            (0.0..=1.0).contains(&self.beta_2),
            "ShiftAdaMax: beta_2 must be in [0, 1], got {}",
            self.beta_2
        );
        assert!(
            self.epsilon.is_finite() && self.epsilon > 0.0,
            "ShiftAdaMax: epsilon must be finite and positive, got {}",
            self.epsilon
        );
        ShiftAdaMax {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay.as_ref().map(WeightDecay::new),
        }
    }

    /// Initialize the shift-based AdaMax optimizer for a module.
    ///
    /// # Returns
    ///
    /// Returns an optimizer that can be used to optimize a module.
    ///
    /// # Panics
    ///
    /// On an invalid configuration, see [`build`](Self::build).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> OptimizerAdaptor<ShiftAdaMax, M, B> {
        let mut optim = OptimizerAdaptor::from(self.build());
        if let Some(config) = &self.grad_clipping {
            optim = optim.with_grad_clipping(config.init());
        }
        optim
    }
}

/// Shift-based AdaMax optimizer (BNN paper, Algorithm 4).
///
/// Created with [`ShiftAdaMaxConfig`]. For every parameter tensor the optimizer keeps a
/// [`ShiftAdaMaxState`] (`m`, `v` and the step count `t`) and applies
///
/// ```text
/// m = β1·m + (1 − β1)·g
/// v = max(β2·v, |g|)
/// θ = θ − AP2(α / (1 − β1^t)) · (m · AP2(1 / (v + ε)))
/// ```
///
/// Numerical conventions:
///
/// * **AP2.** `AP2(x) = sign(x) · 2^e` with `e = floor(log2|x| + 0.5)`, i.e. the exponent is
///   rounded half *up* (towards `+∞`) in the log domain, and `AP2(0) = 0`. A tie would be
///   `|x| = √2 · 2^k`, which no float represents exactly, so ties only arise from the rounding
///   error of the computed logarithm: values within about one ulp of a geometric midpoint may go
///   either way. The `floor(y + 0.5)` rule is used instead of Burn's `round` (half to even) so
///   that the choice is the same on every backend. The exponent is clamped to `[-149, 127]`,
///   the `f32` range, so `AP2` saturates instead of overflowing to infinity.
/// * **Scalar factor.** `AP2(α / (1 − β1^t))` is computed on the host in `f64` (with `β1`
///   widened from `f32`), with the same rounding rule; the tensor factor `AP2(1/(v + ε))` is
///   computed on the device in the backend's float type. Both are exact powers of two (the
///   device side computes `2^e` with the backend's `powf` of base 2 and an integral exponent,
///   exact on IEEE-correct backends such as NdArray), so the update is `m` times an exact power
///   of two.
/// * **ε.** It goes inside the reciprocal: `1 / (v + ε)`. With the default `ε = 1e-8` this
///   caps the step multiplier at `AP2(1e8) = 2^27`.
/// * **Zero gradient.** Where a parameter has received `g = 0` at every step so far, `m = 0`
///   and `v = 0`, so `AP2(1/ε)` is finite and the update is exactly `0 · 2^27 = 0`: the
///   parameter stays unchanged and no NaN appears. Once a gradient has been seen, `v` decays
///   geometrically by `β2` per step while `m` decays by `β1 < β2`, so the update fades out.
/// * **Learning rate.** `α` is the learning rate passed to [`SimpleOptimizer::step`] (through
///   [`Optimizer::step`](burn::optim::Optimizer::step) or a learning-rate scheduler). A zero
///   learning rate gives `AP2(0) = 0`, i.e. no update.
#[derive(Clone)]
pub struct ShiftAdaMax {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: Option<WeightDecay>,
}

impl core::fmt::Debug for ShiftAdaMax {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Burn's `WeightDecay` is not `Debug`; report whether it is enabled.
        f.debug_struct("ShiftAdaMax")
            .field("beta_1", &self.beta_1)
            .field("beta_2", &self.beta_2)
            .field("epsilon", &self.epsilon)
            .field("weight_decay", &self.weight_decay.is_some())
            .finish()
    }
}

/// Per-parameter state of [`ShiftAdaMax`]; a [`Record`], so it is saved and loaded with the
/// optimizer record exactly like Burn's Adam state.
#[derive(Record, Clone)]
pub struct ShiftAdaMaxState<B: Backend, const D: usize> {
    /// Number of steps taken so far (`t` of the last update; the first update has `t = 1`).
    pub time: usize,
    /// First moment `m` (exponential moving average of the gradient).
    pub moment: Tensor<B, D>,
    /// Exponentially weighted infinity norm `v = max(β2·v, |g|)`.
    pub inf_norm: Tensor<B, D>,
}

impl<B: Backend, const D: usize> ShiftAdaMaxState<B, D> {
    /// Create a state from its parts.
    pub fn new(time: usize, moment: Tensor<B, D>, inf_norm: Tensor<B, D>) -> Self {
        Self {
            time,
            moment,
            inf_norm,
        }
    }

    /// Move the state to a device.
    pub fn to_device(mut self, device: &B::Device) -> Self {
        self.moment = self.moment.to_device(device);
        self.inf_norm = self.inf_norm.to_device(device);
        self
    }
}

impl ShiftAdaMax {
    /// Update `(m, v, t)` with the gradient `grad`; a missing state starts from `m = v = 0`,
    /// `t = 0`.
    fn update_moments<B: Backend, const D: usize>(
        &self,
        grad: Tensor<B, D>,
        state: Option<ShiftAdaMaxState<B, D>>,
    ) -> ShiftAdaMaxState<B, D> {
        let (time, moment, inf_norm) = match state {
            Some(state) => {
                let moment = state
                    .moment
                    .mul_scalar(self.beta_1)
                    .add(grad.clone().mul_scalar(1.0 - self.beta_1));
                let inf_norm = state.inf_norm.mul_scalar(self.beta_2).max_pair(grad.abs());
                (state.time + 1, moment, inf_norm)
            }
            // m = β1·0 + (1 − β1)·g and v = max(β2·0, |g|) = |g|.
            None => (1, grad.clone().mul_scalar(1.0 - self.beta_1), grad.abs()),
        };
        ShiftAdaMaxState::new(time, moment, inf_norm)
    }

    /// The update `AP2(lr / (1 − β1^t)) · (m · AP2(1 / (v + ε)))` for a state after its update.
    fn delta<B: Backend, const D: usize>(
        &self,
        lr: f64,
        state: &ShiftAdaMaxState<B, D>,
    ) -> Tensor<B, D> {
        let time = i32::try_from(state.time).unwrap_or(i32::MAX);
        let bias_correction = 1.0 - f64::from(self.beta_1).powi(time);
        let step_scale = ap2_scalar(lr / bias_correction);
        let inv_norm = ap2(state.inf_norm.clone().add_scalar(self.epsilon).recip());
        state.moment.clone().mul(inv_norm).mul_scalar(step_scale)
    }
}

impl<B: Backend> SimpleOptimizer<B> for ShiftAdaMax {
    type State<const D: usize> = ShiftAdaMaxState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: burn::optim::LearningRate,
        tensor: Tensor<B, D>,
        mut grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        if let Some(weight_decay) = &self.weight_decay {
            grad = weight_decay.transform(grad, tensor.clone());
        }
        let state = self.update_moments(grad, state);
        let delta = self.delta(lr, &state);
        (tensor.sub(delta), Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.to_device(device)
    }
}

/// Elementwise approximate power of two: `sign(x) · 2^floor(log2|x| + 0.5)`, `AP2(0) = 0`.
///
/// The exponent is clamped to `[-149, 127]` so the result saturates at `±2^127` and the
/// smallest non-zero magnitude is `2^-149`.
fn ap2<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let is_zero = x.clone().equal_elem(0.0);
    let sign = x.clone().sign();
    let exponent = x
        .abs()
        .log()
        .mul_scalar(core::f32::consts::LOG2_E)
        .add_scalar(0.5)
        .floor()
        .clamp(AP2_MIN_EXPONENT, AP2_MAX_EXPONENT);
    let magnitude = exponent.full_like(2.0).powf(exponent);
    sign.mul(magnitude).mask_fill(is_zero, 0.0)
}

/// Host-side approximate power of two in `f64`, same rounding rule as [`ap2`]:
/// `sign(x) · 2^floor(log2|x| + 0.5)`, `AP2(0) = 0`, NaN stays NaN.
fn ap2_scalar(x: f64) -> f64 {
    if x == 0.0 || x.is_nan() {
        return x;
    }
    let exponent = (x.abs().log2() + 0.5)
        .floor()
        .clamp(f64::from(AP2_MIN_EXPONENT), f64::from(AP2_MAX_EXPONENT));
    // The exponent is an integer in [-149, 127], so the conversion is exact.
    x.signum() * 2f64.powi(exponent as i32)
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{Module, Param};
    use burn::nn::loss::{MseLoss, Reduction};
    use burn::nn::{Linear, LinearConfig, LinearRecord};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use burn::tensor::TensorData;

    type B = NdArray;
    type AB = Autodiff<NdArray>;

    const BETA_1: f32 = 0.9;
    const BETA_2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    /// Reference AP2 in plain `f32` (exponent rounded half up, `AP2(0) = 0`).
    ///
    /// Panics if `x` lies so close to a geometric midpoint `√2·2^k` that backends could
    /// legitimately disagree: such test data would be ambiguous.
    fn ref_ap2(x: f32) -> f32 {
        if x == 0.0 {
            return 0.0;
        }
        let y = x.abs().log2();
        let frac = y - y.floor();
        assert!(
            (frac - 0.5).abs() > 1e-3,
            "test data too close to an AP2 tie: {x} (log2 = {y})"
        );
        x.signum() * 2f32.powi((y + 0.5).floor() as i32)
    }

    /// Reference AP2 of the host-side scalar, in `f64`.
    fn ref_ap2_f64(x: f64) -> f64 {
        let y = x.abs().log2();
        assert!(
            (y - y.floor() - 0.5).abs() > 1e-6,
            "learning rate too close to an AP2 tie: {x}"
        );
        x.signum() * 2f64.powi((y + 0.5).floor() as i32)
    }

    /// Plain-loop reference of the algorithm: state (m, v, t) and parameters.
    struct Reference {
        m: Vec<f32>,
        v: Vec<f32>,
        t: i32,
        theta: Vec<f32>,
    }

    impl Reference {
        fn new(theta: &[f32]) -> Self {
            Self {
                m: vec![0.0; theta.len()],
                v: vec![0.0; theta.len()],
                t: 0,
                theta: theta.to_vec(),
            }
        }

        /// One step; returns the per-element multiplier `AP2(α̂)·AP2(1/(v+ε))` of `m`.
        fn step(&mut self, lr: f64, g: &[f32]) -> Vec<f32> {
            self.t += 1;
            let scale = ref_ap2_f64(lr / (1.0 - f64::from(BETA_1).powi(self.t))) as f32;
            let mut multipliers = Vec::with_capacity(g.len());
            for (i, &gi) in g.iter().enumerate() {
                self.m[i] = self.m[i] * BETA_1 + gi * (1.0 - BETA_1);
                self.v[i] = (self.v[i] * BETA_2).max(gi.abs());
                let inv = ref_ap2(1.0 / (self.v[i] + EPS));
                self.theta[i] -= self.m[i] * inv * scale;
                multipliers.push(inv * scale);
            }
            multipliers
        }
    }

    fn tensor1(values: &[f32]) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::from(values), &Default::default())
    }

    fn values(t: Tensor<B, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            let tol = 1e-6 * e.abs().max(1e-6);
            assert!(
                (a - e).abs() <= tol,
                "{what}[{i}]: got {a}, expected {e} (tolerance {tol})"
            );
        }
    }

    fn optimizer() -> ShiftAdaMax {
        ShiftAdaMaxConfig::new().build()
    }

    /// Gradients for a few steps; element 2 never receives a gradient, element 4 flips sign.
    const GRADS: [[f32; 6]; 5] = [
        [0.30, -1.20, 0.0, 0.05, 2.0, -0.7],
        [0.10, -0.90, 0.0, 0.20, -3.0, -0.6],
        [-0.40, 0.25, 0.0, 0.01, 1.5, 0.3],
        [0.70, -0.35, 0.0, 0.12, -0.2, 0.9],
        [0.02, 0.60, 0.0, -0.08, 0.9, -1.1],
    ];
    const THETA0: [f32; 6] = [0.5, -0.25, 1.0, 0.0, -1.5, 0.125];
    const LR: f64 = 0.01;

    #[test]
    fn ap2_known_values() {
        let x = tensor1(&[0.0, 1.0, -3.0, 0.3, 1.4, 1.5, 6.0, -0.75, 1e-8, 1e30, 1e-45]);
        let expected = [
            0.0,
            1.0,
            -4.0,
            0.25,
            1.0,
            2.0,
            8.0,
            -1.0,
            2f32.powi(-27),
            2f32.powi(100),
            2f32.powi(-149),
        ];
        assert_eq!(values(ap2(x)), expected);
        assert_eq!(ap2_scalar(0.0), 0.0);
        assert_eq!(ap2_scalar(-0.1), -0.125);
        assert_eq!(ap2_scalar(10.0), 8.0);
        assert_eq!(ap2_scalar(12.0), 16.0);
    }

    #[test]
    fn ap2_saturates_instead_of_overflowing() {
        let x = tensor1(&[f32::MAX, -f32::MAX]);
        assert_eq!(values(ap2(x)), [2f32.powi(127), -2f32.powi(127)]);
    }

    #[test]
    fn one_step_matches_reference() {
        let mut reference = Reference::new(&THETA0);
        reference.step(LR, &GRADS[0]);

        let (theta, state) = SimpleOptimizer::<B>::step(
            &optimizer(),
            LR,
            tensor1(&THETA0),
            tensor1(&GRADS[0]),
            None,
        );
        let state = state.unwrap();

        assert_eq!(state.time, 1);
        assert_close(&values(state.moment), &reference.m, "m");
        assert_close(&values(state.inf_norm), &reference.v, "v");
        assert_close(&values(theta), &reference.theta, "theta");
    }

    #[test]
    fn several_steps_match_reference() {
        let optim = optimizer();
        let mut reference = Reference::new(&THETA0);
        let mut theta = tensor1(&THETA0);
        let mut state = None;
        for (k, g) in GRADS.iter().enumerate() {
            // A learning rate that changes between steps, as with a scheduler.
            let lr = LR * 0.5f64.powi(k as i32);
            reference.step(lr, g);
            let (new_theta, new_state) =
                SimpleOptimizer::<B>::step(&optim, lr, theta, tensor1(g), state);
            theta = new_theta;
            state = new_state;
        }
        let state = state.unwrap();
        assert_eq!(state.time, GRADS.len());
        assert_close(&values(state.moment), &reference.m, "m");
        assert_close(&values(state.inf_norm), &reference.v, "v");
        let theta = values(theta);
        assert_close(&theta, &reference.theta, "theta");
        // The parameter that never received a gradient did not move.
        assert_eq!(theta[2], THETA0[2]);
    }

    #[test]
    fn updates_are_exact_powers_of_two_times_m() {
        let optim = optimizer();
        let mut reference = Reference::new(&[0.0; 6]);
        let mut state = None;
        for g in &GRADS {
            let multipliers = reference.step(LR, g);
            // With θ = 0 the new parameter is exactly −update.
            let (theta, new_state) =
                SimpleOptimizer::<B>::step(&optim, LR, tensor1(&[0.0; 6]), tensor1(g), state);
            let new_state = new_state.unwrap();
            let m = values(new_state.moment.clone());
            let update: Vec<f32> = values(theta).iter().map(|x| -x).collect();
            for i in 0..m.len() {
                if m[i] == 0.0 {
                    assert_eq!(update[i], 0.0, "element {i}: zero m must give zero update");
                    continue;
                }
                let ratio = update[i] / m[i];
                assert!(
                    ratio > 0.0,
                    "element {i}: multiplier {ratio} must be positive"
                );
                assert_eq!(
                    ratio.to_bits() & 0x007f_ffff,
                    0,
                    "element {i}: multiplier {ratio} is not a power of two"
                );
                assert_eq!(ratio, multipliers[i], "element {i}: wrong power of two");
            }
            state = Some(new_state);
        }
    }

    #[test]
    fn zero_gradient_forever_leaves_parameters_unchanged() {
        let optim = optimizer();
        let theta0 = [0.75, -2.0, 0.0];
        let mut theta = tensor1(&theta0);
        let mut state = None;
        for _ in 0..4 {
            let (t, s) = SimpleOptimizer::<B>::step(&optim, LR, theta, tensor1(&[0.0; 3]), state);
            theta = t;
            state = s;
        }
        assert_eq!(values(theta), theta0);
        assert_eq!(values(state.unwrap().inf_norm), [0.0; 3]);
    }

    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        let penalty = 0.5;
        let optim = ShiftAdaMaxConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(penalty)))
            .build();
        let g = GRADS[0];
        let decayed: Vec<f32> = g.iter().zip(THETA0).map(|(g, t)| t * penalty + g).collect();
        let mut reference = Reference::new(&THETA0);
        reference.step(LR, &decayed);
        let (theta, _) =
            SimpleOptimizer::<B>::step(&optim, LR, tensor1(&THETA0), tensor1(&g), None);
        assert_close(&values(theta), &reference.theta, "theta");
    }

    #[test]
    #[should_panic(expected = "beta_1 must be in [0, 1)")]
    fn invalid_beta_1_is_rejected() {
        ShiftAdaMaxConfig::new().with_beta_1(1.0).build();
    }

    #[test]
    #[should_panic(expected = "epsilon must be finite and positive")]
    fn invalid_epsilon_is_rejected() {
        ShiftAdaMaxConfig::new().with_epsilon(0.0).build();
    }

    fn linear() -> Linear<AB> {
        let device = Default::default();
        let record = LinearRecord {
            weight: Param::from_data(
                TensorData::from([[0.3f32, -0.2], [0.1, 0.4], [-0.5, 0.25]]),
                &device,
            ),
            bias: Some(Param::from_data(TensorData::from([0.05f32, -0.1]), &device)),
        };
        LinearConfig::new(3, 2)
            .init::<AB>(&device)
            .load_record(record)
    }

    fn regression_loss(model: &Linear<AB>) -> Tensor<AB, 1> {
        let device = Default::default();
        let x = Tensor::<AB, 2>::from_data(
            TensorData::from([
                [1.0f32, 0.5, -1.0],
                [0.2, -0.3, 0.8],
                [-0.7, 1.1, 0.4],
                [0.0, -1.0, 0.5],
            ]),
            &device,
        );
        let y = Tensor::<AB, 2>::from_data(
            TensorData::from([[1.0f32, -1.0], [0.5, 0.0], [-0.5, 1.0], [0.25, 0.75]]),
            &device,
        );
        MseLoss::new().forward(model.forward(x), y, Reduction::Mean)
    }

    fn scalar(t: Tensor<AB, 1>) -> f32 {
        t.into_data().to_vec::<f32>().unwrap()[0]
    }

    fn train_step(
        optim: &mut OptimizerAdaptor<ShiftAdaMax, Linear<AB>, AB>,
        model: Linear<AB>,
    ) -> Linear<AB> {
        let loss = regression_loss(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(0.01, model, grads)
    }

    #[test]
    fn optimizer_step_decreases_loss_on_linear() {
        let mut optim = ShiftAdaMaxConfig::new().init::<AB, Linear<AB>>();
        let mut model = linear();
        let initial = scalar(regression_loss(&model));
        for _ in 0..100 {
            model = train_step(&mut optim, model);
        }
        let trained = scalar(regression_loss(&model));
        assert!(trained.is_finite());
        assert!(
            trained < 0.5 * initial,
            "loss should decrease: {initial} -> {trained}"
        );
    }

    #[test]
    fn optimizer_state_save_load_round_trip() {
        let mut optim = ShiftAdaMaxConfig::new().init::<AB, Linear<AB>>();
        let mut model = linear();
        for _ in 0..3 {
            model = train_step(&mut optim, model);
        }

        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(optim.to_record(), ()).unwrap();
        let record = recorder.load(bytes, &Default::default()).unwrap();
        let mut restored = ShiftAdaMaxConfig::new()
            .init::<AB, Linear<AB>>()
            .load_record(record);
        assert_eq!(restored.to_record().len(), optim.to_record().len());

        // The restored optimizer continues exactly like the original one.
        let a = train_step(&mut optim, model.clone());
        let b = train_step(&mut restored, model);
        let (a, b) = (a.into_record(), b.into_record());
        assert_eq!(a.weight.val().into_data(), b.weight.val().into_data());
        assert_eq!(
            a.bias.unwrap().val().into_data(),
            b.bias.unwrap().val().into_data()
        );
    }

    #[test]
    fn state_record_round_trip() {
        let device = Default::default();
        let state = ShiftAdaMaxState::<B, 1>::new(7, tensor1(&[0.5, -1.0]), tensor1(&[2.0, 3.0]));
        let item = state.into_item::<FullPrecisionSettings>();
        let restored = ShiftAdaMaxState::<B, 1>::from_item::<FullPrecisionSettings>(item, &device);
        assert_eq!(restored.time, 7);
        assert_eq!(values(restored.moment), [0.5, -1.0]);
        assert_eq!(values(restored.inf_norm), [2.0, 3.0]);
    }
}
