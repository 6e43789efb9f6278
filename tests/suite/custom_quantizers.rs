//! Quantizers beside the closed `Quantizer` set: Bi-Real Net's two, a user's own through
//! `quant::straight_through`, and the quant layers carrying them, against their definitions.

use burn::{
    module::Param,
    tensor::{Tensor, backend::AutodiffBackend, module::conv2d, ops::ConvOptions},
};
use burn_qnn::{
    QnnBackend,
    nn::{QuantConv2dConfig, QuantLinearConfig},
    quant::{self, ApproxSign, MagnitudeAwareSign, Operand, Quantize},
};

use crate::quantizers::edge_inputs;
use crate::reference::{self as r, assert_exact, tensor, uniform, values};

/// ApproxSign's derivative, `2 − 2|x|` on `[−1, 1]`, in the f32 operations of its formula.
fn approx_sign_derivative(x: f32) -> f32 {
    if r::pass(x, -1.0, 1.0) == 1.0 {
        x.abs() * -2.0 + 2.0
    } else {
        0.0
    }
}

/// `mean |x|` of each slice along `kept_axis` (one slice for `None`), in f64, for a row-major
/// tensor of `shape`; with the index of each element's slice.
fn slice_means(x: &[f32], shape: &[usize], kept_axis: Option<usize>) -> (Vec<f64>, Vec<usize>) {
    let slice_of = |flat: usize| match kept_axis {
        None => 0,
        Some(axis) => {
            let inner: usize = shape[axis + 1..].iter().product();
            (flat / inner) % shape[axis]
        }
    };
    let slices = kept_axis.map_or(1, |axis| shape[axis]);
    let mut sums = vec![0f64; slices];
    let mut counts = vec![0usize; slices];
    let owners: Vec<usize> = (0..x.len()).map(slice_of).collect();
    for (&v, &s) in x.iter().zip(&owners) {
        sums[s] += f64::from(v.abs());
        counts[s] += 1;
    }
    let means = sums
        .iter()
        .zip(&counts)
        .map(|(s, &c)| s / c as f64)
        .collect();
    (means, owners)
}

fn assert_close(what: &str, actual: &[f32], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(a) - e).abs() <= tolerance * e.abs().max(1.0),
            "{what}: element {i} is {a}, expected {e}"
        );
    }
}

pub fn approx_sign<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    let mut inputs = uniform(300, -2.5, 2.5, 61);
    inputs.extend(edge_inputs());
    let n = inputs.len();
    let upstream = uniform(n, -2.0, 2.0, 62);
    let x = tensor::<B, 2>(inputs.clone(), [1, n], device).require_grad();
    let y = ApproxSign.quantize(x.clone(), Operand::Input);
    let expected: Vec<f32> = inputs.iter().map(|&x| r::sign(x)).collect();
    assert_exact("ApproxSign forward", &inputs, &values(y.clone()), &expected);

    let grads = (y * tensor::<B, 2>(upstream.clone(), [1, n], device))
        .sum()
        .backward();
    let dx = values(x.grad(&grads).expect("the input has a gradient"));
    let expected: Vec<f32> = inputs
        .iter()
        .zip(&upstream)
        .map(|(&x, &g)| g * approx_sign_derivative(x))
        .collect();
    assert_exact("ApproxSign gradient", &inputs, &dx, &expected);
}

/// Magnitude-aware sign of `inputs` shaped `shape` against its definition: forward and gradient.
fn check_magnitude_aware<B: AutodiffBackend + QnnBackend, const D: usize>(
    inputs: Vec<f32>,
    shape: [usize; D],
    operand: Operand,
    device: &B::Device,
) {
    let kept_axis = match operand {
        Operand::Input => (D > 1).then_some(0),
        Operand::Weight { output_axis } => Some(output_axis),
    };
    let (means, owners) = slice_means(&inputs, &shape, kept_axis);
    let upstream = uniform(inputs.len(), -2.0, 2.0, 63);
    let x = tensor::<B, D>(inputs.clone(), shape, device).require_grad();
    let y = MagnitudeAwareSign.quantize(x.clone(), operand);
    assert_eq!(y.dims(), shape);
    let expected: Vec<f64> = inputs
        .iter()
        .zip(&owners)
        .map(|(&x, &s)| f64::from(r::sign(x)) * means[s])
        .collect();
    let what = format!("MagnitudeAwareSign {operand:?} of {shape:?}");
    assert_close(
        &format!("{what} forward"),
        &values(y.clone()),
        &expected,
        1e-6,
    );

    let grads = (y * tensor::<B, D>(upstream.clone(), shape, device))
        .sum()
        .backward();
    let dx = values(x.grad(&grads).unwrap());
    let expected: Vec<f64> = inputs
        .iter()
        .zip(&upstream)
        .zip(&owners)
        .map(|((&x, &g), &s)| f64::from(g) * means[s] * f64::from(r::pass(x, -1.0, 1.0)))
        .collect();
    assert_close(&format!("{what} gradient"), &dx, &expected, 1e-6);
}

pub fn magnitude_aware_sign<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    check_magnitude_aware::<B, 4>(
        uniform(5 * 3 * 2 * 3, -1.5, 1.5, 64),
        [5, 3, 2, 3],
        Operand::Weight { output_axis: 0 },
        device,
    );
    check_magnitude_aware::<B, 2>(
        uniform(7 * 6, -1.5, 1.5, 65),
        [7, 6],
        Operand::Weight { output_axis: 1 },
        device,
    );
    check_magnitude_aware::<B, 3>(
        uniform(4 * 5 * 6, -1.5, 1.5, 66),
        [4, 5, 6],
        Operand::Input,
        device,
    );
    check_magnitude_aware::<B, 1>(uniform(9, -1.5, 1.5, 67), [9], Operand::Input, device);
}

pub fn magnitude_aware_sign_bad_axis<B: QnnBackend>(device: &B::Device) {
    let w = Tensor::<B, 2>::ones([2, 3], device);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        MagnitudeAwareSign.quantize(w, Operand::Weight { output_axis: 2 })
    }))
    .expect_err("axis 2 of a rank-2 tensor must panic");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(message.contains("output axis 2"), "{message}");
}

/// Where no gradient is tracked, the derivative is never computed.
pub fn derivative_only_when_tracked<B: QnnBackend>(device: &B::Device) {
    let x = tensor::<B, 1>(vec![-1.0, 0.5], [2], device);
    let y = quant::straight_through(x, |x| x * 3.0, |_| panic!("derivative computed"));
    assert_eq!(values(y), [-3.0, 1.5]);
}

/// A user's quantizer: `value` and `derivative` of their own, chained through further ops.
pub fn user_straight_through<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    let inputs = uniform(50, -2.0, 2.0, 68);
    let x = tensor::<B, 2>(inputs.clone(), [5, 10], device).require_grad();
    // value x², derivative cos(x); then Σ 3·q: ∂/∂x = 3·cos(x).
    let q = quant::straight_through(x.clone(), |x| x.powi_scalar(2), |x| x.cos());
    let expected: Vec<f32> = inputs.iter().map(|&x| x * x).collect();
    assert_exact("user value", &inputs, &values(q.clone()), &expected);
    let dx = values(x.grad(&(q * 3.0).sum().backward()).unwrap());
    let expected: Vec<f64> = inputs.iter().map(|&x| 3.0 * f64::from(x).cos()).collect();
    assert_close("user gradient", &dx, &expected, 1e-5);
}

/// `QuantLinear` with Bi-Real Net's quantizers: `y = q_x(x)·q_w(W)` and both gradients of
/// `Σ u ⊙ y`, against their definitions computed on the host.
pub fn quant_linear_with_bi_real_quantizers<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    let (n, d_in, d_out) = (6, 13, 5);
    let mut layer = QuantLinearConfig::new(d_in, d_out)
        .with_bias(false)
        .init_with_quantizers::<B, _, _>(device, MagnitudeAwareSign, Some(ApproxSign));
    let weight = uniform(d_in * d_out, -1.3, 1.3, 69);
    layer.weight = Param::from_tensor(tensor::<B, 2>(weight.clone(), [d_in, d_out], device));
    let inputs = uniform(n * d_in, -1.5, 1.5, 70);
    let upstream = uniform(n * d_out, -1.0, 1.0, 71);
    let x = tensor::<B, 2>(inputs.clone(), [n, d_in], device).require_grad();
    let y = layer.forward(x.clone());
    let grads = (y.clone() * tensor::<B, 2>(upstream.clone(), [n, d_out], device))
        .sum()
        .backward();

    let (alpha, _) = slice_means(&weight, &[d_in, d_out], Some(1));
    let qw = |i: usize, o: usize| f64::from(r::sign(weight[i * d_out + o])) * alpha[o];
    let qx = |b: usize, i: usize| f64::from(r::sign(inputs[b * d_in + i]));
    let mut y_ref = vec![0f64; n * d_out];
    for b in 0..n {
        for o in 0..d_out {
            y_ref[b * d_out + o] = (0..d_in).map(|i| qx(b, i) * qw(i, o)).sum();
        }
    }
    assert_close("forward", &values(y), &y_ref, 1e-5);

    let mut dw = vec![0f64; d_in * d_out];
    for i in 0..d_in {
        for o in 0..d_out {
            let g: f64 = (0..n)
                .map(|b| qx(b, i) * f64::from(upstream[b * d_out + o]))
                .sum();
            let w = weight[i * d_out + o];
            dw[i * d_out + o] = g * alpha[o] * f64::from(r::pass(w, -1.0, 1.0));
        }
    }
    let dw_actual = values(layer.weight.grad(&grads).expect("weight gradient"));
    assert_close("weight gradient", &dw_actual, &dw, 1e-5);

    let mut dx = vec![0f64; n * d_in];
    for b in 0..n {
        for i in 0..d_in {
            let g: f64 = (0..d_out)
                .map(|o| qw(i, o) * f64::from(upstream[b * d_out + o]))
                .sum();
            dx[b * d_in + i] = g * f64::from(approx_sign_derivative(inputs[b * d_in + i]));
        }
    }
    assert_close(
        "input gradient",
        &values(x.grad(&grads).unwrap()),
        &dx,
        1e-5,
    );
}

/// `QuantConv2d` with Bi-Real Net's quantizers: its output and weight gradient equal Burn's
/// convolution of the quantized operands, the weight gradient scaled by `α_c·1{|w| ≤ 1}`.
pub fn quant_conv2d_with_bi_real_quantizers<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    let ([c_in, c_out], k) = ([3, 4], 3);
    let conv = QuantConv2dConfig::new([c_in, c_out], [k, k])
        .with_bias(false)
        .init_with_quantizers::<B, _, _>(device, MagnitudeAwareSign, Some(ApproxSign));
    let weight = values(conv.weight.val());
    let shape = [c_out, c_in, k, k];
    let (alpha, owners) = slice_means(&weight, &shape, Some(0));
    let inputs = uniform(2 * c_in * 7 * 6, -1.5, 1.5, 72);
    let x_shape = [2, c_in, 7, 6];
    let y = conv.forward(tensor::<B, 4>(inputs.clone(), x_shape, device));
    let upstream = uniform(y.shape().num_elements(), -1.0, 1.0, 73);
    let u = tensor::<B, 4>(upstream, y.dims(), device);
    let grads = (y.clone() * u.clone()).sum().backward();
    let dw = values(conv.weight.grad(&grads).unwrap());

    // The reference: Burn's convolution of the quantized values, computed on the host.
    let qx: Vec<f32> = inputs.iter().map(|&x| r::sign(x)).collect();
    let qw: Vec<f32> = weight
        .iter()
        .zip(&owners)
        .map(|(&w, &c)| r::sign(w) * alpha[c] as f32)
        .collect();
    let qw = tensor::<B, 4>(qw, shape, device).require_grad();
    let reference = conv2d(
        tensor::<B, 4>(qx, x_shape, device),
        qw.clone(),
        None,
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    );
    let expected: Vec<f64> = values(reference.clone())
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close("conv forward", &values(y), &expected, 1e-5);
    let grads = (reference * u).sum().backward();
    let expected: Vec<f64> = values(qw.grad(&grads).unwrap())
        .iter()
        .zip(&weight)
        .zip(&owners)
        .map(|((&g, &w), &c)| f64::from(g) * alpha[c] * f64::from(r::pass(w, -1.0, 1.0)))
        .collect();
    assert_close("conv weight gradient", &dw, &expected, 1e-5);
}

/// A [`Quantizer`] without its code grid: the quant layers then multiply its values in floats.
#[derive(Debug, Clone, Copy)]
struct FloatProduct(burn_qnn::quant::Quantizer);

impl Quantize for FloatProduct {
    fn quantize<B: QnnBackend, const D: usize>(&self, x: Tensor<B, D>, _: Operand) -> Tensor<B, D> {
        quant::quantize(x, self.0)
    }
}

/// `QuantLinear`'s product on the operands' codes (the bit-serial kernel on the CPU backends)
/// equals Burn's float product of the same quantized values, forward and both gradients, for
/// every kind of grid, sizes off the word size and a rank-3 input.
pub fn quant_linear_on_codes<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    use burn_qnn::quant::{Bits, Quantizer};

    let bits = |k| Bits::new(k).unwrap();
    for (seed, (w_q, x_q, d_in)) in [
        (
            Quantizer::Signed(Bits::TWO),
            Quantizer::Unsigned(Bits::TWO),
            70,
        ),
        (Quantizer::Sign, Quantizer::Sign, 130),
        (Quantizer::Signed(bits(3)), Quantizer::Signed(bits(4)), 65),
        (
            Quantizer::Signed(bits(8)),
            Quantizer::Unsigned(bits(8)),
            200,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let d_out = 9;
        let config = QuantLinearConfig::new(d_in, d_out)
            .with_weight_quantizer(w_q)
            .with_input_quantizer(Some(x_q));
        let on_codes = config.init::<B>(device);
        let mut in_floats = config.init_with_quantizers::<B, _, _>(
            device,
            FloatProduct(w_q),
            Some(FloatProduct(x_q)),
        );
        in_floats.weight = Param::from_tensor(on_codes.weight.val().detach().require_grad());
        in_floats.bias = on_codes
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(b.val().detach().require_grad()));
        let inputs = uniform(2 * 3 * d_in, -1.3, 1.3, 200 + seed as u64);
        let shape = [2, 3, d_in];
        let (y, dx, grads) = pass(|x| on_codes.forward(x), &inputs, shape, device);
        let (y_f, dx_f, grads_f) = pass(|x| in_floats.forward(x), &inputs, shape, device);
        let dw = values(on_codes.weight.grad(&grads).unwrap());
        let dw_f = values(in_floats.weight.grad(&grads_f).unwrap());
        assert_agree(
            &format!("{w_q:?} weights, {x_q:?} inputs"),
            [
                ("forward", y, y_f),
                ("input gradient", dx, dx_f),
                ("weight gradient", dw, dw_f),
            ],
        );
    }
}

/// The codes a product of codes keeps for its backward: the nearest code of each value,
/// `bits` bits a value in the bytes of the host packing on every backend, unpacking to the
/// grid's values; `qnn_code_matmul_saving` keeps exactly the codes of `a` and of `bᵀ` beside
/// the product, and both gradients computed from them equal their definitions.
pub fn saved_codes<B: QnnBackend>(device: &B::Device) {
    use burn_qnn::{
        ops::{Encoding, HostPacked},
        quant::{Bits, CodeGrid, Quantizer},
    };

    let (m, k, n) = (3, 70, 5);
    for (seed, q) in [
        Quantizer::Sign,
        Quantizer::Signed(Bits::new(3).unwrap()),
        Quantizer::Unsigned(Bits::TWO),
        Quantizer::Unsigned(Bits::new(8).unwrap()),
    ]
    .into_iter()
    .enumerate()
    {
        let grid = CodeGrid::of(q).unwrap();
        // Random codes, and values near their levels (within a fifth of a step).
        let random_values = |len, seed| -> (Vec<f32>, Vec<f32>) {
            let codes: Vec<f32> = uniform(len, 0.0, grid.bits.max_code() as f32 + 1.0, seed)
                .into_iter()
                .map(f32::floor)
                .collect();
            let noise = uniform(len, -0.2, 0.2, seed + 1);
            let values = codes
                .iter()
                .zip(noise)
                .map(|(&c, e)| grid.scale * (c + e) + grid.offset)
                .collect();
            (codes, values)
        };
        let (a_codes, a) = random_values(m * k, 600 + 2 * seed as u64);
        let (b_codes, b) = random_values(k * n, 700 + 2 * seed as u64);
        let bits = Encoding::Codes(grid.bits);
        let host_a = HostPacked::pack(&a_codes, &[m, k], bits).to_bytes();
        let host_b_t = HostPacked::pack_columns(&b_codes, &[k, n], bits).to_bytes();
        assert_eq!(
            host_a.len(),
            m * grid.bits.get() as usize * k.div_ceil(64) * 8
        );

        let packed = B::qnn_pack_codes(tensor::<B, 2>(a.clone(), [m, k], device), grid);
        assert_eq!(
            B::qnn_packed_to_bytes(&packed),
            host_a,
            "{q:?}: packed codes"
        );
        let levels: Vec<f64> = a_codes
            .iter()
            .map(|&c| f64::from(grid.scale * c + grid.offset))
            .collect();
        let unpacked = values(B::qnn_unpack_codes(&packed, grid));
        assert_close(&format!("{q:?}: unpacked values"), &unpacked, &levels, 1e-6);

        let a_tensor = tensor::<B, 2>(a, [m, k], device);
        let b_tensor = tensor::<B, 2>(b, [k, n], device);
        let (out, saved_a, saved_b_t) =
            B::qnn_code_matmul_saving(a_tensor.clone(), grid, b_tensor.clone(), grid);
        assert_eq!(B::qnn_packed_to_bytes(&saved_a), host_a, "{q:?}: saved a");
        assert_eq!(
            B::qnn_packed_to_bytes(&saved_b_t),
            host_b_t,
            "{q:?}: saved bᵀ"
        );
        let product: Vec<f64> = values(B::qnn_code_matmul(a_tensor, grid, b_tensor, grid))
            .into_iter()
            .map(f64::from)
            .collect();
        assert_close(&format!("{q:?}: product"), &values(out), &product, 1e-6);

        // The product's gradients from the kept codes: `g·bᵀ` and `aᵀ·g`, against their f64
        // definitions from the levels.
        let level = |c: f32| f64::from(grid.scale * c + grid.offset);
        let g = uniform(m * n, -1.0, 1.0, 800 + seed as u64);
        let g_tensor = tensor::<B, 2>(g.clone(), [m, n], device);
        let lhs = values(B::qnn_code_grad_times_rows(
            g_tensor.clone(),
            &saved_b_t,
            grid,
        ));
        let expected: Vec<f64> = (0..m * k)
            .map(|i| {
                let (r, j) = (i / k, i % k);
                (0..n)
                    .map(|c| f64::from(g[r * n + c]) * level(b_codes[j * n + c]))
                    .sum()
            })
            .collect();
        assert_close(&format!("{q:?}: left gradient"), &lhs, &expected, 1e-5);
        let rhs = values(B::qnn_code_rows_transposed_times_grad(
            &saved_a, grid, g_tensor,
        ));
        let expected: Vec<f64> = (0..k * n)
            .map(|i| {
                let (j, c) = (i / n, i % n);
                (0..m)
                    .map(|r| level(a_codes[r * k + j]) * f64::from(g[r * n + c]))
                    .sum()
            })
            .collect();
        assert_close(&format!("{q:?}: right gradient"), &rhs, &expected, 1e-5);
    }
}

/// One training pass: `forward` on `inputs` of `shape`, then the backward of `Σ u ⊙ y` for a
/// fixed random `u`; the output, the input's gradient and all the gradients.
fn pass<B: AutodiffBackend, const D: usize>(
    forward: impl Fn(Tensor<B, D>) -> Tensor<B, D>,
    inputs: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> (Vec<f32>, Vec<f32>, B::Gradients) {
    let x = tensor::<B, D>(inputs.to_vec(), shape, device).require_grad();
    let y = forward(x.clone());
    let upstream = tensor::<B, D>(
        uniform(y.shape().num_elements(), -1.0, 1.0, 500),
        y.dims(),
        device,
    );
    let grads = (y.clone() * upstream).sum().backward();
    (values(y), values(x.grad(&grads).unwrap()), grads)
}

/// Asserts each named pair (ours, the float path's) agrees within 1e-5.
fn assert_agree<const N: usize>(what: &str, pairs: [(&str, Vec<f32>, Vec<f32>); N]) {
    for (name, ours, floats) in pairs {
        let floats: Vec<f64> = floats.iter().map(|&v| f64::from(v)).collect();
        assert_close(&format!("{what}: {name}"), &ours, &floats, 1e-5);
    }
}

/// `QuantConv2d`'s convolution on the operands' codes equals Burn's `conv2d` of the same
/// quantized values, forward and both gradients: padded with unsigned inputs, unpadded with
/// signs (stride and dilation), padded with signed inputs (no code for the padded 0: Burn's
/// `conv2d` then), and 8-bit operands.
pub fn quant_conv2d_on_codes<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    use burn::nn::PaddingConfig2d;
    use burn_qnn::quant::{Bits, Quantizer};

    let bits = |k| Bits::new(k).unwrap();
    let cases = [
        (
            Quantizer::Signed(Bits::TWO),
            Quantizer::Unsigned(Bits::TWO),
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            [1, 1],
            [1, 1],
            3,
        ),
        (
            Quantizer::Sign,
            Quantizer::Sign,
            PaddingConfig2d::Valid,
            [2, 2],
            [2, 2],
            2,
        ),
        (
            Quantizer::Signed(bits(3)),
            Quantizer::Signed(bits(3)),
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            [1, 2],
            [1, 1],
            3,
        ),
        (
            Quantizer::Signed(bits(8)),
            Quantizer::Unsigned(bits(8)),
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            [1, 1],
            [1, 1],
            3,
        ),
    ];
    for (seed, (w_q, x_q, padding, stride, dilation, k)) in cases.into_iter().enumerate() {
        let config = QuantConv2dConfig::new([3, 5], [k, k])
            .with_padding(padding)
            .with_stride(stride)
            .with_dilation(dilation)
            .with_weight_quantizer(w_q)
            .with_input_quantizer(Some(x_q));
        let on_codes = config.init::<B>(device);
        let mut in_floats = config.init_with_quantizers::<B, _, _>(
            device,
            FloatProduct(w_q),
            Some(FloatProduct(x_q)),
        );
        in_floats.weight = Param::from_tensor(on_codes.weight.val().detach().require_grad());
        let bias = uniform(5, -0.5, 0.5, 7);
        let mut on_codes = on_codes;
        on_codes.bias = Some(Param::from_tensor(
            tensor::<B, 1>(bias.clone(), [5], device).require_grad(),
        ));
        in_floats.bias = Some(Param::from_tensor(
            tensor::<B, 1>(bias, [5], device).require_grad(),
        ));
        let shape = [2, 3, 9, 8];
        let inputs = uniform(2 * 3 * 9 * 8, -1.3, 1.3, 400 + seed as u64);
        let (y, dx, grads) = pass(|x| on_codes.forward(x), &inputs, shape, device);
        let (y_f, dx_f, grads_f) = pass(|x| in_floats.forward(x), &inputs, shape, device);
        let dw = values(on_codes.weight.grad(&grads).unwrap());
        let db = values(on_codes.bias.as_ref().unwrap().grad(&grads).unwrap());
        let dw_f = values(in_floats.weight.grad(&grads_f).unwrap());
        let db_f = values(in_floats.bias.as_ref().unwrap().grad(&grads_f).unwrap());
        assert_agree(
            &format!("{w_q:?} weights, {x_q:?} inputs, stride {stride:?}"),
            [
                ("forward", y, y_f),
                ("input gradient", dx, dx_f),
                ("weight gradient", dw, dw_f),
                ("bias gradient", db, db_f),
            ],
        );
    }
}
