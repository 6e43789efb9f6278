//! Quick start: a classifier whose weights and inputs are binary (±1), trained with Burn's Adam
//! through the straight-through estimator of `burn_qnn::quant::sign`.
//!
//! The data are noisy copies of a few random ±1 patterns, one per class (30 % of the bits
//! flipped). The classifier learns latent real weights that it binarizes in every forward pass
//! and clips to [−1, 1] after every step (as in the BNN paper); it ends with 1 bit per weight,
//! and those bits recover the class patterns.
//!
//! ```text
//! cargo run --release --example quickstart                      # NdArray (CPU)
//! cargo run --release --features wgpu --example quickstart -- --backend wgpu
//! ```

use burn::{
    backend::{Autodiff, NdArray},
    module::{Module, Param},
    nn::loss::CrossEntropyLossConfig,
    optim::{AdamConfig, GradientsParams, Optimizer},
    prelude::ElementConversion,
    tensor::{Distribution, Int, Tensor, backend::Backend},
};
use burn_qnn::{QnnAutodiffBackend, QnnBackend, quant};

const FEATURES: usize = 64;
const CLASSES: usize = 4;
const TRAIN: usize = 8192;
const TEST: usize = 1024;
const BATCH: usize = 128;
const EPOCHS: usize = 6;
const LEARNING_RATE: f64 = 0.01;

/// One binary fully connected layer with a learned scale per class:
/// `(sign(x) · sign(W)) ⊙ α / sqrt(FEATURES)`.
#[derive(Module, Debug)]
struct BinaryClassifier<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    scale: Param<Tensor<B, 1>>,
}

impl<B: QnnBackend> BinaryClassifier<B> {
    fn new(device: &B::Device) -> Self {
        let latent = Tensor::random(
            [FEATURES, CLASSES],
            Distribution::Uniform(-0.1, 0.1),
            device,
        );
        Self {
            weight: Param::from_tensor(latent),
            scale: Param::from_tensor(Tensor::ones([CLASSES], device)),
        }
    }

    fn forward(&self, inputs: Tensor<B, 2>) -> Tensor<B, 2> {
        let weights = quant::sign(self.weight.val());
        quant::sign(inputs).matmul(weights) * self.scale.val().unsqueeze()
            / (FEATURES as f32).sqrt()
    }

    /// Clips the latent weights to [−1, 1] so they stay where the sign can still flip.
    fn clip_latent_weights(self) -> Self {
        Self {
            weight: self
                .weight
                .map(|w| w.clamp(-1.0, 1.0).detach().require_grad()),
            ..self
        }
    }
}

fn accuracy<B: QnnBackend>(outputs: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> f32 {
    let n = labels.dims()[0] as f32;
    let correct = outputs.argmax(1).squeeze::<1>().equal(labels).int().sum();
    correct.into_scalar().elem::<f32>() / n
}

/// The fraction of input bits flipped away from their class's pattern.
const NOISE: f64 = 0.3;

/// `n` noisy copies of the class patterns (each bit flipped with probability `NOISE`) and their
/// labels.
fn dataset<B: QnnBackend>(
    patterns: &Tensor<B, 2>,
    n: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let labels =
        Tensor::<B, 1, Int>::random([n], Distribution::Uniform(0.0, CLASSES as f64), device);
    let flips = quant::sign(
        Tensor::<B, 2>::random([n, FEATURES], Distribution::Uniform(0.0, 1.0), device) - NOISE,
    );
    let inputs = patterns.clone().select(0, labels.clone()) * flips;
    (inputs, labels)
}

fn train<B: QnnAutodiffBackend>(device: &B::Device) {
    B::seed(device, 2026);
    let patterns = quant::sign(Tensor::<B, 2>::random(
        [CLASSES, FEATURES],
        Distribution::Normal(0.0, 1.0),
        device,
    ));
    let (train_x, train_y) = dataset(&patterns, TRAIN, device);
    let (test_x, test_y) = dataset(&patterns, TEST, device);

    let mut model = BinaryClassifier::<B>::new(device);
    let mut optimizer = AdamConfig::new().init::<B, BinaryClassifier<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    println!("epoch   loss    train acc   test acc");
    for epoch in 1..=EPOCHS {
        let mut loss_sum = 0.0;
        for start in (0..TRAIN).step_by(BATCH) {
            let x = train_x.clone().narrow(0, start, BATCH);
            let y = train_y.clone().narrow(0, start, BATCH);
            let loss = loss_fn.forward(model.forward(x), y);
            loss_sum += loss.clone().into_scalar().elem::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer
                .step(LEARNING_RATE, model, grads)
                .clip_latent_weights();
        }
        let train_acc = accuracy(model.forward(train_x.clone()), train_y.clone());
        let test_acc = accuracy(model.forward(test_x.clone()), test_y.clone());
        let loss = loss_sum / (TRAIN / BATCH) as f32;
        println!(
            "{epoch:>5}   {loss:.4}   {:>8.1} %   {:>7.1} %",
            train_acc * 100.0,
            test_acc * 100.0
        );
    }

    let student = quant::sign(model.weight.val());
    let agreement = student
        .equal(patterns.transpose())
        .int()
        .sum()
        .into_scalar()
        .elem::<f32>()
        / (FEATURES * CLASSES) as f32;
    println!(
        "binary weights equal to the class patterns: {:.1} %",
        agreement * 100.0
    );
    let weights = FEATURES * CLASSES;
    println!(
        "weights: {} bytes as f32, {} bytes as bits ({}× smaller)",
        weights * 4,
        weights.div_ceil(8),
        weights * 4 / weights.div_ceil(8)
    );
}

fn main() {
    let backend = std::env::args()
        .skip_while(|arg| arg != "--backend")
        .nth(1)
        .unwrap_or_else(|| "ndarray".to_string());
    match backend.as_str() {
        "ndarray" => {
            println!("backend: NdArray (CPU)");
            train::<Autodiff<NdArray>>(&Default::default());
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            println!("backend: Wgpu");
            train::<Autodiff<burn::backend::Wgpu>>(&Default::default());
        }
        other => {
            eprintln!(
                "unknown backend {other:?}: use ndarray{}",
                if cfg!(feature = "wgpu") {
                    " or wgpu"
                } else {
                    " (or build with --features wgpu for wgpu)"
                }
            );
            std::process::exit(2);
        }
    }
}
