//! The paper's networks (the MNIST, CIFAR-10 and SVHN experiments of Courbariaux et al. 2016
//! and Hubara et al. 2018), built from [`crate::nn`], with a width multiplier: the MNIST MLP
//! ([`NetConfig::mnist_mlp`]), the CIFAR-10 network ([`NetConfig::cifar10`]) and the SVHN
//! network ([`NetConfig::svhn`]); each also in full precision ([`Precision::Float`]),
//! the same shapes with Burn's float layers, for comparison.
//!
//! A binary network: the first layer multiplies 8-bit inputs (scaled to `[−1, 1]`) by binary
//! weights ([`crate::nn::BitPlaneConv2d`] / [`crate::nn::BitPlaneLinear`]); every later layer
//! binarizes its input and weights; batch norm (`ε = 1e-4`, momentum 0.1) follows every layer,
//! max-pooling 2×2 every second convolution (before the batch norm), and the last batch norm
//! gives the scores. Train it with the squared hinge loss and clip the latent weights after
//! each step ([`crate::nn::clip_latent_weights`]). [`crate::inference::PackedNet`] turns a
//! trained binary network into its packed inference form.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use burn_qnn::models::NetConfig;
//!
//! let device = Default::default();
//! let net = NetConfig::cifar10().with_width(0.125).init::<NdArray>(&device);
//! let scores = net.forward(Tensor::zeros([2, 3, 32, 32], &device));
//! assert_eq!(scores.dims(), [2, 10]);
//! ```

mod layers;
mod net;
mod summary;

pub use layers::{ConvLayer, DenseLayer};
pub use net::{Net, NetConfig, Precision};
pub use summary::{LayerSummary, ModelSummary, summary};
