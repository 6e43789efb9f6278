//! The binary convolution's backward on a 6-bit quantized output gradient (exact int8
//! products) against the f32 backward on the float gradient, on the same data.
//!
//! Run: `cargo bench --bench quantized_backward`. For three layers of the CIFAR-10 network at
//! width 0.25, batch 50, each group times side by side:
//! - `f32` and `amx-bf16`: the float output gradient through `kernels::backward`, on f32 GEMM
//!   micro-kernels and on AMX bf16 tiles (three-part split) where the CPU has them;
//! - `int8_<path>`: quantizing the same gradient to 6 bits plus the integer kernels of
//!   `kernels::quantized_backward`, on each int8 path this CPU runs (AMX, AVX-512 VNNI, AVX2,
//!   portable).
//!
//! Throughput is in multiply-accumulates of the gradient product (`N·H_out·W_out·C_out·taps`).

use std::time::Duration;

use burn_qnn::kernels::{
    amx_bf16::{ConvIsa, force_conv_isa},
    backward::{self, Bits},
    conv::{ConvCall, PaddingMode},
    int8::{Int8Isa, force_int8_isa},
    quantized_backward::{self, QuantizedGrad},
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// `(name, channels, image size)`: the second, fourth and sixth convolutions.
const LAYERS: [(&str, usize, usize); 3] = [
    ("conv2_32x32", 32, 32),
    ("conv4_64x16", 64, 16),
    ("conv6_128x8", 128, 8),
];
const BATCH: usize = 50;

/// A deterministic stream of words (xorshift).
fn words(len: usize, mut state: u64) -> Vec<u64> {
    (0..len.div_ceil(64))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        })
        .collect()
}

fn bench_layers(c: &mut Criterion) {
    for (name, channels, size) in LAYERS {
        let g = ConvCall {
            batch: BATCH,
            in_channels: channels,
            height: size,
            width: size,
            out_channels: channels,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
        };
        let outputs = BATCH * channels * size * size;
        let grad: Vec<f32> = words(outputs * 64, 7)
            .iter()
            .map(|&w| (w >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        let (x, w) = (words(g.input_len(), 1), words(g.weights_len(), 2));
        let (x_band, w_band) = (vec![0u64; x.len()], vec![0u64; w.len()]);
        let x_bits = Bits::new(&x, g.input_len());
        let w_bits = Bits::new(&w, g.weights_len());
        let x_none = Bits::new(&x_band, g.input_len());
        let w_none = Bits::new(&w_band, g.weights_len());
        let (mut dx, mut dw) = (vec![0f32; g.input_len()], vec![0f32; g.weights_len()]);

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements((outputs * channels * 9) as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        for path in ConvIsa::available() {
            force_conv_isa(Some(path)).expect("available");
            let id = path.name();
            group.bench_function(BenchmarkId::new(id, "weight_grad"), |b| {
                b.iter(|| {
                    backward::binary_conv2d_weight_grad(
                        &grad,
                        x_bits,
                        PaddingMode::Zero,
                        w_none,
                        &g,
                        &mut dw,
                    )
                })
            });
            group.bench_function(BenchmarkId::new(id, "input_grad"), |b| {
                b.iter(|| backward::binary_conv2d_input_grad(&grad, w_bits, x_none, &g, &mut dx))
            });
        }
        force_conv_isa(None).expect("detection");
        for isa in Int8Isa::available() {
            force_int8_isa(Some(isa)).expect("available");
            let id = format!("int8_{}", isa.name());
            group.bench_function(BenchmarkId::new(id.clone(), "weight_grad"), |b| {
                b.iter(|| {
                    let q = QuantizedGrad::quantize(&grad, 6);
                    quantized_backward::binary_conv2d_weight_grad(
                        &q,
                        x_bits,
                        PaddingMode::Zero,
                        w_none,
                        &g,
                        &mut dw,
                    )
                })
            });
            group.bench_function(BenchmarkId::new(id, "input_grad"), |b| {
                b.iter(|| {
                    let q = QuantizedGrad::quantize(&grad, 6);
                    quantized_backward::binary_conv2d_input_grad(&q, w_bits, x_none, &g, &mut dx)
                })
            });
        }
        force_int8_isa(None).expect("detection");
        group.finish();
    }
}

criterion_group!(benches, bench_layers);
criterion_main!(benches);
