//! Sign activations passed between binary layers: [`Signs`].

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use crate::{
    QnnBackend,
    kernels::conv::PackedActivations,
    ops::{Encoding, HostPacked},
    quant,
};

/// The `±1` activations that one binary layer hands the next: `[N, C, H, W]` between
/// convolutions ([`BinaryConvBlock::forward_signs`](super::BinaryConvBlock::forward_signs)),
/// `[N, features]` between fully connected layers
/// ([`BinaryLinearBlock::forward_signs`](super::BinaryLinearBlock::forward_signs)).
///
/// Outside training on the backends that compute on the host (`NdArray`, `Flex`), a block's
/// output is kept as packed bits (1 bit a value: the layout of [`PackedActivations`] for
/// images, packed rows for features), so the next block reads it without a float tensor
/// written or read in between. Elsewhere (training, the GPU backends) it is a float tensor,
/// with its gradients. [`Signs::into_tensor`] gives the `±1` float tensor in every case, for any
/// other operation (a residual addition, pooling, a layer of another kind).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::nn::Signs;
///
/// let device = Default::default();
/// let x = Tensor::<NdArray, 4>::from_floats([[[[0.3, -2.0], [0.0, -0.1]]]], &device);
/// let signs = Signs::of(x);
/// assert_eq!(signs.dims(), [1, 1, 2, 2]);
/// assert_eq!(signs.into_tensor().into_data().to_vec::<f32>().unwrap(), [1.0, -1.0, 1.0, -1.0]);
/// ```
#[derive(Debug, Clone)]
pub struct Signs<B: QnnBackend, const D: usize = 4> {
    repr: Repr<B, D>,
}

#[derive(Debug, Clone)]
enum Repr<B: QnnBackend, const D: usize> {
    /// Values whose signs are the activations; `binarized` where they are `±1` already.
    Values {
        values: Tensor<B, D>,
        binarized: bool,
    },
    /// Packed signs in host memory, for a tensor on `device`.
    Bits {
        bits: Arc<HostSigns>,
        device: Device<B>,
    },
}

/// Whether a block computes on the CPU kernels for tensors on `device`: the backend computes on
/// the host, outside training.
pub(crate) fn on_host_kernels<B: QnnBackend>(device: &Device<B>) -> bool {
    B::qnn_computes_on_host() && !B::ad_enabled(device)
}

/// Signs packed in host memory.
#[derive(Debug)]
enum HostSigns {
    /// Images `[N, C, H, W]`, in the convolution kernels' layout.
    Images(PackedActivations),
    /// Rows `[N, features]` of [`Encoding::Signs`].
    Rows(HostPacked),
}

impl<B: QnnBackend, const D: usize> Signs<B, D> {
    /// The signs of `x`, as [`quant::sign`] gives them: `+1` where `x ≥ 0` (both zeros) or
    /// NaN, `−1` where `x < 0`; under autodiff with its straight-through gradient (`1` where
    /// `|x| ≤ 1`, else `0`). The sign is taken where the signs are used (a binary layer
    /// binarizes its input anyway), so making them costs nothing.
    pub fn of(x: Tensor<B, D>) -> Self {
        Self {
            repr: Repr::Values {
                values: x,
                binarized: false,
            },
        }
    }

    /// Signs of a tensor that holds only `±1` already.
    pub(crate) fn of_binarized(x: Tensor<B, D>) -> Self {
        Self {
            repr: Repr::Values {
                values: x,
                binarized: true,
            },
        }
    }

    fn from_host(bits: HostSigns, device: Device<B>) -> Self {
        Self {
            repr: Repr::Bits {
                bits: Arc::new(bits),
                device,
            },
        }
    }

    /// The shape: `[N, C, H, W]` or `[N, features]`.
    pub fn dims(&self) -> [usize; D] {
        match &self.repr {
            Repr::Values { values, .. } => values.dims(),
            Repr::Bits { bits, .. } => {
                let shape = match &**bits {
                    HostSigns::Images(images) => images.shape().to_vec(),
                    HostSigns::Rows(rows) => rows.shape().to_vec(),
                };
                shape
                    .try_into()
                    .expect("packed signs of the carrier's rank")
            }
        }
    }

    /// The device of the tensors the signs stand for.
    pub fn device(&self) -> Device<B> {
        match &self.repr {
            Repr::Values { values, .. } => values.device(),
            Repr::Bits { device, .. } => device.clone(),
        }
    }

    /// Whether the signs are held as packed bits (outside training, on `NdArray` and `Flex`,
    /// after a block).
    pub fn is_packed(&self) -> bool {
        matches!(self.repr, Repr::Bits { .. })
    }

    fn host(&self) -> Option<&HostSigns> {
        match &self.repr {
            Repr::Bits { bits, .. } => Some(bits),
            Repr::Values { .. } => None,
        }
    }

    /// The input of a layer: values whose signs are the activations where the layer binarizes
    /// its input itself (no sign taken here), else the `±1` tensor.
    pub(crate) fn into_input(self, layer_binarizes: bool) -> Tensor<B, D> {
        match self.repr {
            Repr::Values { values, .. } if layer_binarizes => values,
            _ => self.into_tensor(),
        }
    }

    /// Whether a block taking these signs computes on the CPU kernels ([`on_host_kernels`]).
    pub(crate) fn on_host_kernels(&self) -> bool {
        on_host_kernels::<B>(&self.device())
    }

    /// The signs as a float tensor of `±1`.
    pub fn into_tensor(self) -> Tensor<B, D> {
        match self.repr {
            Repr::Values {
                values,
                binarized: true,
            } => values,
            Repr::Values {
                values,
                binarized: false,
            } => quant::sign(values),
            Repr::Bits { bits, device } => {
                let (values, shape) = match &*bits {
                    HostSigns::Images(images) => {
                        let mut values = vec![0f32; images.shape().iter().product()];
                        images.to_nchw(&mut values);
                        (values, images.shape().to_vec())
                    }
                    HostSigns::Rows(rows) => (rows.unpack(), rows.shape().to_vec()),
                };
                Tensor::from_data(TensorData::new(values, shape), &device)
            }
        }
    }
}

impl<B: QnnBackend> Signs<B, 4> {
    /// Signs of images held as packed bits, for tensors on `device`.
    pub(crate) fn from_images(bits: PackedActivations, device: Device<B>) -> Self {
        Self::from_host(HostSigns::Images(bits), device)
    }

    /// The packed bits of images, where the signs are held so.
    pub(crate) fn images(&self) -> Option<&PackedActivations> {
        match self.host()? {
            HostSigns::Images(images) => Some(images),
            HostSigns::Rows(_) => None,
        }
    }

    /// The signs of each image as one row of `C·H·W` features (`[N, C, H, W]` →
    /// `[N, C·H·W]`, in the order of Burn's `flatten(1, 3)`), for a fully connected block.
    /// Bits are unpacked to floats on the way (the row order differs from the images' bit
    /// layout); the next block packs them again.
    pub fn flatten(self) -> Signs<B, 2> {
        match self.repr {
            Repr::Values { values, binarized } => Signs {
                repr: Repr::Values {
                    values: values.flatten(1, 3),
                    binarized,
                },
            },
            Repr::Bits { .. } => Signs::of_binarized(self.into_tensor().flatten(1, 3)),
        }
    }
}

impl<B: QnnBackend> Signs<B, 2> {
    /// Signs of feature rows held as packed bits ([`Encoding::Signs`] rows `[N, features]`),
    /// for tensors on `device`.
    pub(crate) fn from_rows(rows: HostPacked, device: Device<B>) -> Self {
        debug_assert_eq!(rows.encoding(), Encoding::Signs);
        Self::from_host(HostSigns::Rows(rows), device)
    }

    /// The packed rows, where the signs are held so.
    pub(crate) fn rows(&self) -> Option<&HostPacked> {
        match self.host()? {
            HostSigns::Rows(rows) => Some(rows),
            HostSigns::Images(_) => None,
        }
    }
}
