//! The portable register tile: `count_ones` on `u64` words, for any target.

use super::engine::{BitOp, Panel, TileKernel};

/// The portable kernel (2 × 4 tiles of scalar accumulators).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl TileKernel for Portable {
    const MR: usize = 2;
    const NR: usize = 4;

    fn panel(self, panel: &Panel<'_>, counts: &mut [u32], cstride: usize, accumulate: bool) {
        panel.check(Self::MR, counts, cstride);
        let mut c0 = 0;
        while c0 < panel.nc {
            let nr = Self::NR.min(panel.nc - c0);
            let sums = match (panel.mr, nr) {
                (2, 4) => spread(block::<2, 4>(panel, c0)),
                (1, 4) => spread(block::<1, 4>(panel, c0)),
                (mr, nr) => pairwise(panel, c0, mr, nr),
            };
            for (r, row) in sums.iter().enumerate().take(panel.mr) {
                let dst = &mut counts[r * cstride + c0..r * cstride + c0 + nr];
                for (d, &s) in dst.iter_mut().zip(row) {
                    *d = if accumulate { *d + s } else { s };
                }
            }
            c0 += nr;
        }
    }
}

/// Widens an `MR × NR` block of sums to the full tile shape.
fn spread<const MR: usize, const NR: usize>(sums: [[u32; NR]; MR]) -> [[u32; 4]; 2] {
    let mut full = [[0; 4]; 2];
    for (dst, src) in full.iter_mut().zip(&sums) {
        dst[..NR].copy_from_slice(src);
    }
    full
}

/// The popcounts of a full-width tile at column `c0`, word by word, with `MR × NR` accumulators.
fn block<const MR: usize, const NR: usize>(panel: &Panel<'_>, c0: usize) -> [[u32; NR]; MR] {
    let a: [&[u64]; MR] = std::array::from_fn(|r| row(panel.a, r, panel));
    let b: [&[u64]; NR] = std::array::from_fn(|c| row(panel.b, c0 + c, panel));
    let mut acc = [[0u32; NR]; MR];
    for w in 0..panel.words.len() {
        for (c, bc) in b.iter().enumerate() {
            for (r, ar) in a.iter().enumerate() {
                acc[r][c] += panel.op.apply(ar[w], bc[w]).count_ones();
            }
        }
    }
    acc
}

/// The popcounts of an edge tile at column `c0`, one pair of rows at a time.
fn pairwise(panel: &Panel<'_>, c0: usize, mr: usize, nr: usize) -> [[u32; 4]; 2] {
    let mut sums = [[0; 4]; 2];
    for (r, sums_row) in sums.iter_mut().enumerate().take(mr) {
        let ar = row(panel.a, r, panel);
        for (c, sum) in sums_row.iter_mut().enumerate().take(nr) {
            *sum = dot(panel.op, ar, row(panel.b, c0 + c, panel));
        }
    }
    sums
}

/// Row `r` of `rows`, cut to the panel's words.
fn row<'a>(rows: &'a [u64], r: usize, panel: &Panel<'_>) -> &'a [u64] {
    let start = r * panel.stride;
    &rows[start + panel.words.start..start + panel.words.end]
}

/// `Σ popcount(op(a_w, b_w))`.
fn dot(op: BitOp, a: &[u64], b: &[u64]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| op.apply(x, y).count_ones())
        .sum()
}
