//! Scalar references written from the documented definitions, and helpers to compare tensors.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// `+1` for `x ≥ 0` and NaN, `−1` for `x < 0`.
pub fn sign(x: f32) -> f32 {
    if x < 0.0 { -1.0 } else { 1.0 }
}

/// The `k`-bit quantizer of `[0, 1]`: nearest of `j / L`, `L = 2^k − 1`, ties up, NaN → NaN.
pub fn unsigned(x: f32, k: u32) -> f32 {
    if x.is_nan() {
        return f32::NAN;
    }
    let steps = ((1u32 << k) - 1) as f32;
    (x.clamp(0.0, 1.0) * steps + 0.5).floor() / steps
}

/// The `k`-bit symmetric quantizer of `[−1, 1]`: `(2j − L)/L`, `j` the code of `(x + 1)/2`.
pub fn signed(x: f32, k: u32) -> f32 {
    if x.is_nan() {
        return f32::NAN;
    }
    let steps = ((1u32 << k) - 1) as f32;
    let code = (((x + 1.0) / 2.0).clamp(0.0, 1.0) * steps + 0.5).floor();
    (2.0 * code - steps) / steps
}

/// `sgn(x)·2^clip(round(log2|x|), lo, hi)` computed in f64, `0` for `±0`, NaN for NaN.
pub fn pow2(x: f32, min_exp: i32, max_exp: i32) -> f32 {
    if x.is_nan() {
        return f32::NAN;
    }
    if x == 0.0 {
        return 0.0;
    }
    let exponent = ((x.abs() as f64).log2() + 0.5).floor();
    let exponent = exponent.clamp(min_exp as f64, max_exp as f64) as i32;
    let magnitude = 2f32.powi(exponent);
    if x < 0.0 { -magnitude } else { magnitude }
}

/// `true` where `log2|x|` is so close to a rounding tie (`n + ½`) that f32 evaluation may fall
/// on either side: the only inputs where a backend may differ from the f64 reference.
pub fn near_pow2_tie(x: f32) -> bool {
    let l = (x.abs() as f64).log2();
    x.is_finite() && x != 0.0 && ((l - l.floor()) - 0.5).abs() < 1e-5
}

/// The straight-through mask: 1 inside `[lo, hi]`, 0 outside and for NaN.
pub fn pass(x: f32, lo: f32, hi: f32) -> f32 {
    if x >= lo && x <= hi { 1.0 } else { 0.0 }
}

/// `n` values uniform in `[lo, hi)` from a seeded generator.
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// A tensor of the given shape holding `values`.
pub fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The tensor's values on the host.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Asserts `actual == expected` element by element, bit for bit up to the sign of zero, with
/// NaN equal to NaN; names the first mismatch and its input.
pub fn assert_exact(what: &str, inputs: &[f32], actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, ((&a, &e), &x)) in actual.iter().zip(expected).zip(inputs).enumerate() {
        let same = a == e || (a.is_nan() && e.is_nan());
        assert!(
            same,
            "{what}: element {i} (input {x:e}) is {a:e}, expected {e:e}"
        );
    }
}

/// Serializes the tests that run on a backend: each backend draws from one global random
/// generator (module initialisation included), so a test that seeds it and expects the same
/// draws twice must not run beside another that draws from it. Every test on a backend takes
/// it, once, at its start (the lock is not reentrant: helpers must not take it).
pub fn backend_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
