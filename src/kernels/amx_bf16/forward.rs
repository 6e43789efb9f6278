//! Stride-1 convolutions whose every product is exact in bf16, on tiles: the binary
//! convolution `sign(x) ⊛ w` for ±1 weights, and a float convolution of values that are bf16
//! (the bit-plane layer's 8-bit codes against ±1 weights). Their sums are of small integers
//! below 2^24, exact in f32 in any order, so the result equals the packed kernels' bit for bit.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{
    AmxBf16,
    grid::{GridConv, fill_border, images_per_group, stride_one_output, tap_offsets},
    split,
};
use crate::kernels::{
    conv::ConvCall,
    uninit::{as_slots, write_all},
};

/// What the convolution reads of its input values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// Their signs: `−1` where `v < 0`, else `+1` (`−0.0` and NaN included).
    Signs,
    /// The values themselves, which must be bf16 (the top 16 bits of each `f32` are read), such
    /// as integers up to 256.
    Exact,
}

/// `out` `[N, C_out, H_out, W_out]` = the convolution of `input` `[N, C_in, H, W]` (read as
/// `read` says; padded taps read `pad`, 0 or 1) with the weights `weight(o, i, tap)` (taps
/// row-major over `[k_h, k_w]`), which must be bf16 values such as ±1. `false`, writing
/// nothing, where the geometry is not stride 1 or a size is zero.
///
/// # Panics
/// If `input` or `out` does not hold the geometry's values.
pub(crate) fn conv2d(
    proof: AmxBf16,
    input: &[f32],
    read: Input,
    pad: f32,
    weight: impl Fn(usize, usize, usize) -> f32 + Sync,
    g: &ConvCall,
    out: &mut [f32],
) -> bool {
    // SAFETY: `conv2d_into` writes only initialized values.
    conv2d_into(proof, input, read, pad, weight, g, unsafe { as_slots(out) })
}

/// [`conv2d`] into slots: where it returns `true` it has written every one of them (so `out`
/// need not be initialized); where `false`, none.
pub(crate) fn conv2d_into(
    proof: AmxBf16,
    input: &[f32],
    read: Input,
    pad: f32,
    weight: impl Fn(usize, usize, usize) -> f32 + Sync,
    g: &ConvCall,
    out: &mut [MaybeUninit<f32>],
) -> bool {
    let Some([oh, ow]) = stride_one_output(g) else {
        return false;
    };
    let (c_in, c_out, h, w) = (g.in_channels, g.out_channels, g.height, g.width);
    assert_eq!(input.len(), g.input_len(), "conv2d on tiles: input length");
    assert_eq!(
        out.len(),
        g.batch * c_out * oh * ow,
        "conv2d on tiles: output length"
    );
    let [ph, pw] = g.padding;
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    let conv = GridConv::new(
        c_in,
        c_out,
        &tap_offsets(g, wp),
        (oh - 1) * wp + ow,
        hp * wp,
        1,
    );
    let bf16 = |v: f32| (v.to_bits() >> 16) as u16;
    let weights = conv.weights(|tap, i, o| bf16(weight(o, i, tap)));
    let pad = u32::from(bf16(pad));
    let pad_pair = pad | pad << 16;
    let (image_len, plane) = (c_in * h * w, oh * ow);
    let group = images_per_group(g.batch);
    out.par_chunks_mut(group * c_out * plane)
        .enumerate()
        .for_each(|(first, images)| {
            let mut buffers = conv.buffers();
            // The grid's border reads `pad`, in every channel (the weights of padding channels
            // are 0).
            fill_border(
                buffers.planar_mut(),
                conv.grid_len,
                [h, w],
                [ph, pw],
                pad_pair,
            );
            for (i, y) in images.chunks_mut(c_out * plane).enumerate() {
                let n = first * group + i;
                let x = &input[n * image_len..(n + 1) * image_len];
                let planar = buffers.planar_mut();
                for pair in 0..c_in.div_ceil(2) {
                    let even = &x[2 * pair * h * w..][..h * w];
                    let odd = (2 * pair + 1 < c_in).then(|| &x[(2 * pair + 1) * h * w..][..h * w]);
                    for row in 0..h {
                        let cols = row * w..(row + 1) * w;
                        let at = pair * conv.grid_len + (row + ph) * wp + pw;
                        split::value_pairs(
                            proof,
                            read == Input::Signs,
                            &even[cols.clone()],
                            odd.map(|odd| &odd[cols.clone()]),
                            &mut planar[at..at + w],
                        );
                    }
                }
                conv.run(proof, &weights, &mut buffers);
                for (o, plane) in y.chunks_mut(plane).enumerate() {
                    let sums = buffers.channel(o, conv.rows);
                    for (oy, row) in plane.chunks_mut(ow).enumerate() {
                        write_all(row, &sums[oy * wp..][..ow]);
                    }
                }
            }
        });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in `[−2, 2)`, every seventh an edge value.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_add(1);
        let edges = [0.0, -0.0, f32::NAN, -1.0, 1.0];
        (0..len)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 7 == 3 {
                    edges[i / 7 % edges.len()]
                } else {
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                }
            })
            .collect()
    }

    /// The convolution from its definition: `read(x)` at taps inside, `pad` outside.
    fn reference(
        g: &ConvCall,
        x: &[f32],
        read: impl Fn(f32) -> f32,
        pad: f32,
        w: impl Fn(usize, usize, usize) -> f32,
    ) -> Vec<f32> {
        let [oh, ow] = g.output_size().unwrap();
        let [kh, kw] = g.kernel;
        let mut y = vec![0f32; g.batch * g.out_channels * oh * ow];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = 0f32;
                        for i in 0..g.in_channels {
                            for tap in 0..kh * kw {
                                let iy = (oy + tap / kw * g.dilation[0]).checked_sub(g.padding[0]);
                                let ix = (ox + tap % kw * g.dilation[1]).checked_sub(g.padding[1]);
                                let value = match (iy, ix) {
                                    (Some(iy), Some(ix)) if iy < g.height && ix < g.width => read(
                                        x[((n * g.in_channels + i) * g.height + iy) * g.width + ix],
                                    ),
                                    _ => pad,
                                };
                                sum += value * w(o, i, tap);
                            }
                        }
                        y[((n * g.out_channels + o) * oh + oy) * ow + ox] = sum;
                    }
                }
            }
        }
        y
    }

    /// Signs and 8-bit codes against ±1 weights, both paddings, shapes off the tile sizes: the
    /// same integers as the definition, exactly.
    #[test]
    fn exact_convolutions_match_their_definition() {
        let Some(proof) = AmxBf16::if_available() else {
            eprintln!("skipped: this machine has no AMX-BF16");
            return;
        };
        let shapes = [
            // (batch, c_in, h, w, c_out, kernel, padding, dilation)
            (2, 3, 7, 6, 5, [3, 3], [1, 1], [1, 1]),
            (1, 37, 9, 12, 66, [3, 3], [1, 1], [1, 1]),
            (3, 64, 8, 8, 32, [3, 3], [1, 1], [1, 1]),
            (2, 5, 6, 17, 9, [2, 4], [1, 3], [2, 1]),
            (1, 33, 4, 3, 40, [1, 1], [2, 0], [1, 1]),
        ];
        for (case, (batch, c, h, w, o, kernel, padding, dilation)) in shapes.into_iter().enumerate()
        {
            let g = ConvCall {
                batch,
                in_channels: c,
                height: h,
                width: w,
                out_channels: o,
                kernel,
                stride: [1, 1],
                padding,
                dilation,
            };
            let signs = values(g.weights_len(), 50 + case as u64);
            let weight = |o: usize, i: usize, tap: usize| {
                let v = signs[(o * c + i) * kernel[0] * kernel[1] + tap];
                if v < 0.0 { -1.0 } else { 1.0 }
            };
            let sign = |v: f32| if v < 0.0 { -1.0 } else { 1.0 };
            let x = values(g.input_len(), case as u64);
            for pad in [0.0, 1.0] {
                let expected = reference(&g, &x, sign, pad, weight);
                let mut got = vec![f32::NAN; expected.len()];
                assert!(conv2d(proof, &x, Input::Signs, pad, weight, &g, &mut got));
                assert_eq!(got, expected, "case {case}, signs, pad {pad}");
            }
            let codes: Vec<f32> = (0..g.input_len())
                .map(|i| ((i * 37 + case) % 256) as f32)
                .collect();
            let expected = reference(&g, &codes, |v| v, 0.0, weight);
            let mut got = vec![f32::NAN; expected.len()];
            assert!(conv2d(
                proof,
                &codes,
                Input::Exact,
                0.0,
                weight,
                &g,
                &mut got
            ));
            assert_eq!(got, expected, "case {case}, codes");
        }
        let strided = ConvCall {
            batch: 1,
            in_channels: 2,
            height: 5,
            width: 5,
            out_channels: 2,
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
        };
        let mut out = vec![0.0; 2 * 3 * 3];
        let x = vec![0.0; strided.input_len()];
        assert!(!conv2d(
            proof,
            &x,
            Input::Signs,
            0.0,
            |_, _, _| 1.0,
            &strided,
            &mut out
        ));
    }
}
