//! The binary convolutions' f32 gradients on AMX bf16 tiles, exact to f32 summation order.
//!
//! The backward pass of `sign(x) ⊛ sign(w)` multiplies a float output gradient by ±1 operands.
//! A ±1 is exact in bf16, and every f32 `g` is exactly the sum of three bf16 parts, cut from its
//! bits: `hi` (its top 16 bits), `mid` (the top 16 bits of `g − hi`) and `lo = g − hi − mid`
//! (at most 8 significant bits, so exact). AMX's `TDPBF16PS` multiplies bf16 pairs exactly and
//! sums in f32, so running each product over the three parts gives `Σ g·(±1)` as f32 sums of the
//! exact terms, the float simulation's result up to the order of its f32 additions (the parts of
//! a value below 2⁻¹¹⁰ in magnitude, which AMX reads as zero, aside). One `TDPBF16PS` does 8,192
//! multiply-adds, so even at three per product this runs several times faster than f32 FMA.
//!
//! The convolutions are implicit GEMMs over a zero-padded, flattened grid: with the image's rows
//! padded to width `Wp`, the input a tap `(ky, kx)` reads for the output at flat position `q` is
//! at `q + ky·d_h·Wp + kx·d_w`, one offset per tap, so a tile of 16 positions of one tap is a
//! strided tile load and no im2col matrix is built (the few padding columns of each row are
//! computed and dropped). Stride-1 convolutions only (others run on the f32 path).
//!
//! The path is picked at run time: [`GradIsa::AmxBf16`] where the CPU has AMX-BF16 and AVX-512
//! (Intel Sapphire Rapids and later) and Linux grants the tile registers, else
//! [`GradIsa::F32`] (f32 GEMM micro-kernels). [`force_grad_isa`] or the `BURN_QNN_GRAD_ISA`
//! environment variable (`amx-bf16`, `f32`) pins one.

mod conv;
mod split;
mod tiles;

pub(crate) use conv::{input_grad, weight_grad};
pub use split::split3;

use super::amx::{self, AmxUnit};
use super::isa::{KernelPath, Selection, parse_path};

/// How the binary layers' f32 gradient products run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GradIsa {
    /// AMX bf16 tiles on the three-part split (needs AMX-TILE, AMX-BF16, AVX-512 F, BW and VL, and
    /// Linux's tile-data permission).
    AmxBf16,
    /// f32 GEMM micro-kernels (the `gemm` crate's, AVX-512, AVX2 or scalar), on any CPU.
    F32,
}

/// A forced gradient path that this machine cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0:?} gradient kernels need CPU features this machine lacks")]
pub struct GradIsaUnavailable(pub GradIsa);

impl GradIsa {
    /// Every path, fastest first.
    pub const ALL: [GradIsa; 2] = [GradIsa::AmxBf16, GradIsa::F32];

    /// Whether this machine runs the path. For [`GradIsa::AmxBf16`] the first call asks Linux
    /// for the tile-data permission, once per process.
    pub fn is_available(self) -> bool {
        match self {
            GradIsa::AmxBf16 => split::has_avx512() && amx::is_available(AmxUnit::Bf16),
            GradIsa::F32 => true,
        }
    }

    /// The paths this machine runs, fastest first.
    pub fn available() -> Vec<GradIsa> {
        GradIsa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The name used by the `BURN_QNN_GRAD_ISA` environment variable.
    pub fn name(self) -> &'static str {
        match self {
            GradIsa::AmxBf16 => "amx-bf16",
            GradIsa::F32 => "f32",
        }
    }

    /// Parses a name of [`GradIsa::name`].
    pub fn parse(name: &str) -> Option<GradIsa> {
        parse_path(name)
    }
}

impl KernelPath for GradIsa {
    fn all() -> &'static [Self] {
        &GradIsa::ALL
    }

    fn runs_here(self) -> bool {
        self.is_available()
    }

    fn label(self) -> &'static str {
        self.name()
    }
}

static SELECTION: Selection = Selection::new("BURN_QNN_GRAD_ISA");

/// Forces the binary layers' f32 gradient products onto `isa` (process-wide), or goes back to
/// detection with `None`.
pub fn force_grad_isa(isa: Option<GradIsa>) -> Result<(), GradIsaUnavailable> {
    SELECTION.force(isa).map_err(GradIsaUnavailable)
}

/// The path the f32 gradient products use: the forced one, else `BURN_QNN_GRAD_ISA` if set to
/// an available path, else the fastest available.
pub fn active_grad_isa() -> GradIsa {
    SELECTION.active()
}

/// Proof that this process may run the AMX bf16 kernels (AMX-TILE, AMX-BF16, AVX-512 F, BW and VL,
/// and the tile-data permission): only [`AmxBf16::active`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmxBf16(());

impl AmxBf16 {
    /// The proof, where [`active_grad_isa`] picks the AMX path and this machine runs it.
    pub(crate) fn active() -> Option<AmxBf16> {
        (active_grad_isa() == GradIsa::AmxBf16)
            .then(AmxBf16::if_available)
            .flatten()
    }

    /// The proof, where this machine runs the AMX path (whatever the selection says).
    pub(crate) fn if_available() -> Option<AmxBf16> {
        GradIsa::AmxBf16.is_available().then_some(AmxBf16(()))
    }
}
