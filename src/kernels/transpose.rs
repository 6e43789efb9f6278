//! Transposes: of a 64 × 64 bit matrix held as 64 `u64` rows, and of a matrix of values by
//! tiles.

use std::ops::Range;

/// The side of the square tiles [`transpose_into`] moves at a time: 16 `i32` (or 64 bytes) is
/// one cache line, so a tile reads 16 lines and writes 16. A multiple of every
/// [`Transposable::BLOCK`].
const TILE: usize = 16;

/// Values [`transpose_into`] moves, with the square block it transposes in registers.
pub(crate) trait Transposable: Copy {
    /// The side of the block.
    const BLOCK: usize;

    /// Writes the transpose of the `BLOCK × BLOCK` block whose rows start at `src`,
    /// `src_stride` values apart, to rows starting at `dst`, `dst_stride` apart.
    ///
    /// # Safety
    /// Every row of the block (`BLOCK` values) must lie inside the allocation `src` points
    /// into, and every row of its transpose inside the one `dst` points into.
    unsafe fn transpose_block(
        src: *const Self,
        src_stride: usize,
        dst: *mut Self,
        dst_stride: usize,
    );
}

/// Writes the transpose of a `rows × cols` matrix into `dst`:
/// `dst[c·dst_stride + r] = src[r·src_stride + c]`, where consecutive rows lie `src_stride`
/// values apart in `src` and `dst_stride` apart in `dst` (at least `cols` and `rows`).
///
/// Tile by tile ([`TILE`] × [`TILE`]), so that neither the reads nor the writes stride through
/// memory a whole row at a time: a plain double loop writes one value per cache line, and with
/// power-of-two strides every line falls in the same cache set. Within a tile, blocks of
/// [`Transposable::BLOCK`] values a side are transposed in vector registers (on x86-64); the
/// rows and columns past the last whole block are moved one value at a time.
///
/// # Panics
/// If `src` or `dst` is too short for the matrix and strides.
pub(crate) fn transpose_into<T: Transposable>(
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
    let block = T::BLOCK;
    let (whole_rows, whole_cols) = (rows - rows % block, cols - cols % block);
    for r0 in (0..whole_rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(whole_rows);
        for c0 in (0..whole_cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(whole_cols);
            // One block row of the destination at a time: its rows fill whole cache lines in
            // order, while the tile's source rows stay in the nearest cache.
            for c in (c0..c1).step_by(block) {
                for r in (r0..r1).step_by(block) {
                    // SAFETY: rows `r .. r + block` and columns `c .. c + block` are inside the
                    // matrix, which the checks above keep inside `src` and `dst`.
                    unsafe {
                        T::transpose_block(
                            src.as_ptr().add(r * src_stride + c),
                            src_stride,
                            dst.as_mut_ptr().add(c * dst_stride + r),
                            dst_stride,
                        );
                    }
                }
            }
        }
    }
    let edges = [
        (whole_rows..rows, 0..cols),
        (0..whole_rows, whole_cols..cols),
    ];
    for (rows, cols) in edges {
        transpose_values(src, src_stride, rows, cols, dst, dst_stride);
    }
}

/// [`transpose_into`] of the part `rows × cols` of the matrix, one value at a time.
fn transpose_values<T: Copy>(
    src: &[T],
    src_stride: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    dst: &mut [T],
    dst_stride: usize,
) {
    for c in cols {
        for r in rows.clone() {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

/// [`Transposable::transpose_block`] one value at a time (targets without the vector blocks).
///
/// # Safety
/// As [`Transposable::transpose_block`].
#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_block_values<T: Copy>(
    block: usize,
    src: *const T,
    src_stride: usize,
    dst: *mut T,
    dst_stride: usize,
) {
    for c in 0..block {
        for r in 0..block {
            // SAFETY: inside the block, as the caller promises.
            unsafe { *dst.add(c * dst_stride + r) = *src.add(r * src_stride + c) };
        }
    }
}

impl Transposable for i32 {
    /// Four `i32` to a 128-bit register.
    const BLOCK: usize = 4;

    unsafe fn transpose_block(
        src: *const i32,
        src_stride: usize,
        dst: *mut i32,
        dst_stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of x86-64; the caller's contract keeps the four loads and
        // stores of 16 bytes inside the operands.
        unsafe {
            x86::transpose_4x4_i32(src, src_stride, dst, dst_stride)
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: the caller's contract.
        unsafe {
            transpose_block_values(Self::BLOCK, src, src_stride, dst, dst_stride)
        }
    }
}

impl Transposable for i8 {
    /// Eight bytes to a 64-bit half of a 128-bit register.
    const BLOCK: usize = 8;

    unsafe fn transpose_block(src: *const i8, src_stride: usize, dst: *mut i8, dst_stride: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of x86-64; the caller's contract keeps the eight loads and
        // stores of 8 bytes inside the operands.
        unsafe {
            x86::transpose_8x8_i8(src, src_stride, dst, dst_stride)
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: the caller's contract.
        unsafe {
            transpose_block_values(Self::BLOCK, src, src_stride, dst, dst_stride)
        }
    }
}

/// The columns of a 16 × 16 matrix of 32-bit words held as 16 rows in registers: word `j` of
/// every row, in row order, is result `j`. Pairs of rows interleaved by 32 then by 64 bits
/// within 128-bit lanes, then two rounds of 128-bit lane shuffles across registers.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn transpose_words16(
    rows: [std::arch::x86_64::__m512i; 16],
) -> [std::arch::x86_64::__m512i; 16] {
    use std::arch::x86_64::*;
    // a[2p], a[2p + 1]: rows 2p and 2p + 1 interleaved by 32 bits.
    let a: [__m512i; 16] = std::array::from_fn(|i| {
        let (x, y) = (rows[i & !1], rows[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(x, y)
        } else {
            _mm512_unpackhi_epi32(x, y)
        }
    });
    // b[4g + j]: in 128-bit lane L, column 4L + j of rows 4g .. 4g + 4.
    let b: [__m512i; 16] = std::array::from_fn(|i| {
        let (g, j) = (i / 4, i % 4);
        let (x, y) = (a[4 * g + j / 2], a[4 * g + 2 + j / 2]);
        if j % 2 == 0 {
            _mm512_unpacklo_epi64(x, y)
        } else {
            _mm512_unpackhi_epi64(x, y)
        }
    });
    let mut columns = [_mm512_setzero_si512(); 16];
    for j in 0..4 {
        // Lanes 0 and 2 (0x88), or 1 and 3 (0xdd), of each source: rows 0–7, then 8–15.
        let c0 = _mm512_shuffle_i32x4::<0x88>(b[j], b[4 + j]);
        let c1 = _mm512_shuffle_i32x4::<0xdd>(b[j], b[4 + j]);
        let c2 = _mm512_shuffle_i32x4::<0x88>(b[8 + j], b[12 + j]);
        let c3 = _mm512_shuffle_i32x4::<0xdd>(b[8 + j], b[12 + j]);
        // Column 4L + j from lane L of each of b[j], b[4 + j], b[8 + j], b[12 + j].
        columns[j] = _mm512_shuffle_i32x4::<0x88>(c0, c2);
        columns[8 + j] = _mm512_shuffle_i32x4::<0xdd>(c0, c2);
        columns[4 + j] = _mm512_shuffle_i32x4::<0x88>(c1, c3);
        columns[12 + j] = _mm512_shuffle_i32x4::<0xdd>(c1, c3);
    }
    columns
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The 4 × 4 block of `i32` at `src` (rows `src_stride` apart) transposed to `dst` (rows
    /// `dst_stride` apart): pairs of rows interleaved by 32 then by 64 bits.
    ///
    /// # Safety
    /// The four rows of four values at `src` must be readable and those at `dst` writable.
    #[inline(always)]
    pub(super) unsafe fn transpose_4x4_i32(
        src: *const i32,
        src_stride: usize,
        dst: *mut i32,
        dst_stride: usize,
    ) {
        // SAFETY: the caller's contract; SSE2 is part of x86-64.
        unsafe {
            let row = |r: usize| _mm_loadu_si128(src.add(r * src_stride).cast());
            let (a, b, c, d) = (row(0), row(1), row(2), row(3));
            // a0 b0 a1 b1 | c0 d0 c1 d1 | a2 b2 a3 b3 | c2 d2 c3 d3
            let ab_low = _mm_unpacklo_epi32(a, b);
            let cd_low = _mm_unpacklo_epi32(c, d);
            let ab_high = _mm_unpackhi_epi32(a, b);
            let cd_high = _mm_unpackhi_epi32(c, d);
            let columns = [
                _mm_unpacklo_epi64(ab_low, cd_low),
                _mm_unpackhi_epi64(ab_low, cd_low),
                _mm_unpacklo_epi64(ab_high, cd_high),
                _mm_unpackhi_epi64(ab_high, cd_high),
            ];
            for (c, column) in columns.into_iter().enumerate() {
                _mm_storeu_si128(dst.add(c * dst_stride).cast(), column);
            }
        }
    }

    /// The 8 × 8 block of bytes at `src` (rows `src_stride` apart) transposed to `dst` (rows
    /// `dst_stride` apart): rows interleaved by 8, 16 then 32 bits, two columns to a register.
    ///
    /// # Safety
    /// The eight rows of eight bytes at `src` must be readable and those at `dst` writable.
    #[inline(always)]
    pub(super) unsafe fn transpose_8x8_i8(
        src: *const i8,
        src_stride: usize,
        dst: *mut i8,
        dst_stride: usize,
    ) {
        // SAFETY: the caller's contract; SSE2 is part of x86-64.
        unsafe {
            let row = |r: usize| _mm_loadl_epi64(src.add(r * src_stride).cast());
            // Pairs of rows, byte by byte: r0[j] r1[j] for j = 0..8, and so on.
            let pairs = [
                _mm_unpacklo_epi8(row(0), row(1)),
                _mm_unpacklo_epi8(row(2), row(3)),
                _mm_unpacklo_epi8(row(4), row(5)),
                _mm_unpacklo_epi8(row(6), row(7)),
            ];
            // Quads: rows 0–3 (then 4–7) of columns 0–3, then of columns 4–7.
            let low_quads = _mm_unpacklo_epi16(pairs[0], pairs[1]);
            let high_quads = _mm_unpackhi_epi16(pairs[0], pairs[1]);
            let low_quads_2 = _mm_unpacklo_epi16(pairs[2], pairs[3]);
            let high_quads_2 = _mm_unpackhi_epi16(pairs[2], pairs[3]);
            // Two whole columns (eight bytes each) per register.
            let column_pairs = [
                _mm_unpacklo_epi32(low_quads, low_quads_2),
                _mm_unpackhi_epi32(low_quads, low_quads_2),
                _mm_unpacklo_epi32(high_quads, high_quads_2),
                _mm_unpackhi_epi32(high_quads, high_quads_2),
            ];
            for (p, two) in column_pairs.into_iter().enumerate() {
                _mm_storel_epi64(dst.add(2 * p * dst_stride).cast(), two);
                let second = _mm_unpackhi_epi64(two, two);
                _mm_storel_epi64(dst.add((2 * p + 1) * dst_stride).cast(), second);
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

    /// [`transpose_into`] against its definition on sizes below, at and past the blocks and
    /// tiles, with strides wider than the rows; the gaps between rows must stay untouched.
    fn check_transpose<T: Transposable + PartialEq + std::fmt::Debug>(
        value: impl Fn(usize) -> T,
        untouched: T,
    ) {
        let shapes = [
            (1, 1, 0, 0),
            (3, 5, 1, 0),
            (4, 4, 0, 0),
            (8, 8, 0, 0),
            (5, 37, 3, 0),
            (16, 16, 0, 0),
            (33, 17, 0, 5),
            (40, 64, 7, 2),
            (128, 8, 896, 0),
            (9, 31, 0, 1),
        ];
        for (rows, cols, src_pad, dst_pad) in shapes {
            let src_stride = cols + src_pad;
            let dst_stride = rows + dst_pad;
            let src: Vec<T> = (0..rows * src_stride).map(&value).collect();
            let mut dst = vec![untouched; cols * dst_stride];
            transpose_into(&src, src_stride, rows, cols, &mut dst, dst_stride);
            for c in 0..cols {
                for r in 0..dst_stride {
                    let expected = if r < rows {
                        src[r * src_stride + c]
                    } else {
                        untouched
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
    fn transposes_values_by_tiles() {
        check_transpose(|v| v as i32 * 7 - 3, i32::MIN);
        check_transpose(|v| ((v * 37 + v / 251) % 255) as i8, i8::MIN);
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
