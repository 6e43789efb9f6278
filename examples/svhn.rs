//! Trains the paper's binarized SVHN network (the CIFAR-10 network with conv widths
//! 64-64-128-128-256-256) from the official format-2 files, with the recipe of the authors'
//! `svhn.py`: batch 50, 200 epochs, Adam from 1e-3 to 1e-6, Glorot learning-rate scale, 6,000
//! training images held out for validation.
//!
//! ```text
//! cargo run --release --example svhn -- --data-dir ~/data/svhn --epochs 200 [--extra]
//! ```
//! The paper reports 2.80 % test error (Theano).

mod common;

use burn_qnn::{
    data::svhn::{self, Extra},
    models::NetConfig,
};

fn main() {
    common::prepare_process();
    let defaults = common::Defaults {
        name: "svhn",
        epochs: 200,
        batch_size: 50,
        lr: 1e-3,
        final_lr: 1e-6,
        valid: 6000,
    };
    let args = common::parse(&defaults);
    let extra = if args.extra {
        Extra::Include
    } else {
        Extra::Exclude
    };
    let data = common::check(svhn::load(&args.data_dir, extra, args.download));
    common::run(&args, &defaults, NetConfig::svhn(), data)
}
