//! What the blocks' unit tests share: random batch norms and the check that a kept fold
//! follows every change of what it was folded from.

use burn::{
    backend::NdArray,
    module::{Param, RunningState},
    nn::BatchNorm,
    tensor::{Tensor, TensorData},
};
use rand::{Rng, rngs::StdRng};

/// `n` values drawn uniformly from `lo..hi`.
pub(crate) fn random_values(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// A vector of `values`.
pub(crate) fn vector(values: Vec<f32>) -> Tensor<NdArray, 1> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), &Default::default())
}

/// Gives `norm` random parameters for products of up to `k` terms, drawn in this order: `γ` in
/// `(−2, 2)` with `γ₀ = 0`, `β` in `(−0.5, 0.5)`, the running mean in `±0.3·k` and the running
/// variance in `(min_var, k)`.
pub(crate) fn randomize_norm(
    norm: &mut BatchNorm<NdArray>,
    rng: &mut StdRng,
    k: f32,
    min_var: f32,
) {
    let [channels] = norm.gamma.val().dims();
    let mut gamma = random_values(rng, channels, -2.0, 2.0);
    gamma[0] = 0.0;
    norm.gamma = Param::from_tensor(vector(gamma));
    norm.beta = Param::from_tensor(vector(random_values(rng, channels, -0.5, 0.5)));
    let mean = random_values(rng, channels, -0.3 * k, 0.3 * k);
    norm.running_mean = RunningState::new(vector(mean));
    norm.running_var = RunningState::new(vector(random_values(rng, channels, min_var, k)));
}

/// A copy of a vector parameter with `by` added to every value.
pub(crate) fn shifted(param: &Param<Tensor<NdArray, 1>>, by: f32) -> Param<Tensor<NdArray, 1>> {
    Param::from_tensor(param.val() + by)
}

/// Asserts that a block's kept value follows every change: `signs` (which checks the block
/// against its parts) gives, for a clone after each of `changes`, other signs than the block's,
/// and the block's own again after them.
pub(crate) fn assert_follows_changes<M: Clone, T: PartialEq + std::fmt::Debug>(
    block: &M,
    signs: impl Fn(&M) -> T,
    changes: &[&dyn Fn(&mut M)],
) {
    let before = signs(block);
    for (i, change) in changes.iter().enumerate() {
        let mut changed = block.clone();
        change(&mut changed);
        assert_ne!(signs(&changed), before, "change {i} changed nothing");
    }
    assert_eq!(signs(block), before, "the block again");
}
