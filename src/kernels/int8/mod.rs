//! Exact `i8 × i8 → i32` matrix products, for the backward pass on quantized gradients.
//!
//! A gradient quantized to `K ≤ 8` bits is an integer code in `[−127, 127]` times one scale, and
//! a binary layer's saved operand is ±1, so each gradient product is a sum of small integers:
//! these kernels compute it exactly in 32-bit integers, on the fastest unit the CPU has:
//!
//! | path | instructions | per instruction |
//! |---|---|---|
//! | [`Int8Isa::Amx`] | AMX `TDPBSSD` on 16 × 64 int8 tiles (Intel Sapphire Rapids and later) | 16,384 MAC |
//! | [`Int8Isa::Avx512Vnni`] | AVX-512 VNNI `VPDPBUSD` | 64 MAC |
//! | [`Int8Isa::Avx2`] | AVX2 `VPMADDWD` on bytes widened to `i16` | 16 MAC |
//! | [`Int8Isa::Portable`] | the paper's bit-serial products: AND and popcount of the operands' bit planes, in plain Rust (with `POPCNT` where an x86-64 CPU has it) | 64 terms of one pair of planes |
//!
//! The path is detected at run time; [`force_int8_isa`] or the `BURN_QNN_INT8_ISA` environment
//! variable (`amx`, `avx512vnni`, `avx2`, `portable`) pins one, as [`super::isa`] does for the
//! popcount kernels.
//!
//! Every product here has the "dot" form `out[i·n + j] = Σ_t a[i·k + t] · b[j·k + t]`: both
//! operands row-major with the summed index contiguous. A result is exact while every partial
//! sum fits in an `i32`, which [`MAX_EXACT_LEN`] guarantees for any `i8` operands.

mod amx;
mod avx2;
mod portable;
mod rows_in;
mod vnni;

pub(crate) use rows_in::{RowsIn, gemm_accumulate_rows_in};

use rayon::prelude::*;

use super::isa::{KernelPath, Selection, parse_path};

/// The longest summed dimension with an exact `i32` result for any `i8` operands:
/// `k · 128 · 128 ≤ 2^31 − 1`. Products of ±1 with codes in `[−127, 127]` stay exact up to
/// [`MAX_EXACT_SIGN_LEN`] terms.
pub const MAX_EXACT_LEN: usize = (i32::MAX as usize) / (128 * 128);

/// The longest sum of `±1 × [−127, 127]` terms with an exact `i32` result: `(2^31 − 1) / 127`.
pub const MAX_EXACT_SIGN_LEN: usize = (i32::MAX as usize) / 127;

/// An implementation of the int8 products, chosen by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Isa {
    /// AMX-TILE and AMX-INT8 (x86-64 Linux, with the tile-data permission granted).
    Amx,
    /// AVX-512 F, BW and VNNI (x86-64).
    Avx512Vnni,
    /// AVX2 (x86-64).
    Avx2,
    /// The paper's bit-serial products (AND and popcount of bit planes) in plain Rust, on any
    /// target.
    Portable,
}

/// A forced int8 path that this CPU (or operating system) cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0:?} int8 kernels need CPU features this machine lacks")]
pub struct Int8IsaUnavailable(pub Int8Isa);

impl Int8Isa {
    /// Every path, fastest first.
    pub const ALL: [Int8Isa; 4] = [
        Int8Isa::Amx,
        Int8Isa::Avx512Vnni,
        Int8Isa::Avx2,
        Int8Isa::Portable,
    ];

    /// Whether this machine runs the path. For [`Int8Isa::Amx`] the first call asks Linux for
    /// the tile-data permission (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), once per process.
    pub fn is_available(self) -> bool {
        match self {
            Int8Isa::Amx => amx::is_available(),
            #[cfg(target_arch = "x86_64")]
            Int8Isa::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Int8Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Int8Isa::Avx512Vnni | Int8Isa::Avx2 => false,
            Int8Isa::Portable => true,
        }
    }

    /// The paths this machine runs, fastest first.
    pub fn available() -> Vec<Int8Isa> {
        Int8Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The name used by the `BURN_QNN_INT8_ISA` environment variable.
    pub fn name(self) -> &'static str {
        match self {
            Int8Isa::Amx => "amx",
            Int8Isa::Avx512Vnni => "avx512vnni",
            Int8Isa::Avx2 => "avx2",
            Int8Isa::Portable => "portable",
        }
    }

    /// Parses a name of [`Int8Isa::name`].
    pub fn parse(name: &str) -> Option<Int8Isa> {
        parse_path(name)
    }
}

impl KernelPath for Int8Isa {
    fn all() -> &'static [Self] {
        &Int8Isa::ALL
    }

    fn runs_here(self) -> bool {
        self.is_available()
    }

    fn label(self) -> &'static str {
        self.name()
    }
}

static SELECTION: Selection = Selection::new("BURN_QNN_INT8_ISA");

/// Forces every int8 product onto `isa` (process-wide), or goes back to detection with `None`.
pub fn force_int8_isa(isa: Option<Int8Isa>) -> Result<(), Int8IsaUnavailable> {
    SELECTION.force(isa).map_err(Int8IsaUnavailable)
}

/// The path int8 products called on this thread use: the one [`with_int8_isa`] pinned, else
/// the forced one, else `BURN_QNN_INT8_ISA` if set to an available path, else the fastest
/// available.
pub fn active_int8_isa() -> Int8Isa {
    SELECTION.active()
}

/// Runs `f` with every int8 product it calls on this thread on `isa` (the portable path where
/// this machine lacks it); see [`crate::kernels::isa::with_isa`].
pub fn with_int8_isa<R>(isa: Int8Isa, f: impl FnOnce() -> R) -> R {
    SELECTION.pinned(isa, f)
}

/// An int8 path checked against this machine: it holds a hardware path only where the machine
/// runs it, so the kernels may rely on that when they call `#[target_feature]` functions or
/// AMX instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CheckedInt8(Int8Isa);

impl CheckedInt8 {
    /// `isa` where this machine runs it, else [`Int8Isa::Portable`].
    pub(crate) fn new(isa: Int8Isa) -> CheckedInt8 {
        if isa.is_available() {
            CheckedInt8(isa)
        } else {
            CheckedInt8(Int8Isa::Portable)
        }
    }

    /// The path [`active_int8_isa`] picks.
    pub(crate) fn active() -> CheckedInt8 {
        CheckedInt8::new(active_int8_isa())
    }

    /// The checked path.
    pub(crate) fn isa(self) -> Int8Isa {
        self.0
    }
}

/// Panics unless the operands and output have the lengths of an `[m, k] · [n, k]ᵀ` product and
/// `k` is short enough for an exact result.
fn check(a: &[i8], b: &[i8], m: usize, n: usize, k: usize, out: &[i32]) {
    check_rhs(b, n, k);
    check_lhs(a, m, n, k, out);
}

/// Panics unless `b` holds `[n, k]` and `k` is short enough for an exact result.
fn check_rhs(b: &[i8], n: usize, k: usize) {
    assert!(
        k <= MAX_EXACT_LEN,
        "int8 gemm: a summed length of {k} can overflow i32 (at most {MAX_EXACT_LEN})"
    );
    assert_eq!(
        Some(b.len()),
        n.checked_mul(k),
        "int8 gemm: rhs should hold [n, k] = [{n}, {k}]"
    );
}

/// Panics unless `a` holds `[m, k]` and `out` `[m, n]`.
fn check_lhs(a: &[i8], m: usize, n: usize, k: usize, out: &[i32]) {
    assert_eq!(
        Some(a.len()),
        m.checked_mul(k),
        "int8 gemm: lhs should hold [m, k] = [{m}, {k}]"
    );
    assert_eq!(
        Some(out.len()),
        m.checked_mul(n),
        "int8 gemm: output should hold [m, n] = [{m}, {n}]"
    );
}

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` on one thread, on `isa`.
///
/// The building block of the gradient kernels, which run it on blocks in parallel themselves.
/// Where one `b` meets many blocks of `a`, lay it out once with [`Rhs::new`] and call
/// [`gemm_accumulate_rhs`] instead.
///
/// # Panics
/// If a length does not match `[m, k] · [n, k]ᵀ → [m, n]` or `k > MAX_EXACT_LEN`.
pub(crate) fn gemm_accumulate(
    isa: CheckedInt8,
    a: &[i8],
    b: &[i8],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
) {
    gemm_accumulate_rhs(a, &Rhs::new(isa, b, n, k), m, out);
}

/// The right operand `b` `[n, k]` of the products, laid out once for one path's kernel: in
/// AMX's tiles, the VNNI or AVX2 kernel's panels, or the portable path's bit planes. A layer's
/// weights meet every image of a batch: laid out once, they are not laid out again per image.
pub(crate) struct Rhs {
    isa: CheckedInt8,
    n: usize,
    k: usize,
    layout: Layout,
}

/// How an [`Rhs`] holds `b`.
enum Layout {
    /// Nothing: `b` has no values (`n` or `k` is 0).
    Empty,
    /// In [`amx::Tiles`].
    Amx(amx::Tiles),
    /// In [`vnni::Panels`].
    Vnni(vnni::Panels),
    /// In [`avx2::Panels`].
    Avx2(avx2::Panels),
    /// As [`portable::Planes`].
    Planes(portable::Planes),
}

impl Rhs {
    /// `b` `[n, k]` laid out for `isa`.
    ///
    /// # Panics
    /// If `b` does not hold `n · k` values or `k > MAX_EXACT_LEN`.
    pub(crate) fn new(isa: CheckedInt8, b: &[i8], n: usize, k: usize) -> Rhs {
        check_rhs(b, n, k);
        let layout = if n == 0 || k == 0 {
            Layout::Empty
        } else {
            match isa.isa() {
                Int8Isa::Amx => Layout::Amx(amx::Tiles::new(b, n, k)),
                Int8Isa::Avx512Vnni => Layout::Vnni(vnni::Panels::new(isa, b, n, k)),
                Int8Isa::Avx2 => Layout::Avx2(avx2::Panels::new(b, n, k)),
                Int8Isa::Portable => Layout::Planes(portable::Planes::new(b, n, k)),
            }
        };
        Rhs { isa, n, k, layout }
    }
}

/// `out[i·n + j] += Σ_t a[i·k + t] · rhs[j, t]` on one thread, on the path `rhs` was laid out
/// for.
///
/// # Panics
/// If `a` does not hold `[m, k]` or `out` `[m, n]`, with `rhs`'s `[n, k]`.
pub(crate) fn gemm_accumulate_rhs(a: &[i8], rhs: &Rhs, m: usize, out: &mut [i32]) {
    let (isa, n, k) = (rhs.isa, rhs.n, rhs.k);
    check_lhs(a, m, n, k, out);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    match (&rhs.layout, isa.isa()) {
        (Layout::Amx(tiles), _) => amx::gemm_accumulate(isa, a, tiles, m, out),
        (Layout::Vnni(panels), _) => vnni::gemm_accumulate(isa, a, panels, m, out),
        (Layout::Avx2(panels), _) => avx2::gemm_accumulate(isa, a, panels, m, out),
        (Layout::Planes(planes), _) => portable::gemm_accumulate(a, planes, m, n, k, out),
        (Layout::Empty, _) => unreachable!("a product with no values returned above"),
    }
}

/// What [`amx_ceiling`] loads before each group of four tile products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmxTileLoads {
    /// Nothing: the four tiles are loaded once, before the first group.
    Once,
    /// Four tiles (two of each operand, 4 KB in L1) whose rows start on cache lines, as the
    /// products' 2 × 2 block of sum tiles loads its operands.
    Aligned,
    /// The same four tiles 16 bytes further on, so that each row straddles two cache lines.
    Straddling,
}

/// Runs `iterations` groups of four AMX int8 tile products (`TDPBSSD`, 16,384
/// multiply-accumulates each) on this thread, loading tiles before each group as `loads` says,
/// and returns the multiply-accumulates done, or `None` where the machine cannot run AMX.
/// Timing the call gives one core's ceiling in MAC/s; the `xnor_matmul` bench's `amx_ceiling`
/// entries time each kind of load.
///
/// ```
/// use burn_qnn::kernels::int8::{self, AmxTileLoads};
///
/// match int8::amx_ceiling(AmxTileLoads::Aligned, 10) {
///     Some(macs) => assert_eq!(macs, 10 * 4 * 16 * 16 * 64),
///     None => println!("no AMX here"),
/// }
/// ```
pub fn amx_ceiling(loads: AmxTileLoads, iterations: usize) -> Option<u64> {
    Int8Isa::Amx
        .is_available()
        .then(|| amx::ceiling(CheckedInt8::new(Int8Isa::Amx), loads, iterations))
}

/// Runs `iterations` groups of sixteen AVX-512 VNNI products (`VPDPBUSD`, 64
/// multiply-accumulates each, into sixteen independent sums held in registers) on this thread,
/// and returns the multiply-accumulates done, or `None` where the machine cannot run AVX-512
/// VNNI. Timing the call gives one core's ceiling in MAC/s for the VNNI int8 products; the
/// `xnor_matmul` bench's `vnni_ceiling` entry times it.
///
/// ```
/// use burn_qnn::kernels::int8;
///
/// match int8::vnni_ceiling(10) {
///     Some(macs) => assert_eq!(macs, 10 * 16 * 64),
///     None => println!("no AVX-512 VNNI here"),
/// }
/// ```
pub fn vnni_ceiling(iterations: usize) -> Option<u64> {
    Int8Isa::Avx512Vnni
        .is_available()
        .then(|| vnni::ceiling(CheckedInt8::new(Int8Isa::Avx512Vnni), iterations))
}

/// `out[i·n + j] = Σ_t a[i·k + t] · b[j·k + t]`, exactly, on the path [`active_int8_isa`]
/// picks, in parallel over blocks of rows. Returns the path that ran.
///
/// ```
/// use burn_qnn::kernels::int8;
///
/// let a = [1i8, -2, 3, 127, -127, 5]; // [2, 3]
/// let b = [-1i8, 1, 1, 1, -1, 1]; // [2, 3]
/// let mut out = [0i32; 4];
/// int8::gemm(&a, &b, 2, 2, 3, &mut out);
/// assert_eq!(out, [0, 6, -249, 259]);
/// ```
///
/// # Panics
/// If a length does not match `[m, k] · [n, k]ᵀ → [m, n]` or `k > MAX_EXACT_LEN`.
pub fn gemm(a: &[i8], b: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) -> Int8Isa {
    let isa = active_int8_isa();
    let isa = CheckedInt8::new(isa);
    check(a, b, m, n, k, out);
    out.fill(0);
    if m == 0 || n == 0 || k == 0 {
        return isa.isa();
    }
    let threads = rayon::current_num_threads().max(1);
    // Blocks of whole 32-row tiles, at least one per thread where there are enough rows.
    let rows_per_task = m.div_ceil(threads).next_multiple_of(32).max(32);
    if m > rows_per_task {
        let rhs = Rhs::new(isa, b, n, k);
        out.par_chunks_mut(rows_per_task * n)
            .zip(a.par_chunks(rows_per_task * k))
            .for_each(|(out, a)| gemm_accumulate_rhs(a, &rhs, a.len() / k, out));
    } else if threads > 1 && n > 32 {
        split_columns(isa, a, b, m, n, k, out, threads);
    } else {
        gemm_accumulate(isa, a, b, m, n, k, out);
    }
    isa.isa()
}

/// [`gemm`] for few rows of `a`: blocks of `b`'s rows in parallel, each into its own
/// columns of `out`.
#[allow(clippy::too_many_arguments)]
fn split_columns(
    isa: CheckedInt8,
    a: &[i8],
    b: &[i8],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
    threads: usize,
) {
    let cols_per_task = n.div_ceil(threads).next_multiple_of(32).max(32);
    let blocks: Vec<(usize, Vec<i32>)> = b
        .par_chunks(cols_per_task * k)
        .enumerate()
        .map(|(block, b)| {
            let cols = b.len() / k;
            let mut part = vec![0i32; m * cols];
            gemm_accumulate(isa, a, b, m, cols, k, &mut part);
            (block * cols_per_task, part)
        })
        .collect();
    for (j0, part) in blocks {
        let cols = part.len() / m;
        for (row, part) in out.chunks_exact_mut(n).zip(part.chunks_exact(cols)) {
            row[j0..j0 + cols].copy_from_slice(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of bytes (xorshift).
    fn bytes(len: usize, seed: u64, signs_only: bool) -> Vec<i8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if signs_only {
                    if state & 1 == 0 { 1 } else { -1 }
                } else {
                    (state >> 24) as u8 as i8
                }
            })
            .collect()
    }

    fn reference(a: &[i8], b: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
        let mut out = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|t| i32::from(a[i * k + t]) * i32::from(b[j * k + t]))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn every_path_is_exact_on_odd_shapes() {
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 65),
            (33, 16, 64),
            (31, 70, 129),
            (64, 64, 200),
            (5, 100, 300),
            (100, 3, 1000),
            // Rows a multiple of 64 bytes long: read in place on AMX where they start on cache
            // lines (`a` is also taken from a cache line below).
            (64, 64, 2048),
            // Several panels of columns on AMX (96 columns of 65 steps), the last one partial.
            (40, 150, 4100),
        ];
        for isa in Int8Isa::available() {
            for (seed, &(m, n, k)) in shapes.iter().enumerate() {
                let a = bytes(m * k, seed as u64, false);
                let b = bytes(n * k, 100 + seed as u64, seed % 2 == 0);
                let expected = reference(&a, &b, m, n, k);
                let mut out = vec![7i32; m * n];
                assert_eq!(with_int8_isa(isa, || gemm(&a, &b, m, n, k, &mut out)), isa);
                assert_eq!(out, expected, "{isa:?} on [{m}, {k}]·[{n}, {k}]ᵀ");
                let mut acc = expected.clone();
                gemm_accumulate(CheckedInt8::new(isa), &a, &b, m, n, k, &mut acc);
                let doubled: Vec<i32> = expected.iter().map(|v| 2 * v).collect();
                assert_eq!(acc, doubled, "{isa:?} accumulating");
                // `a` starting on a cache line.
                let mut buffer = vec![0i8; m * k + 64];
                let skip = buffer.as_ptr().align_offset(64);
                let on_line = &mut buffer[skip..skip + m * k];
                on_line.copy_from_slice(&a);
                let mut out = vec![7i32; m * n];
                with_int8_isa(isa, || gemm(on_line, &b, m, n, k, &mut out));
                assert_eq!(out, expected, "{isa:?} on a cache line");
            }
        }
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        // −128 · −128 at every term: the largest magnitude an i8 product has.
        let (m, n, k) = (2, 35, 4096);
        let a = vec![-128i8; m * k];
        let b = vec![-128i8; n * k];
        for isa in Int8Isa::available() {
            let mut out = vec![0i32; m * n];
            with_int8_isa(isa, || gemm(&a, &b, m, n, k, &mut out));
            assert!(out.iter().all(|&v| v == 128 * 128 * k as i32), "{isa:?}");
        }
    }

    #[test]
    fn amx_is_taken_where_the_machine_has_it() {
        let detected = amx::cpu_has_amx();
        if !detected {
            eprintln!("skipped: this CPU has no AMX-INT8");
            return;
        }
        assert!(
            Int8Isa::Amx.is_available(),
            "the CPU reports AMX-INT8 but the tile-data permission was refused"
        );
        if std::env::var("BURN_QNN_INT8_ISA").is_err() {
            assert_eq!(Int8Isa::available()[0], Int8Isa::Amx);
        }
        let (a, b) = (bytes(64 * 64, 1, false), bytes(64 * 64, 2, true));
        let mut out = vec![0; 64 * 64];
        assert_eq!(
            with_int8_isa(Int8Isa::Amx, || gemm(&a, &b, 64, 64, 64, &mut out)),
            Int8Isa::Amx
        );
        assert_eq!(out, reference(&a, &b, 64, 64, 64));
    }

    #[test]
    fn names_round_trip_and_forcing_checks_the_machine() {
        for isa in Int8Isa::ALL {
            assert_eq!(Int8Isa::parse(isa.name()), Some(isa));
            if !isa.is_available() {
                assert_eq!(force_int8_isa(Some(isa)), Err(Int8IsaUnavailable(isa)));
            }
        }
        assert_eq!(Int8Isa::parse(" AVX2 "), Some(Int8Isa::Avx2));
        assert_eq!(Int8Isa::parse("sse"), None);
        assert!(Int8Isa::Portable.is_available());
    }

    #[test]
    #[should_panic(expected = "can overflow i32")]
    fn too_long_sums_are_refused() {
        let k = MAX_EXACT_LEN + 1;
        gemm(&vec![0; k], &vec![0; k], 1, 1, k, &mut [0]);
    }
}
