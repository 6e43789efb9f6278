//! The paper's first layer: 8-bit inputs times binary weights, computed on bit planes.
//!
//! Inputs are images scaled from 8-bit pixels `p ∈ {0, …, 255}` to `x = p/127.5 − 1 ∈ [−1, 1]`
//! (as the paper's preprocessing). The layer recovers the codes `p = round((x + 1)·127.5)` and
//! computes `x·sign(W)` as `(P − 127.5·M)/127.5`, where `P = p·sign(W)` is an exact integer
//! product (on packed bit planes, `P = Σₙ 2ⁿ·(pₙ·sign(W))`, one AND-popcount per plane, in the
//! packed inference form) and `M = 1·sign(W)` sums the weight signs over the taps inside the
//! input. Training (float products of the codes) and packed inference compute `P` and `M` as the
//! same exact integers, so their outputs are equal bit for bit.

use burn::{
    config::Config,
    module::{Initializer, Module, Param},
    nn::PaddingConfig2d,
    tensor::{Tensor, module::conv2d},
};

use super::{PackedWeight, WeightForm, binary_conv2d::symmetric_padding};
use crate::{QnnBackend, ops::ConvGeometry, quant};

/// Half the code range: `x = p/127.5 − 1`.
pub(crate) const HALF_RANGE: f32 = 127.5;

/// The 8-bit codes `round((x + 1)·127.5)`, clamped to `[0, 255]`, of inputs in `[−1, 1]`.
pub fn pixel_codes<B: QnnBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    ((x + 1.0) * HALF_RANGE).round().clamp(0.0, 255.0)
}

/// `(P − 127.5·M)/127.5`: the product of the scaled inputs from the exact integer products.
pub(crate) fn scaled_output<B: QnnBackend, const D: usize>(
    codes_product: Tensor<B, D>,
    inside_sums: Tensor<B, D>,
) -> Tensor<B, D> {
    (codes_product - inside_sums * HALF_RANGE) / HALF_RANGE
}

/// `M`: per output position, the sum of the weight signs over the taps inside an `input`-sized
/// image, `[1, C_out, H_out, W_out]`.
pub(crate) fn inside_sums<B: QnnBackend>(
    signs: Tensor<B, 4>,
    geometry: &ConvGeometry,
    input: [usize; 2],
) -> Tensor<B, 4> {
    let tap_sums = signs.sum_dim(1);
    let ones = Tensor::<B, 4>::ones([1, 1, input[0], input[1]], &tap_sums.device());
    conv2d(ones, tap_sums, None, geometry.options())
}

/// Configuration of a [`BitPlaneConv2d`] layer.
#[derive(Config, Debug)]
pub struct BitPlaneConv2dConfig {
    /// `[C_in, C_out]`.
    pub channels: [usize; 2],
    /// `[k_h, k_w]`.
    pub kernel_size: [usize; 2],
    /// Stride (default `[1, 1]`).
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Dilation (default `[1, 1]`).
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Zero padding (default `Valid`; symmetric only).
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
    /// Whether the layer adds a bias (default `true`).
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the latent weights (default uniform on `[−1, 1]`).
    #[config(default = "Initializer::Uniform { min: -1.0, max: 1.0 }")]
    pub initializer: Initializer,
}

/// A convolution of 8-bit images (scaled to `[−1, 1]`) with binary weights, the paper's first
/// layer of the convolutional networks; zero padding. It computes `x·sign(W)` as
/// `(P − 127.5·M)/127.5`: `P` the exact integer product of the 8-bit codes ([`pixel_codes`]) and
/// the weight signs, `M` the sum of the signs of the taps inside the input.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::PaddingConfig2d;
/// use burn::tensor::Tensor;
/// use burn_qnn::nn::BitPlaneConv2dConfig;
///
/// let device = Default::default();
/// let conv = BitPlaneConv2dConfig::new([3, 8], [3, 3])
///     .with_padding(PaddingConfig2d::Same)
///     .init::<NdArray>(&device);
/// let pixels = Tensor::<NdArray, 4>::full([1, 3, 4, 4], 200.0, &device);
/// let y = conv.forward(pixels / 127.5 - 1.0);
/// assert_eq!(y.dims(), [1, 8, 4, 4]);
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BitPlaneConv2d<B: QnnBackend> {
    /// The packed signs of the weights, once the model is packed
    /// ([`crate::inference::pack`]); the layer then computes with them. Declared before `weight`: it
    /// marks `weight` as a latent weight for every module walk.
    pub packed: PackedWeight<B>,
    /// Latent weights `[C_out, C_in, k_h, k_w]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Bias `[C_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Channels, kernel, stride, padding and dilation (zero padding).
    #[module(skip)]
    pub geometry: ConvGeometry,
}

impl BitPlaneConv2dConfig {
    /// Initializes the layer on `device`.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BitPlaneConv2d<B> {
        let [c_in, c_out] = self.channels;
        let [kh, kw] = self.kernel_size;
        let padding =
            symmetric_padding(&self.padding, self.kernel_size, self.stride, self.dilation);
        BitPlaneConv2d {
            weight: self.initializer.init_with(
                [c_out, c_in, kh, kw],
                Some(c_in * kh * kw),
                Some(c_out * kh * kw),
                device,
            ),
            bias: self.bias.then(|| Initializer::Zeros.init([c_out], device)),
            packed: PackedWeight::new(
                WeightForm::Signs { scaled: false },
                vec![c_out, c_in, kh, kw],
                device,
            ),
            geometry: ConvGeometry::new(self.channels, self.kernel_size)
                .with_stride(self.stride)
                .with_dilation(self.dilation)
                .with_padding(padding),
        }
    }
}

impl<B: QnnBackend> BitPlaneConv2d<B> {
    /// `[N, C_in, H, W]` in `[−1, 1]` → `[N, C_out, H_out, W_out]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let geometry = &self.geometry;
        let weight = self
            .packed
            .forward_weight()
            .unwrap_or_else(|| self.weight.val());
        let y = B::qnn_bit_plane_conv2d(x, weight, geometry);
        match &self.bias {
            Some(bias) => B::qnn_channel_affine(y, None, Some(bias.val())),
            None => y,
        }
    }
}

/// Configuration of a [`BitPlaneLinear`] layer.
#[derive(Config, Debug)]
pub struct BitPlaneLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether the layer adds a bias (default `true`).
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the latent weights (default uniform on `[−1, 1]`).
    #[config(default = "Initializer::Uniform { min: -1.0, max: 1.0 }")]
    pub initializer: Initializer,
}

/// A fully connected layer of 8-bit inputs (scaled to `[−1, 1]`) times binary weights, the
/// first layer of the paper's MLP. It computes `x·sign(W)` as
/// `(P − 127.5·M)/127.5`: `P` the exact integer product of the 8-bit codes ([`pixel_codes`]) and
/// the weight signs, `M` the sum of the signs of the taps inside the input.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::nn::BitPlaneLinearConfig;
///
/// let device = Default::default();
/// let layer = BitPlaneLinearConfig::new(784, 10).init::<NdArray>(&device);
/// let pixels = Tensor::<NdArray, 2>::zeros([2, 784], &device);
/// assert_eq!(layer.forward(pixels / 127.5 - 1.0).dims(), [2, 10]);
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BitPlaneLinear<B: QnnBackend> {
    /// The packed signs of the weights, once the model is packed
    /// ([`crate::inference::pack`]); the layer then computes with them. Declared before `weight`: it
    /// marks `weight` as a latent weight for every module walk.
    pub packed: PackedWeight<B>,
    /// Latent weights `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl BitPlaneLinearConfig {
    /// Initializes the layer on `device`.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BitPlaneLinear<B> {
        BitPlaneLinear {
            weight: self.initializer.init_with(
                [self.d_input, self.d_output],
                Some(self.d_input),
                Some(self.d_output),
                device,
            ),
            bias: self
                .bias
                .then(|| Initializer::Zeros.init([self.d_output], device)),
            packed: PackedWeight::new(
                WeightForm::Signs { scaled: false },
                vec![self.d_input, self.d_output],
                device,
            ),
        }
    }
}

impl<B: QnnBackend> BitPlaneLinear<B> {
    /// `[N, d_input]` in `[−1, 1]` → `[N, d_output]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let weight = self
            .packed
            .forward_weight()
            .unwrap_or_else(|| self.weight.val());
        let signs = quant::sign(weight);
        let product = pixel_codes(x).matmul(signs.clone());
        let y = scaled_output(product, signs.sum_dim(0));
        match &self.bias {
            Some(bias) => y + bias.val().unsqueeze(),
            None => y,
        }
    }
}
