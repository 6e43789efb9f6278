//! Exponential learning-rate decay of the BNN reference training scripts.
//!
//! The learning rate goes geometrically from `initial_lr` to `final_lr`:
//!
//! ```text
//! lr(k) = initial_lr · (final_lr / initial_lr)^(k / num_epochs)   for k < num_epochs
//! lr(k) = final_lr                                              for k ≥ num_epochs
//! ```
//!
//! where `k` is the 0-based epoch of the current step, `k = s / steps_per_epoch` (integer
//! division) for the 0-based step `s`. With `steps_per_epoch = 1` (the default) an "epoch" is
//! a single step and the learning rate decays at every step; with `steps_per_epoch > 1` it is
//! constant within an epoch and decays once per epoch, like the paper.

use burn::config::Config;
use burn::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;

/// Why an [`ExponentialDecayLrSchedulerConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExponentialDecayConfigError {
    /// `initial_lr` is zero, negative, infinite or NaN.
    #[error("initial learning rate must be a finite number greater than 0, got {0}")]
    InvalidInitialLr(LearningRate),
    /// `final_lr` is zero, negative, infinite or NaN.
    #[error("final learning rate must be a finite number greater than 0, got {0}")]
    InvalidFinalLr(LearningRate),
    /// `num_epochs` is zero.
    #[error("number of epochs (decay periods) must be at least 1")]
    ZeroEpochs,
    /// `steps_per_epoch` is zero.
    #[error("number of steps per epoch must be at least 1")]
    ZeroStepsPerEpoch,
}

/// Configuration for an [exponential decay learning-rate scheduler](ExponentialDecayLrScheduler).
///
/// The scheduler returns `initial_lr` at the first step and reaches `final_lr` exactly at the
/// first step of epoch `num_epochs` (0-based), i.e. after `num_epochs · steps_per_epoch`
/// steps; it stays at `final_lr` afterwards. In between, the learning rate is multiplied by the
/// constant factor `(final_lr / initial_lr)^(1 / num_epochs)` at every epoch boundary.
///
/// This is the convention of the reference Theano scripts (`LR_decay = (LR_fin / LR_start) **
/// (1 / num_epochs)`, applied after each epoch): with `num_epochs` equal to the number of
/// training epochs the last epoch trains at `final_lr / decay`, and `final_lr` would be the
/// rate of the next epoch. To train the last epoch at exactly `final_lr`, pass the number of
/// training epochs minus one. It is also the convention of Burn's linear scheduler, whose
/// `num_iters` counts the steps between the initial and the final learning rate.
///
/// Use [`per_step`](Self::per_step) or [`per_epoch`](Self::per_epoch) for readable construction.
#[derive(Config, Debug)]
pub struct ExponentialDecayLrSchedulerConfig {
    /// Learning rate of the first step (e.g. `1e-3`). Must be finite and positive.
    pub initial_lr: LearningRate,
    /// Learning rate reached after `num_epochs` epochs and kept afterwards (e.g. `3e-7`).
    /// Must be finite and positive; it may be larger than `initial_lr` (exponential warm-up).
    pub final_lr: LearningRate,
    /// Number of epochs (decay periods) to go from `initial_lr` to `final_lr`. Must be at
    /// least 1. With `steps_per_epoch = 1` this is the total number of decay steps.
    pub num_epochs: usize,
    /// Number of scheduler steps (optimizer iterations) per epoch; the learning rate is
    /// constant within an epoch. Must be at least 1. Default: `1`, a decay at every step.
    #[config(default = 1)]
    pub steps_per_epoch: usize,
}

impl ExponentialDecayLrSchedulerConfig {
    /// Decay at every step: `lr(s) = initial_lr · (final_lr / initial_lr)^(s / total_steps)`
    /// for the 0-based step `s`, `final_lr` from step `total_steps` on.
    pub fn per_step(initial_lr: LearningRate, final_lr: LearningRate, total_steps: usize) -> Self {
        Self::new(initial_lr, final_lr, total_steps)
    }

    /// Decay once per epoch of `steps_per_epoch` steps, constant within an epoch, reaching
    /// `final_lr` at epoch `num_epochs` (0-based).
    pub fn per_epoch(
        initial_lr: LearningRate,
        final_lr: LearningRate,
        num_epochs: usize,
        steps_per_epoch: usize,
    ) -> Self {
        Self::new(initial_lr, final_lr, num_epochs).with_steps_per_epoch(steps_per_epoch)
    }

    /// Initializes an [exponential decay scheduler](ExponentialDecayLrScheduler).
    ///
    /// # Errors
    ///
    /// An error is returned if any of the following conditions is true:
    ///
    /// * `initial_lr` is not a finite number greater than 0
    /// * `final_lr` is not a finite number greater than 0
    /// * `num_epochs` is 0
    /// * `steps_per_epoch` is 0
    pub fn init(&self) -> Result<ExponentialDecayLrScheduler, ExponentialDecayConfigError> {
        let valid_lr = |lr: LearningRate| lr.is_finite() && lr > 0.0;
        if !valid_lr(self.initial_lr) {
            return Err(ExponentialDecayConfigError::InvalidInitialLr(
                self.initial_lr,
            ));
        }
        if !valid_lr(self.final_lr) {
            return Err(ExponentialDecayConfigError::InvalidFinalLr(self.final_lr));
        }
        if self.num_epochs == 0 {
            return Err(ExponentialDecayConfigError::ZeroEpochs);
        }
        if self.steps_per_epoch == 0 {
            return Err(ExponentialDecayConfigError::ZeroStepsPerEpoch);
        }
        Ok(ExponentialDecayLrScheduler {
            initial_lr: self.initial_lr,
            final_lr: self.final_lr,
            num_epochs: self.num_epochs,
            steps_per_epoch: self.steps_per_epoch,
            steps_done: 0,
        })
    }
}

/// Exponential learning-rate decay from `initial_lr` to `final_lr`.
///
/// See [`ExponentialDecayLrSchedulerConfig`] for the schedule. The record is the number of
/// steps already taken, so a reloaded scheduler resumes where it left off (the configuration
/// itself is not part of the record, as for Burn's schedulers).
#[derive(Clone, Copy, Debug)]
pub struct ExponentialDecayLrScheduler {
    initial_lr: LearningRate,
    final_lr: LearningRate,
    num_epochs: usize,
    steps_per_epoch: usize,
    /// Number of calls to `step` so far, i.e. the 0-based index of the next step.
    steps_done: usize,
}

impl ExponentialDecayLrScheduler {
    /// The learning rate of the 0-based step `step`, without changing the scheduler.
    pub fn lr_at(&self, step: usize) -> LearningRate {
        let epoch = step / self.steps_per_epoch;
        if epoch == 0 {
            self.initial_lr
        } else if epoch >= self.num_epochs {
            self.final_lr
        } else {
            let fraction = epoch as f64 / self.num_epochs as f64;
            self.initial_lr * (self.final_lr / self.initial_lr).powf(fraction)
        }
    }

    /// Number of steps taken so far (the 0-based index of the next step).
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }
}

impl LrScheduler for ExponentialDecayLrScheduler {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let lr = self.lr_at(self.steps_done);
        self.steps_done = self.steps_done.saturating_add(1);
        lr
    }

    fn to_record<B: Backend>(&self) -> Self::Record<B> {
        self.steps_done
    }

    fn load_record<B: Backend>(mut self, record: Self::Record<B>) -> Self {
        self.steps_done = record;
        self
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};

    type B = NdArray;

    fn rel_close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs()
    }

    #[test]
    fn first_is_initial_and_last_is_final() {
        let mut scheduler = ExponentialDecayLrSchedulerConfig::per_step(1e-3, 3e-7, 1000)
            .init()
            .unwrap();
        let lrs: Vec<f64> = (0..=1000).map(|_| scheduler.step()).collect();
        assert_eq!(lrs[0], 1e-3);
        assert!(rel_close(lrs[1000], 3e-7, 1e-12));
        assert!(rel_close(
            lrs[999],
            1e-3 * (3e-7f64 / 1e-3).powf(0.999),
            1e-12
        ));
        // Stays at the final learning rate afterwards.
        for _ in 0..10 {
            assert_eq!(scheduler.step(), 3e-7);
        }
    }

    #[test]
    fn matches_closed_form_per_step() {
        let (initial, last, total) = (1e-3, 3e-7, 37);
        let mut scheduler = ExponentialDecayLrSchedulerConfig::per_step(initial, last, total)
            .init()
            .unwrap();
        for s in 0..=total {
            let expected = initial * (last / initial).powf(s as f64 / total as f64);
            let lr = scheduler.step();
            assert!(
                rel_close(lr, expected, 1e-12),
                "step {s}: {lr} vs {expected}"
            );
        }
    }

    #[test]
    fn decay_is_monotone() {
        let mut decreasing = ExponentialDecayLrSchedulerConfig::per_step(1e-3, 3e-7, 5000)
            .init()
            .unwrap();
        let mut previous = decreasing.step();
        for s in 1..5100 {
            let lr = decreasing.step();
            assert!(lr < previous || (s > 5000 && lr == previous), "step {s}");
            previous = lr;
        }

        let mut increasing = ExponentialDecayLrSchedulerConfig::per_step(1e-4, 1e-2, 300)
            .init()
            .unwrap();
        let mut previous = increasing.step();
        for _ in 1..300 {
            let lr = increasing.step();
            assert!(lr > previous);
            previous = lr;
        }
    }

    #[test]
    fn per_epoch_is_constant_within_an_epoch() {
        let (initial, last, epochs, steps) = (1e-3, 3e-7, 4, 5);
        let mut scheduler =
            ExponentialDecayLrSchedulerConfig::per_epoch(initial, last, epochs, steps)
                .init()
                .unwrap();
        for epoch in 0..=epochs + 1 {
            let expected = if epoch >= epochs {
                last
            } else {
                initial * (last / initial).powf(epoch as f64 / epochs as f64)
            };
            for step in 0..steps {
                let lr = scheduler.step();
                assert!(
                    rel_close(lr, expected, 1e-12),
                    "epoch {epoch} step {step}: {lr} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn per_epoch_decay_factor_is_constant() {
        let scheduler = ExponentialDecayLrSchedulerConfig::per_epoch(1e-3, 3e-7, 10, 3)
            .init()
            .unwrap();
        let factor = (3e-7f64 / 1e-3).powf(0.1);
        for epoch in 0..10 {
            let ratio = scheduler.lr_at((epoch + 1) * 3) / scheduler.lr_at(epoch * 3);
            assert!(rel_close(ratio, factor, 1e-12), "epoch {epoch}");
        }
    }

    #[test]
    fn record_round_trip_resumes() {
        let config = ExponentialDecayLrSchedulerConfig::per_epoch(1e-3, 3e-7, 6, 4);
        let mut original = config.init().unwrap();
        for _ in 0..9 {
            original.step();
        }
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = Recorder::<B>::record(&recorder, original.to_record::<B>(), ()).unwrap();
        let record: usize = Recorder::<B>::load(&recorder, bytes, &Default::default()).unwrap();
        let mut restored = config.init().unwrap().load_record::<B>(record);
        assert_eq!(restored.steps_done(), 9);
        for _ in 0..30 {
            assert_eq!(restored.step(), original.step());
        }
    }

    #[test]
    fn invalid_configs_are_rejected() {
        use ExponentialDecayConfigError as E;
        let init = |i: f64, f: f64, n: usize, s: usize| {
            ExponentialDecayLrSchedulerConfig::per_epoch(i, f, n, s)
                .init()
                .map(|_| ())
        };
        assert_eq!(init(0.0, 1e-7, 10, 1), Err(E::InvalidInitialLr(0.0)));
        assert_eq!(init(-1e-3, 1e-7, 10, 1), Err(E::InvalidInitialLr(-1e-3)));
        assert!(matches!(init(f64::NAN, 1e-7, 10, 1), Err(E::InvalidInitialLr(x)) if x.is_nan()));
        assert_eq!(
            init(f64::INFINITY, 1e-7, 10, 1),
            Err(E::InvalidInitialLr(f64::INFINITY))
        );
        assert_eq!(init(1e-3, 0.0, 10, 1), Err(E::InvalidFinalLr(0.0)));
        assert!(matches!(init(1e-3, f64::NAN, 10, 1), Err(E::InvalidFinalLr(x)) if x.is_nan()));
        assert_eq!(init(1e-3, 1e-7, 0, 1), Err(E::ZeroEpochs));
        assert_eq!(init(1e-3, 1e-7, 10, 0), Err(E::ZeroStepsPerEpoch));
        assert_eq!(init(1e-3, 1e-7, 10, 1), Ok(()));
        assert_eq!(
            E::InvalidFinalLr(-2.0).to_string(),
            "final learning rate must be a finite number greater than 0, got -2"
        );
        assert_eq!(
            E::ZeroEpochs.to_string(),
            "number of epochs (decay periods) must be at least 1"
        );
    }

    #[test]
    fn single_epoch_goes_straight_to_final() {
        let mut scheduler = ExponentialDecayLrSchedulerConfig::per_step(1e-2, 1e-4, 1)
            .init()
            .unwrap();
        assert_eq!(scheduler.step(), 1e-2);
        assert_eq!(scheduler.step(), 1e-4);
        assert_eq!(scheduler.step(), 1e-4);
    }
}
