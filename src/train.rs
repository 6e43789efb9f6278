//! The paper's training recipe for the networks of [`crate::models`] and any model of the
//! crate's layers ([`ImageClassifier`]): Adam, the squared hinge
//! loss, exponential learning-rate decay per epoch (as in the authors' code), latent-weight
//! clipping and, as an option, the per-layer learning-rate scale of the latent weights
//! ([`TrainOptions::lr_scale`]), with a progress bar; and accuracy and timing of trained
//! networks. A small loop without checkpoints, for quick experiments (the quick start uses
//! it); to train with burn-train's learner (metrics, checkpoints of model, optimizer and
//! schedule, resuming), see `burn_qnn::learner` (feature `train`).
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn_qnn::{data::digits, models::NetConfig, train::{TrainOptions, accuracy, fit}};
//!
//! let data = digits::train_test_split(digits::load_bundled()?, 0.25, 1);
//! let device = Default::default();
//! let net = NetConfig::new(1, 8, vec![], vec![32]).init::<Autodiff<NdArray>>(&device);
//! let options = TrainOptions::new().with_epochs(1).with_progress(false);
//! let (net, history) = fit(net, &data.train, None, &options, &device);
//! assert_eq!(history.len(), 1);
//! let net = burn::module::AutodiffModule::valid(&net);
//! let acc = accuracy(|x| net.forward(x), &data.test, 256, &device);
//! assert!((0.0..=1.0).contains(&acc));
//! # Ok::<(), burn_qnn::data::DataError>(())
//! ```

use std::time::{Duration, Instant};

use burn::{
    config::Config,
    lr_scheduler::LrScheduler,
    module::AutodiffModule,
    optim::{GradientsParams, Optimizer},
    tensor::{Device, ElementConversion, Tensor, backend::Backend},
};
use serde::{Deserialize, Serialize};

use crate::{
    QnnAutodiffBackend,
    data::{ImageBatch, ImageBatcher, ImageDataset},
    loss::SquaredHingeLoss,
    models::Net,
    nn::{LatentLrScale, LatentWeightsBefore},
    optim::{FusedAdamConfig, exponential_decay_per_epoch},
};

/// Options of [`fit`].
#[derive(Config, Debug)]
pub struct TrainOptions {
    /// Passes over the training set (default 10).
    #[config(default = 10)]
    pub epochs: usize,
    /// Images per step (default 50, the paper's for CIFAR-10).
    #[config(default = 50)]
    pub batch_size: usize,
    /// Learning rate of the first epoch (default `1e-3`).
    #[config(default = 1e-3)]
    pub initial_lr: f64,
    /// Learning rate the exponential decay reaches after the last epoch (default `3e-7`, the
    /// paper's for CIFAR-10; equal to `initial_lr` for a constant rate). Epoch `k` (0-based)
    /// trains at `initial_lr·(final_lr/initial_lr)^(k/epochs)`, the rates of
    /// [`exponential_decay_per_epoch`] (Burn's `StepLrScheduler`).
    #[config(default = 3e-7)]
    pub final_lr: f64,
    /// Seed of the per-epoch shuffles (default 0).
    #[config(default = 0)]
    pub seed: u64,
    /// Whether to clip latent weights to `[−1, 1]` after each step (default `true`).
    #[config(default = true)]
    pub clip: bool,
    /// The per-layer learning-rate scale of the latent weights (default
    /// [`LatentLrScale::None`]; the authors' code uses [`LatentLrScale::Glorot`]). Applied as
    /// `burn_qnn::learner::ClipLatentWeights` applies it: each latent weight's update is
    /// multiplied by the scale before clipping, which for Adam is Adam at `lr·scale` on that
    /// weight.
    #[config(default = "LatentLrScale::None")]
    pub lr_scale: LatentLrScale,
    /// Whether to draw a progress bar on standard error (default `true`; only with the crate
    /// feature `progress`, which `train` and `download` turn on).
    #[config(default = true)]
    pub progress: bool,
    /// The first epoch to run, to resume from a checkpoint (default 0); the learning rate
    /// schedule and the shuffles continue from there.
    #[config(default = 0)]
    pub start_epoch: usize,
}

/// What one epoch of [`fit`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// The epoch, from 0.
    pub epoch: usize,
    /// Its learning rate.
    pub lr: f64,
    /// The mean training loss over its steps.
    pub train_loss: f64,
    /// Accuracy on the validation set, if one was given.
    pub valid_accuracy: Option<f64>,
    /// Seconds it took.
    pub seconds: f64,
}

/// A model that scores images, `[N, C, H, W] → [N, classes]`: what [`fit`] trains and
/// [`accuracy`] measures. [`Net`] is one; implement it for a model of your own to train it with
/// [`fit`].
///
/// ```
/// use burn::prelude::*;
/// use burn_qnn::QnnBackend;
/// use burn_qnn::nn::{BinaryLinear, BinaryLinearConfig};
/// use burn_qnn::train::ImageClassifier;
///
/// #[derive(Module, Debug)]
/// struct Tiny<B: QnnBackend> {
///     fc: BinaryLinear<B>,
/// }
///
/// impl<B: QnnBackend> ImageClassifier<B> for Tiny<B> {
///     fn classify(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
///         self.fc.forward(images.flatten(1, 3))
///     }
/// }
/// ```
pub trait ImageClassifier<B: Backend> {
    /// Class scores `[N, classes]` of images `[N, C, H, W]`.
    fn classify(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
}

impl<B: crate::QnnBackend> ImageClassifier<B> for Net<B> {
    fn classify(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

/// Trains `net` on `train` with the paper's recipe (Adam, squared hinge loss, exponential
/// learning-rate decay per epoch, latent-weight clipping, the latent weights' learning-rate
/// scale of [`TrainOptions::lr_scale`]) and returns it with the per-epoch statistics.
///
/// On the CPU backends, call [`crate::memory::keep_freed_memory`] and
/// [`crate::threads::use_this_thread`] first thing in `main` (as the quick start does): the
/// loop then reuses freed memory and runs the kernels' parallel work on its own thread too.
///
/// # Panics
/// If `train` is empty, `batch_size` is 0, or the rates are not a decay Burn's schedulers take
/// (see [`exponential_decay_per_epoch`]: finite, positive, `initial_lr ≤ 1`,
/// `final_lr ≤ initial_lr`).
pub fn fit<B, M>(
    net: M,
    train: &ImageDataset,
    valid: Option<&ImageDataset>,
    options: &TrainOptions,
    device: &Device<B>,
) -> (M, Vec<EpochStats>)
where
    B: QnnAutodiffBackend,
    M: AutodiffModule<B> + ImageClassifier<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    fit_with(net, train, valid, options, device, |_, _| {})
}

/// [`fit`], calling `after_epoch` with each epoch's statistics and network (to save a
/// checkpoint, for instance).
///
/// # Panics
/// As [`fit`].
pub fn fit_with<B, M>(
    mut net: M,
    train: &ImageDataset,
    valid: Option<&ImageDataset>,
    options: &TrainOptions,
    device: &Device<B>,
    mut after_epoch: impl FnMut(&EpochStats, &M),
) -> (M, Vec<EpochStats>)
where
    B: QnnAutodiffBackend,
    M: AutodiffModule<B> + ImageClassifier<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    assert!(!train.is_empty(), "fit: the training set is empty");
    assert!(
        options.batch_size > 0,
        "fit: the batch size must be positive"
    );
    let batcher = ImageBatcher::for_dataset(train);
    let mut optim = FusedAdamConfig::new().with_epsilon(1e-8).init();
    let steps = train.len().div_ceil(options.batch_size);
    let schedule = exponential_decay_per_epoch(
        options.initial_lr,
        options.final_lr,
        options.epochs.max(1),
        steps,
    )
    .unwrap_or_else(|e| panic!("fit: {e}"));
    let mut schedule = schedule
        .init()
        .expect("exponential_decay_per_epoch returns parameters Burn accepts");
    let epochs = options.start_epoch.min(options.epochs)..options.epochs;
    for _ in 0..epochs.start * steps {
        schedule.step();
    }
    let bar = crate::progress::bar(
        options.progress,
        (epochs.len() * steps) as u64,
        "{bar:30} {pos}/{len} steps, {elapsed} ({eta} left) {msg}",
    );
    let mut history = Vec::new();
    for epoch in epochs {
        let start = Instant::now();
        let mut lr = None;
        let order = train
            .clone()
            .shuffled(options.seed.wrapping_add(epoch as u64));
        let mut total = 0.0;
        for chunk in order.items().chunks(options.batch_size) {
            let batch: ImageBatch<B> = batcher.batch(chunk.to_vec(), device);
            let loss = SquaredHingeLoss.forward(net.classify(batch.images), batch.targets);
            total += loss.clone().into_scalar().elem::<f64>();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            let before = LatentWeightsBefore::of(&net, options.lr_scale);
            let rate = schedule.step();
            lr.get_or_insert(rate);
            net = before.finish(optim.step(rate, net, grads), options.clip);
            bar.inc(1);
        }
        let valid_accuracy = valid.map(|data| {
            let eval = net.valid();
            accuracy(|x| eval.classify(x), data, 500, device)
        });
        let stats = EpochStats {
            epoch,
            lr: lr.expect("an epoch of at least one step"),
            train_loss: total / steps as f64,
            valid_accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        bar.set_message(format!(
            "epoch {} loss {:.4}{}",
            epoch + 1,
            stats.train_loss,
            valid_accuracy.map_or(String::new(), |a| format!(" valid {:.2}%", 100.0 * a))
        ));
        after_epoch(&stats, &net);
        history.push(stats);
    }
    bar.finish();
    (net, history)
}

/// The fraction of `data` whose highest score under `forward` is the label.
pub fn accuracy<B: Backend>(
    forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
    data: &ImageDataset,
    batch_size: usize,
    device: &Device<B>,
) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let batcher = ImageBatcher::for_dataset(data);
    let mut correct = 0i64;
    for chunk in data.items().chunks(batch_size.max(1)) {
        let batch: ImageBatch<B> = batcher.batch(chunk.to_vec(), device);
        let predicted = forward(batch.images).argmax(1).flatten::<1>(0, 1);
        correct += predicted
            .equal(batch.targets)
            .int()
            .sum()
            .into_scalar()
            .elem::<i64>();
    }
    correct as f64 / data.len() as f64
}

/// The mean time of `forward` on batches of `batch_size` images of `data` (after one warm-up
/// batch), over at least `min_batches` batches.
pub fn time_per_batch<B: Backend>(
    forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
    data: &ImageDataset,
    batch_size: usize,
    min_batches: usize,
    device: &Device<B>,
) -> Duration {
    let batcher = ImageBatcher::for_dataset(data);
    let items: Vec<_> = (0..batch_size)
        .map(|i| data.items()[i % data.len()].clone())
        .collect();
    let batch: ImageBatch<B> = batcher.batch(items, device);
    let _ = forward(batch.images.clone()).into_data();
    let start = Instant::now();
    for _ in 0..min_batches.max(1) {
        let _ = forward(batch.images.clone()).into_data();
    }
    start.elapsed() / min_batches.max(1) as u32
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::{Autodiff, NdArray};

    use super::*;
    use crate::{data::digits, models::NetConfig};

    /// Each epoch trains at `initial·(final/initial)^(k/epochs)`, also when resumed.
    #[test]
    fn epochs_train_at_the_per_epoch_decay() {
        type B = Autodiff<NdArray>;
        let device = Default::default();
        let data = digits::train_test_split(digits::load_bundled().unwrap(), 0.95, 3).train;
        let options = TrainOptions::new()
            .with_epochs(4)
            .with_batch_size(40)
            .with_initial_lr(1e-2)
            .with_final_lr(1e-4)
            .with_progress(false);
        let expected = |k: usize| 1e-2 * (1e-4f64 / 1e-2).powf(k as f64 / 4.0);
        let net = || NetConfig::new(1, 8, vec![], vec![16]).init::<B>(&device);
        let (_, history) = fit(net(), &data, None, &options, &device);
        let (_, resumed) = fit(
            net(),
            &data,
            None,
            &options.clone().with_start_epoch(2),
            &device,
        );
        assert_eq!(history.len(), 4);
        assert_eq!(resumed.len(), 2);
        for stats in history.iter().chain(&resumed) {
            let want = expected(stats.epoch);
            assert!(
                (stats.lr / want - 1.0).abs() < 1e-12,
                "epoch {}: rate {} instead of {want}",
                stats.epoch,
                stats.lr
            );
        }
    }
}
