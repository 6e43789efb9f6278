//! The backend extension: every op of the crate that needs backend-specific code.
//!
//! [`QnnBackend`] is implemented for `NdArray`, for every CubeCL backend (`CubeBackend<R, ..>`:
//! wgpu, CUDA, ROCm), for `Fusion<B>` and for `Autodiff<B, C>`, so code written once against
//! `B: QnnBackend` runs on any of them by changing one type parameter:
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::tensor::Tensor;
//! use burn_qnn::{QnnBackend, quant};
//!
//! fn binarize<B: QnnBackend>(device: &B::Device) -> Vec<f32> {
//!     let x = Tensor::<B, 1>::from_floats([-0.5, 0.0, 2.0], device);
//!     quant::sign(x).into_data().to_vec().unwrap()
//! }
//!
//! assert_eq!(binarize::<NdArray>(&Default::default()), [-1.0, 1.0, 1.0]);
//! assert_eq!(binarize::<Autodiff<NdArray>>(&Default::default()), [-1.0, 1.0, 1.0]);
//! ```

mod autodiff;
pub(crate) mod batch_norm;
mod binary_backward;
mod bit_plane;
mod channel_affine;
mod code_matmul;
#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "cubecl")]
mod fusion;
#[cfg(any(feature = "ndarray", feature = "flex"))]
mod host;
#[cfg(feature = "ndarray")]
mod ndarray;
mod pool;

pub use batch_norm::{BatchNormGrads, BatchNormOutput};
pub use binary_backward::{GradQuantization, OperandBits};
#[cfg(feature = "cubecl")]
#[cfg_attr(docsrs, doc(cfg(feature = "cubecl")))]
pub use cube::CubePacked;
#[cfg(feature = "cubecl")]
#[cfg_attr(docsrs, doc(cfg(feature = "cubecl")))]
pub use fusion::FusionPacked;

#[cfg(feature = "cubecl")]
#[cfg_attr(docsrs, doc(cfg(feature = "cubecl")))]
/// A packed tensor held by a device backend as a tensor of 32-bit words: each row and bit plane
/// takes `2·ceil(k/64)` words, the bytes of the CPU layout of [`crate::kernels`].
#[derive(Clone, Debug)]
pub struct PackedWords<T> {
    /// The words, as a one-dimensional integer tensor of dtype `u32`.
    pub(crate) words: T,
    /// How many words are in use (a tensor of no words still holds one).
    pub(crate) word_count: usize,
    /// The logical shape `[.., rows, k]`.
    pub(crate) shape: Vec<usize>,
    /// What the bits stand for.
    pub(crate) encoding: Encoding,
}

#[cfg(feature = "cubecl")]
impl<T: Clone> PackedWords<T> {
    /// Uploads packed bits from host memory to `device` as a tensor of `u32` words.
    pub(crate) fn upload<B>(host: &HostPacked, device: &Device<B>) -> Self
    where
        B: Backend<IntTensorPrimitive = T>,
    {
        use burn::tensor::TensorData;

        let mut words: Vec<u32> = host
            .to_bytes()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("chunks of 4 bytes")))
            .collect();
        let word_count = words.len();
        if words.is_empty() {
            words.push(0); // devices hold no empty buffers
        }
        let len = words.len();
        Self {
            words: B::int_from_data(TensorData::new(words, [len]), device),
            word_count,
            shape: host.shape().to_vec(),
            encoding: host.encoding(),
        }
    }

    /// The little-endian bytes of the words in use.
    pub(crate) fn to_bytes<B>(&self) -> Vec<u8>
    where
        B: Backend<IntTensorPrimitive = T>,
    {
        let words = Tensor::<B, 1, burn::tensor::Int>::from_primitive(self.words.clone());
        let mut bytes = words.into_data().as_bytes().to_vec();
        bytes.truncate(self.word_count * 4);
        bytes
    }
}

use burn::tensor::{
    Device, Distribution, Int, Tensor,
    backend::{AutodiffBackend, Backend},
};

use crate::{
    kernels::adam::AdamStep,
    ops::{self, ConvGeometry, Encoding, HostPacked},
    quant::{self, Bits, CodeGrid, GradRounding, Quantizer, quantizer},
};

/// A Burn backend that runs the crate's quantizers and packed kernels.
///
/// The quantizer ops have portable default bodies built from Burn tensor ops (so they fuse on
/// `Fusion<B>`); `Autodiff<B>` overrides them to attach the straight-through gradients. Users
/// call the functions of [`crate::quant`] rather than these methods.
pub trait QnnBackend: Backend {
    /// `quantizer.forward(x)`, with gradient `1` inside [`Quantizer::pass_band`] and `0` outside.
    fn qnn_quantize<const D: usize>(x: Tensor<Self, D>, quantizer: Quantizer) -> Tensor<Self, D> {
        quantizer.forward(x)
    }

    /// Where the straight-through gradient of `quantizer` is cut: `x` outside
    /// [`Quantizer::pass_band`], or NaN ([`Quantizer::blocked`]), packed as one row of bits
    /// over `x`'s values in row-major order (shape `[1, n]`, [`Encoding::Signs`]: bit 1, read
    /// back as −1, where the gradient is cut). `Autodiff`'s quantizer node keeps it for its
    /// backward, 1 bit a value; the host backends compute it in one parallel pass.
    fn qnn_quantize_blocked<const D: usize>(
        x: Tensor<Self, D>,
        quantizer: Quantizer,
    ) -> Self::Packed {
        let n = x.shape().num_elements();
        // −1 (bit 1) where cut, −0.0 (bit 0) elsewhere.
        let blocked = quantizer.blocked(x).float().neg().reshape([1, n]);
        Self::qnn_pack(blocked, Encoding::Signs)
    }

    /// `grad` with 0 wherever `blocked` (from [`QnnBackend::qnn_quantize_blocked`] on a tensor
    /// of `grad`'s shape) has bit 1: the straight-through estimator's backward.
    fn qnn_cut_gradient<const D: usize>(
        grad: Tensor<Self, D>,
        blocked: &Self::Packed,
    ) -> Tensor<Self, D> {
        binary_backward::pass(grad, blocked)
    }

    /// The stochastic sign of `x` drawn with `noise` (uniform on `[0, 1)`), with the gradient of
    /// [`Quantizer::Sign`].
    fn qnn_stochastic_sign<const D: usize>(
        x: Tensor<Self, D>,
        noise: Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        quantizer::stochastic_sign_value(x, noise)
    }

    /// `value`, with the gradient `derivative() ⊙ ∂L/∂y` with respect to `x` (the node of
    /// [`crate::quant::straight_through`]). `derivative` is called only where a gradient is
    /// tracked: the default, for backends without autodiff, returns `value` and never calls it.
    fn qnn_straight_through<const D: usize>(
        x: Tensor<Self, D>,
        value: Tensor<Self, D>,
        derivative: impl FnOnce() -> Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        let _ = (x, derivative);
        value
    }

    /// The identity, whose gradient is quantized to `bits` bits in the backward pass.
    fn qnn_quantize_gradient<const D: usize>(x: Tensor<Self, D>, _bits: Bits) -> Tensor<Self, D> {
        x
    }

    /// The identity, whose gradient is quantized to `bits` bits with stochastic rounding in the
    /// backward pass ([`crate::quant::quantize_gradient_stochastic`]).
    fn qnn_quantize_gradient_stochastic<const D: usize>(
        x: Tensor<Self, D>,
        _bits: Bits,
    ) -> Tensor<Self, D> {
        x
    }

    /// `grad` quantized as `quantization` says (the values of [`crate::quant::quantize_gradient`]'s
    /// backward, or of [`crate::quant::quantize_gradient_stochastic`]'s with its noise; the
    /// whole tensor shares one scale): what the gradient quantizers' backward computes. The
    /// default is Burn's tensor operations; `NdArray` and `Flex` quantize in one parallel pass
    /// of [`crate::kernels::quantized_backward::QuantizedGrad`], the same values for finite
    /// gradients (for a gradient holding a value that is not finite, every value is NaN there).
    fn qnn_quantized_gradient<const D: usize>(
        grad: Tensor<Self, D>,
        quantization: GradQuantization<Self>,
    ) -> Tensor<Self, D> {
        quantization.apply_portable(grad)
    }

    /// `count` values uniform in `[0, 1)` from the backend's seeded generator (`Backend::seed`):
    /// the noise of stochastic rounding ([`crate::quant::quantize_gradient_stochastic`]). The
    /// default is Burn's `Tensor::random`; the host backends draw one seed from it and fill the
    /// values in parallel from a counter-based generator
    /// ([`crate::kernels::noise::uniform_noise`]).
    fn qnn_uniform_noise(count: usize, device: &Device<Self>) -> Tensor<Self, 1> {
        Tensor::random([count], Distribution::Uniform(0.0, 1.0), device)
    }

    /// `a·b` of a `[m, k]` and a `[k, n]` matrix whose values lie on `a_grid` and `b_grid`
    /// (quantized values, as the quant layers multiply them). The default is Burn's `matmul`;
    /// the host backends multiply the integer codes on the bit-serial AND-popcount kernel
    /// (exact, where every sum stays below 2^24: `k·(2^bits_a − 1)·(2^bits_b − 1) < 2^24`,
    /// Burn's `matmul` beyond) and apply the grids' scales and offsets once in f64, which
    /// equals `matmul` up to f32 rounding. `Autodiff` tracks it with `matmul`'s gradients.
    ///
    /// # Panics
    /// If the inner dimensions differ, as `matmul` does.
    fn qnn_code_matmul(
        a: Tensor<Self, 2>,
        a_grid: CodeGrid,
        b: Tensor<Self, 2>,
        b_grid: CodeGrid,
    ) -> Tensor<Self, 2> {
        let _ = (a_grid, b_grid);
        a.matmul(b)
    }

    /// [`QnnBackend::qnn_code_matmul`] with `b` `[k, n]` given as the packed codes of its
    /// columns, `b_t` `[n, k]` on `b_grid` ([`QnnBackend::qnn_pack_codes`] of `bᵀ`): weights
    /// packed once. Where the backend multiplies codes directly (the host backends, where the
    /// sums are exact), the result is `qnn_code_matmul`'s on the decoded values, bit for bit;
    /// elsewhere `Err(a)` gives the input back (the default), for the caller's own product.
    fn qnn_code_matmul_prepacked(
        a: Tensor<Self, 2>,
        a_grid: CodeGrid,
        b_t: &Self::Packed,
        b_grid: CodeGrid,
    ) -> Result<Tensor<Self, 2>, Tensor<Self, 2>> {
        let _ = (a_grid, b_t, b_grid);
        Err(a)
    }

    /// The convolution `x ⊛ weight` (zero padding, one group) of values on `x_grid` and
    /// `weight_grid`, as [`QnnBackend::qnn_code_matmul`] for convolutions. The default is Burn's
    /// `conv2d`; the host backends multiply the codes of the input's im2col matrix and of the
    /// weights on the bit-serial kernel where that is exact (`C_in·k_h·k_w` within
    /// [`QnnBackend::qnn_code_matmul`]'s bound, and, with padding, `x_grid.offset == 0`, so that
    /// the padded 0 is a code), and fall back to `conv2d` elsewhere. `Autodiff` tracks it with
    /// `conv2d`'s gradients.
    fn qnn_code_conv2d(
        x: Tensor<Self, 4>,
        x_grid: CodeGrid,
        weight: Tensor<Self, 4>,
        weight_grid: CodeGrid,
        options: burn::tensor::ops::ConvOptions<2>,
    ) -> Tensor<Self, 4> {
        let _ = (x_grid, weight_grid);
        burn::tensor::module::conv2d(x, weight, None, options)
    }

    /// [`QnnBackend::qnn_code_conv2d`] with the weights `[C_out, C_in, k_h, k_w]`
    /// (`weight_shape`) given as their packed codes on `weight_grid`, one row per output
    /// channel (`[C_out, C_in·k_h·k_w]`, [`QnnBackend::qnn_pack_codes`] of the weights reshaped
    /// to rows): weights packed once. Where the backend convolves codes directly (the host
    /// backends, where `qnn_code_conv2d` would), the result is `qnn_code_conv2d`'s on the
    /// decoded weights, bit for bit; elsewhere `Err(x)` gives the input back (the default).
    fn qnn_code_conv2d_prepacked(
        x: Tensor<Self, 4>,
        x_grid: CodeGrid,
        weight_rows: &Self::Packed,
        weight_shape: [usize; 4],
        weight_grid: CodeGrid,
        options: &burn::tensor::ops::ConvOptions<2>,
    ) -> Result<Tensor<Self, 4>, Tensor<Self, 4>> {
        let _ = (x_grid, weight_rows, weight_shape, weight_grid, options);
        Err(x)
    }

    /// [`QnnBackend::qnn_code_matmul`], with the packed codes of its operands for the
    /// backward pass: `(a·b, codes of a's rows [m, k], codes of b's columns [n, k])`, each
    /// `bits` bits a value ([`QnnBackend::qnn_pack_codes`]). The host backends return the codes
    /// their kernel packed anyway; the default packs them after Burn's `matmul`.
    ///
    /// # Panics
    /// If the inner dimensions differ, as `matmul` does.
    fn qnn_code_matmul_saving(
        a: Tensor<Self, 2>,
        a_grid: CodeGrid,
        b: Tensor<Self, 2>,
        b_grid: CodeGrid,
    ) -> (Tensor<Self, 2>, Self::Packed, Self::Packed) {
        let a_codes = Self::qnn_pack_codes(a.clone(), a_grid);
        let b_codes = Self::qnn_pack_codes(b.clone().transpose(), b_grid);
        (
            Self::qnn_code_matmul(a, a_grid, b, b_grid),
            a_codes,
            b_codes,
        )
    }

    /// `grad · b` for `grad` `[m, n]` and `b` `[n, k]` given as its rows' packed codes on `grid`
    /// ([`QnnBackend::qnn_pack_codes`]): the left gradient `g·bᵀ` of a product of codes, from
    /// the codes of `bᵀ`. The default decodes the codes and calls `matmul`; the host backends
    /// decode a cache-sized block of rows at a time into the f32 product, as the binary layers'
    /// backward expands its sign bits.
    fn qnn_code_grad_times_rows(
        grad: Tensor<Self, 2>,
        b_rows: &Self::Packed,
        grid: CodeGrid,
    ) -> Tensor<Self, 2> {
        grad.matmul(Self::qnn_unpack_codes(b_rows, grid))
    }

    /// `aᵀ · grad` for `a` `[m, k]` given as its rows' packed codes on `grid` and `grad`
    /// `[m, n]`: the right gradient of a product of codes. As
    /// [`QnnBackend::qnn_code_grad_times_rows`].
    fn qnn_code_rows_transposed_times_grad(
        a_rows: &Self::Packed,
        grid: CodeGrid,
        grad: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        Self::qnn_unpack_codes(a_rows, grid)
            .transpose()
            .matmul(grad)
    }

    /// The codes on `grid` of the values `x` `[rows, k]` (the nearest code, as
    /// [`CodeGrid::code_of`]), packed along `k` as [`Encoding::Codes`]: `bits` bits a value.
    fn qnn_pack_codes(x: Tensor<Self, 2>, grid: CodeGrid) -> Self::Packed {
        let codes = x
            .sub_scalar(grid.offset)
            .div_scalar(grid.scale)
            .add_scalar(0.5)
            .clamp_min(0.0);
        Self::qnn_pack(codes, Encoding::Codes(grid.bits))
    }

    /// The values `scale·c + offset` of codes packed by [`QnnBackend::qnn_pack_codes`],
    /// `[rows, k]`.
    fn qnn_unpack_codes(packed: &Self::Packed, grid: CodeGrid) -> Tensor<Self, 2> {
        Self::qnn_unpack::<2>(packed)
            .mul_scalar(grid.scale)
            .add_scalar(grid.offset)
    }

    /// The backend's storage of a tensor packed along its last dimension.
    type Packed: Clone + Send + Sync + core::fmt::Debug + 'static;

    /// Packs `x` `[.., rows, k]` along its last dimension.
    fn qnn_pack<const D: usize>(x: Tensor<Self, D>, encoding: Encoding) -> Self::Packed;

    /// The logical shape `[.., rows, k]` of a packed tensor.
    fn qnn_packed_shape(packed: &Self::Packed) -> Vec<usize>;

    /// The encoding of a packed tensor.
    fn qnn_packed_encoding(packed: &Self::Packed) -> Encoding;

    /// The packed values as floats (±1, or the integer codes).
    fn qnn_unpack<const D: usize>(packed: &Self::Packed) -> Tensor<Self, D>;

    /// The packed bytes in the layout shared by every backend.
    fn qnn_packed_to_bytes(packed: &Self::Packed) -> Vec<u8>;

    /// Moves packed bits from host memory onto `device`.
    fn qnn_packed_from_host(host: HostPacked, device: &Device<Self>) -> Self::Packed;

    /// `a` `[.., m, k]` times the transpose of `b_t` `[.., n, k]`, exactly.
    fn qnn_packed_matmul<const D: usize>(a: &Self::Packed, b_t: &Self::Packed) -> Tensor<Self, D>;

    /// `sign(a) · sign(b)` for `[.., m, k] × [.., k, n]`. The default is the float product of
    /// the ±1 tensors; backends with packed kernels override it.
    fn qnn_xnor_matmul<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>) -> Tensor<Self, D> {
        quant::sign(a).matmul(quant::sign(b))
    }

    /// Packs the signs of convolution weights `[C_out, C_in, k_h, k_w]` into the rows
    /// `[C_out, k_h·k_w·C']` of [`crate::ops::PackedConvWeights`].
    fn qnn_pack_conv_weights(weight: Tensor<Self, 4>, geometry: &ConvGeometry) -> Self::Packed {
        ops::pack_weights_portable(weight, geometry)
    }

    /// `sign(x) ⊛ w` for `x` `[N, C_in, H, W]` and weights packed by
    /// [`QnnBackend::qnn_pack_conv_weights`]. The default runs im2col with Burn tensor ops, then
    /// the packed product; backends with a direct kernel override it.
    fn qnn_binary_conv2d_packed(
        x: Tensor<Self, 4>,
        weight: &Self::Packed,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        ops::conv_im2col(x, weight, geometry)
    }

    /// Whether this backend computes on the host in `f32`, so that
    /// [`crate::inference::PackedNet`] can run the CPU kernels on its tensors' values directly,
    /// keeping activations as bits between layers (default `false`).
    fn qnn_computes_on_host() -> bool {
        false
    }

    /// Runs `f` on the values of `x` where [`QnnBackend::qnn_computes_on_host`] holds (without a
    /// copy when they are contiguous), for code that calls [`crate::kernels`] directly; `None`
    /// elsewhere (the default).
    fn qnn_with_host_values<const D: usize, R>(
        x: Tensor<Self, D>,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Option<R> {
        let _ = (x, f);
        None
    }

    /// The bits of `packed` in host memory, where the backend keeps them there (the backends of
    /// [`QnnBackend::qnn_computes_on_host`]), for code that calls [`crate::kernels`] directly;
    /// `None` elsewhere (the default).
    fn qnn_host_packed(packed: &Self::Packed) -> Option<&HostPacked> {
        let _ = packed;
        None
    }

    /// Packs, for the backward pass of a binary product, the signs of `x` (bit 1 where
    /// `x < 0`) and its straight-through band (bit 1 where `|x| > 1`, whose gradient is cut):
    /// `(signs, blocked)`, each one packed row `[1, numel]` of [`Encoding::Signs`] over the
    /// values of `x` in row-major order, 2 bits a value in all.
    fn qnn_save_signs<const D: usize>(x: Tensor<Self, D>) -> (Self::Packed, Self::Packed) {
        binary_backward::save_signs_portable(x)
    }

    /// The gradient of `sign(x) ⊛ sign(w)` with respect to `x` (`input_shape`
    /// `[N, C_in, H, W]`), with the straight-through estimator applied: `grad_out`
    /// `[N, C_out, H_out, W_out]` through the transposed convolution with the ±1 weights
    /// `weight_signs`, zero where `input_blocked` is set. Both bit rows are packed by
    /// [`QnnBackend::qnn_save_signs`]. The default unpacks them and runs Burn's
    /// `conv2d_x_backward`; `NdArray` reads the signs from the bits.
    fn qnn_binary_conv2d_input_grad(
        grad_out: Tensor<Self, 4>,
        weight_signs: &Self::Packed,
        input_blocked: &Self::Packed,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        binary_backward::conv2d_input_grad_portable(
            grad_out,
            weight_signs,
            input_blocked,
            input_shape,
            geometry,
        )
    }

    /// The gradient of `sign(x) ⊛ sign(w)` with respect to `w` `[C_out, C_in, k_h, k_w]`, with
    /// the straight-through estimator applied: `grad_out` against the ±1 inputs `input_signs`
    /// (of `input_shape`, padded as `geometry` says), zero where `weight_blocked` is set. The
    /// default unpacks the bits and runs Burn's `conv2d_weight_backward`.
    fn qnn_binary_conv2d_weight_grad(
        grad_out: Tensor<Self, 4>,
        input_signs: &Self::Packed,
        weight_blocked: &Self::Packed,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        binary_backward::conv2d_weight_grad_portable(
            grad_out,
            input_signs,
            weight_blocked,
            input_shape,
            geometry,
        )
    }

    /// The gradient of `sign(a)·sign(b)` with respect to `a` (`a_shape` `[.., m, k]`): `grad`
    /// `[.., m, n]` times the transpose of the ±1 `b_signs` (`b_shape` `[.., k, n]`), summed
    /// over the dimensions `a` was broadcast along, zero where `a_blocked` is set. The default
    /// unpacks the bits and runs Burn's `matmul`.
    fn qnn_binary_matmul_lhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        b_signs: &Self::Packed,
        a_blocked: &Self::Packed,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        binary_backward::matmul_lhs_grad_portable(grad, b_signs, a_blocked, a_shape, b_shape)
    }

    /// The gradient of `sign(a)·sign(b)` with respect to `b` (`b_shape` `[.., k, n]`): the
    /// transpose of the ±1 `a_signs` times `grad`, summed over the dimensions `b` was broadcast
    /// along, zero where `b_blocked` is set. The default unpacks the bits and runs Burn's
    /// `matmul`.
    fn qnn_binary_matmul_rhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        a_signs: &Self::Packed,
        b_blocked: &Self::Packed,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        binary_backward::matmul_rhs_grad_portable(grad, a_signs, b_blocked, a_shape, b_shape)
    }

    /// The gradients `[input, weight]` of `sign(x) ⊛ sign(w)` for the output gradient
    /// `grad_out` quantized once as `quantization` says (the paper's bit-wise gradients): each
    /// one computed only where `wanted` says so, as [`QnnBackend::qnn_binary_conv2d_input_grad`]
    /// and [`QnnBackend::qnn_binary_conv2d_weight_grad`] compute it from the quantized gradient.
    /// The default quantizes in floats and runs those two ops; the host backends quantize once
    /// to integer codes and compute both exactly in integers
    /// ([`crate::kernels::quantized_backward`]).
    fn qnn_binary_conv2d_grads_quantized(
        grad_out: Tensor<Self, 4>,
        input: OperandBits<'_, Self>,
        weight: OperandBits<'_, Self>,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
        quantization: GradQuantization<Self>,
        wanted: [bool; 2],
    ) -> [Option<Tensor<Self, 4>>; 2] {
        let grad = quantization.apply_portable(grad_out);
        let [input_grad, weight_grad] = wanted;
        [
            input_grad.then(|| {
                Self::qnn_binary_conv2d_input_grad(
                    grad.clone(),
                    weight.signs,
                    input.blocked,
                    input_shape,
                    geometry,
                )
            }),
            weight_grad.then(|| {
                Self::qnn_binary_conv2d_weight_grad(
                    grad.clone(),
                    input.signs,
                    weight.blocked,
                    input_shape,
                    geometry,
                )
            }),
        ]
    }

    /// The gradients `[a, b]` of `sign(a)·sign(b)` for the output gradient `grad` quantized
    /// once as `quantization` says, each where `wanted`, as
    /// [`QnnBackend::qnn_binary_conv2d_grads_quantized`] does for the convolution (the float
    /// ops here are [`QnnBackend::qnn_binary_matmul_lhs_grad`] and
    /// [`QnnBackend::qnn_binary_matmul_rhs_grad`]).
    fn qnn_binary_matmul_grads_quantized<const D: usize>(
        grad: Tensor<Self, D>,
        a: OperandBits<'_, Self>,
        b: OperandBits<'_, Self>,
        a_shape: [usize; D],
        b_shape: [usize; D],
        quantization: GradQuantization<Self>,
        wanted: [bool; 2],
    ) -> [Option<Tensor<Self, D>>; 2] {
        binary_backward::matmul_grads_quantized_portable(
            grad,
            a,
            b,
            [a_shape, b_shape],
            quantization,
            wanted,
        )
    }

    /// Batch normalization in training mode over `x` `[N, C, ..]` with the batch's statistics:
    /// `y = γ·(x − μ)/sqrt(σ² + ε) + β`, `μ` and the biased `σ²` per channel over every other
    /// dimension, as Burn's `BatchNorm`; returns `(y, μ, σ²)`. `Autodiff` runs it as one node
    /// whose backward is [`QnnBackend::qnn_batch_norm_backward`]. The default is built from
    /// Burn tensor ops; `NdArray` runs one kernel of two passes.
    fn qnn_batch_norm_train<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
    ) -> BatchNormOutput<Self, D> {
        batch_norm::train_portable(x, gamma, beta, epsilon)
    }

    /// `y·scale + bias` per channel of `y` `[N, C, ..]` (`scale` and `bias` `[C]`, either one
    /// optional), as the tensor operations `y * scale` then `+ bias` broadcast over dimension 1
    /// compute it: what a convolution layer does after its product. The default is those tensor
    /// operations (with their gradients under `Autodiff`); `NdArray` and `Flex` run one pass of
    /// [`crate::kernels::channel_affine`], the same values.
    fn qnn_channel_affine<const D: usize>(
        y: Tensor<Self, D>,
        scale: Option<Tensor<Self, 1>>,
        bias: Option<Tensor<Self, 1>>,
    ) -> Tensor<Self, D> {
        channel_affine::affine_portable(y, scale, bias)
    }

    /// Per channel of `x` `[N, C, ..]`, the sum of its values over every other dimension:
    /// `[C]`, the gradient of a per-channel bias. The default is Burn's tensor operations;
    /// `NdArray` and `Flex` sum in one parallel pass in f64
    /// ([`crate::kernels::channel_affine::channel_sums`]).
    fn qnn_channel_sums<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, 1> {
        channel_affine::sums_portable(x)
    }

    /// The signs (`±1`) of a batch norm in evaluation mode over `x` `[N, C, ..]`: per channel
    /// `sign(((x − mean)/sqrt(var + ε))·γ + β)` with the running `mean` and `var`, computed in
    /// the operations of Burn's `BatchNorm` and signed as [`crate::quant::sign`] (`+1` for
    /// `≥ 0` and NaN). No gradient: [`crate::nn::BatchNormSign`] calls it outside training
    /// only. The default is Burn's tensor ops; `NdArray` and `Flex` run one pass of
    /// [`crate::kernels::eval_norm::EvalNorm::signs`].
    fn qnn_batch_norm_sign<const D: usize>(
        x: Tensor<Self, D>,
        mean: Tensor<Self, 1>,
        var: Tensor<Self, 1>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
    ) -> Tensor<Self, D> {
        batch_norm::sign_portable(x, mean, var, gamma, beta, epsilon)
    }

    /// The gradients `(∂x, ∂γ, ∂β)` of [`QnnBackend::qnn_batch_norm_train`] from the output
    /// gradient `grad`, the input `x` and the forward's `mean` and `variance`: with
    /// `x̂ = (x − μ)/sqrt(σ² + ε)` and `M` values per channel, `∂β = Σ grad`,
    /// `∂γ = Σ grad·x̂`, `∂x = γ/sqrt(σ² + ε)·(grad − ∂β/M − x̂·∂γ/M)`.
    fn qnn_batch_norm_backward<const D: usize>(
        grad: Tensor<Self, D>,
        x: Tensor<Self, D>,
        mean: Tensor<Self, 1>,
        variance: Tensor<Self, 1>,
        gamma: Tensor<Self, 1>,
        epsilon: f64,
    ) -> BatchNormGrads<Self, D> {
        batch_norm::backward_portable(grad, x, mean, variance, gamma, epsilon)
    }

    /// The bit-plane first layer's product `x·sign(w)` for images `x` `[N, C_in, H, W]` scaled
    /// to `[−1, 1]` and latent weights `w` `[C_out, C_in, k_h, k_w]`, zero padding: computed as
    /// `(P − 127.5·M)/127.5` from the 8-bit codes (see [`crate::nn::BitPlaneConv2d`]).
    /// `Autodiff` runs it as one node that keeps the input and the weights' pass band, whose
    /// backward is [`QnnBackend::qnn_bit_plane_conv2d_weight_grad`] (the codes are rounded, so
    /// the input's gradient is 0). The default is built from Burn tensor ops; `NdArray` runs
    /// [`crate::kernels::bit_plane::bit_plane_conv2d_forward`].
    fn qnn_bit_plane_conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        bit_plane::forward_portable(x, weight, geometry)
    }

    /// The gradient of [`QnnBackend::qnn_bit_plane_conv2d`] with respect to the latent
    /// weights, with the straight-through estimator applied: `grad_out` against the scaled
    /// codes `code/127.5 − 1` of `x` (zero on padding), zero where `weight_blocked` (packed by
    /// [`QnnBackend::qnn_save_signs`]) is set. The default runs Burn's
    /// `conv2d_weight_backward`; `NdArray` runs
    /// [`crate::kernels::bit_plane::bit_plane_conv2d_weight_grad`].
    fn qnn_bit_plane_conv2d_weight_grad(
        grad_out: Tensor<Self, 4>,
        x: Tensor<Self, 4>,
        weight_blocked: &Self::Packed,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        bit_plane::weight_grad_portable(grad_out, x, weight_blocked, geometry)
    }

    /// Max-pooling of `x` `[N, C, H, W]` over `kernel` windows moved by `stride`, without
    /// padding or dilation (Burn's `max_pool2d` with padding 0 and dilation 1). `Autodiff`
    /// runs it as one node that keeps only the index of each window's maximum (see
    /// [`QnnBackend::qnn_max_pool2d_with_indices`]). The default is Burn's `max_pool2d`;
    /// `NdArray` and `Flex` run [`crate::kernels::pool::max_pool2d`].
    fn qnn_max_pool2d(
        x: Tensor<Self, 4>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> Tensor<Self, 4> {
        pool::forward_portable(x, kernel, stride)
    }

    /// [`QnnBackend::qnn_max_pool2d`] and the position `iy·W + ix` inside its plane of each
    /// window's maximum (the first in row-major order among equal values), as Burn's
    /// `max_pool2d_with_indices`. The default is Burn's; `NdArray` runs
    /// [`crate::kernels::pool::max_pool2d_forward`].
    fn qnn_max_pool2d_with_indices(
        x: Tensor<Self, 4>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> (Tensor<Self, 4>, Tensor<Self, 4, Int>) {
        pool::with_indices_portable(x, kernel, stride)
    }

    /// The input gradient (of `input_shape`) of a max-pooling from its output gradient `grad`
    /// and the indices of [`QnnBackend::qnn_max_pool2d_with_indices`]: each output's gradient
    /// added at the position of its window's maximum. The default is a scatter-add of Burn
    /// tensor ops; `NdArray` runs [`crate::kernels::pool::max_pool2d_backward`].
    fn qnn_max_pool2d_backward(
        grad: Tensor<Self, 4>,
        indices: Tensor<Self, 4, Int>,
        input_shape: [usize; 4],
    ) -> Tensor<Self, 4> {
        pool::backward_portable(grad, indices, input_shape)
    }

    /// `sign(a) · sign(b)` whose backward quantizes the output gradient once to `grad_bits` bits
    /// with `rounding` (the paper's bit-wise gradient computation) and runs
    /// [`QnnBackend::qnn_binary_matmul_grads_quantized`]. Outside `Autodiff` it is
    /// [`QnnBackend::qnn_xnor_matmul`].
    fn qnn_xnor_matmul_quantized_grad<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        grad_bits: Bits,
        rounding: GradRounding,
    ) -> Tensor<Self, D> {
        let _ = (grad_bits, rounding);
        Self::qnn_xnor_matmul(a, b)
    }

    /// `sign(x) ⊛ sign(w)` whose backward quantizes the output gradient once to `grad_bits` bits
    /// with `rounding` and runs [`QnnBackend::qnn_binary_conv2d_grads_quantized`]. Outside
    /// `Autodiff` it is [`QnnBackend::qnn_binary_conv2d`].
    fn qnn_binary_conv2d_quantized_grad(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        geometry: &ConvGeometry,
        grad_bits: Bits,
        rounding: GradRounding,
    ) -> Tensor<Self, 4> {
        let _ = (grad_bits, rounding);
        Self::qnn_binary_conv2d(x, weight, geometry)
    }

    /// One Adam update of a parameter: `(θ, m, v)` after `step` from the parameter, its
    /// gradient and the moments (`None` at the first step), with the arithmetic of Burn's `Adam`
    /// (see [`crate::kernels::adam`]). The default is Burn's own sequence of tensor ops; the
    /// host backends run [`crate::kernels::adam::adam_step`], one parallel pass that gives the
    /// same bits. [`crate::optim::FusedAdam`] calls it.
    fn qnn_adam_step<const D: usize>(
        param: Tensor<Self, D>,
        grad: Tensor<Self, D>,
        moments: Option<(Tensor<Self, D>, Tensor<Self, D>)>,
        step: &AdamStep,
    ) -> (Tensor<Self, D>, Tensor<Self, D>, Tensor<Self, D>) {
        let grad = match step.weight_decay {
            Some(penalty) => param.clone().mul_scalar(penalty).add(grad),
            None => grad,
        };
        let (g1, g2) = (
            grad.clone().mul_scalar(1.0 - step.beta_1),
            grad.square().mul_scalar(1.0 - step.beta_2),
        );
        let (m, v) = match moments {
            Some((m, v)) => (
                m.mul_scalar(step.beta_1).add(g1),
                v.mul_scalar(step.beta_2).add(g2),
            ),
            None => (g1, g2),
        };
        let (factor, offset) = step.factors();
        let delta = m
            .clone()
            .mul_scalar(factor)
            .div(v.clone().sqrt().add_scalar(offset));
        (param - delta.mul_scalar(step.lr), m, v)
    }

    /// A latent weight after an optimizer step, under the paper's rules: with `before`
    /// `Some((W₀, s))` (the weight before the step and the layer's learning-rate scale),
    /// `W₀ + (W − W₀)·s`; then, with `clip`, clipped to `[−1, 1]` (see
    /// [`crate::kernels::latent`]). The default is Burn's tensor ops; the host backends run
    /// [`crate::kernels::latent::latent_update`], one parallel pass that gives the same bits, and
    /// `Autodiff` runs its inner backend's (the result is not tracked).
    /// `burn_qnn::learner::ClipLatentWeights` and [`crate::nn::clip_latent_weights`] call it.
    fn qnn_latent_update<const D: usize>(
        w: Tensor<Self, D>,
        before: Option<(Tensor<Self, D>, f64)>,
        clip: bool,
    ) -> Tensor<Self, D> {
        let w = match before {
            Some((old, scale)) => old.clone() + (w - old) * scale,
            None => w,
        };
        if clip { w.clamp(-1.0, 1.0) } else { w }
    }

    /// `sign(x) ⊛ sign(w)`, weights unpacked. `Autodiff` overrides it to attach the
    /// straight-through gradients while keeping only packed bits for the backward pass.
    fn qnn_binary_conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let packed = Self::qnn_pack_conv_weights(weight, geometry);
        Self::qnn_binary_conv2d_packed(x, &packed, geometry)
    }
}

/// An autodiff backend whose inner backend is a [`QnnBackend`] too, such as
/// `Autodiff<NdArray>` or `Autodiff<Wgpu>`: the bound to put on training code.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::Tensor;
/// use burn_qnn::{QnnAutodiffBackend, quant};
///
/// fn gradient_of_sign<B: QnnAutodiffBackend>(device: &B::Device) -> Vec<f32> {
///     let x = Tensor::<B, 1>::from_floats([-2.0, 0.5], device).require_grad();
///     let grads = quant::sign(x.clone()).sum().backward();
///     x.grad(&grads).unwrap().into_data().to_vec().unwrap()
/// }
///
/// assert_eq!(gradient_of_sign::<Autodiff<NdArray>>(&Default::default()), [0.0, 1.0]);
/// ```
pub trait QnnAutodiffBackend: QnnBackend + AutodiffBackend<InnerBackend: QnnBackend> {}

impl<B> QnnAutodiffBackend for B where B: QnnBackend + AutodiffBackend<InnerBackend: QnnBackend> {}
