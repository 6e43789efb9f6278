//! Transposes: of a 64 × 64 bit matrix held as 64 `u64` rows, and of a matrix of values by
//! tiles.

/// The side of the square tiles [`transpose_into`] moves at a time: 16 `i32` (or 64 bytes) is
/// one cache line, so a tile reads 16 lines and writes 16.
const TILE: usize = 16;

/// Writes the transpose of a `rows × cols` matrix into `dst`:
/// `dst[c·dst_stride + r] = src[r·src_stride + c]`, where consecutive rows lie `src_stride`
/// values apart in `src` and `dst_stride` apart in `dst` (at least `cols` and `rows`).
///
/// Tile by tile ([`TILE`] × [`TILE`]), so that neither the reads nor the writes stride through
/// memory a whole row at a time: a plain double loop writes one value per cache line, and with
/// power-of-two strides every line falls in the same cache set. Within a tile the writes go in
/// order, one destination row after the other.
///
/// # Panics
/// If `src` or `dst` is too short for the matrix and strides.
pub(crate) fn transpose_into<T: Copy>(
    src: &[T],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [T],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src_stride >= cols && dst_stride >= rows,
        "transpose: strides {src_stride} and {dst_stride} shorter than a row ({cols}, {rows})"
    );
    assert!(
        src.len() > (rows - 1) * src_stride + cols - 1
            && dst.len() > (cols - 1) * dst_stride + rows - 1,
        "transpose: {rows} × {cols} values do not fit {} and {} values",
        src.len(),
        dst.len()
    );
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            // One destination row at a time: its values fill one or two cache lines in
            // order, while the tile's source rows stay in the nearest cache.
            for c in c0..c1 {
                let column = src[r0 * src_stride + c..].iter().step_by(src_stride);
                let out = &mut dst[c * dst_stride + r0..c * dst_stride + r1];
                for (value, &source) in out.iter_mut().zip(column) {
                    *value = source;
                }
            }
        }
    }
}

/// Transposes `x` in place: afterwards bit `c` of `x[r]` is what bit `r` of `x[c]` was.
///
/// Six rounds; round `j` (32, 16, …, 1) swaps bit `j` of the row index with bit `j` of the column
/// index, exchanging the high half-block of row `r` with the low half-block of row `r + j`.
#[inline]
pub(crate) fn transpose64(x: &mut [u64; 64]) {
    swap_blocks::<32>(x, 0x0000_0000_FFFF_FFFF);
    swap_blocks::<16>(x, 0x0000_FFFF_0000_FFFF);
    swap_blocks::<8>(x, 0x00FF_00FF_00FF_00FF);
    swap_blocks::<4>(x, 0x0F0F_0F0F_0F0F_0F0F);
    swap_blocks::<2>(x, 0x3333_3333_3333_3333);
    swap_blocks::<1>(x, 0x5555_5555_5555_5555);
}

/// One round: for rows `r` with bit `J` clear, swaps the bits of `x[r]` at columns with bit `J`
/// set (`mask` selects those with it clear) with the bits of `x[r + J]` at columns with it clear.
#[inline]
fn swap_blocks<const J: usize>(x: &mut [u64; 64], mask: u64) {
    for pair in x.chunks_exact_mut(2 * J) {
        let (lo, hi) = pair.split_at_mut(J);
        for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
            let t = ((*l >> J) ^ *h) & mask;
            *l ^= t << J;
            *h ^= t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_values_by_tiles() {
        // Sizes below, at and past the tile, and strides wider than the rows.
        for (rows, cols, src_pad, dst_pad) in [
            (1, 1, 0, 0),
            (5, 37, 3, 0),
            (16, 16, 0, 0),
            (33, 17, 0, 5),
            (40, 64, 7, 2),
        ] {
            let src_stride = cols + src_pad;
            let dst_stride = rows + dst_pad;
            let src: Vec<i32> = (0..rows * src_stride).map(|v| v as i32 * 7 - 3).collect();
            let mut dst = vec![i32::MIN; cols * dst_stride];
            transpose_into(&src, src_stride, rows, cols, &mut dst, dst_stride);
            for c in 0..cols {
                for r in 0..dst_stride {
                    let expected = if r < rows {
                        src[r * src_stride + c]
                    } else {
                        i32::MIN // the gap between rows is left alone
                    };
                    assert_eq!(
                        dst[c * dst_stride + r],
                        expected,
                        "{rows}×{cols}: ({c}, {r})"
                    );
                }
            }
        }
    }

    #[test]
    fn transposes_bits() {
        let mut x = [0u64; 64];
        let mut state = 0x1234_5678_9abc_def1u64;
        for row in x.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *row = state;
        }
        let before = x;
        transpose64(&mut x);
        for (r, row) in x.iter().enumerate() {
            for (c, original) in before.iter().enumerate() {
                assert_eq!((row >> c) & 1, (original >> r) & 1, "({r}, {c})");
            }
        }
    }
}
