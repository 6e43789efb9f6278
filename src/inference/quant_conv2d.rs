//! The inference form of a [`QuantConv2d`]: weights stored as packed `k`-bit codes, the
//! convolution of codes on the bit-serial AND-popcount kernel.

use burn::tensor::{Tensor, ops::ConvOptions};

use super::{PackedNetError, quant_linear::code_grids};
use crate::{
    QnnBackend,
    nn::QuantConv2d,
    quant::{self, CodeGrid, Quantizer},
};

/// A [`QuantConv2d`] for inference: `q_w(W)` stored as packed `k`-bit codes (1 bit for
/// `sign`), `32/k` times smaller than the f32 weights; `q_x(x) ⊛ q_w(W)` computed as the
/// convolution of the integer codes ([`QnnBackend::qnn_code_conv2d`]: on the CPU backends the
/// bit-serial AND-popcount kernel where its integer sums are exact and, with padding, where the
/// input grid holds the padded 0, i.e. `Unsigned` inputs; Burn's `conv2d` elsewhere), then
/// scaled.
///
/// Its outputs equal the layer's evaluation outputs up to float rounding (on the CPU backends
/// exactly, wherever the layer itself convolves codes).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::PaddingConfig2d;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::inference::PackedQuantConv2d;
/// use burn_qnn::nn::QuantConv2dConfig;
/// use burn_qnn::quant::Bits;
///
/// let device = Default::default();
/// let conv = QuantConv2dConfig::new([3, 8], [3, 3])
///     .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
///     .with_bits(Bits::TWO, Bits::TWO)
///     .init::<NdArray>(&device);
/// let packed = PackedQuantConv2d::from_layer(&conv)?;
/// assert_eq!(packed.weight_bytes().len(), 8 * 2 * 8); // 8 rows of 27 taps: one word a plane
/// let x = Tensor::<NdArray, 4>::random([2, 3, 6, 6], Distribution::Uniform(0.0, 1.0), &device);
/// let difference = (packed.forward(x.clone()) - conv.forward(x)).abs().max().into_scalar();
/// assert_eq!(difference, 0.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct PackedQuantConv2d<B: QnnBackend> {
    /// Codes of `q_w(W)`, rows `[C_out, C_in·k_h·k_w]`.
    weights: B::Packed,
    /// `[C_out, C_in, k_h, k_w]`.
    weight_shape: [usize; 4],
    weight_grid: CodeGrid,
    input_quantizer: Quantizer,
    input_grid: CodeGrid,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
}

impl<B: QnnBackend> PackedQuantConv2d<B> {
    /// Packs a layer's quantized weights.
    ///
    /// # Errors
    /// [`PackedNetError::Unsupported`] for float inputs (no input quantizer), a power-of-two
    /// quantizer (its values are not evenly spaced codes) or grouped convolutions.
    pub fn from_layer(layer: &QuantConv2d<B>) -> Result<Self, PackedNetError> {
        let (input_quantizer, input_grid, weight_grid) =
            code_grids("QuantConv2d", layer.input_quantizer, layer.weight_quantizer)?;
        if layer.options.groups != 1 {
            return Err(PackedNetError::Unsupported {
                layer: "QuantConv2d".into(),
                what: "grouped convolution",
            });
        }
        let weight_shape = layer.weight.dims();
        let [c_out, c_in, kh, kw] = weight_shape;
        let quantized = quant::quantize(layer.weight.val(), layer.weight_quantizer);
        Ok(Self {
            weights: B::qnn_pack_codes(quantized.reshape([c_out, c_in * kh * kw]), weight_grid),
            weight_shape,
            weight_grid,
            input_quantizer,
            input_grid,
            bias: layer.bias.as_ref().map(|b| b.val()),
            options: layer.options.clone(),
        })
    }

    /// `[N, C_out, H_out, W_out]` outputs of `[N, C_in, H, W]` inputs, as
    /// [`QuantConv2d::forward`].
    ///
    /// # Panics
    /// If the input does not have the layer's `C_in` channels, as `conv2d` does.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = quant::quantize(x, self.input_quantizer);
        let weight =
            B::qnn_unpack_codes(&self.weights, self.weight_grid).reshape(self.weight_shape);
        let y = B::qnn_code_conv2d(
            x,
            self.input_grid,
            weight,
            self.weight_grid,
            self.options.clone(),
        );
        match &self.bias {
            Some(bias) => B::qnn_channel_affine(y, None, Some(bias.clone())),
            None => y,
        }
    }

    /// The bytes of the packed weight codes (see [`crate::kernels`] for the layout): `k` bit
    /// planes of whole 64-bit words for each output channel.
    pub fn weight_bytes(&self) -> Vec<u8> {
        B::qnn_packed_to_bytes(&self.weights)
    }
}
