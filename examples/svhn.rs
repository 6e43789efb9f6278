//! Trains the paper's binarized SVHN network (DESIGN §4) from the official format-2 files.
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
    let args = common::parse(&common::Defaults {
        name: "svhn",
        epochs: 200,
        batch_size: 50,
        valid: 6000,
    });
    let extra = if args.extra {
        Extra::Include
    } else {
        Extra::Exclude
    };
    let data = common::check(svhn::load(&args.data_dir, extra, args.download));
    common::run(&args, NetConfig::svhn(), data)
}
