//! A 2-D convolution with binary weights and, by default, binary inputs.

use burn::{
    config::Config,
    module::{Initializer, Module, Param},
    nn::PaddingConfig2d,
    tensor::{Tensor, module::conv2d},
};

use super::{PackedWeight, WeightForm, packed_weight::binary_alpha};
use crate::{
    QnnBackend,
    ops::{self, ConvGeometry, PaddingMode},
    quant::{self, Bits, GradRounding},
};

/// Configuration of a [`BinaryConv2d`] layer.
#[derive(Config, Debug)]
pub struct BinaryConv2dConfig {
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
    /// Padding (default `Valid`). Symmetric padding only: `Same` (stride 1, odd dilated
    /// kernel) or `Explicit` with equal top/bottom and left/right.
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
    /// What padded taps hold (default [`PaddingMode::Zero`], the paper's).
    #[config(default = "PaddingMode::Zero")]
    pub padding_mode: PaddingMode,
    /// Whether the layer adds a bias (default `true`, as Burn's `Conv2d`).
    #[config(default = true)]
    pub bias: bool,
    /// Whether inputs are binarized (default `true`); `false` convolves float inputs with the
    /// binary weights (a first layer), padded with 0 or +1 per [`PaddingMode`].
    #[config(default = true)]
    pub binarize_input: bool,
    /// Whether outputs are scaled per output channel by `α = mean|W|` over that channel's
    /// latent weights (XNOR-Net style; default `false`, as in the paper).
    #[config(default = false)]
    pub scaling: bool,
    /// Initializer of the latent weights (default uniform on `[−1, 1]`).
    #[config(default = "Initializer::Uniform { min: -1.0, max: 1.0 }")]
    pub initializer: Initializer,
    /// Quantize the layer's output gradient to this many bits in the backward pass (the paper's
    /// bit-wise gradients; it uses 6). With binary inputs the input and weight gradients are then
    /// integer products of the codes and ±1, computed exactly (on `NdArray` in integer kernels).
    /// `None` (the default) keeps the f32 gradient.
    pub grad_bits: Option<Bits>,
    /// How the output gradient is rounded to `grad_bits` bits (default
    /// [`GradRounding::Nearest`]; [`GradRounding::Stochastic`] is unbiased). The products stay
    /// exact integer products of the rounded codes either way.
    #[config(default = "GradRounding::Nearest")]
    pub grad_rounding: GradRounding,
}

/// A 2-D convolution `y = sign(x) ⊛ sign(W) (·α) + b` on packed XNOR-popcount kernels.
///
/// Input `[N, C_in, H, W]`, output `[N, C_out, H_out, W_out]`; latent weights
/// `[C_out, C_in, k_h, k_w]`, binarized in the forward with the straight-through estimator.
/// With [`PaddingMode::Zero`] the result equals the float convolution of the ±1 tensors with
/// zero padding, exactly. In training the autodiff node keeps only the bits of `x` and `W`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::PaddingConfig2d;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::nn::BinaryConv2dConfig;
///
/// let device = Default::default();
/// let conv = BinaryConv2dConfig::new([3, 16], [3, 3])
///     .with_padding(PaddingConfig2d::Same)
///     .init::<NdArray>(&device);
/// let x = Tensor::<NdArray, 4>::random([2, 3, 8, 8], Distribution::Default, &device);
/// assert_eq!(conv.forward(x).dims(), [2, 16, 8, 8]);
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BinaryConv2d<B: QnnBackend> {
    /// The packed signs of the weights, once the model is packed
    /// ([`crate::inference::pack`]); the layer then computes with them. Declared before `weight`: it
    /// marks `weight` as a latent weight for every module walk.
    pub packed: PackedWeight<B>,
    /// Latent weights `[C_out, C_in, k_h, k_w]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Bias `[C_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Channels, kernel, stride, padding, dilation and padding mode.
    #[module(skip)]
    pub geometry: ConvGeometry,
    /// Whether inputs are binarized.
    pub binarize_input: bool,
    /// Whether outputs are scaled by `α = mean|W|` per output channel.
    pub scaling: bool,
    /// Bits of the output gradient in the backward pass (`None`: f32).
    #[module(skip)]
    pub grad_bits: Option<Bits>,
    /// How the output gradient is rounded to `grad_bits` bits.
    #[module(skip)]
    pub grad_rounding: GradRounding,
}

/// The symmetric `[p_h, p_w]` of a padding configuration.
///
/// # Panics
/// For asymmetric padding, or `Same` where it would need it.
pub(crate) fn symmetric_padding(
    padding: &PaddingConfig2d,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> [usize; 2] {
    match *padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Same => std::array::from_fn(|axis| {
            let reach = dilation[axis] * (kernel[axis] - 1);
            assert!(
                stride[axis] == 1 && reach.is_multiple_of(2),
                "binary conv: `Same` padding needs stride 1 and an odd dilated kernel on each \
                 axis (kernel {kernel:?}, stride {stride:?}, dilation {dilation:?})"
            );
            reach / 2
        }),
        PaddingConfig2d::Explicit(top, left, bottom, right) => {
            assert!(
                top == bottom && left == right,
                "binary conv: only symmetric padding is supported, got top {top}, left {left}, \
                 bottom {bottom}, right {right}"
            );
            [top, left]
        }
    }
}

impl BinaryConv2dConfig {
    /// The geometry of the layer.
    ///
    /// # Panics
    /// For asymmetric padding, or zero sizes.
    pub fn geometry(&self) -> ConvGeometry {
        let padding =
            symmetric_padding(&self.padding, self.kernel_size, self.stride, self.dilation);
        ConvGeometry::new(self.channels, self.kernel_size)
            .with_stride(self.stride)
            .with_dilation(self.dilation)
            .with_padding(padding)
            .with_padding_mode(self.padding_mode)
    }

    /// Initializes the layer on `device`.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BinaryConv2d<B> {
        let geometry = self.geometry();
        let [c_in, c_out] = self.channels;
        let [kh, kw] = self.kernel_size;
        let weight = self.initializer.init_with(
            [c_out, c_in, kh, kw],
            Some(c_in * kh * kw),
            Some(c_out * kh * kw),
            device,
        );
        let bias = self.bias.then(|| Initializer::Zeros.init([c_out], device));
        BinaryConv2d {
            weight,
            bias,
            geometry,
            binarize_input: self.binarize_input,
            scaling: self.scaling,
            grad_bits: self.grad_bits,
            grad_rounding: self.grad_rounding,
            packed: PackedWeight::new(
                WeightForm::Signs {
                    scaled: self.scaling,
                },
                vec![c_out, c_in, kh, kw],
                device,
            ),
        }
    }
}

impl<B: QnnBackend> BinaryConv2d<B> {
    /// `[N, C_in, H, W] → [N, C_out, H_out, W_out]`.
    ///
    /// # Panics
    /// If the input does not have `C_in` channels or is smaller than the kernel.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = if self.packed.is_packed() {
            self.packed_product(x)
        } else {
            self.product(x, self.weight.val())
        };
        B::qnn_channel_affine(y, self.alpha(), self.bias.as_ref().map(Param::val))
    }

    /// The per-output-channel scale `α = mean|W|` the layer multiplies its product by, where it
    /// scales (the packed one once packed).
    ///
    /// # Panics
    /// If `scaling` is on but the layer was packed without its scale.
    pub(crate) fn alpha(&self) -> Option<Tensor<B, 1>> {
        binary_alpha("BinaryConv2d", self.scaling, &self.packed, &self.weight)
    }

    /// The training form's convolution with the latent weight.
    fn product(&self, x: Tensor<B, 4>, weight: Tensor<B, 4>) -> Tensor<B, 4> {
        let geometry = &self.geometry;
        match (self.binarize_input, self.grad_bits) {
            (true, None) => ops::binary_conv2d(x, weight, geometry),
            (true, Some(bits)) => {
                ops::binary_conv2d_quantized_grad(x, weight, geometry, bits, self.grad_rounding)
            }
            (false, bits) => {
                let (input, options) = geometry.conv_input(x);
                let y = conv2d(input, quant::sign(weight), None, options);
                match bits {
                    Some(bits) => self.grad_rounding.quantize_gradient(y, bits),
                    None => y,
                }
            }
        }
    }

    /// The packed form's convolution with the weights' signs: packed once in the kernels'
    /// layout where the input is binarized, unpacked on each call only where it is not.
    fn packed_product(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.binarize_input {
            let weights = self.packed.conv_weights(&self.geometry);
            return weights.expect("a packed layer").forward(x);
        }
        let signs = self.packed.forward_weight().expect("a packed layer");
        let (input, options) = self.geometry.conv_input(x);
        conv2d(input, signs, None, options)
    }
}
