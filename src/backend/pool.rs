//! Max-pooling in training as one autodiff node that keeps only the index of each window's
//! maximum: the portable bodies of [`QnnBackend::qnn_max_pool2d_with_indices`] and
//! [`QnnBackend::qnn_max_pool2d_backward`] (Burn's own pooling and a scatter), and the node that
//! joins them under `Autodiff`.

use burn::tensor::{
    IndexingUpdateOp, Int, Tensor, TensorPrimitive,
    module::{max_pool2d, max_pool2d_with_indices},
    ops::IntTensor,
};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};

use super::QnnBackend;

/// Burn's `max_pool2d` with padding 0 and dilation 1.
pub(crate) fn forward_portable<B: QnnBackend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Tensor<B, 4> {
    max_pool2d(x, kernel, stride, [0, 0], [1, 1], false)
}

/// Burn's `max_pool2d_with_indices` with padding 0 and dilation 1.
pub(crate) fn with_indices_portable<B: QnnBackend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> (Tensor<B, 4>, Tensor<B, 4, Int>) {
    max_pool2d_with_indices(x, kernel, stride, [0, 0], [1, 1], false)
}

/// The input gradient by a scatter-add of `grad` at `indices` inside each plane.
pub(crate) fn backward_portable<B: QnnBackend>(
    grad: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    input_shape: [usize; 4],
) -> Tensor<B, 4> {
    let [n, c, h, w] = input_shape;
    let [_, _, oh, ow] = grad.dims();
    Tensor::<B, 3>::zeros([n, c, h * w], &grad.device())
        .scatter(
            2,
            indices.reshape([n, c, oh * ow]),
            grad.reshape([n, c, oh * ow]),
            IndexingUpdateOp::Add,
        )
        .reshape(input_shape)
}

/// The training-mode max-pooling node: its backward calls
/// [`QnnBackend::qnn_max_pool2d_backward`] on the saved indices.
#[derive(Debug)]
struct MaxPoolTrain;

impl<B: QnnBackend> Backward<B, 1> for MaxPoolTrain {
    type State = (IntTensor<B>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (indices, input_shape) = ops.state;
        if let Some(node) = node {
            let d_x = B::qnn_max_pool2d_backward(
                Tensor::from_primitive(TensorPrimitive::Float(grad)),
                Tensor::from_primitive(indices),
                input_shape,
            );
            grads.register::<B>(node.id, d_x.into_primitive().tensor());
        }
    }
}

/// [`QnnBackend::qnn_max_pool2d`] on `Autodiff<B>`: where `x` is tracked, the inner backend's
/// pooling with indices as one node that keeps only the indices; else the plain pooling.
pub(crate) fn forward_autodiff<B: QnnBackend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Tensor<Autodiff<B, C>, 4> {
    let x = x.into_primitive().tensor();
    let inner = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x.primitive.clone()));
    let input_shape = inner.dims();
    let output = match MaxPoolTrain
        .prepare::<C>([x.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, indices) = B::qnn_max_pool2d_with_indices(inner, kernel, stride);
            prep.finish(
                (indices.into_primitive(), input_shape),
                y.into_primitive().tensor(),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(
            B::qnn_max_pool2d(inner, kernel, stride)
                .into_primitive()
                .tensor(),
        ),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}
