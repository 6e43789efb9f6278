//! burn-train's metric files, numbered right in a resumed run.
//!
//! burn-train 0.21's event store numbers the metrics it hands its loggers from epoch 1 in every
//! run and learns the real epoch only when the first epoch ends. A run resumed after epoch `k`
//! therefore logs the metrics of epoch `k + 1` as epoch 1: its default file logger overwrites
//! `train/epoch-1` and `valid/epoch-1` with them, epoch `k + 1` gets no files, and everything
//! read from the logs afterwards (the best validation epoch, the summary, a checkpointing
//! strategy) sees a wrong history. [`resumable_metric_logger`] numbers them right.

use std::path::Path;

use burn_train::{
    logger::{FileMetricLogger, MetricLogger},
    metric::{
        MetricDefinition, NumericEntry,
        store::{EpochSummary, MetricsUpdate, Split},
    },
};

/// burn-train's [`FileMetricLogger`] in `directory` for a run that resumes after epoch
/// `resumed_after` (`None` or `Some(0)`: a fresh run): it writes the same files, but the
/// metrics of the first resumed epoch go to that epoch's files instead of overwriting epoch 1's.
///
/// Give it to `SupervisedTraining::with_metric_logger` whenever the run may resume (it
/// replaces the default file logger; `directory` is the training directory given to
/// `SupervisedTraining::new`). With burn-train's default logger, a resumed run overwrites the
/// first epoch's logs and loses its own first epoch's, so that
/// [`best_valid_epoch`](super::best_valid_epoch) may name an epoch whose checkpoint is gone.
///
/// ```no_run
/// # fn launch(resumed_after: Option<usize>) {
/// use burn_qnn::learner::resumable_metric_logger;
///
/// let logger = resumable_metric_logger("runs/digits", resumed_after);
/// // SupervisedTraining::new("runs/digits", ..).with_metric_logger(logger).checkpoint(epoch)
/// # }
/// ```
pub fn resumable_metric_logger(
    directory: impl AsRef<Path>,
    resumed_after: Option<usize>,
) -> ResumableMetricLogger {
    ResumableMetricLogger {
        files: FileMetricLogger::new(directory),
        first_epoch: resumed_after.unwrap_or(0) + 1,
    }
}

/// The logger of [`resumable_metric_logger`].
pub struct ResumableMetricLogger {
    files: FileMetricLogger,
    /// The first epoch this run trains.
    first_epoch: usize,
}

impl ResumableMetricLogger {
    /// The epoch that the metrics burn-train numbers `epoch` belong to: burn-train counts from 1
    /// until the first epoch of the run ends, and right afterwards.
    fn epoch(&self, epoch: usize) -> usize {
        epoch.max(self.first_epoch)
    }
}

impl MetricLogger for ResumableMetricLogger {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        let epoch = self.epoch(epoch);
        self.files.log(update, epoch, split);
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        // Readers (a checkpointing strategy, the summary) ask for real epoch numbers.
        self.files.read_numeric(name, epoch, split)
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.files.log_metric_definition(definition);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        self.files.log_epoch_summary(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_resumed_epoch_keeps_its_number() {
        let resumed = resumable_metric_logger("unused", Some(4));
        // burn-train's numbers for the epochs 5, 6, 7 of a run resumed after 4.
        let epochs: Vec<usize> = [1, 6, 7].iter().map(|&e| resumed.epoch(e)).collect();
        assert_eq!(epochs, [5, 6, 7]);
        let fresh = resumable_metric_logger("unused", None);
        let epochs: Vec<usize> = [1, 2, 3].iter().map(|&e| fresh.epoch(e)).collect();
        assert_eq!(epochs, [1, 2, 3]);
    }
}
