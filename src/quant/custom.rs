//! Quantizers of the user's own: the [`Quantize`] trait the quant layers take, and
//! [`straight_through`], the autodiff node that gives any forward its own gradient.

use core::fmt::Debug;

use burn::tensor::Tensor;

use super::{CodeGrid, Quantizer};
use crate::QnnBackend;

/// The operand of a layer that a quantizer is applied to, for quantizers whose result depends
/// on more than one element (such as [`super::MagnitudeAwareSign`]'s per-channel scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// The layer's input; its first axis indexes the examples of a batch.
    Input,
    /// The layer's latent weights; `output_axis` indexes its output channels (`1` for
    /// [`crate::nn::QuantLinear`]'s `[d_input, d_output]`, `0` for
    /// [`crate::nn::QuantConv2d`]'s `[C_out, C_in, k_h, k_w]`).
    Weight {
        /// The axis of the output channels.
        output_axis: usize,
    },
}

/// A quantizer with its gradient: what [`crate::nn::QuantLinear`] and
/// [`crate::nn::QuantConv2d`] apply to their weights and inputs.
///
/// [`Quantizer`] (sign, k-bit linear, power of two), [`super::ApproxSign`] and
/// [`super::MagnitudeAwareSign`] implement it. To write one of your own, compute its value and
/// its derivative with Burn's tensor ops and join them with [`straight_through`]; the layers
/// call [`Quantize::quantize`] on every backend, under `Autodiff` too.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Tensor, backend::Backend};
/// use burn_qnn::QnnBackend;
/// use burn_qnn::nn::QuantLinearConfig;
/// use burn_qnn::quant::{self, Operand, Quantize, Quantizer};
///
/// /// Ternary weights `{−1, 0, +1}` (threshold ½), gradient 1 on `[−1, 1]`.
/// #[derive(Debug, Clone, Copy)]
/// struct Ternary;
///
/// impl Quantize for Ternary {
///     fn quantize<B: QnnBackend, const D: usize>(&self, x: Tensor<B, D>, _: Operand) -> Tensor<B, D> {
///         quant::straight_through(
///             x,
///             |x| x.clone().sign().mask_fill(x.abs().lower_elem(0.5), 0.0),
///             |x| x.abs().lower_equal_elem(1.0).float(),
///         )
///     }
/// }
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = QuantLinearConfig::new(3, 2)
///     .with_bias(false)
///     .init_with_quantizers::<B, _, _>(&device, Ternary, None::<Quantizer>);
/// let y = layer.forward(Tensor::<B, 2>::ones([4, 3], &device));
/// assert_eq!(y.dims(), [4, 2]);
/// ```
pub trait Quantize: Debug + Clone + Send + Sync + 'static {
    /// The quantized `x`, with this quantizer's gradient under `Autodiff`.
    fn quantize<B: QnnBackend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        operand: Operand,
    ) -> Tensor<B, D>;

    /// The integer codes behind the quantized values, where they are evenly spaced: with both
    /// operands' grids known, the quant layers compute their product from the codes (the
    /// bit-serial kernel on the CPU backends). `None` (the default) keeps Burn's float product.
    fn code_grid(&self) -> Option<CodeGrid> {
        None
    }
}

impl Quantize for Quantizer {
    /// [`super::quantize`]: element-wise, whatever the operand.
    fn quantize<B: QnnBackend, const D: usize>(&self, x: Tensor<B, D>, _: Operand) -> Tensor<B, D> {
        super::quantize(x, *self)
    }

    /// [`CodeGrid::of`]: every quantizer but `Pow2`.
    fn code_grid(&self) -> Option<CodeGrid> {
        CodeGrid::of(*self)
    }
}

/// A custom straight-through quantizer: the value `value(x)`, with the gradient
/// `derivative(x) ⊙ ∂L/∂q` with respect to `x`.
///
/// - forward: `q = value(x̂)`, where `x̂` is `x` detached from the graph;
/// - gradient: `∂L/∂x = derivative(x̂) ⊙ ∂L/∂q` (element-wise; `derivative` must return a tensor
///   of `x`'s shape).
///
/// It is one autodiff node whose backward keeps only the derivative tensor; `derivative` is
/// called only where a gradient is tracked, so inference pays for `value` alone. The closures
/// run Burn's tensor ops on any backend.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::Tensor;
/// use burn_qnn::quant;
///
/// type B = Autodiff<NdArray>;
/// let x = Tensor::<B, 1>::from_floats([-0.5, 0.25, 2.0], &Default::default()).require_grad();
/// // sign, with the gradient of tanh instead of the hard-tanh window
/// let y = quant::straight_through(x.clone(), |x| x.sign(), |x| -x.tanh().powi_scalar(2) + 1.0);
/// assert_eq!(y.to_data().to_vec::<f32>().unwrap(), [-1.0, 1.0, 1.0]);
/// let dx = x.grad(&y.sum().backward()).unwrap().to_data().to_vec::<f32>().unwrap();
/// assert!((dx[2] - (1.0 - 2f32.tanh().powi(2))).abs() < 1e-6);
/// ```
pub fn straight_through<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    value: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
    derivative: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let detached = x.clone().detach();
    let q = value(detached.clone());
    B::qnn_straight_through(x, q, || derivative(detached))
}
