//! The int8 products in portable Rust, bit-serially, as the paper computes gradients with
//! bit-wise operations only.
//!
//! Each operand is split into its positive and negative parts, `v = P − N` with
//! `P = max(v, 0)` and `N = max(−v, 0)`, and each part is held as bit planes, 64 values to a
//! word. With `|x|` the popcount of `x` and `P_p` the plane of bit `p`,
//!
//! `Σ_t a_t·b_t = Σ_p Σ_q 2^(p+q) (|aP_p ∧ bP_q| + |aN_p ∧ bN_q| − |aP_p ∧ bN_q| − |aN_p ∧ bP_q|)`.
//!
//! Only the planes an operand uses are kept: a ±1 operand has one plane per part and a `K`-bit
//! gradient code (magnitude below `2^(K−1)`) `K − 1`, so a product of signs and 6-bit codes
//! takes `2 · 2 · 5 = 20` AND-popcounts per 64 terms. The counts are summed in `i64`, and the
//! result, which the caller's bound on `k` keeps within `i32`, is exact.

/// One operand `[rows, k]` as bit planes: for each row, word `w` of values `64w .. 64w + 64` and
/// part (`P` then `N`), the word of each plane `p`, whose bit `t % 64` is bit `p` of that part
/// of value `t`.
pub(super) struct Planes {
    /// Planes per part: the bits of the largest magnitude (0 for an all-zero operand).
    planes: usize,
    /// Words per plane, `⌈k / 64⌉`.
    words: usize,
    /// `[rows][words][2][planes]`.
    bits: Vec<u64>,
}

impl Planes {
    /// `values` `[rows, k]` (length checked by the caller) as bit planes.
    pub(super) fn new(values: &[i8], rows: usize, k: usize) -> Planes {
        let largest = values.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
        let planes = (u8::BITS - largest.leading_zeros()) as usize;
        let words = k.div_ceil(64);
        let mut bits = vec![0u64; rows * words * 2 * planes];
        if planes > 0 {
            let chunks = values.chunks_exact(k).flat_map(|row| row.chunks(64));
            for (chunk, word) in chunks.zip(bits.chunks_exact_mut(2 * planes)) {
                for (t, &value) in chunk.iter().enumerate() {
                    let part = &mut word[usize::from(value < 0) * planes..][..planes];
                    let magnitude = value.unsigned_abs();
                    for (p, plane) in part.iter_mut().enumerate() {
                        *plane |= u64::from((magnitude >> p) & 1) << t;
                    }
                }
            }
        }
        Planes {
            planes,
            words,
            bits,
        }
    }

    /// The planes of row `row`, `[words][2][planes]`.
    #[inline(always)]
    fn row(&self, row: usize) -> &[u64] {
        let len = self.words * 2 * self.planes;
        &self.bits[row * len..(row + 1) * len]
    }

    /// `Σ_t a_t·b_t` for row `i` of `self` and row `j` of `other` (the same `k`).
    #[inline(always)]
    fn dot(&self, i: usize, other: &Planes, j: usize) -> i32 {
        let sum = match (self.planes, other.planes) {
            (0, _) | (_, 0) => 0,
            (_, 1) => dot_signs(self.row(i), self.planes, other.row(j)),
            (1, _) => dot_signs(other.row(j), other.planes, self.row(i)),
            _ => dot_planes(self.row(i), self.planes, other.row(j), other.planes),
        };
        i32::try_from(sum).expect("the caller bounds k so that every sum fits in an i32")
    }
}

/// `Σ_t a_t·b_t` for a row `a` of `planes` planes a part and a row `signs` of one plane a part
/// (values in `{−1, 0, 1}`): per word, `Σ_p 2^p (|aP_p ∧ bP| + |aN_p ∧ bN| − |aP_p ∧ bN| −
/// |aN_p ∧ bP|)`.
#[inline(always)]
fn dot_signs(a: &[u64], planes: usize, signs: &[u64]) -> i64 {
    let mut sum = 0i64;
    for (word, sign) in a.chunks_exact(2 * planes).zip(signs.chunks_exact(2)) {
        let (positive, negative) = word.split_at(planes);
        let (plus, minus) = (sign[0], sign[1]);
        for (p, (&x, &y)) in positive.iter().zip(negative).enumerate() {
            let same = (x & plus).count_ones() + (y & minus).count_ones();
            let opposite = (x & minus).count_ones() + (y & plus).count_ones();
            sum += (i64::from(same) - i64::from(opposite)) << p;
        }
    }
    sum
}

/// `Σ_t a_t·b_t` for rows of any number of planes: every pair of planes, weighed by
/// `± 2^(p+q)` (`+` where the parts agree).
fn dot_planes(a: &[u64], a_planes: usize, b: &[u64], b_planes: usize) -> i64 {
    let mut sum = 0i64;
    for (a_word, b_word) in a
        .chunks_exact(2 * a_planes)
        .zip(b.chunks_exact(2 * b_planes))
    {
        for (a_index, &x) in a_word.iter().enumerate() {
            let (a_part, p) = (a_index / a_planes, a_index % a_planes);
            for (b_index, &y) in b_word.iter().enumerate() {
                let (b_part, q) = (b_index / b_planes, b_index % b_planes);
                let term = i64::from((x & y).count_ones()) << (p + q);
                // P·P and N·N add; P·N and N·P subtract.
                sum += if a_part == b_part { term } else { -term };
            }
        }
    }
    sum
}

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` with `b` as `b_planes` (lengths checked by the
/// caller).
pub(super) fn gemm_accumulate(
    a: &[i8],
    b_planes: &Planes,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
) {
    let a_planes = Planes::new(a, m, k);
    let out = &mut out[..m * n];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has POPCNT.
        unsafe { products_with_popcnt(&a_planes, b_planes, n, out) };
        return;
    }
    products(&a_planes, b_planes, n, out);
}

/// `out[i·n + j] += a_i · b_j` over the rows of `a` and `b`.
#[inline(always)]
fn products(a: &Planes, b: &Planes, n: usize, out: &mut [i32]) {
    for (i, out_row) in out.chunks_exact_mut(n).enumerate() {
        for (j, out) in out_row.iter_mut().enumerate() {
            *out += a.dot(i, b, j);
        }
    }
}

/// [`products`] compiled with the popcount instruction, which x86-64's baseline lacks (without
/// it, each popcount is a dozen shifts and masks).
///
/// # Safety
/// The CPU must have POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn products_with_popcnt(a: &Planes, b: &Planes, n: usize, out: &mut [i32]) {
    products(a, b, n, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_hold_each_part_in_the_fewest_bits() {
        // Magnitudes up to 5: three planes a part; −128's magnitude needs all eight.
        let values = [3i8, -5, 0, 1, -1];
        let planes = Planes::new(&values, 1, 5);
        assert_eq!(planes.planes, 3);
        let bit = |part: usize, plane: usize, t: usize| (planes.row(0)[part * 3 + plane] >> t) & 1;
        // 3 = 0b011 in P; −5 = −0b101 in N; −1 in N's plane 0.
        assert_eq!([bit(0, 0, 0), bit(0, 1, 0), bit(0, 2, 0)], [1, 1, 0]);
        assert_eq!([bit(1, 0, 1), bit(1, 1, 1), bit(1, 2, 1)], [1, 0, 1]);
        assert_eq!([bit(0, 0, 4), bit(1, 0, 4)], [0, 1]);
        assert_eq!(Planes::new(&[-128, 127], 1, 2).planes, 8);
        assert_eq!(Planes::new(&[0, 0], 2, 1).planes, 0);
    }

    #[test]
    fn every_plane_count_gives_the_integer_sum() {
        // Signs against codes (either side), codes against codes, over two words and a tail.
        let k = 150;
        // Values over the whole range, in a different order for each scale.
        let value =
            |t: usize, scale: i32| (((t * 37 + 11 * scale as usize) % 255) as i32 - 127) / scale;
        let operands: Vec<Vec<i8>> = [1, 4, 64, 128]
            .iter()
            .map(|&scale| (0..k).map(|t| value(t, scale) as i8).collect())
            .chain([(0..k).map(|t| if t % 3 == 0 { -1 } else { 1 }).collect()])
            .collect();
        for a in &operands {
            for b in &operands {
                let expected: i32 = a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum();
                let (pa, pb) = (Planes::new(a, 1, k), Planes::new(b, 1, k));
                assert_eq!(
                    pa.dot(0, &pb, 0),
                    expected,
                    "{} × {} planes",
                    pa.planes,
                    pb.planes
                );
            }
        }
    }
}
