//! CPU kernels on plain slices, free of Burn types: bit packing, XNOR-popcount GEMM,
//! bit-serial GEMM, binary 2-D convolution ([`conv`]) and the gradients of the binary products
//! from packed bits ([`backward`]), with the instruction set picked at run
//! time (see [`isa`]).
//!
//! # Packed layout (the same on every backend)
//! A row of `k` values packs into `words_per_row(k) = ceil(k / 64)` little-endian `u64` words:
//! value `j` is bit `j % 64` of word `j / 64`, so byte `j / 8`, bit `j % 8` of the row's bytes,
//! and bit `j % 32` of 32-bit word `j / 32` (a GPU reading the same bytes as `u32` words sees the
//! same bits). For signs, bit 1 stands for −1 and bit 0 for +1 (`x < 0` → 1; `+0`, `−0.0` and NaN
//! → 0). Padding bits after `k` are 0 and change no result.
//!
//! Bit planes of unsigned `b`-bit codes: row `r`, plane `p` (bit `p` of each code) is stored at
//! words `(r·b + p)·words_per_row(k) ..`, in the same bit order.

pub mod adam;
mod amx;
pub mod amx_bf16;
pub mod backward;
pub mod batch_norm;
pub mod bit_plane;
pub mod bitserial;
pub mod channel_affine;
pub mod code_matmul;
pub mod conv;
mod conv_tile;
mod engine;
pub mod eval_norm;
pub(crate) mod first_conv;
pub(crate) mod float_gemm;
pub mod im2col;
pub mod int8;
pub mod isa;
pub mod latent;
pub mod noise;
pub mod pack;
#[cfg(target_arch = "x86_64")]
mod pack_x86;
pub mod pool;
pub mod quantize;
pub mod quantized_backward;
mod tile_avx2;
mod tile_avx512;
mod tile_avx512_columns;
mod tile_portable;
mod transpose;
pub(crate) mod uninit;
pub mod xnor;

/// Bits per packed word.
pub const WORD_BITS: usize = 64;

/// The longest rows (in bits, padding included) the CPU popcount kernels take: they count in
/// `u32`, so a row of up to `u32::MAX` bits is counted exactly; longer rows panic.
pub const MAX_POPCOUNT_LEN: usize = u32::MAX as usize;

/// The number of `u64` words that hold a row of `k` bits.
pub const fn words_per_row(k: usize) -> usize {
    k.div_ceil(WORD_BITS)
}

/// A kernel's length check: panics unless `len` is the product of `factors`, and (in release
/// builds too) where that product overflows `usize`, so that sizes from outside cannot wrap
/// around to pass the check of a kernel that then reads through raw pointers.
#[track_caller]
pub(crate) fn check_len(what: &str, len: usize, factors: &[usize]) {
    let Some(expected) = factors.iter().try_fold(1usize, |a, &f| a.checked_mul(f)) else {
        panic!("{what}: the size {factors:?} overflows usize");
    };
    assert_eq!(len, expected, "{what}");
}

/// An instruction set checked against this CPU: it holds an x86 path only where the CPU runs it,
/// so code may rely on that when it calls `#[target_feature]` functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CheckedIsa(isa::Isa);

impl CheckedIsa {
    /// `isa` where this CPU runs it, else [`isa::Isa::Portable`].
    pub(crate) fn new(isa: isa::Isa) -> CheckedIsa {
        if isa.is_available() {
            CheckedIsa(isa)
        } else {
            CheckedIsa(isa::Isa::Portable)
        }
    }

    /// The checked instruction set.
    pub(crate) fn isa(self) -> isa::Isa {
        self.0
    }
}

#[cfg(test)]
mod tests {
    /// A length check whose sizes multiply past `usize` fails as an overflow, not as a wrapped
    /// product that an empty slice would match.
    #[test]
    fn length_checks_do_not_wrap() {
        let panic =
            std::panic::catch_unwind(|| super::xnor::xnor_gemm(&[], &[], 1 << 63, 0, 128, &mut []))
                .unwrap_err();
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(message.contains("overflows usize"), "{message}");
        super::check_len("fits", 6, &[1, 2, 3]);
    }
}
