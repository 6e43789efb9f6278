//! Autodiff nodes of the binary products that keep only bits for the backward pass.
//!
//! The forward of `sign(a)·sign(b)` and `sign(x) ⊛ sign(w)` runs on the packed kernels of the
//! inner backend. The node saves, for each operand, its signs and its straight-through pass band
//! (`|v| ≤ 1`) as packed bits: 2 bits a value, where the float simulation keeps the ±1 operands
//! in f32 and a boolean mask per sign. The backward unpacks them and runs the same Burn ops as
//! the float simulation's backward, so the gradients are equal, bit for bit.

use burn::tensor::{Bool, Shape, Tensor, TensorPrimitive, ops::FloatTensor, s};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, binary, broadcast_shape},
};

use super::QnnBackend;
use crate::{
    ops::{ConvGeometry, Encoding, PaddingMode},
    quant::Quantizer,
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
        let flat = x.reshape([1, shape.num_elements()]);
        // `blocked` packs as −1 (bit 1), the pass band as −0.0 (bit 0).
        let blocked = Quantizer::Sign.blocked(flat.clone()).float().neg();
        Self {
            signs: B::qnn_pack(flat, Encoding::Signs),
            blocked: B::qnn_pack(blocked, Encoding::Signs),
            shape,
        }
    }

    /// The ±1 values.
    fn signs<const D: usize>(&self) -> Tensor<B, D> {
        B::qnn_unpack::<2>(&self.signs).reshape(self.shape.clone())
    }

    /// Where the straight-through gradient is cut.
    fn blocked<const D: usize>(&self) -> Tensor<B, D, Bool> {
        B::qnn_unpack::<2>(&self.blocked)
            .reshape(self.shape.clone())
            .lower_elem(0.0)
    }

    /// `grad` with the straight-through estimator applied: zero outside the pass band.
    fn pass<const D: usize>(&self, grad: Tensor<B, D>) -> FloatTensor<B> {
        grad.mask_fill(self.blocked::<D>(), 0.0)
            .into_primitive()
            .tensor()
    }
}

/// `sign(a)·sign(b)` with packed operands saved.
#[derive(Debug)]
struct PackedXnorMatmul<const D: usize>;

impl<B: QnnBackend, const D: usize> Backward<B, 2> for PackedXnorMatmul<D> {
    type State = (SavedBits<B>, SavedBits<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let product = tensor::<B, D>(grad).matmul(b.signs::<D>().transpose());
                a.pass(tensor::<B, D>(broadcast_shape::<B>(
                    primitive(product),
                    &a.shape,
                )))
            },
            |grad| {
                let product = a.signs::<D>().transpose().matmul(tensor::<B, D>(grad));
                b.pass(tensor::<B, D>(broadcast_shape::<B>(
                    primitive(product),
                    &b.shape,
                )))
            },
        );
    }
}

/// `sign(a)·sign(b)` on the inner backend's packed kernel, with a backward that keeps bits only.
pub(crate) fn xnor_matmul<B: QnnBackend, C: CheckpointStrategy, const D: usize>(
    a: Tensor<Autodiff<B, C>, D>,
    b: Tensor<Autodiff<B, C>, D>,
) -> Tensor<Autodiff<B, C>, D> {
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let (a_inner, b_inner) = (tensor::<B, D>(a.primitive), tensor::<B, D>(b.primitive));
    let output = PackedXnorMatmul::<D>
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

/// `sign(x) ⊛ sign(w)` with packed operands saved.
#[derive(Debug)]
struct PackedBinaryConv;

impl<B: QnnBackend> Backward<B, 2> for PackedBinaryConv {
    type State = (SavedBits<B>, SavedBits<B>, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, geometry) = ops.state;
        // The float simulation's input to `conv2d`, and the options it ran with.
        let (input, options) = geometry.conv_input(x.signs::<4>());
        let weight = primitive(w.signs::<4>());
        let input = primitive(input);
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let grad =
                    B::conv2d_x_backward(input.clone(), weight.clone(), grad, options.clone());
                let grad = tensor::<B, 4>(grad);
                let grad = match geometry.padding_mode {
                    PaddingMode::Zero => grad,
                    PaddingMode::PlusOne => {
                        let [_, _, h, w] = x.shape.dims();
                        let [ph, pw] = geometry.padding;
                        grad.slice(s![.., .., ph..ph + h, pw..pw + w])
                    }
                };
                x.pass(grad)
            },
            |grad| {
                let grad =
                    B::conv2d_weight_backward(input.clone(), weight.clone(), grad, options.clone());
                w.pass(tensor::<B, 4>(grad))
            },
        );
    }
}

/// `sign(x) ⊛ sign(w)` on the inner backend's packed kernel, with a backward that keeps bits
/// only.
pub(crate) fn binary_conv2d<B: QnnBackend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    weight: Tensor<Autodiff<B, C>, 4>,
    geometry: &ConvGeometry,
) -> Tensor<Autodiff<B, C>, 4> {
    let (x, w) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let (x_inner, w_inner) = (tensor::<B, 4>(x.primitive), tensor::<B, 4>(w.primitive));
    let output = PackedBinaryConv
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

fn tensor<B: QnnBackend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn primitive<B: QnnBackend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}
