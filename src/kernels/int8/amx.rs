//! The int8 products on AMX: `TDPBSSD` multiplies a 16 × 64 tile of `a` by a 64 × 16 tile of
//! `b` into a 16 × 16 tile of `i32` sums in one instruction.
//!
//! The operands are copied, zero-padded to whole tiles, into the layouts the tiles load: `a`
//! row-major with its rows padded to a multiple of 64 bytes, and `b` in AMX's "VNNI" layout,
//! where row `r` of the tile for columns `j0 .. j0 + 16` and sums `t0 .. t0 + 64` holds
//! `b[j0 + c, t0 + 4r + q]` at byte `4c + q`. A 2 × 2 block of `i32` tiles (32 rows of `a` by
//! 32 of `b`) stays in tile registers over the whole sum. What the AMX paths share (the
//! permission, the tile shape) is in [`crate::kernels::amx`].

use super::CheckedInt8;
use crate::kernels::amx::{self, AmxUnit};

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
/// Rows of `a` and of `b` in the 2 × 2 block of tiles a micro-kernel call computes.
const BLOCK: usize = 2 * TILE_ROWS;

/// `b` `[n, k]` in the tiles' VNNI layout: for each block of 16 rows of `b` and each step of 64
/// summed values, a 16 × 64-byte tile whose row `r` holds, for each of the 16 rows `c`, the
/// four values `4r .. 4r + 4` of the step at bytes `4c .. 4c + 4`; zero beyond `n` and `k`,
/// rows up to a whole [`BLOCK`].
pub(super) struct Tiles {
    n: usize,
    k: usize,
    tiles: Vec<i8>,
}

impl Tiles {
    /// `b` `[n, k]` (length checked by the caller, `k > 0`) in tiles.
    pub(super) fn new(b: &[i8], n: usize, k: usize) -> Tiles {
        let steps = k.div_ceil(TILE_DEPTH);
        let padded_n = n.next_multiple_of(BLOCK);
        let tile = TILE_ROWS * TILE_DEPTH;
        let mut tiles = vec![0i8; padded_n / TILE_ROWS * steps * tile];
        for (j, row) in b.chunks_exact(k).enumerate().take(n) {
            let (block, c) = (j / TILE_ROWS, j % TILE_ROWS);
            for (group, quad) in row.chunks(4).enumerate() {
                let (step, r) = (group / TILE_ROWS, group % TILE_ROWS);
                let at = (block * steps + step) * tile + r * TILE_DEPTH + 4 * c;
                tiles[at..at + quad.len()].copy_from_slice(quad);
            }
        }
        Tiles { n, k, tiles }
    }
}

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` with `b` in `b_tiles` (lengths checked by the
/// caller).
pub(super) fn gemm_accumulate(
    isa: CheckedInt8,
    a: &[i8],
    b_tiles: &Tiles,
    m: usize,
    out: &mut [i32],
) {
    assert_eq!(
        isa.isa(),
        super::Int8Isa::Amx,
        "the AMX int8 kernel needs AMX"
    );
    let Tiles {
        n,
        k,
        tiles: b_tiles,
    } = b_tiles;
    let (n, k) = (*n, *k);
    let steps = k.div_ceil(TILE_DEPTH);
    let depth = steps * TILE_DEPTH;
    // Operands already in whole tiles are read in place.
    let padded;
    let a_tiles = if depth == k && m.is_multiple_of(BLOCK) {
        a
    } else {
        padded = pad_rows(a, m, k, m.next_multiple_of(BLOCK), depth);
        &padded
    };
    let b_block = steps * TILE_ROWS * TILE_DEPTH;
    let mut sums = [0i32; BLOCK * BLOCK];
    for i0 in (0..m).step_by(BLOCK) {
        for j0 in (0..n).step_by(BLOCK) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` proves this process may run AMX int8; `a_tiles` holds 32 padded rows
            // of `depth` bytes from row i0, `b_tiles` two column blocks of `steps` tiles from
            // column j0, and `sums` a 32 × 32 block.
            unsafe {
                x86::block_2x2(
                    a_tiles[i0 * depth..].as_ptr(),
                    depth,
                    b_tiles[j0 / TILE_ROWS * b_block..].as_ptr(),
                    b_block,
                    steps,
                    &mut sums,
                );
            }
            let rows = BLOCK.min(m - i0);
            let cols = BLOCK.min(n - j0);
            for (r, block_row) in sums.chunks_exact(BLOCK).take(rows).enumerate() {
                let out_row = &mut out[(i0 + r) * n + j0..][..cols];
                for (out, &sum) in out_row.iter_mut().zip(block_row) {
                    *out += sum;
                }
            }
        }
    }
}

/// `values` `[rows, len]` copied into `[padded_rows, depth]`, zero beyond.
fn pad_rows(values: &[i8], rows: usize, len: usize, padded_rows: usize, depth: usize) -> Vec<i8> {
    let mut padded = vec![0i8; padded_rows * depth];
    for (dst, src) in padded
        .chunks_exact_mut(depth)
        .zip(values.chunks_exact(len))
        .take(rows)
    {
        dst[..len].copy_from_slice(src);
    }
    padded
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// The 32 × 32 block of sums of 32 rows of `a` (from `a`, `a_stride` bytes apart, `steps`
    /// tiles deep) against two column blocks of `b` tiles (from `b`, `b_block` bytes apart, each
    /// `steps` consecutive 1,024-byte tiles), written row-major to `sums`. Tiles (of
    /// [`crate::kernels::amx::FULL_TILES`]): `tmm0..3` the 2 × 2 sums, `tmm4, 5` two tiles of
    /// `a`, `tmm6, 7` two tiles of `b`.
    ///
    /// # Safety
    /// The process must be allowed AMX int8 (CPU support and Linux's permission), `steps ≥ 1`,
    /// `a` must hold 32 rows of `a_stride ≥ 64·steps` bytes and `b` two blocks of
    /// `b_block ≥ 1024·steps` bytes.
    pub(super) unsafe fn block_2x2(
        a: *const i8,
        a_stride: usize,
        b: *const i8,
        b_block: usize,
        steps: usize,
        sums: &mut [i32; 1024],
    ) {
        // SAFETY: the caller's contract; every tile load and store stays inside the operands
        // and `sums` (4 tiles of 16 rows × 64 bytes, rows 128 bytes apart).
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{config}]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
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
                "mov {a0}, {sums}",
                "tilestored [{a0} + {sum_stride} * 1], tmm0",
                "add {a0}, 64",
                "tilestored [{a0} + {sum_stride} * 1], tmm1",
                "lea {a0}, [{sums} + 2048]",
                "tilestored [{a0} + {sum_stride} * 1], tmm2",
                "add {a0}, 64",
                "tilestored [{a0} + {sum_stride} * 1], tmm3",
                "tilerelease",
                config = in(reg) &crate::kernels::amx::FULL_TILES,
                a0 = inout(reg) a => _,
                a1 = inout(reg) a.add(16 * a_stride) => _,
                a_stride = in(reg) a_stride,
                b0 = inout(reg) b => _,
                b1 = inout(reg) b.add(b_block) => _,
                row = in(reg) 64usize,
                steps = inout(reg) steps => _,
                sums = in(reg) sums.as_mut_ptr(),
                sum_stride = in(reg) 128usize,
                options(nostack),
            );
        }
    }
}
