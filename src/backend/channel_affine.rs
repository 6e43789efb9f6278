//! A convolution layer's per-channel scale and bias ([`QnnBackend::qnn_channel_affine`]) and
//! the per-channel sums of its bias gradient ([`QnnBackend::qnn_channel_sums`]): Burn's tensor
//! operations, and the autodiff node of the bias.

use burn::tensor::{Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor};
use burn_autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops},
};

use super::QnnBackend;

/// `[1, C, 1, ..]`: a per-channel vector shaped to broadcast over `[N, C, ..]`.
fn per_channel<B: Backend, const D: usize>(t: Tensor<B, 1>, channels: usize) -> Tensor<B, D> {
    let mut shape = [1; D];
    shape[1] = channels;
    t.reshape(shape)
}

/// [`QnnBackend::qnn_channel_affine`] in Burn's tensor operations.
pub(super) fn affine_portable<B: Backend, const D: usize>(
    y: Tensor<B, D>,
    scale: Option<Tensor<B, 1>>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let channels = y.dims()[1];
    let y = match scale {
        Some(scale) => y * per_channel(scale, channels),
        None => y,
    };
    match bias {
        Some(bias) => y + per_channel(bias, channels),
        None => y,
    }
}

/// [`QnnBackend::qnn_channel_sums`] in Burn's tensor operations.
pub(super) fn sums_portable<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    let channels = x.dims()[1];
    x.swap_dims(0, 1)
        .reshape([channels as i32, -1])
        .sum_dim(1)
        .reshape([channels])
}

/// The bias node: `y + bias` per channel, whose backward passes the gradient on to `y` and
/// gives `bias` its per-channel sums.
#[derive(Debug)]
struct ChannelBias<const D: usize>;

impl<B: QnnBackend, const D: usize> Backward<B, 2> for ChannelBias<D> {
    type State = ();

    fn backward(self, ops: Ops<(), 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_y, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_bias {
            let sums = B::qnn_channel_sums::<D>(tensor(grad.clone()));
            grads.register::<B>(node.id, sums.into_primitive().tensor());
        }
        if let Some(node) = node_y {
            grads.register::<B>(node.id, grad);
        }
    }
}

/// [`QnnBackend::qnn_channel_affine`] on `Autodiff<B>`: a bias alone as one node on the inner
/// backend's op (one pass on the host backends, forward and backward); with a scale, Burn's
/// tensor operations.
pub(super) fn affine_autodiff<B: QnnBackend, C: CheckpointStrategy, const D: usize>(
    y: Tensor<Autodiff<B, C>, D>,
    scale: Option<Tensor<Autodiff<B, C>, 1>>,
    bias: Option<Tensor<Autodiff<B, C>, 1>>,
) -> Tensor<Autodiff<B, C>, D> {
    let (None, Some(bias)) = (&scale, &bias) else {
        return affine_portable(y, scale, bias);
    };
    let channels = y.dims()[1];
    assert_eq!(
        bias.dims()[0],
        channels,
        "channel bias: {} values for the {channels} channels of {:?}",
        bias.dims()[0],
        y.dims()
    );
    let (y, bias) = (
        y.into_primitive().tensor(),
        bias.clone().into_primitive().tensor(),
    );
    let out = B::qnn_channel_affine::<D>(tensor(y.primitive), None, Some(tensor(bias.primitive)));
    let output = ChannelBias::<D>
        .prepare::<C>([y.node, bias.node])
        .compute_bound()
        .stateless(out.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

fn tensor<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}
