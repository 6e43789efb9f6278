//! The integer codes behind the linear quantizers' values.

use super::{Bits, Quantizer};

/// How a linear quantizer's values follow from `bits`-bit integer codes `c ∈ [0, 2^bits − 1]`:
/// `q = scale·c + offset`.
///
/// | quantizer | bits | scale | offset |
/// |---|---|---|---|
/// | `Sign` | 1 | 2 | −1 |
/// | `Signed(k)` | k | 2/(2^k − 1) | −1 |
/// | `Unsigned(k)` | k | 1/(2^k − 1) | 0 |
///
/// ```
/// use burn_qnn::quant::{Bits, CodeGrid, Quantizer};
///
/// let grid = CodeGrid::of(Quantizer::Signed(Bits::TWO)).unwrap();
/// assert_eq!(grid.code_of(1.0 / 3.0), 2.0); // the levels −1, −⅓, ⅓, 1
/// assert!(CodeGrid::of(Quantizer::Pow2(burn_qnn::quant::Pow2Range::FULL)).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodeGrid {
    /// Bits per code.
    pub bits: Bits,
    /// The value step between consecutive codes.
    pub scale: f32,
    /// The value of code 0.
    pub offset: f32,
}

impl CodeGrid {
    /// The grid of a linear quantizer; `None` for the power-of-two quantizer, whose levels are
    /// not evenly spaced.
    pub fn of(quantizer: Quantizer) -> Option<Self> {
        let signed = |bits: Bits| CodeGrid {
            bits,
            scale: 2.0 / bits.max_code() as f32,
            offset: -1.0,
        };
        match quantizer {
            Quantizer::Sign => Some(signed(Bits::ONE)),
            Quantizer::Signed(bits) => Some(signed(bits)),
            Quantizer::Unsigned(bits) => Some(CodeGrid {
                bits,
                scale: 1.0 / bits.max_code() as f32,
                offset: 0.0,
            }),
            Quantizer::Pow2(_) => None,
        }
    }

    /// The code of a value on the grid (the nearest code for a value near it; values off the
    /// grid's range saturate when packed).
    #[inline(always)]
    pub fn code_of(&self, value: f32) -> f32 {
        // Non-negative for values on the grid, so truncation rounds half up.
        (((value - self.offset) / self.scale) + 0.5).max(0.0) as i32 as f32
    }
}
