//! One Adam update of a parameter in a single pass over its values (parameter, gradient and both
//! moments read once, written once), in parallel: the host body of
//! [`QnnBackend::qnn_adam_step`](crate::QnnBackend::qnn_adam_step).
//!
//! The arithmetic is Burn's `Adam` (without AMSGrad), operation for operation in f32, so the
//! results are the same bits. With gradient `g` (plus `λ·θ` under weight decay), step `t` (from
//! 1), `b₂ = sqrt(1 − β₂ᵗ)` and `c = b₂ / (1 − β₁ᵗ)`:
//!
//! ```text
//! m = β₁·m + (1 − β₁)·g          (m = (1 − β₁)·g at t = 1)
//! v = β₂·v + (1 − β₂)·g²         (v = (1 − β₂)·g² at t = 1)
//! θ = θ − lr · (c·m) / (sqrt(v) + ε·b₂)
//! ```

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::uninit::as_slots;

/// The scalars of one Adam step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Decay of the first moment `β₁`.
    pub beta_1: f32,
    /// Decay of the second moment `β₂`.
    pub beta_2: f32,
    /// `ε`, added to `sqrt(v)` (scaled by `b₂` as Burn does).
    pub epsilon: f32,
    /// The coupled weight decay `λ` (`g + λ·θ`), if any.
    pub weight_decay: Option<f32>,
    /// The learning rate.
    pub lr: f32,
    /// The step `t`, from 1 (1 also means the moments start at zero).
    pub time: usize,
}

impl AdamStep {
    /// `(c, ε·b₂)`: the first moment's factor and the denominator's added constant at step `t`.
    pub fn factors(&self) -> (f32, f32) {
        let time = i32::try_from(self.time).unwrap_or(i32::MAX);
        let bias_correction_2 = (1.0 - self.beta_2.powi(time)).sqrt();
        let factor = bias_correction_2 / (1.0 - self.beta_1.powi(time));
        (factor, self.epsilon * bias_correction_2)
    }

    /// `(θ, m, v)` after the step for one value: the moments `Some` from step 2 on.
    #[inline]
    pub fn update(&self, param: f32, grad: f32, moments: Option<(f32, f32)>) -> (f32, f32, f32) {
        let (factor, offset) = self.factors();
        self.update_with(factor, offset, param, grad, moments)
    }

    #[inline(always)]
    fn update_with(
        &self,
        factor: f32,
        offset: f32,
        param: f32,
        grad: f32,
        moments: Option<(f32, f32)>,
    ) -> (f32, f32, f32) {
        let grad = match self.weight_decay {
            Some(penalty) => param * penalty + grad,
            None => grad,
        };
        let (g1, g2) = (
            grad * (1.0 - self.beta_1),
            grad * grad * (1.0 - self.beta_2),
        );
        let (m, v) = match moments {
            Some((m, v)) => (m * self.beta_1 + g1, v * self.beta_2 + g2),
            None => (g1, g2),
        };
        let delta = m * factor / (v.sqrt() + offset);
        (param - delta * self.lr, m, v)
    }
}

/// Values per task of the parallel pass.
const CHUNK: usize = 1 << 14;

/// Writes `(θ, m, v)` after `step` to `out` from the parameter, its gradient and the moments
/// (`None` at the first step).
///
/// ```
/// use burn_qnn::kernels::adam::{AdamStep, adam_step};
///
/// let step = AdamStep { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-5, weight_decay: None, lr: 0.1, time: 1 };
/// let (mut theta, mut m, mut v) = ([0.0; 2], [0.0; 2], [0.0; 2]);
/// adam_step(&step, &[1.0, 1.0], &[0.5, -2.0], None, (&mut theta, &mut m, &mut v));
/// // The first step moves each value by about lr against its gradient's sign.
/// assert!((theta[0] - 0.9).abs() < 1e-4 && (theta[1] - 1.1).abs() < 1e-4);
/// ```
///
/// # Panics
/// If the slices differ in length.
pub fn adam_step(
    step: &AdamStep,
    param: &[f32],
    grad: &[f32],
    moments: Option<(&[f32], &[f32])>,
    (param_out, m_out, v_out): (&mut [f32], &mut [f32], &mut [f32]),
) {
    // SAFETY: `adam_step_into` writes only initialized values.
    let out = unsafe { (as_slots(param_out), as_slots(m_out), as_slots(v_out)) };
    adam_step_into(step, param, grad, moments, out)
}

/// Slots of one output of [`adam_step_into`].
pub(crate) type Slots<'a> = &'a mut [MaybeUninit<f32>];

/// [`adam_step`] into slots it writes every one of (so the outputs need not be initialized).
pub(crate) fn adam_step_into(
    step: &AdamStep,
    param: &[f32],
    grad: &[f32],
    moments: Option<(&[f32], &[f32])>,
    (param_out, m_out, v_out): (Slots<'_>, Slots<'_>, Slots<'_>),
) {
    let len = param.len();
    let lengths = [grad.len(), param_out.len(), m_out.len(), v_out.len()];
    let moment_lengths = moments.map_or([len; 2], |(m, v)| [m.len(), v.len()]);
    assert!(
        lengths.iter().chain(&moment_lengths).all(|&l| l == len),
        "Adam step: the parameter has {len} values, the gradient, moments and outputs {lengths:?} \
         and {moment_lengths:?}"
    );
    let (factor, offset) = step.factors();
    // One plain loop per case (moments or not, weight decay or not), each with no branch
    // inside, so that the compiler vectorizes it whatever else it inlines around it.
    let chunk = |i: usize, (theta, (m, v)): (Slots<'_>, (Slots<'_>, Slots<'_>))| {
        let range = i * CHUNK..i * CHUNK + theta.len();
        let (param, grad) = (&param[range.clone()], &grad[range.clone()]);
        let before = moments.map(|(m, v)| (&m[range.clone()], &v[range]));
        let out = (theta, m, v);
        match step.weight_decay {
            Some(penalty) => {
                let step = AdamStep {
                    weight_decay: Some(penalty),
                    ..*step
                };
                chunk_loop(&step, factor, offset, param, grad, before, out)
            }
            None => {
                let step = AdamStep {
                    weight_decay: None,
                    ..*step
                };
                chunk_loop(&step, factor, offset, param, grad, before, out)
            }
        }
    };
    param_out
        .par_chunks_mut(CHUNK)
        .zip(m_out.par_chunks_mut(CHUNK).zip(v_out.par_chunks_mut(CHUNK)))
        .enumerate()
        .for_each(|(i, slices)| chunk(i, slices));
}

/// The update of one chunk, with or without the moments before.
#[inline(always)]
fn chunk_loop(
    step: &AdamStep,
    factor: f32,
    offset: f32,
    param: &[f32],
    grad: &[f32],
    before: Option<(&[f32], &[f32])>,
    (theta, m, v): (Slots<'_>, Slots<'_>, Slots<'_>),
) {
    let inputs = param.iter().zip(grad);
    let outputs = theta.iter_mut().zip(m).zip(v);
    match before {
        Some((m_before, v_before)) => {
            let before = m_before.iter().zip(v_before);
            for (((theta, m), v), ((&p, &g), (&mb, &vb))) in outputs.zip(inputs.zip(before)) {
                let (t, mm, vv) = step.update_with(factor, offset, p, g, Some((mb, vb)));
                theta.write(t);
                m.write(mm);
                v.write(vv);
            }
        }
        None => {
            for (((theta, m), v), (&p, &g)) in outputs.zip(inputs) {
                let (t, mm, vv) = step.update_with(factor, offset, p, g, None);
                theta.write(t);
                m.write(mm);
                v.write(vv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The update from its formula, in f64.
    fn reference(step: &AdamStep, theta: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64) {
        let (b1, b2, t) = (step.beta_1 as f64, step.beta_2 as f64, step.time as i32);
        let g = g + step.weight_decay.map_or(0.0, |l| l as f64 * theta);
        let m = b1 * m + (1.0 - b1) * g;
        let v = b2 * v + (1.0 - b2) * g * g;
        let bc2 = (1.0 - b2.powi(t)).sqrt();
        let update = bc2 / (1.0 - b1.powi(t)) * m / (v.sqrt() + step.epsilon as f64 * bc2);
        (theta - step.lr as f64 * update, m, v)
    }

    #[test]
    fn three_steps_follow_the_formula_across_chunks() {
        let len = 2 * CHUNK + 37;
        let value = |i: usize, k: usize| ((i * 7919 + k * 104_729) % 2001) as f32 / 1000.0 - 1.0;
        let mut theta: Vec<f32> = (0..len).map(|i| value(i, 0)).collect();
        let (mut m, mut v) = (vec![0f32; len], vec![0f32; len]);
        let (mut m64, mut v64) = (vec![0f64; len], vec![0f64; len]);
        let mut theta64: Vec<f64> = theta.iter().map(|&t| t as f64).collect();
        for time in 1..=3 {
            let step = AdamStep {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-5,
                weight_decay: (time == 2).then_some(0.01),
                lr: 0.01,
                time,
            };
            let grad: Vec<f32> = (0..len).map(|i| value(i, time)).collect();
            let (mut t2, mut m2, mut v2) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
            let moments = (time > 1).then_some((&m[..], &v[..]));
            adam_step(&step, &theta, &grad, moments, (&mut t2, &mut m2, &mut v2));
            for i in 0..len {
                let (t, mm, vv) = reference(&step, theta64[i], grad[i] as f64, m64[i], v64[i]);
                (theta64[i], m64[i], v64[i]) = (t, mm, vv);
                assert!(
                    (t2[i] as f64 - t).abs() < 1e-6 * (1.0 + t.abs()),
                    "step {time}, value {i}: θ {} vs {t}",
                    t2[i]
                );
                assert!((m2[i] as f64 - mm).abs() < 1e-6 * (1.0 + mm.abs()));
                assert!((v2[i] as f64 - vv).abs() < 1e-6 * (1.0 + vv.abs()));
                // The single-value update is the same arithmetic.
                let single = step.update(theta[i], grad[i], moments.map(|(m, v)| (m[i], v[i])));
                assert_eq!(single, (t2[i], m2[i], v2[i]));
            }
            (theta, m, v) = (t2, m2, v2);
        }
    }

    #[test]
    #[should_panic(expected = "Adam step: the parameter has 3 values")]
    fn mismatched_lengths_are_refused() {
        let step = AdamStep {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay: None,
            lr: 0.1,
            time: 1,
        };
        let mut out = [0.0; 3];
        adam_step(
            &step,
            &[1.0; 3],
            &[1.0; 2],
            None,
            (&mut out.clone(), &mut out.clone(), &mut out),
        );
    }
}
