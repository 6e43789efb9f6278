//! Data sets of the BNN/QNN experiments: readers for CIFAR-10 (binary),
//! SVHN (format 2, MAT-files), MNIST (IDX) and the bundled 8×8 digits,
//! safe downloads, and a Burn batcher with the papers' preprocessing.
//!
//! Every reader validates its files completely and returns a [`DataError`]
//! naming the file on any problem; nothing panics on bad input.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::data::dataloader::DataLoaderBuilder;
//! use burn_qnn::data::{ImageBatcher, digits};
//!
//! let split = digits::train_test_split(digits::load_bundled()?, 0.2, 7);
//! let batcher = ImageBatcher::for_dataset(&split.train);
//! let loader = DataLoaderBuilder::<NdArray, _, _>::new(batcher)
//!     .batch_size(64)
//!     .build(split.train);
//! let batch = loader.iter().next().unwrap();
//! assert_eq!(batch.images.dims(), [64, 1, 8, 8]);
//! # Ok::<(), burn_qnn::data::DataError>(())
//! ```

mod batcher;
pub mod cifar10;
mod dataset;
pub mod digits;
pub mod download;
mod error;
mod files;
mod mat;
pub mod mnist;
mod preprocess;
mod rng;
pub mod svhn;
mod zca;

pub use batcher::{ImageBatch, ImageBatcher};
pub use dataset::{
    ImageDataset, ImageItem, ImageShape, TrainTest, ValidationSize, ValidationSizeError,
};
pub use download::DownloadPolicy;
pub use error::DataError;
pub use preprocess::{Preprocess, global_contrast_normalize, scale_to_unit_range};
pub use zca::{Zca, ZcaError};
