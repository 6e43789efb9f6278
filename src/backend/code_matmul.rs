//! [`QnnBackend::qnn_code_matmul`] and [`QnnBackend::qnn_code_conv2d`] under `Autodiff`: the
//! inner backend's product of codes, with the gradients of `matmul` (`∂L/∂a = g·bᵀ`,
//! `∂L/∂b = aᵀ·g`) and of `conv2d` (Burn's own backward of the inner backend) from the
//! operands' values.

use burn::tensor::{
    Tensor,
    ops::{ConvOptions, FloatTensor},
};
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

#[derive(Debug)]
struct CodeConv2d;

impl<B: QnnBackend> Backward<B, 2> for CodeConv2d {
    /// The input's and the weights' values, and the options.
    type State = (FloatTensor<B>, FloatTensor<B>, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, options) = ops.state;
        let (x_for_w, w_for_x, options_for_w) = (x.clone(), w.clone(), options.clone());
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| B::conv2d_x_backward(x, w_for_x, grad, options),
            |grad| B::conv2d_weight_backward(x_for_w, w, grad, options_for_w),
        );
    }
}

/// The tracked convolution of codes.
pub(super) fn code_conv2d<B: QnnBackend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    x_grid: CodeGrid,
    w: Tensor<Autodiff<B, C>, 4>,
    w_grid: CodeGrid,
    options: ConvOptions<2>,
) -> Tensor<Autodiff<B, C>, 4> {
    let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
    let (x_inner, w_inner) = (tensor::<B, 4>(x.primitive), tensor::<B, 4>(w.primitive));
    let forward = |x, w, options| primitive(B::qnn_code_conv2d(x, x_grid, w, w_grid, options));
    let output = match CodeConv2d
        .prepare::<C>([x.node, w.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = (
                primitive(x_inner.clone()),
                primitive(w_inner.clone()),
                options.clone(),
            );
            prep.finish(state, forward(x_inner, w_inner, options))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x_inner, w_inner, options)),
    };
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(output))
}
