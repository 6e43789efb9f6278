//! Integration tests of burn-qnn, one module per capability, run on every backend the build has.

mod backend_switch;
mod backends;
mod conv;
#[cfg(all(feature = "ndarray", feature = "wgpu"))]
mod cross_backend;
#[cfg(feature = "ndarray")]
mod data_batcher;
mod data_cifar10;
mod data_dataset;
mod data_digits;
mod data_download;
mod data_mnist;
mod data_support;
mod data_svhn;
mod modules;
mod packed;
mod params;
mod quantizers;
mod reference;
