//! A 2-bit × 2-bit `QuantLinear` (4096 → 4096) on NdArray, side by side on the same data:
//!
//! - inference at batch 1 and 64: the layer's forward (it quantizes its latent weights on every
//!   call, as in training) against its packed form (`PackedQuantLinear`, weight codes packed
//!   once, products on the bit-serial AND-popcount kernel) and the layer packed in place
//!   (`inference::pack`);
//! - a training pass at batch 64 (forward and backward, under `Autodiff`): the layer (its
//!   quantizers one parallel pass on the CPU backends, its forward product on the codes of both
//!   operands, the bit-serial kernel), the same layer with Burn's f32 `matmul` as its product
//!   (`float_product`), the same with its quantizers written as Burn tensor ops
//!   (`Quantizer::forward`, the straight-through mask, through `quant::straight_through`; float
//!   product too), and Burn's f32 `Linear`.
//!
//! - the same training pass of a 2-bit × 2-bit `QuantConv2d` (64 → 64 channels, 3 × 3, padding
//!   1, batch 50 of 16 × 16): on codes, with Burn's `conv2d` as the product, and Burn's f32
//!   `Conv2d`;
//! - inference of that `QuantConv2d` at batch 1 and 50: the layer's forward, its packed form
//!   (`PackedQuantConv2d`, weight codes packed once), the layer packed in place
//!   (`inference::pack`) and Burn's f32 `Conv2d`.
//!
//! `cargo bench --bench quant_linear`

use burn::{
    backend::{Autodiff, NdArray},
    nn::{LinearConfig, PaddingConfig2d, conv::Conv2dConfig},
    tensor::{Distribution, Tensor},
};
use burn_qnn::{
    QnnBackend,
    inference::{PackedQuantConv2d, PackedQuantLinear},
    nn::{QuantConv2dConfig, QuantLinearConfig},
    quant::{self, Bits, Operand, Quantize, Quantizer},
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const D_IN: usize = 4096;
const D_OUT: usize = 4096;

fn inference(c: &mut Criterion) {
    let device = Default::default();
    let layer = QuantLinearConfig::new(D_IN, D_OUT)
        .with_bits(Bits::TWO, Bits::TWO)
        .init::<NdArray>(&device);
    let packed = PackedQuantLinear::from_layer(&layer).expect("linear quantizers pack");
    let packed_in_place = burn_qnn::inference::pack(&layer).expect("linear quantizers pack");
    let mut group = c.benchmark_group("quant_linear_2x2_bits_4096");
    group.sample_size(10);
    for batch in [1, 64] {
        let x =
            Tensor::<NdArray, 2>::random([batch, D_IN], Distribution::Uniform(0.0, 1.0), &device);
        group.bench_with_input(BenchmarkId::new("layer_forward", batch), &x, |b, x| {
            b.iter(|| layer.forward(x.clone()).into_data())
        });
        group.bench_with_input(BenchmarkId::new("packed", batch), &x, |b, x| {
            b.iter(|| packed.forward(x.clone()).into_data())
        });
        group.bench_with_input(BenchmarkId::new("packed_in_place", batch), &x, |b, x| {
            b.iter(|| packed_in_place.forward(x.clone()).into_data())
        });
    }
    group.finish();
}

/// A [`Quantizer`] computed with Burn's tensor ops only (the formulas of `Quantizer::forward`
/// and `Quantizer::blocked`): the reference the host quantizer kernel is measured against.
#[derive(Debug, Clone, Copy)]
struct TensorOps(Quantizer);

impl Quantize for TensorOps {
    fn quantize<B: QnnBackend, const D: usize>(&self, x: Tensor<B, D>, _: Operand) -> Tensor<B, D> {
        let q = self.0;
        quant::straight_through(x, |x| q.forward(x), |x| q.blocked(x).bool_not().float())
    }
}

/// A [`Quantizer`] without its code grid: the layer multiplies its values with Burn's f32
/// `matmul` (the float simulation's product) instead of their codes.
#[derive(Debug, Clone, Copy)]
struct FloatProduct(Quantizer);

impl Quantize for FloatProduct {
    fn quantize<B: QnnBackend, const D: usize>(&self, x: Tensor<B, D>, _: Operand) -> Tensor<B, D> {
        quant::quantize(x, self.0)
    }
}

fn training(c: &mut Criterion) {
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let batch = 64;
    let config = QuantLinearConfig::new(D_IN, D_OUT).with_bits(Bits::TWO, Bits::TWO);
    let layer = config.init::<B>(&device);
    let tensor_ops = config.init_with_quantizers::<B, _, _>(
        &device,
        TensorOps(config.weight_quantizer),
        config.input_quantizer.map(TensorOps),
    );
    let float_product = config.init_with_quantizers::<B, _, _>(
        &device,
        FloatProduct(config.weight_quantizer),
        config.input_quantizer.map(FloatProduct),
    );
    let float = LinearConfig::new(D_IN, D_OUT).init::<B>(&device);
    let x = Tensor::<B, 2>::random([batch, D_IN], Distribution::Uniform(0.0, 1.0), &device);
    let mut group = c.benchmark_group("quant_linear_2x2_bits_4096_training_batch_64");
    group.sample_size(10);
    group.bench_function("layer", |b| {
        b.iter(|| layer.forward(x.clone()).sum().backward())
    });
    group.bench_function("float_product", |b| {
        b.iter(|| float_product.forward(x.clone()).sum().backward())
    });
    group.bench_function("tensor_op_quantizers", |b| {
        b.iter(|| tensor_ops.forward(x.clone()).sum().backward())
    });
    group.bench_function("burn_linear_f32", |b| {
        b.iter(|| float.forward(x.clone()).sum().backward())
    });
    group.finish();
}

fn conv_training(c: &mut Criterion) {
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let config = QuantConv2dConfig::new([64, 64], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bits(Bits::TWO, Bits::TWO);
    let layer = config.init::<B>(&device);
    let float_product = config.init_with_quantizers::<B, _, _>(
        &device,
        FloatProduct(config.weight_quantizer),
        config.input_quantizer.map(FloatProduct),
    );
    let float = Conv2dConfig::new([64, 64], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init::<B>(&device);
    let x = Tensor::<B, 4>::random([50, 64, 16, 16], Distribution::Uniform(0.0, 1.0), &device);
    let mut group = c.benchmark_group("quant_conv2d_2x2_bits_64_3x3_16x16_training_batch_50");
    group.sample_size(10);
    group.bench_function("layer", |b| {
        b.iter(|| layer.forward(x.clone()).sum().backward())
    });
    group.bench_function("float_product", |b| {
        b.iter(|| float_product.forward(x.clone()).sum().backward())
    });
    group.bench_function("burn_conv2d_f32", |b| {
        b.iter(|| float.forward(x.clone()).sum().backward())
    });
    group.finish();
}

fn conv_inference(c: &mut Criterion) {
    let device = Default::default();
    let padding = PaddingConfig2d::Explicit(1, 1, 1, 1);
    let layer = QuantConv2dConfig::new([64, 64], [3, 3])
        .with_padding(padding.clone())
        .with_bits(Bits::TWO, Bits::TWO)
        .init::<NdArray>(&device);
    let packed = PackedQuantConv2d::from_layer(&layer).expect("linear quantizers pack");
    let packed_in_place = burn_qnn::inference::pack(&layer).expect("linear quantizers pack");
    let float = Conv2dConfig::new([64, 64], [3, 3])
        .with_padding(padding)
        .init::<NdArray>(&device);
    let mut group = c.benchmark_group("quant_conv2d_2x2_bits_64_3x3_16x16_inference");
    group.sample_size(10);
    for batch in [1, 50] {
        let x = Tensor::<NdArray, 4>::random(
            [batch, 64, 16, 16],
            Distribution::Uniform(0.0, 1.0),
            &device,
        );
        group.bench_with_input(BenchmarkId::new("layer_forward", batch), &x, |b, x| {
            b.iter(|| layer.forward(x.clone()))
        });
        group.bench_with_input(BenchmarkId::new("packed", batch), &x, |b, x| {
            b.iter(|| packed.forward(x.clone()))
        });
        group.bench_with_input(BenchmarkId::new("packed_in_place", batch), &x, |b, x| {
            b.iter(|| packed_in_place.forward(x.clone()))
        });
        group.bench_with_input(BenchmarkId::new("burn_conv2d_f32", batch), &x, |b, x| {
            b.iter(|| float.forward(x.clone()))
        });
    }
    group.finish();
}

criterion_group!(benches, inference, training, conv_training, conv_inference);
criterion_main!(benches);
