//! The inference form of a [`QuantLinear`]: weights stored as packed `k`-bit codes, products of
//! codes on the bit-serial AND-popcount kernel.

use burn::tensor::Tensor;

use super::PackedNetError;
use crate::{
    QnnBackend,
    nn::QuantLinear,
    ops::{self, Encoding, Packed},
    quant::{CodeGrid, Quantizer, quantizer},
};

/// A linear quantizer with its [`CodeGrid`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct Levels {
    quantizer: Quantizer,
    grid: CodeGrid,
}

impl Levels {
    /// The codes `(q − offset)/scale` of values, as the quantizer computes them (for `sign`:
    /// `1` for `x ≥ 0` or NaN, `0` for `x < 0`).
    fn codes<B: QnnBackend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.quantizer {
            Quantizer::Unsigned(bits) => quantizer::unsigned_code(x, bits),
            Quantizer::Signed(bits) => quantizer::signed_code(x, bits),
            Quantizer::Sign => x.ones_like().mask_fill(x.lower_elem(0.0), 0.0),
            Quantizer::Pow2(_) => unreachable!("Levels::of refuses power-of-two quantizers"),
        }
    }
}

/// The input quantizer and the code grids of the inputs and weights of a k-bit layer (`layer`
/// names it in errors).
///
/// # Errors
/// [`PackedNetError::Unsupported`] for float inputs (no input quantizer) or a power-of-two
/// quantizer, whose values are not evenly spaced codes.
pub(super) fn code_grids(
    layer: &str,
    input: Option<Quantizer>,
    weights: Quantizer,
) -> Result<(Quantizer, CodeGrid, CodeGrid), PackedNetError> {
    let unsupported = |what| PackedNetError::Unsupported {
        layer: layer.into(),
        what,
    };
    let input = input.ok_or_else(|| unsupported("float inputs"))?;
    let input_grid = CodeGrid::of(input).ok_or_else(|| unsupported("power-of-two inputs"))?;
    let weight_grid = CodeGrid::of(weights).ok_or_else(|| unsupported("power-of-two weights"))?;
    Ok((input, input_grid, weight_grid))
}

/// A [`QuantLinear`] for inference: `q_w(W)` stored as packed `k`-bit codes (1 bit for `sign`),
/// `q_x(x)·q_w(W)` computed from the exact integer product of the codes on the bit-serial
/// AND-popcount kernel, then scaled: with `q = s·c + o` for each operand,
/// `Σ q_x·q_w = s_x·s_w·Σ c_x·c_w + s_x·o_w·Σ c_x + o_x·s_w·Σ c_w + K·o_x·o_w`.
///
/// Its outputs equal the layer's up to float rounding (the layer sums the products of the
/// quantized values in `f32`; here the integer part is exact).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::inference::PackedQuantLinear;
/// use burn_qnn::nn::QuantLinearConfig;
/// use burn_qnn::quant::Bits;
///
/// let device = Default::default();
/// let layer = QuantLinearConfig::new(300, 20)
///     .with_bits(Bits::TWO, Bits::new(3)?)
///     .init::<NdArray>(&device);
/// let packed = PackedQuantLinear::from_layer(&layer)?;
/// let x = Tensor::<NdArray, 2>::random([4, 300], Distribution::Uniform(0.0, 1.0), &device);
/// let difference = (packed.forward(x.clone()) - layer.forward(x)).abs().max().into_scalar();
/// assert!(difference < 1e-3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct PackedQuantLinear<B: QnnBackend> {
    /// Codes of `q_w(W)ᵀ`, `[d_out, d_in]`.
    weights: Packed<B>,
    weight_levels: Levels,
    input_levels: Levels,
    /// `Σ c_w` per output, `[1, d_out]`.
    weight_code_sums: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
}

impl<B: QnnBackend> PackedQuantLinear<B> {
    /// Packs a layer's quantized weights.
    ///
    /// # Errors
    /// [`PackedNetError::Unsupported`] for float inputs (no input quantizer) or a power-of-two
    /// quantizer, whose values are not evenly spaced codes.
    pub fn from_layer(layer: &QuantLinear<B>) -> Result<Self, PackedNetError> {
        let (input, input_grid, weight_grid) =
            code_grids("QuantLinear", layer.input_quantizer, layer.weight_quantizer)?;
        let input_levels = Levels {
            quantizer: input,
            grid: input_grid,
        };
        let weight_levels = Levels {
            quantizer: layer.weight_quantizer,
            grid: weight_grid,
        };
        let codes = weight_levels.codes(layer.weight.val().transpose());
        let weight_code_sums = codes.clone().sum_dim(1).transpose();
        Ok(Self {
            weights: Packed::new(codes, Encoding::Codes(weight_levels.grid.bits)),
            weight_levels,
            input_levels,
            weight_code_sums,
            bias: layer.bias.as_ref().map(|b| b.val()),
        })
    }

    /// `[N, d_out]` outputs of `[N, d_in]` inputs, as [`QuantLinear::forward`].
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let d_in = x.dims()[1];
        let (i, w) = (self.input_levels, self.weight_levels);
        let codes = i.codes(x);
        let input_code_sums = codes.clone().sum_dim(1);
        let products: Tensor<B, 2> = ops::packed_matmul(
            &Packed::new(codes, Encoding::Codes(i.grid.bits)),
            &self.weights,
        );
        let mut y = products * (i.grid.scale * w.grid.scale);
        if w.grid.offset != 0.0 {
            y = y + input_code_sums * (i.grid.scale * w.grid.offset);
        }
        if i.grid.offset != 0.0 {
            y = y
                + self.weight_code_sums.clone() * (i.grid.offset * w.grid.scale)
                + d_in as f32 * i.grid.offset * w.grid.offset;
        }
        match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze(),
            None => y,
        }
    }

    /// The bytes of the packed weight codes (see [`crate::kernels`] for the layout).
    pub fn weight_bytes(&self) -> Vec<u8> {
        self.weights.to_bytes()
    }
}
