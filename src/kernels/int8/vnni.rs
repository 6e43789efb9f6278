//! The int8 products on AVX-512 VNNI. `VPDPBUSD` multiplies unsigned by signed bytes, so `b`
//! is laid out as `b + 128` (its sign bit flipped) and `128 · Σ_t a[i, t]` is taken off each
//! result once; the arithmetic wraps modulo 2^32, and the result, which fits in an `i32`, is
//! exact.
//!
//! `b` is repacked into panels of [`PANEL`] rows, four consecutive values of each row side by
//! side ([`Panels`]), so that one 64-byte load holds four values of 16 rows. Each step then
//! broadcasts four values of a row of `a` (the signed operand, so the broadcast is a load and
//! nothing more) and adds their products with 16 rows of `b` into 16 sums at once: [`ROWS`]
//! rows of `a` against a panel keep `2·ROWS` registers of sums, with no horizontal reduction,
//! two loads of `b` for every `2·ROWS` `VPDPBUSD`. Each row's sum `Σ_t a[i, t]` (for the
//! correction) is taken once a block of rows, 64 values an instruction.

use super::{CheckedInt8, rows_in::RowsIn};

/// Rows of `b` in a panel: two registers of 16 sums.
const PANEL: usize = 32;
/// Rows of `a` multiplied against a panel at a time.
const ROWS: usize = 8;

/// `b` `[n, k]` in panels of [`PANEL`] rows, each value `b + 128` as an unsigned byte. Panel
/// `p`, group `g` of four values, row `r`, value `q`: byte `((p·G + g)·PANEL + r)·4 + q` is
/// `b[(PANEL·p + r)·k + 4g + q] + 128`, `G = ⌈k/4⌉`, and 0 past the matrix (where `a`'s values
/// are 0, or rows of sums that are not written).
pub(super) struct Panels {
    n: usize,
    k: usize,
    panels: Vec<u8>,
}

/// Groups of four values the vector layout moves at a time: one 64-byte load a row.
const CHUNK: usize = 16;

impl Panels {
    /// `b` `[n, k]` (length checked by the caller) in panels, for `isa` (which must be
    /// [`super::Int8Isa::Avx512Vnni`]): whole panels in chunks of [`CHUNK`] groups by 16 × 16
    /// transposes in registers, the rest value by value.
    pub(super) fn new(isa: CheckedInt8, b: &[i8], n: usize, k: usize) -> Panels {
        assert_eq!(
            isa.isa(),
            super::Int8Isa::Avx512Vnni,
            "the VNNI panels need AVX-512 VNNI"
        );
        let groups = k.div_ceil(4);
        let panel_count = n.div_ceil(PANEL);
        let mut panels = vec![0u8; panel_count * groups * PANEL * 4];
        // The groups, from the first, and the rows of the whole panels that the vector code
        // lays out (none off x86-64).
        let (vector_groups, vector_rows) = if cfg!(target_arch = "x86_64") {
            (k / 4 / CHUNK * CHUNK, n / PANEL * PANEL)
        } else {
            (0, 0)
        };
        #[cfg(target_arch = "x86_64")]
        for p in 0..vector_rows / PANEL {
            for chunk in (0..vector_groups).step_by(CHUNK) {
                for half in [0, PANEL / 2] {
                    let row = PANEL * p + half;
                    let to = ((p * groups + chunk) * PANEL + half) * 4;
                    // SAFETY: `isa` proves AVX-512 F; rows `row .. row + 16` hold values
                    // `4·chunk .. 4·chunk + 64` (`chunk + 16 ≤ k/4`), and the 16 groups from
                    // `chunk` of the panel hold 16 rows from `half` at `to + 128·g`.
                    unsafe {
                        x86::transpose16(
                            b.as_ptr().add(row * k + 4 * chunk),
                            k,
                            panels.as_mut_ptr().add(to),
                        )
                    };
                }
            }
        }
        let unsigned = |v: i8| (v as u8) ^ 0x80;
        for (j, row) in b.chunks_exact(k).enumerate().take(n) {
            let (p, r) = (j / PANEL, j % PANEL);
            let at = |g: usize| ((p * groups + g) * PANEL + r) * 4;
            let first = if j < vector_rows { vector_groups } else { 0 };
            let quads = row.chunks_exact(4);
            let tail = quads.remainder();
            for (g, quad) in quads.enumerate().skip(first) {
                // Four bytes of a known length: one move, not a call of `memmove`.
                let quad: &[i8; 4] = quad.try_into().expect("chunks of four");
                let to: &mut [u8; 4] = (&mut panels[at(g)..at(g) + 4]).try_into().expect("four");
                *to = quad.map(unsigned);
            }
            if !tail.is_empty() {
                let start = at(k / 4);
                for (to, &v) in panels[start..].iter_mut().zip(tail) {
                    *to = unsigned(v);
                }
            }
        }
        Panels { n, k, panels }
    }
}

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` with `b` in `panels` (lengths checked by the
/// caller).
pub(super) fn gemm_accumulate(
    isa: CheckedInt8,
    a: &[i8],
    panels: &Panels,
    m: usize,
    out: &mut [i32],
) {
    let a = Contiguous { a, k: panels.k };
    // SAFETY: the caller checked `a` `[m, k]` and `out` `[m, n]`.
    unsafe { run(isa, &a, panels, m, out) }
}

/// [`gemm_accumulate`] with the rows of `a` read where they lie (`rows`; checked by the
/// caller: every stretch inside its buffer, rows no longer than `k`), their groups of four
/// values at `groups` from each row's start (see [`RowsIn::groups`], with `partial` values in
/// a last partial group).
pub(super) fn gemm_accumulate_in_place(
    isa: CheckedInt8,
    rows: &RowsIn<'_>,
    groups: &[usize],
    partial: usize,
    panels: &Panels,
    out: &mut [i32],
) {
    let whole = rows.len() / 4;
    assert_eq!(
        groups.len(),
        whole + usize::from(partial > 0),
        "int8 gemm: groups"
    );
    let a = InPlace {
        base: rows.base,
        starts: rows.starts,
        offsets: rows.offsets,
        run: rows.run,
        groups,
        whole,
        partial,
    };
    // SAFETY: `InPlace`'s reads lie inside `base` (the caller's check of every stretch; each
    // whole group lies in one stretch, the partial one at the end of the only stretch), and
    // the caller checked `out` `[m, n]`.
    unsafe { run(isa, &a, panels, rows.rows(), out) }
}

/// [`super::vnni_ceiling`] on `isa`, which must be [`super::Int8Isa::Avx512Vnni`].
pub(super) fn ceiling(isa: CheckedInt8, iterations: usize) -> u64 {
    assert_eq!(
        isa.isa(),
        super::Int8Isa::Avx512Vnni,
        "the VNNI ceiling needs AVX-512 VNNI"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` proves the CPU has AVX-512 F, BW and VNNI.
        let sums = unsafe { x86::ceiling(iterations) };
        std::hint::black_box(sums);
    }
    iterations as u64 * 16 * 64
}

/// The kernel on `m` rows of `a` against `panels`.
///
/// # Safety
/// `a`'s rows `0..m` can be read as [`Lhs`] says, and `out` holds `[m, n]`.
unsafe fn run<A: Lhs>(isa: CheckedInt8, a: &A, panels: &Panels, m: usize, out: &mut [i32]) {
    assert_eq!(
        isa.isa(),
        super::Int8Isa::Avx512Vnni,
        "the VNNI int8 kernel needs AVX-512 VNNI"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let Panels { n, k, panels } = panels;
        // SAFETY: `isa` proves the CPU has AVX-512 F, BW and VNNI; `panels` are `Panels::new`'s
        // for `[n, k]`; the rows and `out` as the caller promises.
        unsafe { x86::gemm(a, panels, m, *n, *k, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = a;
        unreachable!(
            "AVX-512 is never available off x86-64 ({m}, {out:p}, {})",
            panels.n
        );
    }
}

/// The left operand as the kernel reads it: four values of a row at a time, from a pointer to
/// the row's start taken once per block of rows.
trait Lhs {
    /// Where row `row` starts.
    ///
    /// # Safety
    /// Row `row` exists.
    unsafe fn row_start(&self, row: usize) -> *const i8;

    /// Groups of four values every row holds whole, from the first: `group_offset` tells where
    /// each lies.
    fn whole_groups(&self) -> usize;

    /// Where whole group `group` lies from a row's start.
    ///
    /// # Safety
    /// `group < whole_groups()`.
    unsafe fn group_offset(&self, group: usize) -> usize;

    /// Values `4·group .. 4·group + 4` of the row starting at `row` for a group past the whole
    /// ones, as one little-endian word: the row's last values, then zeros.
    ///
    /// # Safety
    /// `row` is a [`Lhs::row_start`] and `4·group < k`.
    unsafe fn tail_quad(&self, row: *const i8, group: usize) -> i32;

    /// Where a row's values lie: stretches of the returned length at these offsets from its
    /// start (the row's values are theirs, then zeros).
    fn stretches(&self) -> (&[usize], usize);
}

/// `a` `[m, k]`, row-major.
struct Contiguous<'a> {
    a: &'a [i8],
    k: usize,
}

impl Lhs for Contiguous<'_> {
    #[inline(always)]
    unsafe fn row_start(&self, row: usize) -> *const i8 {
        // SAFETY: the row exists (the caller), so its start lies in `a`.
        unsafe { self.a.as_ptr().add(row * self.k) }
    }

    #[inline(always)]
    fn whole_groups(&self) -> usize {
        self.k / 4
    }

    #[inline(always)]
    unsafe fn group_offset(&self, group: usize) -> usize {
        4 * group
    }

    #[inline(always)]
    unsafe fn tail_quad(&self, row: *const i8, group: usize) -> i32 {
        let mut bytes = [0u8; 4];
        for (q, byte) in bytes.iter_mut().enumerate().take(self.k - 4 * group) {
            // SAFETY: value `4·group + q < k` of the row.
            *byte = unsafe { *row.add(4 * group + q) } as u8;
        }
        i32::from_le_bytes(bytes)
    }

    #[inline(always)]
    fn stretches(&self) -> (&[usize], usize) {
        (&[0], self.k)
    }
}

/// Rows read where they lie ([`RowsIn`]): group `g` of row `i` at `base[starts[i] + groups[g]]`,
/// whole for `g < whole`, `partial` values for `g == whole`, zeros after.
struct InPlace<'a> {
    base: &'a [i8],
    starts: &'a [usize],
    offsets: &'a [usize],
    run: usize,
    groups: &'a [usize],
    whole: usize,
    partial: usize,
}

impl Lhs for InPlace<'_> {
    #[inline(always)]
    unsafe fn row_start(&self, row: usize) -> *const i8 {
        // SAFETY: the row exists (the caller); its start lies in `base` (checked by
        // `gemm_accumulate_in_place`'s caller).
        unsafe { self.base.as_ptr().add(*self.starts.get_unchecked(row)) }
    }

    #[inline(always)]
    fn whole_groups(&self) -> usize {
        self.whole
    }

    #[inline(always)]
    unsafe fn group_offset(&self, group: usize) -> usize {
        // SAFETY: `group < whole ≤ groups.len()` (the caller).
        unsafe { *self.groups.get_unchecked(group) }
    }

    #[inline(always)]
    unsafe fn tail_quad(&self, row: *const i8, group: usize) -> i32 {
        let mut bytes = [0u8; 4];
        if group == self.whole && self.partial > 0 {
            for (q, byte) in bytes.iter_mut().enumerate().take(self.partial) {
                // SAFETY: the partial group's values end the row's only stretch.
                *byte = unsafe { *row.add(self.groups[group] + q) } as u8;
            }
        }
        i32::from_le_bytes(bytes)
    }

    #[inline(always)]
    fn stretches(&self) -> (&[usize], usize) {
        (self.offsets, self.run)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Lhs, PANEL, ROWS};
    use crate::kernels::transpose::transpose_words16;

    /// Lays out [`super::CHUNK`] groups of four values of 16 rows: row `i`'s 64 values from
    /// `rows + i·stride` become bytes `128·g + 4·i ..` of `to` for group `g`, each value
    /// `v + 128` as an unsigned byte: a 16 × 16 transpose of 32-bit words
    /// ([`transpose_words16`]).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; the 16 rows' 64 bytes can be read, and the 16 runs of 64
    /// bytes at `to + 128·g` written.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose16(rows: *const i8, stride: usize, to: *mut u8) {
        // SAFETY: the rows can be read (the caller).
        let rows: [__m512i; 16] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_si512(rows.add(i * stride).cast()) });
        // SAFETY: the CPU has AVX-512 F (this function's contract).
        let groups = unsafe { transpose_words16(rows) };
        let flip = _mm512_set1_epi8(0x80_u8 as i8);
        for (group, column) in groups.into_iter().enumerate() {
            // SAFETY: group `group < 16` of `to` can be written (the caller).
            unsafe {
                _mm512_storeu_si512(to.add(128 * group).cast(), _mm512_xor_si512(column, flip))
            };
        }
    }

    /// `iterations` rounds of sixteen `VPDPBUSD` into sixteen independent registers (more than
    /// the instruction's latency times its throughput), on register operands only; returns the
    /// sums' total, so that the work is not optimized away.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn ceiling(iterations: usize) -> i32 {
        let a = _mm512_set1_epi32(0x0102_0304);
        let b = _mm512_set1_epi32(0x0101_01ff);
        let mut sums = [_mm512_setzero_si512(); 16];
        for _ in 0..iterations {
            for sum in sums.iter_mut() {
                *sum = _mm512_dpbusd_epi32(*sum, a, b);
                // SAFETY: an empty template: the compiler must take the register as changed (so
                // that no round is folded into another), and nothing runs.
                unsafe {
                    std::arch::asm!("/* {0} */", inout(zmm_reg) * sum, options(nomem, nostack))
                };
            }
        }
        let total = sums
            .iter()
            .fold(_mm512_setzero_si512(), |t, &s| _mm512_add_epi32(t, s));
        _mm512_reduce_add_epi32(total)
    }

    /// `out += a · bᵀ` from `b`'s panels ([`super::Panels`]): blocks of [`ROWS`] rows of `a`,
    /// then of 4, then single rows.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI; `a` must hold `[m, k]`, `out` `[m, n]`, and
    /// `panels` be those of `Panels::new(b, n, k)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemm<A: Lhs>(
        a: &A,
        panels: &[u8],
        m: usize,
        n: usize,
        k: usize,
        out: &mut [i32],
    ) {
        let mut i = 0;
        // SAFETY (each block): the rows `i..i + R` exist, as the caller's lengths promise.
        while m - i >= ROWS {
            unsafe { block::<ROWS, A>(a, i, panels, n, k, out) };
            i += ROWS;
        }
        if m - i >= 4 {
            unsafe { block::<4, A>(a, i, panels, n, k, out) };
            i += 4;
        }
        while i < m {
            unsafe { block::<1, A>(a, i, panels, n, k, out) };
            i += 1;
        }
    }

    /// `128 · Σ` of each row's values (wrapping), in every lane: the rows' values are the
    /// stretches of `run` values at `stretches` from each row's start. The rows are summed side
    /// by side, 64 values an instruction, so that the sums do not wait on each other.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI; every row's stretches can be read.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn corrections<const R: usize>(
        rows: [*const i8; R],
        stretches: &[usize],
        run: usize,
    ) -> [__m512i; R] {
        let ones = _mm512_set1_epi8(1);
        let mut sums = [_mm512_setzero_si512(); R];
        for &offset in stretches {
            let mut at = 0;
            while at < run {
                let mask: __mmask64 = if run - at >= 64 {
                    !0
                } else {
                    (1 << (run - at)) - 1
                };
                for (sum, row) in sums.iter_mut().zip(rows) {
                    // SAFETY: inside the row's stretch; the mask reads no byte past it.
                    let chunk = unsafe { _mm512_maskz_loadu_epi8(mask, row.add(offset + at)) };
                    *sum = _mm512_dpbusd_epi32(*sum, ones, chunk);
                }
                at += 64;
            }
        }
        sums.map(|sum| _mm512_set1_epi32(_mm512_reduce_add_epi32(sum).wrapping_mul(128)))
    }

    /// `out[i, ..] += a[i, ..] · bᵀ` for the `R` rows from `first`, every panel in turn.
    ///
    /// # Safety
    /// As [`gemm`], with rows `first..first + R` of `a`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize, A: Lhs>(
        a: &A,
        first: usize,
        panels: &[u8],
        n: usize,
        k: usize,
        out: &mut [i32],
    ) {
        let groups = k.div_ceil(4);
        let whole = a.whole_groups();
        let panel_bytes = groups * PANEL * 4;
        // SAFETY: rows `first..first + R` exist (the caller).
        let rows: [*const i8; R] = std::array::from_fn(|r| unsafe { a.row_start(first + r) });
        // `b` enters as `b + 128`: each row's products gain `128 · Σ_t a[i, t]`.
        let (stretches, run) = a.stretches();
        // SAFETY: a row's stretches lie in its buffer (`Lhs::stretches`).
        let corrections = unsafe { corrections(rows, stretches, run) };
        for (p, panel) in panels.chunks_exact(panel_bytes).enumerate() {
            let mut sums = [[_mm512_setzero_si512(); 2]; R];
            for (g, step) in panel.chunks_exact(PANEL * 4).enumerate() {
                // SAFETY: a step holds 128 bytes; whole groups lie in their rows, the others
                // are read value by value (`4g < k`).
                unsafe {
                    let low = _mm512_loadu_si512(step.as_ptr().cast());
                    let high = _mm512_loadu_si512(step.as_ptr().add(64).cast());
                    if g < whole {
                        let at = a.group_offset(g);
                        for (sums, row) in sums.iter_mut().zip(rows) {
                            let quad = std::ptr::read_unaligned(row.add(at).cast::<i32>());
                            let va = _mm512_set1_epi32(quad);
                            sums[0] = _mm512_dpbusd_epi32(sums[0], low, va);
                            sums[1] = _mm512_dpbusd_epi32(sums[1], high, va);
                        }
                    } else {
                        for (sums, row) in sums.iter_mut().zip(rows) {
                            let va = _mm512_set1_epi32(a.tail_quad(row, g));
                            sums[0] = _mm512_dpbusd_epi32(sums[0], low, va);
                            sums[1] = _mm512_dpbusd_epi32(sums[1], high, va);
                        }
                    }
                }
            }
            for (r, (sums, correction)) in sums.iter().zip(corrections).enumerate() {
                for (half, &sum) in sums.iter().enumerate() {
                    let j = p * PANEL + half * 16;
                    if j >= n {
                        continue;
                    }
                    let lanes = (n - j).min(16);
                    let mask: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
                    // SAFETY: the mask keeps `out`'s accesses within row `first + r`'s `n`
                    // values.
                    unsafe {
                        let at = out.as_mut_ptr().add((first + r) * n + j);
                        let old = _mm512_maskz_loadu_epi32(mask, at);
                        let new = _mm512_add_epi32(old, _mm512_sub_epi32(sum, correction));
                        _mm512_mask_storeu_epi32(at, mask, new);
                    }
                }
            }
        }
    }
}
