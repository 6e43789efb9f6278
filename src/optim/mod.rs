//! Optimizers and learning-rate schedules from the binarized-neural-network recipe
//! (Hubara, Courbariaux et al.).
//!
//! * [`ShiftAdaMax`]: the paper's shift-based AdaMax, a Burn
//!   [`SimpleOptimizer`](burn::optim::SimpleOptimizer) whose update multipliers are all powers
//!   of two (so that a multiplication can be replaced by a bit shift).
//! * [`ExponentialDecayLrScheduler`]: the exponential
//!   learning-rate decay of the reference Theano training scripts, a Burn
//!   [`LrScheduler`](burn::lr_scheduler::LrScheduler).

pub mod lr_decay;
pub mod shift_adamax;

pub use lr_decay::*;
pub use shift_adamax::*;
