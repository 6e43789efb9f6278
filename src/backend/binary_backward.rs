//! Autodiff nodes of the binary products that keep only bits for the backward pass.
//!
//! The forward of `sign(a)·sign(b)` and `sign(x) ⊛ sign(w)` runs on the packed kernels of the
//! inner backend. The node saves, for each operand, its signs and its straight-through pass band
//! (`|v| ≤ 1`) as packed bits ([`QnnBackend::qnn_save_signs`]): 2 bits a value, where the float
//! simulation keeps the ±1 operands in f32 and a boolean mask per sign. The backward hands the
//! bits to the backend's gradient ops ([`QnnBackend::qnn_binary_conv2d_input_grad`] and its
//! siblings): on `NdArray` kernels that read the signs from the bits, elsewhere the portable
//! bodies below, which unpack them and run the float simulation's own Burn ops.

use burn::tensor::{Shape, Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor, s};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, binary, broadcast_shape},
};

use super::QnnBackend;
use crate::{
    ops::{ConvGeometry, Encoding, PaddingMode},
    quant::{Bits, GradRounding, Quantizer, quantizer},
};

/// The signs and the pass band of a tensor, packed: 2 bits a value.
#[derive(Debug, Clone)]
pub(crate) struct SavedBits<B: QnnBackend> {
    signs: B::Packed,
    blocked: B::Packed,
    shape: Shape,
}

impl<B: QnnBackend> SavedBits<B> {
    /// Packs the signs of `x` and where `x` lies outside the band `|x| ≤ 1`.
    pub(crate) fn save<const D: usize>(x: Tensor<B, D>) -> Self {
        let shape = x.shape();
        let (signs, blocked) = B::qnn_save_signs(x);
        Self {
            signs,
            blocked,
            shape,
        }
    }

    /// The packed bits, borrowed.
    fn bits(&self) -> OperandBits<'_, B> {
        OperandBits {
            signs: &self.signs,
            blocked: &self.blocked,
        }
    }
}

/// What the backward of a binary product keeps of one operand, both packed by
/// [`QnnBackend::qnn_save_signs`]: its signs, and where the straight-through estimator cuts its
/// gradient (`|v| > 1`).
#[derive(Debug)]
pub struct OperandBits<'a, B: QnnBackend> {
    /// The operand's signs.
    pub signs: &'a B::Packed,
    /// Where the operand lies outside the pass band `|v| ≤ 1`.
    pub blocked: &'a B::Packed,
}

/// How a binary product's backward quantizes its output gradient: to `bits` bits on the grid of
/// [`crate::quant::quantize_gradient`], rounded to the nearest level where `noise` is `None`,
/// stochastically with these draws (uniform in `[0, 1)`, one per gradient value in row-major
/// order) as [`crate::quant::quantize_gradient_stochastic`] where it is set.
#[derive(Debug, Clone)]
pub struct GradQuantization<B: Backend> {
    /// The gradient's bits.
    pub bits: Bits,
    /// The stochastic rounding's noise, or `None` for rounding to nearest.
    pub noise: Option<Tensor<B, 1>>,
}

impl<B: QnnBackend> GradQuantization<B> {
    /// The quantization of a gradient of `count` values with `rounding`, drawing the noise of
    /// stochastic rounding from the backend's seeded generator
    /// ([`quantizer::rounding_noise`]).
    pub fn new(bits: Bits, rounding: GradRounding, count: usize, device: &B::Device) -> Self {
        let noise = match rounding {
            GradRounding::Nearest => None,
            GradRounding::Stochastic => Some(quantizer::rounding_noise(count, device)),
        };
        Self { bits, noise }
    }

    /// `grad` quantized in Burn tensor ops ([`quantizer::gradient_value`] or
    /// [`quantizer::gradient_value_stochastic`]; the whole tensor shares one scale).
    pub(crate) fn apply_portable<const D: usize>(self, grad: Tensor<B, D>) -> Tensor<B, D> {
        let shape = grad.shape();
        let flat = grad.reshape([shape.num_elements()]);
        let quantized = match self.noise {
            None => quantizer::gradient_value(flat, self.bits),
            Some(noise) => quantizer::gradient_value_stochastic(flat, self.bits, noise),
        };
        quantized.reshape(shape)
    }
}

/// The ±1 values of bits packed by [`QnnBackend::qnn_save_signs`], as a tensor of `shape`.
fn unpack_signs<B: QnnBackend, const D: usize>(signs: &B::Packed, shape: &Shape) -> Tensor<B, D> {
    B::qnn_unpack::<2>(signs).reshape(shape.clone())
}

/// `grad` with the straight-through estimator applied: zero where `blocked` (packed by
/// [`QnnBackend::qnn_save_signs`]) marks `|v| > 1`.
pub(crate) fn pass<B: QnnBackend, const D: usize>(
    grad: Tensor<B, D>,
    blocked: &B::Packed,
) -> Tensor<B, D> {
    let shape = grad.shape();
    let blocked = B::qnn_unpack::<2>(blocked).reshape(shape).lower_elem(0.0);
    grad.mask_fill(blocked, 0.0)
}

/// [`QnnBackend::qnn_save_signs`] from Burn tensor ops.
pub(crate) fn save_signs_portable<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
) -> (B::Packed, B::Packed) {
    let flat = x.clone().reshape([1, x.shape().num_elements()]);
    // `blocked` packs as −1 (bit 1), the pass band as −0.0 (bit 0).
    let blocked = Quantizer::Sign.blocked(flat.clone()).float().neg();
    (
        B::qnn_pack(flat, Encoding::Signs),
        B::qnn_pack(blocked, Encoding::Signs),
    )
}

/// [`QnnBackend::qnn_binary_conv2d_input_grad`] by Burn's float convolution backward on the
/// unpacked ±1 tensors (the float simulation's own computation).
pub(crate) fn conv2d_input_grad_portable<B: QnnBackend>(
    grad_out: Tensor<B, 4>,
    weight_signs: &B::Packed,
    input_blocked: &B::Packed,
    input_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    let weight = unpack_signs::<B, 4>(weight_signs, &Shape::new([c_out, c_in, kh, kw]));
    let [n, _, h, w] = input_shape;
    let [ph, pw] = geometry.padding;
    let padded = match geometry.padding_mode {
        PaddingMode::Zero => [n, c_in, h, w],
        PaddingMode::PlusOne => [n, c_in, h + 2 * ph, w + 2 * pw],
    };
    // Only the input's shape matters to the input gradient: zeros stand in for its values.
    let (input, options) =
        geometry.conv_input(Tensor::<B, 4>::zeros([n, c_in, h, w], &grad_out.device()));
    debug_assert_eq!(input.dims(), padded);
    let grad = tensor::<B, 4>(B::conv2d_x_backward(
        primitive(input),
        primitive(weight),
        primitive(grad_out),
        options,
    ));
    let grad = match geometry.padding_mode {
        PaddingMode::Zero => grad,
        PaddingMode::PlusOne => grad.slice(s![.., .., ph..ph + h, pw..pw + w]),
    };
    pass(grad, input_blocked)
}

/// [`QnnBackend::qnn_binary_conv2d_weight_grad`] by Burn's float convolution backward on the
/// unpacked ±1 tensors (the float simulation's own computation).
pub(crate) fn conv2d_weight_grad_portable<B: QnnBackend>(
    grad_out: Tensor<B, 4>,
    input_signs: &B::Packed,
    weight_blocked: &B::Packed,
    input_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    let weight_shape = Shape::new([c_out, c_in, kh, kw]);
    let (input, options) =
        geometry.conv_input(unpack_signs::<B, 4>(input_signs, &Shape::new(input_shape)));
    let weight = Tensor::<B, 4>::zeros(weight_shape, &grad_out.device());
    let grad = tensor::<B, 4>(B::conv2d_weight_backward(
        primitive(input),
        primitive(weight),
        primitive(grad_out),
        options,
    ));
    pass(grad, weight_blocked)
}

/// [`QnnBackend::qnn_binary_matmul_lhs_grad`] by Burn's float matmul on the unpacked ±1 `b`,
/// summed over the dimensions `a` was broadcast along.
pub(crate) fn matmul_lhs_grad_portable<B: QnnBackend, const D: usize>(
    grad: Tensor<B, D>,
    b_signs: &B::Packed,
    a_blocked: &B::Packed,
    a_shape: [usize; D],
    b_shape: [usize; D],
) -> Tensor<B, D> {
    let b = unpack_signs::<B, D>(b_signs, &Shape::new(b_shape));
    let product = grad.matmul(b.transpose());
    let product = tensor::<B, D>(broadcast_shape::<B>(
        primitive(product),
        &Shape::new(a_shape),
    ));
    pass(product, a_blocked)
}

/// [`QnnBackend::qnn_binary_matmul_rhs_grad`] by Burn's float matmul on the unpacked ±1 `a`,
/// summed over the dimensions `b` was broadcast along.
pub(crate) fn matmul_rhs_grad_portable<B: QnnBackend, const D: usize>(
    grad: Tensor<B, D>,
    a_signs: &B::Packed,
    b_blocked: &B::Packed,
    a_shape: [usize; D],
    b_shape: [usize; D],
) -> Tensor<B, D> {
    let a = unpack_signs::<B, D>(a_signs, &Shape::new(a_shape));
    let product = a.transpose().matmul(grad);
    let product = tensor::<B, D>(broadcast_shape::<B>(
        primitive(product),
        &Shape::new(b_shape),
    ));
    pass(product, b_blocked)
}

/// [`QnnBackend::qnn_binary_matmul_grads_quantized`] by quantizing in floats
/// ([`GradQuantization::apply_portable`]) and running the backend's float gradient ops.
pub(crate) fn matmul_grads_quantized_portable<B: QnnBackend, const D: usize>(
    grad: Tensor<B, D>,
    a: OperandBits<'_, B>,
    b: OperandBits<'_, B>,
    [a_shape, b_shape]: [[usize; D]; 2],
    quantization: GradQuantization<B>,
    [a_wanted, b_wanted]: [bool; 2],
) -> [Option<Tensor<B, D>>; 2] {
    let grad = quantization.apply_portable(grad);
    [
        a_wanted.then(|| {
            B::qnn_binary_matmul_lhs_grad(grad.clone(), b.signs, a.blocked, a_shape, b_shape)
        }),
        b_wanted.then(|| {
            B::qnn_binary_matmul_rhs_grad(grad.clone(), a.signs, b.blocked, a_shape, b_shape)
        }),
    ]
}

/// The backward of a binary product whose output gradient is quantized once, as `bits` and
/// `rounding` say, for the gradients of both parents (`ops`, its state taken out): `both` (a
/// backend's `*_grads_quantized` op) gets the node's gradient, its quantization (with the noise
/// of stochastic rounding drawn) and which parents are tracked, and what it returns is
/// registered, where Burn's `binary` calls one function per parent.
fn backward_quantized<B: QnnBackend, const D: usize>(
    ops: Ops<(), 2>,
    grads: &mut Gradients,
    (bits, rounding): (Bits, GradRounding),
    both: impl FnOnce(Tensor<B, D>, GradQuantization<B>, [bool; 2]) -> [Option<Tensor<B, D>>; 2],
) {
    let grad = tensor::<B, D>(grads.consume::<B>(&ops.node));
    let quantization =
        GradQuantization::new(bits, rounding, grad.shape().num_elements(), &grad.device());
    let wanted = ops.parents.each_ref().map(Option::is_some);
    let computed = both(grad, quantization, wanted);
    for (parent, grad) in ops.parents.into_iter().zip(computed) {
        if let (Some(parent), Some(grad)) = (parent, grad) {
            grads.register::<B>(parent.id, primitive(grad));
        }
    }
}

/// A binary product's output-gradient quantization: `bits` with `rounding`, or none.
pub(crate) type GradQuant = Option<(Bits, GradRounding)>;

/// `sign(a)·sign(b)` with packed operands saved; the backward quantizes the output gradient
/// once as `grad_quant` says, where set.
#[derive(Debug)]
struct PackedXnorMatmul<const D: usize> {
    grad_quant: GradQuant,
}

impl<B: QnnBackend, const D: usize> Backward<B, 2> for PackedXnorMatmul<D> {
    type State = (SavedBits<B>, SavedBits<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Ops {
            parents,
            node,
            state: (a, b),
        } = ops;
        let a_shape: [usize; D] = a.shape.dims();
        let b_shape: [usize; D] = b.shape.dims();
        let Some(quant) = self.grad_quant else {
            return binary::<B, _, _>(
                parents,
                node,
                grads,
                |grad| {
                    let grad = tensor::<B, D>(grad);
                    primitive(B::qnn_binary_matmul_lhs_grad(
                        grad, &b.signs, &a.blocked, a_shape, b_shape,
                    ))
                },
                |grad| {
                    let grad = tensor::<B, D>(grad);
                    primitive(B::qnn_binary_matmul_rhs_grad(
                        grad, &a.signs, &b.blocked, a_shape, b_shape,
                    ))
                },
            );
        };
        let ops = Ops {
            parents,
            node,
            state: (),
        };
        backward_quantized::<B, D>(ops, grads, quant, |grad, quantization, wanted| {
            B::qnn_binary_matmul_grads_quantized(
                grad,
                a.bits(),
                b.bits(),
                a_shape,
                b_shape,
                quantization,
                wanted,
            )
        });
    }
}

/// `sign(a)·sign(b)` on the inner backend's packed kernel, with a backward that keeps bits only
/// (and quantizes the output gradient as `grad_quant` says, where set).
pub(crate) fn xnor_matmul<B: QnnBackend, C: CheckpointStrategy, const D: usize>(
    a: Tensor<Autodiff<B, C>, D>,
    b: Tensor<Autodiff<B, C>, D>,
    grad_quant: GradQuant,
) -> Tensor<Autodiff<B, C>, D> {
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let (a_inner, b_inner) = (tensor::<B, D>(a.primitive), tensor::<B, D>(b.primitive));
    let output = PackedXnorMatmul::<D> { grad_quant }
        .prepare::<C>([a.node, b.node])
        .compute_bound()
        .stateful();
    let forward = |a: Tensor<B, D>, b: Tensor<B, D>| primitive(B::qnn_xnor_matmul(a, b));
    let output = match output {
        OpsKind::Tracked(prep) => {
            let state = (
                SavedBits::save(a_inner.clone()),
                SavedBits::save(b_inner.clone()),
            );
            prep.finish(state, forward(a_inner, b_inner))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(a_inner, b_inner)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// `sign(x) ⊛ sign(w)` with packed operands saved; the backward quantizes the output gradient
/// once as `grad_quant` says, where set.
#[derive(Debug)]
struct PackedBinaryConv {
    grad_quant: GradQuant,
}

impl<B: QnnBackend> Backward<B, 2> for PackedBinaryConv {
    type State = (SavedBits<B>, SavedBits<B>, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Ops {
            parents,
            node,
            state: (x, w, geometry),
        } = ops;
        let input_shape: [usize; 4] = x.shape.dims();
        let Some(quant) = self.grad_quant else {
            return binary::<B, _, _>(
                parents,
                node,
                grads,
                |grad| {
                    primitive(B::qnn_binary_conv2d_input_grad(
                        tensor::<B, 4>(grad),
                        &w.signs,
                        &x.blocked,
                        input_shape,
                        &geometry,
                    ))
                },
                |grad| {
                    primitive(B::qnn_binary_conv2d_weight_grad(
                        tensor::<B, 4>(grad),
                        &x.signs,
                        &w.blocked,
                        input_shape,
                        &geometry,
                    ))
                },
            );
        };
        let ops = Ops {
            parents,
            node,
            state: (),
        };
        backward_quantized::<B, 4>(ops, grads, quant, |grad, quantization, wanted| {
            B::qnn_binary_conv2d_grads_quantized(
                grad,
                x.bits(),
                w.bits(),
                input_shape,
                &geometry,
                quantization,
                wanted,
            )
        });
    }
}

/// `sign(x) ⊛ sign(w)` on the inner backend's packed kernel, with a backward that keeps bits
/// only (and quantizes the output gradient as `grad_quant` says, where set).
pub(crate) fn binary_conv2d<B: QnnBackend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    weight: Tensor<Autodiff<B, C>, 4>,
    geometry: &ConvGeometry,
    grad_quant: GradQuant,
) -> Tensor<Autodiff<B, C>, 4> {
    let (x, w) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let (x_inner, w_inner) = (tensor::<B, 4>(x.primitive), tensor::<B, 4>(w.primitive));
    let output = PackedBinaryConv { grad_quant }
        .prepare::<C>([x.node, w.node])
        .compute_bound()
        .stateful();
    let forward =
        |x: Tensor<B, 4>, w: Tensor<B, 4>| primitive(B::qnn_binary_conv2d(x, w, geometry));
    let output = match output {
        OpsKind::Tracked(prep) => {
            let state = (
                SavedBits::save(x_inner.clone()),
                SavedBits::save(w_inner.clone()),
                *geometry,
            );
            prep.finish(state, forward(x_inner, w_inner))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x_inner, w_inner)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

pub(super) fn tensor<B: QnnBackend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

pub(super) fn primitive<B: QnnBackend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}
