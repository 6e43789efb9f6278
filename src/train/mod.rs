//! Training and measuring image classifiers: [`fit`] (feature `train`), the paper's recipe
//! as one call on burn-train's learner, for the networks of [`crate::models`] and models of
//! your own; [`accuracy`] and [`time_per_batch`] of trained networks.
//!
//! [`fit`] trains without checkpoints, for quick experiments (the quick start uses it); to
//! keep checkpoints and resume, log metrics to files or train on several devices, put the
//! same pieces into burn-train's `SupervisedTraining` yourself: see `burn_qnn::learner`.
//!

#[cfg(feature = "train")]
mod fit;

use std::time::{Duration, Instant};

use burn::tensor::{Device, ElementConversion, Tensor, backend::Backend};

use crate::data::{ImageBatch, ImageBatcher, ImageDataset};

#[cfg(feature = "train")]
pub use fit::{FitError, TrainOptions, fit};

/// The fraction of `data` whose highest score under `forward` is the label.
pub fn accuracy<B: Backend>(
    forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
    data: &ImageDataset,
    batch_size: usize,
    device: &Device<B>,
) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let batcher = ImageBatcher::for_dataset(data);
    let mut correct = 0i64;
    for chunk in data.items().chunks(batch_size.max(1)) {
        let batch: ImageBatch<B> = batcher.batch(chunk.to_vec(), device);
        let predicted = forward(batch.images).argmax(1).flatten::<1>(0, 1);
        correct += predicted
            .equal(batch.targets)
            .int()
            .sum()
            .into_scalar()
            .elem::<i64>();
    }
    correct as f64 / data.len() as f64
}

/// The mean time of `forward` on batches of `batch_size` images of `data` (after one warm-up
/// batch), over at least `min_batches` batches.
pub fn time_per_batch<B: Backend>(
    forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
    data: &ImageDataset,
    batch_size: usize,
    min_batches: usize,
    device: &Device<B>,
) -> Duration {
    let batcher = ImageBatcher::for_dataset(data);
    let items: Vec<_> = (0..batch_size)
        .map(|i| data.items()[i % data.len()].clone())
        .collect();
    let batch: ImageBatch<B> = batcher.batch(items, device);
    let _ = forward(batch.images.clone()).into_data();
    let start = Instant::now();
    for _ in 0..min_batches.max(1) {
        let _ = forward(batch.images.clone()).into_data();
    }
    start.elapsed() / min_batches.max(1) as u32
}
