//! Optimizers and learning-rate schedules from the binarized-neural-network recipe
//! (Hubara, Courbariaux et al.).
//!
//! * [`Bop`]: the binary optimizer of Helwegen et al. (2019) on the binary layers' weights,
//!   beside any optimizer for the other parameters.
//! * [`FusedAdam`]: Adam with Burn's arithmetic in one parallel pass per parameter on the host
//!   backends (the optimizer update of a training step otherwise runs a dozen single-threaded
//!   tensor ops per parameter).
//! * [`ShiftAdaMax`]: the paper's shift-based AdaMax, a Burn
//!   [`SimpleOptimizer`](burn::optim::SimpleOptimizer) whose update multipliers are all powers
//!   of two (so that a multiplication can be replaced by a bit shift).
//! * [`decay_over_run`] (and [`exponential_decay`], its parameters): the exponential
//!   learning-rate decay of the reference Theano training scripts as Burn's own
//!   [`ExponentialLrScheduler`](burn::lr_scheduler::exponential::ExponentialLrScheduler),
//!   decaying at every step from `initial_lr` to `final_lr`. `train::fit` and the examples
//!   take their rates from it.

pub mod bop;
pub mod fused_adam;
pub mod lr_decay;
pub mod shift_adamax;

pub use bop::*;
pub use fused_adam::*;
pub use lr_decay::*;
pub use shift_adamax::*;
