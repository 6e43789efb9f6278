//! [`QnnBackend`] on a CPU backend whose float tensors live in host memory (burn-ndarray,
//! burn-flex): packed products, the binary layers' backward, batch norm and pooling run the
//! SIMD kernels of [`crate::kernels`] directly on the tensors' memory.
//!
//! A backend joins by implementing [`HostFloat`] (how to read a tensor's values as an `f32`
//! slice and how to make a tensor from an `f32` buffer); every op below is written once for all
//! of them.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData, backend::Backend};
use rayon::iter::ParallelExtend;

use super::QnnBackend;
use super::{BatchNormGrads, BatchNormOutput, GradQuantization, OperandBits, binary_backward};
use crate::{
    kernels::{
        WORD_BITS,
        adam::{self, AdamStep},
        amx_bf16::{self, AmxBf16},
        backward::{self, Bits, MatmulShape},
        batch_norm::{NormShape, batch_norm_backward_into, batch_norm_forward_into},
        bit_plane::{self, bit_plane_conv2d_forward, bit_plane_conv2d_weight_grad},
        channel_affine, code_matmul, conv,
        eval_norm::EvalNorm,
        latent::latent_update_into,
        noise, pack,
        pool::{self, PoolShape},
        quantize,
        quantized_backward::{self, QuantizedGrad},
        uninit::written,
        words_per_row,
    },
    ops::{ConvGeometry, Encoding, HostPacked, PaddingMode, check_weight_shape},
    quant,
};

/// A CPU backend whose float tensors the host kernels read and write in place.
pub(super) trait HostFloat: Backend {
    /// Whether the backend's float element is `f32` (otherwise every op converts its operands,
    /// and [`QnnBackend::qnn_computes_on_host`] is false).
    fn holds_f32() -> bool;

    /// Runs `f` on the tensor's values as a contiguous f32 slice (and its shape), without a copy
    /// where the tensor is a contiguous f32 buffer.
    fn with_f32<R, const D: usize>(x: Tensor<Self, D>, f: impl FnOnce(&[f32], &[usize]) -> R) -> R;

    /// A float tensor of `shape` holding `values`, without a copy where the backend holds f32.
    fn float_tensor<const D: usize>(values: Vec<f32>, shape: &[usize]) -> Tensor<Self, D>;
}

impl<B: HostFloat> QnnBackend for B {
    type Packed = HostPacked;

    fn qnn_computes_on_host() -> bool {
        B::holds_f32()
    }

    fn qnn_with_host_values<const D: usize, R>(
        x: Tensor<Self, D>,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Option<R> {
        Self::qnn_computes_on_host().then(|| B::with_f32(x, |values, _| f(values)))
    }

    fn qnn_host_packed(packed: &HostPacked) -> Option<&HostPacked> {
        Self::qnn_computes_on_host().then_some(packed)
    }

    /// [`crate::kernels::quantize`]: one parallel pass for the linear quantizers (the same
    /// bits as the tensor ops); the power-of-two quantizer keeps Burn's tensor ops.
    fn qnn_quantize<const D: usize>(
        x: Tensor<Self, D>,
        quantizer: quant::Quantizer,
    ) -> Tensor<Self, D> {
        if !quantize::supports(quantizer) || !B::holds_f32() {
            return quantizer.forward(x);
        }
        let shape = x.dims();
        // SAFETY: `quantize_into` writes every slot.
        let (out, ()) = unsafe {
            written(shape.iter().product(), |out| {
                B::with_f32(x, |x, _| quantize::quantize_into(quantizer, x, out))
            })
        };
        B::float_tensor(out, &shape)
    }

    /// [`quantize::blocked_bits`], in parallel.
    fn qnn_quantize_blocked<const D: usize>(
        x: Tensor<Self, D>,
        quantizer: quant::Quantizer,
    ) -> HostPacked {
        let n = x.shape().num_elements();
        let words = B::with_f32(x, |x, _| quantize::blocked_bits(quantizer, x));
        HostPacked::from_words(words, vec![1, n], Encoding::Signs)
    }

    /// [`backward::copy_cut`]: the values copied and cut in one parallel pass.
    fn qnn_cut_gradient<const D: usize>(
        grad: Tensor<Self, D>,
        blocked: &HostPacked,
    ) -> Tensor<Self, D> {
        let shape = grad.dims();
        let out = B::with_f32(grad, |values, _| {
            let mut out = vec![0f32; values.len()];
            backward::copy_cut(values, Bits::new(blocked.words(), values.len()), &mut out);
            out
        });
        B::float_tensor(out, &shape)
    }
    /// [`code_matmul::code_matmul`]: the codes' product on the bit-serial kernel, where its
    /// integer sums are exact in f32 ([`code_matmul::exact_in_f32`]; Burn's `matmul` beyond).
    fn qnn_code_matmul(
        a: Tensor<Self, 2>,
        a_grid: quant::CodeGrid,
        b: Tensor<Self, 2>,
        b_grid: quant::CodeGrid,
    ) -> Tensor<Self, 2> {
        match exact_code_product(a, a_grid, b, b_grid) {
            Ok((product, shape)) => B::float_tensor(product.out, &shape),
            Err((a, b)) => a.matmul(b),
        }
    }

    /// [`code_matmul::code_matmul_prepacked`] where its sums are exact.
    fn qnn_code_matmul_prepacked(
        a: Tensor<Self, 2>,
        a_grid: quant::CodeGrid,
        b_t: &HostPacked,
        b_grid: quant::CodeGrid,
    ) -> Result<Tensor<Self, 2>, Tensor<Self, 2>> {
        let ([m, k], n) = (a.dims(), b_t.shape()[0]);
        let fits = b_t.shape() == [n, k] && b_t.encoding() == Encoding::Codes(b_grid.bits);
        if !B::holds_f32() || !fits || !code_matmul::exact_in_f32(a_grid, b_grid, k) {
            return Err(a);
        }
        let out = B::with_f32(a, |a, _| {
            code_matmul::code_matmul_prepacked(a, a_grid, b_t, b_grid, m)
        });
        Ok(B::float_tensor(out, &[m, n]))
    }

    /// As [`QnnBackend::qnn_code_matmul`], returning the codes the kernel packed.
    fn qnn_code_matmul_saving(
        a: Tensor<Self, 2>,
        a_grid: quant::CodeGrid,
        b: Tensor<Self, 2>,
        b_grid: quant::CodeGrid,
    ) -> (Tensor<Self, 2>, HostPacked, HostPacked) {
        match exact_code_product(a, a_grid, b, b_grid) {
            Ok((product, shape)) => (
                B::float_tensor(product.out, &shape),
                product.lhs,
                product.rhs_t,
            ),
            Err((a, b)) => {
                let [k, n] = b.dims();
                let a_codes = Self::qnn_pack_codes(a.clone(), a_grid);
                let b_codes = B::with_f32(b.clone(), |b, _| {
                    code_matmul::pack_column_codes(b, b_grid, [k, n])
                });
                (a.matmul(b), a_codes, b_codes)
            }
        }
    }

    /// [`code_matmul::grad_times_codes`]: blocks of decoded rows into the f32 product.
    fn qnn_code_grad_times_rows(
        grad: Tensor<Self, 2>,
        b_rows: &HostPacked,
        grid: quant::CodeGrid,
    ) -> Tensor<Self, 2> {
        let ([m, _], k) = (grad.dims(), b_rows.shape()[1]);
        let out = B::with_f32(grad, |grad, _| {
            code_matmul::grad_times_codes(grad, m, b_rows, grid)
        });
        B::float_tensor(out, &[m, k])
    }

    /// [`code_matmul::codes_transposed_times_grad`]: blocks of decoded rows into the f32
    /// product.
    fn qnn_code_rows_transposed_times_grad(
        a_rows: &HostPacked,
        grid: quant::CodeGrid,
        grad: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        let ([_, n], k) = (grad.dims(), a_rows.shape()[1]);
        let out = B::with_f32(grad, |grad, _| {
            code_matmul::codes_transposed_times_grad(a_rows, grid, grad, n)
        });
        B::float_tensor(out, &[k, n])
    }

    /// [`code_matmul::pack_codes`]: codes and packing from the values, in parallel.
    fn qnn_pack_codes(x: Tensor<Self, 2>, grid: quant::CodeGrid) -> HostPacked {
        let [rows, k] = x.dims();
        B::with_f32(x, |values, _| {
            code_matmul::pack_codes(values, grid, [rows, k])
        })
    }

    /// [`code_matmul::unpack_codes`]: the values straight from the bit planes, in one pass.
    fn qnn_unpack_codes(packed: &HostPacked, grid: quant::CodeGrid) -> Tensor<Self, 2> {
        B::float_tensor(code_matmul::unpack_codes(packed, grid), packed.shape())
    }

    /// [`code_matmul::code_conv2d`] where its product is exact; Burn's `conv2d` elsewhere
    /// (which also reports an impossible geometry).
    fn qnn_code_conv2d(
        x: Tensor<Self, 4>,
        x_grid: quant::CodeGrid,
        weight: Tensor<Self, 4>,
        weight_grid: quant::CodeGrid,
        options: burn::tensor::ops::ConvOptions<2>,
    ) -> Tensor<Self, 4> {
        let Some((shape, out_shape)) =
            code_conv_call::<B>(x.dims(), weight.dims(), x_grid, weight_grid, &options)
        else {
            return burn::tensor::module::conv2d(x, weight, None, options);
        };
        let out = B::with_f32(x, |x, _| {
            B::with_f32(weight, |w, _| {
                code_matmul::code_conv2d(x, x_grid, w, weight_grid, &shape)
            })
        });
        B::float_tensor(out, &out_shape)
    }

    /// [`code_matmul::code_conv2d_prepacked`] where its product is exact.
    fn qnn_code_conv2d_prepacked(
        x: Tensor<Self, 4>,
        x_grid: quant::CodeGrid,
        weight_rows: &HostPacked,
        weight_shape: [usize; 4],
        weight_grid: quant::CodeGrid,
        options: &burn::tensor::ops::ConvOptions<2>,
    ) -> Result<Tensor<Self, 4>, Tensor<Self, 4>> {
        let [c_out, c_in, kh, kw] = weight_shape;
        let fits = weight_rows.shape() == [c_out, c_in * kh * kw]
            && weight_rows.encoding() == Encoding::Codes(weight_grid.bits);
        let call = code_conv_call::<B>(x.dims(), weight_shape, x_grid, weight_grid, options);
        let (Some((shape, out_shape)), true) = (call, fits) else {
            return Err(x);
        };
        let out = B::with_f32(x, |x, _| {
            code_matmul::code_conv2d_prepacked(x, x_grid, weight_rows, weight_grid, &shape)
        });
        Ok(B::float_tensor(out, &out_shape))
    }

    fn qnn_pack<const D: usize>(x: Tensor<Self, D>, encoding: Encoding) -> HostPacked {
        B::with_f32(x, |values, shape| HostPacked::pack(values, shape, encoding))
    }

    /// [`pack::pack_conv_weight_signs`]: straight from the weights' values, output channels in
    /// parallel, without the permuted and padded copy of the portable path.
    fn qnn_pack_conv_weights(weight: Tensor<Self, 4>, geometry: &ConvGeometry) -> HostPacked {
        let dims = check_weight_shape(weight.dims(), geometry);
        let [c_out, _, kh, kw] = dims;
        let padded = geometry.padded_channels();
        let mut words = vec![0u64; c_out * kh * kw * padded / WORD_BITS];
        B::with_f32(weight, |values, _| {
            pack::pack_conv_weight_signs(values, dims, padded, &mut words)
        });
        HostPacked::from_words(words, vec![c_out, kh * kw * padded], Encoding::Signs)
    }

    fn qnn_packed_shape(packed: &HostPacked) -> Vec<usize> {
        packed.shape().to_vec()
    }

    fn qnn_packed_encoding(packed: &HostPacked) -> Encoding {
        packed.encoding()
    }

    fn qnn_unpack<const D: usize>(packed: &HostPacked) -> Tensor<Self, D> {
        B::float_tensor(packed.unpack(), packed.shape())
    }

    fn qnn_packed_to_bytes(packed: &HostPacked) -> Vec<u8> {
        packed.to_bytes()
    }

    fn qnn_packed_from_host(host: HostPacked, _device: &Device<Self>) -> HostPacked {
        host
    }

    fn qnn_packed_matmul<const D: usize>(a: &HostPacked, b_t: &HostPacked) -> Tensor<Self, D> {
        let (values, shape) = a.matmul_transposed(b_t);
        B::float_tensor(values, &shape)
    }

    fn qnn_xnor_matmul<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>) -> Tensor<Self, D> {
        let a = B::with_f32(a, |values, shape| {
            HostPacked::pack(values, shape, Encoding::Signs)
        });
        let b_t = B::with_f32(b, |values, shape| {
            HostPacked::pack_columns(values, shape, Encoding::Signs)
        });
        Self::qnn_packed_matmul(&a, &b_t)
    }

    /// The direct binary convolution kernel of [`crate::kernels::conv`] (implicit GEMM on
    /// packed bits, no im2col copy).
    fn qnn_binary_conv2d_packed(
        x: Tensor<Self, 4>,
        weight: &HostPacked,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let [n, _, h, w] = x.dims();
        let call = geometry.call(x.dims());
        let [c_in, c_out] = geometry.channels;
        let [oh, ow] = geometry.output_size([h, w]);
        let len = n * c_out * oh * ow;
        if let Some(proof) = AmxBf16::active() {
            let pad = match geometry.padding_mode {
                PaddingMode::Zero => 0.0,
                PaddingMode::PlusOne => 1.0,
            };
            // The packed rows hold `[k_h, k_w, C']` per output channel (`C'` the padded
            // channels), each row a whole number of words.
            let words = weight.words();
            let row_bits = words_per_row(weight.shape()[1]) * 64;
            let (bits, padded) = (
                Bits::new(words, 64 * words.len()),
                geometry.padded_channels(),
            );
            let sign = |o: usize, i: usize, tap: usize| bits.sign(o * row_bits + tap * padded + i);
            let mut out = Vec::with_capacity(len);
            let on_tiles = B::with_f32(x.clone(), |values, _| {
                amx_bf16::conv2d_into(
                    proof,
                    values,
                    amx_bf16::Input::Signs,
                    pad,
                    sign,
                    &call,
                    &mut out.spare_capacity_mut()[..len],
                )
            });
            if on_tiles {
                // SAFETY: `conv2d_into` wrote every slot, as it does where it returns `true`.
                unsafe { out.set_len(len) };
                return B::float_tensor(out, &[n, c_out, oh, ow]);
            }
        }
        let weights = weight.conv_weights(c_in, geometry.kernel);
        let pad = geometry.padding_mode;
        // SAFETY: `convolve_nchw_into` writes every slot.
        let (out, ()) = unsafe {
            written(len, |out| {
                B::with_f32(x, |values, _| {
                    conv::convolve_nchw_into(
                        values,
                        &weights.weights,
                        &call,
                        pad,
                        conv::ConvEpilogue::Raw,
                        out,
                    )
                })
            })
        };
        B::float_tensor(out, &[n, c_out, oh, ow])
    }

    /// [`crate::kernels::batch_norm::batch_norm_forward`]: statistics and output in two passes.
    fn qnn_batch_norm_train<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
    ) -> BatchNormOutput<Self, D> {
        let dims = x.dims();
        let shape = norm_shape(&dims);
        let gamma = host_values(gamma);
        let beta = host_values(beta);
        // SAFETY: `batch_norm_forward_into` writes every slot.
        let (y, stats) = unsafe {
            written(shape.len(), |y| {
                B::with_f32(x, |x, _| {
                    batch_norm_forward_into(x, shape, &gamma, &beta, epsilon, y)
                })
            })
        };
        (
            B::float_tensor(y, &dims),
            B::float_tensor(stats.mean, &[shape.channels]),
            B::float_tensor(stats.variance, &[shape.channels]),
        )
    }

    /// [`crate::kernels::channel_affine::scale_and_shift_into`]: one pass (none without a scale
    /// or a bias).
    fn qnn_channel_affine<const D: usize>(
        y: Tensor<Self, D>,
        scale: Option<Tensor<Self, 1>>,
        bias: Option<Tensor<Self, 1>>,
    ) -> Tensor<Self, D> {
        if scale.is_none() && bias.is_none() {
            return y;
        }
        let dims = y.dims();
        let shape = norm_shape(&dims);
        let fits =
            |t: &Option<Tensor<Self, 1>>| t.as_ref().is_none_or(|t| t.dims()[0] == shape.channels);
        if !B::holds_f32() || !fits(&scale) || !fits(&bias) {
            // Burn's broadcasting (and its shape errors).
            return super::channel_affine::affine_portable(y, scale, bias);
        }
        let (scale, bias) = (scale.map(host_values), bias.map(host_values));
        // SAFETY: `scale_and_shift_into` writes every slot.
        let (out, ()) = unsafe {
            written(shape.len(), |out| {
                B::with_f32(y, |y, _| {
                    channel_affine::scale_and_shift_into(
                        y,
                        shape,
                        scale.as_deref(),
                        bias.as_deref(),
                        out,
                    )
                })
            })
        };
        B::float_tensor(out, &dims)
    }

    fn qnn_quantized_gradient<const D: usize>(
        grad: Tensor<Self, D>,
        quantization: GradQuantization<Self>,
    ) -> Tensor<Self, D> {
        if !B::holds_f32() {
            return quantization.apply_portable(grad);
        }
        let dims = grad.dims();
        let values = quantized_grad(grad, quantization).values();
        B::float_tensor(values, &dims)
    }

    fn qnn_channel_sums<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, 1> {
        if !B::holds_f32() {
            return super::channel_affine::sums_portable(x);
        }
        let shape = norm_shape(&x.dims());
        let sums = B::with_f32(x, |x, _| channel_affine::channel_sums(x, shape));
        B::float_tensor(sums, &[shape.channels])
    }

    /// [`EvalNorm::signs`]: one pass.
    fn qnn_batch_norm_sign<const D: usize>(
        x: Tensor<Self, D>,
        mean: Tensor<Self, 1>,
        var: Tensor<Self, 1>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
    ) -> Tensor<Self, D> {
        if !B::holds_f32() {
            return super::batch_norm::sign_portable(x, mean, var, gamma, beta, epsilon);
        }
        let dims = x.dims();
        let shape = norm_shape(&dims);
        let norm = EvalNorm::new(
            host_values(mean),
            &host_values(var),
            host_values(gamma),
            host_values(beta),
            epsilon,
        );
        // SAFETY: `signs_into` writes every slot.
        let (y, ()) = unsafe {
            written(shape.len(), |y| {
                B::with_f32(x, |x, _| norm.signs_into(x, shape, y))
            })
        };
        B::float_tensor(y, &dims)
    }

    /// [`crate::kernels::batch_norm::batch_norm_backward`]: two passes over the gradient and
    /// the input.
    fn qnn_batch_norm_backward<const D: usize>(
        grad: Tensor<Self, D>,
        x: Tensor<Self, D>,
        mean: Tensor<Self, 1>,
        variance: Tensor<Self, 1>,
        gamma: Tensor<Self, 1>,
        epsilon: f64,
    ) -> BatchNormGrads<Self, D> {
        let dims = x.dims();
        let shape = norm_shape(&dims);
        let mean = host_values(mean);
        let inv_std: Vec<f32> = host_values(variance)
            .iter()
            .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
            .collect();
        let gamma = host_values(gamma);
        // SAFETY: `batch_norm_backward_into` writes every slot.
        let (d_x, (d_gamma, d_beta)) = unsafe {
            written(shape.len(), |d_x| {
                B::with_f32(grad, |grad, _| {
                    B::with_f32(x, |x, _| {
                        batch_norm_backward_into(grad, x, shape, (&mean, &inv_std), &gamma, d_x)
                    })
                })
            })
        };
        (
            B::float_tensor(d_x, &dims),
            B::float_tensor(d_gamma, &[shape.channels]),
            B::float_tensor(d_beta, &[shape.channels]),
        )
    }

    /// Signs and band in one pass over the values ([`backward::pack_signs_and_band`]).
    fn qnn_save_signs<const D: usize>(x: Tensor<Self, D>) -> (HostPacked, HostPacked) {
        B::with_f32(x, |values, _| {
            let words = words_per_row(values.len());
            let (mut signs, mut blocked) = (vec![0u64; words], vec![0u64; words]);
            backward::pack_signs_and_band(values, &mut signs, &mut blocked);
            let row = |words| HostPacked::from_words(words, vec![1, values.len()], Encoding::Signs);
            (row(signs), row(blocked))
        })
    }

    /// [`backward::binary_conv2d_input_grad`] on the saved bits.
    fn qnn_binary_conv2d_input_grad(
        grad_out: Tensor<Self, 4>,
        weight_signs: &HostPacked,
        input_blocked: &HostPacked,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let g = geometry.call(input_shape);
        let mut out = zeros(g.input_len());
        B::with_f32(grad_out, |grad, _| {
            backward::binary_conv2d_input_grad(
                grad,
                saved_bits(weight_signs),
                saved_bits(input_blocked),
                &g,
                &mut out,
            )
        });
        B::float_tensor(out, &input_shape)
    }

    /// [`backward::binary_conv2d_weight_grad`] on the saved bits.
    fn qnn_binary_conv2d_weight_grad(
        grad_out: Tensor<Self, 4>,
        input_signs: &HostPacked,
        weight_blocked: &HostPacked,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let g = geometry.call(input_shape);
        let mut out = zeros(g.weights_len());
        B::with_f32(grad_out, |grad, _| {
            backward::binary_conv2d_weight_grad(
                grad,
                saved_bits(input_signs),
                geometry.padding_mode,
                saved_bits(weight_blocked),
                &g,
                &mut out,
            )
        });
        let [c_in, c_out] = geometry.channels;
        let [kh, kw] = geometry.kernel;
        B::float_tensor(out, &[c_out, c_in, kh, kw])
    }

    /// [`backward::binary_matmul_lhs_grad`] on the saved bits where `a` and `b` have the same
    /// batch dimensions; broadcast products take the portable path.
    fn qnn_binary_matmul_lhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        b_signs: &HostPacked,
        a_blocked: &HostPacked,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        let Some(shape) = MatmulShape::same_batch(&a_shape, &b_shape) else {
            return binary_backward::matmul_lhs_grad_portable(
                grad, b_signs, a_blocked, a_shape, b_shape,
            );
        };
        let mut out = zeros(a_shape.iter().product());
        B::with_f32(grad, |grad, _| {
            backward::binary_matmul_lhs_grad(
                grad,
                saved_bits(b_signs),
                saved_bits(a_blocked),
                shape,
                &mut out,
            )
        });
        B::float_tensor(out, &a_shape)
    }

    /// [`backward::binary_matmul_rhs_grad`] on the saved bits where `a` and `b` have the same
    /// batch dimensions; broadcast products take the portable path.
    fn qnn_binary_matmul_rhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        a_signs: &HostPacked,
        b_blocked: &HostPacked,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        let Some(shape) = MatmulShape::same_batch(&a_shape, &b_shape) else {
            return binary_backward::matmul_rhs_grad_portable(
                grad, a_signs, b_blocked, a_shape, b_shape,
            );
        };
        let mut out = zeros(b_shape.iter().product());
        B::with_f32(grad, |grad, _| {
            backward::binary_matmul_rhs_grad(
                grad,
                saved_bits(a_signs),
                saved_bits(b_blocked),
                shape,
                &mut out,
            )
        });
        B::float_tensor(out, &b_shape)
    }

    /// One seed drawn from Burn's generator, the values filled from it in parallel
    /// ([`noise::uniform_noise`]).
    fn qnn_uniform_noise(count: usize, device: &Device<Self>) -> Tensor<Self, 1> {
        let seed = Tensor::<Self, 1>::random([2], Distribution::Uniform(0.0, 1.0), device);
        let seed = B::with_f32(seed, |v, _| {
            (u64::from(v[0].to_bits()) << 32) | u64::from(v[1].to_bits())
        });
        B::float_tensor(noise::uniform_noise(seed, count), &[count])
    }

    /// [`quantized_backward::binary_conv2d_input_grad`] and
    /// [`quantized_backward::binary_conv2d_weight_grad`] on the saved bits and the gradient's
    /// codes, quantized once: exact integer products of the codes and the ±1 operands.
    fn qnn_binary_conv2d_grads_quantized(
        grad_out: Tensor<Self, 4>,
        input: OperandBits<'_, Self>,
        weight: OperandBits<'_, Self>,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
        quantization: GradQuantization<Self>,
        [input_wanted, weight_wanted]: [bool; 2],
    ) -> [Option<Tensor<Self, 4>>; 2] {
        let g = geometry.call(input_shape);
        let grad = quantized_grad(grad_out, quantization);
        let input_grad = input_wanted.then(|| {
            // SAFETY: `binary_conv2d_input_grad_into` writes every slot.
            let (out, ()) = unsafe {
                written(g.input_len(), |out| {
                    quantized_backward::binary_conv2d_input_grad_into(
                        &grad,
                        saved_bits(weight.signs),
                        saved_bits(input.blocked),
                        &g,
                        out,
                    )
                })
            };
            B::float_tensor(out, &input_shape)
        });
        let weight_grad = weight_wanted.then(|| {
            let mut out = zeros(g.weights_len());
            quantized_backward::binary_conv2d_weight_grad(
                &grad,
                saved_bits(input.signs),
                geometry.padding_mode,
                saved_bits(weight.blocked),
                &g,
                &mut out,
            );
            let [c_in, c_out] = geometry.channels;
            let [kh, kw] = geometry.kernel;
            B::float_tensor(out, &[c_out, c_in, kh, kw])
        });
        [input_grad, weight_grad]
    }

    /// [`quantized_backward::binary_matmul_lhs_grad`] and
    /// [`quantized_backward::binary_matmul_rhs_grad`] on the saved bits and the gradient's codes,
    /// quantized once, where `a` and `b` have the same batch dimensions; broadcast products
    /// quantize in floats.
    fn qnn_binary_matmul_grads_quantized<const D: usize>(
        grad: Tensor<Self, D>,
        a: OperandBits<'_, Self>,
        b: OperandBits<'_, Self>,
        a_shape: [usize; D],
        b_shape: [usize; D],
        quantization: GradQuantization<Self>,
        [a_wanted, b_wanted]: [bool; 2],
    ) -> [Option<Tensor<Self, D>>; 2] {
        let Some(shape) = MatmulShape::same_batch(&a_shape, &b_shape) else {
            return binary_backward::matmul_grads_quantized_portable(
                grad,
                a,
                b,
                [a_shape, b_shape],
                quantization,
                [a_wanted, b_wanted],
            );
        };
        let grad = quantized_grad(grad, quantization);
        let a_grad = a_wanted.then(|| {
            let mut out = zeros(a_shape.iter().product());
            quantized_backward::binary_matmul_lhs_grad(
                &grad,
                saved_bits(b.signs),
                saved_bits(a.blocked),
                shape,
                &mut out,
            );
            B::float_tensor(out, &a_shape)
        });
        let b_grad = b_wanted.then(|| {
            let mut out = zeros(b_shape.iter().product());
            quantized_backward::binary_matmul_rhs_grad(
                &grad,
                saved_bits(a.signs),
                saved_bits(b.blocked),
                shape,
                &mut out,
            );
            B::float_tensor(out, &b_shape)
        });
        [a_grad, b_grad]
    }

    /// [`bit_plane_conv2d_forward`] on the codes of `x` and the weights' signs.
    fn qnn_bit_plane_conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let g = geometry.call(x.dims());
        let [oh, ow] = g
            .output_size()
            .unwrap_or_else(|e| panic!("bit-plane conv2d: {e}"));
        let signs = host_values(quant::sign(weight));
        let mut out = zeros(g.batch * g.out_channels * oh * ow);
        let codes = B::with_f32(x, |x, _| bit_plane::pixel_codes(x));
        bit_plane_conv2d_forward(&codes, &signs, &g, &mut out);
        B::float_tensor(out, &[g.batch, g.out_channels, oh, ow])
    }

    /// [`bit_plane_conv2d_weight_grad`] on the codes of `x`.
    fn qnn_bit_plane_conv2d_weight_grad(
        grad_out: Tensor<Self, 4>,
        x: Tensor<Self, 4>,
        weight_blocked: &HostPacked,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let g = geometry.call(x.dims());
        let mut out = zeros(g.weights_len());
        let codes = B::with_f32(x, |x, _| bit_plane::pixel_codes(x));
        B::with_f32(grad_out, |grad, _| {
            bit_plane_conv2d_weight_grad(grad, &codes, saved_bits(weight_blocked), &g, &mut out)
        });
        let [kh, kw] = g.kernel;
        B::float_tensor(out, &[g.out_channels, g.in_channels, kh, kw])
    }

    /// [`adam::adam_step`]: one parallel pass, the same bits as the tensor ops.
    fn qnn_adam_step<const D: usize>(
        param: Tensor<Self, D>,
        grad: Tensor<Self, D>,
        moments: Option<(Tensor<Self, D>, Tensor<Self, D>)>,
        step: &AdamStep,
    ) -> (Tensor<Self, D>, Tensor<Self, D>, Tensor<Self, D>) {
        let shape = param.dims();
        let len = shape.iter().product();
        let update = |out: (adam::Slots<'_>, adam::Slots<'_>, adam::Slots<'_>)| {
            B::with_f32(param, |param, _| {
                B::with_f32(grad, |grad, _| match moments {
                    Some((m, v)) => B::with_f32(m, |m, _| {
                        B::with_f32(v, |v, _| {
                            adam::adam_step_into(step, param, grad, Some((m, v)), out)
                        })
                    }),
                    None => adam::adam_step_into(step, param, grad, None, out),
                })
            })
        };
        // SAFETY: `adam_step_into` writes every slot of the three.
        let (theta, (m, (v, ()))) = unsafe {
            written(len, |theta| {
                written(len, |m| written(len, |v| update((theta, m, v))))
            })
        };
        (
            B::float_tensor(theta, &shape),
            B::float_tensor(m, &shape),
            B::float_tensor(v, &shape),
        )
    }

    fn qnn_latent_update<const D: usize>(
        w: Tensor<Self, D>,
        before: Option<(Tensor<Self, D>, f64)>,
        clip: bool,
    ) -> Tensor<Self, D> {
        let shape = w.dims();
        // SAFETY: `latent_update_into` writes every slot.
        let (out, ()) = unsafe {
            written(shape.iter().product(), |out| {
                B::with_f32(w, |w, _| match before {
                    Some((old, scale)) => B::with_f32(old, |old, _| {
                        latent_update_into(w, Some((old, scale as f32)), clip, out)
                    }),
                    None => latent_update_into(w, None, clip, out),
                })
            })
        };
        B::float_tensor(out, &shape)
    }

    /// [`crate::kernels::pool::max_pool2d`]: one pass, without indices.
    fn qnn_max_pool2d(
        x: Tensor<Self, 4>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> Tensor<Self, 4> {
        if !B::holds_f32() {
            return super::pool::forward_portable(x, kernel, stride);
        }
        let [n, c, h, w] = x.dims();
        let shape = PoolShape::of([n, c, h, w], kernel, stride);
        let [oh, ow] = shape.output_size();
        // SAFETY: `max_pool2d_into` writes every slot.
        let (out, ()) = unsafe {
            written(n * c * oh * ow, |out| {
                B::with_f32(x, |x, _| pool::max_pool2d_into(x, shape, out))
            })
        };
        B::float_tensor(out, &[n, c, oh, ow])
    }

    /// [`pool::max_pool2d_forward`] on the tensor's values.
    fn qnn_max_pool2d_with_indices(
        x: Tensor<Self, 4>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> (Tensor<Self, 4>, Tensor<Self, 4, Int>) {
        let [n, c, h, w] = x.dims();
        let shape = PoolShape::of([n, c, h, w], kernel, stride);
        let [oh, ow] = shape.output_size();
        let device = x.device();
        let len = n * c * oh * ow;
        // SAFETY: `max_pool2d_forward_into` writes every slot of both.
        let (out, (indices, ())) = unsafe {
            written(len, |out| {
                written(len, |indices| {
                    B::with_f32(x, |x, _| {
                        pool::max_pool2d_forward_into(x, shape, out, indices)
                    })
                })
            })
        };
        let indices = Tensor::from_data(TensorData::new(indices, [n, c, oh, ow]), &device);
        (B::float_tensor(out, &[n, c, oh, ow]), indices)
    }

    /// [`pool::max_pool2d_backward`] on the saved indices.
    fn qnn_max_pool2d_backward(
        grad: Tensor<Self, 4>,
        indices: Tensor<Self, 4, Int>,
        input_shape: [usize; 4],
    ) -> Tensor<Self, 4> {
        let [n, c, h, w] = input_shape;
        let indices: Vec<i64> = indices
            .into_data()
            .convert::<i64>()
            .into_vec()
            .expect("i64 indices");
        // SAFETY: `max_pool2d_backward_into` writes every slot.
        let (out, ()) = unsafe {
            written(n * c * h * w, |out| {
                B::with_f32(grad, |grad, _| {
                    pool::max_pool2d_backward_into(grad, &indices, n * c, out)
                })
            })
        };
        B::float_tensor(out, &input_shape)
    }
}

/// An output buffer of `len` zeros, written by the threads for large buffers: the kernels write
/// it in parallel anyway, and zeroing (or first touching) megabytes on the calling thread alone
/// would leave the other cores idle.
fn zeros<T: Copy + Default + Send + Sync>(len: usize) -> Vec<T> {
    const PARALLEL_FROM: usize = 1 << 16;
    if len < PARALLEL_FROM {
        return vec![T::default(); len];
    }
    let mut values = Vec::with_capacity(len);
    values.par_extend(rayon::iter::repeat_n(T::default(), len));
    values
}

/// `[N, C, ..]` as the batch norm kernels' `[N, C, S]`.
fn norm_shape(dims: &[usize]) -> NormShape {
    assert!(
        dims.len() >= 2,
        "batch norm: the input needs a batch and a channel dimension, got shape {dims:?}"
    );
    NormShape {
        batch: dims[0],
        channels: dims[1],
        spatial: dims[2..].iter().product(),
    }
}

/// A tensor's values as f32 on the host.
fn host_values<B: HostFloat, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    B::with_f32(x, |values, _| values.to_vec())
}

/// `grad`'s codes as `quantization` says: [`QuantizedGrad::quantize`], or
/// [`QuantizedGrad::quantize_stochastic`] on its noise.
fn quantized_grad<B: HostFloat, const D: usize>(
    grad: Tensor<B, D>,
    quantization: GradQuantization<B>,
) -> QuantizedGrad {
    let bits = quantization.bits.get();
    match quantization.noise {
        None => B::with_f32(grad, |grad, _| QuantizedGrad::quantize(grad, bits)),
        Some(noise) => B::with_f32(grad, |grad, _| {
            B::with_f32(noise, |noise, _| {
                QuantizedGrad::quantize_stochastic(grad, noise, bits)
            })
        }),
    }
}

/// The bit row of a tensor packed by [`QnnBackend::qnn_save_signs`].
fn saved_bits(packed: &HostPacked) -> Bits<'_> {
    let shape = packed.shape();
    assert!(
        shape.len() == 2 && shape[0] == 1 && packed.encoding() == Encoding::Signs,
        "saved bits: expected one row of signs, got shape {shape:?} ({:?})",
        packed.encoding()
    );
    Bits::new(packed.words(), shape[1])
}

/// The call of a convolution of codes and its output shape, where the host kernel computes it
/// exactly: f32 values, code sums within [`code_matmul::exact_in_f32`], padding only where the
/// input grid's offset is 0 (so that the padded 0 is a code), one group, a possible geometry.
fn code_conv_call<B: HostFloat>(
    [n, c, h, w]: [usize; 4],
    [c_out, c_in, kh, kw]: [usize; 4],
    x_grid: quant::CodeGrid,
    weight_grid: quant::CodeGrid,
    options: &burn::tensor::ops::ConvOptions<2>,
) -> Option<(conv::ConvCall, [usize; 4])> {
    let shape = conv::ConvCall {
        batch: n,
        in_channels: c,
        height: h,
        width: w,
        out_channels: c_out,
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    };
    let padded = options.padding != [0, 0];
    let exact = code_matmul::exact_in_f32(x_grid, weight_grid, c_in * kh * kw)
        && (!padded || x_grid.offset == 0.0);
    let on_codes = B::holds_f32() && exact && options.groups == 1 && c == c_in;
    let [h_out, w_out] = shape.output_size().ok()?;
    on_codes.then_some((shape, [n, c_out, h_out, w_out]))
}

/// [`code_matmul::code_matmul`] of `a` and `b` with the output's shape `[m, n]`, where the
/// backend holds f32 and the code sums are exact ([`code_matmul::exact_in_f32`]); the operands
/// back otherwise.
///
/// # Panics
/// If the inner dimensions differ, as `matmul` does.
#[allow(clippy::type_complexity)]
fn exact_code_product<B: HostFloat>(
    a: Tensor<B, 2>,
    a_grid: quant::CodeGrid,
    b: Tensor<B, 2>,
    b_grid: quant::CodeGrid,
) -> Result<(code_matmul::CodeProduct, [usize; 2]), (Tensor<B, 2>, Tensor<B, 2>)> {
    let ([m, k], [k_b, n]) = (a.dims(), b.dims());
    assert_eq!(
        k, k_b,
        "qnn_code_matmul: lhs [{m}, {k}] and rhs [{k_b}, {n}] differ in the inner dimension"
    );
    if !B::holds_f32() || !code_matmul::exact_in_f32(a_grid, b_grid, k) {
        return Err((a, b));
    }
    let product = B::with_f32(a, |a, _| {
        B::with_f32(b, |b, _| {
            code_matmul::code_matmul(a, a_grid, b, b_grid, [m, k, n])
        })
    });
    Ok((product, [m, n]))
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::{backend::NdArray, tensor::TensorData};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::quant::Bits;

    /// The host's gradient quantization gives, bit for bit, the values of Burn's tensor
    /// operations ([`GradQuantization::apply_portable`]), rounding to nearest and
    /// stochastically with the same noise, for every width from 2 to 8 bits, with ties, zeros
    /// and an all-zero gradient.
    #[test]
    fn quantized_gradient_equals_the_tensor_operations() {
        let mut rng = StdRng::seed_from_u64(8);
        let device = Default::default();
        for case in 0..40 {
            let len = rng.random_range(1..3000);
            let bits = Bits::new(rng.random_range(2..=8)).unwrap();
            let scale = [1e-30, 1e-3, 1.0, 1e6][case % 4];
            let mut values: Vec<f32> = (0..len)
                .map(|_| scale * rng.random_range(-1.0f32..1.0))
                .collect();
            values[0] = 0.0;
            if case == 7 {
                values.iter_mut().for_each(|v| *v = 0.0);
            }
            if len > 2 {
                // A tie: half a step from the maximum's grid.
                values[1] = scale;
                values[2] = scale * 0.5 / ((1 << (bits.get() - 1)) - 1) as f32;
            }
            let grad = Tensor::<NdArray, 1>::from_data(TensorData::new(values, [len]), &device);
            let noise: Vec<f32> = (0..len).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let noise = Tensor::<NdArray, 1>::from_data(TensorData::new(noise, [len]), &device);
            for noise in [None, Some(noise)] {
                let quantization = GradQuantization { bits, noise };
                let bits_of = |t: Tensor<NdArray, 1>| {
                    let v = t.into_data().to_vec::<f32>().unwrap();
                    v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
                };
                let stochastic = quantization.noise.is_some();
                assert_eq!(
                    bits_of(NdArray::qnn_quantized_gradient(
                        grad.clone(),
                        quantization.clone()
                    )),
                    bits_of(quantization.apply_portable(grad.clone())),
                    "case {case}: {len} values, {} bits, stochastic {stochastic}",
                    bits.get()
                );
            }
        }
    }
}
