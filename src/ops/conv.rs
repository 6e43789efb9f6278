//! Binary 2-D convolution on packed bits.
//!
//! A binary convolution is `sign(x) ⊛ sign(w)`. Out-of-image taps take the padding value, which
//! ±1 bits cannot hold when it is 0, so there are two modes ([`PaddingMode`]):
//! - [`PaddingMode::Zero`], the paper's: padded taps contribute nothing, as in the float
//!   convolution `conv2d(sign(x), sign(w))` with zero padding. The packed kernel packs padded taps
//!   as +1 and subtracts, per output position, the sum of the weight signs of its padded taps
//!   (which depends only on the position, so it is computed once per call, not per image);
//! - [`PaddingMode::PlusOne`] (Larq's "one padding"): padded taps are +1, no correction.
//!
//! Both equal their float reference exactly (for `C_in·k_h·k_w < 2^24`).
//!
//! # Packed weight layout
//! [`PackedConvWeights`] holds the signs of `w` `[C_out, C_in, k_h, k_w]` as packed rows of shape
//! `[C_out, k_h·k_w·C']`, tap-major (tap `i·k_w + j`) and channel-minor, where each tap's
//! channels are padded from `C_in` to `C' = 64·ceil(C_in/64)` with +1 (bit 0). Byte for byte this
//! is a [`Packed`] tensor of shape `[C_out, k_h, k_w, C_in]`, the same on every backend.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use burn_qnn::ops::{ConvGeometry, PackedConvWeights, PaddingMode, binary_conv2d};
//!
//! let device = Default::default();
//! let x = Tensor::<NdArray, 4>::random([2, 3, 9, 9], Distribution::Default, &device) - 0.5;
//! let w = Tensor::<NdArray, 4>::random([8, 3, 3, 3], Distribution::Default, &device) - 0.5;
//! let geometry = ConvGeometry::new([3, 8], [3, 3]).with_padding([1, 1]);
//!
//! let y = binary_conv2d(x.clone(), w.clone(), &geometry);
//! assert_eq!(y.dims(), [2, 8, 9, 9]);
//!
//! // Weights packed once give the same result:
//! let packed = PackedConvWeights::new(w, geometry);
//! let z = packed.forward(x);
//! assert_eq!(y.into_data(), z.into_data());
//! # let _ = PaddingMode::Zero;
//! ```

use burn::tensor::{
    Tensor,
    module::conv2d,
    ops::{ConvOptions, PadMode},
    s,
};
use serde::{Deserialize, Serialize};

use super::{Encoding, HostPacked, Packed, PackedError};
use crate::{QnnBackend, kernels::WORD_BITS, quant};

pub use crate::kernels::conv::PaddingMode;

/// The shape of a 2-D convolution: channels, kernel, stride, symmetric padding, dilation and
/// the padding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvGeometry {
    /// `[C_in, C_out]`.
    pub channels: [usize; 2],
    /// `[k_h, k_w]`.
    pub kernel: [usize; 2],
    /// `[s_h, s_w]`, default `[1, 1]`.
    pub stride: [usize; 2],
    /// Padding on both sides, `[p_h, p_w]`, default `[0, 0]`.
    pub padding: [usize; 2],
    /// `[d_h, d_w]`, default `[1, 1]`.
    pub dilation: [usize; 2],
    /// What padded taps hold, default [`PaddingMode::Zero`].
    pub padding_mode: PaddingMode,
}

impl ConvGeometry {
    /// A stride-1, unpadded, undilated convolution from `channels = [C_in, C_out]` with `kernel`.
    ///
    /// # Panics
    /// If a channel count or kernel size is 0.
    pub fn new(channels: [usize; 2], kernel: [usize; 2]) -> Self {
        assert!(
            channels.iter().chain(&kernel).all(|&v| v > 0),
            "ConvGeometry: channels {channels:?} and kernel {kernel:?} must be positive"
        );
        Self {
            channels,
            kernel,
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            padding_mode: PaddingMode::Zero,
        }
    }

    /// With `stride`.
    ///
    /// # Panics
    /// If a stride is 0.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        assert!(
            stride.iter().all(|&s| s > 0),
            "ConvGeometry: stride {stride:?} must be positive"
        );
        self.stride = stride;
        self
    }

    /// With symmetric `padding`.
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }

    /// With `dilation`.
    ///
    /// # Panics
    /// If a dilation is 0.
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        assert!(
            dilation.iter().all(|&d| d > 0),
            "ConvGeometry: dilation {dilation:?} must be positive"
        );
        self.dilation = dilation;
        self
    }

    /// With `padding_mode`.
    pub fn with_padding_mode(mut self, padding_mode: PaddingMode) -> Self {
        self.padding_mode = padding_mode;
        self
    }

    /// The kernels' description of one call of this convolution on an input of shape
    /// `[N, C_in, H, W]`.
    ///
    /// # Panics
    /// If the input does not have `C_in` channels.
    pub fn call(&self, input_shape: [usize; 4]) -> crate::kernels::conv::ConvCall {
        let [n, c, h, w] = input_shape;
        let [c_in, c_out] = self.channels;
        assert_eq!(
            c, c_in,
            "binary conv2d: input has {c} channels, the convolution expects {c_in}"
        );
        crate::kernels::conv::ConvCall {
            batch: n,
            in_channels: c,
            height: h,
            width: w,
            out_channels: c_out,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        }
    }

    /// Burn's convolution options of this geometry (groups 1).
    pub fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, self.dilation, 1)
    }

    /// The output size `[h_out, w_out]` for an input of `[height, width]`.
    ///
    /// # Panics
    /// If the dilated kernel does not fit in the padded input.
    pub fn output_size(&self, input: [usize; 2]) -> [usize; 2] {
        std::array::from_fn(|axis| {
            let padded = input[axis] + 2 * self.padding[axis];
            let reach = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            assert!(
                reach <= padded,
                "binary conv2d: the kernel spans {reach} pixels on axis {axis} but the padded \
                 input has {padded}"
            );
            (padded - reach) / self.stride[axis] + 1
        })
    }

    /// Kernel taps, `k_h·k_w`.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Input channels rounded up to whole 64-bit words.
    pub fn padded_channels(&self) -> usize {
        self.channels[0].div_ceil(WORD_BITS) * WORD_BITS
    }

    /// The number of binary multiply-accumulates for an input of `[batch, C_in, h, w]`.
    pub fn macs(&self, batch: usize, input: [usize; 2]) -> u64 {
        let [h, w] = self.output_size(input);
        (batch * h * w * self.channels[1] * self.channels[0] * self.taps()) as u64
    }
}

/// The signs of convolution weights packed once, for inference: see the module docs for the
/// layout.
#[derive(Debug, Clone)]
pub struct PackedConvWeights<B: QnnBackend> {
    packed: Packed<B>,
    geometry: ConvGeometry,
}

impl<B: QnnBackend> PackedConvWeights<B> {
    /// Packs the signs of `weight` `[C_out, C_in, k_h, k_w]`.
    ///
    /// # Panics
    /// If the weight's shape does not match `geometry`.
    pub fn new(weight: Tensor<B, 4>, geometry: ConvGeometry) -> Self {
        Self {
            packed: Packed::from_primitive(B::qnn_pack_conv_weights(weight, &geometry)),
            geometry,
        }
    }

    /// Reads bytes from [`PackedConvWeights::to_bytes`] (of any backend) onto `device`.
    pub fn from_bytes(
        bytes: &[u8],
        geometry: ConvGeometry,
        device: &burn::tensor::Device<B>,
    ) -> Result<Self, PackedError> {
        let [c_in, c_out] = geometry.channels;
        let [kh, kw] = geometry.kernel;
        // Validates the padding bits of every tap's channel row...
        HostPacked::from_bytes(bytes, &[c_out, kh, kw, c_in], Encoding::Signs)?;
        // ...then reads the same bytes as the rows `[C_out, k_h·k_w·C']`.
        let rows = HostPacked::from_bytes(
            bytes,
            &[c_out, geometry.taps() * geometry.padded_channels()],
            Encoding::Signs,
        )?;
        Ok(Self {
            packed: Packed::from_primitive(B::qnn_packed_from_host(rows, device)),
            geometry,
        })
    }

    /// The packed bytes (the layout of a [`Packed`] tensor `[C_out, k_h, k_w, C_in]`).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.packed.to_bytes()
    }

    /// The geometry.
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geometry
    }

    /// The packed rows `[C_out, k_h·k_w·C']`.
    pub fn packed(&self) -> &Packed<B> {
        &self.packed
    }

    /// `sign(x) ⊛ sign(w)` for `x` `[N, C_in, H, W]`: `[N, C_out, H_out, W_out]`.
    ///
    /// # Panics
    /// If `x` does not have `C_in` channels or is too small for the kernel.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        B::qnn_binary_conv2d_packed(x, self.packed.primitive(), &self.geometry)
    }
}

/// `sign(x) ⊛ sign(w)` on packed bits: `x` `[N, C_in, H, W]`, `w` `[C_out, C_in, k_h, k_w]`,
/// output `[N, C_out, H_out, W_out]`, exactly the float convolution of the ±1 tensors with the
/// geometry's padding mode (see [`binary_conv2d_reference`]).
///
/// Under `Autodiff`, the gradients are the straight-through ones of [`quant::sign`] applied to
/// both operands, equal to those of [`binary_conv2d_reference`]; the node keeps only the packed
/// bits of `x` and `w` (their signs and their pass bands, 2 bits a value).
///
/// # Panics
/// If the shapes do not match the geometry.
pub fn binary_conv2d<B: QnnBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    check_shapes(&x.dims(), &weight.dims(), geometry);
    B::qnn_binary_conv2d(x, weight, geometry)
}

/// [`binary_conv2d`] whose backward quantizes the output gradient once to `grad_bits` bits with
/// `rounding` first (the paper's bit-wise gradients; 6 bits in its experiments): the gradients
/// equal those of `quant::quantize_gradient(binary_conv2d_reference(x, w), grad_bits)` (for
/// [`crate::quant::GradRounding::Stochastic`], of `quant::quantize_gradient_stochastic` under
/// the same seed) up to the order of f32 sums. On the host backends they are computed exactly
/// in integers from one quantization for both gradients (the codes of the quantized gradient
/// times ±1, on AMX, AVX-512 VNNI or AVX2 where the CPU has them; see
/// [`crate::kernels::quantized_backward`]), elsewhere through the float gradient kernels. The
/// forward is [`binary_conv2d`]'s.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::ops::{self, ConvGeometry};
/// use burn_qnn::quant::{self, Bits, GradRounding::Nearest};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let geometry = ConvGeometry::new([3, 4], [3, 3]).with_padding([1, 1]);
/// let x = Tensor::<B, 4>::random([2, 3, 5, 5], Distribution::Uniform(-1.5, 1.5), &device);
/// let w = Tensor::<B, 4>::random([4, 3, 3, 3], Distribution::Uniform(-1.0, 1.0), &device);
/// let bits = Bits::new(6)?;
///
/// let w1 = w.clone().require_grad();
/// let grads = ops::binary_conv2d_quantized_grad(x.clone(), w1.clone(), &geometry, bits, Nearest)
///     .powf_scalar(2.0)
///     .sum()
///     .backward();
/// let w2 = w.require_grad();
/// let reference = ops::binary_conv2d_reference(x, w2.clone(), &geometry);
/// let grads_ref = quant::quantize_gradient(reference, bits).powf_scalar(2.0).sum().backward();
/// let (ours, theirs) = (w1.grad(&grads).unwrap(), w2.grad(&grads_ref).unwrap());
/// assert!((ours - theirs).abs().max().into_scalar() < 1e-3);
/// # Ok::<(), burn_qnn::quant::QuantError>(())
/// ```
///
/// # Panics
/// If the shapes do not match the geometry.
pub fn binary_conv2d_quantized_grad<B: QnnBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    geometry: &ConvGeometry,
    grad_bits: quant::Bits,
    rounding: quant::GradRounding,
) -> Tensor<B, 4> {
    check_shapes(&x.dims(), &weight.dims(), geometry);
    B::qnn_binary_conv2d_quantized_grad(x, weight, geometry, grad_bits, rounding)
}

/// The float simulation of [`binary_conv2d`]: `conv2d(sign(x), sign(w))` with zero padding, or
/// with the ±1 tensor padded by +1 for [`PaddingMode::PlusOne`].
pub fn binary_conv2d_reference<B: QnnBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    check_shapes(&x.dims(), &weight.dims(), geometry);
    let (input, options) = geometry.conv_input(quant::sign(x));
    conv2d(input, quant::sign(weight), None, options)
}

impl ConvGeometry {
    /// These options without padding (for inputs padded already).
    pub(crate) fn unpadded_options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, [0, 0], self.dilation, 1)
    }

    /// The tensor and options a float `conv2d` takes to convolve `x` in this padding mode:
    /// `x` itself with zero padding, or `x` padded with +1 and no further padding.
    pub(crate) fn conv_input<B: QnnBackend>(
        &self,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, ConvOptions<2>) {
        match self.padding_mode {
            PaddingMode::Zero => (x, self.options()),
            PaddingMode::PlusOne => {
                let [ph, pw] = self.padding;
                let padded = x.pad([(0, 0), (0, 0), (ph, ph), (pw, pw)], PadMode::Constant(1.0));
                (padded, self.unpadded_options())
            }
        }
    }
}

/// Panics unless `x` and `w` fit the geometry.
pub(crate) fn check_shapes(x: &[usize; 4], w: &[usize; 4], geometry: &ConvGeometry) {
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    assert_eq!(
        *w,
        [c_out, c_in, kh, kw],
        "binary conv2d: weight shape {w:?} does not match [C_out, C_in, k_h, k_w] = {:?}",
        [c_out, c_in, kh, kw]
    );
    assert_eq!(
        x[1], c_in,
        "binary conv2d: input {x:?} has {} channels, the convolution expects {c_in}",
        x[1]
    );
    geometry.output_size([x[2], x[3]]);
}

/// The dimensions `[C_out, C_in, k_h, k_w]` of convolution weights of shape `dims`, checked
/// against `geometry`.
///
/// # Panics
/// If they do not match the geometry's channels and kernel.
pub(crate) fn check_weight_shape(dims: [usize; 4], geometry: &ConvGeometry) -> [usize; 4] {
    let [c_out, c_in, kh, kw] = dims;
    assert_eq!(
        [c_in, c_out, kh, kw],
        [
            geometry.channels[0],
            geometry.channels[1],
            geometry.kernel[0],
            geometry.kernel[1]
        ],
        "binary conv2d: weight shape {dims:?} does not match the geometry",
    );
    dims
}

/// Packs the signs of `weight` `[C_out, C_in, k_h, k_w]` into rows `[C_out, k_h·k_w·C']` (the
/// portable body of [`QnnBackend::qnn_pack_conv_weights`]).
pub(crate) fn pack_weights_portable<B: QnnBackend>(
    weight: Tensor<B, 4>,
    geometry: &ConvGeometry,
) -> B::Packed {
    let [c_out, c_in, kh, kw] = check_weight_shape(weight.dims(), geometry);
    let extra = geometry.padded_channels() - c_in;
    let rows = weight
        .permute([0, 2, 3, 1])
        .pad([(0, 0), (0, 0), (0, 0), (0, extra)], PadMode::Constant(0.0))
        .reshape([c_out, kh * kw * geometry.padded_channels()]);
    B::qnn_pack(rows, Encoding::Signs)
}

/// The binary convolution by im2col on Burn tensor ops, packing and the packed product (the
/// portable body of [`QnnBackend::qnn_binary_conv2d_packed`]).
pub(crate) fn conv_im2col<B: QnnBackend>(
    x: Tensor<B, 4>,
    weight: &B::Packed,
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    let [_, c_in, h, w] = x.dims();
    let out = im2col_product(x, weight, geometry, Encoding::Signs);
    // Each padding channel of each tap added (+1)·(+1).
    let channel_padding = (geometry.taps() * (geometry.padded_channels() - c_in)) as f32;
    let out = out - channel_padding;
    match geometry.padding_mode {
        PaddingMode::Zero if geometry.padding != [0, 0] => {
            let device = out.device();
            out - zero_padding_correction::<B>(weight, geometry, [h, w], &device)
        }
        _ => out,
    }
}

/// `Σ_taps Σ_c v(x)·sign(w)` over the padded input, where `v` is the sign of `x` (for
/// [`Encoding::Signs`]) or its integer code (for [`Encoding::Codes`]), and every padded value
/// (in space and in channels) is 0 before encoding: `[N, C_out, H_out, W_out]`.
pub(crate) fn im2col_product<B: QnnBackend>(
    x: Tensor<B, 4>,
    weight: &B::Packed,
    geometry: &ConvGeometry,
    encoding: Encoding,
) -> Tensor<B, 4> {
    let [n, c_in, h, w] = x.dims();
    assert_eq!(
        c_in, geometry.channels[0],
        "binary conv2d: input has {c_in} channels, the convolution expects {}",
        geometry.channels[0]
    );
    let [oh, ow] = geometry.output_size([h, w]);
    let [ph, pw] = geometry.padding;
    let [sh, sw] = geometry.stride;
    let [dh, dw] = geometry.dilation;
    let [kh, kw] = geometry.kernel;
    let c_pad = geometry.padded_channels();

    let padded = x.permute([0, 2, 3, 1]).pad(
        [(0, 0), (ph, ph), (pw, pw), (0, c_pad - c_in)],
        PadMode::Constant(0.0),
    );
    let taps: Vec<Tensor<B, 4>> = (0..kh)
        .flat_map(|i| (0..kw).map(move |j| (i, j)))
        .map(|(i, j)| {
            let (y0, x0) = ((i * dh) as isize, (j * dw) as isize);
            let (y1, x1) = (
                y0 + ((oh - 1) * sh + 1) as isize,
                x0 + ((ow - 1) * sw + 1) as isize,
            );
            padded
                .clone()
                .slice(s![.., y0..y1;sh as isize, x0..x1;sw as isize, ..])
        })
        .collect();
    let columns = Tensor::stack::<5>(taps, 3).reshape([n * oh * ow, kh * kw * c_pad]);
    let packed_columns = B::qnn_pack(columns, encoding);
    let products: Tensor<B, 2> = B::qnn_packed_matmul(&packed_columns, weight);
    products
        .reshape([n, oh, ow, geometry.channels[1]])
        .permute([0, 3, 1, 2])
}

/// `[1, C_out, H_out, W_out]`: per output position, the sum of the weight signs over its
/// out-of-image taps, which the packed product counted as +1 inputs.
pub(crate) fn zero_padding_correction<B: QnnBackend>(
    weight: &B::Packed,
    geometry: &ConvGeometry,
    input: [usize; 2],
    device: &burn::tensor::Device<B>,
) -> Tensor<B, 4> {
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    let [ph, pw] = geometry.padding;
    let c_pad = geometry.padded_channels();
    // Σ_c sign(w)[o, c, tap], without the +1 padding channels.
    let tap_sums = B::qnn_unpack::<2>(weight)
        .reshape([c_out, kh * kw, c_pad])
        .sum_dim(2)
        .sub_scalar((c_pad - c_in) as f32)
        .reshape([c_out, 1, kh, kw]);
    let inside = Tensor::<B, 4>::zeros([1, 1, input[0], input[1]], device);
    let outside = inside.pad([(0, 0), (0, 0), (ph, ph), (pw, pw)], PadMode::Constant(1.0));
    conv2d(outside, tap_sums, None, geometry.unpadded_options())
}
