//! The linear quantizers' forward values and straight-through masks in one parallel pass: the
//! host bodies of [`QnnBackend::qnn_quantize`](crate::QnnBackend::qnn_quantize) and
//! [`QnnBackend::qnn_quantize_blocked`](crate::QnnBackend::qnn_quantize_blocked) for `Sign`,
//! `Unsigned(k)` and `Signed(k)`.
//!
//! Each value follows the f32 operations of [`Quantizer::forward`]'s tensor ops one by one
//! (with `L = 2^k − 1`), so the results are the same bits:
//!
//! ```text
//! Sign:        −1 if x < 0, else +1 (NaN too)
//! Unsigned(k): floor(clamp(x, 0, 1)·L + ½) / L                  (NaN stays NaN)
//! Signed(k):   (2·floor(clamp((x + 1)/2, 0, 1)·L + ½) − L) / L  (NaN stays NaN)
//! ```

#[cfg(any(feature = "ndarray", feature = "flex"))]
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::quant::Quantizer;

/// Values one parallel task quantizes.
const CHUNK: usize = 1 << 14;

/// Whether the host kernel computes `quantizer` (the power-of-two quantizer stays on Burn's
/// tensor ops).
pub fn supports(quantizer: Quantizer) -> bool {
    !matches!(quantizer, Quantizer::Pow2(_))
}

/// `q(x)` of a linear quantizer, in the f32 operations of its tensor-op form.
///
/// # Panics
/// For [`Quantizer::Pow2`] (see [`supports`]).
#[inline(always)]
pub fn quantized_value(quantizer: Quantizer, x: f32) -> f32 {
    match quantizer {
        Quantizer::Sign => {
            if x < 0.0 {
                -1.0
            } else {
                1.0
            }
        }
        Quantizer::Unsigned(bits) => {
            let steps = bits.max_code() as f32;
            let code = floor_of_positive(x.clamp(0.0, 1.0) * steps + 0.5);
            if x.is_nan() { x } else { code / steps }
        }
        Quantizer::Signed(bits) => {
            let steps = bits.max_code() as f32;
            let code = floor_of_positive(((x + 1.0) / 2.0).clamp(0.0, 1.0) * steps + 0.5);
            if x.is_nan() {
                x
            } else {
                (code * 2.0 - steps) / steps
            }
        }
        Quantizer::Pow2(_) => panic!("the host quantizer kernel has no power-of-two quantizer"),
    }
}

/// `floor(y)` for `y` in `[0, 2^31)` (NaN gives 0): truncation, which vectorizes, where
/// `f32::floor` is a library call on the baseline x86-64 target.
#[inline(always)]
fn floor_of_positive(y: f32) -> f32 {
    y as i32 as f32
}

/// Writes `q(x)` of every value of `x` into `out`, in parallel.
///
/// # Panics
/// If the lengths differ, or for [`Quantizer::Pow2`].
#[cfg(any(feature = "ndarray", feature = "flex"))]
pub(crate) fn quantize_into(quantizer: Quantizer, x: &[f32], out: &mut [MaybeUninit<f32>]) {
    assert_eq!(out.len(), x.len(), "quantize: output length");
    assert!(
        supports(quantizer),
        "quantize: {quantizer:?} is not a linear quantizer"
    );
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(out, x)| match quantizer {
            // One loop per quantizer, so that each compiles to straight vector code.
            Quantizer::Sign => write_each(out, x, |x| quantized_value(Quantizer::Sign, x)),
            Quantizer::Unsigned(bits) => {
                write_each(out, x, |x| quantized_value(Quantizer::Unsigned(bits), x))
            }
            Quantizer::Signed(bits) => {
                write_each(out, x, |x| quantized_value(Quantizer::Signed(bits), x))
            }
            Quantizer::Pow2(_) => unreachable!("refused above"),
        });
}

/// Where the straight-through gradient of `quantizer` is cut (`x` outside
/// [`Quantizer::pass_band`], or NaN), as one row of bits over `x`: bit `i % 64` of word
/// `i / 64` is 1 where value `i` is cut ([`crate::kernels`]'s layout for sign bits).
pub fn blocked_bits(quantizer: Quantizer, x: &[f32]) -> Vec<u64> {
    let (lo, hi) = quantizer.pass_band();
    let mut out = vec![0u64; super::words_per_row(x.len())];
    out.par_chunks_mut(CHUNK / 64)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(words, x)| {
            for (word, x) in words.iter_mut().zip(x.chunks(64)) {
                // One flag a byte (a loop the compiler vectorizes), then the flags as bits.
                let mut flags = [0u8; 64];
                for (flag, &x) in flags.iter_mut().zip(x) {
                    *flag = u8::from(!(x >= lo && x <= hi));
                }
                *word = super::pack::flags_to_bits(&flags);
            }
        });
    out
}

#[cfg(any(feature = "ndarray", feature = "flex"))]
fn write_each(out: &mut [MaybeUninit<f32>], x: &[f32], q: impl Fn(f32) -> f32) {
    for (o, &x) in out.iter_mut().zip(x) {
        o.write(q(x));
    }
}
