//! Each kernel against the definition of its gradient, summed in `i64` from the codes, on every
//! int8 path, each with its rescaling on every vector path.

use super::*;
use crate::kernels::{
    int8::{Int8Isa, with_int8_isa},
    isa::with_isa,
};

/// A deterministic stream (xorshift).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn words(&mut self, bits: usize) -> Vec<u64> {
        (0..bits.div_ceil(64)).map(|_| self.next()).collect()
    }

    /// A quantized gradient of `len` codes, `bits` wide, some of them the extremes.
    fn grad(&mut self, len: usize, bits: u32) -> QuantizedGrad {
        let steps = ((1i64 << (bits - 1)) - 1).max(1);
        let codes = (0..len)
            .map(|_| ((self.next() % (2 * steps as u64 + 1)) as i64 - steps) as i8)
            .collect();
        QuantizedGrad {
            codes,
            steps: steps as f32,
            max: 0.75,
        }
    }
}

fn bit(words: &[u64], i: usize) -> bool {
    (words[i / 64] >> (i % 64)) & 1 == 1
}

fn sign(words: &[u64], i: usize) -> i64 {
    if bit(words, i) { -1 } else { 1 }
}

/// What a kernel must write: each integer sum times `max / steps`, rounded to f32, zero where
/// blocked.
fn expected(grad: &QuantizedGrad, sums: &[i64], blocked: &[u64]) -> Vec<f32> {
    sums.iter()
        .enumerate()
        .map(|(i, &sum)| {
            if bit(blocked, i) {
                0.0
            } else {
                (sum as f64 * f64::from(grad.max) / f64::from(grad.steps)) as f32
            }
        })
        .collect()
}

fn geometries() -> Vec<(ConvCall, PaddingMode)> {
    let g = |batch, c_in, h, w, c_out, kernel, stride, padding, dilation| ConvCall {
        batch,
        in_channels: c_in,
        height: h,
        width: w,
        out_channels: c_out,
        kernel,
        stride,
        padding,
        dilation,
    };
    vec![
        (
            g(2, 3, 7, 9, 5, [3, 3], [1, 1], [1, 1], [1, 1]),
            PaddingMode::Zero,
        ),
        (
            g(1, 33, 8, 8, 65, [3, 3], [1, 1], [1, 1], [1, 1]),
            PaddingMode::PlusOne,
        ),
        (
            g(3, 5, 9, 6, 7, [3, 2], [2, 2], [1, 0], [1, 1]),
            PaddingMode::Zero,
        ),
        (
            g(2, 4, 11, 10, 3, [3, 3], [2, 1], [2, 2], [2, 1]),
            PaddingMode::PlusOne,
        ),
        (
            g(1, 70, 5, 5, 17, [1, 1], [1, 1], [0, 0], [1, 1]),
            PaddingMode::Zero,
        ),
        // Stride 1 (the weight gradient's padded grid) with dilation, a kernel wider than
        // high, padding of 2 and none.
        (
            g(2, 6, 9, 7, 5, [3, 2], [1, 1], [2, 1], [2, 3]),
            PaddingMode::PlusOne,
        ),
        (
            g(3, 3, 6, 5, 4, [2, 3], [1, 1], [0, 0], [1, 1]),
            PaddingMode::Zero,
        ),
        // Stride 1 with several images in each weight-gradient product: grid rows of 8 and 7
        // positions (whole groups of four values, and not).
        (
            g(5, 4, 6, 6, 8, [3, 3], [1, 1], [1, 1], [1, 1]),
            PaddingMode::PlusOne,
        ),
        (
            g(6, 3, 5, 5, 6, [3, 3], [1, 1], [1, 1], [1, 1]),
            PaddingMode::Zero,
        ),
        // Three images a weight-gradient product (14 × 32 grid positions each): with up to
        // three threads a thread's last product holds fewer images than the one before it.
        (
            g(7, 2, 14, 30, 3, [3, 3], [1, 1], [1, 1], [1, 1]),
            PaddingMode::Zero,
        ),
        // 16 input channels, 33 output channels (rows of the input gradient 297 bytes, not
        // whole 64-byte steps), rows of 16 positions.
        (
            g(2, 16, 5, 16, 33, [3, 3], [1, 1], [1, 1], [1, 1]),
            PaddingMode::PlusOne,
        ),
    ]
}

/// Runs `kernel` into an output of NaN (so that a value left unwritten fails) on every int8
/// path inside every vector path (the rescaling's), and checks that it writes `want`.
fn assert_on_every_path(want: &[f32], context: &str, kernel: impl Fn(&mut [f32])) {
    for isa in Int8Isa::available() {
        for float_isa in Isa::available() {
            let mut out = vec![f32::NAN; want.len()];
            with_isa(float_isa, || with_int8_isa(isa, || kernel(&mut out)));
            assert_eq!(out, want, "{isa:?}, {float_isa:?}, {context}");
        }
    }
}

/// The input value tap `(ky, kx)` of output `(oy, ox)` reads, or `None` on padding.
fn read(g: &ConvCall, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride[0] + ky * g.dilation[0]).checked_sub(g.padding[0])?;
    let ix = (ox * g.stride[1] + kx * g.dilation[1]).checked_sub(g.padding[1])?;
    (iy < g.height && ix < g.width).then_some((iy, ix))
}

#[test]
fn conv_weight_gradient_is_the_exact_integer_sum() {
    for (case, (g, pad)) in geometries().into_iter().enumerate() {
        let [oh, ow] = g.output_size().unwrap();
        let mut rng = Stream(0x5eed + case as u64);
        let bits = 2 + case as u32 % 7;
        let grad = rng.grad(g.batch * g.out_channels * oh * ow, bits);
        let x = rng.words(g.input_len());
        let blocked = rng
            .words(g.weights_len())
            .iter()
            .map(|w| w & rng.next() & rng.next())
            .collect::<Vec<_>>();
        let [kh, kw] = g.kernel;
        let mut sums = vec![0i64; g.weights_len()];
        for n in 0..g.batch {
            for co in 0..g.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let c =
                            i64::from(grad.codes[((n * g.out_channels + co) * oh + oy) * ow + ox]);
                        for ci in 0..g.in_channels {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let v = match read(&g, oy, ox, ky, kx) {
                                        Some((iy, ix)) => sign(
                                            &x,
                                            ((n * g.in_channels + ci) * g.height + iy) * g.width
                                                + ix,
                                        ),
                                        None if pad == PaddingMode::PlusOne => 1,
                                        None => 0,
                                    };
                                    sums[((co * g.in_channels + ci) * kh + ky) * kw + kx] += c * v;
                                }
                            }
                        }
                    }
                }
            }
        }
        let want = expected(&grad, &sums, &blocked);
        assert_on_every_path(&want, &format!("{g:?}, {pad:?}"), |out| {
            binary_conv2d_weight_grad(
                &grad,
                Bits::new(&x, g.input_len()),
                pad,
                Bits::new(&blocked, g.weights_len()),
                &g,
                out,
            )
        });
    }
}

#[test]
fn conv_input_gradient_is_the_exact_integer_sum() {
    for (case, (g, _)) in geometries().into_iter().enumerate() {
        let [oh, ow] = g.output_size().unwrap();
        let mut rng = Stream(0xbeef + case as u64);
        let bits = 8 - case as u32 % 7;
        let grad = rng.grad(g.batch * g.out_channels * oh * ow, bits);
        let w = rng.words(g.weights_len());
        let blocked = rng
            .words(g.input_len())
            .iter()
            .map(|w| w & rng.next())
            .collect::<Vec<_>>();
        let [kh, kw] = g.kernel;
        let mut sums = vec![0i64; g.input_len()];
        for n in 0..g.batch {
            for co in 0..g.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let c =
                            i64::from(grad.codes[((n * g.out_channels + co) * oh + oy) * ow + ox]);
                        for ci in 0..g.in_channels {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    if let Some((iy, ix)) = read(&g, oy, ox, ky, kx) {
                                        let s = sign(
                                            &w,
                                            ((co * g.in_channels + ci) * kh + ky) * kw + kx,
                                        );
                                        sums[((n * g.in_channels + ci) * g.height + iy)
                                            * g.width
                                            + ix] += c * s;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let want = expected(&grad, &sums, &blocked);
        assert_on_every_path(&want, &format!("{g:?}"), |out| {
            binary_conv2d_input_grad(
                &grad,
                Bits::new(&w, g.weights_len()),
                Bits::new(&blocked, g.input_len()),
                &g,
                out,
            )
        });
    }
}

#[test]
fn matmul_gradients_are_the_exact_integer_sums() {
    for (case, &(batch, m, k, n)) in [
        (1, 1, 1, 1),
        (2, 5, 33, 7),
        (1, 50, 300, 65),
        (3, 40, 17, 129),
    ]
    .iter()
    .enumerate()
    {
        let shape = MatmulShape { batch, m, k, n };
        let mut rng = Stream(0xabc + case as u64);
        let grad = rng.grad(batch * m * n, 6);
        let (a, b) = (rng.words(batch * m * k), rng.words(batch * k * n));
        let (a_blocked, b_blocked) = (rng.words(batch * m * k), rng.words(batch * k * n));
        let (mut da, mut db) = (vec![0i64; batch * m * k], vec![0i64; batch * k * n]);
        for i in 0..batch {
            for r in 0..m {
                for c in 0..n {
                    let code = i64::from(grad.codes[(i * m + r) * n + c]);
                    for t in 0..k {
                        da[(i * m + r) * k + t] += code * sign(&b, (i * k + t) * n + c);
                        db[(i * k + t) * n + c] += code * sign(&a, (i * m + r) * k + t);
                    }
                }
            }
        }
        let (want_a, want_b) = (
            expected(&grad, &da, &a_blocked),
            expected(&grad, &db, &b_blocked),
        );
        assert_on_every_path(&want_a, &format!("left, {shape:?}"), |out| {
            binary_matmul_lhs_grad(
                &grad,
                Bits::new(&b, batch * k * n),
                Bits::new(&a_blocked, da.len()),
                shape,
                out,
            )
        });
        assert_on_every_path(&want_b, &format!("right, {shape:?}"), |out| {
            binary_matmul_rhs_grad(
                &grad,
                Bits::new(&a, batch * m * k),
                Bits::new(&b_blocked, db.len()),
                shape,
                out,
            )
        });
    }
}

#[test]
fn quantizing_follows_the_gradient_grid() {
    let grad = [0.3f32, -1.2, 0.0, 0.6, -0.6, 1.2, 0.05];
    for bits in 1..=8 {
        let q = QuantizedGrad::quantize(&grad, bits);
        let steps = ((1i32 << (bits - 1)) - 1).max(1);
        assert_eq!(q.steps, steps as f32);
        assert_eq!(q.max, 1.2);
        for (&g, &c) in grad.iter().zip(&q.codes) {
            // The nearest level, ties up: |g/s·L − c| ≤ ½.
            let scaled = g / 1.2 * steps as f32;
            assert!(
                (scaled - f32::from(c)).abs() <= 0.5 + 1e-6,
                "{bits} bits: {g} → {c}"
            );
            assert!(i32::from(c).abs() <= steps);
        }
        assert_eq!(q.codes[1], -steps as i8);
        assert_eq!(q.codes[5], steps as i8);
    }
    let zero = QuantizedGrad::quantize(&[0.0; 3], 6);
    assert_eq!(zero.values(), [0.0; 3]);
    let bad = QuantizedGrad::quantize(&[1.0, f32::INFINITY], 6);
    assert!(bad.max.is_nan());
    // A non-finite value anywhere in a longer gradient (full lanes and the tail).
    for at in [0, 15, 16, 40, 99] {
        for value in [f32::NAN, f32::NEG_INFINITY] {
            let mut grad = vec![0.5; 100];
            grad[at] = value;
            let q = QuantizedGrad::quantize(&grad, 6);
            assert!(q.max.is_nan(), "{value} at {at}");
        }
    }
    let mut grad = vec![0.5; 100];
    grad[37] = -3.0;
    assert_eq!(
        QuantizedGrad::quantize(&grad, 6).max,
        3.0,
        "the largest magnitude"
    );
}

/// The codes' values are exactly what Burn's `quantize_gradient` passes back.
#[cfg(feature = "ndarray")]
#[test]
fn codes_match_the_float_quantizer() {
    use burn::backend::NdArray;
    use burn::tensor::Tensor;

    let values: Vec<f32> = (0..257)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
        .collect();
    for bits in [2u32, 4, 6, 8] {
        let q = QuantizedGrad::quantize(&values, bits);
        let tensor = Tensor::<NdArray, 1>::from_floats(values.as_slice(), &Default::default());
        let float =
            crate::quant::quantizer::gradient_value(tensor, crate::quant::Bits::new(bits).unwrap());
        assert_eq!(
            q.values(),
            float.into_data().to_vec::<f32>().unwrap(),
            "{bits} bits"
        );
    }
}

/// Stochastic codes: `floor(g/s·L + u)` in exact arithmetic for every width, `±L` kept where
/// f32 would round `±L + u` to another integer, NaN for a non-finite gradient.
#[test]
fn stochastic_codes_follow_their_definition() {
    let grad: Vec<f32> = (0..203)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0)
        .collect();
    let noise: Vec<f32> = (0..203).map(|i| (i * 29 % 203) as f32 / 203.0).collect();
    for bits in 1..=8 {
        let q = QuantizedGrad::quantize_stochastic(&grad, &noise, bits);
        let nearest = QuantizedGrad::quantize(&grad, bits);
        assert_eq!((q.steps, q.max), (nearest.steps, nearest.max));
        for ((&g, &u), &c) in grad.iter().zip(&noise).zip(&q.codes) {
            // floor(x + u) in exact arithmetic: x and u are exact in f64, and so is their sum.
            let x = g / q.max * q.steps;
            let want = (f64::from(x) + f64::from(u)).floor() as f32;
            assert_eq!(f32::from(c), want, "{bits} bits: {g} with {u}");
        }
        assert_ne!(
            q.codes, nearest.codes,
            "{bits} bits: the noise changes codes"
        );
    }
    // The largest magnitudes with noise just below 1, where f32 rounds ±127 + u to 128 and
    // −126: the codes stay ±127.
    let just_below_one = 1.0 - f32::EPSILON / 2.0;
    assert_eq!(
        (127.0 + just_below_one, -127.0 + just_below_one),
        (128.0, -126.0)
    );
    let q = QuantizedGrad::quantize_stochastic(&[2.0, -2.0], &[just_below_one; 2], 8);
    assert_eq!(q.codes, [127, -127]);
    let bad = QuantizedGrad::quantize_stochastic(&[1.0, f32::NAN], &[0.5; 2], 6);
    assert!(bad.max.is_nan());
}

#[test]
#[should_panic(expected = "3 gradient values but 2 noise values")]
fn stochastic_codes_need_one_noise_value_per_gradient_value() {
    QuantizedGrad::quantize_stochastic(&[0.1, 0.2, 0.3], &[0.5, 0.5], 6);
}

/// The stochastic codes' values are what Burn's `quantize_gradient_stochastic` passes back for
/// the same noise, including noise just below 1 on both largest magnitudes.
#[cfg(feature = "ndarray")]
#[test]
fn stochastic_codes_match_the_float_quantizer() {
    use burn::backend::NdArray;
    use burn::tensor::Tensor;

    let mut values: Vec<f32> = (0..257)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
        .collect();
    values.extend([4.0, -4.0]);
    let mut noise: Vec<f32> = (0..257).map(|i| (i * 89 % 257) as f32 / 257.0).collect();
    noise.extend([1.0 - f32::EPSILON / 2.0; 2]);
    let tensor = |v: &[f32]| Tensor::<NdArray, 1>::from_floats(v, &Default::default());
    for bits in [2u32, 4, 6, 8] {
        let q = QuantizedGrad::quantize_stochastic(&values, &noise, bits);
        let float = crate::quant::quantizer::gradient_value_stochastic(
            tensor(&values),
            crate::quant::Bits::new(bits).unwrap(),
            tensor(&noise),
        );
        assert_eq!(
            q.values(),
            float.into_data().to_vec::<f32>().unwrap(),
            "{bits} bits"
        );
    }
}

/// The vectorizable floor equals `f32::floor` over the range codes take: every quarter from
/// −130 to 130, values next to each integer, ±0, tiny values and the ends of its range; values
/// past them give 0.
#[test]
fn floor_of_code_is_floor() {
    let mut values: Vec<f32> = (-520..=520).map(|q| q as f32 / 4.0).collect();
    for i in -130..=130 {
        let v = i as f32;
        values.extend([v.next_down(), v.next_up()]);
    }
    values.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
    ]);
    values.extend([16_777_216.0, -16_777_216.0, 8_388_607.5, -8_388_607.5]);
    for v in values {
        assert_eq!(floor_of_code(v) as f32, v.floor(), "floor of {v:e}");
    }
    for v in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3e9,
        -3e9,
        16_777_218.0,
    ] {
        assert_eq!(floor_of_code(v), 0, "{v:e}");
    }
}

/// Codes equal the float quantizer's `floor(g/s·L + ½)`, ties included.
#[test]
fn codes_round_half_up() {
    for bits in 1..=8u32 {
        let steps = ((1u32 << (bits - 1)) - 1).max(1) as f32;
        // Values exactly half-way between levels, and random ones, with max |g| = 2.
        let mut grad: Vec<f32> = (-(2 * steps as i32)..=(2 * steps as i32))
            .map(|h| h as f32 / (2.0 * steps) * 2.0)
            .collect();
        let mut stream = Stream(u64::from(bits) + 11);
        grad.extend((0..300).map(|_| (stream.next() % 4001) as f32 / 1000.0 - 2.0));
        let q = QuantizedGrad::quantize(&grad, bits);
        assert_eq!(q.max, 2.0);
        for (&g, &c) in grad.iter().zip(&q.codes) {
            assert_eq!(
                c as f32,
                (g / 2.0 * steps + 0.5).floor(),
                "{bits} bits, {g}"
            );
        }
    }
}
