//! Validated quantizer parameters: bit widths and power-of-two exponent ranges.

use serde::{Deserialize, Serialize};

/// A bad quantizer parameter: the error names the parameter and the accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// A bit width outside `1..=8`.
    #[error("quantizer bit width must be between 1 and 8, got {0}")]
    BitWidth(u32),
    /// A power-of-two range whose smallest exponent is above its largest.
    #[error("power-of-two range is empty: min_exp {min_exp} is greater than max_exp {max_exp}")]
    EmptyPow2Range {
        /// The smallest exponent asked for.
        min_exp: i32,
        /// The largest exponent asked for.
        max_exp: i32,
    },
    /// A power-of-two exponent that f32 cannot hold as a normal number.
    #[error(
        "power-of-two exponent {0} is outside the normal f32 range {min}..={max}",
        min = Pow2Range::MIN_EXP,
        max = Pow2Range::MAX_EXP
    )]
    Pow2Exponent(i32),
}

/// A quantizer bit width `k`, always between 1 and 8.
///
/// ```
/// use burn_qnn::quant::{Bits, QuantError};
///
/// let two = Bits::new(2)?;
/// assert_eq!(two.get(), 2);
/// assert_eq!(two.levels(), 4);
/// assert_eq!(Bits::new(9), Err(QuantError::BitWidth(9)));
/// # Ok::<(), QuantError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Bits(u8);

impl Bits {
    /// One bit (binary).
    pub const ONE: Bits = Bits(1);
    /// Two bits.
    pub const TWO: Bits = Bits(2);
    /// Four bits.
    pub const FOUR: Bits = Bits(4);
    /// Eight bits.
    pub const EIGHT: Bits = Bits(8);

    /// Checks that `k` is between 1 and 8.
    pub const fn new(k: u32) -> Result<Self, QuantError> {
        if k >= 1 && k <= 8 {
            Ok(Bits(k as u8))
        } else {
            Err(QuantError::BitWidth(k))
        }
    }

    /// The bit width `k`.
    pub const fn get(self) -> u32 {
        self.0 as u32
    }

    /// The number of levels, `2^k`.
    pub const fn levels(self) -> u32 {
        1 << self.0
    }

    /// The largest integer code, `2^k − 1`: the step of a quantizer on `[0, 1]` is its inverse.
    pub const fn max_code(self) -> u32 {
        self.levels() - 1
    }
}

impl TryFrom<u32> for Bits {
    type Error = QuantError;

    fn try_from(k: u32) -> Result<Self, QuantError> {
        Bits::new(k)
    }
}

impl From<Bits> for u32 {
    fn from(bits: Bits) -> u32 {
        bits.get()
    }
}

/// The exponents a power-of-two quantizer may output: `min_exp ≤ e ≤ max_exp`.
///
/// ```
/// use burn_qnn::quant::Pow2Range;
///
/// let range = Pow2Range::new(-4, 0)?;
/// assert_eq!(range.max_magnitude(), 1.0);
/// assert_eq!(range.min_magnitude(), 0.0625);
/// assert!(Pow2Range::new(1, 0).is_err());
/// # Ok::<(), burn_qnn::quant::QuantError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "(i32, i32)", into = "(i32, i32)")]
pub struct Pow2Range {
    min_exp: i32,
    max_exp: i32,
}

impl Pow2Range {
    /// The smallest exponent of a normal f32, −126.
    pub const MIN_EXP: i32 = -126;
    /// The largest exponent of a finite f32, 127.
    pub const MAX_EXP: i32 = 127;
    /// Every power of two a normal f32 holds: the unclipped AP2 of the paper.
    pub const FULL: Pow2Range = Pow2Range {
        min_exp: Self::MIN_EXP,
        max_exp: Self::MAX_EXP,
    };

    /// Checks that `min_exp ≤ max_exp` and that both lie in `MIN_EXP..=MAX_EXP`.
    pub const fn new(min_exp: i32, max_exp: i32) -> Result<Self, QuantError> {
        if min_exp < Self::MIN_EXP || min_exp > Self::MAX_EXP {
            return Err(QuantError::Pow2Exponent(min_exp));
        }
        if max_exp < Self::MIN_EXP || max_exp > Self::MAX_EXP {
            return Err(QuantError::Pow2Exponent(max_exp));
        }
        if min_exp > max_exp {
            return Err(QuantError::EmptyPow2Range { min_exp, max_exp });
        }
        Ok(Pow2Range { min_exp, max_exp })
    }

    /// The smallest exponent.
    pub const fn min_exp(self) -> i32 {
        self.min_exp
    }

    /// The largest exponent.
    pub const fn max_exp(self) -> i32 {
        self.max_exp
    }

    /// `2^min_exp`, the smallest non-zero magnitude of the output.
    pub fn min_magnitude(self) -> f32 {
        2f32.powi(self.min_exp)
    }

    /// `2^max_exp`, the largest magnitude of the output and the edge of the gradient's pass band.
    pub fn max_magnitude(self) -> f32 {
        2f32.powi(self.max_exp)
    }
}

impl TryFrom<(i32, i32)> for Pow2Range {
    type Error = QuantError;

    fn try_from((min_exp, max_exp): (i32, i32)) -> Result<Self, QuantError> {
        Pow2Range::new(min_exp, max_exp)
    }
}

impl From<Pow2Range> for (i32, i32) {
    fn from(range: Pow2Range) -> (i32, i32) {
        (range.min_exp, range.max_exp)
    }
}
