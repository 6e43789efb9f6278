//! The sign quantizers of Bi-Real Net (Liu et al., 2018) beside the paper's hard-tanh one:
//! [`ApproxSign`] for activations and [`MagnitudeAwareSign`] for weights.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::{Operand, Quantize, Quantizer, straight_through};
use crate::QnnBackend;

/// Sign with Bi-Real Net's piecewise-polynomial gradient (the derivative of a quadratic
/// approximation of `sign`), usually for activations.
///
/// - forward: `q(x) = +1` if `x ≥ 0`, `−1` otherwise (as [`Quantizer::Sign`]: `q(−0.0) = +1`,
///   `q(NaN) = +1`);
/// - gradient: `∂q/∂x = 2 − 2|x|` for `|x| ≤ 1`, `0` otherwise (and for ±∞ and NaN), the
///   derivative of `F(x) = 2x + x²` on `[−1, 0)`, `2x − x²` on `[0, 1]`, `±1` outside.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::Tensor;
/// use burn_qnn::quant::{ApproxSign, Operand, Quantize};
///
/// type B = Autodiff<NdArray>;
/// let x = Tensor::<B, 1>::from_floats([-2.0, -0.5, 0.0, 0.75], &Default::default()).require_grad();
/// let y = ApproxSign.quantize(x.clone(), Operand::Input);
/// assert_eq!(y.to_data().to_vec::<f32>().unwrap(), [-1.0, -1.0, 1.0, 1.0]);
/// let dx = x.grad(&y.sum().backward()).unwrap();
/// assert_eq!(dx.to_data().to_vec::<f32>().unwrap(), [0.0, 1.0, 2.0, 0.5]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApproxSign;

impl Quantize for ApproxSign {
    /// Element-wise, whatever the operand.
    fn quantize<B: QnnBackend, const D: usize>(&self, x: Tensor<B, D>, _: Operand) -> Tensor<B, D> {
        straight_through(
            x,
            |x| Quantizer::Sign.forward(x),
            |x| {
                let blocked = Quantizer::Sign.blocked(x.clone());
                (x.abs() * -2.0 + 2.0).mask_fill(blocked, 0.0)
            },
        )
    }
}

/// Sign scaled by the mean magnitude of its slice (Bi-Real Net's magnitude-aware sign), usually
/// for weights.
///
/// For weights (`Operand::Weight { output_axis }`), each output channel `c` has its own scale
/// `α_c = mean |w|` over the channel's elements (every axis but `output_axis`); for inputs
/// (`Operand::Input`), each example (index of the first axis; the whole tensor for rank 1).
///
/// - forward: `q(w) = α_c · s(w)` with `s(w) = +1` if `w ≥ 0`, `−1` otherwise;
/// - gradient: `∂q/∂w = α_c` for `|w| ≤ 1`, `0` otherwise (and for ±∞ and NaN): the scale is
///   held constant in the backward (no gradient flows through `α_c`), as in Bi-Real Net and
///   Larq's `MagnitudeAwareSign`.
///
/// A NaN or infinite element makes its slice's scale NaN or infinite.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::quant::{MagnitudeAwareSign, Operand, Quantize};
///
/// // `[d_input, d_output]` weights: the columns are the output channels.
/// let w = Tensor::<NdArray, 2>::from_floats([[0.5, -0.2], [-0.1, 0.4]], &Default::default());
/// let q = MagnitudeAwareSign.quantize(w, Operand::Weight { output_axis: 1 });
/// let q = q.to_data().to_vec::<f32>().unwrap();
/// assert_eq!(q, [0.3, -0.3, -0.3, 0.3]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MagnitudeAwareSign;

impl Quantize for MagnitudeAwareSign {
    /// # Panics
    /// If `output_axis` is not an axis of `x`.
    fn quantize<B: QnnBackend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        operand: Operand,
    ) -> Tensor<B, D> {
        let kept_axis = match operand {
            Operand::Input => (D > 1).then_some(0),
            Operand::Weight { output_axis } => {
                assert!(
                    output_axis < D,
                    "MagnitudeAwareSign: output axis {output_axis} of a rank-{D} weight tensor"
                );
                Some(output_axis)
            }
        };
        let scale = slice_mean_magnitude(x.clone().detach(), kept_axis);
        let band_scale = scale.clone();
        straight_through(
            x,
            |x| Quantizer::Sign.forward(x) * scale,
            |x| {
                let blocked = Quantizer::Sign.blocked(x.clone());
                band_scale.mask_fill(blocked, 0.0)
            },
        )
    }
}

/// `mean |x|` over every axis but `kept_axis` (over all of them for `None`), broadcast back to
/// `x`'s shape.
fn slice_mean_magnitude<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    kept_axis: Option<usize>,
) -> Tensor<B, D> {
    let shape = x.shape();
    let mut mean = x.abs();
    for axis in (0..D).filter(|&axis| Some(axis) != kept_axis) {
        mean = mean.mean_dim(axis);
    }
    mean.expand(shape)
}
