//! Binary convolution: packed results against a scalar reference convolution of the ±1 values,
//! both padding modes; gradients of the bits-only autodiff nodes against the float simulation.

use burn::tensor::{Tensor, backend::AutodiffBackend};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    ops::{
        self, ConvGeometry, PackedConvWeights, PaddingMode, binary_conv2d, binary_conv2d_reference,
    },
};

use crate::reference::{assert_exact, sign, tensor, uniform, values};

/// Every tap of the convolution of `x` `[n, c, h, w]` by `g`'s weights, in order: calls
/// `visit(output index, weight index, input index)` with `None` for an input index in the padding.
fn for_each_tap(
    x_shape: [usize; 4],
    g: &ConvGeometry,
    mut visit: impl FnMut(usize, usize, Option<usize>),
) {
    let [n, c, h, wd] = x_shape;
    let o = g.channels[1];
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output_size([h, wd]);
    for b in 0..n {
        for oc in 0..o {
            for y in 0..oh {
                for xx in 0..ow {
                    let out_index = ((b * o + oc) * oh + y) * ow + xx;
                    for ic in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * g.stride[0] + i * g.dilation[0]) as isize
                                    - g.padding[0] as isize;
                                let ix = (xx * g.stride[1] + j * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                let inside =
                                    (0..h as isize).contains(&iy) && (0..wd as isize).contains(&ix);
                                let x_index = inside
                                    .then(|| ((b * c + ic) * h + iy as usize) * wd + ix as usize);
                                visit(out_index, ((oc * c + ic) * kh + i) * kw + j, x_index);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The value a padded tap reads.
fn pad_value(g: &ConvGeometry) -> f32 {
    match g.padding_mode {
        PaddingMode::Zero => 0.0,
        PaddingMode::PlusOne => 1.0,
    }
}

/// The scalar convolution of the signs of `x` `[n, c, h, w]` and `w` `[o, c, kh, kw]`, padded
/// taps worth 0 or +1.
fn reference_conv(
    x: &[f32],
    x_shape: [usize; 4],
    w: &[f32],
    g: &ConvGeometry,
) -> (Vec<f32>, [usize; 4]) {
    let [n, _, h, wd] = x_shape;
    let [oh, ow] = g.output_size([h, wd]);
    let mut out = vec![0.0; n * g.channels[1] * oh * ow];
    for_each_tap(x_shape, g, |out_index, w_index, x_index| {
        let value = x_index.map_or(pad_value(g), |x_index| sign(x[x_index]));
        out[out_index] += value * sign(w[w_index]);
    });
    (out, [n, g.channels[1], oh, ow])
}

/// The gradients of `Σ r ⊙ (sign(x) ⊛ sign(w))` by their definition, summed in f64 on the
/// host, with the straight-through estimator (zero where `|v| > 1` or `v` is NaN):
/// `dx[n,c,iy,ix] = Σ r[n,o,y,x]·sign(w[o,c,i,j])` over the taps that read `(iy, ix)` and
/// `dw[o,c,i,j] = Σ r[n,o,y,x]·x̂` with `x̂` the ±1 input or the padding value. Also `Σ|terms|` of
/// each value, which bounds the rounding of an f32 sum.
///
/// Burn's own float path is not the reference on the GPU: burn-cubecl 0.21's direct
/// `conv_transpose2d`, which its autotune picks on some machines, is wrong where a kernel side is
/// smaller than its stride (e.g. 1×1 with stride 2), and Burn's wgpu `conv2d` input gradient
/// with it.
struct ConvGrads {
    x: Vec<f32>,
    w: Vec<f32>,
    x_terms: Vec<f32>,
    w_terms: Vec<f32>,
}

fn reference_conv_grads(
    x: &[f32],
    x_shape: [usize; 4],
    w: &[f32],
    g: &ConvGeometry,
    r: &[f32],
) -> ConvGrads {
    let [n, _, h, wd] = x_shape;
    let [oh, ow] = g.output_size([h, wd]);
    assert_eq!(
        r.len(),
        n * g.channels[1] * oh * ow,
        "reference gradients: output gradient length"
    );
    let (mut dx, mut dw) = (vec![0.0f64; x.len()], vec![0.0f64; w.len()]);
    let (mut x_terms, mut w_terms) = (vec![0.0f64; x.len()], vec![0.0f64; w.len()]);
    for_each_tap(x_shape, g, |out_index, w_index, x_index| {
        let grad = f64::from(r[out_index]);
        let value = match x_index {
            Some(x_index) => {
                dx[x_index] += grad * f64::from(sign(w[w_index]));
                x_terms[x_index] += grad.abs();
                sign(x[x_index])
            }
            None => pad_value(g),
        };
        dw[w_index] += grad * f64::from(value);
        w_terms[w_index] += (grad * f64::from(value)).abs();
    });
    let band = |grads: Vec<f64>, latent: &[f32]| -> Vec<f32> {
        grads
            .into_iter()
            .zip(latent)
            .map(|(g, &v)| if v.abs() <= 1.0 { g as f32 } else { 0.0 })
            .collect()
    };
    let to_f32 = |terms: Vec<f64>| terms.into_iter().map(|t| t as f32).collect();
    ConvGrads {
        x: band(dx, x),
        w: band(dw, w),
        x_terms: to_f32(x_terms),
        w_terms: to_f32(w_terms),
    }
}

/// Geometries with channel counts off the word size, strides, paddings, dilations.
fn geometries(quick: bool) -> Vec<(ConvGeometry, [usize; 4])> {
    let all = vec![
        (
            ConvGeometry::new([3, 5], [3, 3]).with_padding([1, 1]),
            [2, 3, 7, 6],
        ),
        (
            ConvGeometry::new([65, 7], [3, 3])
                .with_padding([1, 2])
                .with_stride([2, 1]),
            [1, 65, 9, 8],
        ),
        (
            ConvGeometry::new([31, 4], [5, 3])
                .with_padding([2, 0])
                .with_dilation([1, 2]),
            [2, 31, 8, 9],
        ),
        (ConvGeometry::new([64, 3], [1, 1]), [1, 64, 5, 5]),
        (
            ConvGeometry::new([130, 9], [3, 3])
                .with_padding([1, 1])
                .with_stride([2, 2]),
            [1, 130, 7, 7],
        ),
    ];
    if quick {
        all.into_iter().take(3).collect()
    } else {
        all
    }
}

/// Packed convolutions (on the fly and pre-packed) equal the scalar reference in both modes.
pub fn binary_conv_matches_reference<B: QnnBackend>(device: &B::Device, quick: bool) {
    for (case, (geometry, x_shape)) in geometries(quick).into_iter().enumerate() {
        for mode in [PaddingMode::Zero, PaddingMode::PlusOne] {
            let geometry = geometry.with_padding_mode(mode);
            let [c_in, c_out] = geometry.channels;
            let w_shape = [c_out, c_in, geometry.kernel[0], geometry.kernel[1]];
            let mut x_values = uniform(x_shape.iter().product(), -1.0, 1.0, case as u64);
            // Zeros of both signs and NaN binarize to +1.
            x_values[0] = -0.0;
            x_values[1] = 0.0;
            x_values[2] = f32::NAN;
            let w_values = uniform(w_shape.iter().product(), -1.0, 1.0, 100 + case as u64);
            let (expected, out_shape) = reference_conv(&x_values, x_shape, &w_values, &geometry);

            let x = tensor::<B, 4>(x_values.clone(), x_shape, device);
            let w = tensor::<B, 4>(w_values, w_shape, device);
            let what = format!("case {case} {mode:?}");
            let y = binary_conv2d(x.clone(), w.clone(), &geometry);
            assert_eq!(y.dims(), out_shape, "{what}: shape");
            assert_exact(&what, &x_values, &values(y), &expected);

            let packed = PackedConvWeights::new(w.clone(), geometry);
            assert_exact(
                &format!("{what} pre-packed"),
                &x_values,
                &values(packed.forward(x.clone())),
                &expected,
            );
            // The bytes read back, onto the same device, give the same product.
            let bytes = packed.to_bytes();
            let reread = PackedConvWeights::<B>::from_bytes(&bytes, geometry, device).unwrap();
            assert_eq!(reread.to_bytes(), bytes, "{what}: bytes round trip");
            assert_exact(
                &format!("{what} from bytes"),
                &x_values,
                &values(reread.forward(x.clone())),
                &expected,
            );
            // The float simulation agrees with the scalar reference too.
            assert_exact(
                &format!("{what} float simulation"),
                &x_values,
                &values(binary_conv2d_reference(x, w, &geometry)),
                &expected,
            );
        }
    }
}

/// Packed conv weights read from bytes of the wrong length or with padding bits set fail with
/// a typed error.
pub fn bad_conv_weight_bytes<B: QnnBackend>(device: &B::Device) {
    let geometry = ConvGeometry::new([3, 2], [3, 3]);
    let w = tensor::<B, 4>(uniform(54, -1.0, 1.0, 7), [2, 3, 3, 3], device);
    let mut bytes = PackedConvWeights::new(w, geometry).to_bytes();
    assert!(matches!(
        PackedConvWeights::<B>::from_bytes(&bytes[1..], geometry, device),
        Err(ops::PackedError::Length { .. })
    ));
    bytes[0] |= 0b1000; // channel 3 of a 3-channel tap: a padding bit
    assert!(matches!(
        PackedConvWeights::<B>::from_bytes(&bytes, geometry, device),
        Err(ops::PackedError::Padding { .. })
    ));
}

/// The gradients of `Σ r ⊙ f(x, w)` w.r.t. `x` and `w`.
pub fn gradients<B: AutodiffBackend, const D: usize, const E: usize>(
    f: impl Fn(Tensor<B, D>, Tensor<B, E>) -> Tensor<B, D>,
    x: Tensor<B, D>,
    w: Tensor<B, E>,
    r: Tensor<B, D>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (x, w) = (x.require_grad(), w.require_grad());
    let y = f(x.clone(), w.clone());
    let forward = values(y.clone().inner());
    let grads = (y * r).sum().backward();
    (
        forward,
        values(x.grad(&grads).unwrap()),
        values(w.grad(&grads).unwrap()),
    )
}

/// Random geometries (seeded): channel counts off the word size, odd sizes, strides 1–2,
/// paddings 0–2, dilations 1–2, batches 1–3.
pub fn random_geometries(count: usize, seed: u64) -> Vec<(ConvGeometry, [usize; 4])> {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let kernel = [rng.random_range(1..=3), rng.random_range(1..=3)];
            let dilation = [rng.random_range(1..=2), rng.random_range(1..=2)];
            let padding = [rng.random_range(0..=2), rng.random_range(0..=2)];
            let reach = |axis: usize| dilation[axis] * (kernel[axis] - 1) + 1;
            let size = [
                rng.random_range(reach(0).max(3)..=11),
                rng.random_range(reach(1).max(3)..=11),
            ];
            let channels = [rng.random_range(1..=100), rng.random_range(1..=40)];
            let geometry = ConvGeometry::new(channels, kernel)
                .with_stride([rng.random_range(1..=2), rng.random_range(1..=2)])
                .with_padding(padding)
                .with_dilation(dilation);
            let batch = rng.random_range(1..=3);
            (geometry, [batch, channels[0], size[0], size[1]])
        })
        .collect()
}

/// Values of the same sign and pass band as `v` (`|v| ≤ 1`) but of magnitude 1 or 2: through
/// the float simulation, with `|r|` as output weights, they give `Σ|terms|` of each gradient.
fn magnitudes(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| if x.abs() <= 1.0 { 1.0 } else { 2.0 })
        .collect()
}

/// Asserts `|actual − expected| ≤ 1e-5 · Σ|terms|` element by element: equal up to the order
/// of the f32 sums.
pub fn assert_close_to_order(what: &str, actual: &[f32], expected: &[f32], terms: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, ((&a, &e), &t)) in actual.iter().zip(expected).zip(terms).enumerate() {
        assert!(
            (a - e).abs() <= 1e-5 * t,
            "{what}: element {i} is {a:e}, expected {e:e} (Σ|terms| = {t:e})"
        );
    }
}

/// Output weights `r` of `len` small integers in `[−3, 3]`: every gradient term is then an
/// integer and both sums are exact.
fn small_integers(len: usize, seed: u64) -> Vec<f32> {
    uniform(len, -3.5, 3.5, seed)
        .into_iter()
        .map(|v| v.round())
        .collect()
}

/// The bits-only convolution node gives the forward values of the scalar reference convolution
/// exactly, and the gradients of their definition (`reference_conv_grads`) up to the order of
/// the f32 sums (`|Δ| ≤ 1e-5·Σ|terms|`), exactly for integer output gradients; inputs straddle
/// the pass band `|v| ≤ 1`.
pub fn binary_conv_gradients<B: QnnAutodiffBackend>(device: &B::Device) {
    let cases = geometries(true).into_iter().chain(random_geometries(4, 77));
    for (case, (geometry, x_shape)) in cases.enumerate() {
        for mode in [PaddingMode::Zero, PaddingMode::PlusOne] {
            let geometry = geometry.with_padding_mode(mode);
            let [c_in, c_out] = geometry.channels;
            let w_shape = [c_out, c_in, geometry.kernel[0], geometry.kernel[1]];
            let x_values = uniform(x_shape.iter().product(), -2.0, 2.0, case as u64);
            let w_values = uniform(w_shape.iter().product(), -1.5, 1.5, 50 + case as u64);
            let (forward, out_shape) = reference_conv(&x_values, x_shape, &w_values, &geometry);
            let out_len = out_shape.iter().product();
            let what = format!("case {case} {geometry:?} on {x_shape:?}");
            let packed = |r: &[f32]| {
                gradients(
                    |x, w| binary_conv2d(x, w, &geometry),
                    tensor::<B, 4>(x_values.clone(), x_shape, device),
                    tensor::<B, 4>(w_values.clone(), w_shape, device),
                    tensor::<B, 4>(r.to_vec(), out_shape, device),
                )
            };
            let expected =
                |r: &[f32]| reference_conv_grads(&x_values, x_shape, &w_values, &geometry, r);

            let r = small_integers(out_len, 9 + case as u64);
            let (got, want) = (packed(&r), expected(&r));
            assert_exact(&format!("{what} forward"), &got.0, &got.0, &forward);
            assert!(got.1.iter().any(|&g| g != 0.0), "{what}: some x gradient");
            assert_exact(&format!("{what} integer grad x"), &got.1, &got.1, &want.x);
            assert_exact(&format!("{what} integer grad w"), &got.2, &got.2, &want.w);

            let r = uniform(out_len, -1.0, 1.0, 9);
            let (got, want) = (packed(&r), expected(&r));
            assert_close_to_order(&format!("{what} grad x"), &got.1, &want.x, &want.x_terms);
            assert_close_to_order(&format!("{what} grad w"), &got.2, &want.w, &want.w_terms);
        }
    }
}

/// The bits-only `xnor_matmul` node gives the gradients of `sign(a)·sign(b)` in float, up to
/// the order of the f32 sums and exactly for integer output gradients, also with a weight
/// matrix shared over a batch and with a single row.
pub fn xnor_matmul_gradients<B: QnnAutodiffBackend>(device: &B::Device) {
    let shapes = [
        ([2, 5, 70], [2, 70, 3]),
        ([3, 4, 65], [1, 65, 6]),
        ([1, 1, 129], [1, 129, 33]),
        ([1, 50, 300], [1, 300, 17]),
    ];
    for (case, (a_shape, b_shape)) in shapes.into_iter().enumerate() {
        let a_values = uniform(a_shape.iter().product(), -2.0, 2.0, 1 + case as u64);
        let b_values = uniform(b_shape.iter().product(), -2.0, 2.0, 20 + case as u64);
        let a = tensor::<B, 3>(a_values.clone(), a_shape, device);
        let b = tensor::<B, 3>(b_values.clone(), b_shape, device);
        let out = [a_shape[0], a_shape[1], b_shape[2]];
        let out_len = out.iter().product();
        let float_product = |a: Tensor<B, 3>, b: Tensor<B, 3>| {
            burn_qnn::quant::sign(a).matmul(burn_qnn::quant::sign(b))
        };
        let what = format!("matmul case {case}");

        let r = tensor::<B, 3>(small_integers(out_len, 3 + case as u64), out, device);
        let got = gradients(ops::xnor_matmul, a.clone(), b.clone(), r.clone());
        let expected = gradients(float_product, a.clone(), b.clone(), r);
        assert_exact(&format!("{what} forward"), &got.0, &got.0, &expected.0);
        assert_exact(
            &format!("{what} integer grad a"),
            &got.1,
            &got.1,
            &expected.1,
        );
        assert_exact(
            &format!("{what} integer grad b"),
            &got.2,
            &got.2,
            &expected.2,
        );

        let r_values = uniform(out_len, -1.0, 1.0, 3);
        let r = tensor::<B, 3>(r_values.clone(), out, device);
        let abs_r = tensor::<B, 3>(r_values.iter().map(|v| v.abs()).collect(), out, device);
        let got = gradients(ops::xnor_matmul, a.clone(), b.clone(), r.clone());
        let expected = gradients(float_product, a, b, r);
        let terms = gradients(
            float_product,
            tensor::<B, 3>(magnitudes(&a_values), a_shape, device),
            tensor::<B, 3>(magnitudes(&b_values), b_shape, device),
            abs_r,
        );
        assert_close_to_order(&format!("{what} grad a"), &got.1, &expected.1, &terms.1);
        assert_close_to_order(&format!("{what} grad b"), &got.2, &expected.2, &terms.2);
    }
}

/// Integers in `[−steps, steps]`, the two extremes included: an output gradient that a
/// `bits`-bit quantizer keeps as it is (its scale `max|g| / steps` is 1).
fn grid_integers(len: usize, steps: f32, seed: u64) -> Vec<f32> {
    let mut values: Vec<f32> = uniform(len, -steps - 0.49, steps + 0.49, seed)
        .into_iter()
        .map(|v| v.round().clamp(-steps, steps))
        .collect();
    values[0] = steps;
    if len > 1 {
        values[len - 1] = -steps;
    }
    values
}

/// `r` as `quant::quantize_gradient` passes it back: the gradient, on the backend, of
/// `Σ r ⊙ quantize_gradient(z, bits)` with respect to `z`.
fn quantized_output_grad<B: QnnAutodiffBackend>(
    r: &[f32],
    shape: [usize; 4],
    bits: burn_qnn::quant::Bits,
    device: &B::Device,
) -> Vec<f32> {
    let z = tensor::<B, 4>(vec![0.0; r.len()], shape, device).require_grad();
    let y = burn_qnn::quant::quantize_gradient(z.clone(), bits);
    let grads = (y * tensor::<B, 4>(r.to_vec(), shape, device))
        .sum()
        .backward();
    values(z.grad(&grads).unwrap())
}

/// The quantized-gradient nodes (`*_quantized_grad`) give the gradients of their definition for
/// the output gradient as `quant::quantize_gradient` passes it (the host reference for the
/// convolution, the float simulation for the matrix product): exactly where the output gradient
/// is on the quantizer's integer grid (every term an integer), and up to the order of the f32
/// sums for random output gradients; the forward is the plain binary product's. Both padding
/// modes, strides 1 and 2, odd channel counts, a shared weight matrix, 2 to 8 bits.
pub fn quantized_gradients<B: QnnAutodiffBackend>(device: &B::Device) {
    use burn_qnn::quant::{
        Bits,
        GradRounding::{Nearest, Stochastic},
        quantize_gradient, quantize_gradient_stochastic,
    };

    // A few cases of each kind: the kernels' own tests cover many more shapes.
    let cases = geometries(true)
        .into_iter()
        .take(3)
        .chain(random_geometries(2, 91));
    for (case, (geometry, x_shape)) in cases.enumerate() {
        let mode = [PaddingMode::Zero, PaddingMode::PlusOne][case % 2];
        let geometry = geometry.with_padding_mode(mode);
        let bits = Bits::new(2 + case as u32 % 7).unwrap();
        let steps = (((1u32 << (bits.get() - 1)) - 1).max(1)) as f32;
        let [c_in, c_out] = geometry.channels;
        let w_shape = [c_out, c_in, geometry.kernel[0], geometry.kernel[1]];
        let x_values = uniform(x_shape.iter().product(), -2.0, 2.0, 300 + case as u64);
        let w_values = uniform(w_shape.iter().product(), -1.5, 1.5, 400 + case as u64);
        let (forward, out_shape) = reference_conv(&x_values, x_shape, &w_values, &geometry);
        let out_len = out_shape.iter().product();
        let what = format!(
            "case {case}, {} bits, {geometry:?} on {x_shape:?}",
            bits.get()
        );
        let ours = |r: &[f32]| {
            gradients(
                |x, w| ops::binary_conv2d_quantized_grad(x, w, &geometry, bits, Nearest),
                tensor::<B, 4>(x_values.clone(), x_shape, device),
                tensor::<B, 4>(w_values.clone(), w_shape, device),
                tensor::<B, 4>(r.to_vec(), out_shape, device),
            )
        };
        // The definition's gradients of the output gradient as `quantize_gradient` passes it.
        let expected = |r: &[f32]| {
            let quantized = quantized_output_grad::<B>(r, out_shape, bits, device);
            reference_conv_grads(&x_values, x_shape, &w_values, &geometry, &quantized)
        };

        let r = grid_integers(out_len, steps, case as u64);
        assert_eq!(
            quantized_output_grad::<B>(&r, out_shape, bits, device),
            r,
            "{what}: the quantizer keeps a gradient on its grid"
        );
        let (got, want) = (ours(&r), expected(&r));
        assert_exact(&format!("{what} forward"), &got.0, &got.0, &forward);
        assert!(got.1.iter().any(|&g| g != 0.0), "{what}: some x gradient");
        assert_exact(&format!("{what} grid grad x"), &got.1, &got.1, &want.x);
        assert_exact(&format!("{what} grid grad w"), &got.2, &got.2, &want.w);

        // Each quantized term is at most max|r| = 1 in magnitude.
        let r = uniform(out_len, -1.0, 1.0, 500 + case as u64);
        let (got, want) = (ours(&r), expected(&r));
        let ones = vec![1.0; out_len];
        let bound = reference_conv_grads(&x_values, x_shape, &w_values, &geometry, &ones);
        assert_close_to_order(&format!("{what} grad x"), &got.1, &want.x, &bound.x_terms);
        assert_close_to_order(&format!("{what} grad w"), &got.2, &want.w, &bound.w_terms);
    }

    let shapes = [
        ([2, 5, 70], [2, 70, 3]),
        ([3, 4, 65], [1, 65, 6]),
        ([1, 50, 300], [1, 300, 17]),
    ];
    for (case, (a_shape, b_shape)) in shapes.into_iter().enumerate() {
        let bits = Bits::new([6, 2, 8][case]).unwrap();
        let steps = (((1u32 << (bits.get() - 1)) - 1).max(1)) as f32;
        let a = tensor::<B, 3>(
            uniform(a_shape.iter().product(), -2.0, 2.0, 600 + case as u64),
            a_shape,
            device,
        );
        let b = tensor::<B, 3>(
            uniform(b_shape.iter().product(), -2.0, 2.0, 700 + case as u64),
            b_shape,
            device,
        );
        let out = [a_shape[0], a_shape[1], b_shape[2]];
        let r = tensor::<B, 3>(
            grid_integers(out.iter().product(), steps, 800 + case as u64),
            out,
            device,
        );
        let got = gradients(
            |a, b| ops::xnor_matmul_quantized_grad(a, b, bits, Nearest),
            a.clone(),
            b.clone(),
            r.clone(),
        );
        let product = |a, b| burn_qnn::quant::sign(a).matmul(burn_qnn::quant::sign(b));
        let expected = gradients(
            |a, b| quantize_gradient(product(a, b), bits),
            a.clone(),
            b.clone(),
            r,
        );
        let what = format!("matmul case {case}, {} bits", bits.get());
        assert_exact(&format!("{what} forward"), &got.0, &got.0, &expected.0);
        assert_exact(&format!("{what} grid grad a"), &got.1, &got.1, &expected.1);
        assert_exact(&format!("{what} grid grad b"), &got.2, &got.2, &expected.2);

        // Stochastic rounding: one draw of noise for both gradients, the draw of
        // `quantize_gradient_stochastic` under the same seed (random output weights, so that
        // the rounding is not determined).
        let r = tensor::<B, 3>(
            uniform(out.iter().product(), -1.0, 1.0, 900 + case as u64),
            out,
            device,
        );
        let stochastic = |f: &dyn Fn(Tensor<B, 3>, Tensor<B, 3>) -> Tensor<B, 3>| {
            B::seed(device, 31 + case as u64);
            gradients(f, a.clone(), b.clone(), r.clone())
        };
        let got = stochastic(&|a, b| ops::xnor_matmul_quantized_grad(a, b, bits, Stochastic));
        let expected = stochastic(&|a, b| quantize_gradient_stochastic(product(a, b), bits));
        let nearest = gradients(
            |a, b| ops::xnor_matmul_quantized_grad(a, b, bits, Nearest),
            a.clone(),
            b.clone(),
            r,
        );
        // Each gradient value sums `n` (for `a`) or `batch · m` (for `b`) terms of magnitude ≤ 1.
        let a_terms = vec![b_shape[2] as f32; got.1.len()];
        let b_terms = vec![(a_shape[0] * a_shape[1]) as f32; got.2.len()];
        assert_close_to_order(
            &format!("{what} stochastic grad a"),
            &got.1,
            &expected.1,
            &a_terms,
        );
        assert_close_to_order(
            &format!("{what} stochastic grad b"),
            &got.2,
            &expected.2,
            &b_terms,
        );
        assert_ne!(
            got.1, nearest.1,
            "{what}: stochastic rounding changed nothing"
        );
    }
}
