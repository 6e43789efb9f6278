//! The training convolutions of the binary layers on AMX bf16 tiles: the forward of the binary
//! and bit-plane convolutions, exactly, and the binary convolution's f32 gradients, exact to f32
//! summation order.
//!
//! A ±1 is exact in bf16, and so is an 8-bit code: the forward products `sign(x)·sign(w)` and
//! `code·sign(w)` are exact, and their sums, small integers, are exact in f32 in any order, so
//! the forward on tiles equals the popcount kernels bit for bit. The backward multiplies a float
//! output gradient by ±1 operands: every f32 `g` is exactly the sum of three bf16 parts cut from
//! its bits: `hi` (its top 16 bits), `mid` (the top 16 bits of `g − hi`) and
//! `lo = g − hi − mid` (at most 8 significant bits, so exact). AMX's `TDPBF16PS` multiplies bf16
//! pairs exactly and sums in f32, so running each product over the three parts gives
//! `Σ g·(±1)` as f32 sums of the exact terms: the float simulation's result up to the order of
//! its f32 additions (the parts of a value below 2⁻¹¹⁰ in magnitude, which AMX reads as zero,
//! aside). One `TDPBF16PS` does 8,192 multiply-adds, so even three per product run several times
//! faster than f32 FMA.
//!
//! The convolutions are implicit GEMMs over a zero-padded, flattened grid (see `grid`): with the
//! image's rows padded to width `Wp`, the input a tap `(ky, kx)` reads for the output at flat
//! position `q` is at `q + ky·d_h·Wp + kx·d_w`, one offset per tap, so a tile of 16 positions of
//! one tap is a strided tile load and no im2col matrix is built (the few padding columns of each
//! row are computed and dropped). Stride-1 convolutions only; others run on the vector kernels.
//!
//! The path is picked at run time: [`ConvIsa::AmxBf16`] where the CPU has AMX-BF16 and AVX-512
//! (Intel Sapphire Rapids and later) and Linux grants the tile registers, else
//! [`ConvIsa::Vector`] (the popcount kernels forward, f32 GEMM micro-kernels backward).
//! [`force_conv_isa`] or the `BURN_QNN_CONV_ISA` environment variable (`amx-bf16`, `vector`)
//! pins one.

mod conv;
mod forward;
mod grid;
mod split;
mod tiles;

pub(crate) use conv::{input_grad, weight_grad};
pub(crate) use forward::{Input, conv2d};
// The host backends write the convolution into their own tensors' memory.
#[cfg(any(feature = "ndarray", feature = "flex"))]
pub(crate) use forward::conv2d_into;
pub use split::split3;

use super::amx::{self, AmxUnit};
use super::isa::{KernelPath, Selection, parse_path};

/// How the binary layers' convolutions run in training (the forward of the binary and bit-plane
/// convolutions, and the binary convolution's gradients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvIsa {
    /// AMX bf16 tiles, the gradients on the three-part split (needs AMX-TILE, AMX-BF16, AVX-512
    /// F, BW and VL, and Linux's tile-data permission).
    AmxBf16,
    /// The vector kernels: XNOR-popcount forward ([`crate::kernels::isa`] picks their
    /// instruction set), f32 GEMM micro-kernels (the `gemm` crate's) for the gradients and the
    /// bit-plane layer; on any CPU.
    Vector,
}

/// A forced convolution path that this machine cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0:?} convolution kernels need CPU features this machine lacks")]
pub struct ConvIsaUnavailable(pub ConvIsa);

impl ConvIsa {
    /// Every path, fastest first.
    pub const ALL: [ConvIsa; 2] = [ConvIsa::AmxBf16, ConvIsa::Vector];

    /// Whether this machine runs the path. For [`ConvIsa::AmxBf16`] the first call asks Linux
    /// for the tile-data permission, once per process.
    pub fn is_available(self) -> bool {
        match self {
            ConvIsa::AmxBf16 => split::has_avx512() && amx::is_available(AmxUnit::Bf16),
            ConvIsa::Vector => true,
        }
    }

    /// The paths this machine runs, fastest first.
    pub fn available() -> Vec<ConvIsa> {
        ConvIsa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The name used by the `BURN_QNN_CONV_ISA` environment variable.
    pub fn name(self) -> &'static str {
        match self {
            ConvIsa::AmxBf16 => "amx-bf16",
            ConvIsa::Vector => "vector",
        }
    }

    /// Parses a name of [`ConvIsa::name`].
    pub fn parse(name: &str) -> Option<ConvIsa> {
        parse_path(name)
    }
}

impl KernelPath for ConvIsa {
    fn all() -> &'static [Self] {
        &ConvIsa::ALL
    }

    fn runs_here(self) -> bool {
        self.is_available()
    }

    fn label(self) -> &'static str {
        self.name()
    }
}

static SELECTION: Selection = Selection::new("BURN_QNN_CONV_ISA");

/// Forces the binary layers' training convolutions onto `isa` (process-wide), or goes back to
/// detection with `None`.
pub fn force_conv_isa(isa: Option<ConvIsa>) -> Result<(), ConvIsaUnavailable> {
    SELECTION.force(isa).map_err(ConvIsaUnavailable)
}

/// The path the training convolutions use: the forced one, else `BURN_QNN_CONV_ISA` if set to
/// an available path, else the fastest available.
pub fn active_conv_isa() -> ConvIsa {
    SELECTION.active()
}

/// Proof that this process may run the AMX bf16 kernels (AMX-TILE, AMX-BF16, AVX-512 F, BW and VL,
/// and the tile-data permission): only [`AmxBf16::active`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmxBf16(());

impl AmxBf16 {
    /// The proof, where [`active_conv_isa`] picks the AMX path and this machine runs it.
    pub(crate) fn active() -> Option<AmxBf16> {
        (active_conv_isa() == ConvIsa::AmxBf16)
            .then(AmxBf16::if_available)
            .flatten()
    }

    /// The proof, where this machine runs the AMX path (whatever the selection says).
    pub(crate) fn if_available() -> Option<AmxBf16> {
        ConvIsa::AmxBf16.is_available().then_some(AmxBf16(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every CPU feature a `#[target_feature]` function of the AMX path enables is one that
    /// [`ConvIsa::is_available`] checks (calling it on a CPU without one would be undefined
    /// behaviour).
    #[test]
    fn every_enabled_feature_is_checked() {
        let checked = ["avx512f", "avx512bw", "avx512vl"];
        let mut found = 0;
        for source in [include_str!("split.rs"), include_str!("forward.rs")] {
            let mut rest = source;
            while let Some(at) = rest.find("#[target_feature(enable = \"") {
                rest = &rest[at + "#[target_feature(enable = \"".len()..];
                let features = &rest[..rest.find('"').expect("closing quote")];
                for feature in features.split(',').map(str::trim) {
                    assert!(checked.contains(&feature), "{feature} is not checked");
                    found += 1;
                }
            }
        }
        assert!(found >= 4, "the scan found only {found} features");
    }

    #[test]
    fn names_round_trip_and_forcing_checks_the_machine() {
        for isa in ConvIsa::ALL {
            assert_eq!(ConvIsa::parse(isa.name()), Some(isa));
        }
        assert_eq!(ConvIsa::parse(" AMX-BF16 "), Some(ConvIsa::AmxBf16));
        assert_eq!(ConvIsa::parse("avx512"), None);
        assert!(ConvIsa::Vector.is_available());
        if !ConvIsa::AmxBf16.is_available() {
            assert_eq!(
                force_conv_isa(Some(ConvIsa::AmxBf16)),
                Err(ConvIsaUnavailable(ConvIsa::AmxBf16))
            );
        }
    }
}
