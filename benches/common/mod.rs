//! What several benches share: one training step of the paper's CIFAR-10 network, and the same
//! network in Burn's own float layers.

use burn::{
    optim::{GradientsParams, Optimizer, adaptor::OptimizerAdaptor},
    tensor::{Int, Tensor, module::max_pool2d},
};
use burn_qnn::{
    QnnAutodiffBackend,
    learner::ClipLatentWeights,
    loss::SquaredHingeLoss,
    models::{Net, NetConfig},
    optim::{FusedAdam, FusedAdamConfig},
};

/// One training step on fixed data: `forward`, the squared hinge loss, the backward pass, and
/// Adam (`burn_qnn::optim::FusedAdam`) with latent-weight clipping.
pub struct Step<B: QnnAutodiffBackend> {
    net: Option<Net<B>>,
    optim: ClipLatentWeights<OptimizerAdaptor<FusedAdam, Net<B>, B>>,
    images: Tensor<B, 4>,
    targets: Tensor<B, 1, Int>,
}

impl<B: QnnAutodiffBackend> Step<B> {
    /// A step of `net` on `images` and their class indices `targets`.
    pub fn new(net: Net<B>, images: &Tensor<B, 4>, targets: &Tensor<B, 1, Int>) -> Self {
        Self {
            net: Some(net),
            optim: ClipLatentWeights::new(FusedAdamConfig::new().init()),
            images: images.clone(),
            targets: targets.clone(),
        }
    }

    /// Runs one step with `forward` as the network's forward pass.
    pub fn run(&mut self, forward: impl Fn(&Net<B>, Tensor<B, 4>) -> Tensor<B, 2>) {
        let net = self.net.take().expect("a network between steps");
        let scores = forward(&net, self.images.clone());
        let loss = SquaredHingeLoss.forward(scores, self.targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        self.net = Some(self.optim.step(1e-3, net, grads));
    }
}

/// The float network in Burn's own layers and functions: `Conv2d`, `max_pool2d`,
/// `BatchNorm::forward`, `Linear`, and a hard tanh (`clamp`) between layers. `net` must be a
/// float network (`Precision::Float`).
pub fn burn_layers<B: QnnAutodiffBackend>(net: &Net<B>, images: Tensor<B, 4>) -> Tensor<B, 2> {
    let mut x = images;
    for (i, (conv, norm)) in net.convs.iter().zip(&net.conv_norms).enumerate() {
        x = conv.forward(x);
        if NetConfig::pools_after(i) {
            x = max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        x = norm.forward(x).clamp(-1.0, 1.0);
    }
    let mut x = x.flatten::<2>(1, 3);
    let last = net.dense.len() - 1;
    for (i, (layer, norm)) in net.dense.iter().zip(&net.dense_norms).enumerate() {
        x = norm.forward(layer.forward(x));
        if i < last {
            x = x.clamp(-1.0, 1.0);
        }
    }
    x
}
