//! Training the networks of [`crate::models`] with burn-train's learner (feature `train`, on by
//! default): the pieces a Burn training script needs beyond the model.
//!
//! - [`TrainStep`](burn_train::TrainStep) and [`InferenceStep`](burn_train::InferenceStep) for
//!   [`Net`](crate::models::Net) on [`ImageBatch`](crate::data::ImageBatch)es: the squared hinge
//!   loss of the paper and a [`ClassificationOutput`](burn_train::ClassificationOutput), so
//!   burn-train's loss and accuracy metrics work.
//! - [`ClipLatentWeights`]: wraps any Burn [`Optimizer`](burn::optim::Optimizer) (Adam,
//!   [`ShiftAdaMax`](crate::optim::ShiftAdaMax), …) and clips the latent weights to `[−1, 1]`
//!   after each step, as the paper does; with
//!   [`LatentLrScale::Glorot`](crate::nn::LatentLrScale::Glorot) it first scales each latent
//!   weight's update by its layer's Glorot factor, as the authors' code does.
//! - [`TrackFlips`] and [`FlipRatioMetric`]: the flip ratio of the binary weights (the fraction
//!   whose sign an optimizer step changed, per layer or overall; Larq's `FlipRatio`) as a
//!   burn-train metric.
//! - [`data_parallel`] and [`optimizer_steps_per_epoch`]: training on several devices through
//!   burn-train's multi-device strategy (see [`data_parallel`] for what equals what, and
//!   which devices work).
//! - [`AtomicFileRecorder`]: a file recorder that never leaves a half-written checkpoint, and
//!   that reads records while [`ClipLatentWeights`] and [`TrackFlips`] are not stepping, so
//!   that burn-train's checkpointer threads work on Burn's fused backends
//!   (`burn::backend::Wgpu`, `burn::backend::Cuda`) too.
//! - [`last_checkpoint`] and [`restore_checkpoint`]: resuming from the newest complete
//!   checkpoint (model, optimizer state and scheduler), with typed errors.
//! - [`keep_last_and_best`] and [`best_valid_epoch`]: keeping the checkpoint of the epoch with
//!   the best validation accuracy next to the last ones (a burn-train checkpointing strategy),
//!   and finding it, as the paper reports the test error of that epoch; [`summary_history`]:
//!   the per-epoch metrics from burn-train's `LearnerSummary`.
//! - [`resumable_metric_logger`]: burn-train's metric files, numbered right after a resume
//!   (burn-train 0.21's own logger writes a resumed run's first epoch over epoch 1's logs).
//! - [`EpochSummaryRenderer`]: a compact progress renderer, one progress bar and one line per
//!   epoch, which also keeps the per-epoch means of every metric ([`EpochMetrics`]).
//!
//! On the CPU backends, call [`crate::memory::keep_freed_memory`] and
//! [`crate::threads::use_this_thread`] first thing in `main`, on the thread that calls
//! `launch` (burn-train's single-device training runs its loop there), as the examples do.
//!
//! # The paper's recipe
//!
//! From the paper (Hubara, Courbariaux et al., *Binarized Neural Networks*, NIPS 2016) and the
//! authors' Theano code (BinaryNet, `Train-time/`), and how to get each part here:
//!
//! - **Adam** (β1 0.9, β2 0.999, ε 1e-8, the Lasagne defaults of the scripts):
//!   [`FusedAdamConfig::new().with_epsilon(1e-8)`](crate::optim::FusedAdamConfig) (Burn's
//!   `Adam` in one parallel pass per parameter on the CPU backends; Burn's `AdamConfig` works
//!   too; Burn's default ε is 1e-5).
//! - **Squared hinge loss** `mean(max(0, 1 − t·y)²)` on `±1` one-hot targets: the
//!   [`TrainStep`](burn_train::TrainStep) of [`Net`](crate::models::Net)
//!   ([`classification_output`]).
//! - **Exponential learning-rate decay**, 1e-3 → 3e-7 over 500 epochs for CIFAR-10 (SVHN
//!   1e-3 → 1e-6 over 200, MNIST 3e-3 → 3e-7 over 1000):
//!   [`optim::decay_over_run`](crate::optim::decay_over_run) (Burn's exponential scheduler), which decays at
//!   every step along the curve the scripts follow once per epoch.
//! - **Batch size** 50 (CIFAR-10, SVHN) or 100 (MNIST): the data loader's.
//! - **Latent weights** initialised uniform on `[−1, 1]` (every binary and quantized layer's
//!   default initializer) and **clipped** to `[−1, 1]` after each step: [`ClipLatentWeights`].
//! - **Per-layer learning-rate scale** `1/sqrt(1.5/(fan_in + fan_out))` of the latent weights
//!   (the scripts' `W_LR_scale = "Glorot"`): [`ClipLatentWeights::with_lr_scale`] with
//!   [`LatentLrScale::Glorot`](crate::nn::LatentLrScale::Glorot). Biases and batch norm train
//!   at the plain rate.
//! - **Batch norm after every layer** (α 0.1, ε 1e-4) and **inputs in `[−1, 1]`**:
//!   [`NetConfig`](crate::models::NetConfig) and [`ImageBatcher`](crate::data::ImageBatcher).
//!
//! The `cifar10`, `svhn` and `mnist` examples put these together with the scripts' defaults.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use burn::backend::{Autodiff, NdArray};
//! use burn::data::dataloader::DataLoaderBuilder;
//! use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
//! use burn_train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
//! use burn_train::{Learner, SupervisedTraining};
//! use burn_qnn::data::{ImageBatcher, digits};
//! use burn_qnn::learner::{AtomicFileRecorder, ClipLatentWeights, EpochSummaryRenderer};
//! use burn_qnn::models::NetConfig;
//! use burn_qnn::nn::LatentLrScale;
//! use burn_qnn::optim::{FusedAdamConfig, decay_over_run};
//!
//! type B = Autodiff<NdArray>;
//! let data = digits::train_test_split(digits::load_bundled()?, 0.25, 1);
//! let batcher = ImageBatcher::for_dataset(&data.train);
//! let train = DataLoaderBuilder::new(batcher.clone()).batch_size(50).shuffle(0).build(data.train.clone());
//! let valid = DataLoaderBuilder::new(batcher).batch_size(500).build(data.test.clone());
//! let (epochs, steps) = (5, data.train.len().div_ceil(50));
//!
//! let net = NetConfig::new(1, 8, vec![], vec![64]).init::<B>(&Default::default());
//! let optim = ClipLatentWeights::new(FusedAdamConfig::new().with_epsilon(1e-8).init())
//!     .with_lr_scale(LatentLrScale::Glorot);
//! let schedule = decay_over_run(1e-3, 3e-7, epochs, steps)?;
//! let renderer = EpochSummaryRenderer::new(epochs);
//! let training = SupervisedTraining::new("runs/digits", train, valid)
//!     .metrics((LossMetric::new(), AccuracyMetric::new()))
//!     .metric_train_numeric(LearningRateMetric::new())
//!     .with_file_checkpointer(AtomicFileRecorder::new(NamedMpkFileRecorder::<FullPrecisionSettings>::new()))
//!     .renderer(renderer)
//!     .num_epochs(epochs);
//! let trained = training.launch(Learner::new(net, optim, schedule)).model;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod best;
mod checkpoint;
mod clip;
mod devices;
mod flip_ratio;
mod record_check;
mod record_reads;
mod render;
mod resumed_logs;
mod step;

pub use best::{
    ACCURACY, KeepLastAndBest, SummaryError, best_valid_epoch, keep_last_and_best, summary_history,
};
pub use checkpoint::{
    AtomicFileRecorder, CheckpointError, InMemoryFormat, last_checkpoint, load_checkpoint_model,
    restore_checkpoint,
};
pub use clip::ClipLatentWeights;
pub use devices::{data_parallel, optimizer_steps_per_epoch};
pub use flip_ratio::{FlipCounter, FlipCounts, FlipRatioMetric, LayerFlips, TrackFlips};
pub use render::{EpochMetrics, EpochSummaryRenderer};
pub use resumed_logs::{ResumableMetricLogger, resumable_metric_logger};
pub use step::classification_output;
