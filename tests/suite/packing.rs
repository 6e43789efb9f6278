//! Packing models of the user's own: `inference::pack`, `save_packed` and `load_packed` on a
//! model that is not `models::Net` (residual addition, mixed binary, k-bit, bit-plane and Burn
//! layers, channel counts that are not multiples of the word sizes).

use burn::{
    module::{Module, Param},
    nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d},
    record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder},
    tensor::{Tensor, activation::relu},
};
use burn_qnn::{
    QnnBackend,
    inference::{PackedNetError, load_packed, pack, save_packed},
    nn::{
        BatchNormSign, BatchNormSignConfig, BinaryConv2d, BinaryConv2dConfig, BinaryLinear,
        BinaryLinearConfig, BitPlaneConv2d, BitPlaneConv2dConfig, QuantConv2d, QuantConv2dConfig,
        QuantLinear, QuantLinearConfig,
    },
    quant::{self, Bits, Pow2Range, Quantizer},
};

use crate::{
    modules::images,
    reference::{assert_exact, tensor, uniform, values},
};

/// A model of its own: bit-plane input layer, a residual binary block, a k-bit convolution,
/// binary and k-bit fully connected layers and Burn's `Linear` at the end.
#[derive(Module, Debug)]
pub struct Residual<B: QnnBackend> {
    pub stem: BitPlaneConv2d<B>,
    pub stem_norm: BatchNorm<B>,
    pub body: BinaryConv2d<B>,
    pub body_sign: BatchNormSign<B>,
    pub reduce: QuantConv2d<B>,
    pub hidden: BinaryLinear<B>,
    pub hidden_norm: BatchNorm<B>,
    pub quant: QuantLinear<B>,
    pub head: Linear<B>,
}

/// The model's widths.
#[derive(Debug, Clone, Copy)]
pub struct Widths {
    pub in_channels: usize,
    pub channels: usize,
    pub hidden: usize,
    pub scaled: bool,
}

impl Widths {
    pub fn init<B: QnnBackend>(self, device: &B::Device) -> Residual<B> {
        let same = PaddingConfig2d::Explicit(1, 1, 1, 1);
        let c = self.channels;
        Residual {
            stem: BitPlaneConv2dConfig::new([self.in_channels, c], [3, 3])
                .with_padding(same.clone())
                .init(device),
            stem_norm: BatchNormConfig::new(c).init(device),
            body: BinaryConv2dConfig::new([c, c], [3, 3])
                .with_padding(same)
                .with_scaling(self.scaled)
                .init(device),
            body_sign: BatchNormSignConfig::new(c).init(device),
            reduce: QuantConv2dConfig::new([c, 6], [2, 2])
                .with_stride([2, 2])
                .with_bits(Bits::TWO, Bits::TWO)
                .init(device),
            hidden: BinaryLinearConfig::new(6 * 4 * 4, self.hidden)
                .with_scaling(self.scaled)
                .init(device),
            hidden_norm: BatchNormConfig::new(self.hidden).init(device),
            quant: QuantLinearConfig::new(self.hidden, 9)
                .with_bits(Bits::new(3).unwrap(), Bits::TWO)
                .init(device),
            head: LinearConfig::new(9, 4).init(device),
        }
    }
}

impl<B: QnnBackend> Residual<B> {
    /// `[N, C, 8, 8]` images in `[−1, 1]` → `[N, 4]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = quant::sign(self.stem_norm.forward(self.stem.forward(images)));
        let block = self.body_sign.forward(self.body.forward(x.clone()));
        let x = x + block; // residual addition: values in {−2, 0, 2}
        let x = self.reduce.forward(x.clamp(0.0, 1.0));
        let x = x.flatten::<2>(1, 3);
        let x = self
            .hidden_norm
            .forward(self.hidden.forward(x).unsqueeze_dim::<3>(2));
        let x = relu(x.squeeze_dim::<2>(2)).clamp(0.0, 1.0);
        self.head.forward(self.quant.forward(x))
    }
}

/// Random batch norm statistics and scales in every norm of the model, so that the thresholds
/// land inside the products' range.
fn scramble<B: QnnBackend>(model: Residual<B>, seed: u64) -> Residual<B> {
    let norm = |norm: BatchNorm<B>, spread: f32, seed: u64| {
        let c = norm.gamma.dims()[0];
        let device = norm.gamma.device();
        let vector = |v: Vec<f32>| Param::from_tensor(tensor::<B, 1>(v, [c], &device));
        BatchNorm {
            gamma: vector(uniform(c, -2.0, 2.0, seed)),
            beta: vector(uniform(c, -1.0, 1.0, seed + 1)),
            running_mean: burn::module::RunningState::new(
                vector(uniform(c, -spread, spread, seed + 2)).val(),
            ),
            running_var: burn::module::RunningState::new(
                vector(uniform(
                    c,
                    0.5 * spread * spread,
                    2.0 * spread * spread,
                    seed + 3,
                ))
                .val(),
            ),
            ..norm
        }
    };
    Residual {
        stem_norm: norm(model.stem_norm, 8.0, seed),
        body_sign: BatchNormSign {
            norm: norm(model.body_sign.norm, 8.0, seed + 10),
        },
        hidden_norm: norm(model.hidden_norm, 6.0, seed + 20),
        ..model
    }
}

const WIDTHS: [Widths; 2] = [
    Widths {
        in_channels: 3,
        channels: 37,
        hidden: 70,
        scaled: false,
    },
    Widths {
        in_channels: 1,
        channels: 5,
        hidden: 33,
        scaled: true,
    },
];

/// The packed form of a model of the user's own gives its outputs exactly, keeps bits in
/// place of the latent weights, and the same after a save and load.
pub fn packed_user_models<B: QnnBackend>(device: &B::Device) {
    for (i, widths) in WIDTHS.into_iter().enumerate() {
        let model = scramble(widths.init::<B>(device), 5 + i as u64);
        let packed = pack(&model).unwrap();
        for layer in [
            &packed.hidden.packed,
            &packed.body.packed,
            &packed.stem.packed,
        ] {
            assert!(layer.is_packed(), "{widths:?}");
        }
        assert!(packed.quant.packed.is_packed() && packed.reduce.packed.is_packed());
        assert_eq!(
            packed.body.weight.dims(),
            [0; 4],
            "the latent weights are emptied"
        );
        assert_eq!(
            packed.head.weight.dims(),
            model.head.weight.dims(),
            "Burn's layers stay"
        );
        assert_eq!(
            packed.body.packed.stored_bytes(),
            widths.channels * (widths.channels * 9).div_ceil(64) * 8
                + if widths.scaled {
                    4 * widths.channels
                } else {
                    0
                },
            "one bit a weight, rows of 64-bit words"
        );

        for n in [1, 3] {
            let x = images::<B>(n, widths.in_channels, 8, device);
            let expected = values(model.forward(x.clone()));
            assert_exact(
                "packed model",
                &expected,
                &values(packed.forward(x)),
                &expected,
            );
        }
        assert_eq!(
            pack(&packed)
                .unwrap()
                .into_record()
                .body
                .packed
                .unwrap()
                .words
                .val()
                .into_data(),
            packed
                .clone()
                .into_record()
                .body
                .packed
                .unwrap()
                .words
                .val()
                .into_data(),
            "packing a packed model keeps it"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.mpk");
        save_packed(&model, &path).unwrap();
        let loaded = load_packed(widths.init::<B>(device), &path, device).unwrap();
        let x = images::<B>(2, widths.in_channels, 8, device);
        let expected = values(model.forward(x.clone()));
        assert_exact(
            "loaded model",
            &expected,
            &values(loaded.forward(x)),
            &expected,
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["model.mpk"], "only the finished file is left");
    }
}

/// The f32 record's bytes and the packed record's bytes of `model`.
fn record_sizes<B: QnnBackend, M: Module<B>>(model: &M) -> (usize, usize) {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = |model: M| Recorder::<B>::record(&recorder, model.into_record(), ()).unwrap();
    (
        bytes(model.clone()).len(),
        bytes(pack(model).unwrap()).len(),
    )
}

/// A binary multi-layer perceptron of the user's own.
#[derive(Module, Debug)]
pub struct Mlp<B: QnnBackend> {
    layers: Vec<BinaryLinear<B>>,
    norms: Vec<BatchNorm<B>>,
}

/// A network dominated by binary layers packs into a record at least 25× smaller than its f32
/// record.
pub fn packed_record_is_25_times_smaller<B: QnnBackend>(device: &B::Device) {
    let widths = [784, 1000, 1000, 10];
    let model = Mlp::<B> {
        layers: widths
            .windows(2)
            .map(|w| BinaryLinearConfig::new(w[0], w[1]).init(device))
            .collect(),
        norms: widths[1..]
            .iter()
            .map(|&w| BatchNormConfig::new(w).init(device))
            .collect(),
    };
    let (f32_bytes, packed_bytes) = record_sizes::<B, _>(&model);
    let ratio = f32_bytes as f64 / packed_bytes as f64;
    assert!(
        ratio >= 25.0,
        "{f32_bytes} / {packed_bytes} bytes = {ratio:.1}×"
    );
}

/// Files that are not a packed record of the model give typed errors naming what is wrong.
pub fn bad_packed_files<B: QnnBackend>(device: &B::Device) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mpk");
    let widths = WIDTHS[0];
    save_packed(&widths.init::<B>(device), &path).unwrap();
    let fresh = || widths.init::<B>(device);

    let missing = load_packed(fresh(), dir.path().join("missing.mpk"), device);
    assert!(
        matches!(missing, Err(PackedNetError::Io { .. })),
        "{missing:?}"
    );

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let truncated = load_packed(fresh(), &path, device);
    assert!(
        matches!(truncated, Err(PackedNetError::Recorder { .. })),
        "{truncated:?}"
    );
    std::fs::write(&path, &bytes).unwrap();

    let other = Widths {
        channels: widths.channels + 1,
        ..widths
    };
    match load_packed(other.init::<B>(device), &path, device) {
        Err(PackedNetError::Invalid { layer, what }) => {
            assert!(layer.starts_with("stem"), "{layer}: {what}");
        }
        other => panic!("a file of another configuration: {other:?}"),
    }

    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let unpacked = Recorder::<B>::record(&recorder, fresh().into_record(), ()).unwrap();
    std::fs::write(&path, unpacked).unwrap();
    match load_packed(fresh(), &path, device) {
        Err(PackedNetError::Invalid { layer, what }) => {
            assert_eq!(layer, "stem.weight", "{what}");
        }
        other => panic!("the unpacked model's record: {other:?}"),
    }

    let pow2 = QuantLinearConfig::new(4, 3)
        .with_weight_quantizer(Quantizer::Pow2(Pow2Range::FULL))
        .init::<B>(device);
    match pack(&PowerOfTwo { inner: pow2 }) {
        Err(PackedNetError::NoPackedForm { layer, reason }) => {
            assert_eq!(layer, "inner");
            assert!(reason.contains("code grid"), "{reason}");
        }
        other => panic!("a power-of-two quantizer: {other:?}"),
    }
}

#[derive(Module, Debug)]
struct PowerOfTwo<B: QnnBackend> {
    inner: QuantLinear<B>,
}

/// The packed model of an `Autodiff` backend's inner model, and of the autodiff model itself.
pub fn packs_under_autodiff<B: burn_qnn::QnnAutodiffBackend>(device: &B::Device)
where
    B::InnerBackend: QnnBackend,
{
    let widths = WIDTHS[1];
    let model = scramble(widths.init::<B>(device), 9);
    let inner = burn::module::AutodiffModule::valid(&model);
    let images_inner = images::<B::InnerBackend>(2, widths.in_channels, 8, device);
    let expected = values(inner.forward(images_inner.clone()));
    let packed = pack(&inner).unwrap();
    assert_exact(
        "packed inner model",
        &expected,
        &values(packed.forward(images_inner)),
        &expected,
    );
    let packed = pack(&model).unwrap();
    let expected = values(model.forward(images::<B>(2, widths.in_channels, 8, device)));
    let found = values(packed.forward(images::<B>(2, widths.in_channels, 8, device)));
    assert_exact("packed autodiff model", &expected, &found, &expected);
}

/// `summary` walks any model: a row per module with parameters, the weights in their stored
/// precision, the same before and after packing.
pub fn summary_of_a_user_model<B: QnnBackend>(device: &B::Device) {
    let widths = WIDTHS[1];
    let model = widths.init::<B>(device);
    let s = burn_qnn::models::summary(&model);
    let names: Vec<&str> = s.layers.iter().map(|row| row.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "stem (BitPlaneConv2d)",
            "stem_norm (BatchNorm)",
            "body (BinaryConv2d)",
            "body_sign.norm (BatchNorm)",
            "reduce (QuantConv2d)",
            "hidden (BinaryLinear)",
            "hidden_norm (BatchNorm)",
            "quant (QuantLinear)",
            "head (Linear)",
        ]
    );
    let (c, c_in, h) = (
        widths.channels as u64,
        widths.in_channels as u64,
        widths.hidden as u64,
    );
    let row = |name: &str| {
        s.layers
            .iter()
            .find(|row| row.name.starts_with(name))
            .unwrap()
    };
    assert_eq!(row("stem ").params_1bit, c * c_in * 9);
    assert_eq!(row("stem ").params_32bit, c, "the bias");
    assert_eq!(row("body ").params_1bit, c * c * 9);
    assert_eq!(
        row("body ").params_32bit,
        c + c,
        "bias and the scale of `scaling`"
    );
    assert_eq!(row("body_sign").params_32bit, 4 * c);
    assert_eq!(
        (row("reduce").params_kbit, row("reduce").kbit_bits),
        (6 * c * 4, 2 * 6 * c * 4)
    );
    assert_eq!(row("hidden ").params_1bit, 96 * h);
    assert_eq!(
        (row("quant").params_kbit, row("quant").kbit_bits),
        (9 * h, 3 * 9 * h)
    );
    assert_eq!(row("head").params_32bit, 9 * 4 + 4);
    assert_eq!(
        row("reduce").memory_bytes(),
        (2 * 6 * c * 4).div_ceil(8) + 4 * 6,
        "2-bit weights and an f32 bias"
    );
    assert!(s.to_string().contains("hidden (BinaryLinear)"));

    let packed = burn_qnn::models::summary(&pack(&model).unwrap());
    assert_eq!(packed, s, "the packed model has the same rows");
}

/// A layer as the crate defined it before layers had packed weights: its record must still
/// load into today's layer, as an unpacked layer.
#[derive(Module, Debug)]
struct BinaryLinearBeforePacking<B: QnnBackend> {
    weight: Param<burn::tensor::Tensor<B, 2>>,
    bias: Option<Param<burn::tensor::Tensor<B, 1>>>,
    binarize_input: bool,
    scaling: bool,
}

/// Records written before layers had a `packed` field load as unpacked layers.
pub fn records_from_before_packing_load<B: QnnBackend>(device: &B::Device) {
    let layer = BinaryLinearConfig::new(40, 3).init::<B>(device);
    // (A clone of a lazily initialized parameter initializes on its own: initialize first.)
    let old = BinaryLinearBeforePacking {
        weight: Param::from_tensor(layer.weight.val()),
        bias: layer.bias.clone(),
        binarize_input: true,
        scaling: false,
    };
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = Recorder::<B>::record(&recorder, old.into_record(), ()).unwrap();
    let record = Recorder::<B>::load(&recorder, bytes, device).unwrap();
    let loaded = BinaryLinearConfig::new(40, 3)
        .init::<B>(device)
        .load_record(record);
    assert!(!loaded.packed.is_packed());
    let x = tensor::<B, 2>(uniform(2 * 40, -1.0, 1.0, 3), [2, 40], device);
    let expected = values(layer.forward(x.clone()));
    assert_exact(
        "old record",
        &expected,
        &values(loaded.forward(x)),
        &expected,
    );
}

/// Binary layers whose inputs stay real (`binarize_input: false`) compute with the unpacked
/// signs once packed: the same outputs as the trained layers.
pub fn packed_layers_with_real_inputs<B: QnnBackend>(device: &B::Device) {
    let linear = BinaryLinearConfig::new(70, 9)
        .with_binarize_input(false)
        .with_scaling(true)
        .init::<B>(device);
    let x = tensor::<B, 2>(uniform(3 * 70, -2.0, 2.0, 11), [3, 70], device);
    let expected = values(linear.forward(x.clone()));
    let packed = pack(&linear).unwrap();
    assert_exact(
        "packed linear",
        &expected,
        &values(packed.forward(x)),
        &expected,
    );

    let conv = BinaryConv2dConfig::new([5, 7], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_binarize_input(false)
        .init::<B>(device);
    let x = tensor::<B, 4>(uniform(2 * 5 * 6 * 6, -2.0, 2.0, 12), [2, 5, 6, 6], device);
    let expected = values(conv.forward(x.clone()));
    let packed = pack(&conv).unwrap();
    assert_exact(
        "packed conv",
        &expected,
        &values(packed.forward(x)),
        &expected,
    );
}
