//! [`QnnBackend`] on `Autodiff<B, C>`: each quantizer is one autodiff node with its own backward.
//!
//! The forward runs on the inner backend `B`; the node keeps only what its backward needs: where
//! the inputs lie outside the straight-through pass band as packed bits (1 bit a value), or
//! nothing at all for the gradient quantizer.

use burn::tensor::{Device, Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, unary},
};

use super::{
    BatchNormOutput, GradQuantization, QnnBackend, batch_norm, binary_backward, bit_plane,
    channel_affine, code_matmul, pool,
};
use crate::{
    ops::{ConvGeometry, Encoding, HostPacked},
    quant::{Bits, CodeGrid, GradRounding, Quantizer},
};

type AutodiffPrimitive<B> = FloatTensor<Autodiff<B>>;

impl<B: QnnBackend, C: CheckpointStrategy> QnnBackend for Autodiff<B, C> {
    fn qnn_quantize<const D: usize>(x: Tensor<Self, D>, quantizer: Quantizer) -> Tensor<Self, D> {
        let x = x.into_primitive().tensor();
        let inner = inner_tensor::<B, D>(x.primitive.clone());
        let value = B::qnn_quantize(inner.clone(), quantizer);
        straight_through::<B, C, D>(x, value, || B::qnn_quantize_blocked(inner, quantizer))
    }

    fn qnn_quantize_blocked<const D: usize>(x: Tensor<Self, D>, quantizer: Quantizer) -> B::Packed {
        B::qnn_quantize_blocked(x.inner(), quantizer)
    }

    fn qnn_cut_gradient<const D: usize>(
        grad: Tensor<Self, D>,
        blocked: &B::Packed,
    ) -> Tensor<Self, D> {
        Tensor::from_inner(B::qnn_cut_gradient(grad.inner(), blocked))
    }

    fn qnn_stochastic_sign<const D: usize>(
        x: Tensor<Self, D>,
        noise: Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        let x = x.into_primitive().tensor();
        let noise = inner_tensor::<B, D>(noise.into_primitive().tensor().primitive);
        let inner = inner_tensor::<B, D>(x.primitive.clone());
        let value = B::qnn_stochastic_sign(inner.clone(), noise);
        straight_through::<B, C, D>(x, value, || B::qnn_quantize_blocked(inner, Quantizer::Sign))
    }

    fn qnn_straight_through<const D: usize>(
        x: Tensor<Self, D>,
        value: Tensor<Self, D>,
        derivative: impl FnOnce() -> Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        let x = x.into_primitive().tensor();
        let value = value.inner().into_primitive().tensor();
        let output = match ScaledGradient
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish(derivative().inner().into_primitive().tensor(), value)
            }
            OpsKind::UnTracked(prep) => prep.finish(value),
        };
        outer_tensor(output)
    }

    fn qnn_code_matmul(
        a: Tensor<Self, 2>,
        a_grid: CodeGrid,
        b: Tensor<Self, 2>,
        b_grid: CodeGrid,
    ) -> Tensor<Self, 2> {
        code_matmul::code_matmul(a, a_grid, b, b_grid)
    }

    fn qnn_code_conv2d(
        x: Tensor<Self, 4>,
        x_grid: CodeGrid,
        weight: Tensor<Self, 4>,
        weight_grid: CodeGrid,
        options: burn::tensor::ops::ConvOptions<2>,
    ) -> Tensor<Self, 4> {
        code_matmul::code_conv2d(x, x_grid, weight, weight_grid, options)
    }

    /// The inner backend's product and codes, untracked: the tracked product keeps these codes
    /// in its own node ([`QnnBackend::qnn_code_matmul`]).
    fn qnn_code_matmul_saving(
        a: Tensor<Self, 2>,
        a_grid: CodeGrid,
        b: Tensor<Self, 2>,
        b_grid: CodeGrid,
    ) -> (Tensor<Self, 2>, B::Packed, B::Packed) {
        let (out, a_codes, b_codes) =
            B::qnn_code_matmul_saving(a.inner(), a_grid, b.inner(), b_grid);
        (Tensor::from_inner(out), a_codes, b_codes)
    }

    fn qnn_code_grad_times_rows(
        grad: Tensor<Self, 2>,
        b_rows: &B::Packed,
        grid: CodeGrid,
    ) -> Tensor<Self, 2> {
        Tensor::from_inner(B::qnn_code_grad_times_rows(grad.inner(), b_rows, grid))
    }

    fn qnn_code_rows_transposed_times_grad(
        a_rows: &B::Packed,
        grid: CodeGrid,
        grad: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        Tensor::from_inner(B::qnn_code_rows_transposed_times_grad(
            a_rows,
            grid,
            grad.inner(),
        ))
    }

    fn qnn_pack_codes(x: Tensor<Self, 2>, grid: CodeGrid) -> B::Packed {
        B::qnn_pack_codes(x.inner(), grid)
    }

    fn qnn_unpack_codes(packed: &B::Packed, grid: CodeGrid) -> Tensor<Self, 2> {
        Tensor::from_inner(B::qnn_unpack_codes(packed, grid))
    }

    type Packed = B::Packed;

    fn qnn_pack<const D: usize>(x: Tensor<Self, D>, encoding: Encoding) -> B::Packed {
        B::qnn_pack(x.inner(), encoding)
    }

    fn qnn_packed_shape(packed: &B::Packed) -> Vec<usize> {
        B::qnn_packed_shape(packed)
    }

    fn qnn_packed_encoding(packed: &B::Packed) -> Encoding {
        B::qnn_packed_encoding(packed)
    }

    fn qnn_unpack<const D: usize>(packed: &B::Packed) -> Tensor<Self, D> {
        Tensor::from_inner(B::qnn_unpack(packed))
    }

    fn qnn_packed_to_bytes(packed: &B::Packed) -> Vec<u8> {
        B::qnn_packed_to_bytes(packed)
    }

    fn qnn_packed_from_host(host: HostPacked, device: &Device<Self>) -> B::Packed {
        B::qnn_packed_from_host(host, device)
    }

    fn qnn_packed_matmul<const D: usize>(a: &B::Packed, b_t: &B::Packed) -> Tensor<Self, D> {
        Tensor::from_inner(B::qnn_packed_matmul(a, b_t))
    }

    /// The inner backend's packed kernel; when an operand needs a gradient, the node keeps
    /// only packed bits and its backward is the straight-through estimator of `sign`.
    fn qnn_xnor_matmul<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>) -> Tensor<Self, D> {
        if is_tracked(&a) || is_tracked(&b) {
            binary_backward::xnor_matmul(a, b, None)
        } else {
            Tensor::from_inner(B::qnn_xnor_matmul(a.inner(), b.inner()))
        }
    }

    /// As [`QnnBackend::qnn_xnor_matmul`], with the output gradient quantized to `grad_bits`
    /// bits in the backward.
    fn qnn_xnor_matmul_quantized_grad<const D: usize>(
        a: Tensor<Self, D>,
        b: Tensor<Self, D>,
        grad_bits: Bits,
        rounding: GradRounding,
    ) -> Tensor<Self, D> {
        if is_tracked(&a) || is_tracked(&b) {
            binary_backward::xnor_matmul(a, b, Some((grad_bits, rounding)))
        } else {
            Tensor::from_inner(B::qnn_xnor_matmul(a.inner(), b.inner()))
        }
    }

    fn qnn_pack_conv_weights(weight: Tensor<Self, 4>, geometry: &ConvGeometry) -> B::Packed {
        B::qnn_pack_conv_weights(weight.inner(), geometry)
    }

    /// Packed weights carry no gradient: the inner backend's kernel.
    fn qnn_binary_conv2d_packed(
        x: Tensor<Self, 4>,
        weight: &B::Packed,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        Tensor::from_inner(B::qnn_binary_conv2d_packed(x.inner(), weight, geometry))
    }

    /// As [`QnnBackend::qnn_xnor_matmul`]: packed forward, bits-only backward when tracked.
    fn qnn_binary_conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        if is_tracked(&x) || is_tracked(&weight) {
            binary_backward::binary_conv2d(x, weight, geometry, None)
        } else {
            Tensor::from_inner(B::qnn_binary_conv2d(x.inner(), weight.inner(), geometry))
        }
    }

    /// As [`QnnBackend::qnn_binary_conv2d`], with the output gradient quantized to `grad_bits`
    /// bits in the backward.
    fn qnn_binary_conv2d_quantized_grad(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        geometry: &ConvGeometry,
        grad_bits: Bits,
        rounding: GradRounding,
    ) -> Tensor<Self, 4> {
        if is_tracked(&x) || is_tracked(&weight) {
            binary_backward::binary_conv2d(x, weight, geometry, Some((grad_bits, rounding)))
        } else {
            Tensor::from_inner(B::qnn_binary_conv2d(x.inner(), weight.inner(), geometry))
        }
    }

    /// An update after the optimizer's step, not a differentiable op: the inner backend's
    /// kernel on the values, untracked.
    fn qnn_latent_update<const D: usize>(
        w: Tensor<Self, D>,
        before: Option<(Tensor<Self, D>, f64)>,
        clip: bool,
    ) -> Tensor<Self, D> {
        let before = before.map(|(old, scale)| (old.inner(), scale));
        Tensor::from_inner(B::qnn_latent_update(w.inner(), before, clip))
    }

    fn qnn_batch_norm_train<const D: usize>(
        x: Tensor<Self, D>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
    ) -> BatchNormOutput<Self, D> {
        batch_norm::train_autodiff(x, gamma, beta, epsilon)
    }

    /// One node that keeps the input and the weights' pass band.
    fn qnn_bit_plane_conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        bit_plane::forward_autodiff(x, weight, geometry)
    }

    /// One node that keeps only the indices of the maxima (where `x` is tracked).
    fn qnn_max_pool2d(
        x: Tensor<Self, 4>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> Tensor<Self, 4> {
        pool::forward_autodiff(x, kernel, stride)
    }

    /// The inner backend's noise, untracked.
    fn qnn_uniform_noise(count: usize, device: &Device<Self>) -> Tensor<Self, 1> {
        Tensor::from_inner(B::qnn_uniform_noise(count, device))
    }

    fn qnn_quantize_gradient<const D: usize>(x: Tensor<Self, D>, bits: Bits) -> Tensor<Self, D> {
        quantize_gradient_node(x, bits, GradRounding::Nearest)
    }

    fn qnn_quantize_gradient_stochastic<const D: usize>(
        x: Tensor<Self, D>,
        bits: Bits,
    ) -> Tensor<Self, D> {
        quantize_gradient_node(x, bits, GradRounding::Stochastic)
    }

    fn qnn_channel_affine<const D: usize>(
        y: Tensor<Self, D>,
        scale: Option<Tensor<Self, 1>>,
        bias: Option<Tensor<Self, 1>>,
    ) -> Tensor<Self, D> {
        channel_affine::affine_autodiff(y, scale, bias)
    }
}

/// The identity whose backward quantizes the gradient to `bits` bits with `rounding`
/// ([`QnnBackend::qnn_quantized_gradient`] of the inner backend, the noise drawn from its
/// generator).
#[derive(Debug)]
struct QuantizeGradient {
    bits: Bits,
    rounding: GradRounding,
}

impl<B: QnnBackend> Backward<B, 1> for QuantizeGradient {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            let grad = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(grad));
            let shape = grad.shape();
            let count = shape.num_elements();
            let flat = grad.reshape([count]);
            let quantization =
                GradQuantization::new(self.bits, self.rounding, count, &flat.device());
            let quantized = B::qnn_quantized_gradient(flat, quantization);
            B::float_reshape(quantized.into_primitive().tensor(), shape)
        });
    }
}

/// [`QuantizeGradient`] on `x`.
fn quantize_gradient_node<B: QnnBackend, C: CheckpointStrategy, const D: usize>(
    x: Tensor<Autodiff<B, C>, D>,
    bits: Bits,
    rounding: GradRounding,
) -> Tensor<Autodiff<B, C>, D> {
    let x = x.into_primitive().tensor();
    let output = QuantizeGradient { bits, rounding }
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateless(x.primitive);
    outer_tensor(output)
}

/// The gradient of a straight-through quantizer: the incoming gradient, zeroed where the
/// packed bits of [`QnnBackend::qnn_quantize_blocked`] are set.
#[derive(Debug)]
struct StraightThrough<const D: usize>;

impl<B: QnnBackend, const D: usize> Backward<B, 1> for StraightThrough<D> {
    type State = B::Packed;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let blocked = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::qnn_cut_gradient(inner_tensor::<B, D>(grad), &blocked)
                .into_primitive()
                .tensor()
        });
    }
}

/// Registers `value` as the output of a straight-through node over `x`; `blocked` is computed
/// only when a gradient is needed.
fn straight_through<B: QnnBackend, C: CheckpointStrategy, const D: usize>(
    x: AutodiffPrimitive<B>,
    value: Tensor<B, D>,
    blocked: impl FnOnce() -> B::Packed,
) -> Tensor<Autodiff<B, C>, D> {
    let value = value.into_primitive().tensor();
    let output = match StraightThrough::<D>
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(blocked(), value),
        OpsKind::UnTracked(prep) => prep.finish(value),
    };
    outer_tensor(output)
}

/// The gradient of [`QnnBackend::qnn_straight_through`]: the incoming gradient times the
/// derivative the node keeps.
#[derive(Debug)]
struct ScaledGradient;

impl<B: Backend> Backward<B, 1> for ScaledGradient {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let derivative = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::float_mul(grad, derivative)
        });
    }
}

/// Whether the tensor takes part in a gradient computation.
fn is_tracked<B: Backend, C: CheckpointStrategy, const D: usize>(
    x: &Tensor<Autodiff<B, C>, D>,
) -> bool {
    !x.clone()
        .into_primitive()
        .tensor()
        .node
        .requirement
        .is_none()
}

fn inner_tensor<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn outer_tensor<B: Backend, C: CheckpointStrategy, const D: usize>(
    primitive: AutodiffPrimitive<B>,
) -> Tensor<Autodiff<B, C>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}
