//! The best-validation checkpoint, and the per-epoch history as burn-train's summary gives it.
//!
//! The reference code reports the test error of the epoch with the best validation error.
//! [`keep_last_and_best`] keeps that epoch's checkpoint next to the last ones, and
//! [`best_valid_epoch`] finds it from the metrics burn-train logged; [`summary_history`] reads
//! the per-epoch means of every metric from the same logs.

use std::path::Path;

use burn_train::{
    LearnerSummary,
    checkpoint::{CheckpointingAction, CheckpointingStrategy},
    metric::store::{Aggregate, EventStoreClient, Split},
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

/// A burn-train checkpointing strategy that keeps the checkpoints of the last `last` epochs
/// (at least one) and of the epoch with the highest mean validation accuracy (burn-train's
/// [`AccuracyMetric`](burn_train::metric::AccuracyMetric) on the validation split; the first
/// such epoch on ties), as [`best_valid_epoch`] finds it after training.
///
/// burn-train's own `MetricCheckpointingStrategy`, composed with `KeepLastNCheckpoints`, does
/// not do this reliably in burn-train 0.21: at the end of epoch `e` it looks up epoch `e`'s
/// validation accuracy, which burn-train's asynchronous event processing may not have logged
/// yet, and then counts epoch `e` as not the best and lets its checkpoint be deleted (the
/// suite's test saw the best epoch lost this way). This strategy reads an epoch's validation
/// accuracy only at the end of the next one, when its logs are complete; until then the epoch
/// is among the last ones, which are kept anyway. Like `KeepLastNCheckpoints`, it deletes
/// epoch `e − last` at epoch `e` (unless it is the best), and the previous best once another
/// epoch beats it, so a resumed run also cleans up the epochs before it.
///
/// ```
/// let strategy = burn_qnn::learner::keep_last_and_best(2);
/// // SupervisedTraining::new(..).with_checkpointing_strategy(strategy)
/// ```
pub fn keep_last_and_best(last: usize) -> KeepLastAndBest {
    KeepLastAndBest {
        last: last.max(1),
        best: None,
        read_until: 0,
    }
}

/// The strategy of [`keep_last_and_best`].
#[derive(Debug, Clone)]
pub struct KeepLastAndBest {
    last: usize,
    /// The best epoch so far and its mean validation accuracy.
    best: Option<(usize, f64)>,
    /// The epochs whose validation accuracy has been read: `1..=read_until`.
    read_until: usize,
}

impl CheckpointingStrategy for KeepLastAndBest {
    fn checkpointing(
        &mut self,
        epoch: usize,
        store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let previous_best = self.best.map(|(e, _)| e);
        // The epochs before this one are complete in the logs.
        for done in self.read_until + 1..epoch {
            if let Some(value) = store.find_metric(ACCURACY, done, Aggregate::Mean, &Split::Valid)
                && self.best.is_none_or(|(_, best)| value > best)
            {
                self.best = Some((done, value));
            }
        }
        self.read_until = self.read_until.max(epoch.saturating_sub(1));
        let best = self.best.map(|(e, _)| e);
        let in_window = |e: usize| e + self.last > epoch;
        let mut actions = vec![CheckpointingAction::Save];
        if let Some(leaving) = epoch.checked_sub(self.last)
            && leaving > 0
            && Some(leaving) != best
        {
            actions.push(CheckpointingAction::Delete(leaving));
        }
        if let Some(old) = previous_best
            && Some(old) != best
            && !in_window(old)
            && Some(old) != epoch.checked_sub(self.last)
        {
            actions.push(CheckpointingAction::Delete(old));
        }
        actions
    }
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
