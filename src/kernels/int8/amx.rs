//! The int8 products on AMX: `TDPBSSD` multiplies a 16 × 64 tile of `a` by a 64 × 16 tile of
//! `b` into a 16 × 16 tile of `i32` sums in one instruction.
//!
//! `b` is laid out once in AMX's "VNNI" layout, where row `r` of the tile for columns
//! `j0 .. j0 + 16` and sums `t0 .. t0 + 64` holds `b[j0 + c, t0 + 4r + q]` at byte `4c + q`,
//! zero past `k`. A tile of `a` is 16 rows of 64 bytes at any one stride, so rows of `a` are
//! loaded where they lie when each tile's rows are equally far apart on cache lines (a
//! row-major matrix on a cache line, say), and copied, zero-padded, onto cache lines
//! otherwise. A 2 × 2 block of `i32` tiles (32 rows of `a` by 32 of `b`) stays in tile
//! registers over the whole sum, loaded from the output and stored back to it.
//!
//! Each `TDPBSSD` here waits for two freshly loaded tiles (four loads a 2 × 2 step), so where
//! the operands lie sets the pace. On a Sapphire Rapids core ([`super::amx_ceiling`]): about
//! 3.5 × 10¹² multiply-accumulates a second with the tiles loaded once or reloaded from rows on
//! cache lines in L1, and 1.0 × 10¹² where each row straddles two cache lines. So the operands
//! are laid out on cache lines ([`Lines`]), and the columns of `b` taken in panels that stay in
//! L2 ([`PANEL_BYTES`]). What the AMX paths share (the permission, the tile shape, the
//! configuration) is in [`crate::kernels::amx`].

use rayon::prelude::*;

use super::{AmxTileLoads, CheckedInt8, RowsIn};
use crate::kernels::amx::{self, AmxUnit, Lines};

/// Whether the CPU reports AMX-TILE and AMX-INT8.
#[cfg(test)]
pub(super) fn cpu_has_amx() -> bool {
    amx::cpu_has(AmxUnit::Int8)
}

/// Whether this process may use the AMX int8 tiles: the CPU has them and Linux granted the
/// tile-data permission (asked on the first call).
pub(super) fn is_available() -> bool {
    amx::is_available(AmxUnit::Int8)
}

/// Rows (of `a` and of `b`) in one tile.
const TILE_ROWS: usize = amx::TILE_ROWS;
/// Bytes summed by one tile product.
const TILE_DEPTH: usize = amx::TILE_ROW_BYTES;
/// The most bytes of `b`'s tiles one pass over the rows of `a` meets: a panel of columns that
/// stays in L2 (2 MiB a core on Sapphire Rapids) while every block of rows meets it, instead of
/// all of `b` streaming from further out for each block of rows (a 2048³ product through
/// [`crate::kernels::xnor::xnor_gemm_int8`]: 12.9–14.1 ms before the panels, 9.0–9.3 ms with
/// them, on 2 cores).
const PANEL_BYTES: usize = 512 * 1024;

/// Bytes of `b` below which [`Tiles::new`] lays it out on one thread.
const PARALLEL_BYTES: usize = 1 << 20;

/// Rows of `a` and of `b` in the 2 × 2 block of tiles a micro-kernel call computes.
const BLOCK: usize = 2 * TILE_ROWS;

/// `b` `[n, k]` in the tiles' VNNI layout: for each block of 16 rows of `b` and each step of 64
/// summed values, a 16 × 64-byte tile whose row `r` holds, for each of the 16 rows `c`, the
/// four values `4r .. 4r + 4` of the step at bytes `4c .. 4c + 4`; zero beyond `n` and `k`,
/// rows up to a whole [`BLOCK`].
pub(super) struct Tiles {
    n: usize,
    k: usize,
    tiles: Lines,
}

impl Tiles {
    /// `b` `[n, k]` (length checked by the caller, `k > 0`) in tiles.
    pub(super) fn new(b: &[i8], n: usize, k: usize) -> Tiles {
        let steps = k.div_ceil(TILE_DEPTH);
        let padded_n = n.next_multiple_of(BLOCK);
        let tile = TILE_ROWS * TILE_DEPTH;
        let mut lines = Lines::zeros(padded_n / TILE_ROWS * steps * tile);
        let tiles = lines.view_mut::<i8>();
        // Each block of 16 rows in parallel where `b` is large: each row zero-padded to whole
        // steps, then its groups of four values dealt out.
        let blocks_a_task = (PARALLEL_BYTES / (TILE_ROWS * k)).max(1);
        tiles
            .par_chunks_mut(steps * tile)
            .zip(b[..n * k].par_chunks(TILE_ROWS * k))
            .with_min_len(blocks_a_task)
            .for_each_init(
                || vec![0i8; steps * TILE_DEPTH],
                |row, (block, values)| {
                    for (c, values) in values.chunks_exact(k).enumerate() {
                        row[..k].copy_from_slice(values);
                        for (group, quad) in row.chunks_exact(4).enumerate() {
                            let at = group / TILE_ROWS * tile + group % TILE_ROWS * TILE_DEPTH;
                            block[at + 4 * c..at + 4 * c + 4].copy_from_slice(quad);
                        }
                    }
                },
            );
        Tiles { n, k, tiles: lines }
    }
}

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` with `b` in `b_tiles` (lengths checked by the
/// caller).
///
/// Rows of `a` are read in place where they are whole 64-byte steps on cache lines, else
/// copied, zero-padded, onto cache lines.
pub(super) fn gemm_accumulate(
    isa: CheckedInt8,
    a: &[i8],
    b_tiles: &Tiles,
    m: usize,
    out: &mut [i32],
) {
    let k = b_tiles.k;
    let depth = k.div_ceil(TILE_DEPTH) * TILE_DEPTH;
    let in_place = depth == k && (a.as_ptr() as usize).is_multiple_of(TILE_DEPTH);
    let stride = depth;
    // Rows read in place: whole blocks; the rest are copied.
    let whole = if in_place { m / BLOCK * BLOCK } else { 0 };
    let copied = pad_rows(
        &a[whole * k..],
        m - whole,
        k,
        (m - whole).next_multiple_of(BLOCK),
        stride,
    );
    run(isa, b_tiles, m, out, |i0| {
        let rows = if i0 < whole {
            &a[i0 * k..]
        } else {
            &copied.view::<i8>()[(i0 - whole) * stride..]
        };
        BlockRows {
            first: rows.as_ptr(),
            second: rows[TILE_ROWS * stride..].as_ptr(),
            stride,
        }
    });
}

/// `out[i·n + j] += Σ_t a[i, t] · b[j·k + t]` with `b` in `b_tiles` and `a`'s rows as `rows`
/// describes them (`rows` and `out` checked by the caller, `m > 0`). Where each row is one
/// stretch of `k` values, each tile of 16 rows whose starts are equally far apart and on cache
/// lines, and whose whole 64-byte steps lie in the buffer, is loaded where it lies (the values
/// past `k` meet zeros of `b`); every other block of 32 rows is copied onto cache lines first,
/// once.
pub(super) fn gemm_accumulate_rows_in(
    isa: CheckedInt8,
    rows: &RowsIn<'_>,
    b_tiles: &Tiles,
    out: &mut [i32],
) {
    let (m, k) = (rows.rows(), b_tiles.k);
    let depth = k.div_ceil(TILE_DEPTH) * TILE_DEPTH;
    // Rows that are one stretch of `k` values: the buffer from that stretch on.
    let single = match rows.offsets {
        &[offset] if rows.run == k => Some(&rows.base[offset..]),
        _ => None,
    };
    // The stride of a tile's rows where they can be loaded in place.
    let tile_stride = |base: &[i8], starts: &[usize]| -> Option<usize> {
        let step = starts.get(1)?.checked_sub(starts[0])?;
        let even = starts
            .windows(2)
            .all(|pair| pair[1].checked_sub(pair[0]) == Some(step));
        let inside = starts.iter().all(|&start| start + depth <= base.len());
        let aligned = starts
            .iter()
            .all(|&start| (base.as_ptr() as usize + start).is_multiple_of(TILE_DEPTH));
        (starts.len() == TILE_ROWS && even && inside && aligned).then_some(step)
    };
    let mut copied = Lines::zeros(BLOCK * depth);
    run(isa, b_tiles, m, out, |i0| {
        let block = i0..(i0 + BLOCK).min(m);
        if let Some(base) = single {
            let (first, second) = rows.starts[block.clone()].split_at(TILE_ROWS.min(block.len()));
            if let (Some(stride), Some(other)) =
                (tile_stride(base, first), tile_stride(base, second))
                && stride == other
            {
                return BlockRows {
                    first: base[first[0]..].as_ptr(),
                    second: base[second[0]..].as_ptr(),
                    stride,
                };
            }
        }
        // Past `k` the rows stay zero; rows past `m` in a last block give sums that are dropped.
        let copied = copied.view_mut::<i8>();
        for (row, i) in copied.chunks_exact_mut(depth).zip(block) {
            rows.copy_row(i, &mut row[..k]);
        }
        BlockRows {
            first: copied.as_ptr(),
            second: copied[TILE_ROWS * depth..].as_ptr(),
            stride: depth,
        }
    });
}

/// The 32 rows of `a` a block of the product reads: two tiles of 16 rows, `stride` bytes apart,
/// each row holding the block's `64·steps` bytes.
struct BlockRows {
    first: *const i8,
    second: *const i8,
    stride: usize,
}

/// `out[i·n + j] += Σ_t a[i, t] · b[j, t]` with `b` in `b_tiles` and the rows of `a` from row
/// `i0` where `rows(i0)` says (valid until the next call), for each block of 32 rows.
///
/// Each 32 × 32 block of `out` is loaded into the sum tiles, summed into, and stored back;
/// blocks cut by the edge of `out` go through a buffer. The columns are taken in panels of
/// [`PANEL_BYTES`], each met by every block of rows. The tiles are configured once for the
/// whole product.
fn run(
    isa: CheckedInt8,
    b_tiles: &Tiles,
    m: usize,
    out: &mut [i32],
    mut rows: impl FnMut(usize) -> BlockRows,
) {
    assert_eq!(
        isa.isa(),
        super::Int8Isa::Amx,
        "the AMX int8 kernel needs AMX"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let Tiles { n, k, tiles } = b_tiles;
        let (n, steps) = (*n, k.div_ceil(TILE_DEPTH));
        let b_block = steps * TILE_ROWS * TILE_DEPTH;
        let panel = (PANEL_BYTES / (2 * b_block)).max(1) * BLOCK;
        let mut fresh = [0i32; BLOCK * BLOCK];
        // SAFETY: `isa` proves this process may run AMX int8, and nothing but these blocks runs
        // on this thread until the session ends.
        let _session = unsafe { crate::kernels::amx::TileSession::start() };
        for p0 in (0..n).step_by(panel) {
            for i0 in (0..m).step_by(BLOCK) {
                let a = rows(i0);
                let rows = BLOCK.min(m - i0);
                for j0 in (p0..n.min(p0 + panel)).step_by(BLOCK) {
                    let cols = BLOCK.min(n - j0);
                    let b = tiles.view::<i8>()[j0 / TILE_ROWS * b_block..].as_ptr();
                    let whole = rows == BLOCK && cols == BLOCK;
                    let sums = if whole {
                        x86::Sums::Add(out[i0 * n + j0..].as_mut_ptr(), n)
                    } else {
                        x86::Sums::Fresh(&mut fresh)
                    };
                    // SAFETY: the session configured the tiles; `rows` promises 16 rows of `steps`
                    // whole 64-byte steps at each tile's start, `tiles` holds two column blocks of
                    // `steps` tiles from column j0, and an added block is the 32 × 32 block of `out`
                    // at (i0, j0), rows `n` apart.
                    unsafe { x86::block_2x2(&a, b, b_block, steps, sums) };
                    if whole {
                        continue;
                    }
                    for (r, block_row) in fresh.chunks_exact(BLOCK).take(rows).enumerate() {
                        let out_row = &mut out[(i0 + r) * n + j0..][..cols];
                        for (out, &sum) in out_row.iter_mut().zip(block_row) {
                            *out += sum;
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (b_tiles, m, out, &mut rows);
        unreachable!("AMX runs on x86-64 only");
    }
}

/// Runs `iterations` groups of four tile products (`TDPBSSD` on 16 × 64 by 64 × 16 bytes) on
/// one thread, each group after loading its four tiles from L1 as `loads` says (as the 2 × 2
/// kernel's loop does), or on tiles loaded once; returns the multiply-accumulates done. Timing
/// the call gives one core's ceiling for the int8 products on AMX.
pub(super) fn ceiling(isa: CheckedInt8, loads: AmxTileLoads, iterations: usize) -> u64 {
    assert_eq!(isa.isa(), super::Int8Isa::Amx, "the AMX ceiling needs AMX");
    let tiles_len = 4 * TILE_ROWS * TILE_DEPTH;
    let operands = Lines::zeros(tiles_len + TILE_DEPTH);
    let (offset, streamed) = match loads {
        AmxTileLoads::Once => (0, false),
        AmxTileLoads::Aligned => (0, true),
        AmxTileLoads::Straddling => (TILE_DEPTH / 4, true),
    };
    let tiles = &operands.view::<i8>()[offset..][..tiles_len];
    let mut sums = [0i32; TILE_ROWS * TILE_ROWS];
    #[cfg(target_arch = "x86_64")]
    if iterations > 0 {
        // SAFETY: `isa` proves this process may run AMX int8, and nothing else runs on this
        // thread until the session ends; `tiles` holds four tiles, `sums` one.
        unsafe {
            let _session = amx::TileSession::start();
            x86::ceiling(tiles.as_ptr(), streamed, iterations, &mut sums);
        }
    }
    std::hint::black_box(sums);
    (iterations * 4 * TILE_ROWS * TILE_ROWS * TILE_DEPTH) as u64
}

/// `values` `[rows, len]` copied into `[padded_rows, stride]` (on cache lines), zero beyond.
fn pad_rows(values: &[i8], rows: usize, len: usize, padded_rows: usize, stride: usize) -> Lines {
    let mut padded = Lines::zeros(padded_rows * stride);
    for (dst, src) in padded
        .view_mut::<i8>()
        .chunks_exact_mut(stride)
        .zip(values.chunks_exact(len))
        .take(rows)
    {
        dst[..len].copy_from_slice(src);
    }
    padded
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Where a 32 × 32 block of `i32` sums goes.
    pub(super) enum Sums<'a> {
        /// Added to the block of a row-major matrix at this pointer, its rows this many values
        /// apart.
        Add(*mut i32, usize),
        /// Written to this buffer, row-major.
        Fresh(&'a mut [i32; 1024]),
    }

    /// The 32 × 32 block of sums of 32 rows of `a` (two tiles of 16 rows as `a` says, `steps`
    /// tiles deep) against two column blocks of `b` tiles (from `b`, `b_block` bytes apart, each
    /// `steps` consecutive 1,024-byte tiles), into `sums`. Tiles (of
    /// [`crate::kernels::amx::FULL_TILES`]): `tmm0..3` the 2 × 2 sums, `tmm4, 5` two tiles of
    /// `a`, `tmm6, 7` two tiles of `b`.
    ///
    /// # Safety
    /// A [`crate::kernels::amx::TileSession`] must be live on this thread, `steps ≥ 1`, each of
    /// `a`'s tiles must have 16 rows of `64·steps` readable bytes, `b` two blocks of
    /// `b_block ≥ 1024·steps` bytes, and a [`Sums::Add`] pointer a 32 × 32 block of its matrix.
    pub(super) unsafe fn block_2x2(
        a: &super::BlockRows,
        b: *const i8,
        b_block: usize,
        steps: usize,
        sums: Sums<'_>,
    ) {
        let (c, c_row, load) = match sums {
            Sums::Add(at, row) => (at, row, 1usize),
            Sums::Fresh(buffer) => (buffer.as_mut_ptr(), 32, 0),
        };
        // SAFETY: the caller's contract; every tile load and store stays inside the operands
        // and the block of sums (4 tiles of 16 rows × 64 bytes).
        unsafe {
            std::arch::asm!(
                "lea {c1}, [{c} + {c_stride} * 8]",
                "lea {c1}, [{c1} + {c_stride} * 8]",
                "test {load}, {load}",
                "jz 3f",
                "tileloadd tmm0, [{c} + {c_stride} * 1]",
                "tileloadd tmm2, [{c1} + {c_stride} * 1]",
                "add {c}, 64",
                "add {c1}, 64",
                "tileloadd tmm1, [{c} + {c_stride} * 1]",
                "tileloadd tmm3, [{c1} + {c_stride} * 1]",
                "jmp 4f",
                "3:",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "add {c}, 64",
                "add {c1}, 64",
                "4:",
                "2:",
                "tileloadd tmm4, [{a0} + {a_stride} * 1]",
                "tileloadd tmm5, [{a1} + {a_stride} * 1]",
                "tileloadd tmm6, [{b0} + {row} * 1]",
                "tileloadd tmm7, [{b1} + {row} * 1]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{c} + {c_stride} * 1], tmm1",
                "tilestored [{c1} + {c_stride} * 1], tmm3",
                "sub {c}, 64",
                "sub {c1}, 64",
                "tilestored [{c} + {c_stride} * 1], tmm0",
                "tilestored [{c1} + {c_stride} * 1], tmm2",
                a0 = inout(reg) a.first => _,
                a1 = inout(reg) a.second => _,
                a_stride = in(reg) a.stride,
                b0 = inout(reg) b => _,
                b1 = inout(reg) b.add(b_block) => _,
                row = in(reg) 64usize,
                steps = inout(reg) steps => _,
                c = inout(reg) c => _,
                c1 = out(reg) _,
                c_stride = in(reg) 4 * c_row,
                load = in(reg) load,
                options(nostack),
            );
        }
    }

    /// `iterations` groups of four `TDPBSSD` into `tmm0..3` from `tmm4..7`, loaded from the
    /// four consecutive tiles at `tiles` before every group where `streamed`, else once; the
    /// first sum tile is stored to `sums`.
    ///
    /// # Safety
    /// A [`crate::kernels::amx::TileSession`] must be live on this thread, `iterations ≥ 1`,
    /// and `tiles` must hold four 1,024-byte tiles.
    pub(super) unsafe fn ceiling(
        tiles: *const i8,
        streamed: bool,
        iterations: usize,
        sums: &mut [i32; 256],
    ) {
        // SAFETY: the caller's contract; the loads read the four tiles, the store one tile.
        unsafe {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "lea {t1}, [{t0} + 1024]",
                "lea {t2}, [{t0} + 2048]",
                "lea {t3}, [{t0} + 3072]",
                "tileloadd tmm4, [{t0} + {row} * 1]",
                "tileloadd tmm5, [{t1} + {row} * 1]",
                "tileloadd tmm6, [{t2} + {row} * 1]",
                "tileloadd tmm7, [{t3} + {row} * 1]",
                "2:",
                "test {streamed}, {streamed}",
                "jz 3f",
                "tileloadd tmm4, [{t0} + {row} * 1]",
                "tileloadd tmm5, [{t1} + {row} * 1]",
                "tileloadd tmm6, [{t2} + {row} * 1]",
                "tileloadd tmm7, [{t3} + {row} * 1]",
                "3:",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                "dec {iterations}",
                "jnz 2b",
                "tilestored [{sums} + {row} * 1], tmm0",
                t0 = in(reg) tiles,
                t1 = out(reg) _,
                t2 = out(reg) _,
                t3 = out(reg) _,
                row = in(reg) 64usize,
                streamed = in(reg) usize::from(streamed),
                iterations = inout(reg) iterations => _,
                sums = in(reg) sums.as_mut_ptr(),
                options(nostack),
            );
        }
    }
}
