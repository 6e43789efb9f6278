//! The bit-plane first layer's convolution as one autodiff node: the portable bodies of
//! [`QnnBackend::qnn_bit_plane_conv2d`] and [`QnnBackend::qnn_bit_plane_conv2d_weight_grad`]
//! (Burn's float convolution and its weight backward) and the node that joins them under
//! `Autodiff`, which keeps the layer's input and the weights' pass band (1 bit a weight).

use burn::tensor::{Shape, Tensor, TensorPrimitive, module::conv2d, ops::FloatTensor};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};

use super::{QnnBackend, binary_backward::pass};
use crate::{
    nn::{HALF_RANGE, inside_sums, pixel_codes, scaled_output},
    ops::ConvGeometry,
    quant,
};

/// [`QnnBackend::qnn_bit_plane_conv2d`] from Burn tensor ops.
pub(crate) fn forward_portable<B: QnnBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let signs = quant::sign(weight);
    let product = conv2d(pixel_codes(x), signs.clone(), None, geometry.options());
    scaled_output(product, inside_sums(signs, geometry, [h, w]))
}

/// [`QnnBackend::qnn_bit_plane_conv2d_weight_grad`] by Burn's float convolution weight
/// backward on the scaled codes `code/127.5 − 1`.
pub(crate) fn weight_grad_portable<B: QnnBackend>(
    grad_out: Tensor<B, 4>,
    x: Tensor<B, 4>,
    weight_blocked: &B::Packed,
    geometry: &ConvGeometry,
) -> Tensor<B, 4> {
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    let scaled = pixel_codes(x) / HALF_RANGE - 1.0;
    let zeros = Tensor::<B, 4>::zeros([c_out, c_in, kh, kw], &grad_out.device());
    let grad = tensor::<B, 4>(B::conv2d_weight_backward(
        primitive(scaled),
        primitive(zeros),
        primitive(grad_out),
        geometry.options(),
    ));
    pass(grad, weight_blocked)
}

/// The bit-plane convolution node.
#[derive(Debug)]
struct BitPlaneConv;

impl<B: QnnBackend> Backward<B, 2> for BitPlaneConv {
    /// The layer's input, the weights' pass band, the weight shape and the geometry.
    type State = (FloatTensor<B>, B::Packed, Shape, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = tensor::<B, 4>(grads.consume::<B>(&ops.node));
        let (x, weight_blocked, _, geometry) = ops.state;
        let x = tensor::<B, 4>(x);
        if let Some(node) = node_x {
            // The codes are rounded from the input: its gradient is 0, as Burn's `round`'s.
            grads.register::<B>(node.id, primitive(x.zeros_like()));
        }
        if let Some(node) = node_w {
            let d_w = B::qnn_bit_plane_conv2d_weight_grad(grad, x, &weight_blocked, &geometry);
            grads.register::<B>(node.id, primitive(d_w));
        }
    }
}

/// [`QnnBackend::qnn_bit_plane_conv2d`] on `Autodiff<B>`: the inner backend's forward as one
/// node whose backward is the inner backend's [`QnnBackend::qnn_bit_plane_conv2d_weight_grad`].
pub(crate) fn forward_autodiff<B: QnnBackend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    weight: Tensor<Autodiff<B, C>, 4>,
    geometry: &ConvGeometry,
) -> Tensor<Autodiff<B, C>, 4> {
    let (x, w) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let (x_inner, w_inner) = (tensor::<B, 4>(x.primitive), tensor::<B, 4>(w.primitive));
    let prepared = BitPlaneConv
        .prepare::<C>([x.node, w.node])
        .compute_bound()
        .stateful();
    let output = match prepared {
        OpsKind::Tracked(prep) => {
            let shape = w_inner.shape();
            let (_, blocked) = B::qnn_save_signs(w_inner.clone());
            let y = B::qnn_bit_plane_conv2d(x_inner.clone(), w_inner, geometry);
            prep.finish(
                (primitive(x_inner), blocked, shape, *geometry),
                primitive(y),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(primitive(B::qnn_bit_plane_conv2d(
            x_inner, w_inner, geometry,
        ))),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

fn tensor<B: QnnBackend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn primitive<B: QnnBackend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}
