//! Tests of the binary convolution kernels.

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::kernels::isa::with_isa;

/// `+1` for `v ≥ 0`, `−0.0` and NaN, else `−1`.
fn sign(v: f32) -> f32 {
    if v < 0.0 { -1.0 } else { 1.0 }
}

/// Values with every sign case: ordinary, ±0, NaN of both signs, ±∞, tiny negatives.
fn values(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match rng.random_range(0..16) {
            0 => 0.0,
            1 => -0.0,
            2 => f32::NAN,
            3 => f32::from_bits(0xffc0_0000),
            4 => f32::INFINITY,
            5 => f32::NEG_INFINITY,
            6 => -1e-45,
            _ => rng.random_range(-1.0..1.0),
        })
        .collect()
}

/// The convolution of the ±1 values, from the definition, in floats.
fn reference(input: &[f32], weights: &[f32], g: &ConvCall, pad: PaddingMode) -> Vec<f32> {
    let [oh, ow] = g.output_size().unwrap();
    let (c, h, w, o) = (g.in_channels, g.height, g.width, g.out_channels);
    let [kh, kw] = g.kernel;
    let pad_value = match pad {
        PaddingMode::Zero => 0.0,
        PaddingMode::PlusOne => 1.0,
    };
    let mut out = vec![0.0; g.batch * o * oh * ow];
    for b in 0..g.batch {
        for oc in 0..o {
            for y in 0..oh {
                for x in 0..ow {
                    let mut sum = 0.0f32;
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let yy = (y * g.stride[0] + i * g.dilation[0]) as isize
                                    - g.padding[0] as isize;
                                let xx = (x * g.stride[1] + j * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                let inside =
                                    (0..h as isize).contains(&yy) && (0..w as isize).contains(&xx);
                                let s = if inside {
                                    let at = ((b * c + ci) * h + yy as usize) * w + xx as usize;
                                    sign(input[at])
                                } else {
                                    pad_value
                                };
                                sum += s * sign(weights[((oc * c + ci) * kh + i) * kw + j]);
                            }
                        }
                    }
                    out[((b * o + oc) * oh + y) * ow + x] = sum;
                }
            }
        }
    }
    out
}

/// Random input and weights for `g` (every sign case, see [`values`]) and the weights packed.
fn random_layer(rng: &mut StdRng, g: &ConvCall) -> (Vec<f32>, Vec<f32>, ConvWeightBlocks) {
    let input = values(rng, g.input_len());
    let raw = values(rng, g.weights_len());
    let weights = ConvWeightBlocks::new(&raw, g.out_channels, g.in_channels, g.kernel);
    (input, raw, weights)
}

/// The reference dot products turned into `±1` by a per-channel rule: `+1` where
/// `plus(channel, dot)`.
fn reference_signs(
    input: &[f32],
    raw: &[f32],
    g: &ConvCall,
    pad: PaddingMode,
    plus: impl Fn(usize, f32) -> bool,
) -> Vec<f32> {
    let o = g.out_channels;
    let plane = g.output_len().unwrap() / (g.batch * o);
    reference(input, raw, g, pad)
        .iter()
        .enumerate()
        .map(|(i, &dot)| if plus(i / plane % o, dot) { 1.0 } else { -1.0 })
        .collect()
}

fn geometry(
    [batch, in_channels, height, width, out_channels]: [usize; 5],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> ConvCall {
    ConvCall {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel,
        stride,
        padding,
        dilation,
    }
}

/// Runs every available path and pad mode on random data and compares with the reference.
fn check(rng: &mut StdRng, g: &ConvCall) {
    let (input, raw, weights) = random_layer(rng, g);
    for pad in [PaddingMode::Zero, PaddingMode::PlusOne] {
        let expected = reference(&input, &raw, g, pad);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; g.output_len().unwrap()];
            with_isa(isa, || {
                convolve_nchw(&input, &weights, g, pad, ConvEpilogue::Raw, &mut out)
            });
            assert_eq!(out, expected, "{isa:?} {pad:?} {g:?}");
        }
    }
}

const CHANNELS: [usize; 7] = [1, 3, 31, 63, 64, 65, 130];
const KERNELS: [[usize; 2]; 4] = [[1, 1], [3, 3], [5, 3], [3, 5]];

#[test]
fn matches_reference_on_random_geometries() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut checked = 0;
    while checked < 60 {
        let pick =
            |rng: &mut StdRng, options: &[usize]| options[rng.random_range(0..options.len())];
        let kernel = KERNELS[rng.random_range(0..KERNELS.len())];
        let g = geometry(
            [
                pick(&mut rng, &[1, 3]),
                CHANNELS[checked % CHANNELS.len()],
                pick(&mut rng, &[1, 2, 5, 7, 9, 11, 13]),
                pick(&mut rng, &[1, 3, 6, 9, 11, 17, 19]),
                pick(&mut rng, &[1, 5, 8, 17]),
            ],
            kernel,
            [pick(&mut rng, &[1, 2]), pick(&mut rng, &[1, 2])],
            [pick(&mut rng, &[0, 1, 2]), pick(&mut rng, &[0, 1, 2])],
            [pick(&mut rng, &[1, 2]), pick(&mut rng, &[1, 2])],
        );
        if g.validate().is_ok() {
            check(&mut rng, &g);
            checked += 1;
        }
    }
}

#[test]
fn matches_reference_on_every_channel_count_and_kernel() {
    let mut rng = StdRng::seed_from_u64(2);
    for c in CHANNELS {
        for kernel in KERNELS {
            check(
                &mut rng,
                &geometry([1, c, 7, 9, 9], kernel, [1, 1], [1, 2], [1, 1]),
            );
        }
    }
}

#[test]
fn strides_paddings_and_dilations_per_axis() {
    let mut rng = StdRng::seed_from_u64(3);
    for stride in [[1, 1], [2, 1], [1, 2], [2, 2], [3, 2]] {
        for padding in [[0, 0], [1, 0], [0, 2], [2, 1], [3, 3]] {
            for dilation in [[1, 1], [2, 1], [1, 2], [2, 3]] {
                let g = geometry([2, 65, 9, 12, 10], [3, 3], stride, padding, dilation);
                if g.validate().is_ok() {
                    check(&mut rng, &g);
                }
            }
        }
    }
}

/// Kernels as large as the padded input, and paddings wider than the kernel (rows of
/// outputs that see only padding).
#[test]
fn extreme_paddings() {
    let mut rng = StdRng::seed_from_u64(4);
    check(
        &mut rng,
        &geometry([1, 3, 3, 5, 4], [5, 3], [1, 1], [1, 0], [1, 2]),
    );
    check(
        &mut rng,
        &geometry([2, 31, 2, 2, 3], [1, 1], [1, 1], [3, 2], [1, 1]),
    );
    check(
        &mut rng,
        &geometry([1, 64, 1, 1, 9], [3, 3], [1, 1], [2, 2], [1, 1]),
    );
    check(
        &mut rng,
        &geometry([1, 7, 4, 4, 3], [3, 3], [2, 3], [4, 1], [2, 1]),
    );
}

/// Shapes large enough to split between threads: batch 1 with many channels (split by
/// channel blocks), and a batch of larger images (split by pixels).
#[test]
fn matches_reference_when_split_between_threads() {
    let mut rng = StdRng::seed_from_u64(5);
    check(
        &mut rng,
        &geometry([1, 130, 8, 8, 70], [3, 3], [1, 1], [1, 1], [1, 1]),
    );
    check(
        &mut rng,
        &geometry([3, 64, 19, 17, 24], [3, 3], [1, 1], [1, 1], [1, 1]),
    );
    check(
        &mut rng,
        &geometry([2, 65, 33, 31, 17], [5, 3], [2, 1], [2, 1], [1, 2]),
    );
}

/// Floats for the edge cases of the sign epilogue: ±0, NaN, ±∞, tiny, huge and ordinary ones.
const SPECIAL_FLOATS: [f32; 14] = [
    0.0,
    -0.0,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    1e-30,
    -1e-30,
    3e38,
    -3e38,
    1e12,
    -1e12,
    0.1,
    -0.3,
    7.0,
];

#[test]
fn sign_thresholds_match_the_affine_sign_for_every_dot() {
    let mut rng = StdRng::seed_from_u64(6);
    let specials = SPECIAL_FLOATS;
    let mut a: Vec<f32> = Vec::new();
    let mut b: Vec<f32> = Vec::new();
    for &x in &specials {
        for &y in &specials {
            a.push(x);
            b.push(y);
        }
    }
    for _ in 0..300 {
        a.push(rng.random_range(-3.0..3.0));
        b.push(rng.random_range(-40.0..40.0));
        a.push(rng.random_range(-1.0..1.0) * 1e-7);
        b.push(rng.random_range(-1.0..1.0) * 1e-6);
    }
    for max_dot in [0, 1, 7, 64, 300] {
        let th = SignThresholds::from_affine(&a, &b, max_dot);
        for ch in 0..a.len() {
            for d in -(max_dot as i64)..=max_dot as i64 {
                let d = d as f32;
                let expected = sign(a[ch] * d + b[ch]);
                let on = if th.negate[ch] {
                    d <= th.threshold[ch]
                } else {
                    d >= th.threshold[ch]
                };
                let got = if on { 1.0 } else { -1.0 };
                assert_eq!(got, expected, "a={} b={} dot={d}", a[ch], b[ch]);
            }
        }
    }
}

/// The fused epilogue against `sign(a·dot + b)` of the reference dot products, on every
/// path, with constant channels (`a = 0`, NaN) among them.
#[test]
fn sign_epilogue_matches_reference() {
    let mut rng = StdRng::seed_from_u64(7);
    for g in [
        geometry([1, 65, 9, 11, 19], [3, 3], [1, 1], [1, 1], [1, 1]),
        geometry([3, 31, 7, 6, 10], [5, 3], [2, 1], [2, 0], [1, 2]),
        geometry([1, 130, 8, 8, 70], [3, 3], [1, 1], [1, 1], [1, 1]),
    ] {
        let (input, raw, weights) = random_layer(&mut rng, &g);
        let o = g.out_channels;
        let a: Vec<f32> = (0..o)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => f32::NAN,
                2 | 3 => -rng.random_range(0.01..2.0),
                _ => rng.random_range(0.01..2.0),
            })
            .collect();
        let b: Vec<f32> = (0..o).map(|_| rng.random_range(-20.0..20.0)).collect();
        let th = SignThresholds::from_affine(&a, &b, weights.max_dot());
        for pad in [PaddingMode::Zero, PaddingMode::PlusOne] {
            let expected =
                reference_signs(&input, &raw, &g, pad, |ch, d| sign(a[ch] * d + b[ch]) > 0.0);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; expected.len()];
                with_isa(isa, || {
                    convolve_nchw(&input, &weights, &g, pad, th.epilogue(), &mut out)
                });
                assert_eq!(out, expected, "{isa:?} {pad:?} {g:?}");
            }
        }
    }
}

/// `count_limit` against the float comparison it stands for, for every count that gives a dot
/// product in range, on integer and fractional thresholds, the integers' float neighbours,
/// ±0, ±∞, NaN and thresholds far outside every dot product.
#[test]
fn count_limits_match_the_float_comparison() {
    let mut thresholds = SPECIAL_FLOATS.to_vec();
    for i in -12..=12 {
        let t = i as f32;
        thresholds.extend([t, t.next_up(), t.next_down(), t + 0.5]);
    }
    for base in -9i64..=9 {
        for &threshold in &thresholds {
            for negate in [false, true] {
                let limit = count_limit(base as f32, threshold, negate);
                for count in 0..=12i64 {
                    let dot = (base - 2 * count) as f32;
                    let plus = if negate {
                        dot <= threshold
                    } else {
                        dot >= threshold
                    };
                    assert_eq!(
                        (count <= limit) != negate,
                        plus,
                        "base {base}, threshold {threshold}, negate {negate}, count {count}"
                    );
                }
            }
        }
    }
}

/// The sign epilogue with any thresholds (fractional, integer, ±∞, NaN; plain and negated), not
/// only those of `SignThresholds::from_affine`, against its definition on the reference dot
/// products, as floats and as packed signs, on every path; twice on the same weights and
/// geometry with new thresholds, so that the limits kept from one call must not serve the next.
#[test]
fn sign_epilogue_matches_its_definition_for_any_threshold() {
    let mut rng = StdRng::seed_from_u64(31);
    for g in [
        geometry([2, 70, 9, 11, 19], [3, 3], [1, 1], [1, 1], [1, 1]),
        geometry([1, 31, 7, 13, 12], [3, 5], [2, 1], [2, 0], [1, 2]),
    ] {
        let (input, raw, weights) = random_layer(&mut rng, &g);
        let o = g.out_channels;
        let [oh, ow] = g.output_size().unwrap();
        for _round in 0..2 {
            let threshold: Vec<f32> = (0..o)
                .map(|_| match rng.random_range(0..10) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    3 => rng.random_range(-30..30) as f32,
                    _ => rng.random_range(-30.0..30.0),
                })
                .collect();
            let negate: Vec<bool> = (0..o).map(|_| rng.random_bool(0.5)).collect();
            let epilogue = ConvEpilogue::Sign {
                threshold: &threshold,
                negate: &negate,
            };
            let thresholds = SignThresholds {
                threshold: threshold.clone(),
                negate: negate.clone(),
            };
            for pad in [PaddingMode::Zero, PaddingMode::PlusOne] {
                let expected = reference_signs(&input, &raw, &g, pad, |ch, dot| {
                    if negate[ch] {
                        dot <= threshold[ch]
                    } else {
                        dot >= threshold[ch]
                    }
                });
                let want = ref_packed(&expected, [g.batch, o, oh, ow]);
                for isa in Isa::available() {
                    let mut out = vec![0.0; expected.len()];
                    with_isa(isa, || {
                        convolve_nchw(&input, &weights, &g, pad, epilogue, &mut out)
                    });
                    assert_eq!(out, expected, "{isa:?} {pad:?} {g:?}");
                    let bits = with_isa(isa, || {
                        convolve_to_signs(ConvInput::Nchw(&input), &weights, &g, pad, &thresholds)
                    });
                    assert_eq!(bits.words(), want, "{isa:?} {pad:?} {g:?}");
                }
            }
        }
    }
}

/// One set of weights used with many image sizes and geometries in turn (more than the
/// base-table cache holds), twice.
#[test]
fn weights_reused_across_geometries() {
    let mut rng = StdRng::seed_from_u64(8);
    let (o, c, kernel) = (11, 40, [3, 3]);
    let raw = values(&mut rng, o * c * 9);
    let weights = ConvWeightBlocks::new(&raw, o, c, kernel);
    let shapes = [
        ([1, c, 5, 5, o], [1, 1], [1, 1], [1, 1]),
        ([2, c, 8, 6, o], [1, 1], [1, 1], [1, 1]),
        ([1, c, 9, 9, o], [2, 2], [1, 1], [1, 1]),
        ([1, c, 9, 9, o], [1, 1], [0, 2], [1, 1]),
        ([1, c, 9, 9, o], [1, 1], [2, 2], [2, 2]),
        ([1, c, 12, 4, o], [1, 1], [1, 1], [1, 1]),
    ];
    for _ in 0..2 {
        for &(dims, stride, padding, dilation) in &shapes {
            let g = geometry(dims, kernel, stride, padding, dilation);
            let input = values(&mut rng, g.input_len());
            for pad in [PaddingMode::Zero, PaddingMode::PlusOne] {
                let mut out = vec![f32::NAN; g.output_len().unwrap()];
                convolve_nchw(&input, &weights, &g, pad, ConvEpilogue::Raw, &mut out);
                assert_eq!(out, reference(&input, &raw, &g, pad), "{pad:?} {g:?}");
            }
        }
    }
    let clone = weights.clone();
    let g = geometry([1, c, 5, 5, o], kernel, [1, 1], [1, 1], [1, 1]);
    let input = values(&mut rng, g.input_len());
    let mut out = vec![0.0; g.output_len().unwrap()];
    convolve_nchw(
        &input,
        &clone,
        &g,
        PaddingMode::Zero,
        ConvEpilogue::Raw,
        &mut out,
    );
    assert_eq!(out, reference(&input, &raw, &g, PaddingMode::Zero));
}

#[test]
fn output_size_follows_the_formula() {
    let g = geometry([1, 3, 32, 31, 8], [3, 5], [2, 3], [1, 2], [2, 1]);
    // (32 + 2 − 2·2 − 1)/2 + 1 = 15, (31 + 4 − 4 − 1)/3 + 1 = 11.
    assert_eq!(g.output_size(), Ok([15, 11]));
    assert_eq!(g.output_len(), Ok(15 * 11 * 8));
    assert_eq!(g.macs(), Ok(15 * 11 * 8 * 3 * 15));
    let same = geometry([1, 3, 32, 32, 8], [3, 3], [1, 1], [1, 1], [1, 1]);
    assert_eq!(same.output_size(), Ok([32, 32]));
}

#[test]
fn impossible_geometries_are_reported() {
    let base = geometry([1, 3, 5, 5, 4], [3, 3], [1, 1], [0, 0], [1, 1]);
    let zero_stride = ConvCall {
        stride: [1, 0],
        ..base
    };
    assert!(matches!(
        zero_stride.output_size(),
        Err(ConvCallError::Zero { name: "stride", .. })
    ));
    let zero_kernel = ConvCall {
        kernel: [0, 3],
        ..base
    };
    assert!(zero_kernel.validate().is_err());
    let too_big = ConvCall {
        dilation: [3, 1],
        ..base
    };
    let err = too_big.output_size().unwrap_err();
    assert!(matches!(
        err,
        ConvCallError::KernelTooLarge {
            axis: "rows",
            extent: 7,
            padded: 5,
            ..
        }
    ));
    assert!(err.to_string().contains("spans 7 rows"), "{err}");
    let huge = ConvCall {
        in_channels: 1 << 22,
        ..base
    };
    assert!(matches!(huge.validate(), Err(ConvCallError::TooLarge(_))));
}

#[test]
#[should_panic(expected = "dilated kernel spans")]
fn conv_panics_on_impossible_geometry() {
    let g = geometry([1, 3, 2, 2, 4], [3, 3], [1, 1], [0, 0], [1, 1]);
    let weights = ConvWeightBlocks::new(&[1.0; 4 * 3 * 9], 4, 3, [3, 3]);
    convolve_nchw(
        &[0.0; 12],
        &weights,
        &g,
        PaddingMode::Zero,
        ConvEpilogue::Raw,
        &mut [],
    );
}

#[test]
#[should_panic(expected = "the weights")]
fn conv_panics_on_mismatched_weights() {
    let g = geometry([1, 3, 4, 4, 4], [3, 3], [1, 1], [1, 1], [1, 1]);
    let weights = ConvWeightBlocks::new(&[1.0; 4 * 2 * 9], 4, 2, [3, 3]);
    let mut out = vec![0.0; 64];
    convolve_nchw(
        &[0.0; 48],
        &weights,
        &g,
        PaddingMode::Zero,
        ConvEpilogue::Raw,
        &mut out,
    );
}

#[test]
fn empty_shapes() {
    let mut rng = StdRng::seed_from_u64(9);
    for isa in Isa::available() {
        let g = geometry([0, 3, 4, 4, 5], [3, 3], [1, 1], [1, 1], [1, 1]);
        let w = ConvWeightBlocks::new(&values(&mut rng, 5 * 3 * 9), 5, 3, [3, 3]);
        with_isa(isa, || {
            convolve_nchw(&[], &w, &g, PaddingMode::Zero, ConvEpilogue::Raw, &mut [])
        });
        let g = geometry([2, 3, 4, 4, 0], [3, 3], [1, 1], [1, 1], [1, 1]);
        let w = ConvWeightBlocks::new(&[], 0, 3, [3, 3]);
        let input = values(&mut rng, g.input_len());
        with_isa(isa, || {
            convolve_nchw(
                &input,
                &w,
                &g,
                PaddingMode::Zero,
                ConvEpilogue::Raw,
                &mut [],
            )
        });
    }
    // No input channels: every dot product is 0.
    check(
        &mut rng,
        &geometry([2, 0, 4, 5, 3], [3, 3], [1, 1], [1, 1], [1, 1]),
    );
    // Images of zero width or height, seen only through padding.
    check(
        &mut rng,
        &geometry([1, 5, 0, 3, 3], [1, 1], [1, 1], [1, 0], [1, 1]),
    );
}

/// Packed signs from the definition (row-planar layout).
fn ref_packed(values: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<u64> {
    let cw = words_per_row(c);
    let mut out = vec![0u64; n * h * cw * w];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    if values[((b * c + ch) * h + y) * w + x] < 0.0 {
                        out[((b * h + y) * cw + ch / 64) * w + x] |= 1 << (ch % 64);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn packed_activations_match_definition_and_round_trip() {
    let mut rng = StdRng::seed_from_u64(20);
    for shape in [
        [1, 1, 1, 1],
        [2, 3, 5, 7],
        [1, 65, 9, 8],
        [3, 130, 4, 17],
        [1, 128, 32, 32],
    ] {
        let [n, c, h, w] = shape;
        let values = values(&mut rng, n * c * h * w);
        for isa in Isa::available() {
            let packed = with_isa(isa, || PackedActivations::from_nchw(&values, n, c, h, w));
            assert_eq!(packed.shape(), shape);
            assert_eq!(
                packed.words(),
                ref_packed(&values, shape),
                "{isa:?} {shape:?}"
            );
            let mut back = vec![0.0; values.len()];
            packed.to_nchw(&mut back);
            let signs: Vec<f32> = values.iter().map(|&v| sign(v)).collect();
            assert_eq!(back, signs, "{isa:?} {shape:?}");
        }
    }
}

#[test]
fn max_pool_matches_float_max() {
    let mut rng = StdRng::seed_from_u64(21);
    for [n, c, h, w] in [
        [1, 1, 2, 2],
        [2, 3, 5, 7],
        [1, 65, 8, 9],
        [2, 130, 6, 4],
        [1, 4, 1, 5],
    ] {
        let values = values(&mut rng, n * c * h * w);
        let pooled = PackedActivations::from_nchw(&values, n, c, h, w).max_pool2x2();
        let (h2, w2) = (h / 2, w / 2);
        assert_eq!(pooled.shape(), [n, c, h2, w2]);
        let mut expected = vec![0.0; n * c * h2 * w2];
        for (i, e) in expected.iter_mut().enumerate() {
            let (bc, y, x) = (i / (h2 * w2), i / w2 % h2, i % w2);
            let at = |yy: usize, xx: usize| sign(values[(bc * h + yy) * w + xx]);
            *e = at(2 * y, 2 * x)
                .max(at(2 * y, 2 * x + 1))
                .max(at(2 * y + 1, 2 * x))
                .max(at(2 * y + 1, 2 * x + 1));
        }
        let mut got = vec![0.0; expected.len()];
        pooled.to_nchw(&mut got);
        assert_eq!(got, expected, "{:?}", [n, c, h, w]);
    }
}

/// Signs taken before pooling, pooled per channel by the direction of the sign function,
/// equal the signs of the max-pooled values.
#[test]
fn sign_of_max_pool_matches_sign_after_pooling() {
    let mut rng = StdRng::seed_from_u64(23);
    for [n, c, h, w] in [[1, 3, 4, 4], [2, 70, 5, 7], [1, 130, 6, 2]] {
        // Finite values: a monotone function of a max needs ordered values.
        let values: Vec<f32> = (0..n * c * h * w)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let cut: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
        let falling: Vec<bool> = (0..c).map(|_| rng.random_bool(0.5)).collect();
        // Channel `ch`'s sign function: `v − cut` where rising, `cut − v` where falling.
        let f = |ch: usize, v: f32| {
            if falling[ch] {
                cut[ch] - v
            } else {
                v - cut[ch]
            }
        };
        let before: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| f(i / (h * w) % c, v))
            .collect();
        let mut mask = vec![0u64; c.div_ceil(64)];
        for (ch, _) in falling.iter().enumerate().filter(|(_, f)| **f) {
            mask[ch / 64] |= 1 << (ch % 64);
        }
        let pooled = PackedActivations::from_nchw(&before, n, c, h, w).sign_of_max_pool2x2(&mask);
        let (h2, w2) = (h / 2, w / 2);
        let expected: Vec<f32> = (0..n * c * h2 * w2)
            .map(|i| {
                let (bc, y, x) = (i / (h2 * w2), i / w2 % h2, i % w2);
                let at = |yy: usize, xx: usize| values[(bc * h + yy) * w + xx];
                let max = at(2 * y, 2 * x)
                    .max(at(2 * y, 2 * x + 1))
                    .max(at(2 * y + 1, 2 * x))
                    .max(at(2 * y + 1, 2 * x + 1));
                sign(f(bc % c, max))
            })
            .collect();
        let mut got = vec![0.0; expected.len()];
        pooled.to_nchw(&mut got);
        assert_eq!(got, expected, "{:?}", [n, c, h, w]);
    }
}

/// Words taken as they are round-trip; a set padding bit is refused.
#[test]
fn packed_activations_from_words() {
    let mut rng = StdRng::seed_from_u64(24);
    let values = values(&mut rng, 2 * 70 * 3 * 5);
    let packed = PackedActivations::from_nchw(&values, 2, 70, 3, 5);
    let again = PackedActivations::from_words(packed.words().to_vec(), 2, 70, 3, 5);
    assert_eq!(again, packed);
    let mut dirty = packed.words().to_vec();
    // Row 0, channel word 1, column 0: bit 6 is channel 70, past the last.
    dirty[5] |= 1 << 6;
    let refused = std::panic::catch_unwind(|| PackedActivations::from_words(dirty, 2, 70, 3, 5));
    assert!(refused.is_err());
}

/// Packed input gives the same outputs as float input, and the packed sign output holds
/// the signs that the float sign epilogue writes (padding bits 0), on every path.
#[test]
fn packed_input_and_sign_output_match_the_float_path() {
    let mut rng = StdRng::seed_from_u64(22);
    for g in [
        geometry([1, 65, 9, 11, 19], [3, 3], [1, 1], [1, 1], [1, 1]),
        geometry([3, 31, 7, 6, 70], [5, 3], [2, 1], [2, 0], [1, 2]),
        geometry([2, 130, 8, 8, 130], [3, 3], [1, 2], [1, 1], [1, 1]),
        geometry([1, 3, 5, 13, 5], [1, 1], [2, 2], [0, 1], [1, 1]),
    ] {
        let (input, raw, weights) = random_layer(&mut rng, &g);
        let o = g.out_channels;
        let a: Vec<f32> = (0..o)
            .map(|i| if i % 5 == 0 { -1.0 } else { 0.5 })
            .collect();
        let b: Vec<f32> = (0..o).map(|_| rng.random_range(-9.0..9.0)).collect();
        let th = SignThresholds::from_affine(&a, &b, weights.max_dot());
        let packed =
            PackedActivations::from_nchw(&input, g.batch, g.in_channels, g.height, g.width);
        let [oh, ow] = g.output_size().unwrap();
        for pad in [PaddingMode::Zero, PaddingMode::PlusOne] {
            let expected = reference(&input, &raw, &g, pad);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; expected.len()];
                with_isa(isa, || {
                    convolve_packed(&packed, &weights, &g, pad, ConvEpilogue::Raw, &mut out)
                });
                assert_eq!(out, expected, "{isa:?} {pad:?} {g:?}");
                let mut signs = vec![f32::NAN; expected.len()];
                with_isa(isa, || {
                    convolve_nchw(&input, &weights, &g, pad, th.epilogue(), &mut signs)
                });
                let want = ref_packed(&signs, [g.batch, o, oh, ow]);
                for source in [ConvInput::Nchw(&input), ConvInput::Packed(&packed)] {
                    let bits = with_isa(isa, || convolve_to_signs(source, &weights, &g, pad, &th));
                    assert_eq!(bits.shape(), [g.batch, o, oh, ow]);
                    assert_eq!(bits.words(), want, "{isa:?} {pad:?} {g:?}");
                }
            }
        }
    }
}

/// conv → sign → max-pool → conv in the bit domain against the float pipeline.
#[test]
fn chained_binary_layers() {
    let mut rng = StdRng::seed_from_u64(23);
    let g1 = geometry([2, 3, 10, 10, 70], [3, 3], [1, 1], [1, 1], [1, 1]);
    let g2 = geometry([2, 70, 5, 5, 9], [3, 3], [1, 1], [1, 1], [1, 1]);
    let input = values(&mut rng, g1.input_len());
    let raw1 = values(&mut rng, g1.weights_len());
    let raw2 = values(&mut rng, g2.weights_len());
    let w1 = ConvWeightBlocks::new(&raw1, 70, 3, [3, 3]);
    let w2 = ConvWeightBlocks::new(&raw2, 9, 70, [3, 3]);
    let th = SignThresholds::from_affine(&[1.0; 70], &[0.0; 70], w1.max_dot());
    // Floats: conv, sign, 2×2 max, conv.
    let dots = reference(&input, &raw1, &g1, PaddingMode::Zero);
    let mut pooled = vec![0.0; 2 * 70 * 25];
    for (i, p) in pooled.iter_mut().enumerate() {
        let (bc, y, x) = (i / 25, i / 5 % 5, i % 5);
        let at = |yy: usize, xx: usize| sign(dots[(bc * 10 + yy) * 10 + xx]);
        *p = at(2 * y, 2 * x)
            .max(at(2 * y, 2 * x + 1))
            .max(at(2 * y + 1, 2 * x))
            .max(at(2 * y + 1, 2 * x + 1));
    }
    let expected = reference(&pooled, &raw2, &g2, PaddingMode::Zero);
    // Bits.
    let a = convolve_to_signs(ConvInput::Nchw(&input), &w1, &g1, PaddingMode::Zero, &th);
    let a = a.max_pool2x2();
    let mut out = vec![0.0; expected.len()];
    convolve_packed(&a, &w2, &g2, PaddingMode::Zero, ConvEpilogue::Raw, &mut out);
    assert_eq!(out, expected);
}

#[test]
#[should_panic(expected = "packed input shape")]
fn packed_input_must_match_the_geometry() {
    let g = geometry([1, 3, 4, 4, 4], [3, 3], [1, 1], [1, 1], [1, 1]);
    let weights = ConvWeightBlocks::new(&[1.0; 4 * 3 * 9], 4, 3, [3, 3]);
    let packed = PackedActivations::from_nchw(&[0.0; 60], 1, 3, 4, 5);
    let mut out = vec![0.0; 64];
    convolve_packed(
        &packed,
        &weights,
        &g,
        PaddingMode::Zero,
        ConvEpilogue::Raw,
        &mut out,
    );
}

/// Calls from inside rayon tasks (workers busy, nested parallel regions, the scratch buffer
/// of a thread re-entered) give the same results.
#[test]
fn concurrent_and_nested_calls() {
    use rayon::prelude::*;
    let mut rng = StdRng::seed_from_u64(24);
    let g = geometry([2, 64, 12, 12, 24], [3, 3], [1, 1], [1, 1], [1, 1]);
    let (input, raw, weights) = random_layer(&mut rng, &g);
    let expected = reference(&input, &raw, &g, PaddingMode::Zero);
    let results: Vec<Vec<f32>> = (0..8)
        .into_par_iter()
        .map(|_| {
            let mut out = vec![0.0; expected.len()];
            convolve_nchw(
                &input,
                &weights,
                &g,
                PaddingMode::Zero,
                ConvEpilogue::Raw,
                &mut out,
            );
            out
        })
        .collect();
    for out in results {
        assert_eq!(out, expected);
    }
}

#[test]
fn weight_packing_layout() {
    // o = 9 (two blocks), c = 65 (two words), 1×2 kernel.
    let (o, c) = (9, 65);
    let mut raw = vec![1.0f32; o * c * 2];
    // Channel 8 (block 1, lane 0), input channel 64 (word 1), tap 1: negative.
    raw[(8 * c + 64) * 2 + 1] = -1.0;
    // Channel 2 (block 0, lane 2), input channel 3 (word 0), tap 0: negative.
    raw[(2 * c + 3) * 2] = -2.0;
    let w = ConvWeightBlocks::new(&raw, o, c, [1, 2]);
    let steps = 2 * 2;
    assert_eq!(w.words().len(), 2 * steps * BLOCK);
    let mut expected = vec![0u64; 2 * steps * BLOCK];
    expected[BLOCK * (steps + 3)] = 1; // block 1, step (tap 1, word 1), lane 0, bit 0
    expected[2] = 1 << 3; // block 0, step (tap 0, word 0), lane 2, bit 3
    assert_eq!(w.words(), expected);
    assert_eq!(w.max_dot(), 130);
}
