//! A binary fully connected layer with its activation: [`BinaryLinearBlock`], whose batch norm
//! and sign fold into the XNOR product outside training.

use std::sync::Arc;

use burn::{config::Config, module::Module, tensor::Tensor};

use super::{
    BatchNormSign, BatchNormSignConfig, BinaryLinear, BinaryLinearConfig, Signs, host_vector,
    kept::{Kept, KeyBits},
};
use crate::{
    QnnBackend,
    inference::thresholds::range_signs,
    ops::{Encoding, HostPacked},
};

/// Configuration of a [`BinaryLinearBlock`].
#[derive(Config, Debug)]
pub struct BinaryLinearBlockConfig {
    /// The binary fully connected layer (its input must be binarized, the default).
    pub linear: BinaryLinearConfig,
    /// The batch norm's `ε` (default `1e-5`, as Burn's `BatchNorm`).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// The batch norm's momentum (default `0.1`, as Burn's `BatchNorm`).
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BinaryLinearBlockConfig {
    /// Initializes the block on `device`: the layer as [`BinaryLinearConfig::init`], the batch
    /// norm as Burn's.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BinaryLinearBlock<B> {
        BinaryLinearBlock {
            linear: self.linear.init(device),
            sign: BatchNormSignConfig::new(self.linear.d_output)
                .with_epsilon(self.epsilon)
                .with_momentum(self.momentum)
                .init(device),
            ranges: Kept::default(),
        }
    }
}

/// A binary fully connected layer, then batch norm and sign: a hidden layer of a binary
/// network, `sign(norm(sign(x)·sign(W) + b))`, `[N, d_input]` → `±1` `[N, d_output]`.
///
/// It computes exactly what its parts compute in a row ([`BinaryLinear`], [`BatchNormSign`])
/// and trains the same way. Outside training on `NdArray` and `Flex`, the batch norm (and the
/// layer's bias and scale) fold into one range of integer products per output, and the
/// XNOR-popcount product's outputs are compared with it and written as bits. The ranges are
/// kept for the next call, and folded again when the batch norm, bias or scale change.
/// [`BinaryLinearBlock::forward_signs`] takes and gives those bits ([`Signs`]), so a chain of
/// blocks keeps its activations as bits from one layer to the next.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::nn::{BinaryLinearBlockConfig, BinaryLinearConfig, Signs};
///
/// let device = Default::default();
/// let first = BinaryLinearBlockConfig::new(BinaryLinearConfig::new(100, 64)).init::<NdArray>(&device);
/// let second = BinaryLinearBlockConfig::new(BinaryLinearConfig::new(64, 32)).init::<NdArray>(&device);
///
/// let x = Tensor::<NdArray, 2>::random([8, 100], Distribution::Default, &device);
/// let signs = second.forward_signs(first.forward_signs(Signs::of(x.clone())));
/// assert!(signs.is_packed()); // bits between and after the blocks
///
/// // Exactly what the layers compute one after the other.
/// let step = |block: &burn_qnn::nn::BinaryLinearBlock<NdArray>, x| {
///     block.sign.forward(block.linear.forward(x))
/// };
/// assert_eq!(signs.into_tensor().into_data(), step(&second, step(&first, x)).into_data());
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BinaryLinearBlock<B: QnnBackend> {
    /// The binary fully connected layer.
    pub linear: BinaryLinear<B>,
    /// The batch norm and sign after it.
    pub sign: BatchNormSign<B>,
    /// The ranges of the last call on the host, kept for the next with what they were folded
    /// from.
    #[module(skip)]
    ranges: Kept<KeyBits, (Vec<f32>, Vec<f32>)>,
}

impl<B: QnnBackend> BinaryLinearBlock<B> {
    /// `[N, d_input]` → `±1` `[N, d_output]`: the block of the signs of `x`, as a float tensor
    /// (see [`BinaryLinearBlock::forward_signs`] to keep the signs as bits).
    ///
    /// # Panics
    /// As [`BinaryLinear::forward`], if `x` does not have `d_input` features.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_signs(Signs::of(x)).into_tensor()
    }

    /// The block of signs `[N, d_input]` → signs `[N, d_output]`: as packed bits outside
    /// training on `NdArray` and `Flex`, as a float tensor elsewhere.
    ///
    /// # Panics
    /// As [`BinaryLinearBlock::forward`].
    pub fn forward_signs(&self, x: Signs<B, 2>) -> Signs<B, 2> {
        if let Some(rows) = self.on_host(&x) {
            return Signs::from_rows(rows, x.device());
        }
        let x = x.into_input(self.linear.binarize_input);
        Signs::of_binarized(self.sign.forward(self.linear.forward(x)))
    }

    /// The block on the CPU kernels, where the backend computes on the host outside training;
    /// `None` elsewhere, or where the input does not fit the layer (the tensor path then says
    /// why).
    fn on_host(&self, x: &Signs<B, 2>) -> Option<HostPacked> {
        let linear = &self.linear;
        if !x.on_host_kernels() || !linear.binarize_input {
            return None;
        }
        let [n, d_in] = x.dims();
        let [d_input, d_output] = linear.weight_dims();
        if d_in != d_input {
            return None;
        }
        let made;
        let weights = match linear.packed.rows() {
            Some(rows) => B::qnn_host_packed(rows.primitive())?,
            None => {
                // Rows `[d_output, d_input]`: the packed columns of the latent weight.
                made = B::qnn_with_host_values(linear.weight.val(), |w| {
                    HostPacked::pack_columns(w, &[d_input, d_output], Encoding::Signs)
                })?;
                &made
            }
        };
        let owned;
        let input = match x.rows() {
            Some(rows) => rows,
            None => {
                let values = x.clone().into_input(true);
                owned = B::qnn_with_host_values(values, |v| {
                    HostPacked::pack(v, &[n, d_in], Encoding::Signs)
                })?;
                &owned
            }
        };
        let ranges = self.ranges(d_input);
        let (lo, hi) = (&ranges.0[..], &ranges.1[..]);
        let (products, _) = input.matmul_transposed(weights);
        let words = range_signs(&products, d_output, lo, hi);
        Some(HostPacked::from_words(
            words,
            vec![n, d_output],
            Encoding::Signs,
        ))
    }

    /// Per output, the range of integer products `|y| ≤ d_input` where `norm(y·α + bias)`
    /// binarizes to `+1`, computed in the f32 operations of the tensor path (`α` the output
    /// scale, where the layer scales); the kept ones where nothing they depend on changed.
    fn ranges(&self, d_input: usize) -> Arc<(Vec<f32>, Vec<f32>)> {
        let scale = self.linear.alpha().map(host_vector);
        let bias = self.linear.bias.as_ref().map(|b| host_vector(b.val()));
        self.ranges
            .fold(
                &self.sign.eval_norm(),
                d_input,
                scale.as_deref(),
                bias.as_deref(),
                |lo, hi| Some((lo, hi)),
            )
            .expect("folding always gives ranges")
    }
}

#[cfg(test)]
mod tests {
    use burn::{backend::NdArray, module::Param, tensor::Distribution};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::nn::block_tests::{
        assert_follows_changes, random_values, randomize_norm, shifted, vector,
    };

    type B = NdArray;

    /// On the host, the folded product (trained and packed weights, from floats and from
    /// bits) gives exactly the parts' values, over random sizes across word boundaries, biases,
    /// scales and batch norms (γ of both signs and 0).
    #[test]
    fn folded_block_equals_its_parts() {
        let mut rng = StdRng::seed_from_u64(12);
        let device = Default::default();
        for case in 0..60 {
            let (d_in, d_out) = (rng.random_range(1..300), rng.random_range(1..200));
            let mut block = BinaryLinearBlockConfig::new(
                BinaryLinearConfig::new(d_in, d_out)
                    .with_bias(rng.random_bool(0.5))
                    .with_scaling(rng.random_bool(0.3)),
            )
            .init::<B>(&device);
            let k = d_in as f32;
            randomize_norm(&mut block.sign.norm, &mut rng, k, 0.0);
            if block.linear.bias.is_some() {
                let bias = random_values(&mut rng, d_out, -2.0, 2.0);
                block.linear.bias = Some(Param::from_tensor(vector(bias)));
            }
            let n = rng.random_range(1..40);
            let x = Tensor::<B, 2>::random([n, d_in], Distribution::Uniform(-1.0, 1.0), &device);
            let expected = block
                .sign
                .forward(block.linear.forward(x.clone()))
                .into_data();
            let signs = block.forward_signs(Signs::of(x.clone()));
            assert!(
                signs.is_packed(),
                "case {case}: the host path was not taken"
            );
            assert_eq!(signs.into_tensor().into_data(), expected, "case {case}");
            let packed = crate::inference::pack(&block).unwrap();
            assert_eq!(
                packed.forward(x.clone()).into_data(),
                expected,
                "case {case}, packed"
            );
            let rows = HostPacked::pack(
                &x.to_data().to_vec::<f32>().unwrap(),
                &[n, d_in],
                Encoding::Signs,
            );
            let bits = Signs::from_rows(rows, device);
            assert_eq!(
                packed.forward_signs(bits).into_tensor().into_data(),
                expected,
                "case {case}, from bits"
            );
        }
    }

    /// The kept ranges serve only what they were folded from: clones with another batch norm
    /// or bias, and the block again, each equal their parts, and each change changed the signs.
    #[test]
    fn kept_ranges_follow_every_change() {
        let device = Default::default();
        let block = BinaryLinearBlockConfig::new(BinaryLinearConfig::new(70, 9)).init::<B>(&device);
        let x = Tensor::<B, 2>::random([3, 70], Distribution::Uniform(-1.0, 1.0), &device);
        let signs = |block: &BinaryLinearBlock<B>| {
            let signs = block.forward_signs(Signs::of(x.clone()));
            assert!(signs.is_packed());
            let signs = signs.into_tensor().into_data();
            let parts = block.sign.forward(block.linear.forward(x.clone()));
            assert_eq!(signs, parts.into_data());
            signs
        };
        assert_follows_changes(
            &block,
            signs,
            &[
                &|b| b.sign.norm.beta = shifted(&b.sign.norm.beta, -10.0),
                &|b| b.linear.bias = b.linear.bias.as_ref().map(|bias| shifted(bias, 100.0)),
            ],
        );
    }
}
