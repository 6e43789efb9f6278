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

/// Fills `out` with values uniform in `[0, 1)` drawn from `seed` (see the module docs).
///
/// ```
/// use burn_qnn::kernels::noise::uniform_noise;
///
/// let (mut a, mut b) = (vec![0.0; 1000], vec![0.0; 1000]);
/// uniform_noise(7, &mut a);
/// uniform_noise(7, &mut b);
/// assert_eq!(a, b);
/// assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
/// ```
pub fn uniform_noise(seed: u64, out: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, values)| {
            let first = (chunk * CHUNK) as u64;
            for (i, u) in values.iter_mut().enumerate() {
                let counter = seed.wrapping_add((first + i as u64 + 1).wrapping_mul(GAMMA));
                *u = (mix(counter) >> 40) as f32 * (1.0 / (1u32 << 24) as f32);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_uniform_and_seeded() {
        let mut a = vec![0.0f32; 200_000];
        uniform_noise(1, &mut a);
        let mut b = vec![0.0f32; 200_000];
        uniform_noise(2, &mut b);
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
        let mut short = vec![0.0f32; 20_001];
        uniform_noise(1, &mut short);
        assert_eq!(short[..], a[..20_001]);
    }
}
