//! [`QnnBackend`] on burn-flex, Burn's im2col + `gemm` CPU backend: its float tensors are
//! buffers in host memory, which the kernels of [`crate::kernels`] read and write in place
//! ([`super::host`]).

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use super::host::HostFloat;

impl HostFloat for Flex {
    /// Flex's default float element is `f32` (tensors of other float types convert on entry).
    fn holds_f32() -> bool {
        true
    }

    fn with_f32<R, const D: usize>(x: Tensor<Self, D>, f: impl FnOnce(&[f32], &[usize]) -> R) -> R {
        let shape = x.dims();
        let tensor = x.into_primitive().tensor();
        if let Some(values) = tensor.as_slice::<f32>() {
            return f(values, &shape);
        }
        let data = if tensor.dtype() == DType::F32 {
            tensor.to_contiguous().into_data()
        } else {
            tensor.into_data().convert::<f32>()
        };
        f(data.as_slice::<f32>().expect("f32 data"), &shape)
    }

    fn float_tensor<const D: usize>(values: Vec<f32>, shape: &[usize]) -> Tensor<Self, D> {
        let data = TensorData::new(values, shape.to_vec());
        Tensor::from_primitive(TensorPrimitive::Float(FlexTensor::from_data(data)))
    }
}
