//! Whole-network inference of the paper's CIFAR-10 network (width 1) on NdArray: the packed
//! inference form against Burn's f32 layers of the same shapes, side by side, at batch 1 and 64.
//!
//! `cargo bench --bench network_inference`

use burn::{
    backend::NdArray,
    tensor::{Distribution, Tensor},
};
use burn_qnn::{
    inference::PackedNet,
    models::{NetConfig, Precision},
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

criterion_group!(benches, network_inference);
criterion_main!(benches);
