//! Sign activations passed between binary layers: [`Signs`].

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use crate::{QnnBackend, kernels::conv::PackedActivations, quant};

/// The `±1` activations `[N, C, H, W]` that one binary layer hands the next, as
/// [`BinaryConvBlock::forward_signs`](super::BinaryConvBlock::forward_signs) takes and gives
/// them.
///
/// Outside training on the backends that compute on the host (`NdArray`, `Flex`), a block's
/// output is kept as packed bits (1 bit a value, the layout of
/// [`PackedActivations`]), so the next block reads it without a float tensor written or read
/// in between. Elsewhere (training, the GPU backends) it is a float tensor, with its gradients.
/// [`Signs::into_tensor`] gives the `±1` float tensor in every case, for any other operation
/// (a residual addition, pooling, flattening into a fully connected layer).
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
pub struct Signs<B: QnnBackend> {
    repr: Repr<B>,
}

#[derive(Debug, Clone)]
enum Repr<B: QnnBackend> {
    /// Values whose signs are the activations; `binarized` where they are `±1` already.
    Values {
        values: Tensor<B, 4>,
        binarized: bool,
    },
    /// Packed signs in host memory, for a tensor on `device`.
    Bits {
        bits: Arc<PackedActivations>,
        device: Device<B>,
    },
}

impl<B: QnnBackend> Signs<B> {
    /// The signs of `x` `[N, C, H, W]`, as [`quant::sign`] gives them: `+1` where `x ≥ 0` (both
    /// zeros) or NaN, `−1` where `x < 0`; under autodiff with its straight-through gradient
    /// (`1` where `|x| ≤ 1`, else `0`). The sign is taken where the signs are used (a binary
    /// layer binarizes its input anyway), so making them costs nothing.
    pub fn of(x: Tensor<B, 4>) -> Self {
        Self {
            repr: Repr::Values {
                values: x,
                binarized: false,
            },
        }
    }

    /// Signs of a tensor that holds only `±1` already.
    pub(crate) fn of_binarized(x: Tensor<B, 4>) -> Self {
        Self {
            repr: Repr::Values {
                values: x,
                binarized: true,
            },
        }
    }

    /// Signs held as packed bits, for tensors on `device`.
    pub(crate) fn from_bits(bits: PackedActivations, device: Device<B>) -> Self {
        Self {
            repr: Repr::Bits {
                bits: Arc::new(bits),
                device,
            },
        }
    }

    /// `[N, C, H, W]`.
    pub fn dims(&self) -> [usize; 4] {
        match &self.repr {
            Repr::Values { values, .. } => values.dims(),
            Repr::Bits { bits, .. } => bits.shape(),
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
    /// after a [`BinaryConvBlock`](super::BinaryConvBlock)).
    pub fn is_packed(&self) -> bool {
        matches!(self.repr, Repr::Bits { .. })
    }

    /// The packed bits, where the signs are held so.
    pub(crate) fn bits(&self) -> Option<&PackedActivations> {
        match &self.repr {
            Repr::Bits { bits, .. } => Some(bits),
            Repr::Values { .. } => None,
        }
    }

    /// Values whose signs are the activations, for a layer that binarizes its input itself:
    /// no sign is taken here.
    pub(crate) fn into_values(self) -> Tensor<B, 4> {
        match self.repr {
            Repr::Values { values, .. } => values,
            Repr::Bits { .. } => self.into_tensor(),
        }
    }

    /// The signs as a float tensor of `±1`, `[N, C, H, W]`.
    pub fn into_tensor(self) -> Tensor<B, 4> {
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
                let mut values = vec![0f32; bits.shape().iter().product()];
                bits.to_nchw(&mut values);
                Tensor::from_data(TensorData::new(values, bits.shape()), &device)
            }
        }
    }
}
