//! [`QnnBackend`] on burn-ndarray: its float tensors are `ndarray` arrays in host memory, which
//! the kernels of [`crate::kernels`] read and write in place ([`super::host`]).

use std::any::TypeId;

use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use ndarray::{ArcArray, IxDyn};

use super::host::HostFloat;

impl<E, I, Q> HostFloat for NdArray<E, I, Q>
where
    E: FloatNdArrayElement,
    I: IntNdArrayElement,
    Q: QuantElement,
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn holds_f32() -> bool {
        E::dtype() == burn::tensor::DType::F32
    }

    fn with_f32<R, const D: usize>(x: Tensor<Self, D>, f: impl FnOnce(&[f32], &[usize]) -> R) -> R {
        let shape = x.dims();
        match x.into_primitive().tensor() {
            NdArrayTensor::F32(storage) => {
                let view = storage.view();
                match view.as_slice() {
                    Some(values) => f(values, &shape),
                    None => f(&view.iter().copied().collect::<Vec<_>>(), &shape),
                }
            }
            other => {
                let data =
                    Tensor::<Self, D>::from_primitive(TensorPrimitive::Float(other)).into_data();
                let values = data.convert::<f32>().into_vec::<f32>().expect("f32 data");
                f(&values, &shape)
            }
        }
    }

    fn float_tensor<const D: usize>(values: Vec<f32>, shape: &[usize]) -> Tensor<Self, D> {
        if TypeId::of::<E>() == TypeId::of::<f32>() {
            let array =
                ArcArray::from_shape_vec(IxDyn(shape), values).expect("values fill the shape");
            Tensor::from_primitive(TensorPrimitive::Float(NdArrayTensor::from(array)))
        } else {
            Tensor::from_data(TensorData::new(values, shape.to_vec()), &Default::default())
        }
    }
}
