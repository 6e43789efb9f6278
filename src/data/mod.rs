//! Data sets of the BNN/QNN experiments: readers for CIFAR-10 (binary),
//! SVHN (format 2, MAT-files), MNIST (IDX) and the bundled 8×8 digits,
//! safe downloads, and a Burn batcher with the papers' preprocessing.
//!
//! Every reader validates its files completely and returns a [`DataError`]
//! naming the file on any problem; nothing panics on bad input.
//!
//! The image data set, the batcher, the preprocessing and the bundled digits are always
//! there. Crate features add the rest (`data` and `download` are on by default):
//! - `data`: the readers of the official CIFAR-10, SVHN and MNIST files ([`cifar10`],
//!   [`svhn`], [`mnist`]), and Burn's `Dataset` and `Batcher` traits for [`ImageDataset`] and
//!   [`ImageBatcher`], so that Burn's `DataLoaderBuilder` takes them (as below); without it,
//!   [`ImageDataset::items`] and [`ImageBatcher::batch`] do the same work;
//! - `download`: fetching missing files with a checksum (`download::download_file`, used by
//!   the readers' `load` functions when allowed);
//! - `zca`: ZCA whitening (`Zca`), fitted with `faer`.
//!
//! ```
//! # #[cfg(feature = "data")] {
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
//! # }
//! # Ok::<(), burn_qnn::data::DataError>(())
//! ```

mod batcher;
#[cfg(feature = "data")]
#[cfg_attr(docsrs, doc(cfg(feature = "data")))]
pub mod cifar10;
mod dataset;
pub mod digits;
pub mod download;
mod error;
pub(crate) mod files;
#[cfg(feature = "data")]
mod mat;
#[cfg(feature = "data")]
#[cfg_attr(docsrs, doc(cfg(feature = "data")))]
pub mod mnist;
mod preprocess;
mod rng;
#[cfg(feature = "data")]
#[cfg_attr(docsrs, doc(cfg(feature = "data")))]
pub mod svhn;
#[cfg(feature = "zca")]
mod zca;

pub use batcher::{ImageBatch, ImageBatcher};
pub use dataset::{
    ImageDataset, ImageItem, ImageShape, ImageSizeError, TrainTest, ValidationSize,
    ValidationSizeError,
};
pub use download::DownloadPolicy;
pub use error::DataError;
pub use preprocess::{Preprocess, global_contrast_normalize, scale_to_unit_range};
#[cfg(feature = "zca")]
#[cfg_attr(docsrs, doc(cfg(feature = "zca")))]
pub use zca::{Zca, ZcaError};
