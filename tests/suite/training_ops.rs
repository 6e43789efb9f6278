//! The other ops of a training step that have their own autodiff nodes: max-pooling (against
//! Burn's own pooling and its gradient) and the bit-plane first layer's convolution (against
//! its float formula and the gradient of that formula).

use burn::tensor::{Tensor, module::max_pool2d, ops::ConvOptions};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    nn::{self, pixel_codes},
    ops::ConvGeometry,
    quant,
};

use crate::{
    conv::{assert_close_to_order, gradients, random_geometries},
    reference::{assert_exact, tensor, uniform, values},
};

/// Windows and input sizes: non-overlapping and overlapping windows, sizes the windows do not
/// divide, a single image.
const POOLS: [([usize; 2], [usize; 2], [usize; 4]); 4] = [
    ([2, 2], [2, 2], [2, 3, 8, 8]),
    ([2, 2], [2, 2], [1, 5, 7, 9]),
    ([3, 3], [1, 2], [2, 2, 6, 7]),
    ([2, 3], [3, 1], [1, 4, 9, 5]),
];

/// The output of `f(x)` and the gradient of `Σ r ⊙ f(x)` w.r.t. `x`.
fn pool_gradient<B: QnnAutodiffBackend>(
    f: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
    x: Tensor<B, 4>,
    r: Tensor<B, 4>,
) -> (Vec<f32>, Vec<f32>) {
    let x = x.require_grad();
    let y = f(x.clone());
    let forward = values(y.clone().inner());
    let grads = (y * r).sum().backward();
    (forward, values(x.grad(&grads).unwrap()))
}

/// The crate's max-pooling gives Burn's `max_pool2d` values and, under `Autodiff`, Burn's
/// gradient exactly (each output's gradient at the first maximum of its window). The inputs are
/// small integers, so most windows hold ties.
pub fn max_pool_matches_burn<B: QnnAutodiffBackend>(device: &B::Device) {
    for (case, (kernel, stride, shape)) in POOLS.into_iter().enumerate() {
        let what = format!("max pool {kernel:?}/{stride:?} on {shape:?}");
        let x_values: Vec<f32> = uniform(shape.iter().product(), -2.5, 2.5, case as u64)
            .into_iter()
            .map(f32::round)
            .collect();
        let burn = |x: Tensor<B, 4>| max_pool2d(x, kernel, stride, [0, 0], [1, 1], false);
        let inner = tensor::<B::InnerBackend, 4>(x_values.clone(), shape, device);
        let inner_burn = max_pool2d(inner.clone(), kernel, stride, [0, 0], [1, 1], false);
        assert_exact(
            &format!("{what}, inner backend"),
            &values(inner_burn.clone()),
            &values(nn::max_pool2d(inner, kernel, stride)),
            &values(inner_burn),
        );
        let x = tensor::<B, 4>(x_values, shape, device);
        let out_shape = burn(x.clone()).dims();
        let r = tensor::<B, 4>(
            uniform(out_shape.iter().product(), -1.0, 1.0, 10 + case as u64),
            out_shape,
            device,
        );
        let ours = pool_gradient(|x| nn::max_pool2d(x, kernel, stride), x.clone(), r.clone());
        let expected = pool_gradient(burn, x, r);
        assert_exact(&format!("{what} forward"), &ours.0, &ours.0, &expected.0);
        assert_exact(&format!("{what} gradient"), &ours.1, &ours.1, &expected.1);
        assert!(ours.1.iter().any(|&g| g != 0.0), "{what}: some gradient");
    }
}

/// The bit-plane layer's formula `(P − 127.5·M)/127.5` from Burn's float convolutions:
/// `P = codes ⊛ sign(w)` and `M = ones ⊛ Σ_c sign(w)`.
fn bit_plane_formula<B: QnnBackend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    let [_, _, h, wd] = x.dims();
    let signs = quant::sign(w);
    let options = geometry.options();
    let product =
        burn::tensor::module::conv2d(pixel_codes(x), signs.clone(), None, options.clone());
    let ones = Tensor::<B, 4>::ones([1, 1, h, wd], &signs.device());
    let inside = burn::tensor::module::conv2d(ones, signs.sum_dim(1), None, options);
    (product - inside * 127.5) / 127.5
}

/// The bit-plane convolution node gives the layer's formula exactly and its weight gradient up
/// to the order of the f32 sums (`|Δ| ≤ 1e-5·Σ|terms|`, the terms `|r|·|code/127.5 − 1|`), 0
/// where the latent weight lies outside the pass band; the input's gradient is 0 (the codes are
/// rounded). Random geometries: odd sizes, strides, paddings and dilations, batch 1 to 3.
pub fn bit_plane_conv_gradients<B: QnnAutodiffBackend>(device: &B::Device) {
    for (case, (geometry, [n, _, h, w])) in random_geometries(5, 31).into_iter().enumerate() {
        let c_out = geometry.channels[1];
        let geometry = ConvGeometry {
            channels: [3, c_out],
            ..geometry
        };
        let x_shape = [n, 3, h, w];
        let w_shape = [c_out, 3, geometry.kernel[0], geometry.kernel[1]];
        let what = format!("bit-plane case {case} {geometry:?} on {x_shape:?}");
        let pixels = uniform(x_shape.iter().product(), 0.0, 256.0, case as u64);
        let x_values: Vec<f32> = pixels.iter().map(|p| p.floor() / 127.5 - 1.0).collect();
        let w_values = uniform(w_shape.iter().product(), -1.5, 1.5, 40 + case as u64);
        let x = tensor::<B, 4>(x_values.clone(), x_shape, device);
        let wt = tensor::<B, 4>(w_values.clone(), w_shape, device);
        let out_shape = bit_plane_formula(x.clone(), wt.clone(), &geometry).dims();
        let r_values = uniform(out_shape.iter().product(), -1.0, 1.0, 80 + case as u64);
        let r = tensor::<B, 4>(r_values.clone(), out_shape, device);
        let ours = gradients(
            |x, w| B::qnn_bit_plane_conv2d(x, w, &geometry),
            x.clone(),
            wt.clone(),
            r.clone(),
        );
        let expected = gradients(
            |x, w| bit_plane_formula(x, w, &geometry),
            x.clone(),
            wt.clone(),
            r,
        );
        assert_exact(&format!("{what} forward"), &ours.0, &ours.0, &expected.0);
        assert!(
            ours.1.iter().all(|&g| g == 0.0),
            "{what}: the input's gradient is 0"
        );
        // Σ|terms| of each weight's gradient: |r| against |code/127.5 − 1| through a float
        // convolution (its weight gradient sums exactly those products).
        let abs_r = tensor::<B, 4>(
            r_values.iter().map(|v| v.abs()).collect(),
            out_shape,
            device,
        );
        let abs_x = tensor::<B, 4>(x_values.iter().map(|v| v.abs()).collect(), x_shape, device);
        let options: ConvOptions<2> = geometry.options();
        let terms = gradients(
            |x, w| burn::tensor::module::conv2d(x, w, None, options.clone()),
            abs_x,
            wt.clone(),
            abs_r,
        );
        assert_close_to_order(&format!("{what} grad w"), &ours.2, &expected.2, &terms.2);
        for (i, (&g, &v)) in ours.2.iter().zip(&w_values).enumerate() {
            assert!(
                v.abs() <= 1.0 || g == 0.0,
                "{what}: weight {i} ({v}) outside the band has gradient {g}"
            );
        }
        assert!(
            ours.2.iter().any(|&g| g != 0.0),
            "{what}: some weight gradient"
        );
    }
}

/// [`FusedAdam`](burn_qnn::optim::FusedAdam) gives Burn's `Adam`'s parameters bit for bit over
/// several steps (moments carried between them), with and without weight decay, on a layer
/// whose parameter counts span more than one of the host kernel's parallel chunks.
pub fn fused_adam_matches_burn_adam<B: QnnAutodiffBackend>(device: &B::Device) {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer, decay::WeightDecayConfig};
    use burn_qnn::optim::FusedAdamConfig;

    let (d_in, d_out, batch) = (181, 97, 5);
    for decay in [None, Some(WeightDecayConfig::new(0.05))] {
        let model: Linear<B> = LinearConfig::new(d_in, d_out).init(device);
        // Parameters initialise lazily, each clone on its own: draw them once before cloning.
        let _ = (model.weight.val(), model.bias.as_ref().map(|b| b.val()));
        let (mut ours, mut burns) = (model.clone(), model);
        let mut fused = FusedAdamConfig::new()
            .with_weight_decay(decay.clone())
            .init::<B, Linear<B>>();
        let mut adam = AdamConfig::new()
            .with_weight_decay(decay.clone())
            .init::<B, Linear<B>>();
        for step in 0..4u64 {
            let x = tensor::<B, 2>(
                uniform(batch * d_in, -1.0, 1.0, 10 + step),
                [batch, d_in],
                device,
            );
            let r = tensor::<B, 2>(
                uniform(batch * d_out, -1.0, 1.0, 20 + step),
                [batch, d_out],
                device,
            );
            let loss = |m: &Linear<B>| (m.forward(x.clone()) * r.clone()).sum();
            let grads = GradientsParams::from_grads(loss(&ours).backward(), &ours);
            ours = fused.step(1e-2, ours, grads);
            let grads = GradientsParams::from_grads(loss(&burns).backward(), &burns);
            burns = adam.step(1e-2, burns, grads);
            let weights = |m: &Linear<B>| values(m.weight.val().inner());
            let bias = |m: &Linear<B>| values(m.bias.as_ref().unwrap().val().inner());
            let what = format!("step {step}, weight decay {}", decay.is_some());
            let before = weights(&ours);
            assert_exact(&what, &before, &before, &weights(&burns));
            assert_exact(&what, &bias(&ours), &bias(&ours), &bias(&burns));
        }
    }
}

/// `QnnBackend::qnn_latent_update` gives the bits of Burn's tensor ops for the paper's rules
/// (`W₀ + (W − W₀)·s`, then clipping to `[−1, 1]`), each rule on and off, on a weight longer
/// than one of the host kernel's parallel chunks; under `Autodiff` the result is untracked.
pub fn latent_update_matches_burn_ops<B: QnnBackend>(device: &B::Device) {
    let (rows, cols) = (151, 223);
    let step = tensor::<B, 2>(uniform(rows * cols, -3.0, 3.0, 31), [rows, cols], device);
    let old = tensor::<B, 2>(uniform(rows * cols, -1.0, 1.0, 32), [rows, cols], device);
    let scale = 23.4567;
    for clip in [false, true] {
        for with_old in [false, true] {
            let before = with_old.then(|| (old.clone(), scale));
            let got = B::qnn_latent_update(step.clone().require_grad(), before, clip);
            assert!(!got.is_require_grad());
            let mut expected = step.clone();
            if with_old {
                expected = old.clone() + (expected - old.clone()) * scale;
            }
            if clip {
                expected = expected.clamp(-1.0, 1.0);
            }
            let what = format!("clip {clip}, W₀ {with_old}");
            let inputs = values(step.clone());
            assert_exact(&what, &inputs, &values(got), &values(expected));
        }
    }
}
