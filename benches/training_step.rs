//! One training step (forward, squared hinge loss, backward) of the paper's CIFAR-10 network
//! on `Autodiff<NdArray>`: the binary layers on packed kernels, whose autodiff nodes keep only
//! bits, against the float simulation `conv2d(sign(x), sign(w))` / `sign(x)·sign(W)` of the
//! same network and weights. Also prints the bytes each form saves for the backward pass of
//! the binary layers.
//!
//! `cargo bench --bench training_step` (width 0.25, batch 50 by default;
//! `BURN_QNN_BENCH_WIDTH=1` for the full network).

use burn::{
    backend::{Autodiff, NdArray},
    tensor::{Distribution, Int, Tensor, TensorData, module::max_pool2d},
};
use burn_qnn::{
    loss::SquaredHingeLoss,
    models::{ConvLayer, DenseLayer, Net, NetConfig},
    ops::binary_conv2d_reference,
    quant,
};
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
    let width: f64 = std::env::var("BURN_QNN_BENCH_WIDTH")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0.25);
    let device = Default::default();
    let config = NetConfig::cifar10().with_width(width);
    let net = config.init::<B>(&device);
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
    group.bench_function("float_simulation", |b| {
        b.iter(|| {
            let loss =
                SquaredHingeLoss.forward(float_simulation(&net, images.clone()), targets.clone());
            loss.backward()
        })
    });
    group.bench_function("packed", |b| {
        b.iter(|| {
            let loss = SquaredHingeLoss.forward(net.forward(images.clone()), targets.clone());
            loss.backward()
        })
    });
    group.finish();
}

criterion_group!(benches, training_step);
criterion_main!(benches);
