//! Integration tests of burn-qnn, one module per capability, run on every backend the build has.

mod backend_switch;
mod backends;
mod conv;
#[cfg(all(feature = "ndarray", feature = "wgpu"))]
mod cross_backend;
mod packed;
mod params;
mod quantizers;
mod reference;
