//! Quick start: a binarized network trained on real handwritten digits, then packed.
//!
//! The data are scikit-learn's 1,797 8×8 digits, shipped in `data/digits.csv.gz` (BSD-3, see
//! `data/LICENSE-digits.txt`). The same MLP (64 – 256 – 256 – 10, batch norm after each layer)
//! is trained twice with the paper's recipe (Adam, squared hinge loss, exponential lr decay):
//! in full precision and binarized (8-bit inputs × binary weights in the first layer, binary
//! activations and weights after it, latent weights clipped to [−1, 1]). The binary network is
//! then packed into its inference form: weights as bits, batch norm folded into thresholds.
//!
//! ```text
//! cargo run --release --example quickstart                      # NdArray (CPU)
//! cargo run --release --features flex --example quickstart -- --backend flex
//! cargo run --release --features wgpu --example quickstart -- --backend wgpu
//! ```

#[path = "common/packed_report.rs"]
mod packed_report;
#[path = "common/unknown_backend.rs"]
mod unknown_backend;

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn_qnn::{
    QnnAutodiffBackend,
    data::digits,
    inference::PackedNet,
    models::{NetConfig, Precision},
    train::{TrainOptions, accuracy, fit, time_per_batch},
};
use packed_report::{check_same_accuracy, f32_record_bytes};
use unknown_backend::unknown_backend;

const EPOCHS: usize = 40;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Training frees and allocates the same large tensors every step: keep freed memory for
    // reuse (glibc; a no-op elsewhere). And this thread, which runs the training loop, becomes
    // one of rayon's workers, so that the kernels' parallel work starts on it at once.
    burn_qnn::memory::keep_freed_memory();
    if let Err(e) = burn_qnn::threads::use_this_thread() {
        eprintln!("warning: {e}");
    }
    let backend = std::env::args()
        .skip_while(|a| a != "--backend")
        .nth(1)
        .unwrap_or_else(|| "ndarray".into());
    match backend.as_str() {
        "ndarray" => run::<Autodiff<NdArray>>(),
        #[cfg(feature = "flex")]
        "flex" => run::<Autodiff<burn::backend::Flex>>(),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<Autodiff<burn::backend::Wgpu>>(),
        #[cfg(feature = "cuda")]
        "cuda" => run::<Autodiff<burn::backend::Cuda>>(),
        other => Err(unknown_backend(other).into()),
    }
}

fn run<B: QnnAutodiffBackend>() -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let data = digits::train_test_split(digits::load_bundled()?, 0.25, 7);
    println!(
        "scikit-learn digits: {} training and {} test images of 8×8 pixels",
        data.train.len(),
        data.test.len()
    );
    let options = TrainOptions::new()
        .with_epochs(EPOCHS)
        .with_batch_size(32)
        .with_initial_lr(1e-2)
        .with_final_lr(1e-4);
    let config = NetConfig::new(1, 8, vec![], vec![256, 256]);

    let mut results = Vec::new();
    for precision in [Precision::Float, Precision::Binary] {
        println!("training the {precision:?} network for {EPOCHS} epochs");
        let start = Instant::now();
        B::seed(&device, 7);
        let net = config.clone().with_precision(precision).init::<B>(&device);
        let (net, _) = fit(net, &data.train, None, &options)?;
        let acc = accuracy(|x| net.forward(x), &data.test, 512, &device);
        println!(
            "  test accuracy {:.2}% ({:.1} s)",
            100.0 * acc,
            start.elapsed().as_secs_f64()
        );
        results.push((net, acc));
    }
    let (float_net, float_acc) = &results[0];
    let (binary_net, binary_acc) = &results[1];

    let packed = PackedNet::from_net(binary_net)?;
    let packed_acc = accuracy(|x| packed.forward(x), &data.test, 512, &device);
    let float_time = time_per_batch(|x| float_net.forward(x), &data.test, 256, 20, &device);
    let packed_time = time_per_batch(|x| packed.forward(x), &data.test, 256, 20, &device);
    let dir = std::env::temp_dir().join("burn-qnn-quickstart");
    std::fs::create_dir_all(&dir)?;
    let packed_path = dir.join("digits-packed.mpk");
    packed.save(&packed_path)?;
    let packed_bytes = std::fs::metadata(&packed_path)?.len();
    let float_bytes = f32_record_bytes(float_net.clone());

    println!();
    println!("                      float     binary");
    println!(
        "test accuracy       {:6.2}%    {:6.2}%  (packed inference form: {:.2}%)",
        100.0 * float_acc,
        100.0 * binary_acc,
        100.0 * packed_acc
    );
    println!(
        "model file          {:6.1} KiB {:6.1} KiB ({:.1}× smaller)",
        float_bytes as f64 / 1024.0,
        packed_bytes as f64 / 1024.0,
        float_bytes as f64 / packed_bytes as f64
    );
    println!(
        "inference, 256 img {:7.2} ms  {:7.2} ms  ({:.2}× the float network's speed)",
        float_time.as_secs_f64() * 1e3,
        packed_time.as_secs_f64() * 1e3,
        float_time.as_secs_f64() / packed_time.as_secs_f64()
    );
    println!("packed model written to {}", packed_path.display());
    check_same_accuracy(*binary_acc, packed_acc, &data.test)
}
