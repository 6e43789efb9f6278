//! Left operands read where they lie: rows made of equal stretches of one buffer (the taps of
//! an image on its padded grid), which the VNNI kernel reads in place, the AMX kernel copies a
//! block of rows at a time (or loads in place where each row is one stretch on cache lines),
//! and the other paths copy into rows first.

use super::{Layout, Rhs, amx, gemm_accumulate_rhs, vnni};

/// The rows of a left operand `[m, k]` in a buffer: row `i` is `offsets.len()` stretches of
/// `run` values, stretch `s` at `base[starts[i] + offsets[s]..]`, then zeros up to `k`.
pub(crate) struct RowsIn<'a> {
    /// The buffer the stretches lie in.
    pub(crate) base: &'a [i8],
    /// Where each row's stretches are measured from (`m` of them).
    pub(crate) starts: &'a [usize],
    /// Each stretch's offset from its row's start.
    pub(crate) offsets: &'a [usize],
    /// Values a stretch.
    pub(crate) run: usize,
}

impl RowsIn<'_> {
    /// Rows `m`.
    pub(crate) fn rows(&self) -> usize {
        self.starts.len()
    }

    /// Values of a row before its zeros.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len() * self.run
    }

    /// Panics unless every stretch lies in `base` and a row's stretches fit in `k` values.
    fn check(&self, k: usize) {
        assert!(
            self.len() <= k,
            "int8 gemm: rows of {} values do not fit k = {k}",
            self.len()
        );
        if self.offsets.is_empty() {
            return;
        }
        let furthest = self.offsets.iter().max().copied().unwrap_or(0);
        for &start in self.starts {
            let end = start
                .checked_add(furthest)
                .and_then(|v| v.checked_add(self.run));
            assert!(
                end.is_some_and(|end| end <= self.base.len()),
                "int8 gemm: a row's stretch from {start} + {furthest} runs past the buffer's {} values",
                self.base.len()
            );
        }
    }

    /// Row `i` copied into `row` (`k` values: the stretches, then zeros).
    pub(super) fn copy_row(&self, i: usize, row: &mut [i8]) {
        let (stretches, zeros) = row.split_at_mut(self.len());
        let start = self.starts[i];
        for (to, &offset) in stretches
            .chunks_exact_mut(self.run.max(1))
            .zip(self.offsets)
        {
            to.copy_from_slice(&self.base[start + offset..][..self.run]);
        }
        zeros.fill(0);
    }

    /// Where each group of four values of a row lies, from the row's start: the whole groups
    /// first, then the values of a last partial one (only with one stretch), or `None` where a
    /// group would straddle two stretches.
    pub(crate) fn groups(&self) -> Option<(Vec<usize>, usize)> {
        let run = self.run;
        if self.offsets.len() > 1 && !run.is_multiple_of(4) {
            return None;
        }
        let whole = self.len() / 4;
        let mut groups: Vec<usize> = (0..whole)
            .map(|g| self.offsets[4 * g / run] + 4 * g % run)
            .collect();
        let partial = self.len() % 4;
        if partial > 0 {
            groups.push(self.offsets[0] + 4 * whole);
        }
        Some((groups, partial))
    }
}

/// `out[i·n + j] += Σ_t a[i, t] · rhs[j, t]` with `a`'s rows as `rows` describes them: read in
/// place where `rhs` is laid out for AVX-512 VNNI and no group of four values straddles two
/// stretches; on AMX, copied 32 rows at a time onto cache lines (or, where each row is one
/// stretch of `k` values, tiles of rows equally far apart on cache lines are loaded where they
/// lie); else copied into `scratch` first, a block of rows at a time (`scratch` keeps its
/// memory for the next call).
///
/// # Panics
/// If a stretch lies outside the buffer, a row is longer than `rhs`'s `k`, or `out` does not
/// hold `[m, n]`.
pub(crate) fn gemm_accumulate_rows_in(
    rows: &RowsIn<'_>,
    rhs: &Rhs,
    out: &mut [i32],
    scratch: &mut Vec<i8>,
) {
    let (m, n, k) = (rows.rows(), rhs.n, rhs.k);
    rows.check(k);
    assert_eq!(
        Some(out.len()),
        m.checked_mul(n),
        "int8 gemm: output should hold [m, n] = [{m}, {n}]"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    if let Layout::Vnni(panels) = &rhs.layout
        && let Some((groups, partial)) = rows.groups()
    {
        vnni::gemm_accumulate_in_place(rhs.isa, rows, &groups, partial, panels, out);
        return;
    }
    if let Layout::Amx(tiles) = &rhs.layout {
        amx::gemm_accumulate_rows_in(rhs.isa, rows, tiles, out);
        return;
    }
    // Blocks of rows small enough to stay in L2 while the product reads them.
    let block = (COPIED_BYTES / k).clamp(1, m);
    scratch.resize(block * k, 0);
    for first in (0..m).step_by(block) {
        let count = block.min(m - first);
        let a = &mut scratch[..count * k];
        for (i, row) in a.chunks_exact_mut(k).enumerate() {
            rows.copy_row(first + i, row);
        }
        gemm_accumulate_rhs(a, rhs, count, &mut out[first * n..(first + count) * n]);
    }
}

/// Bytes of rows [`gemm_accumulate_rows_in`] copies out at a time where it cannot read them in
/// place (one row at least).
#[cfg(not(test))]
const COPIED_BYTES: usize = 256 << 10;
/// Small in the tests, so that their few rows are copied in several blocks.
#[cfg(test)]
const COPIED_BYTES: usize = 512;

#[cfg(test)]
mod tests {
    use super::super::{CheckedInt8, Int8Isa};
    use super::*;

    /// On every path, the product of rows read where they lie equals the product of the rows
    /// copied out: one stretch of an odd length (a partial last group), stretches of a
    /// multiple of four values (read in place on VNNI), and stretches of an odd length
    /// (straddling groups: copied on every path), with zeros after the stretches. Single
    /// stretches of `k` values also cover AMX's tiles, from a buffer on a cache line: loaded in
    /// place (rows equally far apart on cache lines in each tile, the two tiles of a block
    /// equally strided) or copied (a partial block, tiles strided differently, rows off cache
    /// lines, a tile whose whole steps run past the buffer).
    #[test]
    fn rows_in_place_are_the_copied_rows() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut lines = crate::kernels::amx::Lines::zeros(5000);
        let base = &mut lines.view_mut::<i8>()[..5000];
        base.iter_mut().for_each(|v| *v = next() as i8);
        let base = &*base;
        /// Row starts, stretch offsets, stretch length, `k`, read in place on VNNI.
        type Case = (Vec<usize>, Vec<usize>, usize, usize, bool);
        // Tiles of 16 rows, each equally strided, from these starts.
        let tiles = |tiles: &[(usize, usize)]| -> Vec<usize> {
            let rows = tiles
                .iter()
                .flat_map(|&(first, stride)| (0..16).map(move |i| first + i * stride));
            rows.collect()
        };
        let cases: [Case; 8] = [
            (
                (0..37).map(|i| 3 * i + 1).collect(),
                vec![0],
                131,
                131,
                true,
            ),
            (
                (0..19).map(|i| 7 * i).collect(),
                vec![0, 1000, 2001],
                96,
                320,
                true,
            ),
            (
                (0..9).map(|i| 5 * i + 2).collect(),
                vec![0, 333, 700],
                13,
                64,
                false,
            ),
            // In place, in place, then a partial block.
            (
                [
                    tiles(&[(0, 128), (2048, 128), (2944, 64), (1024, 64)]),
                    tiles(&[(7, 3)]),
                ]
                .concat(),
                vec![0],
                200,
                200,
                true,
            ),
            // One stretch away from the rows' starts, in place.
            (tiles(&[(0, 64), (1024, 64)]), vec![640], 100, 100, true),
            // Tiles of one block strided differently.
            (tiles(&[(0, 128), (2560, 64)]), vec![0], 130, 130, true),
            // Rows off cache lines.
            (tiles(&[(1, 128), (2049, 128)]), vec![0], 130, 130, true),
            // The second tile's last steps run past the buffer.
            (tiles(&[(0, 64), (3904, 64)]), vec![0], 130, 130, true),
        ];
        for (starts, offsets, run, k, in_place) in cases {
            let rows = RowsIn {
                base,
                starts: &starts,
                offsets: &offsets,
                run,
            };
            assert_eq!(rows.groups().is_some(), in_place);
            let m = starts.len();
            let mut copied = vec![0i8; m * k];
            for (i, row) in copied.chunks_exact_mut(k).enumerate() {
                rows.copy_row(i, row);
            }
            let n = 21;
            let b: Vec<i8> = (0..n * k).map(|_| next() as i8).collect();
            let expected: Vec<i32> = (0..m * n)
                .map(|at| {
                    let (i, j) = (at / n, at % n);
                    (0..k)
                        .map(|t| i32::from(copied[i * k + t]) * i32::from(b[j * k + t]))
                        .sum()
                })
                .collect();
            for isa in Int8Isa::available() {
                let rhs = Rhs::new(CheckedInt8::new(isa), &b, n, k);
                let mut out = vec![5i32; m * n];
                gemm_accumulate_rows_in(&rows, &rhs, &mut out, &mut Vec::new());
                let expected: Vec<i32> = expected.iter().map(|v| v + 5).collect();
                assert_eq!(out, expected, "{isa:?}, stretches of {run}, k = {k}");
            }
        }
    }
}
