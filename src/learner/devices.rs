//! Data-parallel training on several devices through burn-train's own multi-device strategy.

use burn::tensor::Device;
use burn_train::{ExecutionStrategy, LearningComponentsTypes, MultiDeviceOptim, TrainingStrategy};

/// burn-train's multi-device strategy over `devices` (the first is the main device: gradients
/// are summed and the optimizer steps there); one device gives burn-train's single-device
/// strategy. Pass it to `SupervisedTraining::with_training_strategy`.
///
/// burn-train 0.21 splits the training data loader into one contiguous slice per device; each
/// round, every device trains a batch of its slice on a thread of its own (a copy of the model
/// forked to that device), the batches' gradients are **summed** on the first device and the
/// optimizer takes one step there. One round with `N` devices is therefore the single-device
/// step with gradient accumulation over the same `N` batches
/// (`SupervisedTraining::grads_accumulation(N)`), up to the order of the sum; batch norm
/// normalizes each batch with its own statistics in both. Validation runs on the first device.
///
/// The optimizer wrappers of this crate ([`super::ClipLatentWeights`], [`super::TrackFlips`],
/// [`crate::optim::Bop`]) see one step per round, exactly as on one device.
///
/// Which devices: the same device listed `N` times runs `N` workers on it (on a CPU backend,
/// `N` threads sharing its cores: this tests the set-up but does not train faster than one
/// worker using every core). Several GPUs need a backend that copies tensors between devices;
/// in Burn 0.21 that is the CUDA backend, not wgpu (its device-to-device copy is not
/// implemented). Multi-node training is burn-train's `ddp` feature (burn-collective), whose
/// all-reduce Burn 0.21 implements for CUDA only.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::lr_scheduler::exponential::ExponentialLrScheduler;
/// use burn::optim::{Adam, adaptor::OptimizerAdaptor};
/// use burn_qnn::learner::data_parallel;
/// use burn_qnn::models::Net;
/// use burn_train::{LearningComponentsMarker, TrainingStrategy};
///
/// type B = Autodiff<NdArray>;
/// type Optim = OptimizerAdaptor<Adam, Net<B>, B>;
/// type LC = LearningComponentsMarker<B, ExponentialLrScheduler, Net<B>, Optim>;
/// // Two workers on the CPU device.
/// let strategy: TrainingStrategy<LC> = data_parallel(vec![Default::default(); 2]);
/// # let _ = strategy;
/// ```
///
/// # Panics
/// If `devices` is empty.
pub fn data_parallel<LC: LearningComponentsTypes>(
    devices: Vec<Device<LC::Backend>>,
) -> TrainingStrategy<LC> {
    assert!(
        !devices.is_empty(),
        "data_parallel: at least one device is needed"
    );
    match <[_; 1]>::try_from(devices) {
        Ok([device]) => ExecutionStrategy::SingleDevice(device).into(),
        Err(devices) => ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice).into(),
    }
}

/// The optimizer steps of one epoch of `items` training items in batches of `batch_size` on
/// `devices` devices: the number of rounds of burn-train's multi-device strategy (one step per
/// round), `⌈items/batch_size⌉` for one device. What a learning-rate schedule over the run,
/// such as [`crate::optim::decay_over_run`], needs as its steps per epoch.
///
/// ```
/// use burn_qnn::learner::optimizer_steps_per_epoch;
///
/// assert_eq!(optimizer_steps_per_epoch(1000, 50, 1), 20);
/// // Two slices of 500 images: 10 rounds of two batches.
/// assert_eq!(optimizer_steps_per_epoch(1000, 50, 2), 10);
/// // Slices of 333, 333 and 334 images: the last has 7 batches.
/// assert_eq!(optimizer_steps_per_epoch(1000, 50, 3), 7);
/// ```
///
/// # Panics
/// If `batch_size` or `devices` is 0.
pub fn optimizer_steps_per_epoch(items: usize, batch_size: usize, devices: usize) -> usize {
    assert!(
        batch_size > 0 && devices > 0,
        "optimizer_steps_per_epoch: batch size {batch_size} and devices {devices} must be positive"
    );
    // burn-train's split: equal slices of ⌊items/devices⌋, the remainder to the last device,
    // which so has the most batches.
    let last_slice = items - (devices - 1) * (items / devices);
    last_slice.div_ceil(batch_size)
}
