//! The forward values of the straight-through quantizers, on any Burn backend.
//!
//! These are the plain functions (no gradient rule); [`crate::quant`] wraps each in an autodiff
//! node through [`crate::QnnBackend`].

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use super::{Bits, Pow2Range};

/// A quantizer whose gradient is the straight-through estimator over a closed pass band.
///
/// The forward formulas (all in f32, NaN handling below) and the pass band `[lo, hi]` of the
/// gradient (`∂q/∂x = 1` for `lo ≤ x ≤ hi`, `0` elsewhere and for NaN):
///
/// | quantizer | forward `q(x)` | pass band |
/// |---|---|---|
/// | `Sign` | `+1` if `x ≥ 0` (so `sign(−0.0) = +1`), `−1` otherwise | `[−1, 1]` |
/// | `Unsigned(k)` | `floor(L·clip(x, 0, 1) + ½) / L`, `L = 2^k − 1` | `[0, 1]` |
/// | `Signed(k)` | `(2j − L) / L`, `j = floor(L·clip((x+1)/2, 0, 1) + ½)` | `[−1, 1]` |
/// | `Pow2(r)` | `sgn(x)·2^clip(floor(log2|x| + ½), r.min, r.max)`, `q(±0) = 0` | `[−2^r.max, 2^r.max]` |
///
/// Rounding ties go up (towards +∞) in every case. `Signed(k)` has `2^k` levels placed
/// symmetrically on `[−1, 1]` (bit for bit: level `L − j` is minus level `j`); `Signed(1)` is
/// `Sign`. NaN gives `+1` for `Sign` (the paper's
/// `x ≥ 0` test written as "not `x < 0`") and NaN for the other quantizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quantizer {
    /// Deterministic binarization to ±1.
    Sign,
    /// `k`-bit linear quantization of `[0, 1]` (activations), `2^k` levels.
    Unsigned(Bits),
    /// `k`-bit linear quantization of `[−1, 1]` (weights), `2^k` symmetric levels.
    Signed(Bits),
    /// Power-of-two (logarithmic) quantization with a clipping range of exponents.
    Pow2(Pow2Range),
}

impl Quantizer {
    /// The quantized value `q(x)`, without any gradient rule.
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        if is_empty(&x) {
            return x;
        }
        match self {
            Quantizer::Sign => sign_value(x),
            Quantizer::Unsigned(bits) => keep_nan(x.clone(), unsigned_value(x, bits)),
            Quantizer::Signed(bits) => keep_nan(x.clone(), signed_value(x, bits)),
            Quantizer::Pow2(range) => keep_nan(x.clone(), pow2_value(x, range)),
        }
    }

    /// The closed interval `[lo, hi]` where the straight-through gradient is 1.
    pub fn pass_band(self) -> (f32, f32) {
        match self {
            Quantizer::Sign | Quantizer::Signed(_) => (-1.0, 1.0),
            Quantizer::Unsigned(_) => (0.0, 1.0),
            Quantizer::Pow2(range) => (-range.max_magnitude(), range.max_magnitude()),
        }
    }

    /// `true` where `x` lies outside the pass band (or is NaN): the gradient is cut there.
    pub fn blocked<B: Backend, const D: usize>(
        self,
        x: Tensor<B, D>,
    ) -> Tensor<B, D, burn::tensor::Bool> {
        let (lo, hi) = self.pass_band();
        let inside = x
            .clone()
            .greater_equal_elem(lo)
            .bool_and(x.lower_equal_elem(hi));
        inside.bool_not()
    }
}

/// Some backends' mask kernels fail on tensors without elements; an empty input is its own output.
fn is_empty<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    x.shape().num_elements() == 0
}

/// `+1` where `x ≥ 0` or NaN, `−1` where `x < 0`.
fn sign_value<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.ones_like().mask_fill(x.lower_elem(0.0), -1.0)
}

/// Rounds non-negative `y` to the nearest integer, ties up.
fn round_half_up<B: Backend, const D: usize>(y: Tensor<B, D>) -> Tensor<B, D> {
    (y + 0.5).floor()
}

/// The integer code `c ∈ [0, 2^k − 1]` of [`Quantizer::Unsigned`]: its value is `c/(2^k − 1)`.
pub(crate) fn unsigned_code<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    bits: Bits,
) -> Tensor<B, D> {
    round_half_up(x.clamp(0.0, 1.0) * bits.max_code() as f32)
}

/// The integer code `c ∈ [0, 2^k − 1]` of [`Quantizer::Signed`]: its value is
/// `(2c − (2^k − 1))/(2^k − 1)`.
pub(crate) fn signed_code<B: Backend, const D: usize>(x: Tensor<B, D>, bits: Bits) -> Tensor<B, D> {
    round_half_up(((x + 1.0) / 2.0).clamp(0.0, 1.0) * bits.max_code() as f32)
}

fn unsigned_value<B: Backend, const D: usize>(x: Tensor<B, D>, bits: Bits) -> Tensor<B, D> {
    unsigned_code(x, bits) / bits.max_code() as f32
}

fn signed_value<B: Backend, const D: usize>(x: Tensor<B, D>, bits: Bits) -> Tensor<B, D> {
    let steps = bits.max_code() as f32;
    (signed_code(x, bits) * 2.0 - steps) / steps
}

fn pow2_value<B: Backend, const D: usize>(x: Tensor<B, D>, range: Pow2Range) -> Tensor<B, D> {
    let exponent = round_half_up(x.clone().abs().log() / core::f32::consts::LN_2)
        .clamp(range.min_exp() as f32, range.max_exp() as f32);
    let magnitude = exponent.full_like(2.0).powf(exponent);
    let negative = x.clone().lower_elem(0.0);
    magnitude
        .clone()
        .mask_where(negative, magnitude.neg())
        .mask_fill(x.equal_elem(0.0), 0.0)
}

/// NaN inputs give NaN outputs, whatever `clamp` does with NaN on a backend.
fn keep_nan<B: Backend, const D: usize>(x: Tensor<B, D>, q: Tensor<B, D>) -> Tensor<B, D> {
    q.mask_where(x.clone().is_nan(), x)
}

/// The forward value of the stochastic sign: `−1` where `noise ≥ (x + 1)/2`, `+1` elsewhere.
///
/// With `noise ~ U[0, 1)` this is `+1` with probability `clip((x + 1)/2, 0, 1)`. A NaN `x`
/// compares false and gives `+1`, like [`Quantizer::Sign`].
pub fn stochastic_sign_value<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    noise: Tensor<B, D>,
) -> Tensor<B, D> {
    if is_empty(&x) {
        return x;
    }
    let probability_of_plus = (x.clone() + 1.0) / 2.0;
    x.ones_like()
        .mask_fill(noise.greater_equal(probability_of_plus), -1.0)
}

/// Quantizes a gradient to `k` bits, scaled by its largest magnitude.
///
/// With `s = max|g|` and `L = max(2^(k−1) − 1, 1)`: `q(g) = s · floor(L·g/s + ½) / L`, a grid of
/// `2L + 1` levels symmetric about 0 that always holds 0 and `±s` (so `k = 1` equals `k = 2`,
/// ternary). An all-zero gradient stays zero. Non-finite gradients give non-finite results.
pub fn gradient_value<B: Backend>(g: Tensor<B, 1>, bits: Bits) -> Tensor<B, 1> {
    let steps = ((1u32 << (bits.get() - 1)) - 1).max(1) as f32;
    let scale = g.clone().abs().max().clamp_min(f32::MIN_POSITIVE);
    round_half_up(g / scale.clone() * steps) / steps * scale
}

/// [`gradient_value`] with stochastic rounding: `q(g) = s · floor(L·g/s + u) / L` for noise
/// `u` uniform in `[0, 1)`, one draw per value, so that `E[q(g)] = g`. The floor is computed as
/// `⌊x⌋ + [u ≥ 1 − (x − ⌊x⌋)]` (`x = L·g/s`), without rounding `x + u` to f32, so that `±s`
/// stays exact and the grid is [`gradient_value`]'s.
pub fn gradient_value_stochastic<B: Backend>(
    g: Tensor<B, 1>,
    bits: Bits,
    noise: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let steps = ((1u32 << (bits.get() - 1)) - 1).max(1) as f32;
    let scale = g.clone().abs().max().clamp_min(f32::MIN_POSITIVE);
    let x = g / scale.clone() * steps;
    let down = x.clone().floor();
    let up_from = (x - down.clone()).neg() + 1.0;
    // A NaN `x` compares false and stays NaN through `down`.
    let code = down + noise.greater_equal(up_from).float();
    code / steps * scale
}

/// The noise of [`gradient_value_stochastic`]: `count` values uniform in `[0, 1)` from the
/// backend's seeded generator ([`crate::QnnBackend::qnn_uniform_noise`]).
pub fn rounding_noise<B: crate::QnnBackend>(count: usize, device: &B::Device) -> Tensor<B, 1> {
    B::qnn_uniform_noise(count, device)
}
