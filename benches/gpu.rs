//! The GPU benches, each side by side with Burn's own f32 path on the same device and data:
//!
//! - `<runtime>_product_<m>x<k>x<n>`: `±1` products of `[m, k] × [k, n]`: `burn_f32` (Burn's
//!   `matmul`), `xnor_packed` (both operands packed beforehand), `xnor_prepacked_weights` (the
//!   left operand packed on each call, as a layer's activations are), `xnor_float` (both packed
//!   on each call);
//! - `<runtime>_cifar10_inference_width_<w>`: the paper's CIFAR-10 network, its packed
//!   inference form (`packed`) against the same shapes in Burn's f32 layers (`burn_f32`), at
//!   batch 1 and 64;
//! - `<runtime>_cifar10_training_step_width_<w>`: one training step at batch 50 (forward,
//!   squared hinge loss, backward, Adam with latent-weight clipping) of the crate's binary
//!   network (`packed`) and of the same shapes in Burn's f32 layers (`burn_f32`).
//!
//! Every iteration waits for the device (`Backend::sync`).
//!
//! `cargo bench --features wgpu --bench gpu`. Settings, from the environment:
//!
//! - `BURN_QNN_GPU_RUNTIME`: `wgpu` (the default: `burn::backend::Wgpu`, fused, on the adapter
//!   wgpu picks, whose description is printed first) or `cuda` (`burn::backend::Cuda`, fused;
//!   needs `--features cuda`, an NVIDIA driver and NVRTC);
//! - `BURN_QNN_BENCH_SHAPES=small`: what a software rasterizer (Mesa's lavapipe) runs in
//!   minutes: 1024³ instead of 8192³ and 4096³, the networks at width 0.25 only, inference at
//!   batch 1 and 16;
//! - `BURN_QNN_BENCH_SECONDS`: the measurement time of each benchmark (default 3).
//!
//! `scripts/gpu-bundle.sh` packs this bench, built, for a machine without Rust.

mod common;

use std::time::Duration;

use burn::{
    backend::Autodiff,
    tensor::{Device, Distribution, Int, Tensor, TensorData, backend::Backend},
};
use burn_qnn::{
    QnnAutodiffBackend, QnnBackend,
    inference::PackedNet,
    models::{Net, NetConfig, Precision},
    ops::{self, Encoding, Packed},
};
use common::{Step, burn_layers};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};

/// The training step's batch, as in the CPU bench (`training_step`).
const TRAINING_BATCH: usize = 50;

/// What to measure, from the environment.
struct Plan {
    /// `(name, m, k, n)` of each product.
    products: Vec<(String, usize, usize, usize)>,
    /// The width of the inference network.
    inference_width: f64,
    /// The inference batches.
    inference_batches: [usize; 2],
    /// The widths of the training step.
    training_widths: Vec<f64>,
    /// The measurement time of each benchmark.
    measurement: Duration,
}

impl Plan {
    fn from_env() -> Self {
        let small = std::env::var("BURN_QNN_BENCH_SHAPES").as_deref() == Ok("small");
        let seconds: f64 = match std::env::var("BURN_QNN_BENCH_SECONDS") {
            Ok(s) => s.parse().unwrap_or_else(|_| {
                panic!("BURN_QNN_BENCH_SECONDS={s}: expected a number of seconds")
            }),
            Err(_) => 3.0,
        };
        let large: &[usize] = if small { &[1024] } else { &[8192, 4096] };
        let cubes = large.iter().map(|&n| (n, n, n));
        let common = [
            (64, 4096, 4096),
            (1, 4096, 4096),
            (32 * 32, 3 * 3 * 128, 128),
        ];
        let products = cubes
            .chain(common)
            .map(|(m, k, n)| (format!("{m}x{k}x{n}"), m, k, n))
            .collect();
        Self {
            products,
            inference_width: if small { 0.25 } else { 1.0 },
            // Batch 64 needs buffers over the 128 MiB that lavapipe allows.
            inference_batches: if small { [1, 16] } else { [1, 64] },
            training_widths: if small { vec![0.25] } else { vec![0.25, 1.0] },
            measurement: Duration::from_secs_f64(seconds),
        }
    }

    /// A benchmark group of 10 samples, 1 s of warm-up and the plan's measurement time.
    fn group<'a>(&self, c: &'a mut Criterion, name: String) -> BenchmarkGroup<'a, WallTime> {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(self.measurement);
        group
    }
}

fn main() {
    let plan = Plan::from_env();
    let mut c = Criterion::default().configure_from_args();
    let runtime = std::env::var("BURN_QNN_GPU_RUNTIME").unwrap_or_else(|_| "wgpu".into());
    match runtime.as_str() {
        "wgpu" => {
            describe_wgpu_adapter();
            run::<burn::backend::Wgpu>("wgpu", &plan, &mut c);
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            println!("runtime: CUDA, device 0 (burn::backend::Cuda)");
            run::<burn::backend::Cuda>("cuda", &plan, &mut c);
        }
        other => {
            let known = if cfg!(feature = "cuda") {
                "wgpu or cuda"
            } else {
                "wgpu (cuda needs --features cuda)"
            };
            eprintln!("BURN_QNN_GPU_RUNTIME={other}: unknown runtime; use {known}");
            std::process::exit(2);
        }
    }
    c.final_summary();
}

/// Sets wgpu up on its default adapter (as `burn::backend::Wgpu` would) and prints which one.
fn describe_wgpu_adapter() {
    use burn::backend::wgpu::{WgpuDevice, graphics::AutoGraphicsApi, init_setup};
    let setup = init_setup::<AutoGraphicsApi>(&WgpuDevice::default(), Default::default());
    println!("adapter: {:?}", setup.adapter.get_info());
}

fn run<B: QnnBackend>(runtime: &str, plan: &Plan, c: &mut Criterion)
where
    Autodiff<B>: QnnAutodiffBackend,
{
    let device = Default::default();
    products::<B>(runtime, plan, c, &device);
    inference::<B>(runtime, plan, c, &device);
    // The same device, as `Autodiff<B>` names it.
    let device = Default::default();
    for &width in &plan.training_widths {
        training_step::<Autodiff<B>>(runtime, plan, c, width, &device);
    }
}

fn signs<B: Backend>(shape: [usize; 2], device: &Device<B>) -> Tensor<B, 2> {
    Tensor::<B, 2>::random(shape, Distribution::Uniform(-1.0, 1.0), device).sign()
}

/// Runs `f` and waits for the device.
fn synced<B: Backend, T>(device: &Device<B>, f: impl FnOnce() -> T) -> T {
    let out = f();
    B::sync(device).expect("the device finishes its work");
    out
}

fn products<B: QnnBackend>(runtime: &str, plan: &Plan, c: &mut Criterion, device: &Device<B>) {
    for (name, m, k, n) in &plan.products {
        let (m, k, n) = (*m, *k, *n);
        let a = signs::<B>([m, k], device);
        let b = signs::<B>([k, n], device);
        let a_packed = Packed::new(a.clone(), Encoding::Signs);
        let b_packed = Packed::new(b.clone().transpose(), Encoding::Signs);
        B::sync(device).expect("the device finishes its work");

        let mut group = plan.group(c, format!("{runtime}_product_{name}"));
        group.throughput(Throughput::Elements((m * k * n) as u64));
        group.bench_function("burn_f32", |bench| {
            bench.iter(|| synced::<B, _>(device, || a.clone().matmul(b.clone())))
        });
        group.bench_function("xnor_packed", |bench| {
            bench.iter(|| {
                synced::<B, _>(device, || ops::packed_matmul::<B, 2>(&a_packed, &b_packed))
            })
        });
        group.bench_function("xnor_prepacked_weights", |bench| {
            bench.iter(|| {
                synced::<B, _>(device, || ops::xnor_matmul_prepacked(a.clone(), &b_packed))
            })
        });
        group.bench_function("xnor_float", |bench| {
            bench.iter(|| synced::<B, _>(device, || ops::xnor_matmul(a.clone(), b.clone())))
        });
        group.finish();
    }
}

fn inference<B: QnnBackend>(runtime: &str, plan: &Plan, c: &mut Criterion, device: &Device<B>) {
    let width = plan.inference_width;
    let config = NetConfig::cifar10().with_width(width);
    let binary = config.init::<B>(device);
    let packed = PackedNet::from_net(&binary).expect("the paper's network packs");
    let float = config.with_precision(Precision::Float).init::<B>(device);
    let mut group = plan.group(c, format!("{runtime}_cifar10_inference_width_{width}"));
    for batch in plan.inference_batches {
        let images =
            Tensor::<B, 4>::random([batch, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), device);
        group.bench_with_input(BenchmarkId::new("burn_f32", batch), &images, |b, x| {
            b.iter(|| synced::<B, _>(device, || float.forward(x.clone())))
        });
        group.bench_with_input(BenchmarkId::new("packed", batch), &images, |b, x| {
            b.iter(|| synced::<B, _>(device, || packed.forward(x.clone())))
        });
    }
    group.finish();
}

fn training_step<B: QnnAutodiffBackend>(
    runtime: &str,
    plan: &Plan,
    c: &mut Criterion,
    width: f64,
    device: &Device<B>,
) {
    let config = NetConfig::cifar10().with_width(width);
    let images = Tensor::<B, 4>::random(
        [TRAINING_BATCH, 3, 32, 32],
        Distribution::Uniform(-1.0, 1.0),
        device,
    );
    let labels: Vec<i64> = (0..TRAINING_BATCH as i64).map(|i| i % 10).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [TRAINING_BATCH]), device);
    let mut group = plan.group(c, format!("{runtime}_cifar10_training_step_width_{width}"));
    let mut packed = Step::new(config.init::<B>(device), &images, &targets);
    group.bench_function("packed", |b| {
        b.iter(|| synced::<B, _>(device, || packed.run(Net::forward)))
    });
    let float_net = config.with_precision(Precision::Float).init::<B>(device);
    let mut burn_f32 = Step::new(float_net, &images, &targets);
    group.bench_function("burn_f32", |b| {
        b.iter(|| synced::<B, _>(device, || burn_f32.run(burn_layers)))
    });
    group.finish();
}
