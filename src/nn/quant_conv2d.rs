//! A 2-D convolution with k-bit weights and activations (QNN).

use burn::{
    config::Config,
    module::{Initializer, Module, Param},
    nn::PaddingConfig2d,
    tensor::{Tensor, module::conv2d, ops::ConvOptions},
};

use super::binary_conv2d::symmetric_padding;
use super::{PackedWeight, WeightForm};
use crate::{
    QnnBackend,
    quant::{Bits, Operand, Quantize, Quantizer},
};

/// Configuration of a [`QuantConv2d`] layer.
#[derive(Config, Debug)]
pub struct QuantConv2dConfig {
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
    /// Padding with zeros (default `Valid`; symmetric only).
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
    /// The weights' quantizer (default 2-bit [`Quantizer::Signed`]).
    #[config(default = "Quantizer::Signed(Bits::TWO)")]
    pub weight_quantizer: Quantizer,
    /// The inputs' quantizer (default 2-bit [`Quantizer::Unsigned`]); `None` keeps floats.
    #[config(default = "Some(Quantizer::Unsigned(Bits::TWO))")]
    pub input_quantizer: Option<Quantizer>,
    /// Whether the layer adds a bias (default `true`).
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the latent weights (default uniform on `[−1, 1]`).
    #[config(default = "Initializer::Uniform { min: -1.0, max: 1.0 }")]
    pub initializer: Initializer,
}

impl QuantConv2dConfig {
    /// With the default quantizers at `weight_bits` and `input_bits`.
    pub fn with_bits(self, weight_bits: Bits, input_bits: Bits) -> Self {
        self.with_weight_quantizer(Quantizer::Signed(weight_bits))
            .with_input_quantizer(Some(Quantizer::Unsigned(input_bits)))
    }

    /// Initializes the layer on `device`.
    ///
    /// # Panics
    /// For asymmetric padding.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> QuantConv2d<B> {
        self.init_with_quantizers(device, self.weight_quantizer, self.input_quantizer)
    }

    /// Initializes the layer on `device` with quantizers of any [`Quantize`] type in place of
    /// the config's (see [`super::QuantLinearConfig::init_with_quantizers`]); the weights get
    /// `Operand::Weight { output_axis: 0 }`.
    ///
    /// # Panics
    /// For asymmetric padding.
    pub fn init_with_quantizers<B: QnnBackend, W: Quantize, X: Quantize>(
        &self,
        device: &B::Device,
        weight_quantizer: W,
        input_quantizer: Option<X>,
    ) -> QuantConv2d<B, W, X> {
        let [c_in, c_out] = self.channels;
        let [kh, kw] = self.kernel_size;
        let padding =
            symmetric_padding(&self.padding, self.kernel_size, self.stride, self.dilation);
        QuantConv2d {
            weight: self.initializer.init_with(
                [c_out, c_in, kh, kw],
                Some(c_in * kh * kw),
                Some(c_out * kh * kw),
                device,
            ),
            bias: self.bias.then(|| Initializer::Zeros.init([c_out], device)),
            options: ConvOptions::new(self.stride, padding, self.dilation, 1),
            packed: PackedWeight::new(
                WeightForm::Quantized(weight_quantizer.clone()),
                vec![c_out, c_in, kh, kw],
                device,
            ),
            weight_quantizer,
            input_quantizer,
        }
    }
}

/// A 2-D convolution `y = q_x(x) ⊛ q_w(W) + b` with quantized weights and inputs (zero
/// padding), each quantizer with its straight-through gradient.
///
/// The quantizers are [`Quantizer`]s by default; any [`Quantize`] type fits
/// ([`QuantConv2dConfig::init_with_quantizers`]).
///
/// The gradients are those of Burn's `conv2d`. On wgpu, Burn 0.21's direct transposed
/// convolution (one of the two its autotuner may pick for the input gradient) is wrong where a
/// kernel side is smaller than its stride (a 1×1 kernel with stride 2, say), so the input
/// gradient can be wrong there. The forward pass does not use it, nor does `NdArray`.
/// [`crate::inference::PackedQuantConv2d`] is its inference form.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::nn::QuantConv2dConfig;
///
/// let device = Default::default();
/// let conv = QuantConv2dConfig::new([2, 4], [3, 3]).init::<NdArray>(&device);
/// assert_eq!(conv.forward(Tensor::<NdArray, 4>::ones([1, 2, 5, 5], &device)).dims(), [1, 4, 3, 3]);
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct QuantConv2d<B: QnnBackend, W: Quantize = Quantizer, X: Quantize = Quantizer> {
    /// The integer codes of the quantized weights, once the model is packed
    /// ([`crate::inference::pack`]); the layer then computes with them. Declared before `weight`: it
    /// marks `weight` as a latent weight for every module walk.
    pub packed: PackedWeight<B, W>,
    /// Latent weights `[C_out, C_in, k_h, k_w]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Bias `[C_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride, padding, dilation.
    #[module(skip)]
    pub options: ConvOptions<2>,
    /// The weights' quantizer.
    #[module(skip)]
    pub weight_quantizer: W,
    /// The inputs' quantizer.
    #[module(skip)]
    pub input_quantizer: Option<X>,
}

impl<B: QnnBackend, W: Quantize, X: Quantize> QuantConv2d<B, W, X> {
    /// `[N, C_in, H, W] → [N, C_out, H_out, W_out]`.
    ///
    /// Where both quantizers have a [`CodeGrid`](crate::quant::CodeGrid) (the default
    /// `Signed`/`Unsigned`/`Sign`), the convolution runs on their integer codes
    /// ([`QnnBackend::qnn_code_conv2d`]: the bit-serial kernel on the CPU backends where it is
    /// exact, `conv2d` elsewhere), with the gradients of `conv2d`; it equals the float
    /// convolution up to f32 rounding.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let input_grid = self.input_quantizer.as_ref().and_then(|q| q.code_grid());
        let x = match &self.input_quantizer {
            Some(q) => q.quantize(x, Operand::Input),
            None => x,
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        let add_bias = |y: Tensor<B, 4>| match bias.clone() {
            Some(bias) => B::qnn_channel_affine(y, None, Some(bias)),
            None => y,
        };
        // Packed: convolve the packed weight codes directly where the backend can.
        let w_grid = self.weight_quantizer.code_grid();
        let x = match (self.packed.rows(), input_grid, w_grid) {
            (Some(rows), Some(x_grid), Some(w_grid)) if self.options.groups == 1 => {
                let shape = self.packed.weight_shape();
                let shape = [shape[0], shape[1], shape[2], shape[3]];
                let options = &self.options;
                match B::qnn_code_conv2d_prepacked(
                    x,
                    x_grid,
                    rows.primitive(),
                    shape,
                    w_grid,
                    options,
                ) {
                    Ok(y) => return add_bias(y),
                    Err(x) => x,
                }
            }
            _ => x,
        };
        let weight = self.packed.forward_weight().unwrap_or_else(|| {
            self.weight_quantizer
                .quantize(self.weight.val(), Operand::Weight { output_axis: 0 })
        });
        match (input_grid, self.weight_quantizer.code_grid()) {
            (Some(x_grid), Some(w_grid)) if self.options.groups == 1 => add_bias(
                B::qnn_code_conv2d(x, x_grid, weight, w_grid, self.options.clone()),
            ),
            _ => conv2d(x, weight, bias, self.options.clone()),
        }
    }
}
