//! Bop, the binary optimizer of Helwegen et al. (2019), "Latent Weights Do Not Exist:
//! Rethinking Binarized Neural Network Optimization": binary weights flip when a moving
//! average of their gradient is strong enough and points their way; the other parameters keep
//! an ordinary optimizer (Larq's `CaseOptimizer` pattern).

use std::marker::PhantomData;

use burn::config::Config;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    GradientsParams, LearningRate, MultiGradientsParams, Optimizer, SimpleOptimizer,
};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Tensor};

use crate::nn::LatentPath;
use crate::quant::Quantizer;

/// Configuration of [`Bop`] (and of its per-tensor rule, [`BopRule`]); defaults from the paper.
#[derive(Config, Debug)]
pub struct BopConfig {
    /// The adaptivity rate `γ` of the gradient's moving average, in `(0, 1]`. Default: `1e-4`.
    #[config(default = 1e-4)]
    pub gamma: f64,
    /// The threshold `τ ≥ 0` the moving average must exceed for a weight to flip. Default:
    /// `1e-8`.
    #[config(default = 1e-8)]
    pub threshold: f64,
}

impl BopConfig {
    /// The per-tensor rule.
    ///
    /// # Panics
    /// If `gamma` is not in `(0, 1]` or `threshold` is negative or not finite.
    pub fn rule(&self) -> BopRule {
        assert!(
            self.gamma > 0.0 && self.gamma <= 1.0,
            "BopConfig: gamma must be in (0, 1], got {}",
            self.gamma
        );
        assert!(
            self.threshold.is_finite() && self.threshold >= 0.0,
            "BopConfig: threshold must be finite and non-negative, got {}",
            self.threshold
        );
        BopRule {
            gamma: self.gamma as f32,
            threshold: self.threshold as f32,
        }
    }

    /// Bop for the binary weights of a module `M` (the `weight` of every `BinaryLinear`,
    /// `BinaryConv2d`, `BitPlaneLinear` and `BitPlaneConv2d`), `others` for every other
    /// parameter.
    ///
    /// # Panics
    /// As [`BopConfig::rule`].
    pub fn init<B, M, O>(&self, others: O) -> Bop<O, M, B>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        Bop {
            binary: OptimizerAdaptor::from(self.rule()),
            others,
            module: PhantomData,
        }
    }
}

/// Bop's update of one binary weight tensor, as a Burn [`SimpleOptimizer`].
///
/// With `s(w) = +1` if `w ≥ 0`, `−1` otherwise (a latent weight counts as its sign), the
/// gradient `g` and the moving average `m` (`m₀ = 0`), one step is
///
/// - `m ← (1 − γ)·m + γ·g`;
/// - `w ← −s(w)` if `s(w)·m > τ` (the average is stronger than `τ` and has the weight's sign:
///   the loss falls by flipping), `w ← s(w)` otherwise.
///
/// The weights are `±1` after the first step. Bop has no learning rate: the `lr` Burn passes
/// is ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BopRule {
    gamma: f32,
    threshold: f32,
}

/// The state [`BopRule`] keeps per tensor: the gradient's moving average `m`.
#[derive(Record, Clone, Debug)]
pub struct BopState<B: Backend, const D: usize> {
    /// The moving average of the gradient.
    pub momentum: Tensor<B, D>,
}

impl<B: Backend> SimpleOptimizer<B> for BopRule {
    type State<const D: usize> = BopState<B, D>;

    fn step<const D: usize>(
        &self,
        _lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let momentum = match state {
            Some(state) => state.momentum * (1.0 - self.gamma) + grad * self.gamma,
            None => grad * self.gamma,
        };
        let sign = Quantizer::Sign.forward(tensor);
        let flip = (sign.clone() * momentum.clone()).greater_elem(self.threshold);
        let flipped = sign.clone().neg();
        (sign.mask_where(flip, flipped), Some(BopState { momentum }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        BopState {
            momentum: state.momentum.to_device(device),
        }
    }
}

/// Bop on a module's binary weights beside another optimizer on the rest: what Larq's
/// `CaseOptimizer(Bop, Adam)` does.
///
/// The binary weights are the `weight` of every `BinaryLinear`, `BinaryConv2d`,
/// `BitPlaneLinear` and `BitPlaneConv2d` at any depth; [`BopRule`] updates them (they become
/// `±1`), and `others` sees only the remaining gradients, so it never moves them. Its record is
/// `others`'s and Bop's moving averages. The learning rate goes to `others` only.
///
/// Do not give the binary weights a learning-rate scale
/// ([`crate::learner::ClipLatentWeights::with_lr_scale`]): a flip is not a step to scale.
/// Clipping is harmless (the weights are `±1`).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::{AdamConfig, GradientsParams, Optimizer};
/// use burn::tensor::Tensor;
/// use burn_qnn::nn::BinaryLinearConfig;
/// use burn_qnn::optim::BopConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = BinaryLinearConfig::new(3, 2).init::<B>(&device);
/// let mut optim = BopConfig::new().with_gamma(0.5).init(AdamConfig::new().init());
/// let x = Tensor::<B, 2>::from_floats([[1.0, -1.0, 0.5]], &device);
/// let grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
/// let layer = optim.step(1e-3, layer, grads);
/// let w = layer.weight.val().into_data().to_vec::<f32>().unwrap();
/// assert!(w.iter().all(|&v| v == 1.0 || v == -1.0));
/// ```
#[derive(Clone)]
pub struct Bop<O, M, B>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    binary: OptimizerAdaptor<BopRule, M, B>,
    others: O,
    module: PhantomData<M>,
}

impl<O, M, B> Bop<O, M, B>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    /// The optimizer of the parameters that are not binary weights.
    pub fn others(&self) -> &O {
        &self.others
    }
}

impl<O, M, B> Optimizer<M, B> for Bop<O, M, B>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    type Record = (
        O::Record,
        <OptimizerAdaptor<BopRule, M, B> as Optimizer<M, B>>::Record,
    );

    fn step(&mut self, lr: LearningRate, module: M, mut grads: GradientsParams) -> M {
        let binary = take_binary_grads(&module, &mut grads);
        let module = self.others.step(lr, module, grads);
        self.binary.step(lr, module, binary)
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        let (mut others, mut binary) = (Vec::new(), Vec::new());
        for (mut device_grads, device) in grads.grads {
            binary.push((take_binary_grads(&module, &mut device_grads), device));
            others.push((device_grads, device));
        }
        let module = self
            .others
            .step_multi(lr, module, MultiGradientsParams { grads: others });
        self.binary
            .step_multi(lr, module, MultiGradientsParams { grads: binary })
    }

    fn to_record(&self) -> Self::Record {
        (self.others.to_record(), self.binary.to_record())
    }

    fn load_record(mut self, (others, binary): Self::Record) -> Self {
        self.others = self.others.load_record(others);
        self.binary = self.binary.load_record(binary);
        self
    }
}

/// Moves the gradients of `module`'s binary weights out of `grads`.
fn take_binary_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
) -> GradientsParams {
    let mut taker = BinaryGradTaker {
        path: LatentPath::default(),
        from: grads,
        taken: GradientsParams::new(),
    };
    module.visit(&mut taker);
    taker.taken
}

struct BinaryGradTaker<'a> {
    path: LatentPath,
    from: &'a mut GradientsParams,
    taken: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for BinaryGradTaker<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.at_binary_weight()
            && let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.taken.register(param.id, grad);
        }
    }
}
