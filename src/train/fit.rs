//! [`fit`]: the paper's recipe as one call, run by burn-train's learner.

use burn::{config::Config, data::dataloader::DataLoaderBuilder, module::AutodiffModule};
use burn_train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainStep,
    logger::InMemoryMetricLogger,
    metric::{AccuracyMetric, LearningRateMetric, LossMetric},
};

use crate::{
    QnnAutodiffBackend,
    data::{ImageBatch, ImageBatcher, ImageDataset},
    learner::{ClipLatentWeights, EpochMetrics, EpochSummaryRenderer},
    nn::LatentLrScale,
    optim::{ExponentialDecayConfigError, FusedAdamConfig, decay_over_run},
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
    /// Learning rate of the first step (default `1e-3`).
    #[config(default = 1e-3)]
    pub initial_lr: f64,
    /// Learning rate of the last step (default `3e-7`, the paper's for CIFAR-10; equal to
    /// `initial_lr` for a constant rate). The rate decays exponentially at every step in
    /// between: [`decay_over_run`] (Burn's `ExponentialLrScheduler`).
    #[config(default = 3e-7)]
    pub final_lr: f64,
    /// Seed of the shuffles of the training set (default 0).
    #[config(default = 0)]
    pub seed: u64,
    /// The per-layer learning-rate scale of the latent weights (default
    /// [`LatentLrScale::None`]; the authors' code uses [`LatentLrScale::Glorot`]), applied by
    /// [`ClipLatentWeights::with_lr_scale`].
    #[config(default = "LatentLrScale::None")]
    pub lr_scale: LatentLrScale,
    /// Whether to draw a progress bar on standard error, when it is a terminal, showing the
    /// last epoch's metrics (default `true`).
    #[config(default = true)]
    pub progress: bool,
    /// Whether to print each epoch's metrics on a line of standard output (default `false`).
    #[config(default = false)]
    pub print_epochs: bool,
}

/// Why [`fit`] could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// The training set has no images.
    #[error("fit: the training set is empty")]
    EmptyTrainingSet,
    /// [`TrainOptions::batch_size`] is 0.
    #[error("fit: the batch size must be at least 1")]
    ZeroBatchSize,
    /// The learning rates are not a decay Burn's scheduler takes, or the number of epochs is
    /// 0.
    #[error("fit: {0}")]
    Schedule(#[from] ExponentialDecayConfigError),
}

/// Trains `model` on `train` with the paper's recipe and returns it, ready for inference (its
/// [`AutodiffModule::InnerModule`]), with each epoch's metrics.
///
/// The recipe: Adam (ε 1e-8, [`FusedAdamConfig`]), the squared hinge loss (the model's
/// [`TrainStep`]), the learning rate decaying exponentially at every step from
/// [`TrainOptions::initial_lr`] to [`TrainOptions::final_lr`] ([`decay_over_run`]), latent
/// weights clipped to `[−1, 1]` after each step with the per-layer learning-rate scale of
/// [`TrainOptions::lr_scale`] ([`ClipLatentWeights`]). It is burn-train's learner
/// ([`SupervisedTraining`]) with those pieces and the loss, accuracy (in %) and learning-rate
/// metrics, writing nothing to disk: no checkpoints, no metric files, no log file. For
/// checkpoints and resuming, metric files or several devices, put the same pieces into a
/// [`SupervisedTraining`] of your own, as the `burn_qnn::learner` docs show.
///
/// The model needs burn-train's step traits with [`ImageBatch`]es in and a
/// [`ClassificationOutput`] out, as [`Net`](crate::models::Net) has them; for a model of your
/// own, [`classification_output`](crate::learner::classification_output) makes the output
/// from its scores (the `custom_model` example does this).
///
/// Each [`EpochMetrics`] has the means of `Loss`, `Accuracy` and `Learning Rate` over the
/// epoch's training batches, and `Loss` and `Accuracy` over `valid` when there is one.
///
/// On the CPU backends, call [`crate::memory::keep_freed_memory`] and
/// [`crate::threads::use_this_thread`] first thing in `main` (as the quick start does): the
/// learner's loop runs on the calling thread, which then reuses freed memory and runs the
/// kernels' parallel work too.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn_qnn::{data::digits, models::NetConfig, train::{TrainOptions, accuracy, fit}};
///
/// let data = digits::train_test_split(digits::load_bundled()?, 0.25, 1);
/// let device = Default::default();
/// let net = NetConfig::new(1, 8, vec![], vec![32]).init::<Autodiff<NdArray>>(&device);
/// let options = TrainOptions::new().with_epochs(2).with_progress(false);
/// let (net, history) = fit(net, &data.train, Some(&data.test), &options)?;
/// assert_eq!(history.len(), 2);
/// assert!(history[1].valid.contains_key("Accuracy"));
/// let acc = accuracy(|x| net.forward(x), &data.test, 256, &device);
/// assert!((0.0..=1.0).contains(&acc));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`FitError`] if `train` is empty, the batch size or the number of epochs is 0, or the
/// rates are not a decay (see
/// [`decay_over_run`]: finite, positive, `initial_lr ≤ 1`, `final_lr ≤ initial_lr`).
pub fn fit<B, M>(
    model: M,
    train: &ImageDataset,
    valid: Option<&ImageDataset>,
    options: &TrainOptions,
) -> Result<(M::InnerModule, Vec<EpochMetrics>), FitError>
where
    B: QnnAutodiffBackend,
    M: AutodiffModule<B>
        + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + core::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = ImageBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    if train.is_empty() {
        return Err(FitError::EmptyTrainingSet);
    }
    if options.batch_size == 0 {
        return Err(FitError::ZeroBatchSize);
    }
    let steps = train.len().div_ceil(options.batch_size);
    let schedule = decay_over_run(options.initial_lr, options.final_lr, options.epochs, steps)?;
    // Lasagne's ε, the paper's framework (Burn's default is 1e-5).
    let adam = FusedAdamConfig::new().with_epsilon(1e-8).init();
    let optim = ClipLatentWeights::new(adam).with_lr_scale(options.lr_scale);
    let batcher = ImageBatcher::for_dataset(train);
    let loader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(options.batch_size)
        .shuffle(options.seed)
        .build(train.clone());
    // Without validation data, the learner's validation pass runs over no batches.
    let valid = valid.cloned().unwrap_or_else(|| {
        ImageDataset::new(
            Vec::new(),
            train.shape(),
            train.num_classes(),
            train.max_value(),
        )
    });
    let loader_valid = DataLoaderBuilder::new(batcher).batch_size(500).build(valid);
    let renderer = EpochSummaryRenderer::new(options.epochs)
        .with_progress_bar(options.progress)
        .with_epoch_lines(options.print_epochs);
    let history = renderer.history();
    let training = SupervisedTraining::new(unused_directory(), loader_train, loader_valid)
        .metrics((LossMetric::new(), AccuracyMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(renderer)
        .num_epochs(options.epochs);
    let model = training.launch(Learner::new(model, optim, schedule)).model;
    let history = std::mem::take(
        &mut *history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok((model, history))
}

/// Where burn-train would write checkpoints, metric files and its log file: [`fit`] asks for
/// none of them, so nothing is written there (its test checks that it is never created).
fn unused_directory() -> std::path::PathBuf {
    std::env::temp_dir().join("burn-qnn-fit-writes-nothing")
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::{
        backend::{Autodiff, NdArray},
        lr_scheduler::LrScheduler,
    };

    use super::*;
    use crate::{
        data::digits,
        models::{DenseLayer, Net, NetConfig},
        train::accuracy,
    };

    type B = Autodiff<NdArray>;

    fn digits_split() -> crate::data::TrainTest {
        digits::train_test_split(digits::load_bundled().unwrap(), 0.3, 5)
    }

    fn net() -> Net<B> {
        NetConfig::new(1, 8, vec![], vec![64]).init::<B>(&Default::default())
    }

    fn quiet() -> TrainOptions {
        TrainOptions::new()
            .with_epochs(1)
            .with_batch_size(40)
            .with_initial_lr(1e-2)
            .with_final_lr(1e-3)
            .with_progress(false)
    }

    /// The binary MLP learns the digits: the training loss falls from the first epoch to the
    /// last, and the test accuracy ends far above chance (10 %). Each epoch reports the mean
    /// of the rates `decay_over_run` gives its steps, and the validation metrics.
    #[test]
    fn learns_the_digits_at_the_decaying_rate() {
        let data = digits_split();
        let options = quiet().with_epochs(4);
        let (trained, history) = fit(net(), &data.train, Some(&data.test), &options).unwrap();
        assert_eq!(history.len(), 4);
        let loss = |k: usize| history[k].train["Loss"];
        assert!(loss(3) < loss(0), "loss {} → {}", loss(0), loss(3));
        let acc = accuracy(|x| trained.forward(x), &data.test, 500, &Default::default());
        assert!(acc > 0.6, "test accuracy {acc}");
        let valid = history[3].valid["Accuracy"];
        assert!(
            (valid / 100.0 - acc).abs() < 1e-6,
            "valid {valid} %, test {acc}"
        );

        let steps = data.train.len().div_ceil(40);
        let mut schedule = decay_over_run(1e-2, 1e-3, 4, steps).unwrap();
        for epoch in &history {
            let mean = (0..steps).map(|_| schedule.step()).sum::<f64>() / steps as f64;
            let rate = epoch.train["Learning Rate"];
            assert!(
                (rate / mean - 1.0).abs() < 1e-9,
                "epoch {}: {rate} vs {mean}",
                epoch.epoch
            );
        }
        assert!(
            !unused_directory().exists(),
            "fit wrote to {:?}",
            unused_directory()
        );
    }

    /// At a rate large enough to push the latent weights out of `[−1, 1]`, clipping keeps
    /// them in it, and some of them end on its bounds.
    #[test]
    fn clips_the_latent_weights() {
        let data = digits_split();
        let options = quiet().with_initial_lr(0.5).with_final_lr(0.5);
        let (trained, _) = fit(net(), &data.train, None, &options).unwrap();
        for layer in &trained.dense {
            let weight = match layer {
                DenseLayer::BitPlane(layer) => layer.weight.val(),
                DenseLayer::Binary(layer) => layer.weight.val(),
                DenseLayer::Float(_) => unreachable!("a binary network"),
            };
            let magnitudes = weight.abs().into_data().to_vec::<f32>().unwrap();
            assert!(magnitudes.iter().all(|&m| m <= 1.0));
            assert!(magnitudes.contains(&1.0), "no weight reached the bounds");
        }
    }

    #[test]
    fn bad_options_are_typed_errors() {
        let data = digits_split();
        let fails = |train: &ImageDataset, options: TrainOptions| {
            fit(net(), train, None, &options).map(|_| ()).unwrap_err()
        };
        assert_eq!(
            fails(&data.train.clone().take(0), quiet()),
            FitError::EmptyTrainingSet
        );
        assert_eq!(
            fails(&data.train, quiet().with_batch_size(0)),
            FitError::ZeroBatchSize
        );
        assert_eq!(
            fails(&data.train, quiet().with_epochs(0)),
            FitError::Schedule(ExponentialDecayConfigError::ZeroEpochs)
        );
        assert!(matches!(
            fails(&data.train, quiet().with_final_lr(1.0)),
            FitError::Schedule(ExponentialDecayConfigError::Increasing { .. })
        ));
    }
}
