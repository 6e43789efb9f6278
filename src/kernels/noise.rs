//! Uniform noise for stochastic rounding, filled in parallel from one seed.
//!
//! Value `i` of a fill is a function of `(seed, i)` alone (SplitMix64's output function on
//! `seed + (i + 1)·γ`, `γ` the golden-ratio increment), so a fill is the same whatever the
//! number of threads, and the values are the top 24 bits of the hash over `2^24`: uniform
//! on the 2^24 multiples of `2^−24` in `[0, 1)`.

use rayon::prelude::*;

/// SplitMix64's increment: `2^64 / φ`, odd.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (a bijection of `u64` with good avalanche).
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `count` values uniform in `[0, 1)` drawn from `seed` (see the module docs), computed in
/// parallel straight into the result.
///
/// ```
/// use burn_qnn::kernels::noise::uniform_noise;
///
/// let a = uniform_noise(7, 1000);
/// assert_eq!(a, uniform_noise(7, 1000));
/// assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
/// ```
pub fn uniform_noise(seed: u64, count: usize) -> Vec<f32> {
    (0..count)
        .into_par_iter()
        .with_min_len(1 << 14)
        .map(|i| {
            let counter = seed.wrapping_add((i as u64 + 1).wrapping_mul(GAMMA));
            (mix(counter) >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_uniform_and_seeded() {
        let a = uniform_noise(1, 200_000);
        let b = uniform_noise(2, 200_000);
        assert_ne!(a, b, "another seed, other values");
        assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
        // Mean 1/2 and each tenth of [0, 1) holding a tenth of the values, within a few
        // standard deviations (σ of a tenth's count ≈ 134).
        let mean = a.iter().map(|&u| f64::from(u)).sum::<f64>() / a.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let mut counts = [0usize; 10];
        for &u in &a {
            counts[(u * 10.0) as usize] += 1;
        }
        for (tenth, &count) in counts.iter().enumerate() {
            assert!(
                count.abs_diff(20_000) < 800,
                "tenth {tenth}: {count} values"
            );
        }
        // Neighbouring values are not correlated.
        let lag: f64 = a
            .windows(2)
            .map(|w| (f64::from(w[0]) - 0.5) * (f64::from(w[1]) - 0.5))
            .sum::<f64>()
            / a.len() as f64;
        assert!(lag.abs() < 0.001, "lag-1 covariance {lag}");
        // A fill does not depend on how it is split: a prefix is the prefix of a longer fill.
        let short = uniform_noise(1, 20_001);
        assert_eq!(short[..], a[..20_001]);
    }
}
