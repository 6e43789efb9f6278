//! Instruction-set paths, detected at run time and forceable for tests and benchmarks.
//!
//! Every kernel has one entry point, which runs on the path [`active_isa`] gives on the calling
//! thread when it is called: the fastest this CPU runs, or the one named by `BURN_QNN_ISA`,
//! [`force_isa`] (process-wide) or [`with_isa`] (one closure on one thread, as the tests force
//! each path in turn).
//!
//! ```
//! use burn_qnn::kernels::{isa::{Isa, with_isa}, pack::pack_signs, words_per_row};
//!
//! let values = [0.5, -1.0, 2.0, -0.0];
//! let mut fastest = vec![0; words_per_row(4)];
//! pack_signs(&values, 1, 4, &mut fastest);
//! for isa in Isa::available() {
//!     let mut packed = vec![0; words_per_row(4)];
//!     with_isa(isa, || pack_signs(&values, 1, 4, &mut packed));
//!     assert_eq!(packed, fastest);
//! }
//! ```

use std::{
    cell::RefCell,
    sync::atomic::{AtomicU8, Ordering},
};

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

    /// The CPU features the path's functions enable (`#[target_feature(enable = ..)]`), every
    /// one checked by [`Isa::is_available`] before any of them is called. The AVX-512 path
    /// calls AVX2 helpers too, so it needs the AVX2 path's features as well.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Isa::Avx512 => &[
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vpopcntdq",
                "avx2",
                "popcnt",
            ],
            Isa::Avx2 => &["avx2", "popcnt"],
            Isa::Portable => &[],
        }
    }

    /// Whether this CPU can run the path: it has every one of [`Isa::features`].
    pub fn is_available(self) -> bool {
        self.features().iter().all(|feature| detected(feature))
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
        parse_path(name)
    }
}

/// Whether this CPU has `feature`, one of the names of [`Isa::features`].
fn detected(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
            "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
            "avx512vpopcntdq" => std::is_x86_feature_detected!("avx512vpopcntdq"),
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "popcnt" => std::is_x86_feature_detected!("popcnt"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// An enum of interchangeable kernel paths that a [`Selection`] chooses among.
pub(crate) trait KernelPath: Copy + PartialEq + 'static {
    /// Every path, fastest first; the last one runs everywhere.
    fn all() -> &'static [Self];
    /// Whether this machine runs the path.
    fn runs_here(self) -> bool;
    /// The path's name in its environment variable.
    fn label(self) -> &'static str;
}

impl KernelPath for Isa {
    fn all() -> &'static [Self] {
        &Isa::ALL
    }

    fn runs_here(self) -> bool {
        self.is_available()
    }

    fn label(self) -> &'static str {
        self.name()
    }
}

/// The path named `name` (trimmed, any case).
pub(crate) fn parse_path<P: KernelPath>(name: &str) -> Option<P> {
    let name = name.trim().to_ascii_lowercase();
    P::all().iter().copied().find(|path| path.label() == name)
}

const UNSET: u8 = u8::MAX;

/// The process-wide choice of a kernel path: the forced one, else the one an environment
/// variable names where this machine runs it (read once), else the fastest this machine runs.
pub(crate) struct Selection {
    env: &'static str,
    forced: AtomicU8,
    from_env: std::sync::OnceLock<u8>,
}

impl Selection {
    /// A selection read from the environment variable `env`.
    pub(crate) const fn new(env: &'static str) -> Selection {
        Selection {
            env,
            forced: AtomicU8::new(UNSET),
            from_env: std::sync::OnceLock::new(),
        }
    }

    /// Forces `path`, or goes back to the environment and detection with `None`; `Err(path)`
    /// where this machine cannot run it.
    pub(crate) fn force<P: KernelPath>(&self, path: Option<P>) -> Result<(), P> {
        let index = match path {
            Some(path) if !path.runs_here() => return Err(path),
            Some(path) => P::all().iter().position(|&p| p == path).expect("listed") as u8,
            None => UNSET,
        };
        self.forced.store(index, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `f` with this selection's path pinned to `path` on this thread (where `f` calls
    /// kernels, not on the threads they spread their work over, which get the path from them).
    pub(crate) fn pinned<P: KernelPath, R>(&self, path: P, f: impl FnOnce() -> R) -> R {
        let index = P::all().iter().position(|&p| p == path).expect("listed") as u8;
        PINS.with_borrow_mut(|pins| pins.push((self.env, index)));
        /// Unpins on the way out, also where `f` panics.
        struct Unpin;
        impl Drop for Unpin {
            fn drop(&mut self) {
                PINS.with_borrow_mut(|pins| pins.pop());
            }
        }
        let _unpin = Unpin;
        f()
    }

    /// The chosen path: the innermost pin of this thread, else the forced one, else the
    /// environment's, else the fastest this machine runs.
    pub(crate) fn active<P: KernelPath>(&self) -> P {
        let all = P::all();
        let pinned = PINS.with_borrow(|pins| {
            pins.iter()
                .rev()
                .find(|(env, _)| *env == self.env)
                .map(|&(_, index)| index)
        });
        if let Some(index) = pinned {
            return all[index as usize];
        }
        let forced = self.forced.load(Ordering::Relaxed);
        if forced != UNSET {
            return all[forced as usize];
        }
        let index = *self.from_env.get_or_init(|| {
            let named = std::env::var(self.env)
                .ok()
                .and_then(|name| parse_path::<P>(&name))
                .filter(|path| path.runs_here());
            let path = named.unwrap_or_else(|| {
                *all.iter()
                    .find(|path| path.runs_here())
                    .expect("the last path runs everywhere")
            });
            all.iter().position(|&p| p == path).expect("listed") as u8
        });
        all[index as usize]
    }
}

thread_local! {
    /// The paths pinned on this thread, innermost last, by their selection's variable.
    static PINS: RefCell<Vec<(&'static str, u8)>> = const { RefCell::new(Vec::new()) };
}

static SELECTION: Selection = Selection::new("BURN_QNN_ISA");

/// Forces every kernel onto `isa` (process-wide), or goes back to detection with `None`.
pub fn force_isa(isa: Option<Isa>) -> Result<(), IsaUnavailable> {
    SELECTION.force(isa).map_err(IsaUnavailable)
}

/// The path kernels called on this thread use: the one [`with_isa`] pinned, else the forced
/// one, else `BURN_QNN_ISA` if set to an available path, else the fastest available.
pub fn active_isa() -> Isa {
    SELECTION.active()
}

/// Runs `f` with every kernel it calls on this thread on `isa` (the portable path where this
/// CPU lacks it), whatever [`force_isa`] or `BURN_QNN_ISA` say; pins nest, the innermost wins.
/// A kernel reads the path once, on the thread that calls it, and runs its parallel parts on
/// that path too.
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    SELECTION.pinned(isa, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pin holds on its thread only, for its closure only (also when the closure panics),
    /// and the innermost of nested pins wins.
    #[test]
    fn pins_nest_and_stay_on_their_thread() {
        let unpinned = active_isa();
        with_isa(Isa::Portable, || {
            assert_eq!(active_isa(), Isa::Portable);
            with_isa(Isa::Avx2, || assert_eq!(active_isa(), Isa::Avx2));
            assert_eq!(active_isa(), Isa::Portable);
            let elsewhere = std::thread::spawn(active_isa).join().unwrap();
            assert_eq!(elsewhere, unpinned);
        });
        assert_eq!(active_isa(), unpinned);
        let panicked = std::panic::catch_unwind(|| with_isa(Isa::Portable, || panic!("inside")));
        assert!(panicked.is_err());
        assert_eq!(active_isa(), unpinned);
    }

    /// The features each `#[target_feature]` function of the x86 kernels enables, with the
    /// function's name and the file it is in.
    fn enabled_features() -> Vec<(&'static str, String, Vec<String>)> {
        let sources = [
            ("conv_tile.rs", include_str!("conv_tile.rs")),
            ("tile_avx2.rs", include_str!("tile_avx2.rs")),
            ("tile_avx512.rs", include_str!("tile_avx512.rs")),
            ("pack_x86.rs", include_str!("pack_x86.rs")),
            ("backward.rs", include_str!("backward.rs")),
            ("batch_norm.rs", include_str!("batch_norm.rs")),
            (
                "first_conv.rs",
                include_str!("../inference/host/first_conv.rs"),
            ),
        ];
        let mut found = Vec::new();
        for (file, source) in sources {
            let mut rest = source;
            while let Some(at) = rest.find("#[target_feature(enable = \"") {
                rest = &rest[at + "#[target_feature(enable = \"".len()..];
                let end = rest.find('"').unwrap();
                let features = rest[..end]
                    .split(',')
                    .map(|f| f.trim().to_string())
                    .collect();
                let after = &rest[rest.find("fn ").unwrap() + 3..];
                let name = after[..after.find(['(', '<']).unwrap()].to_string();
                found.push((file, name, features));
            }
        }
        found
    }

    /// Every feature a kernel function enables is one its path checks: a function of the AVX2
    /// path (named `*avx2*` outside the AVX-512 files) only what [`Isa::Avx2`] checks, any other
    /// what [`Isa::Avx512`] checks. Calling one on a CPU without a feature it enables is
    /// undefined behaviour, so `is_available` must not miss any.
    #[test]
    fn every_enabled_feature_is_checked() {
        let found = enabled_features();
        assert!(
            found.len() > 20,
            "the scan found only {} functions",
            found.len()
        );
        for (file, name, features) in found {
            let path = if name.contains("avx2") && !file.contains("avx512") {
                Isa::Avx2
            } else {
                Isa::Avx512
            };
            for feature in &features {
                assert!(
                    path.features().contains(&feature.as_str()),
                    "{file}: {name} enables {feature}, which {path:?}::is_available does not check"
                );
            }
        }
    }

    /// The AVX-512 path runs AVX2 helpers: it needs every feature of the AVX2 path.
    #[test]
    fn avx512_needs_the_avx2_features() {
        for feature in Isa::Avx2.features() {
            assert!(Isa::Avx512.features().contains(feature), "{feature}");
        }
        assert!(Isa::Portable.features().is_empty() && Isa::Portable.is_available());
    }
}
