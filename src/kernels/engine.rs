//! The engine shared by the popcount GEMMs: cache blocking, register tiles and threads.
//!
//! Every GEMM here is a matrix of popcounts `C[u, v] = popcount(op(A_u, B_v))` over packed rows,
//! followed by an epilogue that turns the counts of one output element into a float. `A` has
//! `a_planes` consecutive packed rows ("virtual rows") per output row and `B` has `b_planes` per
//! output column, so the bit-serial GEMMs reuse the XNOR machinery unchanged.
//!
//! Loop nest of one task (a block of output rows × columns):
//! 1. columns in blocks whose `B` rows fit in L2 ([`L2_BUDGET_BYTES`]);
//! 2. output rows in groups whose virtual rows fill whole register tiles;
//! 3. `k` in blocks of [`KC_WORDS`] words, so the group's slice of `A` stays in L1;
//! 4. panels of `MR` virtual rows of `A` × the block's virtual rows of `B`, which the kernel
//!    covers with register tiles of `MR × NR`.
//!
//! Counts accumulate exactly in `u32`; the epilogue runs once per row group and column block.
//! A kernel may read `B` in its own layout ([`TileKernel::lay_out_b`]), made once a call before
//! the tasks start: the AVX-512 column-lane tile does, for products with many rows.

use std::ops::Range;

use rayon::prelude::*;

use super::{CheckedIsa, isa::Isa, tile_avx2, tile_avx512, tile_avx512_columns, tile_portable};

/// The bitwise operation applied to a pair of words before the popcount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BitOp {
    /// `a XOR b`: the number of differing signs.
    Xor,
    /// `a AND b`: the number of common ones.
    And,
}

impl BitOp {
    /// The operation on one pair of words.
    #[inline]
    pub(crate) fn apply(self, a: u64, b: u64) -> u64 {
        match self {
            BitOp::Xor => a ^ b,
            BitOp::And => a & b,
        }
    }
}

/// A panel: rows `0..mr` of `a` against rows `0..nc` of `b` (rows `stride` words apart), over the
/// words `words` of each row. Kernels cover it with register tiles of `MR × NR`.
#[derive(Clone, Debug)]
pub(crate) struct Panel<'a> {
    /// The operation before the popcount.
    pub op: BitOp,
    /// Starts at the panel's first row of `A`.
    pub a: &'a [u64],
    /// Starts at the panel's first row of `B` (in the layout of [`TileKernel::lay_out_b`], where
    /// the kernel has one).
    pub b: &'a [u64],
    /// Words between consecutive rows, in `a` and `b`.
    pub stride: usize,
    /// The word range of every row.
    pub words: Range<usize>,
    /// Rows of `a` (at most the kernel's `MR`).
    pub mr: usize,
    /// Rows of `b` (any number).
    pub nc: usize,
}

impl Panel<'_> {
    /// Panics unless the panel, and its `counts` block (`mr` rows `cstride` apart, `nc` wide),
    /// lie inside their slices and `mr ≤ max_mr`. Kernels that read through raw pointers call
    /// this first.
    pub(crate) fn check(&self, max_mr: usize, counts: &[u32], cstride: usize) {
        assert!(
            (1..=max_mr).contains(&self.mr),
            "panel of {} rows exceeds {max_mr}",
            self.mr
        );
        assert!(self.words.start <= self.words.end, "panel: word range");
        assert!(
            self.a.len() >= (self.mr - 1) * self.stride + self.words.end,
            "panel: lhs rows out of bounds"
        );
        assert!(
            self.nc == 0 || self.b.len() >= (self.nc - 1) * self.stride + self.words.end,
            "panel: rhs rows out of bounds"
        );
        assert!(
            self.nc <= cstride && counts.len() >= (self.mr - 1) * cstride + self.nc,
            "panel: counts out of bounds"
        );
    }
}

/// A register-tiled popcount kernel for one instruction set.
pub(crate) trait TileKernel: Copy + Send + Sync {
    /// The most rows of `A` in one tile.
    const MR: usize;
    /// The rows of `B` in one full tile.
    const NR: usize;

    /// `B` rearranged once a call into the layout [`TileKernel::panel`] reads, or `None` to read
    /// its rows in place. A layout keeps the offset of a column block's first row (`j·words`
    /// for row `j`) for the blocks the engine cuts when `b_planes` is 1.
    fn lay_out_b(self, _problem: &Problem<'_>) -> Option<Vec<u64>> {
        None
    }

    /// Writes `counts[r·cstride + c] = popcount(op(a_r, b_c))` over `panel.words` for `r < mr`,
    /// `c < nc`, adding to the value already there when `accumulate`.
    fn panel(self, panel: &Panel<'_>, counts: &mut [u32], cstride: usize, accumulate: bool);
}

/// A popcount GEMM problem: `m` output rows of `a_planes` packed rows of `a`, `n` output columns
/// of `b_planes` packed rows of `b`, every packed row `words` long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem<'a> {
    /// The operation before the popcount.
    pub op: BitOp,
    /// `m · a_planes · words` words.
    pub a: &'a [u64],
    /// Packed rows of `a` per output row.
    pub a_planes: usize,
    /// Output rows.
    pub m: usize,
    /// `n · b_planes · words` words.
    pub b: &'a [u64],
    /// Packed rows of `b` per output column.
    pub b_planes: usize,
    /// Output columns.
    pub n: usize,
    /// Words per packed row.
    pub words: usize,
}

/// Turns the counts of output row `i` into floats: `counts` holds `a_planes` rows `cstride`
/// apart; output column `j` of `out` (relative to the block) reads columns
/// `j·b_planes .. (j+1)·b_planes` of them.
pub(crate) trait Epilogue: Fn(usize, &[u32], usize, &mut [f32]) + Sync {}
impl<F: Fn(usize, &[u32], usize, &mut [f32]) + Sync> Epilogue for F {}

/// Bytes of `B` a column block may hold (it is reused from L2 by every row group).
const L2_BUDGET_BYTES: usize = 1 << 19;
/// Bytes of the counts of one row group and column block (they are written tile by tile, then
/// read by the epilogue).
const COUNTS_BUDGET_BYTES: usize = 1 << 15;
/// Words of `k` per block (2 KiB a row), so that a tile's rows of `A` stay in L1.
const KC_WORDS: usize = 256;
/// Word-pair popcounts below which one thread does the whole product.
const PAR_MIN_WORK: usize = 1 << 16;
/// Word-pair popcounts per task at the least, when splitting.
const TASK_MIN_WORK: usize = 1 << 15;
/// Tasks per thread, for load balance.
const TASKS_PER_THREAD: usize = 4;
/// Rows of `A` from which the AVX-512 column-lane tile runs (its copy of `B` then costs less
/// than it saves); tests take it from 8, so that small products exercise it.
const COLUMN_TILE_MIN_ROWS: usize = if cfg!(test) { 8 } else { 128 };

/// Runs `problem` on `isa` (Portable where the CPU lacks it), writing `out` (`m × n`,
/// row-major) through `epilogue`.
pub(crate) fn run(isa: Isa, problem: &Problem<'_>, out: &mut [f32], epilogue: impl Epilogue) {
    check_problem(problem, out);
    match CheckedIsa::new(isa).isa() {
        Isa::Avx512 => match tile_avx512::Avx512::new() {
            Some(kernel) if column_tile_pays_off(problem) => {
                let kernel = tile_avx512_columns::Avx512Columns::on(kernel);
                run_with(kernel, problem, out, &epilogue)
            }
            Some(kernel) => run_with(kernel, problem, out, &epilogue),
            None => run_with(tile_portable::Portable, problem, out, &epilogue),
        },
        Isa::Avx2 => match tile_avx2::Avx2::new() {
            Some(kernel) => run_with(kernel, problem, out, &epilogue),
            None => run_with(tile_portable::Portable, problem, out, &epilogue),
        },
        Isa::Portable => run_with(tile_portable::Portable, problem, out, &epilogue),
    }
}

/// Whether the AVX-512 column-lane tile runs `p`: one packed row per output row and column (the
/// engine's column blocks then start on its column groups), and enough rows of `A`.
fn column_tile_pays_off(p: &Problem<'_>) -> bool {
    p.a_planes == 1 && p.b_planes == 1 && p.m >= COLUMN_TILE_MIN_ROWS
}

/// Panics unless the operand and output lengths match the shape.
fn check_problem(p: &Problem<'_>, out: &[f32]) {
    super::check_len("lhs length", p.a.len(), &[p.m, p.a_planes, p.words]);
    super::check_len("rhs length", p.b.len(), &[p.n, p.b_planes, p.words]);
    super::check_len("output length", out.len(), &[p.m, p.n]);
    assert!(
        p.words <= super::MAX_POPCOUNT_LEN / super::WORD_BITS,
        "popcount rows of {} words ({} bits) are longer than the u32 counters count exactly \
         ({} bits at most)",
        p.words,
        p.words as u128 * super::WORD_BITS as u128,
        super::MAX_POPCOUNT_LEN
    );
}

/// A block of the output computed by one task: rows `rows`, columns `cols`, and the matching
/// pieces of the output rows.
struct Task<'o> {
    rows: Range<usize>,
    cols: Range<usize>,
    out: Vec<&'o mut [f32]>,
}

/// Splits the output into tasks and runs them, in parallel when the product is large.
pub(super) fn run_with<K: TileKernel, E: Epilogue>(
    kernel: K,
    p: &Problem<'_>,
    out: &mut [f32],
    epi: &E,
) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    let laid_out = kernel.lay_out_b(p);
    let p = &Problem {
        b: laid_out.as_deref().unwrap_or(p.b),
        ..*p
    };
    let (row_bounds, col_bounds) = split(p, group_rows::<K>(p.a_planes), K::NR);
    let tasks = make_tasks(out, p.n, &row_bounds, &col_bounds);
    if tasks.len() == 1 {
        tasks
            .into_iter()
            .for_each(|task| run_task(kernel, p, task, epi));
    } else {
        tasks
            .into_par_iter()
            .for_each(|task| run_task(kernel, p, task, epi));
    }
}

/// The number of output rows per row group: the fewest whose virtual rows fill whole tiles
/// (`lcm(a_planes, MR) / a_planes`), but at most one tile's worth of planes of 8 rows.
fn group_rows<K: TileKernel>(a_planes: usize) -> usize {
    if a_planes == 0 {
        return K::MR;
    }
    let lcm = a_planes / gcd(a_planes, K::MR) * K::MR;
    (lcm / a_planes).clamp(1, 8)
}

/// Greatest common divisor.
fn gcd(mut x: usize, mut y: usize) -> usize {
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

/// Row and column boundaries of the task grid. It has about `TASKS_PER_THREAD` tasks a thread
/// (none of them tiny), shaped to read the operands the fewest times: splitting the rows `r`
/// ways re-reads `B` `r` times, splitting the columns `c` ways re-reads `A` `c` times.
fn split(p: &Problem<'_>, row_unit: usize, nr: usize) -> (Vec<usize>, Vec<usize>) {
    let work = p.m * p.n * p.words.max(1) * p.a_planes.max(1) * p.b_planes.max(1);
    let threads = rayon::current_num_threads();
    if threads <= 1 || work < PAR_MIN_WORK {
        return (vec![0, p.m], vec![0, p.n]);
    }
    let target = (threads * TASKS_PER_THREAD)
        .min(work / TASK_MIN_WORK)
        .max(1);
    let col_unit = nr.div_ceil(p.b_planes.max(1));
    let m_units = p.m.div_ceil(row_unit);
    let n_units = p.n.div_ceil(col_unit);
    let a_size = p.m * p.a_planes.max(1);
    let b_size = p.n * p.b_planes.max(1);
    let (m_parts, n_parts) = (1..=target.min(m_units))
        .map(|rp| (rp, target.div_ceil(rp).min(n_units)))
        .min_by_key(|&(rp, cp)| cp * a_size + rp * b_size)
        .unwrap_or((1, 1));
    (
        bounds(p.m, row_unit, m_parts),
        bounds(p.n, col_unit, n_parts),
    )
}

/// `parts + 1` boundaries splitting `0..len` into near-equal parts that are multiples of `unit`
/// (the last part takes the remainder).
fn bounds(len: usize, unit: usize, parts: usize) -> Vec<usize> {
    let units = len.div_ceil(unit);
    let parts = parts.clamp(1, units.max(1));
    (0..=parts)
        .map(|t| (units * t / parts * unit).min(len))
        .collect()
}

/// Cuts `out` (rows of `n`) into the tasks of the grid given by the boundaries.
fn make_tasks<'o>(
    out: &'o mut [f32],
    n: usize,
    row_bounds: &[usize],
    col_bounds: &[usize],
) -> Vec<Task<'o>> {
    let cols_count = col_bounds.len() - 1;
    let mut tasks: Vec<Task<'o>> = row_bounds
        .windows(2)
        .flat_map(|r| {
            col_bounds.windows(2).map(move |c| Task {
                rows: r[0]..r[1],
                cols: c[0]..c[1],
                out: Vec::with_capacity(r[1] - r[0]),
            })
        })
        .collect();
    let mut row_task = 0;
    for (i, mut row) in out.chunks_mut(n).enumerate() {
        while i >= row_bounds[row_task + 1] {
            row_task += 1;
        }
        for (c, w) in col_bounds.windows(2).enumerate() {
            let (piece, rest) = row.split_at_mut(w[1] - w[0]);
            tasks[row_task * cols_count + c].out.push(piece);
            row = rest;
        }
    }
    tasks
}

/// Column-block width in output columns: `B` rows of the block fit [`L2_BUDGET_BYTES`], the
/// counts of a row group (`group_rows` virtual rows) fit [`COUNTS_BUDGET_BYTES`], and the
/// block's virtual rows fill whole tiles where possible.
fn column_block(p: &Problem<'_>, nr: usize, group_rows: usize) -> usize {
    let row_bytes = (p.b_planes * p.words * 8).max(1);
    let counts_bytes = (group_rows * 4).max(1);
    let rows = (L2_BUDGET_BYTES / row_bytes)
        .min(COUNTS_BUDGET_BYTES / counts_bytes)
        .max(1);
    let unit = nr / gcd(nr, p.b_planes.max(1));
    (rows / p.b_planes.max(1) / unit).max(1) * unit
}

/// Computes one task: counts for every row group and column block, then the epilogue.
fn run_task<K: TileKernel, E: Epilogue>(kernel: K, p: &Problem<'_>, mut task: Task<'_>, epi: &E) {
    let group = group_rows::<K>(p.a_planes);
    let block = column_block(p, K::NR, group * p.a_planes);
    let mut counts = Vec::new();
    for j0 in task.cols.clone().step_by(block) {
        let cols = j0..(j0 + block).min(task.cols.end);
        for i0 in task.rows.clone().step_by(group) {
            let rows = i0..(i0 + group).min(task.rows.end);
            let cstride = cols.len() * p.b_planes;
            // The first `k` block writes every count, so only an empty `k` needs zeros.
            let len = rows.len() * p.a_planes * cstride;
            if counts.len() < len {
                counts.resize(len, 0);
            }
            let counts = &mut counts[..len];
            if p.words == 0 {
                counts.fill(0);
            }
            count_block(kernel, p, &rows, &cols, counts);
            for i in rows {
                let local = (i - i0) * p.a_planes * cstride;
                let row_counts = &counts[local..local + p.a_planes * cstride];
                let out_row = &mut task.out[i - task.rows.start];
                let piece = &mut out_row[cols.start - task.cols.start..cols.end - task.cols.start];
                epi(i, row_counts, cstride, piece);
            }
        }
    }
}

/// Fills `counts` (the virtual rows of output rows `rows` × the virtual rows of columns `cols`,
/// row-major) with the popcounts over all of `k`.
fn count_block<K: TileKernel>(
    kernel: K,
    p: &Problem<'_>,
    rows: &Range<usize>,
    cols: &Range<usize>,
    counts: &mut [u32],
) {
    let v_rows = rows.len() * p.a_planes;
    let v_cols = cols.len() * p.b_planes;
    let a_base = rows.start * p.a_planes * p.words;
    let b_base = cols.start * p.b_planes * p.words;
    for (kb, w0) in (0..p.words).step_by(KC_WORDS).enumerate() {
        let words = w0..(w0 + KC_WORDS).min(p.words);
        for r0 in (0..v_rows).step_by(K::MR) {
            let panel = Panel {
                op: p.op,
                a: &p.a[a_base + r0 * p.words..],
                b: &p.b[b_base..],
                stride: p.words,
                words: words.clone(),
                mr: K::MR.min(v_rows - r0),
                nc: v_cols,
            };
            kernel.panel(&panel, &mut counts[r0 * v_cols..], v_cols, kb > 0);
        }
    }
}

/// Words per row of the data that [`ceiling`] keeps in L1.
const CEILING_WORDS: usize = 256;

/// Runs the register tile of `isa` `iterations` times over rows resident in L1 (single thread)
/// and returns the binary multiply-accumulates done: `iterations · MR · NR · 64 · CEILING_WORDS`.
pub(crate) fn ceiling(isa: Isa, iterations: usize) -> u64 {
    match CheckedIsa::new(isa).isa() {
        Isa::Avx512 => match tile_avx512::Avx512::new() {
            Some(kernel) => ceiling_with(kernel, iterations),
            None => ceiling_with(tile_portable::Portable, iterations),
        },
        Isa::Avx2 => match tile_avx2::Avx2::new() {
            Some(kernel) => ceiling_with(kernel, iterations),
            None => ceiling_with(tile_portable::Portable, iterations),
        },
        Isa::Portable => ceiling_with(tile_portable::Portable, iterations),
    }
}

/// [`ceiling`] on one kernel.
fn ceiling_with<K: TileKernel>(kernel: K, iterations: usize) -> u64 {
    let word = |i: usize| (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let a: Vec<u64> = (0..K::MR * CEILING_WORDS).map(word).collect();
    let b: Vec<u64> = (0..K::NR * CEILING_WORDS).map(|i| word(i + 7919)).collect();
    let mut counts = vec![0u32; K::MR * K::NR];
    for _ in 0..iterations {
        let panel = Panel {
            op: BitOp::Xor,
            a: std::hint::black_box(&a),
            b: std::hint::black_box(&b),
            stride: CEILING_WORDS,
            words: 0..CEILING_WORDS,
            mr: K::MR,
            nc: K::NR,
        };
        kernel.panel(&panel, &mut counts, K::NR, false);
        std::hint::black_box(&mut counts);
    }
    (iterations * K::MR * K::NR * CEILING_WORDS * 64) as u64
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_POPCOUNT_LEN, WORD_BITS};
    use super::*;

    fn problem(m: usize, n: usize, a_planes: usize, b_planes: usize) -> Problem<'static> {
        Problem {
            op: BitOp::Xor,
            a: &[],
            a_planes,
            m,
            b: &[],
            b_planes,
            n,
            words: 64,
        }
    }

    #[test]
    fn rows_up_to_the_counters_limit_pass() {
        let mut p = problem(0, 0, 1, 1);
        p.words = MAX_POPCOUNT_LEN / WORD_BITS;
        check_problem(&p, &[]);
    }

    #[test]
    #[should_panic(expected = "longer than the u32 counters count exactly")]
    fn rows_past_the_counters_limit_panic() {
        let mut p = problem(0, 0, 1, 1);
        p.words = MAX_POPCOUNT_LEN / WORD_BITS + 1;
        check_problem(&p, &[]);
    }

    #[test]
    fn bounds_cover_the_range_in_units() {
        for (len, unit, parts) in [(10, 3, 4), (1, 3, 8), (4096, 3, 8), (7, 8, 2), (0, 4, 3)] {
            let b = bounds(len, unit, parts);
            assert_eq!(b[0], 0);
            assert_eq!(*b.last().unwrap(), len);
            assert!(b.windows(2).all(|w| w[0] <= w[1]));
            assert!(b[..b.len() - 1].iter().all(|x| x % unit == 0));
        }
    }

    #[test]
    fn split_keeps_every_row_and_column() {
        for (m, n) in [(1, 4096), (4096, 4096), (64, 4096), (1024, 128), (5, 3)] {
            let p = problem(m, n, 1, 1);
            let (rows, cols) = split(&p, 3, 8);
            assert_eq!((rows[0], *rows.last().unwrap()), (0, m));
            assert_eq!((cols[0], *cols.last().unwrap()), (0, n));
        }
    }

    #[test]
    fn group_rows_fill_tiles() {
        #[derive(Clone, Copy)]
        struct Fake;
        impl TileKernel for Fake {
            const MR: usize = 3;
            const NR: usize = 8;
            fn panel(self, _: &Panel<'_>, _: &mut [u32], _: usize, _: bool) {}
        }
        assert_eq!(group_rows::<Fake>(1), 3);
        assert_eq!(group_rows::<Fake>(8), 3);
        assert_eq!(group_rows::<Fake>(3), 1);
        assert_eq!(group_rows::<Fake>(2), 3);
    }

    #[test]
    fn ceiling_counts_macs() {
        for isa in Isa::available() {
            let macs = ceiling(isa, 3);
            assert!(macs > 0 && macs.is_multiple_of(3), "{isa:?}");
        }
    }
}
