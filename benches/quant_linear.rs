//! A 2-bit × 2-bit `QuantLinear` (4096 → 4096) on NdArray: the layer's float simulation (Burn's
//! f32 matmul of the quantized values) against its packed form (`PackedQuantLinear`, codes on
//! the bit-serial AND-popcount kernel), side by side on the same data, at batch 1 and 64.
//!
//! `cargo bench --bench quant_linear`

use burn::{
    backend::NdArray,
    tensor::{Distribution, Tensor},
};
use burn_qnn::{inference::PackedQuantLinear, nn::QuantLinearConfig, quant::Bits};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn quant_linear(c: &mut Criterion) {
    let device = Default::default();
    let (d_in, d_out) = (4096, 4096);
    let layer = QuantLinearConfig::new(d_in, d_out)
        .with_bits(Bits::TWO, Bits::TWO)
        .init::<NdArray>(&device);
    let packed = PackedQuantLinear::from_layer(&layer).expect("linear quantizers pack");
    let mut group = c.benchmark_group("quant_linear_2x2_bits_4096");
    group.sample_size(10);
    for batch in [1, 64] {
        let x =
            Tensor::<NdArray, 2>::random([batch, d_in], Distribution::Uniform(0.0, 1.0), &device);
        group.bench_with_input(BenchmarkId::new("float_simulation", batch), &x, |b, x| {
            b.iter(|| layer.forward(x.clone()).into_data())
        });
        group.bench_with_input(BenchmarkId::new("packed", batch), &x, |b, x| {
            b.iter(|| packed.forward(x.clone()).into_data())
        });
    }
    group.finish();
}

criterion_group!(benches, quant_linear);
criterion_main!(benches);
