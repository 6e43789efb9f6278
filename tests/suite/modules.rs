//! The modules of `burn_qnn::nn`, the paper's networks and their packed inference form.

use burn::{
    module::{AutodiffModule, Module, Param, RunningState},
    nn::{BatchNormConfig, PaddingConfig2d},
    optim::{AdamConfig, GradientsParams, Optimizer},
    tensor::{Int, Tensor, TensorData, backend::Backend},
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    inference::{PackedNet, PackedNetError, PackedQuantConv2d, PackedQuantLinear},
    loss::SquaredHingeLoss,
    models::{Net, NetConfig},
    nn::{
        BatchNormSignConfig, BinaryConv2d, BinaryConv2dConfig, BinaryLinear, BinaryLinearConfig,
        BitPlaneConv2dConfig, BitPlaneLinearConfig, QuantConv2dConfig, QuantLinearConfig,
        ShiftBatchNormConfig, clip_latent_weights, glorot_lr_scale,
    },
    quant::{Bits, CodeGrid, GradRounding, Pow2Range, Quantizer},
};

use crate::reference::{assert_exact, pow2, sign, tensor, uniform, values};

/// `BinaryLinear` is `sign(x)·sign(W) + b` and, with scaling, `·mean|W|` per output.
pub fn binary_linear<B: QnnBackend>(device: &B::Device) {
    let (n, d_in, d_out) = (3, 70, 5);
    let mut layer = BinaryLinearConfig::new(d_in, d_out).init::<B>(device);
    let bias = uniform(d_out, -1.0, 1.0, 4);
    layer.bias = Some(burn::module::Param::from_tensor(tensor::<B, 1>(
        bias.clone(),
        [d_out],
        device,
    )));
    let x = uniform(n * d_in, -2.0, 2.0, 5);
    let w = values(layer.weight.val());
    let reference = |scaled: bool| -> Vec<f32> {
        let mut out = vec![0.0; n * d_out];
        for i in 0..n {
            for j in 0..d_out {
                let dot: f32 = (0..d_in)
                    .map(|k| sign(x[i * d_in + k]) * sign(w[k * d_out + j]))
                    .sum();
                let alpha = (0..d_in).map(|k| w[k * d_out + j].abs()).sum::<f32>() / d_in as f32;
                out[i * d_out + j] = if scaled { dot * alpha } else { dot } + bias[j];
            }
        }
        out
    };
    let xt = tensor::<B, 2>(x.clone(), [n, d_in], device);
    assert_exact(
        "binary linear",
        &x,
        &values(layer.forward(xt.clone())),
        &reference(false),
    );
    layer.scaling = true;
    let got = values(layer.forward(xt));
    for (g, e) in got.iter().zip(reference(true)) {
        assert!(
            (g - e).abs() <= 1e-4 * e.abs().max(1.0),
            "scaled: {g} vs {e}"
        );
    }
}

/// `ShiftBatchNorm` follows the paper's formulas in training and evaluation.
pub fn shift_batch_norm<B: QnnAutodiffBackend>(device: &B::Device) {
    let (n, c, l) = (4, 3, 5);
    let bn = ShiftBatchNormConfig::new(c).init::<B>(device);
    let x = uniform(n * c * l, -3.0, 5.0, 11);
    let y = values(
        bn.forward(tensor::<B, 3>(x.clone(), [n, c, l], device))
            .inner(),
    );
    let ap2 = |v: f32| pow2(v, -126, 127);
    let mut means = vec![];
    let mut vars = vec![];
    for ch in 0..c {
        let at = |b: usize, p: usize| x[(b * c + ch) * l + p];
        let count = (n * l) as f32;
        let mean: f32 = (0..n)
            .flat_map(|b| (0..l).map(move |p| (b, p)))
            .map(|(b, p)| at(b, p))
            .sum::<f32>()
            / count;
        let var: f32 = (0..n)
            .flat_map(|b| (0..l).map(move |p| (b, p)))
            .map(|(b, p)| (at(b, p) - mean) * ap2(at(b, p) - mean))
            .sum::<f32>()
            / count;
        let inv_std = ap2(1.0 / (var + 1e-4).sqrt());
        for b in 0..n {
            for p in 0..l {
                let expected = (at(b, p) - mean) * inv_std; // AP2(γ) = 1, β = 0
                let got = y[(b * c + ch) * l + p];
                assert!((got - expected).abs() < 1e-4, "train: {got} vs {expected}");
            }
        }
        means.push(mean);
        vars.push(var);
    }
    // Running statistics moved by momentum 0.1 from (0, 1); evaluation uses them.
    let running_mean = values(bn.running_mean.value_sync().inner());
    let running_var = values(bn.running_var.value_sync().inner());
    for ch in 0..c {
        assert!(
            (running_mean[ch] - 0.1 * means[ch]).abs() < 1e-5,
            "running mean {running_mean:?} batch means {means:?}"
        );
        assert!((running_var[ch] - (0.9 + 0.1 * vars[ch])).abs() < 1e-5);
    }
    let eval = bn.valid();
    let z = values(eval.forward(tensor::<B::InnerBackend, 3>(x.clone(), [n, c, l], device)));
    for (i, (&v, &got)) in x.iter().zip(&z).enumerate() {
        let ch = (i / l) % c;
        let expected = (v - running_mean[ch]) * ap2(1.0 / (running_var[ch] + 1e-4).sqrt());
        assert!((got - expected).abs() < 1e-4, "eval: {got} vs {expected}");
    }
}

/// `BatchNormSign` is the sign of Burn's batch norm: in evaluation, `sign(((x − mean)/
/// sqrt(var + ε))·γ + β)` with the running statistics (exactly, on the backends that compute on
/// the host, also where the norm is exactly 0 and for NaN inputs); in training, the sign of the
/// batch-statistics norm, with the gradient of Burn's `BatchNorm` through the sign's
/// straight-through estimator, and the running statistics moved as Burn's.
pub fn batch_norm_sign<B: QnnAutodiffBackend>(device: &B::Device) {
    let (n, c, h, w) = (3, 5, 4, 3);
    let len = n * c * h * w;
    let epsilon = 1e-5;
    // Evaluation, with running statistics, γ of both signs and a zero γ.
    let mean = uniform(c, -2.0, 2.0, 31);
    let var = uniform(c, 0.1, 4.0, 32);
    let mut gamma = uniform(c, 0.2, 2.0, 33);
    gamma[1] = -gamma[1];
    gamma[3] = 0.0;
    let mut beta = uniform(c, -0.5, 0.5, 34);
    beta[0] = 0.0;
    let mut layer = BatchNormSignConfig::new(c).init::<B::InnerBackend>(device);
    let vector = |v: &[f32]| tensor::<B::InnerBackend, 1>(v.to_vec(), [c], device);
    layer.norm.gamma = Param::from_tensor(vector(&gamma));
    layer.norm.beta = Param::from_tensor(vector(&beta));
    layer.norm.running_mean = RunningState::new(vector(&mean));
    layer.norm.running_var = RunningState::new(vector(&var));
    let mut x = uniform(len, -4.0, 4.0, 35);
    for (i, v) in x.iter_mut().enumerate() {
        let ch = (i / (h * w)) % c;
        match i % 11 {
            // Where channel 0's norm is exactly 0 (β = 0): +1.
            0 => *v = mean[ch],
            5 => *v = f32::NAN,
            _ => {}
        }
    }
    let norm_of = |i: usize, v: f32| {
        let ch = (i / (h * w)) % c;
        (v - mean[ch]) / (var[ch] + epsilon as f32).sqrt() * gamma[ch] + beta[ch]
    };
    let expected: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| sign(norm_of(i, v)))
        .collect();
    let got = values(layer.forward(tensor::<B::InnerBackend, 4>(
        x.clone(),
        [n, c, h, w],
        device,
    )));
    if B::InnerBackend::qnn_computes_on_host() {
        assert_exact("BatchNormSign (evaluation)", &x, &got, &expected);
    } else {
        // The GPU's division and square root may round differently: exact away from 0.
        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            let y = norm_of(i, x[i]);
            if y.is_nan() || y.abs() > 1e-4 {
                assert_eq!(
                    g, e,
                    "BatchNormSign (evaluation): element {i} ({}), norm {y}",
                    x[i]
                );
            }
        }
    }
    assert!(expected.contains(&1.0) && expected.contains(&-1.0));
    // A strided (flipped) view of the input gives the flipped signs.
    let input = tensor::<B::InnerBackend, 4>(x.clone(), [n, c, h, w], device);
    let flipped = values(layer.forward(input.flip([3])).flip([3]));
    assert_exact("BatchNormSign on a flipped view", &x, &flipped, &got);
    // On fully connected outputs `[N, C]` too.
    let rows = values(layer.forward(tensor::<B::InnerBackend, 2>(
        x[..4 * c].to_vec(),
        [4, c],
        device,
    )));
    for (i, &g) in rows.iter().enumerate() {
        let ch = i % c;
        let y = (x[i] - mean[ch]) / (var[ch] + epsilon as f32).sqrt() * gamma[ch] + beta[ch];
        if y.is_nan() || y.abs() > 1e-4 {
            assert_eq!(g, sign(y), "BatchNormSign on [N, C]: element {i}, norm {y}");
        }
    }

    // Training: batch statistics; the gradient against Burn's `BatchNorm` with the
    // straight-through mask applied by hand.
    let layer = BatchNormSignConfig::new(c).init::<B>(device);
    let reference = BatchNormConfig::new(c).init::<B>(device);
    let x = uniform(len, -3.0, 3.0, 36);
    let weights = uniform(len, -1.0, 1.0, 37);
    let input = tensor::<B, 4>(x.clone(), [n, c, h, w], device).require_grad();
    let y = layer.forward(input.clone());
    let grads = (y.clone() * tensor::<B, 4>(weights.clone(), [n, c, h, w], device))
        .sum()
        .backward();
    let got_grad = values(input.grad(&grads).expect("a gradient"));
    let ref_input = tensor::<B, 4>(x.clone(), [n, c, h, w], device).require_grad();
    let normed = reference.forward(ref_input.clone());
    let normed_values = values(normed.clone().inner());
    let passed: Vec<f32> = normed_values
        .iter()
        .zip(&weights)
        .map(|(&v, &w)| if v.abs() <= 1.0 { w } else { 0.0 })
        .collect();
    let grads = (normed * tensor::<B, 4>(passed, [n, c, h, w], device))
        .sum()
        .backward();
    let expected_grad = values(ref_input.grad(&grads).expect("a gradient"));
    let y = values(y.inner());
    for (i, &v) in normed_values.iter().enumerate() {
        if v.abs() > 1e-4 {
            assert_eq!(
                y[i],
                sign(v),
                "BatchNormSign (training): element {i}, norm {v}"
            );
        }
        // Away from the straight-through band's edges, where rounding could move a value across.
        if (v.abs() - 1.0).abs() > 1e-3 {
            let (g, e) = (got_grad[i], expected_grad[i]);
            assert!(
                (g - e).abs() <= 1e-4 * e.abs().max(1.0),
                "gradient {i}: {g} vs {e}"
            );
        }
    }
    assert!(
        got_grad.iter().any(|&g| g != 0.0),
        "some gradient passes the band"
    );
    let running = |t: Tensor<B, 1>| values(t.inner());
    let (got_mean, want_mean) = (
        running(layer.norm.running_mean.value_sync()),
        running(reference.running_mean.value_sync()),
    );
    for (g, e) in got_mean.iter().zip(&want_mean) {
        assert!(
            (g - e).abs() < 1e-5,
            "running mean {got_mean:?} vs {want_mean:?}"
        );
    }
}

/// Binary layers (fully connected and convolution) with stochastically rounded gradients give
/// the gradients of their float definition for the output gradient as
/// `quant::quantize_gradient_stochastic` passes it (the same seed draws the same rounding), and
/// differ from rounding to the nearest level.
pub fn stochastic_rounding_layers<B: QnnAutodiffBackend>(device: &B::Device) {
    let bits = burn_qnn::quant::Bits::new(4).unwrap();
    let close = |what: &str, got: &[f32], want: &[f32]| {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * scale, "{what} {i}: {g} vs {w}");
        }
    };
    let grads_of = |seed: u64,
                    forward: &dyn Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
                    x: &[f32],
                    w: &[f32],
                    x_shape: [usize; 2],
                    w_shape: [usize; 2],
                    r: &[f32]| {
        let x = tensor::<B, 2>(x.to_vec(), x_shape, device).require_grad();
        let w = tensor::<B, 2>(w.to_vec(), w_shape, device).require_grad();
        let y = forward(x.clone(), w.clone());
        let out_shape = y.dims();
        B::seed(device, seed);
        let grads = (y * tensor::<B, 2>(r.to_vec(), out_shape, device))
            .sum()
            .backward();
        (
            values(x.grad(&grads).unwrap()),
            values(w.grad(&grads).unwrap()),
        )
    };

    // Fully connected: 70 → 9 over 5 rows.
    let (x, w) = (
        uniform(5 * 70, -2.0, 2.0, 71),
        uniform(70 * 9, -1.5, 1.5, 72),
    );
    let r = uniform(5 * 9, -1.0, 1.0, 73);
    let layer = |rounding: GradRounding| {
        let layer = BinaryLinearConfig::new(70, 9)
            .with_bias(false)
            .with_grad_bits(Some(bits))
            .with_grad_rounding(rounding)
            .init::<B>(device);
        move |x: Tensor<B, 2>, w: Tensor<B, 2>| {
            let layer = BinaryLinear {
                weight: Param::from_tensor(w),
                ..layer.clone()
            };
            layer.forward(x)
        }
    };
    let stochastic = layer(GradRounding::Stochastic);
    let got = grads_of(9, &stochastic, &x, &w, [5, 70], [70, 9], &r);
    let reference = |x: Tensor<B, 2>, w: Tensor<B, 2>| {
        burn_qnn::quant::quantize_gradient_stochastic(
            burn_qnn::quant::sign(x).matmul(burn_qnn::quant::sign(w)),
            bits,
        )
    };
    let want = grads_of(9, &reference, &x, &w, [5, 70], [70, 9], &r);
    close("linear, stochastic: grad x", &got.0, &want.0);
    close("linear, stochastic: grad w", &got.1, &want.1);
    assert!(got.0.iter().any(|&g| g != 0.0), "some x gradient");
    let nearest = grads_of(
        9,
        &layer(GradRounding::Nearest),
        &x,
        &w,
        [5, 70],
        [70, 9],
        &r,
    );
    assert_ne!(got.1, nearest.1, "stochastic rounding changed nothing");

    // Convolution: 5 → 7 channels, 3×3, padding 1, on 2 images of 6×5.
    let conv = BinaryConv2dConfig::new([5, 7], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .with_grad_bits(Some(bits))
        .with_grad_rounding(GradRounding::Stochastic)
        .init::<B>(device);
    let (x_shape, w_shape, out_shape) = ([2, 5, 6, 5], [7, 5, 3, 3], [2, 7, 6, 5]);
    let x = uniform(2 * 5 * 6 * 5, -2.0, 2.0, 74);
    let w = uniform(7 * 5 * 9, -1.5, 1.5, 75);
    let r = uniform(2 * 7 * 6 * 5, -1.0, 1.0, 76);
    let conv_grads = |forward: &dyn Fn(Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>| {
        let x = tensor::<B, 4>(x.clone(), x_shape, device).require_grad();
        let w = tensor::<B, 4>(w.clone(), w_shape, device).require_grad();
        let y = forward(x.clone(), w.clone());
        B::seed(device, 10);
        let grads = (y * tensor::<B, 4>(r.clone(), out_shape, device))
            .sum()
            .backward();
        (
            values(x.grad(&grads).unwrap()),
            values(w.grad(&grads).unwrap()),
        )
    };
    let got = conv_grads(&|x, w| {
        let layer = BinaryConv2d {
            weight: Param::from_tensor(w),
            ..conv.clone()
        };
        layer.forward(x)
    });
    let want = conv_grads(&|x, w| {
        burn_qnn::quant::quantize_gradient_stochastic(
            burn_qnn::ops::binary_conv2d_reference(x, w, &conv.geometry),
            bits,
        )
    });
    close("conv, stochastic: grad x", &got.0, &want.0);
    close("conv, stochastic: grad w", &got.1, &want.1);
    assert!(got.1.iter().any(|&g| g != 0.0), "some weight gradient");
}

/// The bit-plane layers equal the float product of the scaled 8-bit inputs and the weight
/// signs.
pub fn bit_plane_layers<B: QnnBackend>(device: &B::Device) {
    let pixels: Vec<f32> = uniform(2 * 3 * 5 * 5, 0.0, 256.0, 3)
        .into_iter()
        .map(f32::floor)
        .collect();
    let scaled: Vec<f32> = pixels.iter().map(|p| p / 127.5 - 1.0).collect();
    let conv = BitPlaneConv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .with_bias(false)
        .init::<B>(device);
    let x = tensor::<B, 4>(scaled.clone(), [2, 3, 5, 5], device);
    let y = values(conv.forward(x.clone()));
    let float = values(burn::tensor::module::conv2d(
        x,
        burn_qnn::quant::sign(conv.weight.val()),
        None,
        burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    ));
    for (a, b) in y.iter().zip(&float) {
        assert!((a - b).abs() < 1e-3, "bit-plane conv {a} vs float {b}");
    }
    let linear = BitPlaneLinearConfig::new(75, 6)
        .with_bias(false)
        .init::<B>(device);
    let x = tensor::<B, 2>(scaled, [2, 75], device);
    let y = values(linear.forward(x.clone()));
    let float = values(x.matmul(burn_qnn::quant::sign(linear.weight.val())));
    for (a, b) in y.iter().zip(&float) {
        assert!((a - b).abs() < 1e-3, "bit-plane linear {a} vs float {b}");
    }
}

/// Clipping touches latent weights only; the learning-rate scale is the paper's.
pub fn latent_weights<B: QnnBackend>(device: &B::Device) {
    #[derive(Module, Debug)]
    struct Mixed<B: QnnBackend> {
        binary: burn_qnn::nn::BinaryLinear<B>,
        quant: burn_qnn::nn::QuantLinear<B>,
        float: burn::nn::Linear<B>,
    }
    let mut m = Mixed {
        binary: BinaryLinearConfig::new(3, 2).init(device),
        quant: QuantLinearConfig::new(3, 2)
            .with_bits(Bits::TWO, Bits::TWO)
            .init(device),
        float: burn::nn::LinearConfig::new(3, 2).init(device),
    };
    m.binary.weight = m.binary.weight.map(|w| w * 4.0);
    m.quant.weight = m.quant.weight.map(|w| w * 4.0);
    m.float.weight = m.float.weight.map(|w| w.ones_like() * 4.0);
    m.binary.bias = m.binary.bias.map(|b| b.map(|b| b.ones_like() * 3.0));
    let m = clip_latent_weights(m);
    let max = |t: Tensor<B, 2>| values(t.abs().max().reshape([1]))[0];
    assert!(max(m.binary.weight.val()) <= 1.0 && max(m.quant.weight.val()) <= 1.0);
    assert_eq!(
        max(m.float.weight.val()),
        4.0,
        "float layers are left alone"
    );
    let bias = m.binary.bias.unwrap().val();
    assert_eq!(values(bias), [3.0, 3.0], "biases are left alone");
    // A 3×3 conv 128 → 256: fan_in 1152, fan_out 2304.
    let scale = glorot_lr_scale(1152, 2304);
    assert!((scale - (3456.0f64 / 1.5).sqrt()).abs() < 1e-9);
}

/// Random images in `[−1, 1]` quantized to 8-bit levels.
pub fn images<B: Backend>(n: usize, c: usize, side: usize, device: &B::Device) -> Tensor<B, 4> {
    let pixels: Vec<f32> = uniform(n * c * side * side, 0.0, 256.0, 21)
        .into_iter()
        .map(|p| p.floor() / 127.5 - 1.0)
        .collect();
    tensor(pixels, [n, c, side, side], device)
}

/// A few training steps (Adam, squared hinge, clipping) so batch norm statistics and weights
/// are those of a trained network; returns the evaluation-mode network.
pub fn trained<B: QnnAutodiffBackend>(
    config: &NetConfig,
    device: &B::Device,
) -> Net<B::InnerBackend> {
    let mut net = config.init::<B>(device);
    let mut optim = AdamConfig::new().init();
    let x = images::<B>(8, config.in_channels, config.image_size, device);
    let labels: Vec<i64> = (0..8).map(|i| i % config.classes as i64).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [8]), device);
    for _ in 0..2 {
        let loss = SquaredHingeLoss.forward(net.forward(x.clone()), targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = clip_latent_weights(optim.step(1e-2, net, grads));
    }
    net.valid()
}

/// The packed inference form gives the evaluation-mode outputs of the network, exactly, and
/// the same after a save and load.
pub fn packed_inference<B: QnnAutodiffBackend>(device: &B::Device) {
    let configs = [
        NetConfig::cifar10().with_width(1.0 / 32.0),
        NetConfig::new(1, 8, vec![], vec![20, 12]),
    ];
    for config in configs {
        let net = trained::<B>(&config, device);
        let packed = PackedNet::from_net(&net).unwrap();
        let x = images::<B::InnerBackend>(3, config.in_channels, config.image_size, device);
        let expected = values(net.forward(x.clone()));
        assert_exact(
            "packed net",
            &expected,
            &values(packed.forward(x.clone())),
            &expected,
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.bin");
        packed.save(&path).unwrap();
        let loaded = PackedNet::<B::InnerBackend>::load(&path, device).unwrap();
        assert_eq!(loaded.record(), packed.record());
        assert_exact(
            "loaded net",
            &expected,
            &values(loaded.forward(x)),
            &expected,
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["net.bin"], "only the finished file is left");

        // Statistics and scales anywhere, γ of both signs: thresholds inside the products'
        // range, and channels whose sign falls as their product rises (pooled by OR).
        let scrambled = scramble_norms(net, 7);
        let packed = PackedNet::from_net(&scrambled).unwrap();
        for n in [1, 4] {
            let x = images::<B::InnerBackend>(n, config.in_channels, config.image_size, device);
            let expected = values(scrambled.forward(x.clone()));
            assert_exact(
                "packed net, scrambled batch norms",
                &expected,
                &values(packed.forward(x)),
                &expected,
            );
        }
        assert_eq!(
            packed.runs_on_cpu_kernels(),
            <B::InnerBackend as QnnBackend>::qnn_computes_on_host(),
            "the CPU-kernel path takes the paper's layouts"
        );
        assert_eq!(
            packed.cpu_kernels_unavailable().is_none(),
            packed.runs_on_cpu_kernels(),
            "{:?}",
            packed.cpu_kernels_unavailable()
        );
    }
}

/// The network with random batch norm statistics and scales (γ of either sign) of the size of
/// each layer's products.
pub fn scramble_norms<B: QnnBackend>(mut net: Net<B>, seed: u64) -> Net<B> {
    let config = net.config.clone();
    let conv_fan_in = (0..config.conv_channels.len()).map(|i| match i {
        0 => config.in_channels * 9,
        i => config.conv_channels[i - 1] * 9,
    });
    let mut dense_fan_in = vec![config.flat_features()];
    dense_fan_in.extend(config.hidden_units.iter().copied());
    let norms = net.conv_norms.iter_mut().chain(net.dense_norms.iter_mut());
    let fan_ins = conv_fan_in.chain(dense_fan_in);
    for (i, (norm, fan_in)) in norms.zip(fan_ins).enumerate() {
        let seed = seed + 10 * i as u64;
        let scale = (fan_in as f32).sqrt();
        let c = norm.gamma.dims()[0];
        let device = norm.gamma.device();
        let flips = uniform(c, -1.0, 1.0, seed);
        let gamma: Vec<f32> = uniform(c, 0.2, 2.0, seed + 1)
            .iter()
            .zip(&flips)
            .map(|(g, f)| g * f.signum())
            .collect();
        let vector = |v: Vec<f32>| tensor::<B, 1>(v, [c], &device);
        norm.gamma = Param::from_tensor(vector(gamma));
        norm.beta = Param::from_tensor(vector(uniform(c, -1.0, 1.0, seed + 2)));
        norm.running_mean = RunningState::new(vector(uniform(c, -scale, scale, seed + 3)));
        let var = uniform(c, 0.25 * scale * scale, 4.0 * scale * scale, seed + 4);
        norm.running_var = RunningState::new(vector(var));
    }
    net
}

/// On NdArray (f32), the packed paper networks run on the CPU kernels with bit activations.
#[cfg(feature = "ndarray")]
#[test]
fn ndarray_packed_nets_run_on_cpu_kernels() {
    let _rng = crate::reference::backend_rng_lock();
    type B = burn::backend::NdArray;
    let device = Default::default();
    for config in [
        NetConfig::cifar10().with_width(1.0 / 32.0),
        NetConfig::svhn().with_width(0.3),
        NetConfig::mnist_mlp().with_width(1.0 / 64.0),
    ] {
        let net = scramble_norms(config.init::<B>(&device), 3);
        let packed = PackedNet::from_net(&net).unwrap();
        assert!(packed.runs_on_cpu_kernels(), "{config:?}");
        let x = images::<B>(2, config.in_channels, config.image_size, &device);
        let expected = values(net.forward(x.clone()));
        assert_exact("packed", &expected, &values(packed.forward(x)), &expected);
    }
}

/// Where the CPU kernels do not take a network, the packed form says why, and still gives the
/// network's outputs on tensor operations.
#[cfg(feature = "ndarray")]
#[test]
fn ndarray_packed_nets_say_why_they_leave_the_cpu_kernels() {
    let _rng = crate::reference::backend_rng_lock();
    type B = burn::backend::NdArray;
    let device = Default::default();
    // 16 input channels × 9 taps of 8-bit codes: the first convolution's products could leave
    // the 16-bit lanes of its kernel.
    let config = NetConfig::new(16, 4, vec![8], vec![12]);
    let net = scramble_norms(config.init::<B>(&device), 5);
    let packed = PackedNet::from_net(&net).unwrap();
    assert!(!packed.runs_on_cpu_kernels());
    let why = packed.cpu_kernels_unavailable().unwrap();
    assert!(why.contains("conv 0") && why.contains("16-bit"), "{why}");
    let x = images::<B>(2, 16, 4, &device);
    let expected = values(net.forward(x.clone()));
    assert_exact("packed", &expected, &values(packed.forward(x)), &expected);
}

/// Corrupt, truncated and mismatched records give errors, not panics.
pub fn bad_packed_records<B: QnnBackend>(device: &B::Device) {
    let config = NetConfig::new(1, 8, vec![4, 4], vec![6]);
    let net = config.init::<B>(device);
    let packed = PackedNet::from_net(&net).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.bin");
    packed.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = PackedNet::<B>::load(&path, device).unwrap_err();
    assert!(
        matches!(err, PackedNetError::Recorder { .. }),
        "truncated: {err}"
    );
    assert!(err.to_string().contains("net.bin"), "names the file: {err}");

    std::fs::write(&path, b"not a record at all").unwrap();
    assert!(PackedNet::<B>::load(&path, device).is_err());

    let missing = PackedNet::<B>::load(dir.path().join("absent.bin"), device).unwrap_err();
    assert!(matches!(missing, PackedNetError::Io { .. }));

    // A record whose configuration does not match its layers.
    let mut record = packed.record().clone();
    record.config.conv_channels = vec![4, 8];
    let err = PackedNet::<B>::from_record(record, device).unwrap_err();
    assert!(
        matches!(err, PackedNetError::Packed { .. }),
        "mismatch: {err}"
    );
    let mut record = packed.record().clone();
    record.dense.pop();
    assert!(matches!(
        PackedNet::<B>::from_record(record, device),
        Err(PackedNetError::Mismatch { .. })
    ));
    // Configurations the packed form cannot run, and values that would make outputs NaN: a
    // typed error naming the layer, not a panic.
    let invalid = |record: burn_qnn::inference::PackedNetRecord| match PackedNet::<B>::from_record(
        record, device,
    ) {
        Err(PackedNetError::Invalid { layer, what }) => format!("{layer}: {what}"),
        Err(other) => panic!("expected an invalid-value error, got {other}"),
        Ok(_) => panic!("expected an invalid-value error, got a network"),
    };
    let mut record = packed.record().clone();
    record.config.image_size = 0;
    assert!(invalid(record).contains("image_size is 0"));
    let mut record = packed.record().clone();
    record.config.image_size = 1;
    assert!(invalid(record).starts_with("conv 1: pooling a 1×1 image"));
    let mut record = packed.record().clone();
    record.config.conv_channels = vec![4; 200];
    assert!(invalid(record).starts_with("conv 7: pooling a 1×1 image"));
    let mut record = packed.record().clone();
    record.config.conv_channels[1] = 0;
    assert!(invalid(record).starts_with("conv 1: 0 output channels"));
    let mut record = packed.record().clone();
    record.config.hidden_units[0] = 0;
    assert!(invalid(record).starts_with("dense 0: 0 units"));
    let mut record = packed.record().clone();
    record.config.in_channels = 0;
    assert!(invalid(record).contains("in_channels is 0"));
    let set_norm = |record: &mut burn_qnn::inference::PackedNetRecord,
                    edit: &dyn Fn(&mut Vec<f32>, &mut f64)| {
        for layer in record.convs.iter_mut().chain(record.dense.iter_mut()) {
            if let burn_qnn::inference::OutputRecord::Norm { var, epsilon, .. } = &mut layer.output
            {
                edit(var, epsilon);
                return;
            }
        }
        panic!("no float batch norm in the record");
    };
    for (edit, expected) in [
        (
            &(|var: &mut Vec<f32>, _: &mut f64| var[0] = f32::NAN)
                as &dyn Fn(&mut Vec<f32>, &mut f64),
            "variance of channel 0 is NaN",
        ),
        (
            &|var: &mut Vec<f32>, _: &mut f64| var[1] = -1.0,
            "variance of channel 1 is -1",
        ),
        (
            &|_: &mut Vec<f32>, eps: &mut f64| *eps = f64::NAN,
            "ε is NaN",
        ),
    ] {
        let mut record = packed.record().clone();
        set_norm(&mut record, edit);
        let message = invalid(record);
        assert!(message.contains(expected), "{message}");
    }
    let mut record = packed.record().clone();
    let threshold = record
        .convs
        .iter_mut()
        .chain(record.dense.iter_mut())
        .find_map(|layer| match &mut layer.output {
            burn_qnn::inference::OutputRecord::Threshold { lo, .. } => Some(lo),
            _ => None,
        })
        .expect("a folded threshold in the record");
    threshold[0] = f32::NAN;
    assert!(invalid(record).contains("lower threshold of channel 0 is NaN"));

    let mut record = packed.record().clone();
    record.format += 1;
    assert!(matches!(
        PackedNet::<B>::from_record(record, device),
        Err(PackedNetError::Format { .. })
    ));
    let float = config
        .with_precision(burn_qnn::models::Precision::Float)
        .init::<B>(device);
    assert!(matches!(
        PackedNet::from_net(&float),
        Err(PackedNetError::NotBinary)
    ));
}

/// An ordinary Burn model made binary by swapping layer types trains: the loss goes down.
pub fn drop_in_training<B: QnnAutodiffBackend>(device: &B::Device) {
    #[derive(Module, Debug)]
    struct Small<B: QnnBackend> {
        conv: burn_qnn::nn::BinaryConv2d<B>, // was burn::nn::conv::Conv2d<B>
        norm: burn::nn::BatchNorm<B>,
        fc: burn_qnn::nn::BinaryLinear<B>, // was burn::nn::Linear<B>
        out: burn::nn::BatchNorm<B>,
    }
    impl<B: QnnBackend> Small<B> {
        fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
            let x = self.norm.forward(self.conv.forward(x));
            self.out.forward(self.fc.forward(x.flatten(1, 3)))
        }
    }
    let mut model = Small::<B> {
        conv: BinaryConv2dConfig::new([1, 8], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device),
        norm: BatchNormConfig::new(8).init(device),
        fc: BinaryLinearConfig::new(8 * 6 * 6, 2).init(device),
        out: BatchNormConfig::new(2).init(device),
    };
    // Two classes: a bright left half or a bright right half, with noise.
    let n = 32;
    let mut pixels = uniform(n * 36, -1.6, 1.6, 77);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
    for (i, &label) in labels.iter().enumerate() {
        for p in 0..36 {
            let right = p % 6 >= 3;
            pixels[i * 36 + p] += if right == (label == 1) { 1.0 } else { -1.0 };
        }
    }
    let x = tensor::<B, 4>(pixels, [n, 1, 6, 6], device);
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device);
    let mut optim = AdamConfig::new().init();
    let mut losses = vec![];
    for _ in 0..30 {
        let loss = SquaredHingeLoss.forward(model.forward(x.clone()), targets.clone());
        losses.push(values(loss.clone().inner())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = clip_latent_weights(optim.step(5e-2, model, grads));
    }
    assert!(
        losses[losses.len() - 1] < 0.5 * losses[0],
        "the loss should fall: {losses:?}"
    );
}

/// The summary counts the paper's CIFAR-10 network as written out by hand from its shapes.
pub fn cifar10_summary<B: QnnBackend>(device: &B::Device) {
    let net = NetConfig::cifar10().init::<B>(device);
    let s = net.summary();
    // 3×3 convolutions: (C_in, C_out, side of the output before pooling).
    let convs: [(u64, u64, u64); 6] = [
        (3, 128, 32),
        (128, 128, 32),
        (128, 256, 16),
        (256, 256, 16),
        (256, 512, 8),
        (512, 512, 8),
    ];
    let dense: [(u64, u64); 3] = [(512 * 4 * 4, 1024), (1024, 1024), (1024, 10)];
    let conv_macs = |&(i, o, side): &(u64, u64, u64)| i * o * 9 * side * side;
    assert_eq!(s.macs_8bit(), conv_macs(&convs[0]));
    let binary_macs: u64 = convs[1..].iter().map(conv_macs).sum::<u64>()
        + dense.iter().map(|(i, o)| i * o).sum::<u64>();
    assert_eq!(s.macs_binary(), binary_macs);
    assert!(
        (0.60e9..0.62e9).contains(&(binary_macs as f64)),
        "about 0.61e9 binary MACs"
    );
    let weights: u64 = convs.iter().map(|(i, o, _)| i * o * 9).sum::<u64>()
        + dense.iter().map(|(i, o)| i * o).sum::<u64>();
    assert_eq!(s.params_1bit(), weights);
    let norms: u64 =
        convs.iter().map(|c| 4 * c.1).sum::<u64>() + dense.iter().map(|d| 4 * d.1).sum::<u64>();
    assert_eq!(s.params_32bit(), norms);
    assert_eq!(s.macs_float(), 0);
    assert_eq!(s.memory_bytes(), weights.div_ceil(8) + 4 * norms);
    assert!(s.to_string().contains("compression ratio"));
    let float = NetConfig::cifar10()
        .with_precision(burn_qnn::models::Precision::Float)
        .init::<B>(device);
    let f = float.summary();
    assert_eq!(f.params_1bit(), 0);
    assert_eq!(f.macs_float(), s.macs_binary() + s.macs_8bit());
}

/// The packed file of the CIFAR-10 network (width 1) is at least 25× smaller than the f32
/// model's file (both through Burn's named MessagePack recorder).
pub fn cifar10_file_sizes<B: QnnBackend>(device: &B::Device) {
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
    let net = NetConfig::cifar10().init::<B>(device);
    let dir = tempfile::tempdir().unwrap();
    let f32_path = dir.path().join("f32");
    net.clone()
        .save_file(
            &f32_path,
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
        )
        .unwrap();
    let packed_path = dir.path().join("packed.mpk");
    PackedNet::from_net(&net)
        .unwrap()
        .save(&packed_path)
        .unwrap();
    let f32_bytes = std::fs::metadata(f32_path.with_extension("mpk"))
        .unwrap()
        .len();
    let packed_bytes = std::fs::metadata(&packed_path).unwrap().len();
    let ratio = f32_bytes as f64 / packed_bytes as f64;
    assert!(
        ratio >= 25.0,
        "f32 {f32_bytes} B, packed {packed_bytes} B: {ratio:.1}×"
    );
}

/// The packed form of a `QuantLinear` (codes on the bit-serial kernel) gives the layer's
/// outputs, for every pairing of linear quantizers, sizes past a word included; power-of-two
/// and float inputs are refused with an error.
pub fn packed_quant_linear<B: QnnBackend>(device: &B::Device) {
    let bits = |k| Bits::new(k).unwrap();
    let cases = [
        (
            Quantizer::Signed(bits(2)),
            Some(Quantizer::Unsigned(bits(2))),
            70,
            9,
        ),
        (
            Quantizer::Signed(bits(3)),
            Some(Quantizer::Unsigned(bits(1))),
            129,
            4,
        ),
        (Quantizer::Sign, Some(Quantizer::Unsigned(bits(4))), 64, 33),
        (Quantizer::Sign, Some(Quantizer::Sign), 200, 7),
        (
            Quantizer::Signed(bits(8)),
            Some(Quantizer::Signed(bits(2))),
            31,
            5,
        ),
        (
            Quantizer::Signed(bits(1)),
            Some(Quantizer::Unsigned(bits(8))),
            300,
            16,
        ),
    ];
    for (i, (weights, inputs, d_in, d_out)) in cases.into_iter().enumerate() {
        let mut layer = QuantLinearConfig::new(d_in, d_out)
            .with_weight_quantizer(weights)
            .with_input_quantizer(inputs)
            .init::<B>(device);
        layer.bias = Some(Param::from_tensor(tensor::<B, 1>(
            uniform(d_out, -1.0, 1.0, 40 + i as u64),
            [d_out],
            device,
        )));
        let packed = PackedQuantLinear::from_layer(&layer).unwrap();
        // Inputs past both ends of the quantizers' ranges, and exact zeros.
        let mut x = uniform(5 * d_in, -1.3, 1.3, 50 + i as u64);
        x[0] = 0.0;
        x[1] = -0.0;
        let x = tensor::<B, 2>(x, [5, d_in], device);
        let expected = values(layer.forward(x.clone()));
        let got = values(packed.forward(x));
        for (e, g) in expected.iter().zip(&got) {
            // The layer sums `d_in` quantized products in f32.
            assert!(
                (e - g).abs() <= 1e-5 * d_in as f32 * e.abs().max(1.0),
                "case {i}: layer {e}, packed {g}"
            );
        }
    }
    let mut layer = QuantLinearConfig::new(4, 2).init::<B>(device);
    layer.input_quantizer = None;
    let float_inputs = PackedQuantLinear::from_layer(&layer).err();
    layer.input_quantizer = Some(Quantizer::Unsigned(Bits::TWO));
    layer.weight_quantizer = Quantizer::Pow2(Pow2Range::new(-4, 0).unwrap());
    assert_refused(float_inputs, PackedQuantLinear::from_layer(&layer).err());
}

/// A packed k-bit layer refuses float inputs and power-of-two weights, and says which.
fn assert_refused(float_inputs: Option<PackedNetError>, pow2_weights: Option<PackedNetError>) {
    for (error, what) in [
        (float_inputs, "float inputs"),
        (pow2_weights, "power-of-two"),
    ] {
        match error {
            Some(error @ PackedNetError::Unsupported { .. }) => {
                assert!(error.to_string().contains(what), "{error}")
            }
            other => panic!("{what}: expected an Unsupported error, got {other:?}"),
        }
    }
}

/// The packed form of a `QuantConv2d` (weight codes, the convolution of codes) gives the
/// layer's outputs: padded and not, stride and dilation, channel counts past a word, every kind
/// of grid, 8-bit operands; its weights take `k` bits each (rows of whole words); power-of-two
/// and float inputs are refused with an error.
pub fn packed_quant_conv2d<B: QnnBackend>(device: &B::Device) {
    let bits = |k| Bits::new(k).unwrap();
    let padded = PaddingConfig2d::Explicit(1, 1, 1, 1);
    let cases = [
        (
            Quantizer::Signed(bits(2)),
            Quantizer::Unsigned(bits(2)),
            [3, 5],
            [3, 3],
            padded.clone(),
            [1, 1],
            [1, 1],
        ),
        (
            Quantizer::Sign,
            Quantizer::Sign,
            [70, 4],
            [3, 3],
            PaddingConfig2d::Valid,
            [2, 1],
            [1, 2],
        ),
        (
            Quantizer::Signed(bits(3)),
            Quantizer::Signed(bits(2)),
            [5, 6],
            [3, 2],
            padded,
            [1, 2],
            [1, 1],
        ),
        (
            Quantizer::Signed(bits(8)),
            Quantizer::Unsigned(bits(8)),
            [300, 3],
            [1, 1],
            PaddingConfig2d::Valid,
            [1, 1],
            [1, 1],
        ),
    ];
    for (i, (weights, inputs, channels, kernel, padding, stride, dilation)) in
        cases.into_iter().enumerate()
    {
        let mut layer = QuantConv2dConfig::new(channels, kernel)
            .with_weight_quantizer(weights)
            .with_input_quantizer(Some(inputs))
            .with_padding(padding)
            .with_stride(stride)
            .with_dilation(dilation)
            .init::<B>(device);
        let [c_in, c_out] = channels;
        layer.bias = Some(Param::from_tensor(tensor::<B, 1>(
            uniform(c_out, -1.0, 1.0, 60 + i as u64),
            [c_out],
            device,
        )));
        let packed = PackedQuantConv2d::from_layer(&layer).unwrap();
        let taps = c_in * kernel[0] * kernel[1];
        let words = taps.div_ceil(64);
        assert_eq!(
            packed.weight_bytes().len(),
            c_out * CodeGrid::of(weights).unwrap().bits.get() as usize * words * 8,
            "case {i}: weight bytes"
        );
        let mut x = uniform(2 * c_in * 7 * 6, -1.3, 1.3, 70 + i as u64);
        x[0] = 0.0;
        x[1] = -0.0;
        let x = tensor::<B, 4>(x, [2, c_in, 7, 6], device);
        let expected = values(layer.forward(x.clone()));
        let got = values(packed.forward(x));
        assert_eq!(expected.len(), got.len(), "case {i}: output size");
        for (e, g) in expected.iter().zip(&got) {
            // The layer sums `taps` quantized products in f32.
            assert!(
                (e - g).abs() <= 1e-5 * taps as f32 * e.abs().max(1.0),
                "case {i}: layer {e}, packed {g}"
            );
        }
    }
    let mut layer = QuantConv2dConfig::new([2, 3], [3, 3]).init::<B>(device);
    layer.input_quantizer = None;
    let float_inputs = PackedQuantConv2d::from_layer(&layer).err();
    layer.input_quantizer = Some(Quantizer::Unsigned(Bits::TWO));
    layer.weight_quantizer = Quantizer::Pow2(Pow2Range::new(-4, 0).unwrap());
    assert_refused(float_inputs, PackedQuantConv2d::from_layer(&layer).err());
}
