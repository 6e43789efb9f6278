//! The exponential learning-rate decay of the BNN reference training scripts, as Burn's own
//! scheduler.
//!
//! The learning rate goes geometrically from `initial_lr` to `final_lr`. The functions here
//! only turn `(initial_lr, final_lr, steps)` into the parameters of Burn's scheduler, with
//! typed errors:
//!
//! [`exponential_decay`] gives Burn's [`ExponentialLrScheduler`]'s configuration,
//! `lr(s) = initial_lr · γ^s` with `γ = (final_lr / initial_lr)^(1 / steps)`, so that step
//! `steps` (0-based) trains at `final_lr`; [`decay_over_run`] makes the scheduler for a run of
//! `epochs × steps_per_epoch` steps. The scripts decay once per epoch; this decays along the
//! same curve at every step.
//!
//! What Burn's scheduler does not do, and so neither does this: it keeps multiplying by `γ`
//! after step `steps` instead of holding `final_lr` (a run of the planned
//! length never gets there), and it takes only `γ ≤ 1` and
//! `initial_lr ≤ 1` (no exponential warm-up; [`ExponentialDecayConfigError::Increasing`]).
//!
//! ```
//! use burn::lr_scheduler::LrScheduler;
//! use burn_qnn::optim::exponential_decay;
//!
//! // 1e-3 at the first step, 1e-5 at step 4, decaying by the same factor at every step.
//! let mut schedule = exponential_decay(1e-3, 1e-5, 4)?.init().unwrap();
//! let rates: Vec<f64> = (0..5).map(|_| schedule.step()).collect();
//! assert!((rates[0] / 1e-3 - 1.0).abs() < 1e-12);
//! assert!((rates[4] / 1e-5 - 1.0).abs() < 1e-12);
//! assert!((rates[1] / rates[0] - 0.1f64.sqrt()).abs() < 1e-12);
//! # Ok::<(), burn_qnn::optim::ExponentialDecayConfigError>(())
//! ```

use burn::lr_scheduler::exponential::{ExponentialLrScheduler, ExponentialLrSchedulerConfig};
use burn::optim::LearningRate;

/// Why the parameters of an exponential decay were rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExponentialDecayConfigError {
    /// `initial_lr` is zero, negative, infinite, NaN, or above 1 (Burn's exponential scheduler
    /// takes at most 1).
    #[error("initial learning rate must be a finite number in (0, 1], got {0}")]
    InvalidInitialLr(LearningRate),
    /// `final_lr` is zero, negative, infinite or NaN.
    #[error("final learning rate must be a finite number greater than 0, got {0}")]
    InvalidFinalLr(LearningRate),
    /// `final_lr` is above `initial_lr`: Burn's exponential scheduler only decays.
    #[error(
        "final learning rate {final_lr} is above the initial one {initial_lr}: \
         Burn's exponential scheduler only decays"
    )]
    Increasing {
        /// The initial learning rate.
        initial_lr: LearningRate,
        /// The final learning rate.
        final_lr: LearningRate,
    },
    /// The number of epochs (decay periods) is zero.
    #[error("number of epochs (decay periods) must be at least 1")]
    ZeroEpochs,
    /// The number of steps per epoch is zero.
    #[error("number of steps per epoch must be at least 1")]
    ZeroStepsPerEpoch,
}

/// The factor `γ = (final_lr / initial_lr)^(1 / periods)` by which the rate is multiplied at
/// each of `periods` decays to go from `initial_lr` to `final_lr`.
///
/// ```
/// let gamma = burn_qnn::optim::decay_factor(1e-3, 1e-5, 2)?;
/// assert!((gamma - 0.1).abs() < 1e-12);
/// # Ok::<(), burn_qnn::optim::ExponentialDecayConfigError>(())
/// ```
///
/// # Errors
/// If a rate is not finite and positive, `initial_lr` is above 1, `final_lr` is above
/// `initial_lr`, or `periods` is 0.
pub fn decay_factor(
    initial_lr: LearningRate,
    final_lr: LearningRate,
    periods: usize,
) -> Result<f64, ExponentialDecayConfigError> {
    use ExponentialDecayConfigError as E;
    if !(initial_lr.is_finite() && initial_lr > 0.0 && initial_lr <= 1.0) {
        return Err(E::InvalidInitialLr(initial_lr));
    }
    if !(final_lr.is_finite() && final_lr > 0.0) {
        return Err(E::InvalidFinalLr(final_lr));
    }
    if final_lr > initial_lr {
        return Err(E::Increasing {
            initial_lr,
            final_lr,
        });
    }
    if periods == 0 {
        return Err(E::ZeroEpochs);
    }
    Ok((final_lr / initial_lr).powf(1.0 / periods as f64))
}

/// Burn's exponential scheduler decaying at every step from `initial_lr` (step 0) to
/// `final_lr` (step `steps`): `initial_lr · γ^s` with `γ` from [`decay_factor`]. Its record
/// is the last rate it gave, so a reloaded scheduler continues the decay where it stopped.
///
/// Its `init` cannot fail on what this returns (both of its conditions are checked here).
///
/// # Errors
/// As [`decay_factor`], with `steps` for the periods.
pub fn exponential_decay(
    initial_lr: LearningRate,
    final_lr: LearningRate,
    steps: usize,
) -> Result<ExponentialLrSchedulerConfig, ExponentialDecayConfigError> {
    let gamma = decay_factor(initial_lr, final_lr, steps)?;
    Ok(ExponentialLrSchedulerConfig::new(initial_lr, gamma))
}

/// The paper's exponential learning-rate decay over a run of `epochs` epochs of
/// `steps_per_epoch` steps, decaying at every step: the first step trains at `initial_lr`, the
/// last one at `final_lr`. It is Burn's [`ExponentialLrScheduler`] (parameters from
/// [`exponential_decay`]); its record is the last rate it gave, so a run resumed from a
/// checkpoint continues the decay where it stopped.
///
/// ```
/// use burn::lr_scheduler::LrScheduler;
///
/// let mut schedule = burn_qnn::optim::decay_over_run(1e-3, 1e-5, 2, 3)?;
/// let rates: Vec<f64> = (0..6).map(|_| schedule.step()).collect();
/// assert!((rates[0] / 1e-3 - 1.0).abs() < 1e-12);
/// assert!((rates[5] / 1e-5 - 1.0).abs() < 1e-12);
/// assert!(rates.windows(2).all(|w| w[1] < w[0]));
/// # Ok::<(), burn_qnn::optim::ExponentialDecayConfigError>(())
/// ```
///
/// # Errors
/// If a rate is not finite and positive, `initial_lr` is above 1 or below `final_lr` (Burn's
/// scheduler only decays), or `epochs` or `steps_per_epoch` is 0.
pub fn decay_over_run(
    initial_lr: f64,
    final_lr: f64,
    epochs: usize,
    steps_per_epoch: usize,
) -> Result<ExponentialLrScheduler, ExponentialDecayConfigError> {
    if steps_per_epoch == 0 {
        return Err(ExponentialDecayConfigError::ZeroStepsPerEpoch);
    }
    if epochs == 0 {
        return Err(ExponentialDecayConfigError::ZeroEpochs);
    }
    // The last step is step `total − 1`; reaching `final_lr` there needs `total − 1` decay
    // periods (at least one, for a run of one step).
    let periods = epochs
        .saturating_mul(steps_per_epoch)
        .saturating_sub(1)
        .max(1);
    let config = exponential_decay(initial_lr, final_lr, periods)?;
    // `exponential_decay` checked both of `init`'s conditions (rate and factor in (0, 1]).
    Ok(config
        .init()
        .expect("exponential_decay returns parameters Burn accepts"))
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::lr_scheduler::LrScheduler;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};

    type B = NdArray;

    fn rel_close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs()
    }

    #[test]
    fn per_step_matches_closed_form() {
        let (initial, last, total) = (1e-3, 3e-7, 1000);
        let mut scheduler = exponential_decay(initial, last, total)
            .unwrap()
            .init()
            .unwrap();
        for s in 0..=total {
            let expected = initial * (last / initial).powf(s as f64 / total as f64);
            let lr = scheduler.step();
            assert!(
                rel_close(lr, expected, 1e-9),
                "step {s}: {lr} vs {expected}"
            );
        }
    }

    #[test]
    fn constant_rate_is_allowed() {
        let mut scheduler = exponential_decay(1e-3, 1e-3, 10).unwrap().init().unwrap();
        assert!((0..20).all(|_| rel_close(scheduler.step(), 1e-3, 1e-12)));
    }

    #[test]
    fn record_round_trip_resumes() {
        let config = exponential_decay(1e-3, 3e-7, 40).unwrap();
        let mut original = config.init().unwrap();
        for _ in 0..9 {
            original.step();
        }
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = Recorder::<B>::record(&recorder, original.to_record::<B>(), ()).unwrap();
        let record = Recorder::<B>::load(&recorder, bytes, &Default::default()).unwrap();
        let mut restored = config.init().unwrap().load_record::<B>(record);
        for _ in 0..30 {
            assert_eq!(restored.step(), original.step());
        }
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        use ExponentialDecayConfigError as E;
        let factor = |i: f64, f: f64, n: usize| decay_factor(i, f, n).map(|_| ());
        assert_eq!(factor(0.0, 1e-7, 10), Err(E::InvalidInitialLr(0.0)));
        assert_eq!(factor(-1e-3, 1e-7, 10), Err(E::InvalidInitialLr(-1e-3)));
        assert_eq!(factor(1.5, 1e-7, 10), Err(E::InvalidInitialLr(1.5)));
        assert!(matches!(factor(f64::NAN, 1e-7, 10), Err(E::InvalidInitialLr(x)) if x.is_nan()));
        assert_eq!(factor(1e-3, 0.0, 10), Err(E::InvalidFinalLr(0.0)));
        assert!(matches!(factor(1e-3, f64::NAN, 10), Err(E::InvalidFinalLr(x)) if x.is_nan()));
        assert_eq!(
            factor(1e-4, 1e-2, 10),
            Err(E::Increasing {
                initial_lr: 1e-4,
                final_lr: 1e-2
            })
        );
        assert_eq!(factor(1e-3, 1e-7, 0), Err(E::ZeroEpochs));
        assert_eq!(
            decay_over_run(1e-3, 1e-7, 10, 0).map(|_| ()),
            Err(E::ZeroStepsPerEpoch)
        );
        assert_eq!(factor(1e-3, 1e-7, 10), Ok(()));
        // Burn's own checks never fire on what passed these.
        assert!(exponential_decay(1.0, 1e-7, 3).unwrap().init().is_ok());
        assert_eq!(
            E::InvalidFinalLr(-2.0).to_string(),
            "final learning rate must be a finite number greater than 0, got -2"
        );
    }
}
