//! Transpose of a 64 × 64 bit matrix held as 64 `u64` rows.

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
