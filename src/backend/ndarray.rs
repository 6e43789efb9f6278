//! [`QnnBackend`] on the CPU through burn-ndarray: packed products run the SIMD kernels of
//! [`crate::kernels`] directly on the tensors' memory.

use std::any::TypeId;

use burn::tensor::{Device, Tensor, TensorData, TensorPrimitive};
use burn_ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use ndarray::{ArcArray, IxDyn};

use super::QnnBackend;
use crate::{
    kernels::conv,
    ops::{ConvGeometry, Encoding, HostPacked, PaddingMode},
};

impl<E, I, Q> QnnBackend for NdArray<E, I, Q>
where
    E: FloatNdArrayElement,
    I: IntNdArrayElement,
    Q: QuantElement,
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    type Packed = HostPacked;

    fn qnn_computes_on_host() -> bool {
        E::dtype() == burn::tensor::DType::F32
    }

    fn qnn_with_host_values<const D: usize, R>(
        x: Tensor<Self, D>,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Option<R> {
        Self::qnn_computes_on_host().then(|| with_f32(x, |values, _| f(values)))
    }

    fn qnn_pack<const D: usize>(x: Tensor<Self, D>, encoding: Encoding) -> HostPacked {
        with_f32(x, |values, shape| HostPacked::pack(values, shape, encoding))
    }

    fn qnn_packed_shape(packed: &HostPacked) -> Vec<usize> {
        packed.shape().to_vec()
    }

    fn qnn_packed_encoding(packed: &HostPacked) -> Encoding {
        packed.encoding()
    }

    fn qnn_unpack<const D: usize>(packed: &HostPacked) -> Tensor<Self, D> {
        float_tensor(packed.unpack(), packed.shape())
    }

    fn qnn_packed_to_bytes(packed: &HostPacked) -> Vec<u8> {
        packed.to_bytes()
    }

    fn qnn_packed_from_host(host: HostPacked, _device: &Device<Self>) -> HostPacked {
        host
    }

    fn qnn_packed_matmul<const D: usize>(a: &HostPacked, b_t: &HostPacked) -> Tensor<Self, D> {
        let (values, shape) = a.matmul_transposed(b_t);
        float_tensor(values, &shape)
    }

    fn qnn_xnor_matmul<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>) -> Tensor<Self, D> {
        let a = with_f32(a, |values, shape| {
            HostPacked::pack(values, shape, Encoding::Signs)
        });
        let b_t = with_f32(b, |values, shape| {
            HostPacked::pack_columns(values, shape, Encoding::Signs)
        });
        Self::qnn_packed_matmul(&a, &b_t)
    }

    /// The direct binary convolution kernel of [`crate::kernels::conv`] (implicit GEMM on
    /// packed bits, no im2col copy).
    fn qnn_binary_conv2d_packed(
        x: Tensor<Self, 4>,
        weight: &HostPacked,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let [n, c, h, w] = x.dims();
        let [c_in, c_out] = geometry.channels;
        assert_eq!(
            c, c_in,
            "binary conv2d: input has {c} channels, the convolution expects {c_in}"
        );
        let [oh, ow] = geometry.output_size([h, w]);
        let weights = weight.conv_weights(c_in, geometry.kernel);
        let kernel_geometry = conv::ConvGeometry {
            batch: n,
            in_channels: c,
            height: h,
            width: w,
            out_channels: c_out,
            kernel: geometry.kernel,
            stride: geometry.stride,
            padding: geometry.padding,
            dilation: geometry.dilation,
        };
        let pad = match geometry.padding_mode {
            PaddingMode::Zero => conv::PadMode::Zero,
            PaddingMode::PlusOne => conv::PadMode::PlusOne,
        };
        let mut out = vec![0f32; n * c_out * oh * ow];
        with_f32(x, |values, _| {
            conv::binary_conv2d(
                values,
                &weights.weights,
                &kernel_geometry,
                pad,
                conv::ConvEpilogue::Raw,
                &mut out,
            )
        });
        float_tensor(out, &[n, c_out, oh, ow])
    }
}

/// Runs `f` on the tensor's values as a contiguous f32 slice, without a copy when the tensor is
/// a contiguous f32 array.
fn with_f32<B, R, const D: usize>(x: Tensor<B, D>, f: impl FnOnce(&[f32], &[usize]) -> R) -> R
where
    B: burn::tensor::backend::Backend<FloatTensorPrimitive = NdArrayTensor>,
{
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
            let data = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(other)).into_data();
            let values = data.convert::<f32>().into_vec::<f32>().expect("f32 data");
            f(&values, &shape)
        }
    }
}

/// A float tensor of the backend's element type holding `values`.
fn float_tensor<E, I, Q, const D: usize>(
    values: Vec<f32>,
    shape: &[usize],
) -> Tensor<NdArray<E, I, Q>, D>
where
    E: FloatNdArrayElement,
    I: IntNdArrayElement,
    Q: QuantElement,
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    if TypeId::of::<E>() == TypeId::of::<f32>() {
        let array = ArcArray::from_shape_vec(IxDyn(shape), values).expect("values fill the shape");
        Tensor::from_primitive(TensorPrimitive::Float(NdArrayTensor::from(array)))
    } else {
        Tensor::from_data(TensorData::new(values, shape.to_vec()), &Default::default())
    }
}
