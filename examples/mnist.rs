//! Trains the paper's binarized MNIST MLP (784 – 3×4096 – 10, dropout 0.2 on the input and 0.5
//! on the hidden layers) from the IDX files, with the recipe of the authors' `mnist.py`: batch
//! 100, 1000 epochs, Adam from 3e-3 to 3e-7, Glorot learning-rate scale, 10,000 training images
//! held out for validation.
//!
//! ```text
//! cargo run --release --example mnist -- --data-dir ~/data/mnist --epochs 1000
//! ```
//! The paper reports 0.96 % test error (Theano).

mod common;

use burn_qnn::{data::mnist, models::NetConfig};

fn main() {
    common::prepare_process();
    let defaults = common::Defaults {
        name: "mnist",
        epochs: 1000,
        batch_size: 100,
        lr: 3e-3,
        final_lr: 3e-7,
        valid: 10000,
    };
    let args = common::parse(&defaults);
    let data = common::check(mnist::load(&args.data_dir, args.download));
    common::run(&args, &defaults, NetConfig::mnist_mlp(), data)
}
