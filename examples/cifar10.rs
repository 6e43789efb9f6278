//! Trains the paper's binarized CIFAR-10 network (2×128C3 – MP2 – 2×256C3 – MP2 – 2×512C3 –
//! MP2 – 2×1024FC – 10) from the official binary files, with the recipe of the authors'
//! `cifar10.py`: batch 50, 500 epochs, Adam from 1e-3 to 3e-7, Glorot learning-rate scale,
//! 5,000 training images held out for validation.
//!
//! ```text
//! cargo run --release --example cifar10 -- --data-dir ~/data/cifar10 --epochs 500
//! cargo run --release --example cifar10 -- --help
//! ```
//! The paper reports 11.40 % test error (Theano, 500 epochs, batch 50).

mod common;

use burn_qnn::{data::cifar10, models::NetConfig};

fn main() {
    common::prepare_process();
    let defaults = common::Defaults {
        name: "cifar10",
        epochs: 500,
        batch_size: 50,
        lr: 1e-3,
        final_lr: 3e-7,
        valid: 5000,
    };
    let args = common::parse(&defaults);
    let data = common::check(cifar10::load(&args.data_dir, args.download));
    common::run(&args, &defaults, NetConfig::cifar10(), data)
}
