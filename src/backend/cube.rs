//! [`QnnBackend`] on every CubeCL runtime (wgpu, CUDA, ROCm) through burn-cubecl.
//!
//! The quantizers and the float `xnor_matmul` run on the device as fused-able tensor ops; packed
//! products use the host fallback until the CubeCL kernels land.

use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::{QnnBackend, host_fallback::host_fallback_packed_ops};

impl<R, F, I, BT> QnnBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    host_fallback_packed_ops!();
}
