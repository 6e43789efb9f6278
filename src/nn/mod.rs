//! Modules that drop into Burn models: binary and k-bit `Linear` and `Conv2d`, shift-based
//! batch norm, batch norm followed by the sign ([`BatchNormSign`], the activation between
//! binary layers), the bit-plane input layers, and the latent-weight tools of training.
//!
//! Where a layer's batch norm and sign feed the next binary layer, the blocks
//! ([`BinaryConvBlock`], [`BinaryLinearBlock`], [`BitPlaneConvBlock`]) hold the layer with its
//! activation: outside training on `NdArray` and `Flex` they fold the batch norm into the
//! product's kernel and hand the next block its signs as bits ([`Signs`]).
//!
//! Each layer has a `Config` (defaults documented, `init(&device)`), derives `Module` and has a
//! `forward` like its Burn counterpart, so a Burn model becomes a binarized one by swapping
//! layer types:
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::nn::PaddingConfig2d;
//! use burn::prelude::*;
//! use burn_qnn::QnnBackend;
//! use burn_qnn::nn::{BinaryConv2d, BinaryConv2dConfig, BinaryLinear, BinaryLinearConfig};
//!
//! #[derive(Module, Debug)]
//! struct Net<B: QnnBackend> {
//!     conv: BinaryConv2d<B>, // was burn::nn::conv::Conv2d<B>
//!     fc: BinaryLinear<B>,   // was burn::nn::Linear<B>
//! }
//!
//! impl<B: QnnBackend> Net<B> {
//!     fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
//!         let x = self.conv.forward(x).flatten(1, 3);
//!         self.fc.forward(x)
//!     }
//! }
//!
//! let device = Default::default();
//! let net = Net::<NdArray> {
//!     conv: BinaryConv2dConfig::new([1, 4], [3, 3])
//!         .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
//!         .init(&device),
//!     fc: BinaryLinearConfig::new(4 * 6 * 6, 10).init(&device),
//! };
//! assert_eq!(net.forward(Tensor::zeros([2, 1, 6, 6], &device)).dims(), [2, 10]);
//! ```

mod batch_norm;
mod batch_norm_sign;
mod binary_conv2d;
mod binary_conv_block;
mod binary_linear;
mod binary_linear_block;
mod bit_plane;
mod bit_plane_block;
#[cfg(all(test, feature = "ndarray"))]
mod block_tests;
mod display;
mod kept;
mod latent;
mod max_pool;
mod packed_weight;
mod quant_conv2d;
mod quant_linear;
mod shift_batch_norm;
mod signs;

pub use batch_norm::batch_norm;
pub(crate) use batch_norm_sign::sign_of_norm;
pub use batch_norm_sign::{BatchNormSign, BatchNormSignConfig};
pub use binary_conv_block::{BinaryConvBlock, BinaryConvBlockConfig};
pub use binary_conv2d::{BinaryConv2d, BinaryConv2dConfig};
pub use binary_linear::{BinaryLinear, BinaryLinearConfig};
pub use binary_linear_block::{BinaryLinearBlock, BinaryLinearBlockConfig};
pub use bit_plane::{
    BitPlaneConv2d, BitPlaneConv2dConfig, BitPlaneLinear, BitPlaneLinearConfig, pixel_codes,
};
pub(crate) use bit_plane::{HALF_RANGE, inside_sums, scaled_output};
pub use bit_plane_block::{BitPlaneConvBlock, BitPlaneConvBlockConfig};
pub(crate) use latent::LatentPath;
#[cfg(feature = "train")]
pub(crate) use latent::LatentWeightsBefore;
pub use latent::{
    LatentLrScale, ParseLatentLrScaleError, clip_latent_weights, glorot_lr_scale,
    latent_weight_fans,
};
pub use max_pool::max_pool2d;
pub use packed_weight::{PackedWeight, PackedWeightRecord, WeightForm};
pub(crate) use packed_weight::{StoredForm, check_packed, run_walk, walk_enter, walk_exit};
pub use quant_conv2d::{QuantConv2d, QuantConv2dConfig};
pub use quant_linear::{QuantLinear, QuantLinearConfig};
pub use shift_batch_norm::{ShiftBatchNorm, ShiftBatchNormConfig};
pub use signs::Signs;

/// The values of a small vector (a layer's bias, a batch norm's statistics) on the host, in
/// f32.
pub(crate) fn host_vector<B: burn::tensor::backend::Backend>(
    t: burn::tensor::Tensor<B, 1>,
) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 values")
}

/// `t` as a tensor of rank `D ≥ 2` (leading axes of size 1, as `unsqueeze`), without a reshape
/// where the rank stays 2 (burn-ndarray's reshape copies the whole tensor, a weight matrix of a
/// large layer on every call).
pub(crate) fn lift_rank<B: burn::tensor::backend::Backend, const D: usize>(
    t: burn::tensor::Tensor<B, 2>,
) -> burn::tensor::Tensor<B, D> {
    if D == 2 {
        burn::tensor::Tensor::from_primitive(t.into_primitive())
    } else {
        t.unsqueeze()
    }
}

/// `x` of rank `D` as a `[rows, cols]` matrix, without a reshape where `D` is 2.
pub(crate) fn flatten_rows<B: burn::tensor::backend::Backend, const D: usize>(
    x: burn::tensor::Tensor<B, D>,
    [rows, cols]: [usize; 2],
) -> burn::tensor::Tensor<B, 2> {
    if D == 2 {
        burn::tensor::Tensor::from_primitive(x.into_primitive())
    } else {
        x.reshape([rows, cols])
    }
}

/// The inverse of [`flatten_rows`]: a `[rows, cols]` matrix as a tensor of `dims`.
pub(crate) fn unflatten_rows<B: burn::tensor::backend::Backend, const D: usize>(
    y: burn::tensor::Tensor<B, 2>,
    dims: [usize; D],
) -> burn::tensor::Tensor<B, D> {
    if D == 2 {
        burn::tensor::Tensor::from_primitive(y.into_primitive())
    } else {
        y.reshape(dims)
    }
}
