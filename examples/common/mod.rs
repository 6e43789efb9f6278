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

use std::{
    path::{Path, PathBuf},
    sync::PoisonError,
    time::Instant,
};

use burn::{
    backend::{Autodiff, NdArray},
    data::dataloader::DataLoaderBuilder,
    module::Module,
    optim::AdamConfig,
    record::{FullPrecisionSettings, NamedMpkFileRecorder},
    tensor::Device,
};
use burn_qnn::{
    QnnAutodiffBackend,
    data::{ImageBatcher, TrainTest, ValidationSize},
    inference::PackedNet,
    learner::{
        AtomicFileRecorder, CheckpointError, ClipLatentWeights, EpochSummaryRenderer,
        decay_over_run, last_checkpoint, restore_checkpoint,
    },
    models::{NetConfig, Precision, summary},
    nn::LatentLrScale,
    train::{accuracy, time_per_batch},
};
use burn_train::{
    Learner, SupervisedTraining,
    checkpoint::KeepLastNCheckpoints,
    metric::{AccuracyMetric, LearningRateMetric, LossMetric},
};
use serde_json::json;

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Args {
    pub data_dir: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub final_lr: f64,
    pub lr_scale: LatentLrScale,
    pub width: f64,
    pub backend: String,
    pub seed: u64,
    pub limit: Option<usize>,
    /// `--valid N`, if given (else the data set's default, at most a tenth of the images).
    pub valid: Option<usize>,
    pub out: PathBuf,
    pub float: bool,
    pub download: bool,
    pub resume: bool,
    pub extra: bool,
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

fn usage(d: &Defaults) -> String {
    let Defaults {
        name,
        epochs,
        batch_size,
        lr,
        final_lr,
        valid,
    } = d;
    format!(
        "usage: cargo run --release [--features wgpu] --example {name} -- [options]\n\
         \nThe paper's recipe: Adam, squared hinge loss, exponential learning-rate decay, latent\
         \nweights uniform on [-1, 1] and clipped to it, their Glorot learning-rate scale.\n\
         \n  --data-dir DIR     folder with the data set's official files (default data/{name})\
         \n  --epochs N         training epochs (default {epochs})\
         \n  --batch-size N     images per step (default {batch_size})\
         \n  --lr X             initial learning rate (default {lr:e})\
         \n  --final-lr X       learning rate reached at the last step (default {final_lr:e}); it\
         \n                     decays exponentially at every step\
         \n  --lr-scale S       per-layer learning-rate scale of the binary layers' latent weights:\
         \n                     glorot (default, as the authors' code: 1/sqrt(1.5/(fan_in +\
         \n                     fan_out))) or none\
         \n  --width X          width multiplier of the network (default 1)\
         \n  --backend B        ndarray (default) or wgpu\
         \n  --seed N           seed of initialization and shuffles (default 0)\
         \n  --limit N          use only the first N training images\
         \n  --valid N          images held out of training for validation (default {valid}, but\
         \n                     at most a tenth of the training images); an N that leaves no\
         \n                     training images is an error\
         \n  --out DIR          where checkpoints, models and results.json go (default runs/{name})\
         \n  --float            train the same network in full precision\
         \n  --no-download      never download missing files\
         \n  --resume           continue from the last checkpoint in --out (model, optimizer\
         \n                     state, learning-rate schedule)\
         \n  --extra            (SVHN) also train on extra_32x32.mat"
    )
}

/// Parses the command line, or exits with a message.
pub fn parse(defaults: &Defaults) -> Args {
    match try_parse(std::env::args().skip(1), defaults) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}\n\n{}", usage(defaults));
            std::process::exit(2);
        }
    }
}

fn try_parse(mut it: impl Iterator<Item = String>, d: &Defaults) -> Result<Args, String> {
    let mut args = Args {
        data_dir: PathBuf::from("data").join(d.name),
        epochs: d.epochs,
        batch_size: d.batch_size,
        lr: d.lr,
        final_lr: d.final_lr,
        lr_scale: LatentLrScale::Glorot,
        width: 1.0,
        backend: "ndarray".into(),
        seed: 0,
        limit: None,
        valid: None,
        out: PathBuf::from("runs").join(d.name),
        float: false,
        download: true,
        resume: false,
        extra: false,
    };
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: `{v}` is not a valid value"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--data-dir" => args.data_dir = value(&flag, it.next())?,
            "--epochs" => args.epochs = value(&flag, it.next())?,
            "--batch-size" => args.batch_size = value(&flag, it.next())?,
            "--lr" => args.lr = value(&flag, it.next())?,
            "--final-lr" => args.final_lr = value(&flag, it.next())?,
            "--lr-scale" => args.lr_scale = value(&flag, it.next())?,
            "--width" => args.width = value(&flag, it.next())?,
            "--backend" => args.backend = value(&flag, it.next())?,
            "--seed" => args.seed = value(&flag, it.next())?,
            "--limit" => args.limit = Some(value(&flag, it.next())?),
            "--valid" => args.valid = Some(value(&flag, it.next())?),
            "--out" => args.out = value(&flag, it.next())?,
            "--float" => args.float = true,
            "--no-download" => args.download = false,
            "--resume" => args.resume = true,
            "--extra" => args.extra = true,
            "--help" | "-h" => {
                println!("{}", usage(d));
                std::process::exit(0);
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if args.batch_size == 0 || args.epochs == 0 {
        return Err("--epochs and --batch-size must be positive".into());
    }
    let positive = |v: f64| v > 0.0 && v.is_finite();
    if ![args.width, args.lr, args.final_lr]
        .into_iter()
        .all(positive)
    {
        return Err("--width, --lr and --final-lr must be positive".into());
    }
    Ok(args)
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
        #[cfg(feature = "wgpu")]
        // Without fusion: burn-train's checkpointer reads records on its own thread, which
        // burn 0.21's `Fusion` does not support.
        "wgpu" => run_on::<
            Autodiff<
                burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>,
            >,
        >(args, defaults, config, data),
        other => Err(format!(
            "unknown backend `{other}`: use ndarray{}",
            if cfg!(feature = "wgpu") {
                " or wgpu"
            } else {
                " (or build with --features wgpu)"
            }
        )
        .into()),
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
    let config = config.with_width(args.width).with_precision(precision);
    B::seed(&device, args.seed);
    let net = config.init::<B>(&device);
    println!("{}", summary(&net));

    // The paper's recipe: Adam, the latent weights' updates scaled per layer (--lr-scale) and
    // the latent weights clipped after each step, the learning rate decaying exponentially at
    // every step from --lr to --final-lr.
    let steps_per_epoch = train.len().div_ceil(args.batch_size);
    let optim = ClipLatentWeights::new(AdamConfig::new().with_epsilon(1e-8).init())
        .with_lr_scale(args.lr_scale);
    println!(
        "Adam, lr {:e} → {:e}, latent-weight lr scale {}",
        args.lr, args.final_lr, args.lr_scale
    );
    let schedule = decay_over_run(args.lr, args.final_lr, args.epochs, steps_per_epoch)?;
    let mut learner = Learner::new(net, optim, schedule);

    let recorder = AtomicFileRecorder::new(NamedMpkFileRecorder::<FullPrecisionSettings>::new());
    let mut first_epoch = 1;
    if args.resume {
        let epoch = last_checkpoint(&args.out, "mpk")?
            .ok_or_else(|| CheckpointError::NotFound(args.out.join("checkpoint")))?;
        learner = restore_checkpoint(learner, &args.out, epoch, &recorder, &device)?;
        println!("resuming after epoch {epoch} (model, optimizer and learning-rate schedule)");
        first_epoch = epoch + 1;
        if epoch >= args.epochs {
            println!("nothing left to train: raise --epochs to train further");
        }
    }

    // The shuffles of a resumed run start from another seed, so it does not repeat the first
    // epochs' orders.
    let batcher = ImageBatcher::for_dataset(&train);
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
        .with_file_checkpointer(recorder.clone())
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
        .renderer(renderer)
        .num_epochs(args.epochs);
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
    let history = std::mem::take(&mut *history.lock().unwrap_or_else(PoisonError::into_inner));
    let train_seconds = start.elapsed().as_secs_f64();
    let test_accuracy = accuracy(|x| net.forward(x), &test, 500, &device);
    println!("test accuracy: {:.2}%", 100.0 * test_accuracy);

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
        "train_images": train.len(),
        "train_seconds": train_seconds,
        "history": history,
        "test_accuracy": test_accuracy,
        "f32_model_bytes": f32_bytes,
        "model_ms_per_batch_1": time_net(1).as_secs_f64() * 1e3,
        "model_ms_per_batch_64": time_net(64).as_secs_f64() * 1e3,
        "packed_test_accuracy": null,
        "packed_model_bytes": null,
        "packed_speedup": null,
    });
    if precision == Precision::Binary {
        let packed = PackedNet::from_net(&net)?;
        let packed_accuracy = accuracy(|x| packed.forward(x), &test, 500, &device);
        let packed_path = args.out.join("packed.mpk");
        packed.save(&packed_path)?;
        let packed_bytes = std::fs::metadata(&packed_path)?.len();
        let time_packed = |batch| time_per_batch(|x| packed.forward(x), &test, batch, 10, &device);
        let (t1, t64) = (time_packed(1), time_packed(64));
        let speedup = report["model_ms_per_batch_64"].as_f64().unwrap() / (t64.as_secs_f64() * 1e3);
        println!(
            "packed form: test accuracy {:.2}%, {} bytes ({:.1}× smaller than the f32 model's \
             {} bytes), {:.3} ms at batch 1, {:.3} ms at batch 64 ({speedup:.2}× the trained \
             model)",
            100.0 * packed_accuracy,
            packed_bytes,
            f32_bytes as f64 / packed_bytes as f64,
            f32_bytes,
            t1.as_secs_f64() * 1e3,
            t64.as_secs_f64() * 1e3,
        );
        report["packed_test_accuracy"] = json!(packed_accuracy);
        report["packed_model_bytes"] = json!(packed_bytes);
        report["packed_ms_per_batch_1"] = json!(t1.as_secs_f64() * 1e3);
        report["packed_ms_per_batch_64"] = json!(t64.as_secs_f64() * 1e3);
        report["packed_speedup"] = json!(speedup);
    }
    let results = args.out.join("results.json");
    write_atomic(&results, &serde_json::to_string_pretty(&report)?)?;
    println!("results written to {}", results.display());
    Ok(())
}

fn config_name(dir: &Path) -> String {
    dir.display().to_string()
}

/// Writes `text` to `path` through a temporary file renamed into place.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// Loads with the data set's loader; explains what to do when files are missing.
pub fn check<T>(result: Result<T, burn_qnn::data::DataError>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    })
}
