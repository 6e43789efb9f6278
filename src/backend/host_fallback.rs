//! Packed ops for backends that have no packed kernels of their own yet (the CubeCL backends):
//! the bits are packed and multiplied in host memory by the CPU kernels, and results go back to
//! the device. Correct and exact, not fast; the float path (`qnn_xnor_matmul`'s default) stays
//! on the device.

use burn::tensor::{Device, Tensor, TensorData, backend::Backend};

use crate::ops::{Encoding, HostPacked};

/// Packed bits held in host memory for a tensor of a device backend, with the device that
/// results go to.
#[derive(Clone, Debug)]
pub struct HostFallbackPacked<D> {
    host: HostPacked,
    device: D,
}

impl<D: Clone> HostFallbackPacked<D> {
    pub(crate) fn new(host: HostPacked, device: &D) -> Self {
        Self {
            host,
            device: device.clone(),
        }
    }

    pub(crate) fn host(&self) -> &HostPacked {
        &self.host
    }
}

pub(crate) fn pack<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    encoding: Encoding,
) -> HostFallbackPacked<Device<B>> {
    let device = x.device();
    let shape = x.dims().to_vec();
    let values = x
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data");
    HostFallbackPacked::new(HostPacked::pack(&values, &shape, encoding), &device)
}

pub(crate) fn unpack<B: Backend, const D: usize>(
    packed: &HostFallbackPacked<Device<B>>,
) -> Tensor<B, D> {
    upload(packed.host.unpack(), packed.host.shape(), &packed.device)
}

pub(crate) fn matmul<B: Backend, const D: usize>(
    a: &HostFallbackPacked<Device<B>>,
    b_t: &HostFallbackPacked<Device<B>>,
) -> Tensor<B, D> {
    let (values, shape) = a.host.matmul_transposed(&b_t.host);
    upload(values, &shape, &a.device)
}

fn upload<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: &[usize],
    device: &Device<B>,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

/// Implements the packed part of `QnnBackend` with the host fallback.
macro_rules! host_fallback_packed_ops {
    () => {
        type Packed =
            $crate::backend::host_fallback::HostFallbackPacked<burn::tensor::Device<Self>>;

        fn qnn_pack<const D: usize>(
            x: burn::tensor::Tensor<Self, D>,
            encoding: $crate::ops::Encoding,
        ) -> Self::Packed {
            $crate::backend::host_fallback::pack(x, encoding)
        }

        fn qnn_packed_shape(packed: &Self::Packed) -> Vec<usize> {
            packed.host().shape().to_vec()
        }

        fn qnn_packed_encoding(packed: &Self::Packed) -> $crate::ops::Encoding {
            packed.host().encoding()
        }

        fn qnn_unpack<const D: usize>(packed: &Self::Packed) -> burn::tensor::Tensor<Self, D> {
            $crate::backend::host_fallback::unpack(packed)
        }

        fn qnn_packed_to_bytes(packed: &Self::Packed) -> Vec<u8> {
            packed.host().to_bytes()
        }

        fn qnn_packed_from_host(
            host: $crate::ops::HostPacked,
            device: &burn::tensor::Device<Self>,
        ) -> Self::Packed {
            $crate::backend::host_fallback::HostFallbackPacked::new(host, device)
        }

        fn qnn_packed_matmul<const D: usize>(
            a: &Self::Packed,
            b_t: &Self::Packed,
        ) -> burn::tensor::Tensor<Self, D> {
            $crate::backend::host_fallback::matmul(a, b_t)
        }
    };
}

pub(crate) use host_fallback_packed_ops;
