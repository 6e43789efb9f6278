//! Trains the paper's binarized MNIST MLP (784 – 3×4096 – 10, DESIGN §4) from the IDX files.
//!
//! ```text
//! cargo run --release --example mnist -- --data-dir ~/data/mnist --epochs 1000 --batch-size 100
//! ```
//! The paper reports 0.96 % test error (Theano).

mod common;

use burn_qnn::{data::mnist, models::NetConfig};

fn main() {
    let args = common::parse(&common::Defaults {
        name: "mnist",
        epochs: 1000,
        batch_size: 100,
        valid: 10000,
    });
    let data = common::check(mnist::load(&args.data_dir, args.download));
    common::run(&args, NetConfig::mnist_mlp(), data)
}
