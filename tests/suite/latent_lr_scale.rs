//! The per-layer learning-rate scale of latent weights (`LatentLrScale::Glorot` in
//! `ClipLatentWeights`), checked against its definition: for an optimizer whose update is
//! linear in the rate, a wrapped step equals, on each latent weight, the inner optimizer run at
//! `lr·scale` on that weight, then clipped; every other parameter is exactly the inner step.

use std::collections::BTreeMap;

use burn::{
    module::{Module, ModuleVisitor, Param},
    nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, conv::Conv2d, conv::Conv2dConfig},
    optim::{
        AdamConfig, GradientsParams, Optimizer, SgdConfig, adaptor::OptimizerAdaptor,
        momentum::MomentumConfig,
    },
    record::{BinBytesRecorder, FullPrecisionSettings, Recorder},
    tensor::{Tensor, TensorData, backend::AutodiffBackend},
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    learner::ClipLatentWeights,
    nn::{
        BinaryConv2d, BinaryConv2dConfig, BinaryLinear, BinaryLinearConfig, BitPlaneConv2d,
        BitPlaneConv2dConfig, BitPlaneLinear, BitPlaneLinearConfig, LatentLrScale, QuantConv2d,
        QuantConv2dConfig, QuantLinear, QuantLinearConfig, glorot_lr_scale, latent_weight_fans,
    },
};

use crate::reference::values;

/// One layer of every latent-weight type, with non-square kernels and `C_in ≠ C_out` so that
/// a swapped fan would show, next to parameters that are not latent weights.
#[derive(Module, Debug)]
struct Mixed<B: QnnBackend> {
    conv: BinaryConv2d<B>,
    quant_conv: QuantConv2d<B>,
    plane_conv: BitPlaneConv2d<B>,
    fc: BinaryLinear<B>,
    quant_fc: QuantLinear<B>,
    plane_fc: BitPlaneLinear<B>,
    norm: BatchNorm<B>,
    float_fc: Linear<B>,
    float_conv: Conv2d<B>,
}

fn mixed<B: QnnBackend>(device: &B::Device) -> Mixed<B> {
    let mut m = Mixed {
        conv: BinaryConv2dConfig::new([3, 4], [3, 2]).init(device),
        quant_conv: QuantConv2dConfig::new([2, 5], [2, 2]).init(device),
        plane_conv: BitPlaneConv2dConfig::new([1, 6], [3, 3]).init(device),
        fc: BinaryLinearConfig::new(12, 5).init(device),
        quant_fc: QuantLinearConfig::new(7, 3).init(device),
        plane_fc: BitPlaneLinearConfig::new(30, 2).init(device),
        norm: BatchNormConfig::new(4).init(device),
        float_fc: LinearConfig::new(6, 4).init(device),
        float_conv: Conv2dConfig::new([2, 3], [2, 2]).init(device),
    };
    // Latent weights inside [−0.5, 0.5], so that how far a step goes decides the clipping.
    let half = |w: Tensor<B, 4>| w * 0.5;
    m.conv.weight = m.conv.weight.map(half);
    m.quant_conv.weight = m.quant_conv.weight.map(half);
    m.plane_conv.weight = m.plane_conv.weight.map(half);
    let half = |w: Tensor<B, 2>| w * 0.5;
    m.fc.weight = m.fc.weight.map(half);
    m.quant_fc.weight = m.quant_fc.weight.map(half);
    m.plane_fc.weight = m.plane_fc.weight.map(half);
    m
}

/// The scale of each latent weight by the formula, from the layer sizes of [`mixed`]:
/// `glorot_lr_scale(C_in·k_h·k_w, C_out·k_h·k_w)` for the convolutions,
/// `glorot_lr_scale(d_input, d_output)` for the fully connected layers. Keyed by the path of
/// [`Named`].
fn expected_scales() -> BTreeMap<&'static str, f64> {
    BTreeMap::from([
        ("conv.weight", glorot_lr_scale(3 * 3 * 2, 4 * 3 * 2)),
        ("quant_conv.weight", glorot_lr_scale(2 * 2 * 2, 5 * 2 * 2)),
        ("plane_conv.weight", glorot_lr_scale(9, 6 * 9)),
        ("fc.weight", glorot_lr_scale(12, 5)),
        ("quant_fc.weight", glorot_lr_scale(7, 3)),
        ("plane_fc.weight", glorot_lr_scale(30, 2)),
    ])
}

/// Batch norm's running statistics: visited as float tensors, but not trained (and shared
/// between clones of a module, so they are left out of the comparisons).
fn is_running_state(field: &str) -> bool {
    field.starts_with("running_")
}

/// Every trained float parameter's values, by field path (`conv.weight`, `norm.gamma`, …).
struct Named<B> {
    path: Vec<String>,
    all: BTreeMap<String, Vec<f32>>,
    _b: std::marker::PhantomData<B>,
}

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Named<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.last().is_some_and(|f| is_running_state(f)) {
            return;
        }
        let path = self.path.join(".");
        assert!(
            self.all.insert(path.clone(), values(param.val())).is_none(),
            "{path} twice"
        );
    }
}

fn named<B: QnnBackend>(m: &Mixed<B>) -> BTreeMap<String, Vec<f32>> {
    let mut visitor = Named::<B> {
        path: Vec::new(),
        all: BTreeMap::new(),
        _b: std::marker::PhantomData,
    };
    m.visit(&mut visitor);
    visitor.all
}

/// A gradient for every trained float parameter, deterministic (the same for every call with
/// the same `seed` on a module of the same shapes) and never 0.
struct MakeGrads<B: AutodiffBackend> {
    field: Vec<String>,
    seed: f32,
    grads: GradientsParams,
    count: usize,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MakeGrads<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.field.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.field.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.field.last().is_some_and(|f| is_running_state(f)) {
            return;
        }
        let tensor = param.val();
        let dims = tensor.dims().to_vec();
        let n: usize = dims.iter().product();
        self.count += 1;
        let k = self.count as f32;
        let data: Vec<f32> = (0..n)
            .map(|i| {
                let x = (1.3 * i as f32 + 0.7 * k + self.seed).sin();
                if x.abs() < 0.05 { 0.3 } else { x }
            })
            .collect();
        let grad =
            Tensor::<B::InnerBackend, D>::from_data(TensorData::new(data, dims), &tensor.device());
        self.grads.register::<B::InnerBackend, D>(param.id, grad);
    }
}

fn grads<B: QnnAutodiffBackend>(m: &Mixed<B>, seed: f32) -> GradientsParams {
    let mut visitor = MakeGrads::<B> {
        field: Vec::new(),
        seed,
        grads: GradientsParams::new(),
        count: 0,
        _b: std::marker::PhantomData,
    };
    m.visit(&mut visitor);
    visitor.grads
}

/// Two steps of `ClipLatentWeights(make()).with_lr_scale(Glorot)` from `start` at `lr`,
/// against references: `make()` at `lr` for the parameters that are not latent weights
/// (exactly), and, for each latent weight, `make()` at `lr·scale` on the same gradients,
/// clipped to `[−1, 1]` (within `tol`, the rounding of `W + s·(W' − W)` against `W − s·lr·u`).
/// Returns how many latent values were clipped over the two steps.
fn check_against_definition<B, O>(make: impl Fn() -> O, start: Mixed<B>, lr: f64, tol: f32) -> usize
where
    B: QnnAutodiffBackend,
    O: Optimizer<Mixed<B>, B>,
{
    let scales = expected_scales();
    let mut wrapped = ClipLatentWeights::new(make()).with_lr_scale(LatentLrScale::Glorot);
    let mut plain = make();
    let mut scaled: Vec<(f64, O)> = scales.values().map(|&s| (s, make())).collect();
    let mut clipped_values = 0;
    let mut module = start;
    for step in 0..2 {
        let seed = step as f32 * 2.1;
        let before = named(&module);
        let out = wrapped.step(lr, module.clone(), grads(&module, seed));
        let inner = named(&plain.step(lr, module.clone(), grads(&module, seed)));
        let by_scale: Vec<(f64, BTreeMap<String, Vec<f32>>)> = scaled
            .iter_mut()
            .map(|(s, optim)| {
                let m = optim.step(lr * *s, module.clone(), grads(&module, seed));
                (*s, named(&m))
            })
            .collect();
        let got = named(&out);
        assert_eq!(got.len(), inner.len());
        let mut latent_seen = 0;
        for (path, values) in &got {
            match scales.get(path.as_str()) {
                None => assert_eq!(
                    values, &inner[path],
                    "step {step}: {path} is not a latent weight: it must be the inner step"
                ),
                Some(&s) => {
                    latent_seen += 1;
                    let reference = &by_scale.iter().find(|(t, _)| *t == s).unwrap().1[path];
                    assert!(
                        inner[path].iter().zip(&before[path]).any(|(a, b)| a != b),
                        "step {step}: {path} did not move"
                    );
                    for (i, (&v, &r)) in values.iter().zip(reference).enumerate() {
                        let expected = r.clamp(-1.0, 1.0);
                        assert!(
                            (v - expected).abs() <= tol,
                            "step {step}: {path}[{i}] = {v}, expected {expected} (the inner \
                             optimizer at lr·{s} gives {r}, from {})",
                            before[path][i]
                        );
                        assert!((-1.0..=1.0).contains(&v), "{path}[{i}] = {v}");
                        if r.abs() > 1.0 {
                            clipped_values += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(latent_seen, 6, "{:?}", got.keys().collect::<Vec<_>>());
        module = out;
    }
    clipped_values
}

type Adam<B> = OptimizerAdaptor<burn::optim::Adam, Mixed<B>, B>;

/// Adam: the wrapped step is Adam at `lr·scale` on each latent weight, for two steps (so with
/// Adam's moments), and plain Adam elsewhere.
pub fn adam_matches_definition<B: QnnAutodiffBackend>(device: &B::Device) {
    B::seed(device, 11);
    let make = || -> Adam<B> { AdamConfig::new().with_epsilon(1e-8).init() };
    let clipped = check_against_definition(make, mixed(device), 1e-3, 2e-6);
    assert_eq!(clipped, 0, "a small step clipped nothing");
}

/// SGD with momentum: the same, its velocity carried over the second step.
pub fn sgd_matches_definition<B: QnnAutodiffBackend>(device: &B::Device) {
    B::seed(device, 12);
    let make = || {
        SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .init::<B, Mixed<B>>()
    };
    let clipped = check_against_definition(make, mixed(device), 1e-3, 2e-6);
    assert_eq!(clipped, 0, "a small step clipped nothing");
}

/// Clipping comes after the scale: with a rate at which the inner step alone stays inside
/// `[−1, 1]` but the scaled step does not, the latent weights are the scaled step clipped (so
/// exactly ±1 where it overshoots), not the clipped step scaled.
pub fn clipping_follows_scaling<B: QnnAutodiffBackend>(device: &B::Device) {
    B::seed(device, 13);
    let start = mixed(device);
    let lr = 0.3;
    // The inner step alone (Adam's first step moves each weight by about lr) stays inside.
    let mut plain: Adam<B> = AdamConfig::new().with_epsilon(1e-8).init();
    let inner = named(&plain.step(lr, start.clone(), grads(&start, 0.0)));
    for path in expected_scales().keys() {
        assert!(
            inner[*path].iter().all(|v| v.abs() <= 1.0),
            "{path}: the inner step alone leaves [−1, 1]"
        );
    }
    let make = || -> Adam<B> { AdamConfig::new().with_epsilon(1e-8).init() };
    let clipped = check_against_definition(make, start, lr, 2e-6);
    assert!(clipped > 0, "the scaled step never left [−1, 1]");
}

/// The scale of each layer type is the formula of its shape: `(C_in·k_h·k_w, C_out·k_h·k_w)`
/// for a convolution's `[C_out, C_in, k_h, k_w]` weight, `(d_input, d_output)` for a fully
/// connected layer's `[d_input, d_output]` weight; `None` is 1.
pub fn scale_of_each_layer<B: QnnAutodiffBackend>(device: &B::Device) {
    let m = mixed::<B>(device);
    let dims: [(&str, Vec<usize>); 6] = [
        ("conv.weight", m.conv.weight.dims().to_vec()),
        ("quant_conv.weight", m.quant_conv.weight.dims().to_vec()),
        ("plane_conv.weight", m.plane_conv.weight.dims().to_vec()),
        ("fc.weight", m.fc.weight.dims().to_vec()),
        ("quant_fc.weight", m.quant_fc.weight.dims().to_vec()),
        ("plane_fc.weight", m.plane_fc.weight.dims().to_vec()),
    ];
    let expected = expected_scales();
    for (path, dims) in &dims {
        assert_eq!(
            LatentLrScale::Glorot.of_weight(dims),
            expected[path],
            "{path} {dims:?}"
        );
        assert_eq!(LatentLrScale::None.of_weight(dims), 1.0);
    }
    assert_eq!(m.conv.weight.dims(), [4, 3, 3, 2]);
    assert_eq!(latent_weight_fans(&[4, 3, 3, 2]), (18, 24));
    assert_eq!(m.fc.weight.dims(), [12, 5]);
    assert_eq!(latent_weight_fans(&[12, 5]), (12, 5));
    // The paper's CIFAR-10 network: 128C3 → 256C3 and 8192 → 1024.
    let conv = LatentLrScale::Glorot.of_weight(&[256, 128, 3, 3]);
    assert!((conv - (3456.0f64 / 1.5).sqrt()).abs() < 1e-9, "{conv}");
    let fc = LatentLrScale::Glorot.of_weight(&[8192, 1024]);
    assert!((fc - (9216.0f64 / 1.5).sqrt()).abs() < 1e-9, "{fc}");
}

/// The record is the inner optimizer's (the type says so), and loading one keeps the scale:
/// the reloaded optimizer's next step is the one of the optimizer that never stopped.
pub fn record_is_the_inner_record<B: QnnAutodiffBackend>(device: &B::Device) {
    B::seed(device, 14);
    let m = mixed::<B>(device);
    let mut optim = ClipLatentWeights::new(AdamConfig::new().init::<B, Mixed<B>>())
        .with_lr_scale(LatentLrScale::Glorot);
    let m = optim.step(1e-3, m.clone(), grads(&m, 0.0));
    let bytes = BinBytesRecorder::<FullPrecisionSettings>::new()
        .record(optim.to_record(), ())
        .unwrap();
    let record = BinBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes, device)
        .unwrap();
    let mut reloaded = ClipLatentWeights::new(AdamConfig::new().init::<B, Mixed<B>>())
        .with_lr_scale(LatentLrScale::Glorot)
        .load_record(record);
    assert_eq!(reloaded.lr_scale(), LatentLrScale::Glorot);
    let a = named(&optim.step(1e-3, m.clone(), grads(&m, 1.0)));
    let b = named(&reloaded.step(1e-3, m.clone(), grads(&m, 1.0)));
    assert_eq!(a, b);
}

#[test]
fn parses_and_displays() {
    for scale in [LatentLrScale::None, LatentLrScale::Glorot] {
        assert_eq!(scale.to_string().parse::<LatentLrScale>(), Ok(scale));
    }
    assert_eq!("Glorot".parse::<LatentLrScale>(), Ok(LatentLrScale::Glorot));
    let error = "he".parse::<LatentLrScale>().unwrap_err();
    assert!(error.to_string().contains("`he`"), "{error}");
    assert_eq!(LatentLrScale::default(), LatentLrScale::None);
}

/// On real gradients of a network (a forward and a backward between steps), the scaled
/// wrapper keeps the latent weights trainable: each step's output takes the next backward, and
/// every latent weight stays inside `[−1, 1]`.
pub fn trains_a_network<B: QnnAutodiffBackend>(device: &B::Device) {
    use burn_qnn::{
        data::ImageBatcher,
        loss::SquaredHingeLoss,
        models::{Net, NetConfig},
    };

    B::seed(device, 15);
    let data = crate::learner::two_halves(16);
    let batcher = ImageBatcher::for_dataset(&data);
    let mut net: Net<B> = NetConfig::new(1, 8, vec![4], vec![16])
        .with_classes(2)
        .init(device);
    let mut optim = ClipLatentWeights::new(AdamConfig::new().init::<B, Net<B>>())
        .with_lr_scale(LatentLrScale::Glorot);
    let mut losses = Vec::new();
    for _ in 0..6 {
        let batch: burn_qnn::data::ImageBatch<B> = burn::data::dataloader::batcher::Batcher::batch(
            &batcher,
            data.items().to_vec(),
            device,
        );
        let loss = SquaredHingeLoss.forward(net.forward(batch.images), batch.targets);
        losses.push(values(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(0.05, net, grads);
    }
    // Every `weight` of this binary network is a latent weight (batch norm has none).
    let mut weights = Weights::<B> {
        field: Vec::new(),
        max_abs: Vec::new(),
        _b: std::marker::PhantomData,
    };
    net.visit(&mut weights);
    assert_eq!(
        weights.max_abs.len(),
        3,
        "a conv, a hidden and an output layer"
    );
    assert!(
        weights.max_abs.iter().all(|&m| m <= 1.0),
        "{:?}",
        weights.max_abs
    );
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[5] < losses[0],
        "the loss did not go down: {losses:?}"
    );
}

/// The largest `|w|` of each parameter named `weight`.
struct Weights<B> {
    field: Vec<String>,
    max_abs: Vec<f32>,
    _b: std::marker::PhantomData<B>,
}

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Weights<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.field.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.field.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.field.last().is_some_and(|f| f == "weight") {
            let max = values(param.val())
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            self.max_abs.push(max);
        }
    }
}
