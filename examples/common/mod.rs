//! What the `cifar10`, `svhn` and `mnist` examples share: the command line, training with
//! burn-train's learner (loss, accuracy and learning-rate metrics, a checkpoint of model,
//! optimizer and schedule after each epoch, `--resume`), the packed form, measurements and the
//! JSON report.
//!
//! The training recipe is the one of the BNN paper (Hubara, Courbariaux et al., *Binarized
//! Neural Networks*, NIPS 2016) and of the authors' Theano code (BinaryNet, `Train-time/`):
//! Adam (`ε = 1e-8`, Lasagne's default), the squared hinge loss, the learning rate decaying
//! exponentially from `--lr` to `--final-lr` (the scripts' `LR_start` and `LR_fin`; here at every
//! step, the scripts once per epoch), the scripts' batch sizes and epochs, latent weights
//! initialised uniform on `[−1, 1]` and clipped to it after each step, their per-layer Glorot
//! learning-rate scale (`W_LR_scale = "Glorot"`; `--lr-scale none` turns it off), batch norm
//! after every layer (`α = 0.1`, `ε = 1e-4`) and inputs scaled to `[−1, 1]`.

mod unknown_backend;

use std::{
    path::{Path, PathBuf},
    sync::PoisonError,
    time::Instant,
};

use burn::{
    backend::{Autodiff, NdArray},
    data::dataloader::DataLoaderBuilder,
    module::Module,
    optim::Optimizer,
    record::{FullPrecisionSettings, NamedMpkFileRecorder},
    tensor::Device,
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    data::{ImageBatcher, ImageDataset, TrainTest, ValidationSize},
    inference::PackedNet,
    learner::{
        AtomicFileRecorder, CheckpointError, ClipLatentWeights, EpochMetrics, EpochSummaryRenderer,
        FlipCounter, FlipRatioMetric, TrackFlips, best_valid_epoch, data_parallel,
        keep_last_and_best, last_checkpoint, load_checkpoint_model, optimizer_steps_per_epoch,
        restore_checkpoint, resumable_metric_logger, summary_history,
    },
    models::{Net, NetConfig, Precision},
    nn::LatentLrScale,
    optim::{BopConfig, FusedAdamConfig, decay_over_run},
    quant::{Bits, GradRounding},
    train::{accuracy, time_per_batch},
};
use burn_train::{
    Learner, SupervisedTraining,
    metric::{AccuracyMetric, LearningRateMetric, LossMetric, Metric},
};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde_json::json;
use unknown_backend::unknown_backend;

/// Command-line options. The defaults that depend on the data set (the authors' script for
/// it) are set by [`parse`] from its [`Defaults`], so that `--help` shows them.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Trains one of the paper's binarized networks with its recipe: Adam, squared hinge \
             loss, exponential learning-rate decay, latent weights uniform on [-1, 1] and \
             clipped to it, their Glorot learning-rate scale."
)]
pub struct Args {
    /// Folder with the data set's official files
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Training epochs
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub epochs: usize,
    /// Images per step (at most 4096)
    #[arg(long, value_name = "N", value_parser = batch_size)]
    pub batch_size: usize,
    /// Initial learning rate
    #[arg(long, value_name = "X", value_parser = positive_number)]
    pub lr: f64,
    /// Learning rate reached at the last step; it decays exponentially at every step
    #[arg(long, value_name = "X", value_parser = positive_number)]
    pub final_lr: f64,
    /// Per-layer learning-rate scale of the binary layers' latent weights: glorot (as the
    /// authors' code: 1/sqrt(1.5/(fan_in + fan_out))) or none
    #[arg(long, value_name = "S", default_value = "glorot")]
    pub lr_scale: LatentLrScale,
    /// Width multiplier of the network (above 0, at most 4)
    #[arg(long, value_name = "X", default_value = "1", value_parser = width)]
    pub width: f64,
    /// Quantize each binary layer's output gradient to K bits (2 to 8) in the backward pass,
    /// the paper's bit-wise gradients (it uses 6); the gradient products then run exactly in
    /// integers. Off by default (f32 gradients); `--grad-bits` alone means 6
    #[arg(long, value_name = "K", num_args = 0..=1, default_missing_value = "6", value_parser = grad_bits)]
    pub grad_bits: Option<Bits>,
    /// Round the quantized gradients stochastically (unbiased) instead of to the nearest level
    /// (needs `--grad-bits`)
    #[arg(long, requires = "grad_bits")]
    pub stochastic_rounding: bool,
    /// ndarray, flex (Burn's Flex CPU backend, needs `--features flex`), wgpu (needs
    /// `--features wgpu`) or cuda (needs `--features cuda`)
    #[arg(long, value_name = "B", default_value = "ndarray")]
    pub backend: String,
    /// Seed of initialization and shuffles
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N training images
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Images held out of training for validation (default: the data set's, but at most a
    /// tenth of the training images; [`command`] writes the number into the help); an N that
    /// leaves no training images is an error
    #[arg(long, value_name = "N")]
    pub valid: Option<usize>,
    /// Where checkpoints, models and results.json go
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Train the same network in full precision
    #[arg(long)]
    pub float: bool,
    /// Never download missing files (`download` is false then)
    #[arg(long = "no-download", action = ArgAction::SetFalse)]
    pub download: bool,
    /// Continue from the last checkpoint in --out (model, optimizer state, learning-rate
    /// schedule)
    #[arg(long)]
    pub resume: bool,
    /// (SVHN) also train on extra_32x32.mat
    #[arg(long)]
    pub extra: bool,
    /// Data-parallel workers (burn-train's multi-device strategy): each round trains N batches
    /// side by side and sums their gradients for one optimizer step. On ndarray and flex they
    /// share the one CPU device (no faster than one worker); wgpu and cuda support 1
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub devices: usize,
    /// Also log the flip ratio of each binary layer (the share of its weights whose sign a
    /// step changed), beside that of all binary layers
    #[arg(long)]
    pub layer_flips: bool,
    /// How the binary layers' weights learn: adam (latent weights, the paper's recipe) or bop
    /// (Bop flips their signs, Helwegen et al. 2019; the other parameters keep Adam and
    /// --lr)
    #[arg(long, value_name = "O", default_value = "adam")]
    pub optimizer: BinaryOptimizer,
    /// (bop) The adaptivity rate γ of Bop's gradient average, in (0, 1]
    #[arg(long, value_name = "X", default_value_t = 1e-4, value_parser = bop_gamma)]
    pub bop_gamma: f64,
    /// (bop) The threshold τ Bop's gradient average must pass for a weight to flip
    #[arg(long, value_name = "X", default_value_t = 1e-8, value_parser = non_negative_number)]
    pub bop_threshold: f64,
}

/// How the binary layers' weights learn (`--optimizer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BinaryOptimizer {
    /// Latent weights with Adam, their lr scaled per layer and clipped to [−1, 1].
    Adam,
    /// Bop for the binary weights, Adam for the others.
    Bop,
}

/// The defaults of one data set: those of the authors' training script for it.
pub struct Defaults {
    pub name: &'static str,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub final_lr: f64,
    /// Validation images, at most (never more than a tenth of the training images).
    pub valid: usize,
}

/// A count of at least 1.
fn positive_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be positive".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The largest `--batch-size`: far above the paper's 50 and 100, far below what aborts on an
/// allocation (a batch of a huge size is allocated whole, as images and activations).
pub const MAX_BATCH_SIZE: usize = 4096;

/// The largest `--width`: four times the paper's networks (their weights and activations grow
/// with its square).
pub const MAX_WIDTH: f64 = 4.0;

/// A batch size from 1 to [`MAX_BATCH_SIZE`].
fn batch_size(text: &str) -> Result<usize, String> {
    match positive_count(text)? {
        n if n > MAX_BATCH_SIZE => Err(format!("must be at most {MAX_BATCH_SIZE}, not {n}")),
        n => Ok(n),
    }
}

/// A width multiplier above 0 and at most [`MAX_WIDTH`].
fn width(text: &str) -> Result<f64, String> {
    match positive_number(text)? {
        x if x > MAX_WIDTH => Err(format!("must be at most {MAX_WIDTH}, not {x}")),
        x => Ok(x),
    }
}

/// The rounding of `--stochastic-rounding`.
fn grad_rounding(args: &Args) -> GradRounding {
    if args.stochastic_rounding {
        GradRounding::Stochastic
    } else {
        GradRounding::Nearest
    }
}

/// A gradient bit width of `--grad-bits`: 2 to 8 (1 bit would be the ternary grid of 2).
fn grad_bits(text: &str) -> Result<Bits, String> {
    match text.parse::<u32>() {
        Ok(k @ 2..=8) => Bits::new(k).map_err(|e| e.to_string()),
        Ok(k) => Err(format!("{k} bits: must be 2 to 8")),
        Err(e) => Err(e.to_string()),
    }
}

/// Bop's γ: in (0, 1].
fn bop_gamma(text: &str) -> Result<f64, String> {
    match positive_number(text)? {
        x if x > 1.0 => Err(format!("must be at most 1, not {x}")),
        x => Ok(x),
    }
}

/// A finite number of at least 0.
fn non_negative_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be non-negative and finite".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite number above 0.
fn positive_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be positive and finite".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `arg` with a default value: no longer required (the derive makes every field without a
/// default of its own required).
fn with_default(arg: clap::Arg, value: String) -> clap::Arg {
    arg.default_value(value).required(false)
}

/// The command line of the example `d.name`, with the data set's defaults.
fn command(d: &Defaults) -> clap::Command {
    let name = d.name;
    Args::command()
        .name(name)
        .bin_name(name)
        .override_usage(format!(
            "cargo run --release [--features wgpu] --example {name} -- [OPTIONS]"
        ))
        .mut_arg("data_dir", |a| with_default(a, format!("data/{name}")))
        .mut_arg("epochs", |a| with_default(a, d.epochs.to_string()))
        .mut_arg("batch_size", |a| with_default(a, d.batch_size.to_string()))
        .mut_arg("lr", |a| with_default(a, format!("{:e}", d.lr)))
        .mut_arg("final_lr", |a| with_default(a, format!("{:e}", d.final_lr)))
        .mut_arg("valid", |a| {
            a.help(format!(
                "Images held out of training for validation [default: {}, but at most a \
                 tenth of the training images]; an N that leaves no training images is an \
                 error",
                d.valid
            ))
        })
        .mut_arg("out", |a| with_default(a, format!("runs/{name}")))
}

/// Parses the command line, or exits with a message (status 2; `--help` and `--version`
/// print and exit with 0).
pub fn parse(defaults: &Defaults) -> Args {
    parse_from(defaults, std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the program name first), with the data set's defaults for what they omit.
pub fn parse_from<I, T>(defaults: &Defaults, args: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command(defaults).try_get_matches_from(args)?;
    Args::from_arg_matches(&matches)
}

/// Sets the process up for training on the CPU; call it first thing in `main`, before
/// anything runs in parallel.
///
/// - Each step frees and allocates the same large tensors: freed memory is kept for reuse
///   instead of faulting its pages in again (glibc; a no-op elsewhere).
/// - The training loop's thread (this one) becomes one of rayon's workers, so that the
///   kernels' parallel work starts on it at once (`burn_qnn::threads`).
pub fn prepare_process() {
    burn_qnn::memory::keep_freed_memory();
    if let Err(e) = burn_qnn::threads::use_this_thread() {
        eprintln!("warning: {e}");
    }
}

/// Runs the whole job on the backend the arguments name; on an error, prints it and exits
/// with status 1.
pub fn run(args: &Args, defaults: &Defaults, config: NetConfig, data: TrainTest) {
    if let Err(e) = run_backend(args, defaults, config, data) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run_backend(
    args: &Args,
    defaults: &Defaults,
    config: NetConfig,
    data: TrainTest,
) -> Result<(), Box<dyn std::error::Error>> {
    match args.backend.as_str() {
        "ndarray" => run_on::<Autodiff<NdArray>>(args, defaults, config, data),
        #[cfg(feature = "flex")]
        "flex" => run_on::<Autodiff<burn::backend::Flex>>(args, defaults, config, data),
        #[cfg(feature = "wgpu")]
        "wgpu" if args.devices > 1 => Err(format!(
            "--devices {}: Burn 0.21 cannot copy tensors between wgpu devices; train with \
             --devices 1 on wgpu",
            args.devices
        )
        .into()),
        #[cfg(feature = "wgpu")]
        "wgpu" => run_on::<Autodiff<burn::backend::Wgpu>>(args, defaults, config, data),
        #[cfg(feature = "cuda")]
        "cuda" if args.devices > 1 => Err(format!(
            "--devices {}: the examples train on one CUDA device; use --devices 1",
            args.devices
        )
        .into()),
        #[cfg(feature = "cuda")]
        "cuda" => run_on::<Autodiff<burn::backend::Cuda>>(args, defaults, config, data),
        other => Err(unknown_backend(other).into()),
    }
}

fn run_on<B: QnnAutodiffBackend>(
    args: &Args,
    defaults: &Defaults,
    config: NetConfig,
    data: TrainTest,
) -> Result<(), Box<dyn std::error::Error>> {
    let device: Device<B> = Default::default();
    let valid_size = match args.valid {
        Some(n) => ValidationSize::Exactly(n),
        None => ValidationSize::AtMost(defaults.valid),
    };
    let n_valid = valid_size
        .count(data.train.len())
        .map_err(|e| format!("--valid {}: {e}", e.requested))?;
    std::fs::create_dir_all(&args.out)?;
    let (mut train, valid) = data.train.shuffled(args.seed).split_validation(n_valid);
    if let Some(limit) = args.limit {
        train = train.take(limit);
    }
    if train.is_empty() {
        return Err("no training images left (check --limit and --valid)".into());
    }
    let test = data.test;
    println!(
        "{} training, {} validation, {} test images",
        train.len(),
        valid.len(),
        test.len()
    );
    let precision = if args.float {
        Precision::Float
    } else {
        Precision::Binary
    };
    let config = config
        .with_width(args.width)
        .with_precision(precision)
        .with_grad_bits(args.grad_bits)
        .with_grad_rounding(grad_rounding(args));
    if let Some(bits) = args.grad_bits {
        println!(
            "binary layers' output gradients quantized to {} bits, rounded {}",
            bits.get(),
            if args.stochastic_rounding {
                "stochastically"
            } else {
                "to the nearest level"
            }
        );
    }
    B::seed(&device, args.seed);
    let net = config.init::<B>(&device);
    println!("{}", net.summary());

    // The paper's recipe: Adam, the latent weights' updates scaled per layer (--lr-scale) and
    // the latent weights clipped after each step, the learning rate decaying exponentially at
    // every step from --lr to --final-lr.
    // With several workers, one optimizer step per round of their batches.
    let steps_per_epoch = optimizer_steps_per_epoch(train.len(), args.batch_size, args.devices);
    let flips = FlipCounter::new();
    let flip_metrics = match args.layer_flips {
        true => FlipRatioMetric::per_layer(&flips, &net),
        false => Vec::new(),
    };
    let mut logged = vec!["Loss", "Accuracy", "Learning Rate", "Flip Ratio"];
    let layer_names: Vec<String> = flip_metrics.iter().map(|m| m.name().to_string()).collect();
    logged.extend(layer_names.iter().map(String::as_str));
    let recorder = AtomicFileRecorder::new(NamedMpkFileRecorder::<FullPrecisionSettings>::new());
    // Adam's ε as Lasagne's default, the paper's framework.
    let adam = || FusedAdamConfig::new().with_epsilon(1e-8).init();
    let fitting = Fitting {
        args,
        device: &device,
        train: &train,
        valid: &valid,
        steps_per_epoch,
        recorder: &recorder,
        flips: flips.clone(),
        flip_metrics,
    };
    let fitted = match args.optimizer {
        BinaryOptimizer::Adam => {
            println!(
                "Adam, lr {:e} → {:e}, latent-weight lr scale {}",
                args.lr, args.final_lr, args.lr_scale
            );
            let optim = ClipLatentWeights::new(adam()).with_lr_scale(args.lr_scale);
            fitting.fit(net, TrackFlips::new(optim, flips))?
        }
        BinaryOptimizer::Bop => {
            println!(
                "Bop (γ {:e}, τ {:e}) for the binary weights, Adam (lr {:e} → {:e}) for the \
                 other parameters",
                args.bop_gamma, args.bop_threshold, args.lr, args.final_lr
            );
            let bop = BopConfig::new()
                .with_gamma(args.bop_gamma)
                .with_threshold(args.bop_threshold);
            fitting.fit(net, TrackFlips::new(bop.init(adam()), flips))?
        }
    };
    let (net, first_epoch, train_seconds) = (fitted.net, fitted.first_epoch, fitted.seconds);
    // The epoch means as burn-train's summary reads them from its logs (the renderer's
    // where it has none).
    let history = summary_history(&args.out, &logged, &fitted.history).unwrap_or(fitted.history);
    let last_epoch = history.last().map_or(first_epoch - 1, |e| e.epoch);
    let test_accuracy = accuracy(|x| net.forward(x), &test, 500, &device);
    println!(
        "test accuracy: {:.2}% (last epoch, {last_epoch})",
        100.0 * test_accuracy
    );
    // The paper reports the test error of the epoch with the best validation error: that
    // epoch's checkpoint is kept, and it is the model packed below.
    let best = match best_valid_epoch(&args.out) {
        Ok(Some((epoch, valid_accuracy))) => {
            let best_net = load_checkpoint_model(
                config.init::<B::InnerBackend>(&device),
                &args.out,
                epoch,
                &recorder,
                &device,
            )?;
            let best_test = accuracy(|x| best_net.forward(x), &test, 500, &device);
            println!(
                "best validation accuracy {valid_accuracy:.2}% at epoch {epoch}: test accuracy \
                 {:.2}%",
                100.0 * best_test
            );
            Some((epoch, valid_accuracy, best_test, best_net))
        }
        // No validation split, or no logs: the last epoch is all there is.
        Ok(None) | Err(_) => None,
    };

    let f32_path = args.out.join("model");
    net.clone().save_file(&f32_path, &recorder)?;
    let f32_bytes = std::fs::metadata(f32_path.with_extension("mpk"))?.len();
    let time_net = |batch| time_per_batch(|x| net.forward(x), &test, batch, 10, &device);
    let mut report = json!({
        "data_set": config_name(&args.data_dir),
        "precision": format!("{precision:?}"),
        "width": args.width,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "final_lr": args.final_lr,
        "lr_scale": args.lr_scale.to_string(),
        "optimizer": format!("{:?}", args.optimizer).to_lowercase(),
        "bop_gamma": (args.optimizer == BinaryOptimizer::Bop).then_some(args.bop_gamma),
        "bop_threshold": (args.optimizer == BinaryOptimizer::Bop).then_some(args.bop_threshold),
        "grad_bits": args.grad_bits.map(|bits| bits.get()),
        "grad_rounding": args.grad_bits.map(|_| format!("{:?}", grad_rounding(args)).to_lowercase()),
        "devices": args.devices,
        "train_images": train.len(),
        "train_seconds": train_seconds,
        "history": history,
        "test_accuracy": test_accuracy,
        "last_epoch": last_epoch,
        "best_valid_epoch": best.as_ref().map(|b| b.0),
        "best_valid_accuracy": best.as_ref().map(|b| b.1 / 100.0),
        "best_valid_test_accuracy": best.as_ref().map(|b| b.2),
        "packed_from": null,
        "f32_model_bytes": f32_bytes,
        "model_ms_per_batch_1": time_net(1).as_secs_f64() * 1e3,
        "model_ms_per_batch_64": time_net(64).as_secs_f64() * 1e3,
        "packed_test_accuracy": null,
        "packed_model_bytes": null,
        "packed_speedup": null,
    });
    if precision == Precision::Binary {
        // The JSON value of `packed_from`, and what the printed line says of the epoch.
        let (packed_from, which, packed_epoch, source) = match &best {
            Some((epoch, _, _, best_net)) => (
                "best_valid",
                "the best validation accuracy",
                *epoch,
                best_net,
            ),
            None => ("last", "the last", last_epoch, &net),
        };
        let packed = PackedNet::from_net(source)?;
        let packed_accuracy = accuracy(|x| packed.forward(x), &test, 500, &device);
        let packed_path = args.out.join("packed.mpk");
        packed.save(&packed_path)?;
        let packed_bytes = std::fs::metadata(&packed_path)?.len();
        let time_packed = |batch| time_per_batch(|x| packed.forward(x), &test, batch, 10, &device);
        let (t1, t64) = (time_packed(1), time_packed(64));
        let speedup = report["model_ms_per_batch_64"].as_f64().unwrap() / (t64.as_secs_f64() * 1e3);
        println!(
            "packed form (of epoch {packed_epoch}, {which}): test accuracy {:.2}%, {} bytes \
             ({:.1}× smaller than the f32 model's {} bytes), {:.3} ms at batch 1, {:.3} ms at \
             batch 64 ({speedup:.2}× the trained model)",
            100.0 * packed_accuracy,
            packed_bytes,
            f32_bytes as f64 / packed_bytes as f64,
            f32_bytes,
            t1.as_secs_f64() * 1e3,
            t64.as_secs_f64() * 1e3,
        );
        report["packed_from"] = json!(packed_from);
        report["packed_test_accuracy"] = json!(packed_accuracy);
        report["packed_model_bytes"] = json!(packed_bytes);
        report["packed_ms_per_batch_1"] = json!(t1.as_secs_f64() * 1e3);
        report["packed_ms_per_batch_64"] = json!(t64.as_secs_f64() * 1e3);
        report["packed_speedup"] = json!(speedup);
    }
    let results = args.out.join("results.json");
    burn_qnn::io::write_atomic(&results, serde_json::to_string_pretty(&report)?)?;
    println!("results written to {}", results.display());
    Ok(())
}

/// The checkpoints' recorder: named MessagePack files, written atomically.
type Recorder = AtomicFileRecorder<NamedMpkFileRecorder<FullPrecisionSettings>>;

/// Everything a training run needs besides the model and its optimizer.
struct Fitting<'a, B: QnnAutodiffBackend> {
    args: &'a Args,
    device: &'a Device<B>,
    train: &'a ImageDataset,
    valid: &'a ImageDataset,
    steps_per_epoch: usize,
    recorder: &'a Recorder,
    flips: FlipCounter,
    flip_metrics: Vec<FlipRatioMetric>,
}

/// What [`Fitting::fit`] returns.
struct Fitted<B: QnnBackend> {
    /// The trained model (its last epoch).
    net: Net<B>,
    /// The renderer's metrics of each epoch.
    history: Vec<EpochMetrics>,
    /// The first epoch this run trained (after a resumed checkpoint's).
    first_epoch: usize,
    /// Seconds of training.
    seconds: f64,
}

impl<B: QnnAutodiffBackend> Fitting<'_, B> {
    /// Trains `net` with `optim` under burn-train's learner, the learning rate decaying
    /// exponentially at every step from `--lr` to `--final-lr`, continuing from the last
    /// checkpoint with `--resume`.
    fn fit<O>(
        self,
        net: Net<B>,
        optim: O,
    ) -> Result<Fitted<B::InnerBackend>, Box<dyn std::error::Error>>
    where
        O: Optimizer<Net<B>, B> + 'static,
    {
        let Fitting {
            args,
            device,
            train,
            valid,
            steps_per_epoch,
            recorder,
            flips,
            flip_metrics,
        } = self;
        let schedule = decay_over_run(args.lr, args.final_lr, args.epochs, steps_per_epoch)?;
        let mut learner = Learner::new(net, optim, schedule);
        let mut first_epoch = 1;
        if args.resume {
            let epoch = last_checkpoint(&args.out, "mpk")?
                .ok_or_else(|| CheckpointError::NotFound(args.out.join("checkpoint")))?;
            learner = restore_checkpoint(learner, &args.out, epoch, recorder, device)?;
            println!("resuming after epoch {epoch} (model, optimizer and learning-rate schedule)");
            first_epoch = epoch + 1;
            if epoch >= args.epochs {
                println!("nothing left to train: raise --epochs to train further");
            }
        }

        // The shuffles of a resumed run start from another seed, so it does not repeat the
        // first epochs' orders.
        let batcher = ImageBatcher::for_dataset(train);
        let loader_train = DataLoaderBuilder::new(batcher.clone())
            .batch_size(args.batch_size)
            .shuffle(args.seed.wrapping_add(first_epoch as u64 - 1))
            .build(train.clone());
        let loader_valid = DataLoaderBuilder::new(batcher)
            .batch_size(500)
            .build(valid.clone());
        let renderer = EpochSummaryRenderer::new(args.epochs);
        let history = renderer.history();
        let mut training = SupervisedTraining::new(&args.out, loader_train, loader_valid)
            .metrics((LossMetric::new(), AccuracyMetric::new()))
            .metric_train_numeric(LearningRateMetric::new())
            .metric_train_numeric(FlipRatioMetric::new(flips))
            .with_file_checkpointer(recorder.clone())
            // The last two epochs (to resume) and the best-validation one (to report and pack).
            .with_checkpointing_strategy(keep_last_and_best(2))
            // burn-train's own logger would write a resumed run's first epoch over epoch 1's.
            .with_metric_logger(resumable_metric_logger(&args.out, Some(first_epoch - 1)))
            .renderer(renderer)
            .num_epochs(args.epochs);
        for metric in flip_metrics {
            training = training.metric_train_numeric(metric);
        }
        if args.devices > 1 {
            println!(
                "{} data-parallel workers, one optimizer step per {} batches",
                args.devices, args.devices
            );
            training =
                training.with_training_strategy(data_parallel(vec![device.clone(); args.devices]));
        }
        if first_epoch > 1 {
            training = training.checkpoint(first_epoch - 1);
        }
        let interrupter = training.interrupter();
        let start = Instant::now();
        let net = training.launch(learner).model;
        if interrupter.should_stop() {
            let reason = interrupter.get_message().unwrap_or_default();
            return Err(format!("training stopped early: {reason}").into());
        }
        let seconds = start.elapsed().as_secs_f64();
        let history = std::mem::take(&mut *history.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(Fitted {
            net,
            history,
            first_epoch,
            seconds,
        })
    }
}

fn config_name(dir: &Path) -> String {
    dir.display().to_string()
}

/// Loads with the data set's loader; explains what to do when files are missing.
pub fn check<T>(result: Result<T, burn_qnn::data::DataError>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up data set's defaults, none of them clap's own.
    const DEFAULTS: Defaults = Defaults {
        name: "demo",
        epochs: 7,
        batch_size: 20,
        lr: 2e-3,
        final_lr: 2e-6,
        valid: 100,
    };

    /// Every option left out takes the data set's default; `=` and space forms agree.
    #[test]
    fn omitted_options_take_the_defaults() {
        let args = parse_from(&DEFAULTS, ["demo", "--epochs=5", "--width", "0.25"]).unwrap();
        assert_eq!(args.epochs, 5);
        assert_eq!(args.width, 0.25);
        assert_eq!(args.batch_size, 20);
        assert_eq!(args.lr, 2e-3);
        assert_eq!(args.final_lr, 2e-6);
        assert_eq!(args.data_dir, PathBuf::from("data/demo"));
        assert_eq!(args.out, PathBuf::from("runs/demo"));
        assert_eq!(args.valid, None);
        assert!(args.download && !args.resume && !args.float);
        assert_eq!(args.grad_bits, None);
        assert_eq!(args.devices, 1);
        assert!(!args.layer_flips);
        assert_eq!(args.optimizer, BinaryOptimizer::Adam);
        assert_eq!((args.bop_gamma, args.bop_threshold), (1e-4, 1e-8));
        let none = parse_from(&DEFAULTS, ["demo"]).unwrap();
        assert_eq!((none.epochs, none.batch_size), (7, 20));
    }

    /// `--grad-bits` alone is the paper's 6 bits; a width takes its value.
    #[test]
    fn grad_bits_default_to_six() {
        let bits = |args: &[&str]| {
            parse_from(&DEFAULTS, args.iter().copied())
                .unwrap()
                .grad_bits
        };
        assert_eq!(bits(&["demo", "--grad-bits"]), Some(Bits::new(6).unwrap()));
        assert_eq!(
            bits(&["demo", "--grad-bits", "4"]),
            Some(Bits::new(4).unwrap())
        );
        assert_eq!(
            bits(&["demo", "--grad-bits=8", "--epochs", "2"]),
            Some(Bits::new(8).unwrap())
        );
    }

    /// `--stochastic-rounding` needs `--grad-bits`.
    #[test]
    fn stochastic_rounding_needs_grad_bits() {
        let args = parse_from(&DEFAULTS, ["demo", "--grad-bits", "--stochastic-rounding"]).unwrap();
        assert!(args.stochastic_rounding);
        assert_eq!(grad_rounding(&args), GradRounding::Stochastic);
        assert!(!parse_from(&DEFAULTS, ["demo"]).unwrap().stochastic_rounding);
        let refused = parse_from(&DEFAULTS, ["demo", "--stochastic-rounding"]);
        assert!(refused.is_err(), "accepted without --grad-bits");
    }

    /// `--optimizer bop` takes Bop's settings.
    #[test]
    fn bop_is_an_optimizer() {
        let args = parse_from(
            &DEFAULTS,
            [
                "demo",
                "--optimizer",
                "bop",
                "--bop-gamma=1e-3",
                "--bop-threshold",
                "0",
            ],
        )
        .unwrap();
        assert_eq!(args.optimizer, BinaryOptimizer::Bop);
        assert_eq!((args.bop_gamma, args.bop_threshold), (1e-3, 0.0));
    }

    /// Bad values are rejected with the option named.
    #[test]
    fn bad_values_are_errors() {
        for (bad, option) in [
            ("--epochs=0", "--epochs"),
            ("--lr=-1", "--lr"),
            ("--width=nan", "--width"),
            ("--grad-bits=1", "--grad-bits"),
            ("--grad-bits=9", "--grad-bits"),
            ("--devices=0", "--devices"),
            ("--optimizer=sgd", "--optimizer"),
            ("--bop-gamma=0", "--bop-gamma"),
            ("--bop-gamma=1.5", "--bop-gamma"),
            ("--bop-threshold=-1", "--bop-threshold"),
        ] {
            let error = parse_from(&DEFAULTS, ["demo", bad])
                .unwrap_err()
                .to_string();
            assert!(error.contains(option), "{bad}: {error}");
        }
    }

    /// `--batch-size` and `--width` have upper bounds: a value above is an error naming the
    /// option and the bound (before anything is allocated for it); the bounds themselves pass.
    #[test]
    fn too_large_values_are_errors() {
        let huge_batch = format!("--batch-size={}", MAX_BATCH_SIZE + 1);
        for (bad, option, bound) in [
            (
                huge_batch.as_str(),
                "--batch-size",
                MAX_BATCH_SIZE.to_string(),
            ),
            (
                "--batch-size=18446744073709551615",
                "--batch-size",
                MAX_BATCH_SIZE.to_string(),
            ),
            ("--width=4.5", "--width", MAX_WIDTH.to_string()),
            ("--width=1e300", "--width", MAX_WIDTH.to_string()),
        ] {
            let error = parse_from(&DEFAULTS, ["demo", bad]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}"
            );
            let message = error.to_string();
            assert!(
                message.contains(option) && message.contains(&format!("at most {bound}")),
                "{bad}: {message}"
            );
        }
        let largest = [
            "demo".to_string(),
            format!("--batch-size={MAX_BATCH_SIZE}"),
            format!("--width={MAX_WIDTH}"),
        ];
        let args = parse_from(&DEFAULTS, largest).unwrap();
        assert_eq!((args.batch_size, args.width), (MAX_BATCH_SIZE, MAX_WIDTH));
    }
}
