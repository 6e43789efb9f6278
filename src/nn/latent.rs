//! Latent real-valued weights: clipping to `[−1, 1]` after each update and the paper's
//! per-layer learning-rate scale.

use burn::{
    module::{Module, ModuleMapper, Param},
    tensor::{Tensor, backend::Backend},
};

/// The module types whose `weight` is a latent weight (binarized or quantized in the forward).
const LATENT_OWNERS: [&str; 6] = [
    "Struct:BinaryLinear",
    "Struct:BinaryConv2d",
    "Struct:QuantLinear",
    "Struct:QuantConv2d",
    "Struct:BitPlaneLinear",
    "Struct:BitPlaneConv2d",
];

/// Clips every latent weight of `module` to `[−1, 1]`: the `weight` of each [`BinaryLinear`],
/// [`BinaryConv2d`], [`QuantLinear`], [`QuantConv2d`], [`BitPlaneLinear`] and [`BitPlaneConv2d`]
/// it contains, at any depth. Other parameters (biases, batch norm, float layers) are left
/// alone. Call it after each optimizer step, with any Burn optimizer, as the paper does; the
/// parameter ids are kept, so optimizer state stays attached.
///
/// [`BinaryLinear`]: super::BinaryLinear
/// [`BinaryConv2d`]: super::BinaryConv2d
/// [`QuantLinear`]: super::QuantLinear
/// [`QuantConv2d`]: super::QuantConv2d
/// [`BitPlaneLinear`]: super::BitPlaneLinear
/// [`BitPlaneConv2d`]: super::BitPlaneConv2d
///
/// ```
/// use burn::backend::NdArray;
/// use burn_qnn::nn::{BinaryLinearConfig, clip_latent_weights};
///
/// let mut layer = BinaryLinearConfig::new(4, 2).init::<NdArray>(&Default::default());
/// layer.weight = layer.weight.map(|w| w * 5.0); // as if a large update happened
/// let layer = clip_latent_weights(layer);
/// assert!(layer.weight.val().abs().max().into_scalar() <= 1.0);
/// ```
pub fn clip_latent_weights<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut LatentClipper { path: Vec::new() })
}

/// Clips the parameters named `weight` of the latent-weight module types.
struct LatentClipper {
    /// `(field, container type)` of the fields entered so far.
    path: Vec<(String, String)>,
}

impl<B: Backend> ModuleMapper<B> for LatentClipper {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_owned(), container_type.to_owned()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let latent = self.path.last().is_some_and(|(name, owner)| {
            name == "weight" && LATENT_OWNERS.contains(&owner.as_str())
        });
        if latent {
            param.map(|w| {
                let require_grad = w.is_require_grad();
                let clipped = w.clamp(-1.0, 1.0).detach();
                if require_grad {
                    clipped.require_grad()
                } else {
                    clipped
                }
            })
        } else {
            param
        }
    }
}

/// The paper's per-layer learning-rate scale, `1/sqrt(1.5/(fan_in + fan_out))` (the inverse of
/// the Glorot uniform bound): multiply a layer's learning rate by it. For a convolution,
/// `fan_in = k_h·k_w·C_in` and `fan_out = k_h·k_w·C_out`.
///
/// ```
/// let scale = burn_qnn::nn::glorot_lr_scale(784, 4096);
/// assert!((scale - (4880.0f64 / 1.5).sqrt()).abs() < 1e-9);
/// ```
///
/// # Panics
/// If `fan_in + fan_out` is 0.
pub fn glorot_lr_scale(fan_in: usize, fan_out: usize) -> f64 {
    assert!(
        fan_in + fan_out > 0,
        "glorot_lr_scale: fan_in + fan_out must be positive"
    );
    1.0 / (1.5 / (fan_in + fan_out) as f64).sqrt()
}
