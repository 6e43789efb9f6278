//! Bop against its definition: the per-tensor rule, and Bop beside Adam on a model with binary
//! and float layers (one device and several).

use burn::{
    module::Module,
    nn::{Linear, LinearConfig},
    optim::{
        AdamConfig, GradientsParams, MultiGradientsParams, Optimizer, SimpleOptimizer,
        adaptor::OptimizerAdaptor,
    },
    tensor::{Tensor, backend::DeviceOps},
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    nn::{BinaryLinear, BinaryLinearConfig},
    optim::{BopConfig, BopRule, BopState},
};

use crate::reference::{self as r, tensor, uniform, values};

/// Steps the rule over a sequence of gradients and follows the definition on the host:
/// `m ← (1 − γ)·m + γ·g`, `w ← −s(w)` where `s(w)·m > τ`, else `s(w)`.
pub fn bop_rule_matches_definition<B: QnnBackend>(device: &B::Device) {
    let (gamma, tau) = (0.25f32, 0.05f32);
    let rule: BopRule = BopConfig::new()
        .with_gamma(f64::from(gamma))
        .with_threshold(f64::from(tau))
        .rule();
    let n = 301;
    let mut w_ref = uniform(n, -1.0, 1.0, 81);
    w_ref[0] = 0.0; // s(0) = +1
    w_ref[1] = -0.0;
    let mut m_ref = vec![0f32; n];
    let mut w = tensor::<B, 1>(w_ref.clone(), [n], device);
    let mut state: Option<BopState<B, 1>> = None;
    let mut flips = 0;
    for step in 0..5u64 {
        let g = uniform(n, -1.0, 1.0, 90 + step);
        let (next, next_state) = SimpleOptimizer::<B>::step(
            &rule,
            1.0,
            w,
            tensor::<B, 1>(g.clone(), [n], device),
            state,
        );
        let (got_w, got_m) = (
            values(next.clone()),
            values(next_state.clone().unwrap().momentum),
        );
        for i in 0..n {
            m_ref[i] = if step == 0 {
                g[i] * gamma
            } else {
                m_ref[i] * (1.0 - gamma) + g[i] * gamma
            };
            assert!(
                (got_m[i] - m_ref[i]).abs() <= 1e-6,
                "step {step}, element {i}: m = {}, expected {}",
                got_m[i],
                m_ref[i]
            );
            let s = r::sign(w_ref[i]);
            let margin = s * m_ref[i] - tau;
            let expected = if margin > 0.0 { -s } else { s };
            // Within rounding of the threshold either side is right; follow the backend.
            if margin.abs() > 1e-5 {
                assert_eq!(got_w[i], expected, "step {step}, element {i}: w");
            }
            if got_w[i] != s {
                flips += 1;
            }
            w_ref[i] = got_w[i];
        }
        assert!(got_w.iter().all(|&v| v == 1.0 || v == -1.0));
        w = next;
        state = next_state;
    }
    assert!(flips > 50, "the test should flip weights, flipped {flips}");
}

/// A model with a binary layer and a float one.
#[derive(Module, Debug)]
pub struct Mixed<B: QnnBackend> {
    binary: BinaryLinear<B>,
    float: Linear<B>,
}

impl<B: QnnBackend> Mixed<B> {
    fn new(device: &B::Device) -> Self {
        let model = Self {
            binary: BinaryLinearConfig::new(13, 7).init(device),
            float: LinearConfig::new(7, 3).init(device),
        };
        // Parameters initialise lazily, each clone on its own: draw them once before cloning.
        let _ = (model.binary.weight.val(), model.float.weight.val());
        let _ = model.float.bias.as_ref().map(|b| b.val());
        model
    }

    fn loss(&self, seed: u64, device: &B::Device) -> Tensor<B, 1> {
        let x = tensor::<B, 2>(uniform(5 * 13, -1.0, 1.0, seed), [5, 13], device);
        let u = tensor::<B, 2>(uniform(5 * 3, -1.0, 1.0, seed + 1), [5, 3], device);
        (self.float.forward(self.binary.forward(x)) * u).sum()
    }
}

fn params<B: QnnAutodiffBackend>(m: &Mixed<B>) -> [Vec<f32>; 3] {
    [
        values(m.binary.weight.val().inner()),
        values(m.float.weight.val().inner()),
        values(m.float.bias.as_ref().unwrap().val().inner()),
    ]
}

/// Bop moves only the binary weights, by the rule; Adam moves the others exactly as it does
/// alone; the record carries both states.
pub fn bop_beside_adam<B: QnnAutodiffBackend>(device: &B::Device) {
    let (gamma, tau) = (0.5, 1e-3);
    let config = BopConfig::new().with_gamma(gamma).with_threshold(tau);
    let model = Mixed::<B>::new(device);
    let (mut ours, mut adam_only) = (model.clone(), model);
    let mut bop = config.init::<B, Mixed<B>, _>(AdamConfig::new().init());
    let mut adam = AdamConfig::new().init::<B, Mixed<B>>();
    let mut m_ref = vec![0f32; 13 * 7];
    let mut resumed = None;
    for step in 0..3u64 {
        let before = params(&ours);
        let before_binary = ours.binary.clone();
        let grads = ours.loss(100 + step, device).backward();
        let g = values(ours.binary.weight.grad(&grads).unwrap());
        let grads = GradientsParams::from_grads(grads, &ours);
        if step == 2 {
            // A fresh optimizer loaded from the record continues exactly.
            let fresh = config.init::<B, Mixed<B>, _>(AdamConfig::new().init());
            let again =
                GradientsParams::from_grads(ours.loss(100 + step, device).backward(), &ours);
            resumed = Some((fresh.load_record(bop.to_record()), ours.clone(), again));
        }
        ours = bop.step(1e-2, ours, grads);
        // Adam alone, on the same binary weights as ours before this step.
        adam_only.binary = before_binary;
        let grads =
            GradientsParams::from_grads(adam_only.loss(100 + step, device).backward(), &adam_only);
        adam_only = adam.step(1e-2, adam_only, grads);

        let [w, float_w, float_b] = params(&ours);
        let [adam_w, adam_float_w, adam_float_b] = params(&adam_only);
        assert_eq!(
            float_w, adam_float_w,
            "step {step}: float weights as Adam alone"
        );
        assert_eq!(
            float_b, adam_float_b,
            "step {step}: float bias as Adam alone"
        );
        assert_ne!(
            w, adam_w,
            "step {step}: Adam must not have moved the binary weights"
        );
        for i in 0..w.len() {
            m_ref[i] = m_ref[i] * (1.0 - gamma as f32) + g[i] * gamma as f32;
            let s = r::sign(before[0][i]);
            let margin = s * m_ref[i] - tau as f32;
            if margin.abs() > 1e-5 {
                let expected = if margin > 0.0 { -s } else { s };
                assert_eq!(w[i], expected, "step {step}, binary weight {i}");
            }
        }
    }
    let (mut fresh, model, grads) = resumed.unwrap();
    let model = fresh.step(1e-2, model, grads);
    assert_eq!(params(&model), params(&ours), "resumed from the record");
}

/// Several devices' gradients (`step_multi`, as burn-train's multi-device strategy calls it)
/// give what one step on their sum gives.
pub fn bop_step_multi_sums_devices<B: QnnAutodiffBackend>(device: &B::Device) {
    let config = BopConfig::new().with_gamma(0.5).with_threshold(1e-3);
    let model = Mixed::<B>::new(device);
    let id = device.id();
    let split = GradientsParams::from_grads(model.loss(7, device).backward(), &model);
    let other = GradientsParams::from_grads(model.loss(9, device).backward(), &model);
    let multi = MultiGradientsParams {
        grads: vec![(split, id), (other, id)],
    };
    let summed = GradientsParams::from_grads(
        (model.loss(7, device) + model.loss(9, device)).backward(),
        &model,
    );
    let mut one = config.init::<B, Mixed<B>, _>(AdamConfig::new().init());
    let mut many = config.init::<B, Mixed<B>, _>(AdamConfig::new().init());
    let a = params(&one.step(1e-2, model.clone(), summed));
    let b = params(&many.step_multi(1e-2, model, multi));
    for (what, (a, b)) in ["binary", "float weight", "float bias"]
        .iter()
        .zip(a.iter().zip(&b))
    {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6, "{what}: {x} against {y}");
        }
    }
}

/// `BopRule` on its own through Burn's adaptor, for users who route parameters themselves.
pub fn bop_rule_in_adaptor<B: QnnAutodiffBackend>(device: &B::Device) {
    let layer = BinaryLinearConfig::new(4, 3).init::<B>(device);
    let mut optim: OptimizerAdaptor<BopRule, BinaryLinear<B>, B> = BopConfig::new()
        .with_gamma(1.0)
        .with_threshold(0.0)
        .rule()
        .into();
    let x = tensor::<B, 2>(uniform(8, -1.0, 1.0, 5), [2, 4], device);
    let before = values(layer.weight.val().inner());
    let grads = layer.forward(x).sum().backward();
    let g = values(layer.weight.grad(&grads).unwrap());
    let grads = GradientsParams::from_grads(grads, &layer);
    let after = values(optim.step(1.0, layer, grads).weight.val().inner());
    for ((&w, &g), &a) in before.iter().zip(&g).zip(&after) {
        let s = r::sign(w);
        // γ = 1, τ = 0: m = g, flip where s·g > 0.
        assert_eq!(a, if s * g > 0.0 { -s } else { s });
    }
}
