//! Latent real-valued weights: which parameters they are, clipping to `[−1, 1]` after each
//! update and the paper's per-layer learning-rate scale.

use std::{collections::HashMap, fmt, str::FromStr};

use burn::{
    module::{Module, ModuleMapper, Param, ParamId},
    tensor::Tensor,
};
use serde::{Deserialize, Serialize};

use super::StoredForm;
use crate::QnnBackend;

/// The one definition of "is this parameter a latent weight": follows a module walk
/// (`enter_module`/`exit_module`) and says whether the parameter being visited is the `weight`
/// of a layer with a [`super::PackedWeight`] slot. The slot is declared before the weight and
/// announces the weights' stored form to every walk ([`StoredForm`]), so the marker is the
/// slot's type, not the layer's name: any layer that holds one, at any depth, is recognized.
#[derive(Debug, Default)]
pub(crate) struct LatentPath {
    /// `(field, container type)` of the fields entered so far.
    path: Vec<(String, String)>,
    /// The module path of the last layer whose slot announced itself, and its form.
    announced: Option<(String, StoredForm)>,
}

impl LatentPath {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        if let Some(form) = StoredForm::parse(container_type, name) {
            // At `layer.packed`: the layer is the path without its slot field.
            self.announced = Some((self.owner_name(), form));
        }
        self.path.push((name.to_owned(), container_type.to_owned()));
    }

    pub(crate) fn exit(&mut self) {
        self.path.pop();
    }

    /// Whether the parameter at the current position is a latent weight.
    pub(crate) fn at_latent_weight(&self) -> bool {
        self.latent_form().is_some()
    }

    /// Whether the parameter at the current position is a binary layer's latent weight (one
    /// stored as signs).
    pub(crate) fn at_binary_weight(&self) -> bool {
        matches!(self.latent_form(), Some(StoredForm::Signs { .. }))
    }

    /// The stored form of the latent weight at the current position, if it is one.
    fn latent_form(&self) -> Option<StoredForm> {
        let (layer, form) = self.announced.as_ref()?;
        let at_weight = self.path.last().is_some_and(|(name, _)| name == "weight");
        (at_weight && *layer == self.owner_name()).then_some(*form)
    }

    /// The path of the module that owns the current parameter, `field.index.field…`, e.g.
    /// `convs.2` (the parameter's own field left out).
    pub(crate) fn owner_name(&self) -> String {
        let owner = &self.path[..self.path.len().saturating_sub(1)];
        let names: Vec<&str> = owner.iter().map(|(name, _)| name.as_str()).collect();
        names.join(".")
    }

    /// The path of the module that owns the current position (as [`Self::owner_name`]) and
    /// its type as Burn names it (`Struct:BinaryLinear`; empty at the top).
    pub(crate) fn owner(&self) -> (String, String) {
        let type_name = self
            .path
            .last()
            .map_or_else(String::new, |(_, owner)| owner.clone());
        (self.owner_name(), type_name)
    }
}

/// Clips every latent weight of `module` to `[−1, 1]`: the `weight` of each [`BinaryLinear`],
/// [`BinaryConv2d`], [`QuantLinear`], [`QuantConv2d`], [`BitPlaneLinear`] and [`BitPlaneConv2d`]
/// it contains, at any depth. Other parameters (biases, batch norm, float layers) are left
/// alone. Call it after each optimizer step, with any Burn optimizer, as the paper does; the
/// parameter ids are kept, so optimizer state stays attached. (With burn-train, or to also
/// apply the per-layer learning-rate scale, wrap the optimizer in
/// `burn_qnn::learner::ClipLatentWeights` instead.)
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
pub fn clip_latent_weights<B: QnnBackend, M: Module<B>>(module: M) -> M {
    LatentWeightsBefore::none().finish(module, true)
}

/// A per-layer multiplier of the learning rate of latent weights.
///
/// The authors' code (BinaryNet, `W_LR_scale = "Glorot"`) multiplies each binary layer's
/// weight update by [`glorot_lr_scale`] of that layer's fans; `None` leaves every update as
/// the optimizer makes it. Parsed from and displayed as `none` / `glorot` (for command lines).
///
/// ```
/// use burn_qnn::nn::{LatentLrScale, glorot_lr_scale};
///
/// // A 3×3 convolution from 128 to 256 channels, weight [C_out, C_in, k_h, k_w]:
/// let conv = LatentLrScale::Glorot.of_weight(&[256, 128, 3, 3]);
/// assert_eq!(conv, glorot_lr_scale(128 * 9, 256 * 9));
/// // A fully connected layer from 784 to 4096 features, weight [d_input, d_output]:
/// assert_eq!(LatentLrScale::Glorot.of_weight(&[784, 4096]), glorot_lr_scale(784, 4096));
/// assert_eq!(LatentLrScale::None.of_weight(&[784, 4096]), 1.0);
/// assert_eq!("glorot".parse::<LatentLrScale>(), Ok(LatentLrScale::Glorot));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum LatentLrScale {
    /// No scale: every latent weight moves as the optimizer moves it (the default).
    #[default]
    None,
    /// The paper's per-layer scale, [`glorot_lr_scale`]`(fan_in, fan_out)` with the fans of
    /// [`latent_weight_fans`].
    Glorot,
}

impl LatentLrScale {
    /// The multiplier of the update of a latent weight of shape `dims` (the tensor's
    /// dimensions, in the layers' layouts: see [`latent_weight_fans`]).
    ///
    /// # Panics
    /// For [`LatentLrScale::Glorot`], if both fans are 0.
    pub fn of_weight(self, dims: &[usize]) -> f64 {
        match self {
            Self::None => 1.0,
            Self::Glorot => {
                let (fan_in, fan_out) = latent_weight_fans(dims);
                glorot_lr_scale(fan_in, fan_out)
            }
        }
    }
}

impl fmt::Display for LatentLrScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Glorot => "glorot",
        })
    }
}

/// The error of parsing a [`LatentLrScale`] from anything but `none` or `glorot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown learning-rate scale `{0}`: use `glorot` or `none`")]
pub struct ParseLatentLrScaleError(pub String);

impl FromStr for LatentLrScale {
    type Err = ParseLatentLrScaleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "glorot" => Ok(Self::Glorot),
            _ => Err(ParseLatentLrScaleError(s.to_owned())),
        }
    }
}

/// `(fan_in, fan_out)` of a latent weight of shape `dims`, as the authors' code counts them:
///
/// - a fully connected weight `[d_input, d_output]` ([`BinaryLinear`], [`QuantLinear`],
///   [`BitPlaneLinear`], the layout of Burn's `Linear`): `(d_input, d_output)`;
/// - a convolution weight `[C_out, C_in, k_h, k_w]` ([`BinaryConv2d`], [`QuantConv2d`],
///   [`BitPlaneConv2d`]): `(C_in·k_h·k_w, C_out·k_h·k_w)` (with groups, `C_in` is the weight's
///   second dimension, the input channels per group);
/// - any other rank, by the same rule as a convolution: `(product of dims[1..],
///   dims[0]·product of dims[2..])`.
///
/// [`BinaryLinear`]: super::BinaryLinear
/// [`BinaryConv2d`]: super::BinaryConv2d
/// [`QuantLinear`]: super::QuantLinear
/// [`QuantConv2d`]: super::QuantConv2d
/// [`BitPlaneLinear`]: super::BitPlaneLinear
/// [`BitPlaneConv2d`]: super::BitPlaneConv2d
///
/// ```
/// use burn_qnn::nn::latent_weight_fans;
///
/// assert_eq!(latent_weight_fans(&[784, 4096]), (784, 4096));
/// assert_eq!(latent_weight_fans(&[256, 128, 3, 3]), (128 * 9, 256 * 9));
/// ```
pub fn latent_weight_fans(dims: &[usize]) -> (usize, usize) {
    match dims {
        [] => (1, 1),
        [d_input, d_output] => (*d_input, *d_output),
        [first, rest @ ..] => {
            let receptive: usize = rest.iter().skip(1).product();
            (rest.iter().product(), first * receptive)
        }
    }
}

/// The latent weights of a module before an optimizer step, with their learning-rate scales:
/// what [`LatentWeightsBefore::finish`] needs to turn the optimizer's update of each latent
/// weight `W` into `W_old + scale·(W_step − W_old)` (the authors' code's rule), then clip.
/// The one implementation of the latent-weight update, shared by
/// `burn_qnn::learner::ClipLatentWeights` and [`crate::nn::clip_latent_weights`].
pub(crate) struct LatentWeightsBefore<B: QnnBackend> {
    /// Per latent weight with a scale other than 1: its value flattened, and the scale.
    weights: HashMap<ParamId, (Tensor<B, 1>, f64)>,
}

impl<B: QnnBackend> LatentWeightsBefore<B> {
    /// Nothing kept: [`LatentWeightsBefore::finish`] only clips.
    pub(crate) fn none() -> Self {
        Self {
            weights: HashMap::new(),
        }
    }

    /// Keeps the latent weights of `module` whose scale under `scale` is not 1 (none at all
    /// for [`LatentLrScale::None`]: then nothing is copied or walked).
    #[cfg(feature = "train")]
    pub(crate) fn of<M: Module<B>>(module: &M, scale: LatentLrScale) -> Self {
        if scale == LatentLrScale::None {
            return Self::none();
        }
        let mut keeper = LatentKeeper {
            path: LatentPath::default(),
            scale,
            weights: HashMap::new(),
        };
        module.visit(&mut keeper);
        Self {
            weights: keeper.weights,
        }
    }

    /// `module` after the optimizer step: each kept latent weight becomes
    /// `W_old + scale·(W_step − W_old)`, then, with `clip`, every latent weight is clipped to
    /// `[−1, 1]`. Other parameters are returned as they are; parameter ids and
    /// `require_grad` are kept.
    pub(crate) fn finish<M: Module<B>>(mut self, module: M, clip: bool) -> M {
        if !clip && self.weights.is_empty() {
            return module;
        }
        module.map(&mut LatentUpdater {
            path: LatentPath::default(),
            before: &mut self.weights,
            clip,
        })
    }
}

/// Collects the latent weights whose scale is not 1.
#[cfg(feature = "train")]
struct LatentKeeper<B: QnnBackend> {
    path: LatentPath,
    scale: LatentLrScale,
    weights: HashMap<ParamId, (Tensor<B, 1>, f64)>,
}

#[cfg(feature = "train")]
impl<B: QnnBackend> burn::module::ModuleVisitor<B> for LatentKeeper<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.path.at_latent_weight() {
            return;
        }
        let w = param.val();
        let scale = self.scale.of_weight(&w.dims());
        if scale != 1.0 {
            let n = w.shape().num_elements();
            self.weights
                .insert(param.id, (w.detach().reshape([n]), scale));
        }
    }
}

/// Scales the kept latent weights' updates and clips the latent weights.
struct LatentUpdater<'a, B: QnnBackend> {
    path: LatentPath,
    before: &'a mut HashMap<ParamId, (Tensor<B, 1>, f64)>,
    clip: bool,
}

impl<B: QnnBackend> ModuleMapper<B> for LatentUpdater<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.path.at_latent_weight() {
            return param;
        }
        let before = self.before.remove(&param.id);
        let clip = self.clip;
        param.map(|w| {
            let require_grad = w.is_require_grad();
            let w = w.detach();
            // A multi-device step may have moved the weight to another device.
            let before =
                before.map(|(old, scale)| (old.reshape(w.dims()).to_device(&w.device()), scale));
            // Detached last: only a leaf can be tracked again.
            let w = B::qnn_latent_update(w, before, clip).detach();
            if require_grad { w.require_grad() } else { w }
        })
    }
}

/// The paper's per-layer learning-rate scale, `1/sqrt(1.5/(fan_in + fan_out))` (the inverse of
/// the Glorot uniform bound): multiply a layer's learning rate by it. For a convolution,
/// `fan_in = k_h·k_w·C_in` and `fan_out = k_h·k_w·C_out` (see [`latent_weight_fans`]). Training
/// applies it through [`LatentLrScale::Glorot`].
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
