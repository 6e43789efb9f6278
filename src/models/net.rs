//! The network shape shared by the paper's MLP and VGG-like convolutional networks.

use burn::{
    config::Config,
    module::Module,
    nn::{
        BatchNorm, BatchNormConfig, Dropout, DropoutConfig, LinearConfig, PaddingConfig2d,
        conv::Conv2dConfig,
    },
    tensor::Tensor,
};
use serde::{Deserialize, Serialize};

use super::{ConvLayer, DenseLayer};
use crate::{
    QnnBackend,
    nn::{BinaryConv2dConfig, BinaryLinearConfig, BitPlaneConv2dConfig, BitPlaneLinearConfig},
    ops::ConvGeometry,
};

/// Binary (the paper's BNN) or full precision (the same shapes with Burn's float layers and
/// hard-tanh activations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Precision {
    /// Binary weights and activations.
    #[default]
    Binary,
    /// f32 weights and activations.
    Float,
}

/// The shape of a [`Net`]: `3×3` same-padded convolutions (max-pooling 2×2 after every second
/// one), then fully connected layers, then the output layer.
#[derive(Config, Debug, PartialEq)]
pub struct NetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub image_size: usize,
    /// Output channels of each convolution (none for an MLP).
    pub conv_channels: Vec<usize>,
    /// Units of each hidden fully connected layer.
    pub hidden_units: Vec<usize>,
    /// Classes (output units).
    #[config(default = 10)]
    pub classes: usize,
    /// Binary or full precision.
    #[config(default = "Precision::Binary")]
    pub precision: Precision,
    /// Dropout on the input of the first fully connected layer of an MLP (default 0).
    #[config(default = 0.0)]
    pub dropout_input: f64,
    /// Dropout after each hidden layer (default 0).
    #[config(default = 0.0)]
    pub dropout_hidden: f64,
    /// Batch norm ε (default `1e-4`, the paper's).
    #[config(default = 1e-4)]
    pub epsilon: f64,
    /// Batch norm momentum (default `0.1`).
    #[config(default = 0.1)]
    pub momentum: f64,
    /// Bits of each binary layer's output gradient in the backward pass (the paper's bit-wise
    /// gradients, 6 in its experiments; see [`crate::nn::BinaryConv2dConfig::grad_bits`]);
    /// `None` (the default) keeps f32 gradients. The bit-plane first layer and float networks
    /// are unaffected.
    pub grad_bits: Option<crate::quant::Bits>,
    /// How the binary layers round their gradients to `grad_bits` bits (default nearest; see
    /// [`crate::quant::GradRounding`]).
    #[config(default = "crate::quant::GradRounding::Nearest")]
    pub grad_rounding: crate::quant::GradRounding,
}

impl NetConfig {
    /// MNIST: 784 – 3×4096 – 10, dropout 0.2 on the input and 0.5 after hidden layers.
    pub fn mnist_mlp() -> Self {
        Self::new(1, 28, vec![], vec![4096; 3])
            .with_dropout_input(0.2)
            .with_dropout_hidden(0.5)
    }

    /// CIFAR-10: 2×128C3 – MP2 – 2×256C3 – MP2 – 2×512C3 – MP2 – 2×1024FC – 10.
    pub fn cifar10() -> Self {
        Self::new(3, 32, vec![128, 128, 256, 256, 512, 512], vec![1024, 1024])
    }

    /// SVHN: the CIFAR-10 shape with convolutions 64-64-128-128-256-256.
    pub fn svhn() -> Self {
        Self::new(3, 32, vec![64, 64, 128, 128, 256, 256], vec![1024, 1024])
    }

    /// Every convolution and hidden layer `multiplier` times as wide (at least 1 unit).
    ///
    /// # Panics
    /// If `multiplier` is not positive and finite.
    pub fn with_width(mut self, multiplier: f64) -> Self {
        assert!(
            multiplier.is_finite() && multiplier > 0.0,
            "NetConfig::with_width: the multiplier must be positive, got {multiplier}"
        );
        let scale = |v: &mut usize| *v = ((*v as f64 * multiplier).round() as usize).max(1);
        self.conv_channels.iter_mut().for_each(scale);
        self.hidden_units.iter_mut().for_each(scale);
        self
    }

    /// The geometry of convolution `index`: 3 × 3 kernels, stride 1, zero padding 1 (the size
    /// kept), from the previous layer's channels (the image's for the first) to
    /// `conv_channels[index]`.
    ///
    /// # Panics
    /// If there is no convolution `index`.
    pub fn conv_geometry(&self, index: usize) -> ConvGeometry {
        let c_in = match index {
            0 => self.in_channels,
            i => self.conv_channels[i - 1],
        };
        ConvGeometry::new([c_in, self.conv_channels[index]], [3, 3]).with_padding([1, 1])
    }

    /// `(d_input, d_output)` of fully connected layer `index` (the output layer last).
    ///
    /// # Panics
    /// If there is no fully connected layer `index`.
    pub fn dense_shape(&self, index: usize) -> (usize, usize) {
        let d_out = |i: usize| self.hidden_units.get(i).copied().unwrap_or(self.classes);
        assert!(
            index <= self.hidden_units.len(),
            "NetConfig::dense_shape: no fully connected layer {index}"
        );
        let d_in = match index {
            0 => self.flat_features(),
            i => d_out(i - 1),
        };
        (d_in, d_out(index))
    }

    /// Whether max-pooling follows convolution `index`.
    pub fn pools_after(index: usize) -> bool {
        index % 2 == 1
    }

    /// Height and width of the last convolution's output.
    pub fn conv_output_size(&self) -> usize {
        let pools = (0..self.conv_channels.len())
            .filter(|&i| Self::pools_after(i))
            .count();
        // More poolings than bits in the size leave nothing (a plain shift would overflow).
        self.image_size.checked_shr(pools as u32).unwrap_or(0)
    }

    /// Inputs of the first fully connected layer.
    pub fn flat_features(&self) -> usize {
        let channels = self
            .conv_channels
            .last()
            .copied()
            .unwrap_or(self.in_channels);
        let side = self.conv_output_size();
        channels * side * side
    }

    /// Initializes the network on `device`.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> Net<B> {
        let binary = self.precision == Precision::Binary;
        let norm = |n| {
            BatchNormConfig::new(n)
                .with_epsilon(self.epsilon)
                .with_momentum(self.momentum)
                .init(device)
        };
        let mut convs = Vec::new();
        let mut conv_norms = Vec::new();
        for (i, &c_out) in self.conv_channels.iter().enumerate() {
            let geometry = self.conv_geometry(i);
            let (channels, kernel) = (geometry.channels, geometry.kernel);
            let [p_h, p_w] = geometry.padding;
            let padding = PaddingConfig2d::Explicit(p_h, p_w, p_h, p_w);
            let layer = match (binary, i) {
                (true, 0) => ConvLayer::BitPlane(
                    BitPlaneConv2dConfig::new(channels, kernel)
                        .with_padding(padding.clone())
                        .with_bias(false)
                        .init(device),
                ),
                (true, _) => ConvLayer::Binary(
                    BinaryConv2dConfig::new(channels, kernel)
                        .with_padding(padding.clone())
                        .with_bias(false)
                        .with_grad_bits(self.grad_bits)
                        .with_grad_rounding(self.grad_rounding)
                        .init(device),
                ),
                (false, _) => ConvLayer::Float(
                    Conv2dConfig::new(channels, kernel)
                        .with_padding(padding.clone())
                        .init(device),
                ),
            };
            convs.push(layer);
            conv_norms.push(norm(c_out));
        }
        let mut dense = Vec::new();
        let mut dense_norms = Vec::new();
        for i in 0..=self.hidden_units.len() {
            let (d_in, d_out) = self.dense_shape(i);
            let first = i == 0 && self.conv_channels.is_empty();
            let layer = match (binary, first) {
                (true, true) => DenseLayer::BitPlane(
                    BitPlaneLinearConfig::new(d_in, d_out)
                        .with_bias(false)
                        .init(device),
                ),
                (true, false) => DenseLayer::Binary(
                    BinaryLinearConfig::new(d_in, d_out)
                        .with_bias(false)
                        .with_grad_bits(self.grad_bits)
                        .with_grad_rounding(self.grad_rounding)
                        .init(device),
                ),
                (false, _) => DenseLayer::Float(LinearConfig::new(d_in, d_out).init(device)),
            };
            dense.push(layer);
            dense_norms.push(norm(d_out));
        }
        Net {
            convs,
            conv_norms,
            dense,
            dense_norms,
            dropout_input: DropoutConfig::new(self.dropout_input).init(),
            dropout_hidden: DropoutConfig::new(self.dropout_hidden).init(),
            precision: self.precision,
            config: self.clone(),
        }
    }
}

/// A network of [`NetConfig`]: images `[N, C, H, W]` in `[−1, 1]` to class scores `[N, classes]`.
#[derive(Module, Debug)]
pub struct Net<B: QnnBackend> {
    /// Convolutions.
    pub convs: Vec<ConvLayer<B>>,
    /// Batch norm after each convolution (after its pooling).
    pub conv_norms: Vec<BatchNorm<B>>,
    /// Fully connected layers, the last one the output layer.
    pub dense: Vec<DenseLayer<B>>,
    /// Batch norm after each fully connected layer.
    pub dense_norms: Vec<BatchNorm<B>>,
    /// Dropout on the flattened input of an MLP.
    pub dropout_input: Dropout,
    /// Dropout after hidden layers.
    pub dropout_hidden: Dropout,
    /// Binary or full precision.
    #[module(skip)]
    pub precision: Precision,
    /// The configuration the network was built from.
    #[module(skip)]
    pub config: NetConfig,
}

impl<B: QnnBackend> Net<B> {
    /// Class scores `[N, classes]` of images `[N, C, H, W]` scaled to `[−1, 1]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = images;
        for (i, (conv, norm)) in self.convs.iter().zip(&self.conv_norms).enumerate() {
            x = conv.forward(x);
            if NetConfig::pools_after(i) {
                x = crate::nn::max_pool2d(x, [2, 2], [2, 2]);
            }
            x = self.activation(self.norm_before_binary(norm, x));
        }
        let mut x = x.flatten::<2>(1, 3);
        if self.convs.is_empty() {
            x = self.dropout_input.forward(x);
        }
        let last = self.dense.len() - 1;
        for (i, (layer, norm)) in self.dense.iter().zip(&self.dense_norms).enumerate() {
            let y = layer.forward(x);
            if i == last {
                return crate::nn::batch_norm(norm, y);
            }
            x = self
                .dropout_hidden
                .forward(self.activation(self.norm_before_binary(norm, y)));
        }
        x
    }

    /// The batch norm of a layer whose output the next layer binarizes: for a binary network
    /// outside training on the backends that compute on the host, the norm's sign in one pass
    /// (as [`crate::nn::BatchNormSign`] computes it: exactly the sign of Burn's batch norm),
    /// which the next layer's binarization leaves as it is; the batch norm itself elsewhere.
    fn norm_before_binary<const D: usize>(
        &self,
        norm: &BatchNorm<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let binary = self.precision == Precision::Binary;
        if binary && B::qnn_computes_on_host() && !B::ad_enabled(&x.device()) {
            return crate::nn::sign_of_norm(norm, x);
        }
        crate::nn::batch_norm(norm, x)
    }

    /// Between layers: nothing for a binary network (the next layer binarizes its input with
    /// the straight-through estimator, the hard tanh's gradient), hard tanh for a float one.
    fn activation<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.precision {
            Precision::Binary => x,
            Precision::Float => x.clamp(-1.0, 1.0),
        }
    }
}
