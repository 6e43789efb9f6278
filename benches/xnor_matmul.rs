//! XNOR-popcount products against Burn's f32 `matmul` on the same ±1 data, on burn-ndarray.
//!
//! Run: `cargo bench --bench xnor_matmul`. Each group times, side by side:
//! - `burn_f32`: `Tensor::matmul` on `NdArray<f32>` (what a Burn user runs today);
//! - `xnor_packed`: both operands packed beforehand (the kernel alone);
//! - `xnor_prepacked_weights`: weights packed beforehand, activations packed in the call
//!   (inference);
//! - `xnor_float`: both operands packed in the call (`ops::xnor_matmul` on float tensors);
//! - `kernel_popcount` and `kernel_int8_<path>`: two kernels on the same packed rows, the
//!   XOR-popcount one (`kernels::xnor::xnor_gemm`) and the exact int8 product of the expanded
//!   ±1 rows (`kernels::xnor::xnor_gemm_int8`) on the int8 path this CPU runs first (`amx` on
//!   Intel Sapphire Rapids and later);
//! - `popcount_ceiling`, `amx_ceiling` and `vnni_ceiling`: one core's ceilings, the popcount
//!   register tile, AMX's int8 tile products (tiles loaded once, or before each group of
//!   products from rows on cache lines or straddling two) and AVX-512 VNNI's `VPDPBUSD` on
//!   registers.
//!
//! Throughput is in binary multiply-accumulates (`M·K·N` per call). Set `BURN_QNN_ISA` to
//! `avx512`, `avx2` or `portable` to pin an instruction set.

use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Device, Distribution, Tensor};
use burn_qnn::kernels::{
    int8::{self, AmxTileLoads, Int8Isa},
    isa::active_isa,
    pack, words_per_row, xnor,
};
use burn_qnn::ops::{self, Encoding, Packed};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

type B = NdArray<f32>;

/// `(name, M, K, N)`: two square products, batch-64 and batch-1 inference, and a convolution as im2col
/// (32×32 outputs, 3×3×128 inputs, 128 channels).
const SHAPES: [(&str, usize, usize, usize); 5] = [
    ("2048x2048x2048", 2048, 2048, 2048),
    ("4096x4096x4096", 4096, 4096, 4096),
    ("64x4096x4096", 64, 4096, 4096),
    ("1x4096x4096", 1, 4096, 4096),
    ("conv_1024x1152x128", 32 * 32, 3 * 3 * 128, 128),
];

fn signs(shape: [usize; 2], device: &Device<B>) -> Tensor<B, 2> {
    Tensor::<B, 2>::random(shape, Distribution::Uniform(-1.0, 1.0), device).sign()
}

fn bench_products(c: &mut Criterion) {
    let device = Default::default();
    for (name, m, k, n) in SHAPES {
        let a = signs([m, k], &device);
        let b = signs([k, n], &device);
        let a_packed = Packed::new(a.clone(), Encoding::Signs);
        let b_packed = Packed::new(b.clone().transpose(), Encoding::Signs);

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements((m * k * n) as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(if m * n >= 1 << 20 { 20 } else { 4 }));

        group.bench_function(BenchmarkId::new("burn_f32", name), |bench| {
            bench.iter(|| a.clone().matmul(b.clone()))
        });
        group.bench_function(BenchmarkId::new("xnor_packed", name), |bench| {
            bench.iter(|| ops::packed_matmul::<B, 2>(&a_packed, &b_packed))
        });
        group.bench_function(BenchmarkId::new("xnor_prepacked_weights", name), |bench| {
            bench.iter(|| ops::xnor_matmul_prepacked(a.clone(), &b_packed))
        });
        group.bench_function(BenchmarkId::new("xnor_float", name), |bench| {
            bench.iter(|| ops::xnor_matmul(a.clone(), b.clone()))
        });
        let rows = |t: &Tensor<B, 2>, [r, len]: [usize; 2]| {
            let values: Vec<f32> = t.to_data().to_vec().expect("f32 values");
            let mut words = vec![0; r * words_per_row(len)];
            pack::pack_signs(&values, r, len, &mut words);
            words
        };
        let (a_rows, b_rows) = (rows(&a, [m, k]), rows(&b.clone().transpose(), [n, k]));
        let mut out = vec![0f32; m * n];
        group.bench_function(BenchmarkId::new("kernel_popcount", name), |bench| {
            bench.iter(|| xnor::xnor_gemm(&a_rows, &b_rows, m, n, k, &mut out))
        });
        let int8_path = Int8Isa::available()[0];
        let id = BenchmarkId::new(format!("kernel_int8_{}", int8_path.name()), name);
        group.bench_function(id, |bench| {
            bench.iter(|| xnor::xnor_gemm_int8(&a_rows, &b_rows, m, n, k, &mut out))
        });
        group.finish();
    }
}

/// The machine's popcount ceiling: the AVX-512 (or best available) register tile on data held
/// in L1, one thread. Throughput in binary MACs; the 2-core ceiling is twice this.
fn bench_popcount_ceiling(c: &mut Criterion) {
    const ITERATIONS: usize = 100_000;
    let isa = active_isa();
    let macs = xnor::popcount_ceiling(isa, ITERATIONS);
    let mut group = c.benchmark_group("popcount_ceiling");
    group.throughput(Throughput::Elements(macs));
    group.bench_function(BenchmarkId::new("one_thread", isa.name()), |bench| {
        bench.iter(|| xnor::popcount_ceiling(isa, ITERATIONS))
    });
    group.finish();
}

/// One core's ceiling for the int8 products on AMX tiles (where the machine has them): four tile
/// products a group, with the four tiles loaded once (`once`), or from L1 before each group,
/// their rows on cache lines (`aligned`, as in the products) or straddling two
/// (`straddling`). Throughput in int8 MACs.
fn bench_amx_ceiling(c: &mut Criterion) {
    const ITERATIONS: usize = 100_000;
    let Some(macs) = int8::amx_ceiling(AmxTileLoads::Once, ITERATIONS) else {
        println!("amx_ceiling: skipped, this machine cannot run AMX");
        return;
    };
    let mut group = c.benchmark_group("amx_ceiling");
    group.throughput(Throughput::Elements(macs));
    for (name, loads) in [
        ("once", AmxTileLoads::Once),
        ("aligned", AmxTileLoads::Aligned),
        ("straddling", AmxTileLoads::Straddling),
    ] {
        group.bench_function(BenchmarkId::new("one_thread", name), |bench| {
            bench.iter(|| int8::amx_ceiling(loads, ITERATIONS))
        });
    }
    group.finish();
}

/// One core's ceiling for the int8 products on AVX-512 VNNI (where the machine has it): sixteen
/// `VPDPBUSD` a round into independent registers, no memory operand. Throughput in int8 MACs.
fn bench_vnni_ceiling(c: &mut Criterion) {
    const ITERATIONS: usize = 1_000_000;
    let Some(macs) = int8::vnni_ceiling(ITERATIONS) else {
        println!("vnni_ceiling: skipped, this machine cannot run AVX-512 VNNI");
        return;
    };
    let mut group = c.benchmark_group("vnni_ceiling");
    group.throughput(Throughput::Elements(macs));
    group.bench_function("one_thread", |bench| {
        bench.iter(|| int8::vnni_ceiling(ITERATIONS))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_popcount_ceiling,
    bench_amx_ceiling,
    bench_vnni_ceiling,
    bench_products
);
criterion_main!(benches);
