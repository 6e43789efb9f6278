//! [`QnnBackend::qnn_code_matmul`] under `Autodiff`: the inner backend's product of codes, with
//! `matmul`'s gradients (`∂L/∂a = g·bᵀ`, `∂L/∂b = aᵀ·g`) from the operands' values.

use burn::tensor::{Tensor, ops::FloatTensor};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, binary},
};

use super::{
    QnnBackend,
    binary_backward::{primitive, tensor},
};
use crate::quant::CodeGrid;

#[derive(Debug)]
struct CodeMatmul;

impl<B: QnnBackend> Backward<B, 2> for CodeMatmul {
    /// The operands' values.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| primitive(tensor::<B, 2>(grad).matmul(tensor::<B, 2>(b).transpose())),
            |grad| primitive(tensor::<B, 2>(a).transpose().matmul(tensor::<B, 2>(grad))),
        );
    }
}

/// The tracked product of codes.
pub(super) fn code_matmul<B: QnnBackend, C: CheckpointStrategy>(
    a: Tensor<Autodiff<B, C>, 2>,
    a_grid: CodeGrid,
    b: Tensor<Autodiff<B, C>, 2>,
    b_grid: CodeGrid,
) -> Tensor<Autodiff<B, C>, 2> {
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let (a_inner, b_inner) = (tensor::<B, 2>(a.primitive), tensor::<B, 2>(b.primitive));
    let forward = |a, b| primitive(B::qnn_code_matmul(a, a_grid, b, b_grid));
    let output = match CodeMatmul
        .prepare::<C>([a.node, b.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = (primitive(a_inner.clone()), primitive(b_inner.clone()));
            prep.finish(state, forward(a_inner, b_inner))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(a_inner, b_inner)),
    };
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(output))
}
