//! A model of your own, from training to deployment: a small residual binary network (not one
//! of `burn_qnn::models`) trained on the bundled 8×8 digits, packed, saved, reloaded into a
//! fresh model and evaluated.
//!
//! The model mixes the crate's layers with Burn's: an 8-bit bit-plane input block
//! (`BitPlaneConvBlock`: the convolution, its batch norm and sign), a binary convolution block
//! (`BinaryConvBlock`) whose signs are added back to its input (a residual connection), max
//! pooling, a binary fully connected block (`BinaryLinearBlock`) and a binary output layer with
//! Burn's batch norm. Outside training, the blocks fold their batch norm into the product,
//! which writes the signs as bits; the stem's bits go into the convolution block as they are.
//! `burn_qnn::inference::save_packed` writes the model with the weights as bits; `load_packed` reads them into a freshly initialized
//! model of the same type, which then gives exactly the trained model's outputs.
//!
//! ```text
//! cargo run --release --example custom_model -- --out runs/custom
//! ```
//!
//! It prints the accuracies, file sizes and inference speed, and writes them to
//! `--out DIR/results.json` (`test_accuracy`, `packed_test_accuracy`, `f32_model_bytes`,
//! `packed_model_bytes`, `packed_speedup`, ...), with the packed model in `DIR/model.mpk`.

use std::{path::PathBuf, time::Instant};

use burn::{
    backend::{Autodiff, NdArray},
    module::Module,
    nn::{BatchNorm, BatchNormConfig, PaddingConfig2d},
    prelude::*,
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    data::{ImageBatch, digits},
    inference::{load_packed, save_packed},
    learner::classification_output,
    nn::{
        BinaryConv2dConfig, BinaryConvBlock, BinaryConvBlockConfig, BinaryLinear,
        BinaryLinearBlock, BinaryLinearBlockConfig, BinaryLinearConfig, BitPlaneConv2dConfig,
        BitPlaneConvBlock, BitPlaneConvBlockConfig, max_pool2d,
    },
    quant::{Bits, GradRounding},
    train::{TrainOptions, accuracy, fit, time_per_batch},
};
use burn_train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use clap::Parser;
use packed_report::{check_same_accuracy, f32_record_bytes};

#[path = "common/packed_report.rs"]
mod packed_report;

/// Train, pack, save, reload and evaluate a residual binary network on the bundled digits.
#[derive(Parser, Debug)]
struct Args {
    /// Folder for `results.json` and the packed model `model.mpk`.
    #[arg(long, default_value = "runs/custom_model")]
    out: PathBuf,
    /// Passes over the training images.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Channels of the convolutions.
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Seed of the initialization and of the data order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Quantize the binary layers' output gradients to K bits (2 to 8) in the backward pass;
    /// `--grad-bits` alone means the paper's 6. Off by default (f32 gradients)
    #[arg(long, value_name = "K", num_args = 0..=1, default_missing_value = "6", value_parser = grad_bits)]
    grad_bits: Option<Bits>,
    /// Round the quantized gradients stochastically instead of to the nearest level (needs
    /// `--grad-bits`)
    #[arg(long, requires = "grad_bits")]
    stochastic_rounding: bool,
}

/// A gradient width of `--grad-bits`: 2 to 8.
fn grad_bits(text: &str) -> Result<Bits, String> {
    let k: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if !(2..=8).contains(&k) {
        return Err(format!("{k} bits: 2 to 8 are possible"));
    }
    Bits::new(k).map_err(|e| e.to_string())
}

/// Units of the hidden fully connected layer.
const HIDDEN: usize = 256;

/// The model: what a user would write for their own network.
#[derive(Module, Debug)]
struct ResidualNet<B: QnnBackend> {
    stem: BitPlaneConvBlock<B>,
    block: BinaryConvBlock<B>,
    hidden: BinaryLinearBlock<B>,
    output: BinaryLinear<B>,
    output_norm: BatchNorm<B>,
}

impl<B: QnnBackend> ResidualNet<B> {
    /// The model with `channels` channels; its binary layers quantize their output gradients
    /// as `gradients` says (`None`: f32).
    fn new(channels: usize, gradients: Option<(Bits, GradRounding)>, device: &B::Device) -> Self {
        let (grad_bits, grad_rounding) = match gradients {
            Some((bits, rounding)) => (Some(bits), rounding),
            None => (None, GradRounding::Nearest),
        };
        let same = PaddingConfig2d::Explicit(1, 1, 1, 1);
        Self {
            // Batch norm follows every layer: it has the layers' biases already.
            stem: BitPlaneConvBlockConfig::new(
                BitPlaneConv2dConfig::new([1, channels], [3, 3])
                    .with_padding(same.clone())
                    .with_bias(false),
            )
            .init(device),
            block: BinaryConvBlockConfig::new(
                BinaryConv2dConfig::new([channels, channels], [3, 3])
                    .with_padding(same)
                    .with_bias(false)
                    .with_grad_bits(grad_bits)
                    .with_grad_rounding(grad_rounding),
            )
            .init(device),
            hidden: BinaryLinearBlockConfig::new(
                BinaryLinearConfig::new(channels * 4 * 4, HIDDEN)
                    .with_bias(false)
                    .with_grad_bits(grad_bits)
                    .with_grad_rounding(grad_rounding),
            )
            .init(device),
            output: BinaryLinearConfig::new(HIDDEN, 10)
                .with_bias(false)
                .with_grad_bits(grad_bits)
                .with_grad_rounding(grad_rounding)
                .init(device),
            output_norm: BatchNormConfig::new(10).init(device),
        }
    }
}

impl<B: QnnBackend> ResidualNet<B> {
    /// `[N, 1, 8, 8]` images in `[−1, 1]` → `[N, 10]` scores.
    fn classify(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        // Outside training on the CPU, the stem's signs are bits, which the block reads as they
        // are; the residual addition takes them as `±1` tensors.
        let x = self.stem.forward_signs(images);
        let residual = self.block.forward_signs(x.clone());
        let x = max_pool2d(x.into_tensor() + residual.into_tensor(), [2, 2], [2, 2]);
        let x = x.flatten::<2>(1, 3);
        let x = self.hidden.forward(x);
        self.output_norm.forward(self.output.forward(x))
    }
}

// burn-train's step traits, which `fit` trains with: the squared hinge loss of the scores.
impl<B: QnnAutodiffBackend> TrainStep for ResidualNet<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let output = classification_output(self.classify(batch.images), batch.targets);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<B: QnnBackend> InferenceStep for ResidualNet<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        classification_output(self.classify(batch.images), batch.targets)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    burn_qnn::memory::keep_freed_memory();
    if let Err(e) = burn_qnn::threads::use_this_thread() {
        eprintln!("warning: {e}");
    }
    let args = Args::parse();
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let data = digits::train_test_split(digits::load_bundled()?, 0.25, 7);
    println!(
        "scikit-learn digits: {} training and {} test images of 8×8 pixels",
        data.train.len(),
        data.test.len()
    );

    B::seed(&device, args.seed);
    let rounding = if args.stochastic_rounding {
        GradRounding::Stochastic
    } else {
        GradRounding::Nearest
    };
    let gradients = args.grad_bits.map(|bits| (bits, rounding));
    let model = ResidualNet::<B>::new(args.channels, gradients, &device);
    println!("training for {} epochs:\n{model}", args.epochs);
    let options = TrainOptions::new()
        .with_epochs(args.epochs)
        .with_batch_size(32)
        .with_initial_lr(1e-2)
        .with_final_lr(1e-4)
        .with_seed(args.seed);
    let start = Instant::now();
    let (model, _) = fit(model, &data.train, None, &options)?;
    let training_seconds = start.elapsed().as_secs_f64();
    let test_accuracy = accuracy(|x| model.classify(x), &data.test, 512, &device);
    println!(
        "trained in {training_seconds:.1} s: test accuracy {:.2}%",
        100.0 * test_accuracy
    );

    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("model.mpk");
    save_packed(&model, &path)?;
    let packed_model_bytes = std::fs::metadata(&path)?.len();
    let f32_model_bytes = f32_record_bytes(model.clone());
    let packed = load_packed(
        ResidualNet::<NdArray>::new(args.channels, gradients, &device),
        &path,
        &device,
    )?;
    let packed_test_accuracy = accuracy(|x| packed.classify(x), &data.test, 512, &device);

    let float_time = time_per_batch(|x| model.classify(x), &data.test, 256, 20, &device);
    let packed_time = time_per_batch(|x| packed.classify(x), &data.test, 256, 20, &device);
    let packed_speedup = float_time.as_secs_f64() / packed_time.as_secs_f64();

    println!(
        "packed model {} reloaded: test accuracy {:.2}%",
        path.display(),
        100.0 * packed_test_accuracy
    );
    println!(
        "model file: {:.1} KiB in f32, {:.1} KiB packed ({:.1}× smaller)",
        f32_model_bytes as f64 / 1024.0,
        packed_model_bytes as f64 / 1024.0,
        f32_model_bytes as f64 / packed_model_bytes as f64
    );
    println!(
        "inference of 256 images: {:.2} ms trained model, {:.2} ms packed ({packed_speedup:.2}×)",
        float_time.as_secs_f64() * 1e3,
        packed_time.as_secs_f64() * 1e3,
    );

    let results = serde_json::json!({
        "epochs": args.epochs,
        "channels": args.channels,
        "seed": args.seed,
        "grad_bits": args.grad_bits.map(|bits| bits.get()),
        "grad_rounding": gradients.map(|(_, rounding)| format!("{rounding:?}").to_lowercase()),
        "training_seconds": training_seconds,
        "test_accuracy": test_accuracy,
        "packed_test_accuracy": packed_test_accuracy,
        "f32_model_bytes": f32_model_bytes,
        "packed_model_bytes": packed_model_bytes,
        "packed_speedup": packed_speedup,
        "inference_ms_256": float_time.as_secs_f64() * 1e3,
        "packed_inference_ms_256": packed_time.as_secs_f64() * 1e3,
    });
    let results_path = args.out.join("results.json");
    burn_qnn::io::write_atomic(
        &results_path,
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    println!("results written to {}", results_path.display());
    check_same_accuracy(test_accuracy, packed_test_accuracy, &data.test)
}
