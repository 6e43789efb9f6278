//! Instruction-set paths, detected at run time and forceable for tests and benchmarks.

use std::sync::atomic::{AtomicU8, Ordering};

/// A kernel implementation chosen by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512 (F, BW, VL) with VPOPCNTDQ (x86-64).
    Avx512,
    /// AVX2 (x86-64).
    Avx2,
    /// Plain Rust with `count_ones`, on any target.
    Portable,
}

/// A forced instruction set that this CPU lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0:?} kernels need CPU features this machine lacks")]
pub struct IsaUnavailable(pub Isa);

impl Isa {
    /// Every path, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vpopcntdq")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            Isa::Portable => true,
        }
    }

    /// The paths this CPU can run, fastest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The name used by the `BURN_QNN_ISA` environment variable.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Parses a name of [`Isa::name`].
    pub fn parse(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name.trim().to_ascii_lowercase())
    }
}

const UNSET: u8 = u8::MAX;
static FORCED: AtomicU8 = AtomicU8::new(UNSET);

/// Forces every kernel onto `isa` (process-wide), or goes back to detection with `None`.
pub fn force_isa(isa: Option<Isa>) -> Result<(), IsaUnavailable> {
    match isa {
        Some(isa) if !isa.is_available() => Err(IsaUnavailable(isa)),
        Some(isa) => {
            FORCED.store(isa as u8, Ordering::Relaxed);
            Ok(())
        }
        None => {
            FORCED.store(UNSET, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// The path kernels use: the forced one, else `BURN_QNN_ISA` if set to an available path,
/// else the fastest available.
pub fn active_isa() -> Isa {
    let forced = FORCED.load(Ordering::Relaxed);
    if forced != UNSET {
        return Isa::ALL[forced as usize];
    }
    static FROM_ENV: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *FROM_ENV.get_or_init(|| {
        std::env::var("BURN_QNN_ISA")
            .ok()
            .and_then(|name| Isa::parse(&name))
            .filter(|isa| isa.is_available())
            .unwrap_or_else(|| Isa::available()[0])
    })
}
