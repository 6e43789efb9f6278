//! One full training step (forward, squared hinge loss, backward, Adam update with latent-weight
//! clipping; Adam is `burn_qnn::optim::FusedAdam`, Burn's Adam arithmetic in one pass per
//! parameter) of the paper's CIFAR-10 network on `Autodiff<NdArray>`, side by side in one run:
//!
//! - `packed_<path>`: the crate's binary network (binary layers on packed kernels, whose autodiff
//!   nodes keep only bits and compute their gradients from them), with its convolutions on each
//!   path this CPU runs (`amx-bf16`: AMX bf16 tiles; `vector`: XNOR-popcount forward, f32 GEMM
//!   gradients; see `burn_qnn::kernels::amx_bf16`);
//! - `packed_grad6_<path>`: the same network and weights with the binary layers' output gradients
//!   quantized to 6 bits (`NetConfig::with_grad_bits`), their gradient products exact in
//!   integers on each int8 path this CPU runs (`amx`, `avx512vnni`, `avx2`, `portable`);
//! - `packed_grad6_stochastic`: the same with stochastic rounding of those gradients
//!   (`NetConfig::with_grad_rounding`), on the int8 path detected;
//! - `float_simulation`: the same network and weights with every binary layer simulated in float,
//!   `conv2d(sign(x), sign(w))` / `sign(x)·sign(W)` through Burn's float ops;
//! - `burn_f32`: the same network shape in Burn's own float layers and functions (`Conv2d`,
//!   `max_pool2d`, `BatchNorm`, `Linear`, hard tanh between layers), none of the crate's ops.
//!
//! - with `--features flex`, `flex_packed_<path>` and `flex_burn_f32`: the packed step and
//!   Burn's float layers on `Autodiff<burn::backend::Flex>` (Burn's im2col + `gemm` CPU backend),
//!   beside the `NdArray` steps above.
//!
//! Also prints the bytes each binary form saves for the backward pass of the binary layers.
//!
//! `cargo bench --bench training_step` (width 0.25, batch 50). `BURN_QNN_BENCH_WIDTH=1` runs the
//! full-width network; there the float steps take minutes each, so they run only with
//! `BURN_QNN_BENCH_FLOAT=1`.
//!
//! As the examples do, the bench keeps freed memory for reuse (`burn_qnn::memory`) and runs the
//! steps on one of rayon's workers (`burn_qnn::threads`); `BURN_QNN_BENCH_MALLOC=default` and
//! `BURN_QNN_BENCH_LOOP_THREAD=outside` turn these off, to measure what each is worth.

mod common;

use burn::module::Module;
use burn::{
    backend::{Autodiff, NdArray},
    tensor::{Distribution, Int, Tensor, TensorData, module::max_pool2d},
};
use burn_qnn::{
    kernels::{
        amx_bf16::{ConvIsa, force_conv_isa},
        int8::{Int8Isa, force_int8_isa},
    },
    models::{ConvLayer, DenseLayer, Net, NetConfig, Precision},
    ops::binary_conv2d_reference,
    quant,
};
use common::{Step, burn_layers};
use criterion::{Criterion, criterion_group, criterion_main};

type B = Autodiff<NdArray>;
const BATCH: usize = 50;

/// The network's forward with every binary layer simulated in float.
fn float_simulation(net: &Net<B>, images: Tensor<B, 4>) -> Tensor<B, 2> {
    let mut x = images;
    for (i, (conv, norm)) in net.convs.iter().zip(&net.conv_norms).enumerate() {
        x = match conv {
            ConvLayer::Binary(l) => binary_conv2d_reference(x, l.weight.val(), &l.geometry),
            other => other.forward(x),
        };
        if NetConfig::pools_after(i) {
            x = max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        x = norm.forward(x);
    }
    let mut x = x.flatten::<2>(1, 3);
    for (layer, norm) in net.dense.iter().zip(&net.dense_norms) {
        x = match layer {
            DenseLayer::Binary(l) => quant::sign(x).matmul(quant::sign(l.weight.val())),
            other => other.forward(x),
        };
        x = norm.forward(x);
    }
    x
}

/// `(float simulation, packed)` bytes saved for the backward pass of the binary layers'
/// inputs: the f32 ±1 tensor and a 1-byte mask per value, against 2 bits per value.
fn saved_bytes(config: &NetConfig) -> (u64, u64) {
    let mut values = 0u64;
    let mut side = config.image_size;
    for i in 0..config.conv_channels.len() {
        if i > 0 {
            values += (config.conv_channels[i - 1] * side * side) as u64;
        }
        if NetConfig::pools_after(i) {
            side /= 2;
        }
    }
    values += config.flat_features() as u64 + config.hidden_units.iter().sum::<usize>() as u64;
    let values = values * BATCH as u64;
    (values * 5, values.div_ceil(4))
}

fn training_step(c: &mut Criterion) {
    let env = |name: &str| std::env::var(name).ok();
    // As the examples do (`burn_qnn::memory`); `BURN_QNN_BENCH_MALLOC=default` leaves glibc's
    // defaults, to see the difference.
    if env("BURN_QNN_BENCH_MALLOC").as_deref() != Some("default") {
        println!(
            "freed memory kept for reuse: {}",
            burn_qnn::memory::keep_freed_memory()
        );
    }
    // As the examples do (`burn_qnn::threads`); `BURN_QNN_BENCH_LOOP_THREAD=outside` keeps this
    // thread out of rayon's pool, to see the difference.
    if env("BURN_QNN_BENCH_LOOP_THREAD").as_deref() != Some("outside") {
        let threads = burn_qnn::threads::use_this_thread().expect("rayon's pool not started yet");
        println!("the loop's thread is one of rayon's {threads} workers");
    }
    let width: f64 = env("BURN_QNN_BENCH_WIDTH")
        .and_then(|w| w.parse().ok())
        .unwrap_or(0.25);
    let with_float = width <= 0.25 || env("BURN_QNN_BENCH_FLOAT").is_some_and(|v| v == "1");
    let device = Default::default();
    let config = NetConfig::cifar10().with_width(width);
    let net = config.init::<B>(&device);
    let float_net = config
        .clone()
        .with_precision(Precision::Float)
        .init::<B>(&device);
    let images = Tensor::<B, 4>::random(
        [BATCH, 3, 32, 32],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i % 10).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [BATCH]), &device);
    let (float_bytes, packed_bytes) = saved_bytes(&config);
    println!(
        "width {width}, batch {BATCH}: binary layers' saved inputs: float simulation {:.1} MiB, \
         packed {:.2} MiB ({:.1}× less)",
        float_bytes as f64 / 1048576.0,
        packed_bytes as f64 / 1048576.0,
        float_bytes as f64 / packed_bytes as f64
    );
    let mut group = c.benchmark_group(format!("cifar10_training_step_width_{width}"));
    group.sample_size(10);
    for path in ConvIsa::available() {
        force_conv_isa(Some(path)).expect("an available path");
        let mut packed = Step::new(net.clone(), &images, &targets);
        group.bench_function(format!("packed_{}", path.name()), |b| {
            b.iter(|| packed.run(Net::forward))
        });
    }
    force_conv_isa(None).expect("detection");
    let grad6 = config
        .clone()
        .with_grad_bits(Some(quant::Bits::new(6).expect("6 bits")))
        .init::<B>(&device)
        .load_record(net.clone().into_record());
    for isa in Int8Isa::available() {
        force_int8_isa(Some(isa)).expect("an available path");
        let mut step = Step::new(grad6.clone(), &images, &targets);
        group.bench_function(format!("packed_grad6_{}", isa.name()), |b| {
            b.iter(|| step.run(Net::forward))
        });
    }
    force_int8_isa(None).expect("detection");
    let stochastic = config
        .clone()
        .with_grad_bits(Some(quant::Bits::new(6).expect("6 bits")))
        .with_grad_rounding(quant::GradRounding::Stochastic)
        .init::<B>(&device)
        .load_record(net.clone().into_record());
    let mut step = Step::new(stochastic, &images, &targets);
    group.bench_function("packed_grad6_stochastic", |b| {
        b.iter(|| step.run(Net::forward))
    });
    #[cfg(feature = "flex")]
    {
        // The same steps on Burn's Flex CPU backend (fresh weights of the same network: the
        // weights' values do not change the work).
        type F = Autodiff<burn::backend::Flex>;
        let flex = Default::default();
        let images = Tensor::<F, 4>::from_data(images.to_data(), &flex);
        let targets = Tensor::<F, 1, Int>::from_data(targets.to_data(), &flex);
        for path in ConvIsa::available() {
            force_conv_isa(Some(path)).expect("an available path");
            let mut packed = Step::new(config.init::<F>(&flex), &images, &targets);
            group.bench_function(format!("flex_packed_{}", path.name()), |b| {
                b.iter(|| packed.run(Net::forward))
            });
        }
        force_conv_isa(None).expect("detection");
        if with_float {
            let float_net = config
                .clone()
                .with_precision(Precision::Float)
                .init::<F>(&flex);
            let mut burn_f32 = Step::new(float_net, &images, &targets);
            group.bench_function("flex_burn_f32", |b| b.iter(|| burn_f32.run(burn_layers)));
        }
    }
    if with_float {
        let mut simulated = Step::new(net, &images, &targets);
        group.bench_function("float_simulation", |b| {
            b.iter(|| simulated.run(float_simulation))
        });
        let mut burn_f32 = Step::new(float_net, &images, &targets);
        group.bench_function("burn_f32", |b| b.iter(|| burn_f32.run(burn_layers)));
    }
    group.finish();
}

criterion_group!(benches, training_step);
criterion_main!(benches);
