//! XNOR-popcount products against Burn's f32 `matmul` on the same ±1 data, on
//! `burn::backend::Wgpu` (fused CubeCL), on whatever adapter wgpu picks.
//!
//! Run: `cargo bench --features wgpu --bench wgpu_xnor_matmul` (or `scripts/gpu-bench.sh`).
//! Groups and functions as in the `xnor_matmul` bench: `burn_f32`, `xnor_packed` (both
//! operands packed beforehand), `xnor_prepacked_weights`, `xnor_float`. Every iteration waits
//! for the device (`Backend::sync`).
//!
//! `BURN_QNN_BENCH_SHAPES=small` keeps the shapes a software rasterizer (Mesa's lavapipe) runs
//! in minutes: 1024³ instead of 4096³ and 8192³.

use std::time::Duration;

use burn::backend::Wgpu;
use burn::tensor::{Device, Distribution, Tensor, backend::Backend};
use burn_qnn::ops::{self, Encoding, Packed};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

type B = Wgpu;

fn shapes() -> Vec<(&'static str, usize, usize, usize)> {
    let common = [
        ("64x4096x4096", 64, 4096, 4096),
        ("1x4096x4096", 1, 4096, 4096),
        ("conv_1024x1152x128", 32 * 32, 3 * 3 * 128, 128),
    ];
    let large = if std::env::var("BURN_QNN_BENCH_SHAPES").as_deref() == Ok("small") {
        vec![("1024x1024x1024", 1024, 1024, 1024)]
    } else {
        vec![
            ("8192x8192x8192", 8192, 8192, 8192),
            ("4096x4096x4096", 4096, 4096, 4096),
        ]
    };
    large.into_iter().chain(common).collect()
}

fn signs(shape: [usize; 2], device: &Device<B>) -> Tensor<B, 2> {
    Tensor::<B, 2>::random(shape, Distribution::Uniform(-1.0, 1.0), device).sign()
}

fn bench_products(c: &mut Criterion) {
    let device = Default::default();
    for (name, m, k, n) in shapes() {
        let a = signs([m, k], &device);
        let b = signs([k, n], &device);
        let a_packed = Packed::new(a.clone(), Encoding::Signs);
        let b_packed = Packed::new(b.clone().transpose(), Encoding::Signs);
        B::sync(&device).unwrap();

        let mut group = c.benchmark_group(format!("wgpu_{name}"));
        group.throughput(Throughput::Elements((m * k * n) as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(5));
        let run = |f: &dyn Fn() -> Tensor<B, 2>| {
            let out = f();
            B::sync(&device).unwrap();
            out
        };

        group.bench_function(BenchmarkId::new("burn_f32", name), |bench| {
            bench.iter(|| run(&|| a.clone().matmul(b.clone())))
        });
        group.bench_function(BenchmarkId::new("xnor_packed", name), |bench| {
            bench.iter(|| run(&|| ops::packed_matmul::<B, 2>(&a_packed, &b_packed)))
        });
        group.bench_function(BenchmarkId::new("xnor_prepacked_weights", name), |bench| {
            bench.iter(|| run(&|| ops::xnor_matmul_prepacked(a.clone(), &b_packed)))
        });
        group.bench_function(BenchmarkId::new("xnor_float", name), |bench| {
            bench.iter(|| run(&|| ops::xnor_matmul(a.clone(), b.clone())))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_products);
criterion_main!(benches);
