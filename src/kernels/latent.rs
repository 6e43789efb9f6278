//! The paper's rules for a latent weight after an optimizer step, in one parallel pass: the
//! host body of [`QnnBackend::qnn_latent_update`](crate::QnnBackend::qnn_latent_update).
//!
//! With `W` the optimizer's result, `W₀` the weight before the step and `s` the layer's
//! learning-rate scale (rounded to f32), in f32 as Burn's tensor ops compute it:
//!
//! ```text
//! W' = W₀ + (W − W₀)·s      (only with a scale)
//! W' = min(max(W', −1), 1)  (only with clipping; NaN stays NaN)
//! ```

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::uninit::as_slots;

/// Values one parallel task updates.
const CHUNK: usize = 1 << 14;

/// One latent weight's value after the rules: `before` is `Some((W₀, s))` with a scale.
#[inline(always)]
pub fn latent_value(step: f32, before: Option<(f32, f32)>, clip: bool) -> f32 {
    let w = match before {
        Some((old, scale)) => old + (step - old) * scale,
        None => step,
    };
    if clip { w.clamp(-1.0, 1.0) } else { w }
}

/// Writes [`latent_value`] of every value of `step` to `out`; `before` is `Some((W₀, s))` with
/// a scale, `W₀` as long as `step`.
///
/// # Panics
/// If a length differs from `step`'s.
pub fn latent_update(step: &[f32], before: Option<(&[f32], f32)>, clip: bool, out: &mut [f32]) {
    // SAFETY: `latent_update_into` writes only initialized values.
    latent_update_into(step, before, clip, unsafe { as_slots(out) })
}

/// [`latent_update`] into slots it writes every one of (so `out` need not be initialized).
pub(crate) fn latent_update_into(
    step: &[f32],
    before: Option<(&[f32], f32)>,
    clip: bool,
    out: &mut [MaybeUninit<f32>],
) {
    assert_eq!(out.len(), step.len(), "latent update: output length");
    if let Some((old, _)) = before {
        assert_eq!(old.len(), step.len(), "latent update: W₀'s length");
    }
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, out)| {
        let at = i * CHUNK..i * CHUNK + out.len();
        let step = &step[at.clone()];
        match before {
            Some((old, scale)) => {
                for ((o, &w), &old) in out.iter_mut().zip(step).zip(&old[at]) {
                    o.write(latent_value(w, Some((old, scale)), clip));
                }
            }
            None => {
                for (o, &w) in out.iter_mut().zip(step) {
                    o.write(latent_value(w, None, clip));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value equals the rules computed on its own, over more than one parallel chunk.
    #[test]
    fn every_value_follows_the_rules() {
        let len = 2 * CHUNK + 37;
        let step: Vec<f32> = (0..len).map(|i| (i % 401) as f32 / 100.0 - 2.0).collect();
        let old: Vec<f32> = (0..len).map(|i| (i % 97) as f32 / 48.0 - 1.0).collect();
        let scale = 12.5f32;
        for clip in [false, true] {
            for before in [None, Some((&old[..], scale))] {
                let mut out = vec![f32::NAN; len];
                latent_update(&step, before, clip, &mut out);
                for i in 0..len {
                    let mut w = match before {
                        Some(_) => old[i] + (step[i] - old[i]) * scale,
                        None => step[i],
                    };
                    // Clipped: the nearer bound where outside [−1, 1].
                    if clip && w.abs() > 1.0 {
                        w = w.signum();
                    }
                    assert_eq!(out[i], w, "value {i}, clip {clip}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "W₀'s length")]
    fn a_short_old_weight_is_refused() {
        latent_update(&[0.5; 4], Some((&[0.0; 3], 2.0)), true, &mut [0.0; 4]);
    }
}
