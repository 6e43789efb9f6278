//! [`QnnBackend::qnn_code_matmul`] and [`QnnBackend::qnn_code_conv2d`] under `Autodiff`: the
//! inner backend's product of codes, with the gradients of `matmul` (`∂L/∂a = g·bᵀ`,
//! `∂L/∂b = aᵀ·g`) and of `conv2d` (Burn's own backward of the inner backend).
//!
//! As the binary layers' nodes keep sign bits, these nodes keep the operands' packed codes
//! ([`QnnBackend::qnn_pack_codes`]: `bits` bits a value, where a float operand takes 32) and
//! turn them back into values in the backward pass: the product's gradients decode them a
//! block of rows at a time inside the f32 product on the host backends
//! ([`QnnBackend::qnn_code_grad_times_rows`]), the convolution's decode the operands
//! ([`QnnBackend::qnn_unpack_codes`]) for Burn's `conv2d` backward.

use burn::tensor::{Tensor, ops::ConvOptions};
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

/// An operand kept as packed codes: the codes of a `[rows, k]` matrix (a tensor's values
/// flattened to that shape), with their grid and the tensor's shape.
#[derive(Debug, Clone)]
struct SavedCodes<B: QnnBackend, const D: usize> {
    codes: B::Packed,
    grid: CodeGrid,
    shape: [usize; D],
}

impl<B: QnnBackend, const D: usize> SavedCodes<B, D> {
    /// Packs the codes of `x`, as rows of its last `trailing` dimensions.
    fn save(x: Tensor<B, D>, grid: CodeGrid, trailing: usize) -> Self {
        let shape = x.dims();
        let k: usize = shape[D - trailing..].iter().product();
        let rows: usize = shape[..D - trailing].iter().product();
        Self {
            codes: B::qnn_pack_codes(x.reshape([rows, k]), grid),
            grid,
            shape,
        }
    }

    /// The saved values.
    fn values(&self) -> Tensor<B, D> {
        B::qnn_unpack_codes(&self.codes, self.grid).reshape(self.shape)
    }
}

#[derive(Debug)]
struct CodeMatmul;

impl<B: QnnBackend> Backward<B, 2> for CodeMatmul {
    /// The codes of `a` `[m, k]` and of `bᵀ` `[n, k]`.
    type State = (SavedCodes<B, 2>, SavedCodes<B, 2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b_t) = ops.state;
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let grad = tensor::<B, 2>(grad);
                primitive(B::qnn_code_grad_times_rows(grad, &b_t.codes, b_t.grid))
            },
            |grad| {
                let grad = tensor::<B, 2>(grad);
                primitive(B::qnn_code_rows_transposed_times_grad(
                    &a.codes, a.grid, grad,
                ))
            },
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
    let output = match CodeMatmul
        .prepare::<C>([a.node, b.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let ([m, k], [_, n]) = (a_inner.dims(), b_inner.dims());
            let (out, a_codes, b_codes) =
                B::qnn_code_matmul_saving(a_inner, a_grid, b_inner, b_grid);
            let saved = |codes, grid, shape| SavedCodes { codes, grid, shape };
            let state = (
                saved(a_codes, a_grid, [m, k]),
                saved(b_codes, b_grid, [n, k]),
            );
            prep.finish(state, primitive(out))
        }
        OpsKind::UnTracked(prep) => prep.finish(primitive(B::qnn_code_matmul(
            a_inner, a_grid, b_inner, b_grid,
        ))),
    };
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(output))
}

#[derive(Debug)]
struct CodeConv2d;

impl<B: QnnBackend> Backward<B, 2> for CodeConv2d {
    /// The codes of the input (rows of `H·W`) and of the weights (rows of `C_in·k_h·k_w`), and
    /// the options.
    type State = (SavedCodes<B, 4>, SavedCodes<B, 4>, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, options) = ops.state;
        let (x, w) = (primitive(x.values()), primitive(w.values()));
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
                SavedCodes::save(x_inner.clone(), x_grid, 2),
                SavedCodes::save(w_inner.clone(), w_grid, 3),
                options.clone(),
            );
            prep.finish(state, forward(x_inner, w_inner, options))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x_inner, w_inner, options)),
    };
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(output))
}
