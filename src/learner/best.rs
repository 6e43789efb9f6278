//! The best-validation checkpoint, and the per-epoch history as burn-train's summary gives it.
//!
//! The reference code reports the test error of the epoch with the best validation error.
//! [`keep_last_and_best`] keeps that epoch's checkpoint next to the last ones, and
//! [`best_valid_epoch`] finds it from the metrics burn-train logged; [`summary_history`] reads
//! the per-epoch means of every metric from the same logs.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn_train::{
    LearnerSummary,
    checkpoint::{
        ComposedCheckpointingStrategy, KeepLastNCheckpoints, MetricCheckpointingStrategy,
    },
    metric::{
        AccuracyMetric,
        store::{Aggregate, Direction, Split},
    },
};

use super::EpochMetrics;

/// The name of burn-train's accuracy metric, as its logs and summaries use it.
pub const ACCURACY: &str = "Accuracy";

/// Why burn-train's logged metrics could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot read burn-train's metric logs in {path}: {message}")]
pub struct SummaryError {
    /// The training directory (the one given to `SupervisedTraining::new`).
    pub path: std::path::PathBuf,
    /// burn-train's message.
    pub message: String,
}

/// burn-train's checkpointing strategy that keeps the checkpoints of the last `last` epochs
/// and of the epoch with the highest mean validation accuracy (burn-train's
/// [`AccuracyMetric`] on the validation split; the first such epoch on ties): its
/// `KeepLastNCheckpoints` and `MetricCheckpointingStrategy` composed, a checkpoint deleted
/// only when neither keeps it. `B` is the backend of the accuracy metric (only its name is
/// used); validation must report [`AccuracyMetric`].
///
/// ```
/// use burn::backend::NdArray;
/// let strategy = burn_qnn::learner::keep_last_and_best::<NdArray>(2);
/// // SupervisedTraining::new(..).with_checkpointing_strategy(strategy)
/// ```
pub fn keep_last_and_best<B: Backend>(last: usize) -> ComposedCheckpointingStrategy {
    ComposedCheckpointingStrategy::builder()
        .add(KeepLastNCheckpoints::new(last))
        .add(MetricCheckpointingStrategy::new(
            &AccuracyMetric::<B>::new(),
            Aggregate::Mean,
            Direction::Highest,
            Split::Valid,
        ))
        .build()
}

/// The epoch (from 1) with the highest mean validation accuracy that burn-train logged in
/// `directory`, and that accuracy (in %): the epoch whose checkpoint [`keep_last_and_best`]
/// keeps (the first of equal ones). `None` if no validation accuracy was logged.
///
/// # Errors
/// If `directory` holds no training or validation logs.
pub fn best_valid_epoch(directory: &Path) -> Result<Option<(usize, f64)>, SummaryError> {
    let summary = summary(directory, &[ACCURACY])?;
    let Some(accuracy) = summary.metrics.valid.iter().find(|m| m.name == ACCURACY) else {
        return Ok(None);
    };
    let mut best: Option<(usize, f64)> = None;
    for entry in &accuracy.entries {
        if best.is_none_or(|(_, value)| entry.value > value) {
            best = Some((entry.step, entry.value));
        }
    }
    Ok(best)
}

/// The epochs of `timed` (the [`EpochSummaryRenderer`](super::EpochSummaryRenderer)'s
/// history of a run, which times its epochs), each with the per-epoch means of `metrics`
/// (e.g. `Loss`, `Accuracy`, `Learning Rate`) of both splits as burn-train's
/// [`LearnerSummary`] reads them from the logs in `directory`; a metric the summary lacks for
/// an epoch keeps the renderer's value.
///
/// # Errors
/// If `directory` holds no training or validation logs.
pub fn summary_history(
    directory: &Path,
    metrics: &[&str],
    timed: &[EpochMetrics],
) -> Result<Vec<EpochMetrics>, SummaryError> {
    let summary = summary(directory, metrics)?;
    let mut history = timed.to_vec();
    for epoch in &mut history {
        for (split, into) in [
            (&summary.metrics.train, &mut epoch.train),
            (&summary.metrics.valid, &mut epoch.valid),
        ] {
            for metric in split {
                if let Some(point) = metric.entries.iter().find(|p| p.step == epoch.epoch) {
                    into.insert(metric.name.clone(), point.value);
                }
            }
        }
    }
    Ok(history)
}

fn summary(directory: &Path, metrics: &[&str]) -> Result<LearnerSummary, SummaryError> {
    LearnerSummary::new(directory, metrics).map_err(|message| SummaryError {
        path: directory.to_path_buf(),
        message,
    })
}
