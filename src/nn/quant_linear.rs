//! A fully connected layer with k-bit weights and activations (QNN).

use burn::{
    config::Config,
    module::{Initializer, Module, Param},
    tensor::Tensor,
};

use super::{PackedWeight, WeightForm};
use crate::{
    QnnBackend,
    quant::{Bits, Operand, Quantize, Quantizer},
};

/// Configuration of a [`QuantLinear`] layer.
#[derive(Config, Debug)]
pub struct QuantLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// The weights' quantizer (default 2-bit [`Quantizer::Signed`], levels symmetric in
    /// `[−1, 1]`; `Signed(1)` is `sign`, [`Quantizer::Pow2`] gives log quantization).
    #[config(default = "Quantizer::Signed(Bits::TWO)")]
    pub weight_quantizer: Quantizer,
    /// The inputs' quantizer (default 2-bit [`Quantizer::Unsigned`] on `[0, 1]`, for inputs
    /// after a clipped activation); `None` keeps float inputs.
    #[config(default = "Some(Quantizer::Unsigned(Bits::TWO))")]
    pub input_quantizer: Option<Quantizer>,
    /// Whether the layer adds a bias (default `true`).
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the latent weights (default uniform on `[−1, 1]`).
    #[config(default = "Initializer::Uniform { min: -1.0, max: 1.0 }")]
    pub initializer: Initializer,
}

impl QuantLinearConfig {
    /// With `k`-bit weights and `k`-bit inputs, the default quantizers: `Signed(weight_bits)`
    /// and `Unsigned(input_bits)`.
    pub fn with_bits(self, weight_bits: Bits, input_bits: Bits) -> Self {
        self.with_weight_quantizer(Quantizer::Signed(weight_bits))
            .with_input_quantizer(Some(Quantizer::Unsigned(input_bits)))
    }

    /// Initializes the layer on `device`.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> QuantLinear<B> {
        self.init_with_quantizers(device, self.weight_quantizer, self.input_quantizer)
    }

    /// Initializes the layer on `device` with quantizers of any [`Quantize`] type (your own,
    /// [`crate::quant::ApproxSign`], [`crate::quant::MagnitudeAwareSign`]) in place of the
    /// config's `weight_quantizer` and `input_quantizer`; the weights get
    /// `Operand::Weight { output_axis: 1 }`.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn_qnn::nn::QuantLinearConfig;
    /// use burn_qnn::quant::{ApproxSign, MagnitudeAwareSign};
    ///
    /// // Bi-Real Net's quantizers.
    /// let layer = QuantLinearConfig::new(8, 4).init_with_quantizers::<NdArray, _, _>(
    ///     &Default::default(),
    ///     MagnitudeAwareSign,
    ///     Some(ApproxSign),
    /// );
    /// ```
    pub fn init_with_quantizers<B: QnnBackend, W: Quantize, X: Quantize>(
        &self,
        device: &B::Device,
        weight_quantizer: W,
        input_quantizer: Option<X>,
    ) -> QuantLinear<B, W, X> {
        QuantLinear {
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
                WeightForm::Quantized(weight_quantizer.clone()),
                vec![self.d_input, self.d_output],
                device,
            ),
            weight_quantizer,
            input_quantizer,
        }
    }
}

/// A fully connected layer `y = q_x(x)·q_w(W) + b` with quantized weights and inputs, each
/// quantizer with its straight-through gradient (see [`crate::quant`]).
///
/// The quantizers are [`Quantizer`]s by default; any [`Quantize`] type fits
/// ([`QuantLinearConfig::init_with_quantizers`]). Only the default form packs for inference.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::nn::QuantLinearConfig;
/// use burn_qnn::quant::Bits;
///
/// let device = Default::default();
/// let layer = QuantLinearConfig::new(4, 3)
///     .with_bits(Bits::new(3)?, Bits::TWO)
///     .init::<NdArray>(&device);
/// let y = layer.forward(Tensor::<NdArray, 2>::ones([5, 4], &device));
/// assert_eq!(y.dims(), [5, 3]);
/// # Ok::<(), burn_qnn::quant::QuantError>(())
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct QuantLinear<B: QnnBackend, W: Quantize = Quantizer, X: Quantize = Quantizer> {
    /// The integer codes of the quantized weights, once the model is packed
    /// ([`crate::inference::pack`]); the layer then computes with them. Declared before `weight`: it
    /// marks `weight` as a latent weight for every module walk.
    pub packed: PackedWeight<B, W>,
    /// Latent weights `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The weights' quantizer.
    #[module(skip)]
    pub weight_quantizer: W,
    /// The inputs' quantizer.
    #[module(skip)]
    pub input_quantizer: Option<X>,
}

impl<B: QnnBackend, W: Quantize, X: Quantize> QuantLinear<B, W, X> {
    /// `[.., d_input] → [.., d_output]` (rank at least 2).
    ///
    /// # Panics
    /// If the last dimension is not `d_input`.
    ///
    /// Where both quantizers have a [`CodeGrid`](crate::quant::CodeGrid) (the default
    /// `Signed`/`Unsigned`/`Sign`), the product runs on their integer codes
    /// ([`QnnBackend::qnn_code_matmul`]: the bit-serial kernel on the CPU backends), with the
    /// gradients of `matmul`; it equals the float product up to f32 rounding.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let input_grid = self.input_quantizer.as_ref().and_then(|q| q.code_grid());
        let x = match &self.input_quantizer {
            Some(q) => q.quantize(x, Operand::Input),
            None => x,
        };
        let x = match self.packed_code_product(x, input_grid) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let weight = self.packed.forward_weight().unwrap_or_else(|| {
            self.weight_quantizer
                .quantize(self.weight.val(), Operand::Weight { output_axis: 1 })
        });
        let y = match (input_grid, self.weight_quantizer.code_grid()) {
            (Some(x_grid), Some(w_grid)) => {
                let dims = x.dims();
                let d_input = dims[D - 1];
                let rows = dims[..D - 1].iter().product();
                let x = super::flatten_rows(x, [rows, d_input]);
                let y = B::qnn_code_matmul(x, x_grid, weight, w_grid);
                let mut out_dims = dims;
                out_dims[D - 1] = y.dims()[1];
                super::unflatten_rows(y, out_dims)
            }
            _ => x.matmul(super::lift_rank(weight)),
        };
        self.add_bias(y)
    }

    /// `y + b` where the layer has a bias.
    fn add_bias<const D: usize>(&self, y: Tensor<B, D>) -> Tensor<B, D> {
        match &self.bias {
            Some(bias) => y + bias.val().unsqueeze(),
            None => y,
        }
    }

    /// The packed layer's product on its packed weight codes, where the input has a code grid
    /// and the backend multiplies prepacked codes ([`QnnBackend::qnn_code_matmul_prepacked`]):
    /// the result the decoded weights give, without decoding and packing them on every call.
    /// `Err(x)` elsewhere.
    fn packed_code_product<const D: usize>(
        &self,
        x: Tensor<B, D>,
        input_grid: Option<crate::quant::CodeGrid>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let (Some(rows), Some(x_grid), Some(w_grid)) = (
            self.packed.rows(),
            input_grid,
            self.weight_quantizer.code_grid(),
        ) else {
            return Err(x);
        };
        let dims = x.dims();
        let rows_in = dims[..D - 1].iter().product();
        let flat = super::flatten_rows(x, [rows_in, dims[D - 1]]);
        match B::qnn_code_matmul_prepacked(flat, x_grid, rows.primitive(), w_grid) {
            Ok(y) => {
                let mut out_dims = dims;
                out_dims[D - 1] = y.dims()[1];
                Ok(self.add_bias(super::unflatten_rows(y, out_dims)))
            }
            Err(flat) => Err(super::unflatten_rows(flat, dims)),
        }
    }
}
