//! One layer of a network in either precision.

use burn::{
    module::Module,
    nn::{Linear, conv::Conv2d},
    tensor::Tensor,
};

use crate::{
    QnnBackend,
    nn::{BinaryConv2d, BinaryLinear, BitPlaneConv2d, BitPlaneLinear},
};

/// A convolution of a [`super::Net`]: the bit-plane first layer, a binary layer, or Burn's
/// float `Conv2d`.
#[derive(Module, Debug)]
pub enum ConvLayer<B: QnnBackend> {
    /// 8-bit inputs × binary weights.
    BitPlane(BitPlaneConv2d<B>),
    /// Binary inputs × binary weights.
    Binary(BinaryConv2d<B>),
    /// Full precision.
    Float(Conv2d<B>),
}

impl<B: QnnBackend> ConvLayer<B> {
    /// `[N, C_in, H, W] → [N, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            ConvLayer::BitPlane(layer) => layer.forward(x),
            ConvLayer::Binary(layer) => layer.forward(x),
            ConvLayer::Float(layer) => layer.forward(x),
        }
    }
}

/// A fully connected layer of a [`super::Net`].
#[derive(Module, Debug)]
pub enum DenseLayer<B: QnnBackend> {
    /// 8-bit inputs × binary weights.
    BitPlane(BitPlaneLinear<B>),
    /// Binary inputs × binary weights.
    Binary(BinaryLinear<B>),
    /// Full precision.
    Float(Linear<B>),
}

impl<B: QnnBackend> DenseLayer<B> {
    /// `[N, d_in] → [N, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            DenseLayer::BitPlane(layer) => layer.forward(x),
            DenseLayer::Binary(layer) => layer.forward(x),
            DenseLayer::Float(layer) => layer.forward(x),
        }
    }
}
