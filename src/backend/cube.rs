//! [`QnnBackend`] on every CubeCL runtime (wgpu, CUDA, ROCm) through burn-cubecl.

use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::QnnBackend;

impl<R, F, I, BT> QnnBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
}
