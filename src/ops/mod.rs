//! Packed binary and low-bit matrix products: XNOR-popcount for ±1 operands, bit-serial
//! AND-popcount for unsigned integer codes.
//!
//! A [`Packed`] tensor holds rows of bits along its last dimension, in one byte layout for every
//! backend (see [`crate::kernels`]): its bytes move between backends and into records unchanged.
//! Products are exact: they equal the float product of the ±1 values or integer codes as long
//! as every partial sum stays below 2^24 (for ±1 operands: `K < 2^24`).
//!
//! # The longest exact sums, path by path
//!
//! | path | sums in | exact while | past that |
//! |---|---|---|---|
//! | CPU popcount (XNOR and bit-serial AND) | `u32` counts | rows of at most [`crate::kernels::MAX_POPCOUNT_LEN`] bits | panics |
//! | GPU popcount (CubeCL) | `i32` | `K < 2^31`, every size and element count below 2^32 | panics, naming the size |
//! | f32 output of either | `f32` | the sum below 2^24 (±1 operands: `K < 2^24`) | rounded, not exact |
//! | int8 bit-wise gradients ([`crate::kernels::int8`]) | `i32` | at most [`crate::kernels::int8::MAX_EXACT_LEN`] terms ([`crate::kernels::int8::MAX_EXACT_SIGN_LEN`] when one side is ±1) | panics |
//! | f32 backward products | `f32` | as any f32 matrix product: rounded | – |
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use burn_qnn::ops::{self, Encoding, Packed};
//!
//! let device = Default::default();
//! let a = Tensor::<NdArray, 2>::from_floats([[0.5, -2.0, 3.0]], &device);
//! let b = Tensor::<NdArray, 2>::from_floats([[1.0, -1.0], [1.0, 1.0], [-0.5, 2.0]], &device);
//!
//! // sign(a) · sign(b), on packed bits:
//! let y = ops::xnor_matmul(a.clone(), b.clone());
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [-1.0, -1.0]);
//!
//! // Weights packed once (as rows of bᵀ), activations packed on the fly:
//! let weights = Packed::new(b.transpose(), Encoding::Signs);
//! let y = ops::xnor_matmul_prepacked(a, &weights);
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [-1.0, -1.0]);
//! ```

mod conv;
mod host;

#[cfg(any(feature = "ndarray", feature = "flex"))]
pub(crate) use conv::check_weight_shape;
pub use conv::{
    ConvGeometry, PackedConvWeights, PaddingMode, binary_conv2d, binary_conv2d_quantized_grad,
    binary_conv2d_reference,
};
pub(crate) use conv::{conv_im2col, pack_weights_portable};

pub use host::HostPacked;
pub(crate) use host::{BatchPlan, ConvWeights};

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{
    QnnBackend,
    quant::{Bits, GradRounding},
};

/// What the bits of a [`Packed`] tensor stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// One bit per value: the sign, bit 1 for `x < 0` (−1), bit 0 otherwise (+1, also for
    /// `−0.0` and NaN), as [`crate::quant::sign`].
    Signs,
    /// Unsigned integer codes of `k` bits stored as `k` bit planes; a value packs to its code
    /// truncated towards zero and saturated to `[0, 2^k − 1]` (NaN → 0).
    Codes(Bits),
}

impl Encoding {
    /// Bit planes per row: 1 for signs, `k` for `k`-bit codes.
    pub fn planes(self) -> usize {
        match self {
            Encoding::Signs => 1,
            Encoding::Codes(bits) => bits.get() as usize,
        }
    }
}

/// Packed bytes that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackedError {
    /// A packed tensor needs at least two dimensions `[.., rows, k]`.
    #[error("a packed tensor needs a shape [.., rows, k] of at least 2 dimensions, got {0}")]
    Rank(usize),
    /// The byte count does not fit the shape and encoding.
    #[error("packed data of shape {shape:?} needs {expected} bytes, got {actual}")]
    Length {
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// The shape's size (values or bytes) overflows this machine's `usize`: no data can have
    /// it.
    #[error("packed data of shape {shape:?} would be larger than this machine can address")]
    TooLarge {
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// Bits past the end of a row are set: the data are corrupt or of another shape.
    #[error("packed row {row} has bits set past its length: corrupt data or wrong shape")]
    Padding {
        /// The first row (bit plane) with a set padding bit.
        row: usize,
    },
}

/// A tensor packed along its last dimension on backend `B`: shape `[.., rows, k]`.
#[derive(Debug, Clone)]
pub struct Packed<B: QnnBackend> {
    primitive: B::Packed,
}

impl<B: QnnBackend> Packed<B> {
    /// Packs `x` along its last dimension with `encoding`.
    pub fn new<const D: usize>(x: Tensor<B, D>, encoding: Encoding) -> Self {
        assert!(
            D >= 2,
            "Packed::new: a packed tensor needs at least 2 dimensions, got {D}"
        );
        Self {
            primitive: B::qnn_pack(x, encoding),
        }
    }

    /// Wraps a backend's packed primitive.
    pub(crate) fn from_primitive(primitive: B::Packed) -> Self {
        Self { primitive }
    }

    /// The backend's packed primitive.
    pub(crate) fn primitive(&self) -> &B::Packed {
        &self.primitive
    }

    /// The logical shape `[.., rows, k]`.
    pub fn shape(&self) -> Vec<usize> {
        B::qnn_packed_shape(&self.primitive)
    }

    /// How the values are encoded.
    pub fn encoding(&self) -> Encoding {
        B::qnn_packed_encoding(&self.primitive)
    }

    /// The values as a float tensor: ±1 for signs, the integer codes for codes.
    ///
    /// # Panics
    /// If `D` is not the packed rank.
    pub fn unpack<const D: usize>(&self) -> Tensor<B, D> {
        let rank = self.shape().len();
        assert_eq!(
            rank, D,
            "Packed::unpack: the packed tensor has rank {rank}, not {D}"
        );
        B::qnn_unpack(&self.primitive)
    }

    /// The packed bytes: rows of little-endian 64-bit words, the same on every backend.
    pub fn to_bytes(&self) -> Vec<u8> {
        B::qnn_packed_to_bytes(&self.primitive)
    }

    /// Reads bytes from [`Packed::to_bytes`] (of any backend) onto `device`.
    pub fn from_bytes(
        bytes: &[u8],
        shape: &[usize],
        encoding: Encoding,
        device: &Device<B>,
    ) -> Result<Self, PackedError> {
        let host = HostPacked::from_bytes(bytes, shape, encoding)?;
        Ok(Self {
            primitive: B::qnn_packed_from_host(host, device),
        })
    }
}

/// `sign(a) · sign(b)` on packed bits: `[.., M, K] × [.., K, N] → [.., M, N]`.
///
/// Equal, exactly, to the float product of the ±1 tensors (for `K < 2^24`). Batch dimensions
/// must be equal, or one operand a single matrix (batch dimensions of 1) shared by all. Under
/// `Autodiff`, inputs that need a gradient take the float path with the straight-through
/// gradients of [`crate::quant::sign`].
///
/// # Panics
/// If the shapes do not fit, as Burn's `matmul` does.
pub fn xnor_matmul<B: QnnBackend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
) -> Tensor<B, D> {
    let mut b_transposed = b.dims();
    b_transposed.swap(D.saturating_sub(2), D - 1);
    BatchPlan::new("xnor_matmul", &a.dims(), &b_transposed);
    B::qnn_xnor_matmul(a, b)
}

/// [`xnor_matmul`] whose backward quantizes the output gradient once to `grad_bits` bits with
/// `rounding` first: the gradients equal those of
/// `quant::quantize_gradient(sign(a)·sign(b), grad_bits)` (or of
/// [`crate::quant::quantize_gradient_stochastic`] under the same seed) up to the order of f32
/// sums, computed exactly in integers on the host backends (see
/// [`binary_conv2d_quantized_grad`]).
///
/// # Panics
/// If the shapes do not fit, as Burn's `matmul` does.
pub fn xnor_matmul_quantized_grad<B: QnnBackend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    grad_bits: Bits,
    rounding: GradRounding,
) -> Tensor<B, D> {
    let mut b_transposed = b.dims();
    b_transposed.swap(D.saturating_sub(2), D - 1);
    BatchPlan::new("xnor_matmul", &a.dims(), &b_transposed);
    B::qnn_xnor_matmul_quantized_grad(a, b, grad_bits, rounding)
}

/// `sign(a) · bᵀ` with `a` `[.., M, K]` packed on the fly and `b_t` `[.., N, K]` packed already
/// (as [`Encoding::Signs`] or [`Encoding::Codes`]); output `[.., M, N]`.
///
/// # Panics
/// If the shapes do not fit.
pub fn xnor_matmul_prepacked<B: QnnBackend, const D: usize>(
    a: Tensor<B, D>,
    b_t: &Packed<B>,
) -> Tensor<B, D> {
    packed_matmul(&Packed::new(a, Encoding::Signs), b_t)
}

/// The product of two packed operands, `a` `[.., M, K]` times the transpose of `b_t`
/// `[.., N, K]`: `out[.., i, j] = Σ_t a[.., i, t] · b_t[.., j, t]`, exactly.
///
/// Signs × signs runs the XNOR-popcount kernel; codes × signs (the paper's bit-plane input
/// layer: 8-bit pixels times binary weights) and codes × codes run the bit-serial AND-popcount
/// kernel.
///
/// # Panics
/// If the shapes do not fit or `D` is not the packed rank.
pub fn packed_matmul<B: QnnBackend, const D: usize>(
    a: &Packed<B>,
    b_t: &Packed<B>,
) -> Tensor<B, D> {
    let rank = a.shape().len();
    assert_eq!(
        rank, D,
        "packed_matmul: the operands have rank {rank}, not {D}"
    );
    B::qnn_packed_matmul(&a.primitive, &b_t.primitive)
}
