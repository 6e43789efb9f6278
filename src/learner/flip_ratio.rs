//! The flip ratio of binary weights (Larq's `FlipRatio`): the fraction of a layer's binary
//! weights whose sign an optimizer step changed, counted by an optimizer wrapper
//! ([`TrackFlips`]) and reported as a burn-train metric ([`FlipRatioMetric`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Tensor};
use burn_train::metric::state::{FormatOptions, NumericMetricState};
use burn_train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::nn::LatentPath;

/// The flips counted so far for one binary layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerFlips {
    /// The layer's binary weights.
    pub weights: u64,
    /// Sign changes summed over every step counted.
    pub flips: u64,
}

/// What a [`FlipCounter`] has counted: the optimizer steps and, per binary layer (named by its
/// path in the model, e.g. `convs.2`), its weights and flips.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlipCounts {
    /// Optimizer steps counted.
    pub steps: u64,
    /// Per binary layer, by path.
    pub layers: BTreeMap<String, LayerFlips>,
}

impl FlipCounts {
    /// The totals of `layer` (`None`: all binary layers together).
    pub fn of(&self, layer: Option<&str>) -> LayerFlips {
        match layer {
            Some(name) => self.layers.get(name).copied().unwrap_or_default(),
            None => self
                .layers
                .values()
                .fold(LayerFlips::default(), |sum, layer| LayerFlips {
                    weights: sum.weights + layer.weights,
                    flips: sum.flips + layer.flips,
                }),
        }
    }
}

/// A shared tally of binary-weight sign flips: [`TrackFlips`] writes it at each optimizer step,
/// [`FlipRatioMetric`]s read it (from burn-train's metric thread). Clones share the tally.
#[derive(Debug, Clone, Default)]
pub struct FlipCounter {
    counts: Arc<Mutex<FlipCounts>>,
}

impl FlipCounter {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of what has been counted so far.
    pub fn counts(&self) -> FlipCounts {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlipCounts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wraps an optimizer and counts, at each of its steps, the binary weights whose sign it
/// changed (the `weight` of every `BinaryLinear`, `BinaryConv2d`, `BitPlaneLinear` and
/// `BitPlaneConv2d`; the sign of a latent weight `w` is `+1` for `w ≥ 0`, `−1` otherwise), into
/// a [`FlipCounter`]. The steps themselves and the record are the inner optimizer's.
///
/// Counting costs a comparison of each binary weight's signs and one small read-back per binary
/// layer per step.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::{GradientsParams, Optimizer, SgdConfig};
/// use burn::tensor::Tensor;
/// use burn_qnn::learner::{FlipCounter, TrackFlips};
/// use burn_qnn::nn::BinaryLinearConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = BinaryLinearConfig::new(4, 3).init::<B>(&device);
/// let flips = FlipCounter::new();
/// let mut optim = TrackFlips::new(SgdConfig::new().init(), flips.clone());
/// let x = Tensor::<B, 2>::ones([2, 4], &device);
/// let grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
/// let _layer = optim.step(10.0, layer, grads);
/// let counts = flips.counts();
/// assert_eq!(counts.steps, 1);
/// assert_eq!(counts.of(None).weights, 12);
/// ```
#[derive(Debug, Clone)]
pub struct TrackFlips<O> {
    inner: O,
    counter: FlipCounter,
}

impl<O> TrackFlips<O> {
    /// Counts the flips of `inner`'s steps into `counter`.
    pub fn new(inner: O, counter: FlipCounter) -> Self {
        Self { inner, counter }
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The tally it writes.
    pub fn counter(&self) -> &FlipCounter {
        &self.counter
    }
}

impl<O, M, B> Optimizer<M, B> for TrackFlips<O>
where
    O: Optimizer<M, B>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    type Record = O::Record;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        super::record_reads::exclusively(|| {
            let before = Signs::of(&module);
            let module = self.inner.step(lr, module, grads);
            before.count_flips(&module, &self.counter);
            module
        })
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        super::record_reads::exclusively(|| {
            let before = Signs::of(&module);
            let module = self.inner.step_multi(lr, module, grads);
            before.count_flips(&module, &self.counter);
            module
        })
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
            ..self
        }
    }
}

/// The negative-sign masks of a module's binary weights, by parameter, with their layers'
/// names, as a [`ModuleVisitor`]: it records them on a first walk, and on a walk of the
/// stepped module counts the changes.
struct Signs<B: AutodiffBackend> {
    path: LatentPath,
    /// Per binary weight: its layer's name and where it was negative before the step.
    before: HashMap<ParamId, (String, Tensor<B::InnerBackend, 1, Bool>)>,
    /// Per layer: (weights, flips) of this step, filled by the second walk.
    flips: BTreeMap<String, LayerFlips>,
}

impl<B: AutodiffBackend> Signs<B> {
    fn of<M: AutodiffModule<B>>(module: &M) -> Self {
        let mut signs = Self {
            path: LatentPath::default(),
            before: HashMap::new(),
            flips: BTreeMap::new(),
        };
        module.visit(&mut signs);
        signs
    }

    fn count_flips<M: AutodiffModule<B>>(mut self, module: &M, counter: &FlipCounter) {
        let recorded = std::mem::take(&mut self.before);
        let mut after = Self {
            path: LatentPath::default(),
            before: HashMap::new(),
            flips: BTreeMap::new(),
        };
        module.visit(&mut after);
        for (id, (name, negative)) in after.before {
            let Some((_, was_negative)) = recorded.get(&id) else {
                continue;
            };
            let weights = negative.shape().num_elements() as u64;
            let changed = negative
                .to_device(&was_negative.device())
                .equal(was_negative.clone())
                .bool_not()
                .int()
                .sum()
                .into_scalar();
            let layer = self.flips.entry(name).or_default();
            layer.weights += weights;
            layer.flips += count_of(changed);
        }
        let mut counts = counter.lock();
        counts.steps += 1;
        for (name, step) in self.flips {
            let layer = counts.layers.entry(name).or_default();
            layer.weights = step.weights;
            layer.flips += step.flips;
        }
    }
}

/// A backend's integer element as a count.
fn count_of<E: burn::tensor::ElementConversion>(value: E) -> u64 {
    value.elem::<i64>().max(0) as u64
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Signs<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.at_binary_weight() {
            let w = param.val().inner();
            let n = w.shape().num_elements();
            let negative = w.reshape([n]).lower_elem(0.0);
            self.before
                .insert(param.id, (self.path.owner_name(), negative));
        }
    }
}

/// The flip ratio as a burn-train metric: the fraction of binary weights (of one layer, or of
/// all) whose sign changed per optimizer step, read from the [`FlipCounter`] a [`TrackFlips`]
/// writes.
///
/// Each update reports the mean over the steps counted since its previous update (burn-train
/// updates metrics on a thread of its own, possibly a step behind), so the epoch mean is the
/// mean flip ratio of the epoch's steps. Add it with `metric_train_numeric`.
///
/// ```
/// use burn_qnn::learner::{FlipCounter, FlipRatioMetric};
///
/// let flips = FlipCounter::new();
/// let all = FlipRatioMetric::new(flips.clone());
/// let first_conv = FlipRatioMetric::layer(flips, "convs.0");
/// # let _ = (all, first_conv);
/// ```
#[derive(Clone)]
pub struct FlipRatioMetric {
    name: MetricName,
    counter: FlipCounter,
    layer: Option<String>,
    /// `(steps, flips)` at the previous update.
    seen: (u64, u64),
    last: f64,
    state: NumericMetricState,
}

impl FlipRatioMetric {
    /// The flip ratio of all binary layers together, named `Flip Ratio`.
    pub fn new(counter: FlipCounter) -> Self {
        Self::named("Flip Ratio".to_owned(), counter, None)
    }

    /// The flip ratio of the binary layer at `path` (as [`FlipCounts::layers`] names it, e.g.
    /// `convs.0`), named `Flip Ratio <path>`.
    pub fn layer(counter: FlipCounter, path: &str) -> Self {
        Self::named(format!("Flip Ratio {path}"), counter, Some(path.to_owned()))
    }

    /// One metric per binary layer of `module`.
    pub fn per_layer<B: AutodiffBackend, M: AutodiffModule<B>>(
        counter: &FlipCounter,
        module: &M,
    ) -> Vec<Self> {
        let signs = Signs::of(module);
        let names: std::collections::BTreeSet<String> =
            signs.before.into_values().map(|(name, _)| name).collect();
        names
            .iter()
            .map(|name| Self::layer(counter.clone(), name))
            .collect()
    }

    fn named(name: String, counter: FlipCounter, layer: Option<String>) -> Self {
        Self {
            name: Arc::new(name),
            counter,
            layer,
            seen: (0, 0),
            last: 0.0,
            state: NumericMetricState::new(),
        }
    }

    /// The mean flip ratio of the steps counted since the previous call (the previous value
    /// when there are none).
    fn ratio_since_last(&mut self) -> f64 {
        let counts = self.counter.counts();
        let totals = counts.of(self.layer.as_deref());
        let (steps, flips) = (counts.steps, totals.flips);
        let new_steps = steps.saturating_sub(self.seen.0);
        if new_steps > 0 && totals.weights > 0 {
            let new_flips = flips.saturating_sub(self.seen.1);
            self.last = new_flips as f64 / (totals.weights * new_steps) as f64;
        }
        self.seen = (steps, flips);
        self.last
    }
}

impl std::fmt::Debug for FlipRatioMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlipRatioMetric")
            .field("name", &self.name)
            .field("layer", &self.layer)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Metric for FlipRatioMetric {
    type Input = ();

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn description(&self) -> Option<String> {
        Some("fraction of binary weights whose sign an optimizer step changed".to_owned())
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }

    fn update(&mut self, _item: &(), _metadata: &MetricMetadata) -> SerializedEntry {
        let ratio = self.ratio_since_last();
        self.state
            .update(ratio, 1, FormatOptions::new(self.name()).precision(5))
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for FlipRatioMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
