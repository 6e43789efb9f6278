//! Trains the paper's binarized CIFAR-10 network (DESIGN §4) from the official binary files.
//!
//! ```text
//! cargo run --release --example cifar10 -- --data-dir ~/data/cifar10 --epochs 500
//! cargo run --release --example cifar10 -- --help
//! ```
//! The paper reports 11.40 % test error (Theano, 500 epochs, batch 50).

mod common;

use burn_qnn::{data::cifar10, models::NetConfig};

fn main() {
    let args = common::parse(&common::Defaults {
        name: "cifar10",
        epochs: 500,
        batch_size: 50,
        valid: 5000,
    });
    let data = common::check(cifar10::load(&args.data_dir, args.download));
    common::run(&args, NetConfig::cifar10(), data)
}
