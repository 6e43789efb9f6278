//! Squared hinge loss, the training criterion of the BNN paper (Hubara, Courbariaux et al.).
//!
//! For network outputs `y` of shape `[N, C]` and targets `t ∈ {−1, +1}` of the same shape (`+1`
//! at the target class, `−1` elsewhere), the loss is the mean over all `N · C` entries of
//!
//! ```text
//! max(0, 1 − t·y)²
//! ```

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

/// Configuration to create a [squared hinge loss](SquaredHingeLoss) using the
/// [init function](SquaredHingeLossConfig::init).
///
/// The loss has no hyper-parameters (the margin is 1, as in the paper); the config exists so the
/// loss is built like Burn's other criteria.
#[derive(Config, Debug)]
pub struct SquaredHingeLossConfig {}

impl SquaredHingeLossConfig {
    /// Initialize a [squared hinge loss](SquaredHingeLoss).
    pub fn init(&self) -> SquaredHingeLoss {
        SquaredHingeLoss
    }
}

/// Squared hinge loss: `mean(max(0, 1 − t·y)²)` over all `N · C` entries.
///
/// `t` is `+1` at the target class and `−1` elsewhere. Should be created with
/// [`SquaredHingeLossConfig`]; it holds no parameters and can be a field of a [`Module`].
#[derive(Module, Clone, Debug)]
pub struct SquaredHingeLoss;

impl Default for SquaredHingeLoss {
    fn default() -> Self {
        SquaredHingeLossConfig::new().init()
    }
}

impl SquaredHingeLoss {
    /// Compute the loss from class-index targets.
    ///
    /// The targets are turned into `±1` one-hot rows (`+1` at the target class, `−1`
    /// elsewhere) and [`forward_signed`](Self::forward_signed) is applied.
    ///
    /// # Shapes
    ///
    /// - outputs: `[batch_size, num_classes]`
    /// - targets: `[batch_size]`, class indices in `0..num_classes`
    /// - result: `[1]`
    ///
    /// # Panics
    ///
    /// If the batch sizes of `outputs` and `targets` differ or `outputs` is empty. A target
    /// outside `0..num_classes` is an error whose handling depends on the backend (it may
    /// panic).
    pub fn forward<B: Backend>(
        &self,
        outputs: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let [batch_size, num_classes] = outputs.dims();
        let [targets_size] = targets.dims();
        assert!(
            batch_size == targets_size,
            "Squared hinge loss: shape of targets ({targets_size}) should correspond to the outer \
             shape of outputs ({batch_size})."
        );
        let targets_pm1 = Self::signed_one_hot(targets, num_classes, &outputs.device());
        self.forward_signed(outputs, targets_pm1)
    }

    /// Compute the loss from `±1` targets.
    ///
    /// # Shapes
    ///
    /// - outputs: `[batch_size, num_classes]`
    /// - targets_pm1: `[batch_size, num_classes]`, `+1` at the target class and `−1` elsewhere
    ///   (other values are used as given)
    /// - result: `[1]`
    ///
    /// # Panics
    ///
    /// If the shapes of `outputs` and `targets_pm1` differ or `outputs` is empty.
    pub fn forward_signed<B: Backend>(
        &self,
        outputs: Tensor<B, 2>,
        targets_pm1: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        self.forward_no_reduction(outputs, targets_pm1).mean()
    }

    /// Compute the elementwise loss `max(0, 1 − t·y)²` from `±1` targets, without reducing.
    ///
    /// # Shapes
    ///
    /// - outputs: `[batch_size, num_classes]`
    /// - targets_pm1: `[batch_size, num_classes]`
    /// - result: `[batch_size, num_classes]`
    ///
    /// # Panics
    ///
    /// If the shapes of `outputs` and `targets_pm1` differ or `outputs` is empty.
    pub fn forward_no_reduction<B: Backend>(
        &self,
        outputs: Tensor<B, 2>,
        targets_pm1: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let outputs_dims = outputs.dims();
        let targets_dims = targets_pm1.dims();
        assert!(
            outputs_dims == targets_dims,
            "Squared hinge loss: shape of targets {targets_dims:?} should match the shape of \
             outputs {outputs_dims:?}."
        );
        assert!(
            outputs_dims[0] > 0 && outputs_dims[1] > 0,
            "Squared hinge loss: outputs must not be empty, got shape {outputs_dims:?}."
        );
        outputs
            .mul(targets_pm1)
            .neg()
            .add_scalar(1.0)
            .clamp_min(0.0)
            .square()
    }

    /// `±1` one-hot rows: `+1` at `targets[i]`, `−1` elsewhere.
    fn signed_one_hot<B: Backend>(
        targets: Tensor<B, 1, Int>,
        num_classes: usize,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let [batch_size] = targets.dims();
        let one_hot = Tensor::<B, 2>::zeros([batch_size, num_classes], device).scatter(
            1,
            targets.reshape([batch_size, 1]),
            Tensor::ones([batch_size, 1], device),
            IndexingUpdateOp::Add,
        );
        one_hot.mul_scalar(2.0).sub_scalar(1.0)
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;

    type B = NdArray;
    type AB = Autodiff<NdArray>;

    /// Small deterministic generator (xorshift) for test data.
    struct Rng(u64);

    impl Rng {
        fn next_f32(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }

        fn below(&mut self, n: usize) -> usize {
            ((self.next_f32() + 1.0) * 0.5 * n as f32) as usize % n
        }
    }

    /// Random outputs in `[-2, 2)` and class indices.
    fn random_case(seed: u64, n: usize, c: usize) -> (Vec<f32>, Vec<i64>) {
        let mut rng = Rng(seed);
        let outputs = (0..n * c).map(|_| 2.0 * rng.next_f32()).collect();
        let targets = (0..n).map(|_| rng.below(c) as i64).collect();
        (outputs, targets)
    }

    fn signed(targets: &[i64], c: usize) -> Vec<f32> {
        targets
            .iter()
            .flat_map(|&k| (0..c).map(move |j| if j as i64 == k { 1.0 } else { -1.0 }))
            .collect()
    }

    /// Plain-loop reference of the loss.
    fn ref_loss(outputs: &[f32], t: &[f32]) -> f32 {
        let total: f32 = outputs
            .iter()
            .zip(t)
            .map(|(y, t)| (1.0 - t * y).max(0.0).powi(2))
            .sum();
        total / outputs.len() as f32
    }

    /// Hand-derived gradient: `−2·t·max(0, 1 − t·y) / (N·C)`.
    fn ref_grad(outputs: &[f32], t: &[f32]) -> Vec<f32> {
        let count = outputs.len() as f32;
        outputs
            .iter()
            .zip(t)
            .map(|(y, t)| -2.0 * t * (1.0 - t * y).max(0.0) / count)
            .collect()
    }

    fn outputs_tensor<BK: Backend>(values: &[f32], n: usize, c: usize) -> Tensor<BK, 2> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [n, c]),
            &Default::default(),
        )
    }

    fn targets_tensor<BK: Backend>(values: &[i64]) -> Tensor<BK, 1, Int> {
        Tensor::from_data(TensorData::from(values), &Default::default())
    }

    fn scalar<BK: Backend>(t: Tensor<BK, 1>) -> f32 {
        t.into_data().to_vec::<f32>().unwrap()[0]
    }

    fn assert_close(a: f32, e: f32, what: &str) {
        assert!(
            (a - e).abs() <= 1e-6 * e.abs().max(1.0),
            "{what}: {a} vs {e}"
        );
    }

    #[test]
    fn hand_computed_value() {
        // Rows: target 0 and target 1.
        // t·y = [0.5, 1.0, 2.0 | 3.0, -1.0, 0.0] -> margins [0.5, 0, 0 | 0, 2, 1]
        let outputs = [0.5, -1.0, -2.0, -3.0, -1.0, 0.0];
        let loss = SquaredHingeLossConfig::new().init().forward(
            outputs_tensor::<B>(&outputs, 2, 3),
            targets_tensor::<B>(&[0, 1]),
        );
        assert_close(scalar(loss), (0.25 + 4.0 + 1.0) / 6.0, "loss");
    }

    #[test]
    fn values_match_reference_on_random_data() {
        let loss = SquaredHingeLossConfig::new().init();
        for (seed, n, c) in [(1, 8, 10), (7, 3, 2), (42, 16, 5), (99, 1, 7)] {
            let (outputs, targets) = random_case(seed, n, c);
            let t = signed(&targets, c);
            let expected = ref_loss(&outputs, &t);

            let from_indices = loss.forward(
                outputs_tensor::<B>(&outputs, n, c),
                targets_tensor::<B>(&targets),
            );
            assert_close(scalar(from_indices), expected, "forward");

            let from_signed = loss.forward_signed(
                outputs_tensor::<B>(&outputs, n, c),
                outputs_tensor::<B>(&t, n, c),
            );
            assert_close(scalar(from_signed), expected, "forward_signed");

            let elementwise = loss
                .forward_no_reduction(
                    outputs_tensor::<B>(&outputs, n, c),
                    outputs_tensor::<B>(&t, n, c),
                )
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            for (i, (y, t)) in outputs.iter().zip(&t).enumerate() {
                assert_close(
                    elementwise[i],
                    (1.0 - t * y).max(0.0).powi(2),
                    "elementwise",
                );
            }
        }
    }

    #[test]
    fn gradient_matches_analytic_derivative() {
        let loss = SquaredHingeLossConfig::new().init();
        for (seed, n, c) in [(3, 6, 4), (11, 10, 10)] {
            let (outputs, targets) = random_case(seed, n, c);
            let t = signed(&targets, c);
            let expected = ref_grad(&outputs, &t);
            assert!(expected.iter().any(|g| *g != 0.0));
            assert!(expected.contains(&0.0) || n * c < 20);

            let y = outputs_tensor::<AB>(&outputs, n, c).require_grad();
            let grads = loss
                .forward(y.clone(), targets_tensor::<AB>(&targets))
                .backward();
            let grad = y.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            for (i, (g, e)) in grad.iter().zip(&expected).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-6 * e.abs().max(1e-3),
                    "grad[{i}]: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn perfect_margin_gives_zero_loss_and_zero_gradient() {
        let loss = SquaredHingeLossConfig::new().init();
        // t·y ≥ 1 everywhere, including exactly 1 (the hinge point).
        let outputs = [1.0, -1.0, -3.0, -1.5, 2.0, -1.0];
        let y = outputs_tensor::<AB>(&outputs, 2, 3).require_grad();
        let value = loss.forward(y.clone(), targets_tensor::<AB>(&[0, 1]));
        let grads = value.clone().backward();
        assert_eq!(scalar(value), 0.0);
        let grad = y.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        assert!(grad.iter().all(|g| *g == 0.0), "gradient {grad:?}");
    }

    #[test]
    #[should_panic(
        expected = "shape of targets (3) should correspond to the outer shape of outputs (2)"
    )]
    fn batch_size_mismatch_panics() {
        SquaredHingeLossConfig::new().init().forward(
            outputs_tensor::<B>(&[0.0; 6], 2, 3),
            targets_tensor::<B>(&[0, 1, 2]),
        );
    }

    #[test]
    #[should_panic(expected = "shape of targets [2, 2] should match the shape of outputs [2, 3]")]
    fn signed_shape_mismatch_panics() {
        SquaredHingeLossConfig::new().init().forward_signed(
            outputs_tensor::<B>(&[0.0; 6], 2, 3),
            outputs_tensor::<B>(&[1.0; 4], 2, 2),
        );
    }

    #[test]
    #[should_panic(expected = "outputs must not be empty")]
    fn empty_batch_panics() {
        SquaredHingeLossConfig::new()
            .init()
            .forward(outputs_tensor::<B>(&[], 0, 3), targets_tensor::<B>(&[]));
    }

    #[test]
    fn usable_as_module_field() {
        #[derive(Module, Debug)]
        struct Classifier<B: Backend> {
            linear: burn::nn::Linear<B>,
            loss: SquaredHingeLoss,
        }
        let device = Default::default();
        let model = Classifier::<B> {
            linear: burn::nn::LinearConfig::new(4, 2).init(&device),
            loss: SquaredHingeLossConfig::new().init(),
        };
        assert_eq!(model.num_params(), 4 * 2 + 2);
        let value = model.loss.forward(
            outputs_tensor::<B>(&[2.0, -2.0], 1, 2),
            targets_tensor::<B>(&[0]),
        );
        assert_eq!(scalar(value), 0.0);
    }
}
