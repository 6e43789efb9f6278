//! Forward values and gradients of every quantizer against its definition.

use burn::tensor::{Tensor, backend::AutodiffBackend};
use burn_qnn::{
    QnnBackend,
    quant::{self, Bits, Pow2Range, Quantizer},
};

use crate::reference::{self as r, assert_exact, tensor, uniform, values};

/// Inputs on either side of every boundary the quantizers have.
pub fn edge_inputs() -> Vec<f32> {
    let below_one = 1.0 - f32::EPSILON / 2.0;
    let above_one = 1.0 + f32::EPSILON;
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        below_one,
        above_one,
        -below_one,
        -above_one,
        0.5,
        -0.5,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN,
    ]
}

/// A quantizer with its scalar reference and the pass band of its gradient.
struct Case {
    quantizer: Quantizer,
    reference: Box<dyn Fn(f32) -> f32>,
    band: (f32, f32),
}

impl Case {
    fn new(
        quantizer: Quantizer,
        reference: impl Fn(f32) -> f32 + 'static,
        band: (f32, f32),
    ) -> Self {
        Case {
            quantizer,
            reference: Box::new(reference),
            band,
        }
    }
}

/// Every quantizer: sign, both linear forms at every bit width, and three power-of-two ranges.
fn cases() -> Vec<Case> {
    let mut cases = vec![Case::new(Quantizer::Sign, r::sign, (-1.0, 1.0))];
    for k in 1..=8 {
        let bits = Bits::new(k).unwrap();
        cases.push(Case::new(
            Quantizer::Unsigned(bits),
            move |x| r::unsigned(x, k),
            (0.0, 1.0),
        ));
        cases.push(Case::new(
            Quantizer::Signed(bits),
            move |x| r::signed(x, k),
            (-1.0, 1.0),
        ));
    }
    for (lo, hi) in [(-4, 0), (-126, 127), (-3, 5)] {
        let range = Pow2Range::new(lo, hi).unwrap();
        let edge = 2f32.powi(hi);
        cases.push(Case::new(
            Quantizer::Pow2(range),
            move |x| r::pow2(x, lo, hi),
            (-edge, edge),
        ));
    }
    cases
}

fn check_forward<B: QnnBackend, const D: usize>(
    quantizer: Quantizer,
    reference: &dyn Fn(f32) -> f32,
    shape: [usize; D],
    inputs: Vec<f32>,
    device: &B::Device,
) {
    let expected: Vec<f32> = inputs.iter().map(|&x| reference(x)).collect();
    let out = quant::quantize(tensor::<B, D>(inputs.clone(), shape, device), quantizer);
    assert_eq!(out.dims(), shape, "{quantizer:?}: shape");
    assert_exact(&format!("{quantizer:?}"), &inputs, &values(out), &expected);
}

pub fn sign_forward<B: QnnBackend>(device: &B::Device) {
    let inputs = uniform(2 * 3 * 5 * 7, -3.0, 3.0, 1);
    let expected: Vec<f32> = inputs.iter().map(|&x| r::sign(x)).collect();
    let out = quant::sign(tensor::<B, 4>(inputs.clone(), [2, 3, 5, 7], device));
    assert_exact("sign", &inputs, &values(out), &expected);
    let out = quant::sign(tensor::<B, 1>(inputs.clone(), [210], device));
    assert_exact("sign rank 1", &inputs, &values(out), &expected);
}

pub fn linear_forward<B: QnnBackend>(device: &B::Device) {
    for (
        seed,
        Case {
            quantizer,
            reference,
            ..
        },
    ) in cases().into_iter().enumerate()
    {
        if matches!(quantizer, Quantizer::Pow2(_)) {
            continue;
        }
        let inputs = uniform(3 * 4 * 11, -1.5, 1.5, seed as u64);
        check_forward::<B, 3>(quantizer, &reference, [3, 4, 11], inputs.clone(), device);
        check_forward::<B, 2>(quantizer, &reference, [12, 11], inputs, device);
    }
    // Properties that hold whatever the formula: outputs on the grid, at most half a step from
    // the clipped input.
    for k in 1..=8 {
        let bits = Bits::new(k).unwrap();
        let steps = bits.max_code() as f32;
        let inputs = uniform(500, -0.2, 1.2, 100 + k as u64);
        let out = values(quant::quantize_unsigned(
            tensor::<B, 1>(inputs.clone(), [500], device),
            bits,
        ));
        for (&x, &q) in inputs.iter().zip(&out) {
            let code = q * steps;
            assert!(
                (code - code.round()).abs() < 1e-4,
                "{k} bits: {q} is not on the grid"
            );
            assert!(
                (q - x.clamp(0.0, 1.0)).abs() <= 0.5 / steps + 1e-6,
                "{k} bits: {x} went to {q}, more than half a step away"
            );
        }
    }
    // Ties go up: Signed(2) at 0 lies halfway between −1/3 and 1/3.
    let tie = values(quant::quantize_signed(
        tensor::<B, 1>(vec![0.0], [1], device),
        Bits::TWO,
    ));
    assert_eq!(tie, [1.0f32 / 3.0]);
    // The signed levels are symmetric bit for bit.
    for k in 1..=8 {
        let bits = Bits::new(k).unwrap();
        let steps = bits.max_code() as f32;
        let levels: Vec<f32> = (0..=bits.max_code())
            .map(|j| -1.0 + 2.0 * j as f32 / steps)
            .collect();
        let n = levels.len();
        let q = values(quant::quantize_signed(
            tensor::<B, 1>(levels, [n], device),
            bits,
        ));
        for j in 0..n {
            assert_eq!(q[j], -q[n - 1 - j], "{k} bits: level {j} is not symmetric");
        }
    }
}

pub fn pow2_forward<B: QnnBackend>(device: &B::Device) {
    for Case { quantizer, .. } in cases() {
        let Quantizer::Pow2(range) = quantizer else {
            continue;
        };
        let magnitudes = uniform(240, -12.0, 12.0, 7);
        let inputs: Vec<f32> = magnitudes
            .iter()
            .enumerate()
            .map(|(i, &e)| {
                if i % 2 == 0 {
                    2f32.powf(e)
                } else {
                    -(2f32.powf(e))
                }
            })
            .filter(|&x| !r::near_pow2_tie(x))
            .collect();
        let n = inputs.len();
        let expected: Vec<f32> = inputs
            .iter()
            .map(|&x| r::pow2(x, range.min_exp(), range.max_exp()))
            .collect();
        let out = values(quant::quantize_pow2(
            tensor::<B, 1>(inputs.clone(), [n], device),
            range,
        ));
        assert_exact(&format!("{range:?}"), &inputs, &out, &expected);
    }
    // Exact powers of two are fixed points of AP2.
    let powers: Vec<f32> = (-126..=127).map(|e| 2f32.powi(e)).collect();
    let out = values(quant::ap2(tensor::<B, 1>(
        powers.clone(),
        [powers.len()],
        device,
    )));
    assert_exact("ap2 of powers of two", &powers, &out, &powers);
}

pub fn edge_values<B: QnnBackend>(device: &B::Device) {
    let inputs = edge_inputs();
    let n = inputs.len();
    for Case {
        quantizer,
        reference,
        ..
    } in cases()
    {
        check_forward::<B, 1>(quantizer, &reference, [n], inputs.clone(), device);
    }
    // The sign of −0.0 is +1, not −0.0 or 0.
    let out = values(quant::sign(tensor::<B, 1>(vec![-0.0], [1], device)));
    assert_eq!(out[0].to_bits(), 1f32.to_bits());
}

pub fn empty_tensors<B: QnnBackend>(device: &B::Device) {
    for Case { quantizer, .. } in cases() {
        let out = quant::quantize(Tensor::<B, 2>::empty([0, 3], device), quantizer);
        assert_eq!(out.dims(), [0, 3]);
    }
    let out = quant::stochastic_sign(Tensor::<B, 3>::empty([2, 0, 4], device));
    assert_eq!(out.dims(), [2, 0, 4]);
}

pub fn stochastic_sign_with_noise<B: QnnBackend>(device: &B::Device) {
    let mut inputs = uniform(300, -1.5, 1.5, 11);
    inputs.extend([
        f32::NAN,
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    let n = inputs.len();
    let noise = uniform(n, 0.0, 1.0, 12);
    let expected: Vec<f32> = inputs
        .iter()
        .zip(&noise)
        .map(|(&x, &u)| if u >= (x + 1.0) / 2.0 { -1.0 } else { 1.0 })
        .collect();
    let out = quant::stochastic_sign_with_noise(
        tensor::<B, 2>(inputs.clone(), [1, n], device),
        tensor::<B, 2>(noise, [1, n], device),
    );
    assert_exact("stochastic sign", &inputs, &values(out), &expected);
}

pub fn stochastic_sign_statistics<B: QnnBackend>(device: &B::Device) {
    let n = 20_000;
    B::seed(device, 3);
    for x in [-0.5f32, 0.0, 0.5, 0.9] {
        let out = values(quant::stochastic_sign(Tensor::<B, 1>::full([n], x, device)));
        assert!(out.iter().all(|&q| q == 1.0 || q == -1.0));
        let plus = out.iter().filter(|&&q| q == 1.0).count() as f32 / n as f32;
        let p = (x + 1.0) / 2.0;
        let sigma = (p * (1.0 - p) / n as f32).sqrt();
        assert!(
            (plus - p).abs() < 6.0 * sigma,
            "x = {x}: P(+1) = {plus}, expected {p}"
        );
    }
    for (x, q) in [(1.0f32, 1.0f32), (3.0, 1.0), (-1.0, -1.0), (-7.0, -1.0)] {
        let out = values(quant::stochastic_sign(Tensor::<B, 1>::full(
            [1000],
            x,
            device,
        )));
        assert!(out.iter().all(|&v| v == q), "x = {x} must always give {q}");
    }
}

pub fn stochastic_sign_seeded<B: QnnBackend>(device: &B::Device) {
    let inputs = uniform(4096, -1.0, 1.0, 5);
    let draw = |seed| {
        B::seed(device, seed);
        values(quant::stochastic_sign(tensor::<B, 2>(
            inputs.clone(),
            [64, 64],
            device,
        )))
    };
    let first = draw(9);
    assert!(first == draw(9), "the same seed must give the same signs");
    assert!(first != draw(10), "another seed should give other signs");
}

/// Checks `∂(Σ w·q(x))/∂x = w·1{lo ≤ x ≤ hi}` for every quantizer.
fn check_gradient<B: AutodiffBackend + QnnBackend>(
    quantizer: Quantizer,
    band: (f32, f32),
    inputs: Vec<f32>,
    device: &B::Device,
) {
    let n = inputs.len();
    let weights = uniform(n, -2.0, 2.0, 77);
    let x = tensor::<B, 2>(inputs.clone(), [1, n], device).require_grad();
    let w = tensor::<B, 2>(weights.clone(), [1, n], device);
    let grads = (quant::quantize(x.clone(), quantizer) * w).sum().backward();
    let dx = values(x.grad(&grads).expect("the input has a gradient"));
    let expected: Vec<f32> = inputs
        .iter()
        .zip(&weights)
        .map(|(&x, &w)| w * r::pass(x, band.0, band.1))
        .collect();
    assert_exact(
        &format!("gradient of {quantizer:?}"),
        &inputs,
        &dx,
        &expected,
    );
}

pub fn straight_through_gradients<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    for Case {
        quantizer, band, ..
    } in cases()
    {
        check_gradient::<B>(quantizer, band, uniform(200, -2.5, 2.5, 31), device);
    }
    // Through a rank-4 tensor and a further op: the upstream gradient of Σ (2·y)² at y = sign(x)
    // is 8·sign(x), and the STE passes it where |x| ≤ 1.
    let inputs = uniform(2 * 3 * 4 * 5, -2.0, 2.0, 32);
    let x = tensor::<B, 4>(inputs.clone(), [2, 3, 4, 5], device).require_grad();
    let grads = (quant::sign(x.clone()) * 2.0)
        .powf_scalar(2.0)
        .sum()
        .backward();
    let dx = values(x.grad(&grads).unwrap());
    let expected: Vec<f32> = inputs
        .iter()
        .map(|&x| 8.0 * r::sign(x) * r::pass(x, -1.0, 1.0))
        .collect();
    assert_exact("chained gradient", &inputs, &dx, &expected);
}

pub fn edge_gradients<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    for Case {
        quantizer, band, ..
    } in cases()
    {
        check_gradient::<B>(quantizer, band, edge_inputs(), device);
    }
}

pub fn stochastic_sign_gradient<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    let mut inputs = uniform(100, -2.0, 2.0, 41);
    inputs.extend(edge_inputs());
    let n = inputs.len();
    let x = tensor::<B, 1>(inputs.clone(), [n], device).require_grad();
    let noise = Tensor::<B, 1>::random([n], burn::tensor::Distribution::Uniform(0.0, 1.0), device);
    let grads = quant::stochastic_sign_with_noise(x.clone(), noise)
        .sum()
        .backward();
    let dx = values(x.grad(&grads).unwrap());
    let expected: Vec<f32> = inputs.iter().map(|&x| r::pass(x, -1.0, 1.0)).collect();
    assert_exact("stochastic sign gradient", &inputs, &dx, &expected);
}

pub fn gradient_quantizer<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    let inputs = uniform(6 * 7, -1.0, 1.0, 51);
    for k in 1..=8 {
        let bits = Bits::new(k).unwrap();
        let upstream = uniform(inputs.len(), -3.0, 3.0, 52 + k as u64);
        let x = tensor::<B, 2>(inputs.clone(), [6, 7], device).require_grad();
        let y = quant::quantize_gradient(x.clone(), bits);
        assert_exact("identity forward", &inputs, &values(y.clone()), &inputs);
        let grads = (y * tensor::<B, 2>(upstream.clone(), [6, 7], device))
            .sum()
            .backward();
        let dx = values(x.grad(&grads).unwrap());

        let scale = upstream.iter().fold(0f32, |m, g| m.max(g.abs()));
        let steps = ((1u32 << (k - 1)) - 1).max(1) as f32;
        for (&g, &q) in upstream.iter().zip(&dx) {
            let code = q / scale * steps;
            assert!(
                (code - code.round()).abs() < 1e-3,
                "{k} bits: {q} is not on the grid"
            );
            assert!(
                (q - g).abs() <= scale / (2.0 * steps) * (1.0 + 1e-5),
                "{k} bits: gradient {g} went to {q}"
            );
        }
        assert!(
            dx.iter().any(|&q| (q.abs() - scale).abs() <= scale * 1e-6),
            "±s is a level"
        );
    }
    // A zero gradient stays zero.
    let x = tensor::<B, 1>(vec![0.5; 8], [8], device).require_grad();
    let grads = (quant::quantize_gradient(x.clone(), Bits::new(6).unwrap()) * 0.0)
        .sum()
        .backward();
    assert!(values(x.grad(&grads).unwrap()).iter().all(|&g| g == 0.0));
}

/// Stochastic rounding of the gradient quantizer: each value goes to one of the two grid levels
/// around it (the grid of `quantize_gradient`, `±s` exact), unbiased on average, the same for
/// the same seed; a zero gradient stays zero.
pub fn stochastic_gradient_quantizer<B: AutodiffBackend + QnnBackend>(device: &B::Device) {
    let n = 4000;
    for k in [2, 4, 6, 8] {
        let bits = Bits::new(k).unwrap();
        let steps = ((1u32 << (k - 1)) - 1).max(1) as f32;
        let upstream = uniform(n, -2.0, 2.0, 60 + k as u64);
        let scale = upstream.iter().fold(0f32, |m, g| m.max(g.abs()));
        let run = |seed: u64| {
            B::seed(device, seed);
            let x = tensor::<B, 1>(vec![0.5; n], [n], device).require_grad();
            let y = quant::quantize_gradient_stochastic(x.clone(), bits);
            assert!(
                values(y.clone()).iter().all(|&v| v == 0.5),
                "identity forward"
            );
            let grads = (y * tensor::<B, 1>(upstream.clone(), [n], device))
                .sum()
                .backward();
            values(x.grad(&grads).unwrap())
        };
        let dx = run(3);
        assert_eq!(dx, run(3), "{k} bits: the same seed, the same rounding");
        assert_ne!(dx, run(4), "{k} bits: another seed, another rounding");
        let mut rounded_up = 0;
        for (&g, &q) in upstream.iter().zip(&dx) {
            let (code, exact) = (q / scale * steps, g / scale * steps);
            assert!(
                (code - code.round()).abs() < 1e-3,
                "{k} bits: {q} is not on the grid"
            );
            let code = code.round();
            assert!(
                code == exact.floor() || code == exact.ceil() || (exact - code).abs() < 1e-4,
                "{k} bits: gradient {g} ({exact} steps) went to {code} steps"
            );
            rounded_up += usize::from(code > exact + 1e-4);
            if g.abs() == scale {
                assert_eq!(q, g, "{k} bits: ±s is exact");
            }
        }
        // Neither always down nor always up.
        assert!(
            rounded_up > n / 10 && rounded_up < 9 * n / 10,
            "{k} bits: {rounded_up} of {n} rounded up"
        );
    }
    // Unbiased: 0.3 of a step (2 bits: levels −1, 0, 1) goes up with probability 0.3.
    B::seed(device, 5);
    let mut upstream = vec![0.3f32; 20_000];
    upstream[0] = 1.0;
    let m = upstream.len();
    let x = tensor::<B, 1>(vec![0.0; m], [m], device).require_grad();
    let grads = (quant::quantize_gradient_stochastic(x.clone(), Bits::new(2).unwrap())
        * tensor::<B, 1>(upstream, [m], device))
    .sum()
    .backward();
    let dx = values(x.grad(&grads).unwrap());
    let mean = dx[1..].iter().sum::<f32>() / (m - 1) as f32;
    // σ of the mean: sqrt(0.3·0.7/20000) ≈ 0.0032.
    assert!((mean - 0.3).abs() < 0.02, "mean {mean}, expected 0.3");
    // A zero gradient stays zero.
    let x = tensor::<B, 1>(vec![0.5; 8], [8], device).require_grad();
    let grads = (quant::quantize_gradient_stochastic(x.clone(), Bits::new(6).unwrap()) * 0.0)
        .sum()
        .backward();
    assert!(values(x.grad(&grads).unwrap()).iter().all(|&g| g == 0.0));
}

/// The backend's quantizer (one parallel pass on the CPU backends) gives the bits of the
/// tensor-op formulas (`Quantizer::forward`, `Quantizer::blocked`), over more values than one
/// parallel chunk holds, edge values among them; its packed pass band cuts exactly the
/// gradients `Quantizer::blocked` marks.
pub fn backend_quantizer_matches_tensor_ops<B: QnnBackend>(device: &B::Device) {
    let mut inputs = uniform(3 * (1 << 14) + 123, -1.6, 1.6, 21);
    for (i, x) in edge_inputs().into_iter().enumerate() {
        inputs[i * 2777] = x;
    }
    let n = inputs.len();
    let upstream = uniform(n, -1.0, 1.0, 22);
    for Case { quantizer, .. } in cases() {
        let x = tensor::<B, 2>(inputs.clone(), [3, n / 3], device);
        let what = format!("{quantizer:?}");
        let got = values(quant::quantize(x.clone(), quantizer));
        let expected = values(quantizer.forward(x.clone()));
        assert_exact(&what, &inputs, &got, &expected);
        let blocked = B::qnn_quantize_blocked(x.clone(), quantizer);
        assert_eq!(B::qnn_packed_shape(&blocked), [1, n], "{what}: band shape");
        // Bit 1 (−1) where cut.
        let got: Vec<bool> = values(B::qnn_unpack::<2>(&blocked))
            .iter()
            .map(|&v| v < 0.0)
            .collect();
        let mask = quantizer.blocked(x.clone());
        let expected: Vec<bool> = mask
            .clone()
            .int()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap()
            .iter()
            .map(|&m| m == 1)
            .collect();
        assert_eq!(got, expected, "{what}: mask");
        let grad = tensor::<B, 2>(upstream.clone(), [3, n / 3], device);
        let cut = values(B::qnn_cut_gradient(grad.clone(), &blocked));
        assert_exact(&what, &inputs, &cut, &values(grad.mask_fill(mask, 0.0)));
    }
}
