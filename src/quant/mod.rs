//! Quantizers with straight-through gradients, as autodiff ops.
//!
//! Every function takes a float `Tensor<B, D>` of any rank on any [`QnnBackend`] and is one
//! autodiff node under `Autodiff<B>`: its backward keeps only a boolean mask of the inputs whose
//! gradient is cut (the gradient quantizer keeps nothing). Each function's documentation gives
//! its forward `q(x)` and its gradient `∂q/∂x` as formulas; all arithmetic is f32, rounding ties
//! go up (towards +∞), and NaN inputs get a documented value and a zero gradient.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::tensor::Tensor;
//! use burn_qnn::quant;
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let x = Tensor::<B, 1>::from_floats([-2.0, -0.3, 0.0, 0.7], &device).require_grad();
//! let y = quant::sign(x.clone());
//! assert_eq!(y.to_data().to_vec::<f32>().unwrap(), [-1.0, -1.0, 1.0, 1.0]);
//!
//! let grads = y.sum().backward();
//! let dx = x.grad(&grads).unwrap();
//! assert_eq!(dx.to_data().to_vec::<f32>().unwrap(), [0.0, 1.0, 1.0, 1.0]);
//! ```

mod bi_real;
mod bits;
mod custom;
mod grid;
pub mod quantizer;

pub use bi_real::{ApproxSign, MagnitudeAwareSign};
pub use bits::{Bits, Pow2Range, QuantError};
pub use custom::{Operand, Quantize, straight_through};
pub use grid::CodeGrid;
pub use quantizer::Quantizer;

use burn::tensor::{Distribution, Tensor};

use crate::QnnBackend;

/// Deterministic binarization.
///
/// - forward: `q(x) = +1` if `x ≥ 0`, `−1` otherwise; so `q(0) = q(−0.0) = +1`, `q(±∞) = ±1` and
///   `q(NaN) = +1`.
/// - gradient (hard-tanh straight-through estimator): `∂q/∂x = 1` if `|x| ≤ 1`, `0` otherwise
///   (also `0` for ±∞ and NaN).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
///
/// let x = Tensor::<NdArray, 2>::from_floats([[-0.0, 3.0], [-1e-9, 0.5]], &Default::default());
/// let y = burn_qnn::quant::sign(x);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [1.0, 1.0, -1.0, 1.0]);
/// ```
pub fn sign<B: QnnBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    B::qnn_quantize(x, Quantizer::Sign)
}

/// Stochastic binarization with the backend's random generator (seed it with `B::seed`).
///
/// - forward: `q(x) = +1` with probability `σ(x) = clip((x + 1)/2, 0, 1)`, `−1` otherwise,
///   independently per element; `q(NaN) = +1`. Drawn as `−1` where `u ≥ (x + 1)/2` for
///   `u ~ U[0, 1)`.
/// - gradient: as [`sign`], `∂q/∂x = 1` if `|x| ≤ 1`, `0` otherwise.
///
/// The same seed gives the same result on the same backend: call `B::seed(&device, seed)` before.
/// For full control over the randomness use [`stochastic_sign_with_noise`].
pub fn stochastic_sign<B: QnnBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let noise = Tensor::random(x.shape(), Distribution::Uniform(0.0, 1.0), &x.device());
    B::qnn_stochastic_sign(x, noise)
}

/// Stochastic binarization with caller-supplied uniform noise `u` in `[0, 1)`.
///
/// - forward: `q(x) = −1` where `u ≥ (x + 1)/2`, `+1` elsewhere (and for NaN `x`).
/// - gradient w.r.t. `x`: `1` if `|x| ≤ 1`, `0` otherwise; no gradient flows to `noise`.
///
/// # Panics
/// If `x` and `noise` differ in shape, as Burn's element-wise ops do.
pub fn stochastic_sign_with_noise<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    noise: Tensor<B, D>,
) -> Tensor<B, D> {
    assert_eq!(
        x.shape(),
        noise.shape(),
        "stochastic_sign_with_noise: the noise must have the shape of the input"
    );
    B::qnn_stochastic_sign(x, noise)
}

/// `k`-bit linear quantization of `[0, 1]`, for activations: `2^k` levels `0, 1/L, …, 1`.
///
/// - forward: `q(x) = floor(L·clip(x, 0, 1) + ½) / L` with `L = 2^k − 1` (ties round up);
///   `q(NaN) = NaN`, `q(+∞) = 1`, `q(−∞) = 0`.
/// - gradient: `∂q/∂x = 1` if `0 ≤ x ≤ 1`, `0` otherwise.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::quant::{self, Bits};
///
/// let x = Tensor::<NdArray, 1>::from_floats([-1.0, 0.2, 0.5, 2.0], &Default::default());
/// let y = quant::quantize_unsigned(x, Bits::TWO);
/// let third = 1.0 / 3.0;
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [0.0, third, 2.0 * third, 1.0]);
/// ```
pub fn quantize_unsigned<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    bits: Bits,
) -> Tensor<B, D> {
    B::qnn_quantize(x, Quantizer::Unsigned(bits))
}

/// `k`-bit linear quantization of `[−1, 1]`, for weights: `2^k` levels symmetric about 0.
///
/// - forward: `q(x) = (2j − L)/L` with `j = floor(L·clip((x + 1)/2, 0, 1) + ½)` and
///   `L = 2^k − 1`: the level nearest to `x` among `2^k` levels symmetric about 0 (exactly, bit
///   for bit), ties up; `k = 1` is [`sign`] (`q(0) = +1`); `q(NaN) = NaN`.
/// - gradient: `∂q/∂x = 1` if `|x| ≤ 1`, `0` otherwise.
pub fn quantize_signed<B: QnnBackend, const D: usize>(x: Tensor<B, D>, bits: Bits) -> Tensor<B, D> {
    B::qnn_quantize(x, Quantizer::Signed(bits))
}

/// Power-of-two (logarithmic) quantization with a clipping range of exponents.
///
/// - forward: `q(x) = sgn(x) · 2^clip(floor(log2|x| + ½), min_exp, max_exp)`; `q(±0) = 0`,
///   `q(±∞) = ±2^max_exp`, `q(NaN) = NaN`. The exponent is rounded in the log domain, ties up.
/// - gradient: `∂q/∂x = 1` if `|x| ≤ 2^max_exp`, `0` otherwise (saturated values pass none).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_qnn::quant::{self, Pow2Range};
///
/// let x = Tensor::<NdArray, 1>::from_floats([-3.0, 0.0, 0.3, 100.0], &Default::default());
/// let y = quant::quantize_pow2(x, Pow2Range::new(-4, 2)?);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [-4.0, 0.0, 0.25, 4.0]);
/// # Ok::<(), burn_qnn::quant::QuantError>(())
/// ```
pub fn quantize_pow2<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    range: Pow2Range,
) -> Tensor<B, D> {
    B::qnn_quantize(x, Quantizer::Pow2(range))
}

/// The paper's approximate power of two, `AP2(x) = sgn(x)·2^round(log2|x|)`, over every normal
/// f32 exponent: [`quantize_pow2`] with [`Pow2Range::FULL`].
///
/// - forward: `q(x) = sgn(x)·2^clip(floor(log2|x| + ½), −126, 127)`, `q(±0) = 0`.
/// - gradient: `∂q/∂x = 1` for every finite `x` (straight through), `0` for ±∞ and NaN.
pub fn ap2<B: QnnBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    quantize_pow2(x, Pow2Range::FULL)
}

/// Applies any [`Quantizer`] with its straight-through gradient (see its table of formulas).
pub fn quantize<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    quantizer: Quantizer,
) -> Tensor<B, D> {
    B::qnn_quantize(x, quantizer)
}

/// Identity forward whose gradient is quantized to `k` bits in the backward pass (the paper
/// quantizes gradients to 6 bits).
///
/// - forward: `q(x) = x`.
/// - backward: the incoming gradient `g` (the whole tensor) becomes
///   `s · floor(L·g/s + ½) / L` with `s = max|g|` and `L = max(2^(k−1) − 1, 1)`: `2L + 1` levels
///   symmetric about 0, always holding `0` and `±s`; an all-zero gradient stays zero; `k = 1`
///   behaves as `k = 2` (ternary). Non-finite gradients give non-finite results.
pub fn quantize_gradient<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    bits: Bits,
) -> Tensor<B, D> {
    B::qnn_quantize_gradient(x, bits)
}

/// [`quantize_gradient`] with stochastic rounding, from the backend's random generator (seed it
/// with `B::seed`): unbiased, where rounding to nearest drops every gradient smaller than half
/// a step.
///
/// - forward: `q(x) = x`.
/// - backward: the incoming gradient `g` becomes `s · floor(L·g/s + u) / L` with `s = max|g|`,
///   `L = max(2^(k−1) − 1, 1)` and `u` uniform in `[0, 1)`, drawn once per value: each value
///   goes to one of the two grid levels around it, the upper one with probability equal to
///   its distance from the lower one in steps, so `E[q] = g`. The grid is
///   [`quantize_gradient`]'s (`±s` stays exact); an all-zero gradient stays zero; non-finite
///   gradients give non-finite results.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Tensor, backend::Backend};
/// use burn_qnn::quant::{self, Bits};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// B::seed(&device, 1);
/// let x = Tensor::<B, 1>::from_floats([0.0; 4], &device).require_grad();
/// let y = quant::quantize_gradient_stochastic(x.clone(), Bits::new(2)?); // levels −s, 0, s
/// let upstream = Tensor::<B, 1>::from_floats([1.0, 0.25, -0.5, 0.0], &device);
/// let grads = (y * upstream).sum().backward();
/// let g = x.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap();
/// assert_eq!(g[0], 1.0); // the largest magnitude is exact
/// assert!(g[1] == 0.0 || g[1] == 1.0); // 1 with probability 1/4
/// assert!(g[2] == 0.0 || g[2] == -1.0); // −1 with probability 1/2
/// assert_eq!(g[3], 0.0);
/// # Ok::<(), burn_qnn::quant::QuantError>(())
/// ```
pub fn quantize_gradient_stochastic<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    bits: Bits,
) -> Tensor<B, D> {
    B::qnn_quantize_gradient_stochastic(x, bits)
}

/// How a layer rounds its quantized output gradient ([`crate::nn::BinaryLinearConfig::grad_rounding`]).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum GradRounding {
    /// To the nearest level, ties up ([`quantize_gradient`]; the default).
    #[default]
    Nearest,
    /// Stochastically, unbiased ([`quantize_gradient_stochastic`]).
    Stochastic,
}

impl GradRounding {
    /// The identity whose gradient is quantized to `bits` bits with this rounding:
    /// [`quantize_gradient`] or [`quantize_gradient_stochastic`].
    pub fn quantize_gradient<B: QnnBackend, const D: usize>(
        self,
        x: Tensor<B, D>,
        bits: Bits,
    ) -> Tensor<B, D> {
        match self {
            GradRounding::Nearest => quantize_gradient(x, bits),
            GradRounding::Stochastic => quantize_gradient_stochastic(x, bits),
        }
    }
}
