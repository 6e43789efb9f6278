//! The AVX-512 register tile with output columns in the lanes: 8 rows of `A` × 3 vectors of 8
//! columns of `B`, 24 `zmm` accumulators whose lane `l` counts for column `l` of its vector.
//!
//! [`super::tile_avx512`] puts 8 words of `k` in the lanes and so ends every tile with a
//! horizontal sum of its 24 accumulators; for rows of a few dozen words that sum costs about a
//! fifth of the tile. Here each step takes one word of `k`: the word of each row of `A` is
//! broadcast, and the same word of 8 columns of `B` is one load, because `B` is first laid out
//! in *column groups* ([`Avx512Columns::lay_out_b`]): for each group of 8 rows of `B`, word by
//! word, the 8 rows' words side by side (rows past the end zero). A tile's counts are then 8
//! lanes of its output row, stored as they are.
//!
//! The layout costs a copy of `B` each call, so the engine takes this tile only for products with
//! enough rows of `A` to repay it (see `engine::run`).

use super::engine::{Panel, Problem, TileKernel};
#[cfg(target_arch = "x86_64")]
use super::tile_avx512::Args;
use super::tile_avx512::Avx512;

/// Columns of `B` (lanes) in one vector of the tile.
const GROUP: usize = 8;

/// The AVX-512 column-lane kernel. A value exists only where an [`Avx512`] does (the CPU has
/// the features of both tiles).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Columns {
    _avx512: Avx512,
}

impl Avx512Columns {
    /// The kernel on a CPU that runs `kernel` (whose existence proves the features).
    pub(crate) fn on(kernel: Avx512) -> Avx512Columns {
        Avx512Columns { _avx512: kernel }
    }
}

/// `B` (`rows` rows of `words` words) in column groups: word `w` of row `8g + l` at
/// `(g·words + w)·8 + l`, with the rows of the last group past `rows` zero. Row `r` of a group's
/// start (`r` a multiple of 8) begins at word `r·words`, as in `B` itself.
fn column_groups(b: &[u64], rows: usize, words: usize) -> Vec<u64> {
    use rayon::prelude::*;
    assert_eq!(b.len(), rows * words, "column_groups: length of B");
    let mut out = vec![0u64; rows.div_ceil(GROUP) * GROUP * words];
    if words == 0 {
        return out;
    }
    out.par_chunks_mut(GROUP * words)
        .zip(b.par_chunks(GROUP * words))
        .for_each(|(group, rows)| {
            // Written in order, read from the group's rows side by side.
            let count = rows.len() / words;
            for (w, out) in group.chunks_exact_mut(GROUP).enumerate() {
                for (l, out) in out.iter_mut().enumerate().take(count) {
                    *out = rows[l * words + w];
                }
            }
        });
    out
}

#[cfg(not(target_arch = "x86_64"))]
impl TileKernel for Avx512Columns {
    const MR: usize = 8;
    const NR: usize = 3 * GROUP;

    fn panel(self, _: &Panel<'_>, _: &mut [u32], _: usize, _: bool) {
        unreachable!("Avx512Columns is never available off x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
impl TileKernel for Avx512Columns {
    const MR: usize = 8;
    const NR: usize = 3 * GROUP;

    /// `B` in column groups (see [`column_groups`]).
    fn lay_out_b(self, p: &Problem<'_>) -> Option<Vec<u64>> {
        Some(column_groups(p.b, p.n * p.b_planes, p.words))
    }

    /// `panel.b` starts at a column group and holds `ceil(nc/8)` groups of `panel.stride` words
    /// a row.
    fn panel(self, panel: &Panel<'_>, counts: &mut [u32], cstride: usize, accumulate: bool) {
        panel.check(Self::MR, counts, cstride);
        assert!(
            panel.words.end <= panel.stride
                && panel.b.len() >= panel.nc.div_ceil(GROUP) * GROUP * panel.stride,
            "column panel: rhs groups out of bounds"
        );
        let args = Args::new(panel, counts, cstride, accumulate);
        // SAFETY: `self` exists only where the CPU has the target features (see `on`); `check`
        // proved the rows of `a` and the counts inside their slices, the assert the groups.
        unsafe { x86::dispatch(panel.op, panel.mr, panel.nc, &args) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::engine::BitOp;
    use super::super::tile_avx512::Args;
    use super::GROUP;

    /// Rows of `A` in a tile.
    const ROWS: usize = 8;

    /// Covers the panel's `nc` columns with tiles of 3 groups, then one of 1 or 2 groups.
    ///
    /// # Safety
    /// The CPU has AVX-512F and VPOPCNTDQ; `1 ≤ mr ≤ 8`; rows `r < mr` of `a` (`stride` words
    /// apart) hold words `w0 .. w1 ≤ stride`; `b` holds `ceil(nc/8)` column groups of `stride`
    /// words; `counts` rows `r < mr` (`cstride` apart) hold `nc` values.
    pub(super) unsafe fn dispatch(op: BitOp, mr: usize, nc: usize, args: &Args) {
        // SAFETY: forwarded contract.
        unsafe {
            match op {
                BitOp::Xor => panel::<true>(mr, nc, args),
                BitOp::And => panel::<false>(mr, nc, args),
            }
        }
    }

    /// # Safety
    /// As [`dispatch`].
    #[target_feature(enable = "avx512f,avx512vl,avx512vpopcntdq")]
    unsafe fn panel<const XOR: bool>(mr: usize, nc: usize, args: &Args) {
        // Rows past `mr` repeat the last row; their counts are not stored.
        let rows: [*const u64; ROWS] = std::array::from_fn(|r| {
            // SAFETY: row `min(r, mr − 1)` is inside `a` (caller).
            unsafe { args.a.add(r.min(mr - 1) * args.stride) }
        });
        let mut c0 = 0;
        while c0 < nc {
            let columns = (nc - c0).min(3 * GROUP);
            // SAFETY: the tile's groups and counts lie inside the panel (caller).
            unsafe {
                match columns.div_ceil(GROUP) {
                    1 => tile::<1, XOR>(args, mr, &rows, c0, columns),
                    2 => tile::<2, XOR>(args, mr, &rows, c0, columns),
                    _ => tile::<3, XOR>(args, mr, &rows, c0, columns),
                }
            }
            c0 += columns;
        }
    }

    /// The tile of `VECTORS` column groups at column `c0` (a multiple of 8), `columns` of them
    /// counted: one step a word, then the counts stored (or added) lane by lane.
    ///
    /// # Safety
    /// As [`dispatch`], with columns `c0 .. c0 + columns ≤ nc` and `columns ≤ 8·VECTORS`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512vpopcntdq")]
    unsafe fn tile<const VECTORS: usize, const XOR: bool>(
        args: &Args,
        mr: usize,
        rows: &[*const u64; ROWS],
        c0: usize,
        columns: usize,
    ) {
        let mut acc = [[_mm512_setzero_si512(); VECTORS]; ROWS];
        let group_words = GROUP * args.stride;
        // SAFETY: group `c0 / 8 + v` is inside `b` for `v < VECTORS` (caller).
        let groups: [*const u64; VECTORS] =
            std::array::from_fn(|v| unsafe { args.b.add((c0 / GROUP + v) * group_words) });
        for w in args.w0..args.w1 {
            let mut b = [_mm512_setzero_si512(); VECTORS];
            for (b, &g) in b.iter_mut().zip(&groups) {
                // SAFETY: word `w < stride` of the group's 8 rows (caller).
                *b = unsafe { _mm512_loadu_si512(g.add(w * GROUP).cast()) };
            }
            for (acc, &row) in acc.iter_mut().zip(rows) {
                // SAFETY: word `w < w1` of a row of `a` (caller).
                let a = _mm512_set1_epi64(unsafe { *row.add(w) } as i64);
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    let x = if XOR {
                        _mm512_xor_si512(a, b)
                    } else {
                        _mm512_and_si512(a, b)
                    };
                    *acc = _mm512_add_epi64(*acc, _mm512_popcnt_epi64(x));
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(mr) {
            for (v, &acc) in acc.iter().enumerate() {
                let first = v * GROUP;
                if first >= columns {
                    break;
                }
                let mask = (u16::MAX >> (16 - (columns - first).min(GROUP))) as __mmask8;
                // SAFETY: counts row `r < mr` holds columns `c0 + first ..` for the lanes in
                // `mask` (caller).
                unsafe {
                    let dst = args.counts.add(r * args.cstride + c0 + first).cast::<i32>();
                    let mut sums = _mm512_cvtepi64_epi32(acc);
                    if args.accumulate {
                        sums = _mm256_add_epi32(sums, _mm256_maskz_loadu_epi32(mask, dst));
                    }
                    _mm256_mask_storeu_epi32(dst, mask, sums);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::super::engine::{self, BitOp};
    use super::*;

    #[test]
    fn column_groups_put_eight_rows_side_by_side() {
        let (rows, words) = (19, 3);
        let b: Vec<u64> = (0..rows * words).map(|i| i as u64 + 1).collect();
        let groups = column_groups(&b, rows, words);
        assert_eq!(groups.len(), 3 * GROUP * words);
        for g in 0..3 {
            for w in 0..words {
                for l in 0..GROUP {
                    let row = GROUP * g + l;
                    let expected = if row < rows { b[row * words + w] } else { 0 };
                    assert_eq!(groups[(g * words + w) * GROUP + l], expected, "{g} {w} {l}");
                }
            }
        }
        assert!(column_groups(&[], 5, 0).is_empty());
    }

    /// The counts of the column-lane kernel against `popcount(op(a_i, b_j))` from the words, for
    /// both operations, row counts around the tile's 8, column counts around its groups of 8 and
    /// 24, and rows of one `k` block and of several (the counts then add up).
    #[test]
    fn counts_match_the_words() {
        let Some(kernel) = Avx512::new().map(Avx512Columns::on) else {
            eprintln!("skipped: this CPU has no AVX-512 with VPOPCNTDQ");
            return;
        };
        let mut rng = StdRng::seed_from_u64(31);
        for (m, n, words) in [
            (1, 1, 1),
            (8, 8, 2),
            (9, 23, 5),
            (7, 24, 33),
            (17, 25, 8),
            (24, 49, 300),
            (130, 70, 9),
        ] {
            let a: Vec<u64> = (0..m * words).map(|_| rng.random()).collect();
            let b: Vec<u64> = (0..n * words).map(|_| rng.random()).collect();
            for op in [BitOp::Xor, BitOp::And] {
                let problem = engine::Problem {
                    op,
                    a: &a,
                    a_planes: 1,
                    m,
                    b: &b,
                    b_planes: 1,
                    n,
                    words,
                };
                let mut out = vec![f32::NAN; m * n];
                engine::run_with(
                    kernel,
                    &problem,
                    &mut out,
                    &|_, counts: &[u32], _, out: &mut [f32]| {
                        for (o, &c) in out.iter_mut().zip(counts) {
                            *o = c as f32;
                        }
                    },
                );
                for i in 0..m {
                    for j in 0..n {
                        let expected: u32 = (0..words)
                            .map(|w| op.apply(a[i * words + w], b[j * words + w]).count_ones())
                            .sum();
                        assert_eq!(
                            out[i * n + j],
                            expected as f32,
                            "{op:?} {m}×{n}×{words}: ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
}
