//! Bit-serial GEMM of unsigned codes stored as bit planes.
//!
//! Both products are popcount GEMMs of `a AND b` over the planes (see the `engine` module): the
//! planes of an output row are consecutive packed rows, so the register tiles of the XNOR GEMM
//! run over them unchanged, and a per-element epilogue weighs the plane counts by powers of two
//! in exact `i64` arithmetic.

use super::{
    engine::{self, BitOp, Problem},
    isa::active_isa,
    words_per_row,
};

/// `out[i·n + j] = Σ_t a[i, t] · s[j, t]`: unsigned `a_bits`-bit codes (bit planes, `m` rows)
/// times ±1 signs (`n` packed rows): `Σ_p 2^p (popcount(a_i^p) − 2·popcount(a_i^p AND b_j))`.
pub fn bitserial_binary_gemm(
    a: &[u64],
    a_bits: u32,
    b: &[u64],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let isa = active_isa();
    let words = words_per_row(k);
    let planes = a_bits as usize;
    super::check_len(
        "bitserial_binary_gemm: lhs length",
        a.len(),
        &[m, planes, words],
    );
    super::check_len("bitserial_binary_gemm: rhs length", b.len(), &[n, words]);
    super::check_len("bitserial_binary_gemm: output length", out.len(), &[m, n]);
    let totals = weighted_plane_counts(a, m, planes, words);
    let problem = Problem {
        op: BitOp::And,
        a,
        a_planes: planes,
        m,
        b,
        b_planes: 1,
        n,
        words,
    };
    engine::run(isa, &problem, out, |i, counts: &[u32], cstride, out| {
        for (c0, chunk) in (0..)
            .step_by(EPILOGUE_CHUNK)
            .zip(out.chunks_mut(EPILOGUE_CHUNK))
        {
            let mut negative = [0i64; EPILOGUE_CHUNK];
            for p in 0..planes {
                let row = &counts[p * cstride + c0..p * cstride + c0 + chunk.len()];
                for (acc, &ones) in negative.iter_mut().zip(row) {
                    *acc += i64::from(ones) << p;
                }
            }
            for (o, &neg) in chunk.iter_mut().zip(&negative) {
                *o = (totals[i] - 2 * neg) as f32;
            }
        }
    });
}

/// Output columns the epilogues weigh together, plane by plane (vectorisable).
const EPILOGUE_CHUNK: usize = 64;

/// `Σ_p 2^p popcount(a_i^p)` for each of the `m` rows `i` of `planes` planes of `words` words.
fn weighted_plane_counts(a: &[u64], m: usize, planes: usize, words: usize) -> Vec<i64> {
    if planes == 0 || words == 0 {
        return vec![0; m];
    }
    a.chunks(planes * words)
        .map(|row| {
            row.chunks(words)
                .enumerate()
                .map(|(p, plane)| {
                    let ones: u32 = plane.iter().map(|w| w.count_ones()).sum();
                    i64::from(ones) << p
                })
                .sum()
        })
        .collect()
}

/// `out[i·n + j] = Σ_t a[i, t] · b[j, t]` for unsigned codes of `a_bits` and `b_bits` bits, both
/// as bit planes: `Σ_p Σ_q 2^(p+q) popcount(a_i^p AND b_j^q)`.
#[allow(clippy::too_many_arguments)]
pub fn bitserial_gemm(
    a: &[u64],
    a_bits: u32,
    b: &[u64],
    b_bits: u32,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let isa = active_isa();
    let words = words_per_row(k);
    let (pa, pb) = (a_bits as usize, b_bits as usize);
    super::check_len("bitserial_gemm: lhs length", a.len(), &[m, pa, words]);
    super::check_len("bitserial_gemm: rhs length", b.len(), &[n, pb, words]);
    super::check_len("bitserial_gemm: output length", out.len(), &[m, n]);
    let problem = Problem {
        op: BitOp::And,
        a,
        a_planes: pa,
        m,
        b,
        b_planes: pb,
        n,
        words,
    };
    engine::run(isa, &problem, out, |_, counts: &[u32], cstride, out| {
        for (c0, chunk) in (0..)
            .step_by(EPILOGUE_CHUNK)
            .zip(out.chunks_mut(EPILOGUE_CHUNK))
        {
            let mut sums = [0i64; EPILOGUE_CHUNK];
            for p in 0..pa {
                let row = &counts[p * cstride + c0 * pb..p * cstride + (c0 + chunk.len()) * pb];
                for q in 0..pb {
                    for (acc, &ones) in sums.iter_mut().zip(row.iter().skip(q).step_by(pb)) {
                        *acc += i64::from(ones) << (p + q);
                    }
                }
            }
            for (o, &sum) in chunk.iter_mut().zip(&sums) {
                *o = sum as f32;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::kernels::isa::{Isa, with_isa};
    use crate::kernels::pack::{pack_planes, pack_signs};

    fn codes(rng: &mut StdRng, len: usize, bits: u32) -> Vec<f32> {
        (0..len)
            .map(|_| rng.random_range(0..1u32 << bits) as f32)
            .collect()
    }

    fn signs(rng: &mut StdRng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| if rng.random() { 1.0 } else { -1.0 })
            .collect()
    }

    fn planes(values: &[f32], rows: usize, k: usize, bits: u32) -> Vec<u64> {
        let mut out = vec![0; rows * bits as usize * words_per_row(k)];
        pack_planes(values, rows, k, bits, &mut out);
        out
    }

    /// `Σ_t a[i, t] · b[j, t]` in exact integers, rounded once to f32.
    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: i64 = (0..k)
                    .map(|t| a[i * k + t] as i64 * b[j * k + t] as i64)
                    .sum();
                out[i * n + j] = dot as f32;
            }
        }
        out
    }

    fn check_binary(a: &[f32], a_bits: u32, b: &[f32], (m, n, k): (usize, usize, usize)) {
        let pa = planes(a, m, k, a_bits);
        let mut pb = vec![0; n * words_per_row(k)];
        pack_signs(b, n, k, &mut pb);
        let expected = reference(a, b, m, n, k);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; m * n];
            with_isa(isa, || {
                bitserial_binary_gemm(&pa, a_bits, &pb, m, n, k, &mut out)
            });
            assert_eq!(out, expected, "{isa:?} bits={a_bits} m={m} n={n} k={k}");
        }
    }

    fn check_codes(a: &[f32], bits: (u32, u32), b: &[f32], (m, n, k): (usize, usize, usize)) {
        let pa = planes(a, m, k, bits.0);
        let pb = planes(b, n, k, bits.1);
        let expected = reference(a, b, m, n, k);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; m * n];
            with_isa(isa, || {
                bitserial_gemm(&pa, bits.0, &pb, bits.1, m, n, k, &mut out)
            });
            assert_eq!(out, expected, "{isa:?} bits={bits:?} m={m} n={n} k={k}");
        }
    }

    #[test]
    fn binary_matches_definition() {
        let mut rng = StdRng::seed_from_u64(20);
        for k in [1, 31, 63, 64, 65, 127, 1000, 4097] {
            for (bits, m, n) in [(1, 3, 5), (2, 4, 9), (3, 5, 3), (8, 2, 11)] {
                let a = codes(&mut rng, m * k, bits);
                let b = signs(&mut rng, n * k);
                check_binary(&a, bits, &b, (m, n, k));
            }
        }
    }

    /// Every word-count remainder mod 8 (each tail of the 512-bit kernels), after 0–2 full
    /// 8-word steps.
    #[test]
    fn binary_matches_definition_for_every_word_tail() {
        let mut rng = StdRng::seed_from_u64(24);
        for words in 1..=24 {
            let k = 64 * words - 5;
            let (bits, m, n) = (2, 4, 9);
            let a = codes(&mut rng, m * k, bits);
            let b = signs(&mut rng, n * k);
            check_binary(&a, bits, &b, (m, n, k));
        }
    }

    #[test]
    fn binary_edge_shapes_and_threads() {
        let mut rng = StdRng::seed_from_u64(21);
        for (bits, m, n, k) in [
            (8, 1, 1, 65),
            (4, 1, 700, 1000),
            (8, 40, 30, 1000),
            (5, 7, 1, 300),
        ] {
            let a = codes(&mut rng, m * k, bits);
            let b = signs(&mut rng, n * k);
            check_binary(&a, bits, &b, (m, n, k));
        }
    }

    #[test]
    fn binary_extreme_operands() {
        for k in [1, 64, 65, 1000] {
            let top = vec![255.0; 3 * k];
            check_binary(&top, 8, &vec![-1.0; 4 * k], (3, 4, k));
            check_binary(&top, 8, &vec![1.0; 4 * k], (3, 4, k));
            check_binary(&vec![0.0; 3 * k], 8, &vec![-1.0; 4 * k], (3, 4, k));
        }
    }

    #[test]
    fn codes_match_definition() {
        let mut rng = StdRng::seed_from_u64(22);
        for k in [1, 31, 63, 64, 65, 127, 1000, 4097] {
            for (bits, m, n) in [
                ((1, 1), 3, 5),
                ((2, 3), 4, 9),
                ((8, 8), 2, 3),
                ((3, 1), 5, 2),
            ] {
                let a = codes(&mut rng, m * k, bits.0);
                let b = codes(&mut rng, n * k, bits.1);
                check_codes(&a, bits, &b, (m, n, k));
            }
        }
    }

    #[test]
    fn codes_edge_shapes_threads_and_rounding() {
        let mut rng = StdRng::seed_from_u64(23);
        for (bits, m, n, k) in [
            ((8, 8), 1, 1, 65),
            ((2, 2), 1, 600, 1000),
            ((4, 4), 30, 30, 1000),
            ((3, 5), 7, 5, 300),
        ] {
            let a = codes(&mut rng, m * k, bits.0);
            let b = codes(&mut rng, n * k, bits.1);
            check_codes(&a, bits, &b, (m, n, k));
        }
        // 255 · 255 · 4097 > 2^24: the result rounds once, as the definition's `as f32`.
        let top = vec![255.0; 2 * 4097];
        check_codes(&top, (8, 8), &top, (2, 2, 4097));
    }

    #[test]
    fn zero_planes_give_zero() {
        for isa in Isa::available() {
            let mut out = [f32::NAN; 6];
            with_isa(isa, || {
                bitserial_gemm(&[], 0, &[0; 3], 1, 2, 3, 64, &mut out)
            });
            assert_eq!(out, [0.0; 6]);
            let mut out = [f32::NAN; 6];
            with_isa(isa, || {
                bitserial_binary_gemm(&[], 0, &[0; 3], 2, 3, 64, &mut out)
            });
            assert_eq!(out, [0.0; 6]);
        }
    }
}
