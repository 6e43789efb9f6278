//! Training through burn-train's learner (`burn_qnn::learner`): the step implementations, the
//! clipping optimizer, the schedule, checkpoints and resuming.

use std::path::Path;

use burn::{
    backend::{Autodiff, NdArray},
    data::dataloader::DataLoaderBuilder,
    lr_scheduler::{LrScheduler, exponential::ExponentialLrScheduler},
    module::{AutodiffModule, Module, ModuleVisitor, Param},
    optim::{Adam, AdamConfig, GradientsParams, Optimizer, adaptor::OptimizerAdaptor},
    record::{BinBytesRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder},
    tensor::{
        Int, Tensor,
        backend::{AutodiffBackend, Backend},
    },
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    data::{ImageBatcher, ImageDataset, ImageItem, ImageShape},
    learner::{
        AtomicFileRecorder, CheckpointError, ClipLatentWeights, EpochMetrics, EpochSummaryRenderer,
        best_valid_epoch, keep_last_and_best, last_checkpoint, load_checkpoint_model,
        restore_checkpoint, resumable_metric_logger, summary_history,
    },
    loss::SquaredHingeLoss,
    models::{DenseLayer, Net, NetConfig},
    optim::{BopConfig, decay_over_run},
    train::accuracy,
};
use burn_train::{
    Learner, LearningComponentsMarker, SupervisedTraining,
    checkpoint::{CheckpointingStrategy, KeepLastNCheckpoints},
    metric::{AccuracyMetric, LearningRateMetric, LossMetric},
};

use crate::reference::values;

/// `n` 1×8×8 images of two classes: class 0 bright on the left half, class 1 on the right,
/// with deterministic noise.
pub fn two_halves(n: usize) -> ImageDataset {
    let mut state = 0x9e37_79b9_u32;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 60) as u8
    };
    let items = (0..n)
        .map(|i| {
            let label = (i % 2) as u8;
            let pixels = (0..64)
                .map(|p| {
                    let left = p % 8 < 4;
                    let bright = left == (label == 0);
                    if bright { 190 + noise() } else { noise() }
                })
                .collect();
            ImageItem { pixels, label }
        })
        .collect();
    ImageDataset::new(items, ImageShape::new(1, 8, 8), 2, 255)
}

fn tiny_net<B: QnnBackend>(device: &B::Device) -> Net<B> {
    NetConfig::new(1, 8, vec![], vec![16])
        .with_classes(2)
        .init(device)
}

type Optim<B> = ClipLatentWeights<OptimizerAdaptor<Adam, Net<B>, B>>;
type ComponentsWith<B, O> = LearningComponentsMarker<B, ExponentialLrScheduler, Net<B>, O>;
type Components<B> = ComponentsWith<B, Optim<B>>;

fn recorder() -> AtomicFileRecorder<NamedMpkFileRecorder<FullPrecisionSettings>> {
    AtomicFileRecorder::new(NamedMpkFileRecorder::new())
}

/// One launch of the learner on `train`/`valid` (no shuffling, so that runs are comparable),
/// `epochs` in all, continuing after `resume_after` if given. Returns the trained model and the
/// renderer's per-epoch metrics.
fn launch<B: QnnAutodiffBackend>(
    learner: Learner<Components<B>>,
    dir: &Path,
    train: &ImageDataset,
    valid: &ImageDataset,
    epochs: usize,
    resume_after: Option<usize>,
) -> (Net<B::InnerBackend>, Vec<EpochMetrics>) {
    let last_two = KeepLastNCheckpoints::new(2);
    launch_with(
        learner,
        dir,
        train,
        valid,
        epochs,
        resume_after,
        last_two,
        |t| t,
    )
}

/// [`launch`] with another checkpointing strategy and optimizer, and further settings
/// (`configure`: metrics, a training strategy).
#[allow(clippy::too_many_arguments)]
fn launch_with<B: QnnAutodiffBackend, O: Optimizer<Net<B>, B> + 'static>(
    learner: Learner<ComponentsWith<B, O>>,
    dir: &Path,
    train: &ImageDataset,
    valid: &ImageDataset,
    epochs: usize,
    resume_after: Option<usize>,
    strategy: impl CheckpointingStrategy + 'static,
    configure: impl FnOnce(
        SupervisedTraining<ComponentsWith<B, O>>,
    ) -> SupervisedTraining<ComponentsWith<B, O>>,
) -> (Net<B::InnerBackend>, Vec<EpochMetrics>) {
    let batcher = ImageBatcher::for_dataset(train);
    let loader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(8)
        .build(train.clone());
    let loader_valid = DataLoaderBuilder::new(batcher)
        .batch_size(16)
        .build(valid.clone());
    let renderer = EpochSummaryRenderer::new(epochs).with_progress_bar(false);
    let history = renderer.history();
    let mut training = SupervisedTraining::new(dir, loader_train, loader_valid)
        .metrics((LossMetric::new(), AccuracyMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_file_checkpointer(recorder())
        .with_checkpointing_strategy(strategy)
        .with_metric_logger(resumable_metric_logger(dir, resume_after))
        .with_application_logger(None)
        .renderer(renderer)
        .num_epochs(epochs);
    if let Some(epoch) = resume_after {
        training = training.checkpoint(epoch);
    }
    let model = configure(training).launch(learner).model;
    let history = history.lock().unwrap().clone();
    (model, history)
}

fn new_learner<B: QnnAutodiffBackend>(
    net: Net<B>,
    lr: (f64, f64),
    epochs: usize,
    steps: usize,
) -> Learner<Components<B>> {
    let optim = ClipLatentWeights::new(AdamConfig::new().init());
    let schedule = decay_over_run(lr.0, lr.1, epochs, steps).unwrap();
    Learner::new(net, optim, schedule)
}

/// A few epochs through burn-train's learner lower the training loss, report accuracy and
/// learning rate for both splits, keep the latent weights in `[−1, 1]` and leave a complete
/// checkpoint of the last epoch.
pub fn learner_lowers_the_loss<B: QnnAutodiffBackend>(device: &B::Device) {
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = (two_halves(48), two_halves(16));
    let epochs = 8;
    B::seed(device, 3);
    let learner = new_learner(tiny_net::<B>(device), (1e-2, 1e-3), epochs, 6);
    let (net, history) = launch(learner, dir.path(), &train, &valid, epochs, None);

    let epochs_seen: Vec<usize> = history.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs_seen, (1..=epochs).collect::<Vec<_>>());
    let loss = |e: &EpochMetrics| e.train["Loss"];
    let (first, last) = (loss(&history[0]), loss(&history[epochs - 1]));
    assert!(
        last < 0.8 * first,
        "the training loss went from {first} to {last}"
    );
    for e in &history {
        for key in ["Loss", "Accuracy"] {
            assert!(
                e.train.contains_key(key) && e.valid.contains_key(key),
                "{e:?}"
            );
        }
        assert!((0.0..=100.0).contains(&e.valid["Accuracy"]));
    }
    // The learning rate decays from epoch to epoch, from 1e-2 towards 1e-3.
    let lr: Vec<f64> = history.iter().map(|e| e.train["Learning Rate"]).collect();
    assert!(lr.windows(2).all(|w| w[1] < w[0]), "{lr:?}");
    assert!(lr[0] < 1e-2 && lr[0] > 7e-3, "{lr:?}");
    assert!(lr[epochs - 1] > 1e-3 && lr[epochs - 1] < 1.5e-3, "{lr:?}");
    let end = &history[epochs - 1];
    assert!(
        end.train["Accuracy"] >= 80.0 && end.valid["Accuracy"] >= 75.0,
        "{end:?}"
    );

    let mut latent = MaxAbs::default();
    net.visit(&mut latent);
    assert!(latent.max <= 1.0, "a latent weight is {}", latent.max);
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), Some(epochs));
}

/// The binary layers' weights of a network, flattened.
fn binary_weights<B: QnnBackend>(net: &Net<B>) -> Vec<f32> {
    net.dense
        .iter()
        .flat_map(|layer| match layer {
            DenseLayer::BitPlane(l) => values(l.weight.val()),
            DenseLayer::Binary(l) => values(l.weight.val()),
            DenseLayer::Float(_) => Vec::new(),
        })
        .collect()
}

/// Bop (with Adam for the other parameters) under burn-train's learner: the training loss
/// falls, binary weights flip their signs and are ±1 (Bop keeps signs only), and the
/// checkpoint, Bop's state with it, resumes.
pub fn bop_through_the_learner<B: QnnAutodiffBackend>(device: &B::Device) {
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = (two_halves(48), two_halves(16));
    let (epochs, steps) = (6, 6);
    let bop_learner = |net: Net<B>| {
        let optim = BopConfig::new()
            .with_gamma(1e-2)
            .init::<B, Net<B>, _>(AdamConfig::new().init());
        Learner::new(
            net,
            optim,
            decay_over_run(1e-2, 1e-3, epochs, steps).unwrap(),
        )
    };
    B::seed(device, 5);
    let net = tiny_net::<B>(device);
    let before = binary_weights(&net);
    let strategy = || KeepLastNCheckpoints::new(2);
    let (trained, history) = launch_with(
        bop_learner(net),
        dir.path(),
        &train,
        &valid,
        epochs,
        None,
        strategy(),
        |t| t,
    );
    let loss = |e: &EpochMetrics| e.train["Loss"];
    let (first, last) = (loss(&history[0]), loss(&history[epochs - 1]));
    assert!(
        last < 0.8 * first,
        "the training loss went from {first} to {last}"
    );
    let after = binary_weights(&trained);
    let flipped = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.is_sign_negative() != a.is_sign_negative())
        .count();
    assert!(flipped > 0, "no binary weight flipped");
    for (i, a) in after.iter().enumerate() {
        assert_eq!(a.abs(), 1.0, "binary weight {i} is {a}, not ±1");
    }

    let fresh = bop_learner(tiny_net::<B>(device));
    let learner = restore_checkpoint(fresh, dir.path(), epochs, &recorder(), device).unwrap();
    let (_, resumed) = launch_with(
        learner,
        dir.path(),
        &train,
        &valid,
        epochs + 1,
        Some(epochs),
        strategy(),
        |t| t,
    );
    let epochs_seen: Vec<usize> = resumed.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs_seen, [epochs + 1]);
    assert!(
        loss(&resumed[0]) < 0.8 * first,
        "the resumed epoch's loss is {}",
        loss(&resumed[0])
    );
}

/// The examples' strategy keeps the best-validation epoch's checkpoint next to the last two.
/// The validation labels are swapped, so that learning makes the validation accuracy fall and
/// an early epoch is the best: its checkpoint survives the later epochs, it is the first epoch
/// of highest accuracy in burn-train's summary, and it is that epoch's model (its accuracy on
/// the validation set is the one logged for that epoch).
pub fn best_validation_checkpoint_survives<B: QnnAutodiffBackend>(device: &B::Device) {
    let dir = tempfile::tempdir().unwrap();
    let train = two_halves(48);
    let swapped: Vec<ImageItem> = two_halves(16)
        .items()
        .iter()
        .map(|item| ImageItem {
            pixels: item.pixels.clone(),
            label: 1 - item.label,
        })
        .collect();
    let valid = ImageDataset::new(swapped, ImageShape::new(1, 8, 8), 2, 255);
    let epochs = 5;
    B::seed(device, 3);
    let learner = new_learner(tiny_net::<B>(device), (1e-2, 1e-3), epochs, 6);
    let strategy = keep_last_and_best(2);
    let (_, timed) = launch_with(
        learner,
        dir.path(),
        &train,
        &valid,
        epochs,
        None,
        strategy,
        |t| t,
    );
    let history = summary_history(dir.path(), &["Loss", "Accuracy"], &timed).unwrap();
    assert_eq!(history.len(), epochs);
    assert!(
        history
            .iter()
            .all(|e| e.seconds > 0.0 && e.train.contains_key("Loss"))
    );

    let (best, best_accuracy) = best_valid_epoch(dir.path()).unwrap().unwrap();
    let valid_accuracy: Vec<f64> = history.iter().map(|e| e.valid["Accuracy"]).collect();
    let highest = valid_accuracy.iter().copied().fold(f64::MIN, f64::max);
    let first_highest = valid_accuracy.iter().position(|&a| a == highest).unwrap() + 1;
    assert_eq!(
        (best, best_accuracy),
        (first_highest, highest),
        "{valid_accuracy:?}"
    );
    assert!(
        best < epochs - 1,
        "the best epoch is one of the last two ({valid_accuracy:?}): nothing to keep"
    );

    let mut kept: Vec<usize> = std::fs::read_dir(dir.path().join("checkpoint"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("model-")?
                .strip_suffix(".mpk")?
                .parse()
                .ok()
        })
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, [best, epochs - 1, epochs]);

    let model = load_checkpoint_model(
        tiny_net::<B::InnerBackend>(device),
        dir.path(),
        best,
        &recorder(),
        device,
    )
    .unwrap();
    let reloaded = 100.0 * accuracy(|x| model.forward(x), &valid, 16, device);
    assert!(
        (reloaded - best_accuracy).abs() < 1e-6,
        "the checkpoint of epoch {best} gives {reloaded}%, the log {best_accuracy}%"
    );
    let absent = load_checkpoint_model(
        tiny_net::<B::InnerBackend>(device),
        dir.path(),
        epochs + 1,
        &recorder(),
        device,
    );
    assert!(matches!(
        absent,
        Err(CheckpointError::Record { part: "model", .. })
    ));
}

/// The largest `|w|` of the weights of the binary layers.
#[derive(Default)]
struct MaxAbs {
    path: Vec<String>,
    max: f32,
}

impl<B: Backend> ModuleVisitor<B> for MaxAbs {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.path.push(container_type.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self
            .path
            .last()
            .is_some_and(|t| t.contains("BitPlane") || t.contains("Binary"))
        {
            let m = values(param.val().abs().max().reshape([1]))[0];
            self.max = self.max.max(m);
        }
    }
}

/// Copies the gradients of a module's parameters.
struct CopyGrads<'a, B> {
    from: &'a GradientsParams,
    to: GradientsParams,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CopyGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.from.get::<B::InnerBackend, D>(param.id) {
            self.to.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

/// Every float parameter's values, in visiting order, with its owner's type.
#[derive(Default)]
struct Params<B> {
    owner: Vec<String>,
    all: Vec<(String, Vec<f32>)>,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleVisitor<B> for Params<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.owner.push(format!("{container_type}.{name}"));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.owner.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.all.push((self.owner.join("/"), values(param.val())));
    }
}

fn params<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<f32>)> {
    let mut visitor = Params::<B>::default();
    module.visit(&mut visitor);
    visitor.all
}

/// Whether two parameter lists are equal within `tol`; prints the first difference.
fn close(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], tol: f32) -> bool {
    if a.len() != b.len() {
        eprintln!("{} parameters against {}", a.len(), b.len());
        return false;
    }
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        let same = na == nb
            && va.len() == vb.len()
            && va.iter().zip(vb).all(|(x, y)| (x - y).abs() <= tol);
        if !same {
            eprintln!(
                "{na} differs from {nb}: {:?}… against {:?}…",
                &va[..va.len().min(4)],
                &vb[..vb.len().min(4)]
            );
            return false;
        }
    }
    true
}

/// Training 1 epoch, then resuming from its checkpoint for epoch 2, gives the network of 2
/// uninterrupted epochs: the model, Adam's moments and the schedule's step were all restored.
/// Resuming with the model alone (a fresh optimizer and schedule) does not.
pub fn resume_restores_optimizer_and_schedule<B: QnnAutodiffBackend>(device: &B::Device) {
    let (train, valid) = (two_halves(32), two_halves(8));
    let (epochs, steps) = (2, 4);
    // Separate but equal networks (clones would share their batch norms' running statistics).
    let net = || {
        B::seed(device, 11);
        tiny_net::<B>(device)
    };

    let straight = tempfile::tempdir().unwrap();
    let learner = new_learner(net(), (1e-2, 1e-3), epochs, steps);
    let (reference, _) = launch(learner, straight.path(), &train, &valid, epochs, None);

    let dir = tempfile::tempdir().unwrap();
    let learner = new_learner(net(), (1e-2, 1e-3), epochs, steps);
    let (_, first) = launch(learner, dir.path(), &train, &valid, 1, None);
    assert_eq!(first.len(), 1);
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), Some(1));
    let logs = |epoch: usize, split: &str| {
        let path = dir.path().join(split).join(format!("epoch-{epoch}"));
        std::fs::read_to_string(path.join("Loss.log")).unwrap_or_default()
    };
    let (first_train_log, first_valid_log) = (logs(1, "train"), logs(1, "valid"));
    assert!(!first_train_log.is_empty() && !first_valid_log.is_empty());

    // A fresh learner, as a restarted program builds it, then the checkpoint.
    let fresh = new_learner(tiny_net::<B>(device), (1e-2, 1e-3), epochs, steps);
    let learner = restore_checkpoint(fresh, dir.path(), 1, &recorder(), device).unwrap();
    let (resumed, second) = launch(learner, dir.path(), &train, &valid, epochs, Some(1));
    let epochs_seen: Vec<usize> = second.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs_seen, [2], "the resumed run trains epoch 2 only");
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), Some(2));
    // The resumed epoch's metrics are logged as epoch 2, not over epoch 1's (burn-train's own
    // file logger numbers a resumed run's first epoch 1).
    assert_eq!(
        logs(1, "train"),
        first_train_log,
        "epoch 1's training log changed"
    );
    assert_eq!(
        logs(1, "valid"),
        first_valid_log,
        "epoch 1's validation log changed"
    );
    assert!(
        !logs(2, "train").is_empty() && !logs(2, "valid").is_empty(),
        "the resumed epoch 2 has no logs"
    );
    let (reference, resumed) = (params(&reference), params(&resumed));
    assert!(
        close(&reference, &resumed, 1e-5),
        "1 + 1 epochs differ from 2 epochs"
    );

    // Control: the model alone, with a fresh Adam and schedule, ends elsewhere.
    let model_only = tempfile::tempdir().unwrap();
    let model_record = NamedMpkFileRecorder::<FullPrecisionSettings>::new()
        .load(dir.path().join("checkpoint").join("model-1"), device)
        .unwrap();
    let net_1 = tiny_net::<B>(device).load_record(model_record);
    // Epoch 2 alone, as the second half of a 2-epoch run would be without the restored state.
    let learner = new_learner(net_1, (1e-2, 1e-3), epochs, steps);
    let (diverged, _) = launch(learner, model_only.path(), &train, &valid, 1, None);
    assert!(
        !close(&reference, &params(&diverged), 1e-5),
        "the control should differ: the test would not notice a lost optimizer state"
    );
}

/// Every epoch's checkpoint, which burn-train's checkpointer threads read and write while the
/// next epoch trains, holds exactly that epoch's model. On a fused backend such a read racing
/// with the next optimizer step panicked in Burn 0.21 ("Should have handle for tensor") unless
/// the recorder and the optimizer take turns.
pub fn checkpoints_while_training<B: QnnAutodiffBackend>(device: &B::Device) {
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = (two_halves(64), two_halves(8));
    let epochs = 5;
    // Wide enough that reading a record overlaps the next epoch's steps.
    let config = NetConfig::new(1, 8, vec![], vec![512, 512]).with_classes(2);
    B::seed(device, 5);
    let learner = new_learner(config.init::<B>(device), (1e-2, 1e-3), epochs, 8);
    let keep_all = KeepLastNCheckpoints::new(epochs);
    let (net, history) = launch_with(
        learner,
        dir.path(),
        &train,
        &valid,
        epochs,
        None,
        keep_all,
        |t| t,
    );
    assert_eq!(history.len(), epochs);
    let saved = |epoch| {
        let model = config.init::<B::InnerBackend>(device);
        params(&load_checkpoint_model(model, dir.path(), epoch, &recorder(), device).unwrap())
    };
    assert!(
        close(&params(&net), &saved(epochs), 0.0),
        "the last checkpoint is not the trained model"
    );
    for epoch in 1..epochs {
        assert!(
            !close(&saved(epoch), &saved(epoch + 1), 0.0),
            "the checkpoints of epochs {epoch} and {} hold the same weights",
            epoch + 1
        );
    }
}

/// Resuming from a folder without checkpoints, or from a corrupt one, is an error, not a panic.
pub fn resume_errors<B: QnnAutodiffBackend>(device: &B::Device) {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), None);
    let folder = dir.path().join("checkpoint");
    std::fs::create_dir_all(&folder).unwrap();
    // Epoch 3 lacks its scheduler file: epoch 2 is the last complete one.
    for name in [
        "model-2.mpk",
        "optim-2.mpk",
        "scheduler-2.mpk",
        "model-3.mpk",
        "optim-3.mpk",
        "model-x.mpk",
    ] {
        std::fs::write(folder.join(name), b"not a record").unwrap();
    }
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), Some(2));
    let learner = new_learner(tiny_net::<B>(device), (1e-3, 1e-4), 1, 1);
    match restore_checkpoint(learner, dir.path(), 2, &recorder(), device) {
        Err(CheckpointError::Record { part, epoch, .. }) => {
            assert_eq!((part, epoch), ("model", 2));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a corrupt checkpoint was loaded"),
    }
    let learner = new_learner(tiny_net::<B>(device), (1e-3, 1e-4), 1, 1);
    let missing = restore_checkpoint(learner, dir.path(), 7, &recorder(), device);
    assert!(matches!(missing, Err(CheckpointError::Record { .. })));
}

/// `ClipLatentWeights` is its inner optimizer followed by clipping: latent weights are the
/// inner step's clipped to `[−1, 1]`, every other parameter is exactly the inner step's.
pub fn clipping_optimizer<B: QnnAutodiffBackend>(device: &B::Device) {
    B::seed(device, 5);
    let net = tiny_net::<B>(device);
    let train = two_halves(8);
    let batcher = ImageBatcher::for_dataset(&train);
    // One backward, copied for each optimizer: tiny gradients vary from one backward to the
    // next on parallel backends, and Adam's first step magnifies them.
    let grads_of = |net: &Net<B>| {
        let batch: burn_qnn::data::ImageBatch<B> = burn::data::dataloader::batcher::Batcher::batch(
            &batcher,
            train.items().to_vec(),
            device,
        );
        let loss = SquaredHingeLoss.forward(net.forward(batch.images), batch.targets);
        let grads = GradientsParams::from_grads(loss.backward(), net);
        let mut copy = CopyGrads::<B> {
            from: &grads,
            to: GradientsParams::new(),
            _b: std::marker::PhantomData,
        };
        net.visit(&mut copy);
        let copy = copy.to;
        (grads, copy)
    };
    // A step far too large, so that the inner optimizer leaves weights outside [−1, 1].
    let lr = 3.0;
    let (g1, g2) = grads_of(&net);
    let mut plain = AdamConfig::new().init::<B, Net<B>>();
    let unclipped = plain.step(lr, net.clone(), g1);
    let mut wrapped = ClipLatentWeights::new(AdamConfig::new().init::<B, Net<B>>());
    let clipped = wrapped.step(lr, net.clone(), g2);

    let (before, after) = (params(&unclipped), params(&clipped));
    let mut latent_seen = 0;
    for ((owner, u), (_, c)) in before.iter().zip(&after) {
        let latent = owner.ends_with(".weight")
            && (owner.contains("BitPlaneLinear") || owner.contains("BinaryLinear"));
        if latent {
            latent_seen += 1;
            assert!(
                u.iter().any(|v| v.abs() > 1.0),
                "{owner}: the step was too small"
            );
            let expected: Vec<f32> = u.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
            assert_eq!(c, &expected, "{owner}");
        } else {
            assert_eq!(c, u, "{owner} was changed by the clipping");
        }
    }
    assert_eq!(
        latent_seen,
        2,
        "{:?}",
        before.iter().map(|p| &p.0).collect::<Vec<_>>()
    );

    // The record is the inner optimizer's: saved, loaded into a fresh wrapper and used for
    // the next step, it gives the same step as the optimizer that never stopped.
    let bytes = BinBytesRecorder::<FullPrecisionSettings>::new()
        .record(wrapped.to_record(), ())
        .unwrap();
    let record = BinBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes, device)
        .unwrap();
    let mut reloaded =
        ClipLatentWeights::new(AdamConfig::new().init::<B, Net<B>>()).load_record(record);
    // (The bytes themselves are not compared: Adam's record is a hash map, serialized in
    // no fixed order.)
    let (g1, g2) = grads_of(&clipped);
    let (_, g3) = grads_of(&clipped);
    let next_a = wrapped.step(1e-2, clipped.clone(), g1);
    let next_b = reloaded.step(1e-2, clipped.clone(), g2);
    let mut fresh = ClipLatentWeights::new(AdamConfig::new().init::<B, Net<B>>());
    let next_fresh = fresh.step(1e-2, clipped.clone(), g3);
    assert!(close(&params(&next_a), &params(&next_b), 0.0));
    assert!(
        !close(&params(&next_a), &params(&next_fresh), 1e-6),
        "Adam's state made no difference: the round trip is not tested"
    );
}

/// `decay_over_run` goes from `--lr` at the first step to `--final-lr` at the last, and its
/// record resumes it mid-run.
#[test]
fn schedule_resumes_mid_run() {
    let _rng = crate::reference::backend_rng_lock();
    type B = NdArray;
    let mut straight = decay_over_run(1e-3, 3e-7, 5, 7).unwrap();
    let all: Vec<f64> = (0..35).map(|_| straight.step()).collect();
    assert!((all[0] / 1e-3 - 1.0).abs() < 1e-12, "{}", all[0]);
    assert!((all[34] / 3e-7 - 1.0).abs() < 1e-9, "{}", all[34]);
    let mut first = decay_over_run(1e-3, 3e-7, 5, 7).unwrap();
    (0..14).for_each(|_| {
        first.step();
    });
    let record = LrScheduler::to_record::<B>(&first);
    let mut resumed = decay_over_run(1e-3, 3e-7, 5, 7)
        .unwrap()
        .load_record::<B>(record);
    let rest: Vec<f64> = (14..35).map(|_| resumed.step()).collect();
    assert_eq!(rest, all[14..]);
    assert!(decay_over_run(1e-3, 3e-7, 0, 7).is_err());
    assert!(decay_over_run(1e-3, 3e-7, 5, 0).is_err());
    assert!(decay_over_run(-1.0, 3e-7, 5, 1).is_err());
}

/// The atomic recorder leaves only the final file, and a failed save leaves nothing.
#[test]
fn atomic_recorder_leaves_no_partial_file() {
    let _rng = crate::reference::backend_rng_lock();
    type B = NdArray;
    let dir = tempfile::tempdir().unwrap();
    let net = tiny_net::<B>(&Default::default());
    // Reading the parameters initializes them (they are lazy): the clone saved below has them.
    let expected = params(&net);
    net.clone()
        .save_file(dir.path().join("net"), &recorder())
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["net.mpk"]);
    let loaded = tiny_net::<B>(&Default::default())
        .load_file(dir.path().join("net"), &recorder(), &Default::default())
        .unwrap();
    assert!(close(&expected, &params(&loaded), 0.0));
    // The target is a folder: the rename fails, and no partial file is left behind.
    std::fs::create_dir(dir.path().join("busy.mpk")).unwrap();
    std::fs::write(dir.path().join("busy.mpk").join("x"), b"x").unwrap();
    assert!(net.save_file(dir.path().join("busy"), &recorder()).is_err());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["busy.mpk", "net.mpk"]);
}

/// A save that fails part-way (here: a file-size limit just below the record's size, as a full
/// disk or a quota would) returns an error and leaves the previous checkpoint of that name
/// intact and loadable, with no temporary file behind. The limit is set in a child process (this
/// test binary run again on this test alone), so that it does not hit the other tests.
#[cfg(unix)]
#[test]
fn failed_save_keeps_the_previous_checkpoint() {
    const CHILD: &str = "BURN_QNN_TEST_FILE_SIZE_LIMIT_CHILD";
    const NAME: &str = "learner::failed_save_keeps_the_previous_checkpoint";
    type B = NdArray;
    let device = Default::default();
    if let Some(dir) = std::env::var_os(CHILD) {
        let dir = std::path::PathBuf::from(dir);
        // Another network of the same shape: the record has the size of the previous one.
        let net = tiny_net::<B>(&device);
        let _ = params(&net);
        // Its exact size, written once where no limit applies yet.
        net.clone()
            .save_file(dir.join("scratch"), &recorder())
            .unwrap();
        let size = std::fs::metadata(dir.join("scratch.mpk")).unwrap().len();
        std::fs::remove_file(dir.join("scratch.mpk")).unwrap();
        // SAFETY: plain libc calls on a value that lives across them; the child runs this one
        // test alone.
        let old = unsafe {
            assert_ne!(libc::signal(libc::SIGXFSZ, libc::SIG_IGN), libc::SIG_ERR);
            let mut old: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
            let limit = libc::rlimit {
                rlim_cur: (size - 1) as libc::rlim_t,
                rlim_max: old.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
            old
        };
        let result = net.save_file(dir.join("checkpoint").join("model-1"), &recorder());
        // SAFETY: as above; the soft limit goes back to what it was (at most the hard limit).
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &old), 0) };
        let report = match result {
            Ok(()) => "saved".to_string(),
            Err(e) => format!("error: {e}"),
        };
        std::fs::write(dir.join("child-report"), report).unwrap();
        return;
    }

    let _rng = crate::reference::backend_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let net = tiny_net::<B>(&device);
    let expected = params(&net);
    net.save_file(checkpoint.join("model-1"), &recorder())
        .unwrap();
    let before = std::fs::read(checkpoint.join("model-1.mpk")).unwrap();

    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
    // The child ran the test (a wrong name would run no test and succeed too).
    let report = std::fs::read_to_string(dir.path().join("child-report")).unwrap();
    assert!(
        report.starts_with("error: ") && report.contains("model-1.mpk"),
        "a save under the file-size limit must fail, naming the file: {report}"
    );
    assert_eq!(
        std::fs::read(checkpoint.join("model-1.mpk")).unwrap(),
        before
    );
    let loaded = tiny_net::<B>(&device)
        .load_file(checkpoint.join("model-1"), &recorder(), &device)
        .unwrap();
    assert!(close(&expected, &params(&loaded), 0.0));
    let names: Vec<String> = std::fs::read_dir(&checkpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["model-1.mpk"], "no temporary file is left");
}

/// An epoch is complete only with all three parts under burn-train's names: a part under two
/// spellings (`model-3`, `model-03`) is not two parts, and neither spelling makes up for a
/// missing one.
/// A checkpoint of another model, or one whose tensor shapes were changed on disk, is a typed
/// error naming the tensor, before Burn builds tensors from it (Burn's own loading panics on
/// the second and loads the first silently).
#[test]
fn foreign_or_corrupt_checkpoints_are_errors() {
    let _rng = crate::reference::backend_rng_lock();
    type B = NdArray;
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("checkpoint");
    let saved = tiny_net::<B>(&device);
    saved
        .clone()
        .save_file(folder.join("model-1"), &recorder())
        .unwrap();
    let message = |result: Result<Net<B>, CheckpointError>| match result {
        Err(CheckpointError::Record {
            part: "model",
            epoch: 1,
            message,
            ..
        }) => message,
        other => panic!("expected a model record error, got {:?}", other.map(|_| ())),
    };

    // The same shapes load, with the file's values.
    let loaded =
        load_checkpoint_model(tiny_net::<B>(&device), dir.path(), 1, &recorder(), &device).unwrap();
    let bytes = |net: Net<B>| {
        Recorder::<B>::record(
            &BinBytesRecorder::<FullPrecisionSettings>::default(),
            net.into_record(),
            (),
        )
        .unwrap()
    };
    // The same as Burn's own loading of the file.
    let burns = tiny_net::<B>(&device)
        .load_file(folder.join("model-1"), &recorder(), &device)
        .unwrap();
    assert_eq!(bytes(loaded), bytes(burns));

    // Another width: the first tensor that differs is named with both shapes.
    let wider = NetConfig::new(1, 8, vec![], vec![24])
        .with_classes(2)
        .init::<B>(&device);
    let text = message(load_checkpoint_model(
        wider,
        dir.path(),
        1,
        &recorder(),
        &device,
    ));
    assert!(
        text.contains("in the file but") && text.contains("[64, 16]") && text.contains("[64, 24]"),
        "{text}"
    );

    // A shape changed in the file (the first layer's [64, 16] made [64, 17]) no longer fits
    // its bytes.
    let path = folder.join("model-1.mpk");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(3)
        .position(|w| w == [0x92, 64, 16])
        .expect("the first layer's shape [64, 16] as MessagePack");
    bytes[at + 2] = 17;
    std::fs::write(&path, &bytes).unwrap();
    let text = message(load_checkpoint_model(
        tiny_net::<B>(&device),
        dir.path(),
        1,
        &recorder(),
        &device,
    ));
    assert!(
        text.contains("bytes, not what") && text.contains("[64, 17]"),
        "{text}"
    );

    // Cut short: not a record.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let text = message(load_checkpoint_model(
        tiny_net::<B>(&device),
        dir.path(),
        1,
        &recorder(),
        &device,
    ));
    assert!(text.contains("not a record"), "{text}");
}

#[test]
fn complete_epochs_need_three_distinct_parts() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("checkpoint");
    std::fs::create_dir_all(&folder).unwrap();
    let write = |names: &[&str]| {
        for name in names {
            std::fs::write(folder.join(name), b"record").unwrap();
        }
    };
    write(&["model-2.mpk", "optim-2.mpk", "scheduler-2.mpk"]);
    write(&["model-3.mpk", "model-03.mpk", "optim-3.mpk"]);
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), Some(2));
    // Other spellings of epoch 3's scheduler do not complete it either.
    write(&["scheduler-03.mpk", "scheduler-+3.mpk", "optim-03.mpk"]);
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), Some(2));
    write(&["scheduler-3.mpk"]);
    assert_eq!(last_checkpoint(dir.path(), "mpk").unwrap(), Some(3));
}

/// The step implementations: the training output's loss is the squared hinge loss of the
/// scores, and the inference step of the valid model gives the same scores.
#[test]
fn steps_report_loss_scores_and_targets() {
    let _rng = crate::reference::backend_rng_lock();
    use burn_train::{InferenceStep, TrainStep};
    type AD = Autodiff<NdArray>;
    let device = Default::default();
    let net = tiny_net::<AD>(&device);
    let data = two_halves(6);
    let batcher = ImageBatcher::for_dataset(&data);
    let batch: burn_qnn::data::ImageBatch<AD> =
        burn::data::dataloader::batcher::Batcher::batch(&batcher, data.items().to_vec(), &device);
    let out = TrainStep::step(&net, batch.clone());
    let scores = net.forward(batch.images.clone());
    let loss = SquaredHingeLoss.forward(scores.clone(), batch.targets.clone());
    assert_eq!(values(out.item.loss.clone()), values(loss));
    assert_eq!(values(out.item.output.clone()), values(scores.clone()));
    let targets: Vec<i64> = out.item.targets.clone().into_data().to_vec().unwrap();
    assert_eq!(targets, [0, 1, 0, 1, 0, 1]);
    assert!(!out.grads.is_empty(), "no gradients");
    let valid_batch: burn_qnn::data::ImageBatch<NdArray> =
        burn::data::dataloader::batcher::Batcher::batch(&batcher, data.items().to_vec(), &device);
    let inference = InferenceStep::step(&net.valid(), valid_batch);
    assert_eq!(inference.output.dims(), [6, 2]);
    let _: Tensor<NdArray, 1, Int> = inference.targets;
}

/// `TrackFlips` counts, per binary layer, the weights whose sign a step changed (checked
/// against the weights before and after each step), and `FlipRatioMetric` reports it through
/// burn-train: per epoch, the flips of the epoch's steps over its weights and steps.
pub fn flip_ratio<B: QnnAutodiffBackend>(device: &B::Device) {
    use burn_qnn::learner::{FlipCounter, FlipRatioMetric, TrackFlips};

    // Counted against the definition, step by step.
    B::seed(device, 5);
    let mut net = tiny_net::<B>(device);
    let flips = FlipCounter::new();
    let mut optim = TrackFlips::new(AdamConfig::new().init(), flips.clone());
    let batch =
        ImageBatcher::for_dataset(&two_halves(8)).batch(two_halves(8).items().to_vec(), device);
    let mut expected = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for step in 1..=3u64 {
        let signs = |net: &Net<B>| -> Vec<(String, Vec<bool>)> {
            let mut layers = BinaryWeights::default();
            net.visit(&mut layers);
            layers.found
        };
        let before = signs(&net);
        let loss = net.forward(batch.images.clone()).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(0.05, net, grads);
        for ((name, was), (_, now)) in before.iter().zip(signs(&net)) {
            let changed = was.iter().zip(&now).filter(|(a, b)| a != b).count() as u64;
            let entry = expected.entry(name.clone()).or_default();
            *entry = (was.len() as u64, entry.1 + changed);
        }
        let counts = flips.counts();
        assert_eq!(counts.steps, step);
        let got: std::collections::BTreeMap<String, (u64, u64)> = counts
            .layers
            .iter()
            .map(|(name, l)| (name.clone(), (l.weights, l.flips)))
            .collect();
        assert_eq!(got, expected, "step {step}");
    }
    let total: u64 = expected.values().map(|(_, f)| f).sum();
    assert!(total > 0, "the steps should flip some weights");
    assert_eq!(flips.counts().of(None).flips, total);

    // Through the learner: the metrics are logged per epoch, as ratios.
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = (two_halves(48), two_halves(16));
    let epochs = 2;
    B::seed(device, 3);
    let net = tiny_net::<B>(device);
    let flips = FlipCounter::new();
    let per_layer = FlipRatioMetric::per_layer(&flips, &net);
    assert_eq!(
        per_layer.len(),
        expected.len(),
        "one metric per binary layer"
    );
    let optim = TrackFlips::new(
        ClipLatentWeights::new(AdamConfig::new().init()),
        flips.clone(),
    );
    let schedule = decay_over_run(1e-2, 1e-3, epochs, 6).unwrap();
    let learner = Learner::new(net, optim, schedule);
    let metric = FlipRatioMetric::new(flips.clone());
    let (_, history) = launch_with(
        learner,
        dir.path(),
        &train,
        &valid,
        epochs,
        None,
        KeepLastNCheckpoints::new(1),
        move |mut training| {
            training = training.metric_train_numeric(metric);
            for m in per_layer {
                training = training.metric_train_numeric(m);
            }
            training
        },
    );
    assert_eq!(flips.counts().steps, 12);
    for e in &history {
        let ratio = e.train["Flip Ratio"];
        assert!((0.0..=1.0).contains(&ratio), "{e:?}");
        for name in expected.keys() {
            let layer = e.train[&format!("Flip Ratio {name}")];
            assert!((0.0..=1.0).contains(&layer), "{e:?}");
        }
    }
    assert!(history[0].train["Flip Ratio"] > 0.0, "{history:?}");
}

/// The sign bits (`w < 0`) of each binary layer's weight, by layer path, in visiting order.
#[derive(Default)]
struct BinaryWeights {
    path: Vec<(String, String)>,
    found: Vec<(String, Vec<bool>)>,
}

impl<B: Backend> ModuleVisitor<B> for BinaryWeights {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_owned(), container_type.to_owned()));
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((field, owner)) = self.path.last() else {
            return;
        };
        let binary = [
            "Struct:BinaryLinear",
            "Struct:BinaryConv2d",
            "Struct:BitPlaneConv2d",
            "Struct:BitPlaneLinear",
        ];
        if field == "weight" && binary.contains(&owner.as_str()) {
            let owner_path: Vec<&str> = self.path[..self.path.len() - 1]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            let negative = values(param.val()).iter().map(|&w| w < 0.0).collect();
            self.found.push((owner_path.join("."), negative));
        }
    }
}

/// Two workers through burn-train's multi-device strategy train exactly as one device with
/// gradient accumulation over the same pairs of batches: each round sums the gradients of one
/// batch of each device's slice (burn-train's split: the first half of the items to the first
/// device, the second half to the second) and steps once.
pub fn multi_device_equals_accumulation<B: QnnAutodiffBackend>(device: &B::Device) {
    use burn_qnn::learner::{data_parallel, optimizer_steps_per_epoch};

    let (train, valid) = (two_halves(64), two_halves(16));
    let (epochs, batch, devices) = (2, 8, 2);
    let rounds = optimizer_steps_per_epoch(train.len(), batch, devices);
    assert_eq!(rounds, 4);
    // The single device's order: batch k of the first half, batch k of the second, …
    let items = train.items();
    let half = items.len() / 2;
    let interleaved: Vec<ImageItem> = (0..rounds)
        .flat_map(|k| {
            let first = &items[k * batch..(k + 1) * batch];
            let second = &items[half + k * batch..half + (k + 1) * batch];
            first.iter().chain(second).cloned()
        })
        .collect();
    let interleaved = ImageDataset::new(interleaved, train.shape(), 2, 255);

    let run = |data: &ImageDataset, parallel: bool| {
        let dir = tempfile::tempdir().unwrap();
        B::seed(device, 3);
        // A constant rate: the schedule steps once per round on several devices, per batch on one.
        let learner = new_learner(tiny_net::<B>(device), (1e-2, 1e-2), epochs, rounds);
        let devices = vec![device.clone(); devices];
        let (net, _) = launch_with(
            learner,
            dir.path(),
            data,
            &valid,
            epochs,
            None,
            KeepLastNCheckpoints::new(1),
            move |training| {
                if parallel {
                    training.with_training_strategy(data_parallel(devices))
                } else {
                    training.grads_accumulation(2)
                }
            },
        );
        net
    };
    let parallel = run(&train, true);
    let accumulated = run(&interleaved, false);
    let (a, b) = (ParamValues::of(&parallel), ParamValues::of(&accumulated));
    assert_eq!(a.0.len(), b.0.len());
    let start = ParamValues::of(&{
        B::seed(device, 3);
        tiny_net::<B>(device).valid()
    });
    assert_ne!(a.0, start.0, "training must have moved the parameters");
    for (i, (x, y)) in a.0.iter().zip(&b.0).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "parameter value {i}: {x} on two devices, {y} with accumulation"
        );
    }
}

/// Every parameter's values in visiting order (running statistics of batch norm left out:
/// several devices average their updates of it, one device applies them in turn).
#[derive(Default)]
struct ParamValues(Vec<f32>, Vec<String>);

impl ParamValues {
    fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut values = Self::default();
        module.visit(&mut values);
        values
    }
}

impl<B: Backend> ModuleVisitor<B> for ParamValues {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.1.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.1.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self
            .1
            .last()
            .is_some_and(|field| field.starts_with("running_"))
        {
            self.0.extend(values(param.val()));
        }
    }
}
