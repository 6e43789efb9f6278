//! Batch normalization in training mode as one autodiff node: the forward and the backward of
//! [`QnnBackend::qnn_batch_norm_train`] / [`QnnBackend::qnn_batch_norm_backward`], with portable
//! bodies from Burn tensor ops (the formulas of Burn's own `BatchNorm`) and the node that joins
//! them under `Autodiff`.

use burn::tensor::{Tensor, TensorPrimitive, ops::FloatTensor};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};

use super::QnnBackend;

/// A batch norm's forward: the output and the batch's per-channel mean and biased variance.
pub type BatchNormOutput<B, const D: usize> = (Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>);

/// A batch norm's gradients with respect to its input, `γ` and `β`.
pub type BatchNormGrads<B, const D: usize> = (Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>);

/// `x` `[N, C, ..]` as `[C, N·..]`.
fn per_channel<B: QnnBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 2> {
    let channels = x.dims()[1];
    x.swap_dims(0, 1).reshape([channels as i32, -1])
}

/// A `[C]` tensor shaped to broadcast over `[N, C, ..]`.
fn broadcast<B: QnnBackend, const D: usize>(v: Tensor<B, 1>) -> Tensor<B, D> {
    let mut shape = [1; D];
    shape[1] = v.dims()[0];
    v.reshape(shape)
}

/// `1/sqrt(σ² + ε)`.
fn inv_std<B: QnnBackend>(variance: Tensor<B, 1>, epsilon: f64) -> Tensor<B, 1> {
    variance.add_scalar(epsilon).sqrt().recip()
}

/// [`QnnBackend::qnn_batch_norm_train`] from Burn tensor ops.
pub(crate) fn train_portable<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> BatchNormOutput<B, D> {
    let mean = per_channel(x.clone()).mean_dim(1).flatten::<1>(0, 1);
    let centered = x - broadcast::<B, D>(mean.clone());
    let variance = per_channel(centered.clone().square())
        .mean_dim(1)
        .flatten::<1>(0, 1);
    let scale = gamma * inv_std(variance.clone(), epsilon);
    let y = centered * broadcast::<B, D>(scale) + broadcast::<B, D>(beta);
    (y, mean, variance)
}

/// Burn's `BatchNorm` in evaluation mode over `x` `[N, C, ..]`, op for op in Burn tensor ops:
/// `((x − mean)/sqrt(var + ε))·γ + β` per channel.
pub(crate) fn eval_portable<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let std = var.add_scalar(epsilon).sqrt();
    (x - broadcast::<B, D>(mean)) / broadcast::<B, D>(std) * broadcast::<B, D>(gamma)
        + broadcast::<B, D>(beta)
}

/// [`QnnBackend::qnn_batch_norm_sign`] from Burn tensor ops: [`eval_portable`], then the
/// crate's sign.
pub(crate) fn sign_portable<B: QnnBackend, const D: usize>(
    x: Tensor<B, D>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let y = eval_portable(x, mean, var, gamma, beta, epsilon);
    B::qnn_quantize(y, crate::quant::Quantizer::Sign)
}

/// [`QnnBackend::qnn_batch_norm_backward`] from Burn tensor ops.
pub(crate) fn backward_portable<B: QnnBackend, const D: usize>(
    grad: Tensor<B, D>,
    x: Tensor<B, D>,
    mean: Tensor<B, 1>,
    variance: Tensor<B, 1>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> BatchNormGrads<B, D> {
    let count = (x.shape().num_elements() / x.dims()[1].max(1)).max(1) as f64;
    let inv_std = inv_std(variance, epsilon);
    let normalized = (x - broadcast::<B, D>(mean)) * broadcast::<B, D>(inv_std.clone());
    let d_beta = per_channel(grad.clone()).sum_dim(1).flatten::<1>(0, 1);
    let d_gamma = per_channel(grad.clone() * normalized.clone())
        .sum_dim(1)
        .flatten::<1>(0, 1);
    let k = gamma * inv_std;
    let d_x = (grad
        - broadcast::<B, D>(d_beta.clone().div_scalar(count))
        - normalized * broadcast::<B, D>(d_gamma.clone().div_scalar(count)))
        * broadcast::<B, D>(k);
    (d_x, d_gamma, d_beta)
}

/// The training-mode batch norm node: its backward calls
/// [`QnnBackend::qnn_batch_norm_backward`] on the saved input and statistics.
#[derive(Debug)]
struct BatchNormTrain<const D: usize>;

/// What the backward needs: the input, the mean, the variance, `γ`, and `ε`.
type NormState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
);

impl<B: QnnBackend, const D: usize> Backward<B, 3> for BatchNormTrain<D> {
    type State = NormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, mean, variance, gamma, epsilon) = ops.state;
        let (d_x, d_gamma, d_beta) = B::qnn_batch_norm_backward::<D>(
            tensor(grad),
            tensor(x),
            tensor(mean),
            tensor(variance),
            tensor(gamma),
            epsilon,
        );
        if let Some(node) = node_x {
            grads.register::<B>(node.id, primitive(d_x));
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, primitive(d_gamma));
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, primitive(d_beta));
        }
    }
}

/// [`QnnBackend::qnn_batch_norm_train`] on `Autodiff<B>`: the inner backend's forward as one
/// node whose backward is the inner backend's [`QnnBackend::qnn_batch_norm_backward`].
pub(crate) fn train_autodiff<B: QnnBackend, C: CheckpointStrategy, const D: usize>(
    x: Tensor<Autodiff<B, C>, D>,
    gamma: Tensor<Autodiff<B, C>, 1>,
    beta: Tensor<Autodiff<B, C>, 1>,
    epsilon: f64,
) -> BatchNormOutput<Autodiff<B, C>, D> {
    let (x, gamma, beta) = (
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
    );
    let (x_inner, gamma_inner) = (x.primitive.clone(), gamma.primitive.clone());
    let (y, mean, variance) = B::qnn_batch_norm_train::<D>(
        tensor(x.primitive),
        tensor(gamma.primitive),
        tensor(beta.primitive),
        epsilon,
    );
    let (mean_inner, variance_inner) = (primitive(mean.clone()), primitive(variance.clone()));
    let output = match BatchNormTrain::<D>
        .prepare::<C>([x.node, gamma.node, beta.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            (x_inner, mean_inner, variance_inner, gamma_inner, epsilon),
            primitive(y),
        ),
        OpsKind::UnTracked(prep) => prep.finish(primitive(y)),
    };
    (
        Tensor::from_primitive(TensorPrimitive::Float(output)),
        Tensor::from_inner(mean),
        Tensor::from_inner(variance),
    )
}

fn tensor<B: QnnBackend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn primitive<B: QnnBackend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}
