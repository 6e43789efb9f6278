//! A convolution layer's per-channel bias in training on `Autodiff<NdArray>`, on the output of
//! a CIFAR-10 first block at width 1 (50 images, 128 channels of 32 × 32): the forward of
//! `QnnBackend::qnn_channel_affine` (what `BinaryConv2d`, `BitPlaneConv2d` and `QuantConv2d`
//! call) against Burn's broadcasting add, and the bias gradient of its backward
//! (`QnnBackend::qnn_channel_sums`) against Burn's sums over the other dimensions, side by side;
//! and the same for a fully connected layer's outputs (100 rows of 4096 features, the MNIST
//! MLP's hidden layers; `BinaryLinear` calls the op for `[N, d_output]` outputs).
//!
//! `cargo bench --bench channel_bias`

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Tensor};
use burn_qnn::QnnBackend;
use criterion::{Criterion, criterion_group, criterion_main};

type A = Autodiff<NdArray>;

fn channel_bias(c: &mut Criterion) {
    let device = Default::default();
    let y = Tensor::<A, 4>::random([50, 128, 32, 32], Distribution::Default, &device);
    let bias = Tensor::<A, 1>::random([128], Distribution::Default, &device);
    let mut group = c.benchmark_group("bias_forward_50x128x32x32");
    group.sample_size(10);
    group.bench_function("burn_broadcast_add", |b| {
        b.iter(|| {
            let (y, bias) = (y.clone().require_grad(), bias.clone().require_grad());
            (y + bias.reshape([1, 128, 1, 1])).inner()
        })
    });
    group.bench_function("qnn_channel_affine", |b| {
        b.iter(|| {
            let (y, bias) = (y.clone().require_grad(), bias.clone().require_grad());
            A::qnn_channel_affine(y, None, Some(bias)).inner()
        })
    });
    group.finish();

    let grad = y.inner();
    let mut group = c.benchmark_group("bias_gradient_50x128x32x32");
    group.sample_size(10);
    group.bench_function("burn_sum_dims", |b| {
        b.iter(|| grad.clone().sum_dim(0).sum_dim(2).sum_dim(3).into_data())
    });
    group.bench_function("qnn_channel_sums", |b| {
        b.iter(|| NdArray::qnn_channel_sums(grad.clone()).into_data())
    });
    group.finish();

    let rows = Tensor::<A, 2>::random([100, 4096], Distribution::Default, &device);
    let bias = Tensor::<A, 1>::random([4096], Distribution::Default, &device);
    let mut group = c.benchmark_group("bias_forward_100x4096");
    group.sample_size(20);
    group.bench_function("burn_broadcast_add", |b| {
        b.iter(|| {
            let (x, bias) = (rows.clone().require_grad(), bias.clone().require_grad());
            (x + bias.unsqueeze()).inner()
        })
    });
    group.bench_function("qnn_channel_affine", |b| {
        b.iter(|| {
            let (x, bias) = (rows.clone().require_grad(), bias.clone().require_grad());
            A::qnn_channel_affine(x, None, Some(bias)).inner()
        })
    });
    group.finish();

    let grad = rows.inner();
    let mut group = c.benchmark_group("bias_gradient_100x4096");
    group.sample_size(20);
    group.bench_function("burn_sum_dim", |b| {
        b.iter(|| grad.clone().sum_dim(0).into_data())
    });
    group.bench_function("qnn_channel_sums", |b| {
        b.iter(|| NdArray::qnn_channel_sums(grad.clone()).into_data())
    });
    group.finish();
}

criterion_group!(benches, channel_bias);
criterion_main!(benches);
