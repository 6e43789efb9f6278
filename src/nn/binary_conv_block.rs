//! A binary convolution with its activation: [`BinaryConvBlock`], whose batch norm and sign
//! fold into the convolution outside training.

use std::sync::Arc;

use burn::{config::Config, module::Module, tensor::Tensor};

use super::{
    BatchNormSign, BatchNormSignConfig, BinaryConv2d, BinaryConv2dConfig, Signs, host_vector,
    kept::{Kept, KeyBits},
    max_pool2d,
};
use crate::{
    QnnBackend,
    inference::thresholds::{falling_mask, sign_thresholds},
    kernels::conv::{ConvInput, PackedActivations, SignThresholds, convolve_to_signs},
};

/// Configuration of a [`BinaryConvBlock`].
#[derive(Config, Debug)]
pub struct BinaryConvBlockConfig {
    /// The binary convolution (its input must be binarized, the default).
    pub conv: BinaryConv2dConfig,
    /// Whether 2 × 2 max pooling (stride 2) follows the convolution, before the batch norm, as
    /// in the paper's networks (default `false`).
    #[config(default = false)]
    pub pool: bool,
    /// The batch norm's `ε` (default `1e-5`, as Burn's `BatchNorm`).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// The batch norm's momentum (default `0.1`, as Burn's `BatchNorm`).
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BinaryConvBlockConfig {
    /// Initializes the block on `device`: the convolution as [`BinaryConv2dConfig::init`], the
    /// batch norm as Burn's.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BinaryConvBlock<B> {
        BinaryConvBlock {
            conv: self.conv.init(device),
            pool: self.pool,
            sign: BatchNormSignConfig::new(self.conv.channels[1])
                .with_epsilon(self.epsilon)
                .with_momentum(self.momentum)
                .init(device),
            thresholds: Kept::default(),
        }
    }
}

/// A binary convolution, optionally 2 × 2 max pooling, then batch norm and sign: the layer
/// between two binary layers of a convolutional binary network,
/// `sign(norm(pool(conv(sign(x)))))`.
///
/// It computes exactly what its parts compute in a row ([`BinaryConv2d`], [`max_pool2d`],
/// [`BatchNormSign`]), and trains the same way. Outside training on `NdArray` and `Flex` it
/// computes in one pass of the convolution kernel: the batch norm (and the layer's bias and
/// scale) fold into one threshold per channel on the integer products, the kernel writes the
/// signs as bits and pools them as bits. The thresholds are kept for the next call, and folded
/// again when the batch norm, bias or scale change. [`BinaryConvBlock::forward_signs`] takes and gives
/// those bits ([`Signs`]), so a chain of blocks keeps its activations as bits from one layer
/// to the next, as the packed networks of [`crate::inference`] do. Packing the model
/// ([`crate::inference::pack`]) stores the convolution's weights as bits as usual.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::PaddingConfig2d;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::nn::{BinaryConv2dConfig, BinaryConvBlockConfig, Signs, max_pool2d};
///
/// let device = Default::default();
/// let same = PaddingConfig2d::Explicit(1, 1, 1, 1);
/// let first = BinaryConvBlockConfig::new(
///     BinaryConv2dConfig::new([3, 16], [3, 3]).with_padding(same.clone()),
/// )
/// .init::<NdArray>(&device);
/// let second = BinaryConvBlockConfig::new(BinaryConv2dConfig::new([16, 16], [3, 3]).with_padding(same))
///     .with_pool(true)
///     .init::<NdArray>(&device);
///
/// let x = Tensor::<NdArray, 4>::random([2, 3, 8, 8], Distribution::Default, &device);
/// // The bits of the first block go straight into the second.
/// let signs = second.forward_signs(first.forward_signs(Signs::of(x.clone())));
/// assert!(signs.is_packed());
/// let y = signs.into_tensor();
/// assert_eq!(y.dims(), [2, 16, 4, 4]);
///
/// // Exactly what the layers compute one after the other.
/// let step = |block: &burn_qnn::nn::BinaryConvBlock<NdArray>, x| {
///     let y = block.conv.forward(x);
///     let y = if block.pool { max_pool2d(y, [2, 2], [2, 2]) } else { y };
///     block.sign.forward(y)
/// };
/// assert_eq!(y.into_data(), step(&second, step(&first, x)).into_data());
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BinaryConvBlock<B: QnnBackend> {
    /// The binary convolution.
    pub conv: BinaryConv2d<B>,
    /// Whether 2 × 2 max pooling (stride 2) follows the convolution.
    pub pool: bool,
    /// The batch norm and sign after the convolution (and pooling).
    pub sign: BatchNormSign<B>,
    /// The thresholds of the last call on the host, kept for the next with what they were
    /// folded from.
    #[module(skip)]
    thresholds: Kept<KeyBits, SignThresholds>,
}

impl<B: QnnBackend> BinaryConvBlock<B> {
    /// `[N, C_in, H, W]` → `±1` `[N, C_out, H', W']`: the block of the signs of `x`, as a float
    /// tensor (see [`BinaryConvBlock::forward_signs`] to keep the signs as bits).
    ///
    /// # Panics
    /// As [`BinaryConv2d::forward`], if `x` does not have `C_in` channels or is smaller than the
    /// kernel.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_signs(Signs::of(x)).into_tensor()
    }

    /// The block of signs `[N, C_in, H, W]` → signs `[N, C_out, H', W']`: as packed bits
    /// outside training on `NdArray` and `Flex`, as a float tensor elsewhere.
    ///
    /// # Panics
    /// As [`BinaryConvBlock::forward`].
    pub fn forward_signs(&self, x: Signs<B>) -> Signs<B> {
        if let Some(bits) = self.on_host(&x) {
            return Signs::from_images(bits, x.device());
        }
        let y = self.conv.forward(x.into_input(self.conv.binarize_input));
        let y = if self.pool {
            max_pool2d(y, [2, 2], [2, 2])
        } else {
            y
        };
        Signs::of_binarized(self.sign.forward(y))
    }

    /// The block on the CPU kernels, where the backend computes on the host outside training;
    /// `None` elsewhere, or where the input does not fit the layer (the tensor path then says
    /// why).
    fn on_host(&self, x: &Signs<B>) -> Option<PackedActivations> {
        if !x.on_host_kernels() || !self.conv.binarize_input {
            return None;
        }
        let geometry = &self.conv.geometry;
        let [n, c, h, w] = x.dims();
        let call = geometry.call([n, c, h, w]);
        if c != geometry.channels[0] || call.validate().is_err() {
            return None;
        }
        let made;
        let packed = match self.conv.packed.conv_weights(geometry) {
            Some(weights) => weights.packed().primitive(),
            None => {
                made = B::qnn_pack_conv_weights(self.conv.weight.val(), geometry);
                &made
            }
        };
        let weights = B::qnn_host_packed(packed)?.conv_weights(c, geometry.kernel);
        let thresholds = self.thresholds(weights.weights.max_dot())?;
        let owned;
        let input = match x.images() {
            Some(bits) => bits,
            None => {
                let values = x.clone().into_input(true);
                owned = B::qnn_with_host_values(values, |v| {
                    PackedActivations::from_nchw(v, n, c, h, w)
                })?;
                &owned
            }
        };
        let signs = convolve_to_signs(
            ConvInput::Packed(input),
            &weights.weights,
            &call,
            geometry.padding_mode,
            &thresholds,
        );
        Some(if self.pool {
            signs.sign_of_max_pool2x2(&falling_mask(&thresholds))
        } else {
            signs
        })
    }

    /// The per-channel thresholds on the integer products `|y| ≤ max_dot` at which
    /// `sign(norm(y·α + bias))` switches, computed in the f32 operations of the tensor path
    /// (`α` the output scale, where the layer scales); the kept ones where nothing they depend
    /// on changed.
    fn thresholds(&self, max_dot: usize) -> Option<Arc<SignThresholds>> {
        let scale = self.conv.alpha().map(host_vector);
        // A negative scale would turn the order of the pooled values around: not folded.
        if scale.iter().flatten().any(|&a| a < 0.0) {
            return None;
        }
        let bias = self.conv.bias.as_ref().map(|b| host_vector(b.val()));
        self.thresholds.fold(
            &self.sign.eval_norm(),
            max_dot,
            scale.as_deref(),
            bias.as_deref(),
            |lo, hi| sign_thresholds(&lo, &hi),
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::{backend::NdArray, module::Param, nn::PaddingConfig2d, tensor::Distribution};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::nn::block_tests::{
        assert_follows_changes, random_values, randomize_norm, shifted, vector,
    };
    use crate::ops::PaddingMode;

    type B = NdArray;

    /// A block of random geometry and batch norm (γ of both signs and 0), and an input for it.
    fn random_block(rng: &mut StdRng) -> (BinaryConvBlock<B>, Tensor<B, 4>) {
        let device = Default::default();
        let [c_in, c_out] = [rng.random_range(1..80), rng.random_range(1..140)];
        let kernel = [rng.random_range(1..4), rng.random_range(1..4)];
        let stride = [rng.random_range(1..3), rng.random_range(1..3)];
        let dilation = [rng.random_range(1..3), 1];
        let padding = rng.random_range(0..2);
        let mode = if rng.random_bool(0.5) {
            PaddingMode::Zero
        } else {
            PaddingMode::PlusOne
        };
        let config = BinaryConvBlockConfig::new(
            BinaryConv2dConfig::new([c_in, c_out], kernel)
                .with_stride(stride)
                .with_dilation(dilation)
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
                .with_padding_mode(mode)
                .with_bias(rng.random_bool(0.5))
                .with_scaling(rng.random_bool(0.3)),
        )
        .with_pool(rng.random_bool(0.5));
        let mut block = config.init::<B>(&device);
        let k = (c_in * kernel[0] * kernel[1]) as f32;
        randomize_norm(&mut block.sign.norm, rng, k, 0.0);
        if block.conv.bias.is_some() {
            let bias = random_values(rng, c_out, -2.0, 2.0);
            block.conv.bias = Some(Param::from_tensor(vector(bias)));
        }
        let reach = |axis: usize| dilation[axis] * (kernel[axis] - 1) + 1;
        let size = [
            reach(0) + rng.random_range(0..9),
            reach(1) + rng.random_range(0..9),
        ];
        let x = Tensor::random(
            [rng.random_range(1..4), c_in, size[0], size[1]],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        (block, x)
    }

    /// The block's parts one after the other, as the tensor path computes them.
    fn by_parts(block: &BinaryConvBlock<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = block.conv.forward(x);
        let y = if block.pool {
            max_pool2d(y, [2, 2], [2, 2])
        } else {
            y
        };
        block.sign.forward(y)
    }

    /// On the host, the folded kernel (trained and packed weights, from floats and from bits)
    /// gives exactly the parts' values, over random geometries, padding modes, pooling, biases,
    /// scales and batch norms.
    #[test]
    fn folded_block_equals_its_parts() {
        let mut rng = StdRng::seed_from_u64(11);
        for case in 0..60 {
            let (block, x) = random_block(&mut rng);
            let expected = by_parts(&block, x.clone());
            let signs = block.forward_signs(Signs::of(x.clone()));
            assert!(
                signs.is_packed(),
                "case {case}: the host path was not taken"
            );
            let got = signs.into_tensor();
            assert_eq!(got.to_data(), expected.to_data(), "case {case}: {block}");
            let packed = crate::inference::pack(&block).unwrap();
            assert_eq!(
                packed.forward(x.clone()).to_data(),
                expected.to_data(),
                "case {case}, packed"
            );
            // From bits: the input's signs packed by a previous block.
            let bits = Signs::from_images(
                PackedActivations::from_nchw(
                    &x.to_data().to_vec::<f32>().unwrap(),
                    x.dims()[0],
                    x.dims()[1],
                    x.dims()[2],
                    x.dims()[3],
                ),
                Default::default(),
            );
            assert_eq!(
                packed.forward_signs(bits).into_tensor().to_data(),
                expected.to_data(),
                "case {case}, from bits"
            );
        }
    }

    /// The kept thresholds serve only what they were folded from: clones with another batch
    /// norm or bias, and the block again, each equal their parts, and each change changed the
    /// signs.
    #[test]
    fn kept_thresholds_follow_every_change() {
        let device = Default::default();
        let block = BinaryConvBlockConfig::new(
            BinaryConv2dConfig::new([5, 7], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(true),
        )
        .with_pool(true)
        .init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 5, 6, 6], Distribution::Uniform(-1.0, 1.0), &device);
        let signs = |block: &BinaryConvBlock<B>| {
            let signs = block.forward_signs(Signs::of(x.clone()));
            assert!(signs.is_packed());
            let y = max_pool2d(block.conv.forward(x.clone()), [2, 2], [2, 2]);
            let signs = signs.into_tensor().into_data();
            assert_eq!(signs, block.sign.forward(y).into_data());
            signs
        };
        assert_follows_changes(
            &block,
            signs,
            &[
                &|b| b.sign.norm.beta = shifted(&b.sign.norm.beta, -10.0),
                &|b| b.conv.bias = b.conv.bias.as_ref().map(|bias| shifted(bias, 50.0)),
            ],
        );
    }
}
