//! A [`PackedNet`](super::PackedNet) run on the CPU kernels of [`crate::kernels`] directly,
//! with the activations kept as packed bits from layer to layer.
//!
//! Every layer that feeds a binary layer ends in a sign, so its batch norm and sign fold into
//! integer ranges on its products ([`super::thresholds`]) and it writes bits:
//! - the bit-plane first convolution computes its integer products of 8-bit codes and weight
//!   signs in `i16` lanes and compares them with ranges per channel and per count of image
//!   taps under the kernel (padding changes the layer's correction term at the borders);
//! - binary convolutions use the kernel's sign epilogue
//!   ([`convolve_to_signs`](crate::kernels::conv::convolve_to_signs)), and pool after it
//!   ([`PackedActivations::sign_of_max_pool2x2`]);
//! - fully connected layers use [`xnor_gemm`](crate::kernels::xnor::xnor_gemm) and compare.
//!
//! The values equal those of the tensor path op for op: the integer products are exact, and the
//! float steps (bias, batch norm) are the same f32 operations in the same order.

pub(crate) mod first_conv;

use std::sync::Arc;

use first_conv::FirstConv;

use super::{
    record::{OutputRecord, PackedNetRecord},
    thresholds::{self, falling_mask, range_signs, sign_rows},
};
use crate::{
    kernels::{
        bit_plane,
        conv::{self as kernel, ConvInput, PackedActivations, PaddingMode, SignThresholds},
        eval_norm::{EvalNorm, binarizes_positive},
        float_gemm::{self, MatMut, MatRef},
        pack, words_per_row, xnor,
    },
    models::NetConfig,
    nn::HALF_RANGE,
    ops::{ConvWeights, Encoding, HostPacked},
    quant::Bits,
};

/// A packed network on the CPU kernels, built from a checked [`PackedNetRecord`].
#[derive(Debug)]
pub(super) struct HostNet {
    /// `[C, H, W]` of the input images.
    image: [usize; 3],
    first: FirstLayer,
    convs: Vec<BinaryConv>,
    dense: Vec<Dense>,
}

/// The layer on the 8-bit input codes.
#[derive(Debug)]
enum FirstLayer {
    Conv(FirstConv),
    Dense(FirstDense),
}

/// Inputs up to which the first fully connected layer multiplies its 8-bit codes by its signs
/// as floats (exact: every sum is an integer below `128 · 255 < 2^24`): with one or two words
/// per bit plane, the bit-serial kernel's per-output reduction over 8 planes costs more than
/// the float product.
const FLOAT_FIRST_DENSE_INPUTS: usize = 128;

/// The signs of the first fully connected layer, `[d_out, d_in]`, in the form its product takes.
#[derive(Debug)]
enum FirstDenseWeights {
    /// As ±1 floats, for layers of at most [`FLOAT_FIRST_DENSE_INPUTS`] inputs.
    Floats(Vec<f32>),
    /// Packed, for the bit-serial kernel.
    Bits(HostPacked),
}

/// The bit-plane first fully connected layer of a network without convolutions.
#[derive(Debug)]
struct FirstDense {
    /// The weight signs `[d_out, d_in]`.
    weights: FirstDenseWeights,
    d_in: usize,
    /// Per output, the sum of its weight signs (the correction of the 8-bit codes' offset).
    sums: Vec<f32>,
    bias: Option<Vec<f32>>,
    norm: EvalNorm,
    /// Whether the layer gives the scores (no sign after it).
    last: bool,
}

/// A binary convolution with its sign epilogue, and 2 × 2 pooling if the layer pools.
#[derive(Debug)]
struct BinaryConv {
    /// In the direct kernel's layout.
    weights: Arc<ConvWeights>,
    padding: [usize; 2],
    thresholds: SignThresholds,
    /// The channels whose sign falls as the product rises (bit per channel), if the layer pools.
    pool: Option<Vec<u64>>,
}

/// A binary fully connected layer.
#[derive(Debug)]
struct Dense {
    /// Rows of weight signs `[d_out, words_per_row(k_bits)]`, in the order of the input bits.
    weights: Vec<u64>,
    /// Input bits a row, padding included.
    k_bits: usize,
    /// Real inputs (padding bits are 0 in both operands and add `+1` each to the dot product).
    d_in: usize,
    d_out: usize,
    bias: Option<Vec<f32>>,
    output: DenseOutput,
}

#[derive(Debug)]
enum DenseOutput {
    /// Sign bits: `+1` where `lo ≤ y ≤ hi`.
    Signs { lo: Vec<f32>, hi: Vec<f32> },
    /// The scores: batch norm of `y`.
    Scores(EvalNorm),
}

/// The packed sign rows `[rows, k]` of a layer record's bytes (`None` if they do not fit).
fn sign_rows_of(bytes: &[u8], rows: usize, k: usize) -> Option<HostPacked> {
    HostPacked::from_bytes(bytes, &[rows, k], Encoding::Signs).ok()
}

/// The packed convolution weights of a layer record's bytes, rows `[C_out, k_h·k_w·C']`.
fn conv_rows_of(bytes: &[u8], geometry: &crate::ops::ConvGeometry) -> Option<HostPacked> {
    let [_, c_out] = geometry.channels;
    sign_rows_of(bytes, c_out, geometry.taps() * geometry.padded_channels())
}

impl HostNet {
    /// The network of a record already checked by [`super::PackedNet::from_record`], or why
    /// this path does not run its layout.
    pub(super) fn new(record: &PackedNetRecord) -> Result<HostNet, String> {
        let config = &record.config;
        let image = [config.in_channels, config.image_size, config.image_size];
        let mut size = [config.image_size, config.image_size];
        let mut channels = config.in_channels;
        let mut convs = Vec::new();
        let mut first = None;
        for (i, layer) in record.convs.iter().enumerate() {
            let geometry = config.conv_geometry(i);
            let [c_in, c_out] = geometry.channels;
            if geometry.stride != [1, 1] || geometry.dilation != [1, 1] || c_in != channels {
                return Err(format!(
                    "conv {i}: stride {:?}, dilation {:?} and {c_in} input channels after \
                     {channels} (the kernels take stride 1, no dilation, matching channels)",
                    geometry.stride, geometry.dilation
                ));
            }
            let output = geometry.output_size(size);
            if i == 0 {
                let conv = FirstConv::new(layer, &geometry, size).ok_or_else(|| {
                    "conv 0: its products could leave 16-bit lanes (8-bit codes over more than \
                     128 taps), or it has no batch norm to fold"
                        .to_owned()
                })?;
                first = Some(FirstLayer::Conv(conv));
            } else {
                let weights = conv_rows_of(&layer.weights, &geometry)
                    .ok_or_else(|| format!("conv {i}: weights that do not fit its shape"))?
                    .conv_weights(c_in, geometry.kernel);
                let thresholds = sign_thresholds(&layer.output)
                    .ok_or_else(|| format!("conv {i}: no thresholds after it"))?;
                let pool = NetConfig::pools_after(i).then(|| falling_mask(&thresholds));
                convs.push(BinaryConv {
                    weights,
                    padding: geometry.padding,
                    thresholds,
                    pool,
                });
            }
            size = output;
            if NetConfig::pools_after(i) {
                size = [size[0] / 2, size[1] / 2];
            }
            channels = c_out;
        }
        let mut dense = Vec::new();
        let last = record
            .dense
            .len()
            .checked_sub(1)
            .ok_or("no fully connected layer")?;
        for (i, layer) in record.dense.iter().enumerate() {
            let (d_in, d_out) = config.dense_shape(i);
            let bias = layer.bias.clone();
            if i == 0 && record.convs.is_empty() {
                let weights = sign_rows_of(&layer.weights, d_out, d_in)
                    .ok_or_else(|| format!("dense {i}: weights that do not fit its shape"))?;
                let sums = column_sums(&weights, d_out, d_in);
                let weights = if d_in <= FLOAT_FIRST_DENSE_INPUTS {
                    FirstDenseWeights::Floats(weights.unpack())
                } else {
                    FirstDenseWeights::Bits(weights)
                };
                first = Some(FirstLayer::Dense(FirstDense {
                    weights,
                    d_in,
                    sums,
                    bias,
                    norm: layer
                        .output
                        .eval_norm()
                        .ok_or_else(|| format!("dense {i}: no batch norm after it"))?,
                    last: i == last,
                }));
                continue;
            }
            let rows = sign_rows_of(&layer.weights, d_out, d_in)
                .ok_or_else(|| format!("dense {i}: weights that do not fit its shape"))?;
            let rows = rows.words();
            let (weights, k_bits) = if i == 0 {
                // After the convolutions: reorder the columns to the bits' layout.
                let [h, w] = size;
                if d_in != channels * h * w {
                    return Err(format!(
                        "dense 0: {d_in} inputs after convolutions of {channels} × {h} × {w}"
                    ));
                }
                planar_columns(rows, d_out, channels, h, w)
            } else {
                (rows.to_vec(), d_in)
            };
            let output = match &layer.output {
                OutputRecord::Threshold { lo, hi } if i != last => DenseOutput::Signs {
                    lo: lo.clone(),
                    hi: hi.clone(),
                },
                norm @ OutputRecord::Norm { .. } if i == last => DenseOutput::Scores(
                    norm.eval_norm()
                        .ok_or_else(|| format!("dense {i}: no batch norm after it"))?,
                ),
                _ => {
                    return Err(format!(
                        "dense {i}: thresholds after a hidden layer and a batch norm after the \
                         last one expected"
                    ));
                }
            };
            dense.push(Dense {
                weights,
                k_bits,
                d_in,
                d_out,
                bias,
                output,
            });
        }
        Ok(HostNet {
            image,
            first: first.ok_or("no first layer")?,
            convs,
            dense,
        })
    }

    /// Class scores `[n, classes]` of `n` images (NCHW values in `[−1, 1]`), or `None` where
    /// the input is not `n` images of the network's size or holds a value that is not finite
    /// (the tensor path then gives the answer, NaN included).
    pub(super) fn forward(&self, images: &[f32], n: usize) -> Option<Vec<f32>> {
        let [c, h, w] = self.image;
        if images.len() != n * c * h * w {
            return None;
        }
        let codes = pixel_codes_if_finite(images)?;
        let mut bits: Vec<u64>;
        match &self.first {
            FirstLayer::Conv(first) => {
                let mut acts = first.forward(&codes, n);
                for layer in &self.convs {
                    acts = layer.forward(&acts);
                }
                bits = acts.words().to_vec();
            }
            FirstLayer::Dense(first) => match first.forward(&codes, n) {
                Ok(scores) => return Some(scores),
                Err(signs) => bits = signs,
            },
        }
        for layer in &self.dense {
            match layer.forward(&bits, n) {
                Ok(scores) => return Some(scores),
                Err(signs) => bits = signs,
            }
        }
        None
    }
}

/// The 8-bit codes of image values ([`bit_plane::pixel_code`]), or `None` where one is not
/// finite (the tensor path then gives the answer, NaN included).
pub(crate) fn pixel_codes_if_finite(values: &[f32]) -> Option<Vec<u8>> {
    // One pass that vectorizes: the codes, and whether every value was finite (ORed into an
    // integer, which ran about 8 % faster than a `bool` flag in a throwaway timing).
    let mut codes = vec![0u8; values.len()];
    let mut infinite_or_nan = 0u32;
    for (code, &x) in codes.iter_mut().zip(values) {
        infinite_or_nan |= u32::from(!x.is_finite());
        *code = bit_plane::pixel_code_byte(x);
    }
    (infinite_or_nan == 0).then_some(codes)
}

/// The kernel's sign thresholds for a layer's ranges, if each is a half-line (or empty, or all).
fn sign_thresholds(output: &OutputRecord) -> Option<SignThresholds> {
    let OutputRecord::Threshold { lo, hi } = output else {
        return None;
    };
    thresholds::sign_thresholds(lo, hi)
}

/// Per row of `[rows, k]` signs, their sum.
fn column_sums(weights: &HostPacked, rows: usize, k: usize) -> Vec<f32> {
    let values = weights.unpack();
    (0..rows)
        .map(|r| values[r * k..][..k].iter().sum())
        .collect()
}

/// Rows of `d_out` weight signs over NCHW-flattened inputs `c·h·w` (`c·h·w` bits a row),
/// rearranged to the order of [`PackedActivations`] words of one image: row `y`, channel word
/// `wd`, column `x`, bit `t` for channel `64·wd + t`. Returns the rows and their bits a row.
fn planar_columns(rows: &[u64], d_out: usize, c: usize, h: usize, w: usize) -> (Vec<u64>, usize) {
    let (cw, row_words) = (words_per_row(c), words_per_row(c * h * w));
    let planar_words = h * cw * w;
    let mut out = vec![0u64; d_out * planar_words];
    for (src, dst) in rows
        .chunks_exact(row_words)
        .zip(out.chunks_exact_mut(planar_words))
    {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let j = (ch * h + y) * w + x;
                    let bit = (src[j / 64] >> (j % 64)) & 1;
                    dst[(y * cw + ch / 64) * w + x] |= bit << (ch % 64);
                }
            }
        }
    }
    (out, planar_words * 64)
}

impl BinaryConv {
    fn forward(&self, input: &PackedActivations) -> PackedActivations {
        let [n, c, h, w] = input.shape();
        let geometry = kernel::ConvCall {
            batch: n,
            in_channels: c,
            height: h,
            width: w,
            out_channels: self.weights.weights.out_channels(),
            kernel: self.weights.kernel,
            stride: [1, 1],
            padding: self.padding,
            dilation: [1, 1],
        };
        let signs = kernel::convolve_to_signs(
            ConvInput::Packed(input),
            &self.weights.weights,
            &geometry,
            PaddingMode::Zero,
            &self.thresholds,
        );
        match &self.pool {
            Some(falling) => signs.sign_of_max_pool2x2(falling),
            None => signs,
        }
    }
}

impl FirstDense {
    /// The scores (`Ok`) if this is the last layer, else the sign bits (`Err`).
    fn forward(&self, codes: &[u8], n: usize) -> Result<Vec<f32>, Vec<u64>> {
        let (d_in, d_out) = (self.d_in, self.sums.len());
        let values: Vec<f32> = codes.iter().map(|&c| f32::from(c)).collect();
        let products = match &self.weights {
            FirstDenseWeights::Floats(signs) => {
                let mut products = vec![0f32; n * d_out];
                float_gemm::gemm(
                    MatMut::row_major(&mut products, n, d_out, d_out),
                    false,
                    MatRef::row_major(&values, n, d_in, d_in),
                    MatRef::transposed(signs, d_in, d_out, d_in),
                    true,
                );
                products
            }
            FirstDenseWeights::Bits(signs) => {
                let codes = HostPacked::pack(&values, &[n, d_in], Encoding::Codes(Bits::EIGHT));
                codes.matmul_transposed(signs).0
            }
        };
        // Each output in place: the codes' offset, the bias, batch norm.
        let mut values = products;
        for row in values.chunks_exact_mut(d_out.max(1)) {
            for (v, &sum) in row.iter_mut().zip(&self.sums) {
                *v = (*v - sum * HALF_RANGE) / HALF_RANGE;
            }
            if let Some(bias) = &self.bias {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            self.norm.apply_to_row(row);
        }
        if self.last {
            return Ok(values);
        }
        Err(sign_rows(&values, d_out, |chunk, _| {
            negative_bits(chunk, |v| !binarizes_positive(v))
        }))
    }
}

/// Bit `j` set where `negative(value j)`, for up to 64 values.
fn negative_bits(chunk: &[f32], negative: impl Fn(f32) -> bool) -> u64 {
    let mut flags = [0u8; 64];
    for (flag, &v) in flags.iter_mut().zip(chunk) {
        *flag = u8::from(negative(v));
    }
    pack::flags_to_bits(&flags)
}

impl Dense {
    /// The scores (`Ok`) if this is the last layer, else the sign bits (`Err`).
    fn forward(&self, input: &[u64], n: usize) -> Result<Vec<f32>, Vec<u64>> {
        let mut y = vec![0f32; n * self.d_out];
        xnor::xnor_gemm(input, &self.weights, n, self.d_out, self.k_bits, &mut y);
        let padding = (self.k_bits - self.d_in) as f32;
        let d_out = self.d_out;
        for row in y.chunks_exact_mut(d_out.max(1)) {
            for v in row.iter_mut() {
                *v -= padding;
            }
            if let Some(bias) = &self.bias {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        match &self.output {
            DenseOutput::Scores(norm) => {
                for row in y.chunks_exact_mut(d_out.max(1)) {
                    norm.apply_to_row(row);
                }
                Ok(y)
            }
            DenseOutput::Signs { lo, hi } => Err(range_signs(&y, d_out, lo, hi)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are [`bit_plane::pixel_code`]'s, as bytes, across the range, past both ends
    /// and for the extreme finite floats; a value that is not finite, wherever it stands, gives
    /// `None`.
    #[test]
    fn pixel_codes_are_the_float_codes_of_finite_values() {
        let mut values: Vec<f32> = (-2100..=2100).map(|i| i as f32 / 1000.0).collect();
        values.extend((0..=255).map(|k| (k as f32 + 0.5) / HALF_RANGE - 1.0));
        values.extend([0.0, -0.0, 1e-40, -1e-40, f32::MAX, f32::MIN, f32::EPSILON]);
        let codes = pixel_codes_if_finite(&values).expect("every value is finite");
        for (&x, &code) in values.iter().zip(&codes) {
            let float = bit_plane::pixel_code(x);
            assert_eq!(f32::from(code), float, "code of {x}");
        }
        assert!(codes.contains(&0) && codes.contains(&255));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, values.len() / 2, values.len() - 1] {
                let mut with_bad = values.clone();
                with_bad[at] = bad;
                assert_eq!(pixel_codes_if_finite(&with_bad), None, "{bad} at {at}");
            }
        }
    }
}
