//! A fully connected layer with binary weights and, by default, binary inputs.

use burn::{
    config::Config,
    module::{Initializer, Module, Param},
    tensor::Tensor,
};

use super::{PackedWeight, WeightForm, packed_weight::binary_alpha};
use crate::{
    QnnBackend, ops,
    quant::{self, Bits, GradRounding},
};

/// Configuration of a [`BinaryLinear`] layer.
#[derive(Config, Debug)]
pub struct BinaryLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether the layer adds a bias (default `true`, as Burn's `Linear`; the paper's networks
    /// follow each layer with batch norm and use none).
    #[config(default = true)]
    pub bias: bool,
    /// Whether inputs are binarized with [`quant::sign`] (default `true`); `false` multiplies
    /// float inputs by the binary weights (a first layer).
    #[config(default = true)]
    pub binarize_input: bool,
    /// Whether outputs are scaled per output feature by `α = mean|W|` over that feature's
    /// latent weights (XNOR-Net style; default `false`, as in the paper).
    #[config(default = false)]
    pub scaling: bool,
    /// Initializer of the latent weights (default uniform on `[−1, 1]`, as the paper's code).
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

/// A fully connected layer `y = sign(x)·sign(W) (·α) + b` on packed XNOR-popcount kernels.
///
/// The weights are latent reals (`weight`, `[d_input, d_output]`, as Burn's `Linear`); the
/// forward binarizes them with the straight-through estimator of [`quant::sign`], so their
/// gradient is that of `sign(W)`, cut where `|W| > 1`. Clip them after each update with
/// [`super::clip_latent_weights`]. Training runs the packed kernels too: the autodiff node keeps
/// only the bits of `x` and `W`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::nn::BinaryLinearConfig;
///
/// let device = Default::default();
/// let layer = BinaryLinearConfig::new(3, 2).with_bias(false).init::<NdArray>(&device);
/// let x = Tensor::<NdArray, 2>::from_floats([[0.3, -2.0, 1.0]], &device);
/// let y = layer.forward(x); // [1, 2], each entry a sum of three ±1 products
/// assert!(y.into_data().iter::<f32>().all(|v| [-3.0, -1.0, 1.0, 3.0].contains(&v)));
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BinaryLinear<B: QnnBackend> {
    /// The packed signs of the weights, once the model is packed
    /// ([`crate::inference::pack`]); the layer then computes with them. Declared before `weight`: it
    /// marks `weight` as a latent weight for every module walk.
    pub packed: PackedWeight<B>,
    /// Latent weights `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Whether inputs are binarized.
    pub binarize_input: bool,
    /// Whether outputs are scaled by `α = mean|W|` per output feature.
    pub scaling: bool,
    /// Bits of the output gradient in the backward pass (`None`: f32).
    #[module(skip)]
    pub grad_bits: Option<Bits>,
    /// How the output gradient is rounded to `grad_bits` bits.
    #[module(skip)]
    pub grad_rounding: GradRounding,
}

impl BinaryLinearConfig {
    /// Initializes the layer on `device`.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BinaryLinear<B> {
        let weight = self.initializer.init_with(
            [self.d_input, self.d_output],
            Some(self.d_input),
            Some(self.d_output),
            device,
        );
        let bias = self
            .bias
            .then(|| Initializer::Zeros.init([self.d_output], device));
        BinaryLinear {
            weight,
            bias,
            binarize_input: self.binarize_input,
            scaling: self.scaling,
            grad_bits: self.grad_bits,
            grad_rounding: self.grad_rounding,
            packed: PackedWeight::new(
                WeightForm::Signs {
                    scaled: self.scaling,
                },
                vec![self.d_input, self.d_output],
                device,
            ),
        }
    }
}

impl<B: QnnBackend> BinaryLinear<B> {
    /// `[.., d_input] → [.., d_output]` (rank at least 2).
    ///
    /// # Panics
    /// If the last dimension is not `d_input`, or `D < 2`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        assert!(
            D >= 2,
            "BinaryLinear: the input needs rank ≥ 2 ([batch, features]), got {D}"
        );
        let [d_input, d_output] = self.weight_dims();
        assert_eq!(
            x.dims()[D - 1],
            d_input,
            "BinaryLinear: input {:?} does not end with d_input = {d_input}",
            x.dims()
        );
        let y = if self.packed.is_packed() {
            self.packed_product(x)
        } else {
            self.product(x, self.weight.val())
        };
        let (alpha, bias) = (self.alpha(), self.bias.as_ref().map(Param::val));
        if D == 2 {
            // `[N, d_output]`: the features are dimension 1, as a convolution's channels.
            return B::qnn_channel_affine(y, alpha, bias);
        }
        let y = match alpha {
            Some(alpha) => y * alpha.reshape([d_output]).unsqueeze(),
            None => y,
        };
        match bias {
            Some(bias) => y + bias.unsqueeze(),
            None => y,
        }
    }

    /// The per-output scale `α = mean|W|` the layer multiplies its product by, where it scales
    /// (the packed one once packed).
    ///
    /// # Panics
    /// If `scaling` is on but the layer was packed without its scale.
    pub(crate) fn alpha(&self) -> Option<Tensor<B, 1>> {
        binary_alpha("BinaryLinear", self.scaling, &self.packed, &self.weight)
    }

    /// `[d_input, d_output]`, also once the latent weight is packed away.
    pub fn weight_dims(&self) -> [usize; 2] {
        let shape = self.packed.weight_shape();
        [shape[0], shape[1]]
    }

    /// The training form's product with the latent weight.
    fn product<const D: usize>(&self, x: Tensor<B, D>, weight: Tensor<B, 2>) -> Tensor<B, D> {
        match (self.binarize_input, self.grad_bits) {
            (true, None) => ops::xnor_matmul(x, super::lift_rank(weight)),
            (true, Some(bits)) => ops::xnor_matmul_quantized_grad(
                x,
                super::lift_rank(weight),
                bits,
                self.grad_rounding,
            ),
            (false, bits) => {
                let y = x.matmul(super::lift_rank(quant::sign(weight)));
                match bits {
                    Some(bits) => self.grad_rounding.quantize_gradient(y, bits),
                    None => y,
                }
            }
        }
    }

    /// The packed form's product with the weights' signs: the packed rows directly where the
    /// input is binarized, the signs unpacked only where it is not.
    fn packed_product<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match (self.binarize_input, self.packed.rows()) {
            (true, Some(rows)) => {
                let dims = x.dims();
                let rows_in = dims[..D - 1].iter().product();
                let x = super::flatten_rows(x, [rows_in, dims[D - 1]]);
                let y = ops::xnor_matmul_prepacked(x, rows);
                let mut out_dims = dims;
                out_dims[D - 1] = y.dims()[1];
                super::unflatten_rows(y, out_dims)
            }
            _ => {
                let signs = self.packed.forward_weight().expect("a packed layer");
                x.matmul(super::lift_rank(signs))
            }
        }
    }
}
