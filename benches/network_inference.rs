//! Whole-network inference of the paper's CIFAR-10 network (width 1) on NdArray: the packed
//! inference form against Burn's f32 layers of the same shapes, side by side, at batch 1 and 64.
//! And the activation between binary layers of a model of one's own: `nn::BatchNormSign`
//! against Burn's `BatchNorm` followed by `quant::sign` on the same data (the custom-model
//! example's shapes, 256 images of 64 channels of 8×8); two `nn::BinaryConvBlock`s chained
//! on signs against their layers one after the other; and the example's packed
//! `nn::BitPlaneConvBlock` (1 → 64 channels, 3×3) against its layers, at batch 1 and 256.
//!
//! `cargo bench --bench network_inference`

use burn::{
    backend::NdArray,
    nn::PaddingConfig2d,
    tensor::{Distribution, Tensor},
};
use burn_qnn::{
    inference::{PackedNet, pack},
    models::{NetConfig, Precision},
    nn::{
        BatchNormSignConfig, BinaryConv2dConfig, BinaryConvBlockConfig, BitPlaneConv2dConfig,
        BitPlaneConvBlockConfig, Signs, max_pool2d,
    },
    quant,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn network_inference(c: &mut Criterion) {
    let device = Default::default();
    let config = NetConfig::cifar10();
    let binary = config.init::<NdArray>(&device);
    let packed = PackedNet::from_net(&binary).expect("a binary network packs");
    let float = config
        .with_precision(Precision::Float)
        .init::<NdArray>(&device);
    let mut group = c.benchmark_group("cifar10_network");
    group.sample_size(10);
    for batch in [1, 64] {
        let images = Tensor::<NdArray, 4>::random(
            [batch, 3, 32, 32],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        group.bench_with_input(BenchmarkId::new("burn_f32", batch), &images, |b, x| {
            b.iter(|| float.forward(x.clone()).into_data())
        });
        group.bench_with_input(BenchmarkId::new("packed", batch), &images, |b, x| {
            b.iter(|| packed.forward(x.clone()).into_data())
        });
    }
    group.finish();
}

fn batch_norm_sign(c: &mut Criterion) {
    let device = Default::default();
    let channels = 64;
    let mut layer = BatchNormSignConfig::new(channels).init::<NdArray>(&device);
    let vector = |lo: f64, hi: f64| {
        Tensor::<NdArray, 1>::random([channels], Distribution::Uniform(lo, hi), &device)
    };
    layer.norm.gamma = burn::module::Param::from_tensor(vector(-2.0, 2.0));
    layer.norm.beta = burn::module::Param::from_tensor(vector(-1.0, 1.0));
    layer.norm.running_mean = burn::module::RunningState::new(vector(-5.0, 5.0));
    layer.norm.running_var = burn::module::RunningState::new(vector(1.0, 30.0));
    let x = Tensor::<NdArray, 4>::random(
        [256, channels, 8, 8],
        Distribution::Uniform(-20.0, 20.0),
        &device,
    );
    let mut group = c.benchmark_group("batch_norm_sign_256x64x8x8");
    group.sample_size(20);
    group.bench_function("burn_batch_norm_then_sign", |b| {
        b.iter(|| quant::sign(layer.norm.forward(x.clone())).into_data())
    });
    group.bench_function("batch_norm_sign", |b| {
        b.iter(|| layer.forward(x.clone()).into_data())
    });
    group.finish();
}

/// Two packed binary convolution blocks (64 → 64 channels, 3 × 3, no bias, the second pooling) on 256
/// images of 8 × 8: their parts one after the other (convolution to floats, pooling, batch norm
/// and sign in one pass) against the blocks chained on signs (batch norm folded into the
/// kernel, bits between the blocks).
fn binary_conv_blocks(c: &mut Criterion) {
    let device = Default::default();
    let channels = 64;
    let block = |pool: bool| {
        let mut block = BinaryConvBlockConfig::new(
            BinaryConv2dConfig::new([channels, channels], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false),
        )
        .with_pool(pool)
        .init::<NdArray>(&device);
        let vector = |lo: f64, hi: f64| {
            Tensor::<NdArray, 1>::random([channels], Distribution::Uniform(lo, hi), &device)
        };
        let norm = &mut block.sign.norm;
        norm.gamma = burn::module::Param::from_tensor(vector(-2.0, 2.0));
        norm.beta = burn::module::Param::from_tensor(vector(-1.0, 1.0));
        norm.running_mean = burn::module::RunningState::new(vector(-20.0, 20.0));
        norm.running_var = burn::module::RunningState::new(vector(10.0, 300.0));
        pack(&block).expect("a binary block packs")
    };
    let (first, second) = (block(false), block(true));
    let mut group = c.benchmark_group("binary_conv_blocks_64x8x8");
    group.sample_size(20);
    for batch in [1, 256] {
        let x = Tensor::<NdArray, 4>::random(
            [batch, channels, 8, 8],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        group.bench_with_input(
            BenchmarkId::new("layers_one_after_the_other", batch),
            &x,
            |b, x| {
                b.iter(|| {
                    let y = first.sign.forward(first.conv.forward(x.clone()));
                    let y = max_pool2d(second.conv.forward(y), [2, 2], [2, 2]);
                    second.sign.forward(y).into_data()
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("blocks_on_signs", batch), &x, |b, x| {
            b.iter(|| {
                let signs = second.forward_signs(first.forward_signs(Signs::of(x.clone())));
                signs.into_tensor().into_data()
            })
        });
    }
    group.finish();
}

fn bit_plane_block(c: &mut Criterion) {
    let device = Default::default();
    let block = BitPlaneConvBlockConfig::new(
        BitPlaneConv2dConfig::new([1, 64], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
    )
    .init::<NdArray>(&device);
    let block = pack(&block).expect("a bit-plane block packs");
    let mut group = c.benchmark_group("bit_plane_block_1to64x8x8");
    group.sample_size(20);
    for batch in [1, 256] {
        let images = Tensor::<NdArray, 4>::random(
            [batch, 1, 8, 8],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        group.bench_with_input(
            BenchmarkId::new("layers_one_after_the_other", batch),
            &images,
            |b, x| {
                b.iter(|| {
                    block
                        .sign
                        .forward(block.conv.forward(x.clone()))
                        .into_data()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("block_to_signs", batch),
            &images,
            |b, x| b.iter(|| block.forward_signs(x.clone()).is_packed()),
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    network_inference,
    batch_norm_sign,
    binary_conv_blocks,
    bit_plane_block
);
criterion_main!(benches);
