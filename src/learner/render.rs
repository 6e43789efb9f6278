//! A compact progress renderer for burn-train: a progress bar and one line per epoch.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use burn_train::{
    metric::{MetricDefinition, MetricEntry, MetricId, NumericEntry},
    renderer::{
        EvaluationName, EvaluationProgress, MetricState, MetricsRenderer,
        MetricsRendererEvaluation, MetricsRendererTraining, ProgressType, TrainingProgress,
    },
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// The means over one epoch of the numeric metrics a learner reported, by metric name (e.g.
/// `Loss`, `Accuracy` in %, `Learning Rate`), each weighted by the items of its batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch, from 1 (burn-train's numbering).
    pub epoch: usize,
    /// Training metrics.
    pub train: BTreeMap<String, f64>,
    /// Validation metrics (empty without validation data).
    pub valid: BTreeMap<String, f64>,
    /// Seconds from the end of the previous epoch (or the start) to the end of this one.
    pub seconds: f64,
}

/// Weighted sums of metric values.
#[derive(Default)]
struct Means(BTreeMap<String, (f64, f64)>);

impl Means {
    fn add(&mut self, name: String, entry: &NumericEntry) {
        let weight = match entry {
            NumericEntry::Value(_) => 1.0,
            NumericEntry::Aggregated { count, .. } => (*count).max(1) as f64,
        };
        let sums = self.0.entry(name).or_default();
        sums.0 += entry.current() * weight;
        sums.1 += weight;
    }

    fn means(&self) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(name, (sum, weight))| (name.clone(), sum / weight))
            .collect()
    }
}

struct Epoch {
    number: usize,
    train: Means,
    valid: Means,
}

/// A burn-train [`MetricsRenderer`] for terminals and logs alike: a progress bar on standard
/// error (when it is a terminal) over the items of the current epoch, and on standard output
/// one line per epoch with the epoch means of the numeric metrics of both splits:
///
/// ```text
/// epoch   2/10: train Accuracy 61.20 %, Learning Rate 4.27e-4, Loss 0.7012 | valid Accuracy 64.00 %, Loss 0.6503 | 41.3 s
/// ```
///
/// Burn's plain CLI renderer prints every batch; its terminal UI needs burn-train's `tui`
/// feature (ratatui), which this crate does not build. [`history`](Self::history) keeps the
/// lines' numbers as [`EpochMetrics`] for the caller.
///
/// ```
/// use burn_qnn::learner::EpochSummaryRenderer;
///
/// let renderer = EpochSummaryRenderer::new(10).with_progress_bar(false);
/// let history = renderer.history(); // read it after `SupervisedTraining::launch`
/// assert!(history.lock().unwrap().is_empty());
/// ```
pub struct EpochSummaryRenderer {
    names: HashMap<MetricId, String>,
    pending_train: Vec<(MetricId, NumericEntry)>,
    pending_valid: Vec<(MetricId, NumericEntry)>,
    current: Option<Epoch>,
    epochs: usize,
    bar: ProgressBar,
    lines: bool,
    started: Instant,
    history: Arc<Mutex<Vec<EpochMetrics>>>,
}

impl EpochSummaryRenderer {
    /// A renderer for a run of `epochs` epochs (only shown in the lines, `epoch 2/10`).
    pub fn new(epochs: usize) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {pos}/{len} items, {elapsed} ({eta} left) {prefix}",
            )
            .expect("a valid template"),
        );
        Self {
            names: HashMap::new(),
            pending_train: Vec::new(),
            pending_valid: Vec::new(),
            current: None,
            epochs,
            bar,
            lines: true,
            started: Instant::now(),
            history: Arc::default(),
        }
    }

    /// Whether to draw the progress bar (default `true`; it is never drawn when standard
    /// error is not a terminal).
    pub fn with_progress_bar(self, visible: bool) -> Self {
        if !visible {
            self.bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        self
    }

    /// Whether to print one line per epoch on standard output (default `true`). Without
    /// them, the progress bar shows the last epoch's line and stays on screen when training
    /// ends.
    pub fn with_epoch_lines(mut self, lines: bool) -> Self {
        self.lines = lines;
        self
    }

    /// The per-epoch metrics, shared: the renderer appends each epoch as it ends (the last
    /// one when training ends).
    pub fn history(&self) -> Arc<Mutex<Vec<EpochMetrics>>> {
        self.history.clone()
    }

    fn name(&self, id: &MetricId) -> String {
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("{id:?}"))
    }

    /// Makes `number` the current epoch, closing the previous one.
    fn enter(&mut self, number: usize) {
        if self.current.as_ref().is_some_and(|e| e.number == number) {
            return;
        }
        self.finish_epoch();
        self.current = Some(Epoch {
            number,
            train: Means::default(),
            valid: Means::default(),
        });
    }

    fn finish_epoch(&mut self) {
        let Some(epoch) = self.current.take() else {
            return;
        };
        let metrics = EpochMetrics {
            epoch: epoch.number,
            train: epoch.train.means(),
            valid: epoch.valid.means(),
            seconds: self.started.elapsed().as_secs_f64(),
        };
        self.started = Instant::now();
        let line = format_line(&metrics, self.epochs);
        if self.lines {
            self.bar.suspend(|| println!("{line}"));
        } else {
            self.bar.set_prefix(line);
        }
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(metrics);
    }

    fn show(&self, split: &str, item: &TrainingProgress) {
        if let Some(progress) = &item.progress {
            self.bar.set_length(progress.items_total as u64);
            self.bar.set_position(progress.items_processed as u64);
        }
        self.bar.set_message(format!(
            "epoch {}/{} {split}",
            item.global_progress.items_processed, item.global_progress.items_total
        ));
    }
}

fn format_line(metrics: &EpochMetrics, epochs: usize) -> String {
    let split = |values: &BTreeMap<String, f64>| {
        values
            .iter()
            .map(|(name, value)| format_metric(name, *value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = format!(
        "epoch {:>3}/{epochs}: train {}",
        metrics.epoch,
        split(&metrics.train)
    );
    if !metrics.valid.is_empty() {
        line += &format!(" | valid {}", split(&metrics.valid));
    }
    line + &format!(" | {:.1} s", metrics.seconds)
}

fn format_metric(name: &str, value: f64) -> String {
    match name {
        "Accuracy" => format!("{name} {value:.2} %"),
        "Learning Rate" => format!("{name} {value:.2e}"),
        _ => format!("{name} {value:.4}"),
    }
}

fn numeric(state: MetricState) -> Option<(MetricId, NumericEntry)> {
    match state {
        MetricState::Numeric(MetricEntry { metric_id, .. }, value) => Some((metric_id, value)),
        MetricState::Generic(_) => None,
    }
}

impl MetricsRendererTraining for EpochSummaryRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.pending_train.extend(numeric(state));
    }

    fn update_valid(&mut self, state: MetricState) {
        self.pending_valid.extend(numeric(state));
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.enter(item.global_progress.items_processed);
        for (id, value) in std::mem::take(&mut self.pending_train) {
            let name = self.name(&id);
            if let Some(epoch) = &mut self.current {
                epoch.train.add(name, &value);
            }
        }
        self.show("train", &item);
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.enter(item.global_progress.items_processed);
        for (id, value) in std::mem::take(&mut self.pending_valid) {
            let name = self.name(&id);
            if let Some(epoch) = &mut self.current {
                epoch.valid.add(name, &value);
            }
        }
        self.show("valid", &item);
    }

    fn on_train_end(
        &mut self,
        summary: Option<burn_train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        self.finish_epoch();
        if self.lines {
            self.bar.finish_and_clear();
        } else {
            self.bar.finish();
        }
        if let Some(summary) = summary {
            println!("{summary}");
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for EpochSummaryRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochSummaryRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
