//! # burn-qnn
//!
//! Quantized and Binarized Neural Networks (Hubara, Courbariaux, Soudry, El-Yaniv and Bengio)
//! for the [Burn](https://burn.dev) deep-learning framework.
//!
//! - [`quant`]: quantizers with straight-through gradients — deterministic and stochastic
//!   sign, `k`-bit linear, power-of-two — each one autodiff op.
//! - [`QnnBackend`]: the backend extension, implemented for `NdArray`, `Wgpu` (and every
//!   CubeCL runtime), `Fusion<B>` and `Autodiff<B>`. Write code once against
//!   `B: QnnBackend` and switch backends by changing the type parameter.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::tensor::Tensor;
//! use burn_qnn::{QnnBackend, quant};
//!
//! /// Binarizes weights and inputs and multiplies them, as a binary layer does.
//! fn binary_product<B: QnnBackend>(device: &B::Device) -> Tensor<B, 2> {
//!     let weights = Tensor::<B, 2>::from_floats([[0.3, -0.8], [-0.1, 0.9]], device);
//!     let inputs = Tensor::<B, 2>::from_floats([[1.5, -0.2]], device);
//!     quant::sign(inputs).matmul(quant::sign(weights))
//! }
//!
//! let y = binary_product::<NdArray>(&Default::default());
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [2.0, -2.0]);
//! // The same code, with gradients:
//! let y = binary_product::<Autodiff<NdArray>>(&Default::default());
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [2.0, -2.0]);
//! ```
//!
//! ## Features
//! - `ndarray` (default): the CPU backend, burn-ndarray.
//! - `wgpu`: the GPU backend, burn-wgpu (CubeCL), with and without fusion.
//! - `train` (default): `learner` and `train::fit`, training with burn-train's learner
//!   (without its terminal UI), and the examples.
//! - `data` (default): the readers of the official CIFAR-10, SVHN and MNIST files
//!   (`data::cifar10`, `data::svhn`, `data::mnist`), and Burn's `Dataset` and `Batcher` traits
//!   for `data::ImageDataset` and `data::ImageBatcher` (Burn's `dataset` feature).
//! - `download` (default): downloading missing data files, MD5-checked (ureq with rustls).
//! - `zca`: ZCA whitening, `data::Zca` (faer).
//! - `progress` (on with `train` and `download`): progress bars on standard error
//!   (indicatif).
//!
//! `default-features = false, features = ["ndarray"]` keeps the layers, kernels, models,
//! packed inference, quantizers, optimizers, `train::accuracy` and the bundled digits, without
//! burn-train, the downloader's TLS stack (C and assembly in `ring`) or faer.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
pub mod data;
pub mod inference;
pub mod io;
pub mod kernels;
#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod learner;
pub mod loss;
pub mod memory;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
mod progress;
pub mod quant;
pub mod threads;
pub mod train;

pub use backend::{QnnAutodiffBackend, QnnBackend};

/// The code blocks of README.md, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
