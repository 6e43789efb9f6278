//! A bit-plane input convolution with its activation: [`BitPlaneConvBlock`], whose batch norm
//! and sign fold into the convolution of the 8-bit codes outside training.

use burn::{config::Config, module::Module, tensor::Tensor};

use super::{
    BatchNormSign, BatchNormSignConfig, BitPlaneConv2d, BitPlaneConv2dConfig, Signs, host_vector,
    kept::{Kept, KeyBits},
    signs::on_host_kernels,
};
use crate::{
    QnnBackend,
    inference::{
        PackedLayerRecord,
        host::{first_conv::FirstConv, pixel_codes_if_finite},
        norm_record,
    },
    kernels::conv::PackedActivations,
    ops::{ConvGeometry, PackedConvWeights},
};

/// Configuration of a [`BitPlaneConvBlock`].
#[derive(Config, Debug)]
pub struct BitPlaneConvBlockConfig {
    /// The bit-plane convolution of the images' 8-bit codes.
    pub conv: BitPlaneConv2dConfig,
    /// The batch norm's `ε` (default `1e-5`, as Burn's `BatchNorm`).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// The batch norm's momentum (default `0.1`, as Burn's `BatchNorm`).
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BitPlaneConvBlockConfig {
    /// Initializes the block on `device`: the convolution as [`BitPlaneConv2dConfig::init`],
    /// the batch norm as Burn's.
    pub fn init<B: QnnBackend>(&self, device: &B::Device) -> BitPlaneConvBlock<B> {
        BitPlaneConvBlock {
            conv: self.conv.init(device),
            sign: BatchNormSignConfig::new(self.conv.channels[1])
                .with_epsilon(self.epsilon)
                .with_momentum(self.momentum)
                .init(device),
            folded: Kept::default(),
        }
    }
}

/// The first layer of a convolutional binary network: a bit-plane convolution of the images'
/// 8-bit codes ([`BitPlaneConv2d`]), then batch norm and sign, `[N, C_in, H, W]` images in
/// `[−1, 1]` → `±1` `[N, C_out, H', W']`.
///
/// It computes exactly what its parts compute in a row ([`BitPlaneConv2d`], [`BatchNormSign`])
/// and trains the same way. Outside training on `NdArray` and `Flex`, where the layer has
/// stride 1, no dilation and at most 128 taps (`C_in·k_h·k_w`), the codes are multiplied by the
/// weight signs in 16-bit integer lanes, the batch norm and bias fold into ranges of those
/// products (per channel, and per border class, since the padding changes the layer's offset
/// term there), and the signs come out as bits ([`BitPlaneConvBlock::forward_signs`]), ready
/// for the binary blocks after it ([`super::BinaryConvBlock`]). The folded kernel is kept for
/// the next call, and folded again when the parameters, the geometry or the image size
/// change. Elsewhere, and for images with a value that is not finite, it takes the tensor path.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::PaddingConfig2d;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_qnn::nn::{BitPlaneConv2dConfig, BitPlaneConvBlockConfig};
///
/// let device = Default::default();
/// let stem = BitPlaneConvBlockConfig::new(
///     BitPlaneConv2dConfig::new([3, 32], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
/// )
/// .init::<NdArray>(&device);
/// let images = Tensor::<NdArray, 4>::random([2, 3, 8, 8], Distribution::Uniform(-1.0, 1.0), &device);
/// let signs = stem.forward_signs(images.clone());
/// assert!(signs.is_packed());
/// // Exactly the layers one after the other.
/// let parts = stem.sign.forward(stem.conv.forward(images));
/// assert_eq!(signs.into_tensor().into_data(), parts.into_data());
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BitPlaneConvBlock<B: QnnBackend> {
    /// The bit-plane convolution.
    pub conv: BitPlaneConv2d<B>,
    /// The batch norm and sign after it.
    pub sign: BatchNormSign<B>,
    /// The folded kernel of the last call on the host, kept for the next with what it was
    /// folded from: the weights, bias and batch norm, the geometry and the image size.
    #[module(skip)]
    folded: Kept<(KeyBits, ConvGeometry), FirstConv>,
}

impl<B: QnnBackend> BitPlaneConvBlock<B> {
    /// Images `[N, C_in, H, W]` → `±1` `[N, C_out, H', W']`, as a float tensor (see
    /// [`BitPlaneConvBlock::forward_signs`] to keep the signs as bits).
    ///
    /// # Panics
    /// As [`BitPlaneConv2d::forward`], if the images do not have `C_in` channels or are
    /// smaller than the kernel.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_signs(images).into_tensor()
    }

    /// Images `[N, C_in, H, W]` → signs `[N, C_out, H', W']`: as packed bits outside training
    /// on `NdArray` and `Flex` (where the layer's shape allows, see the type's docs), as a
    /// float tensor elsewhere.
    ///
    /// # Panics
    /// As [`BitPlaneConvBlock::forward`].
    pub fn forward_signs(&self, images: Tensor<B, 4>) -> Signs<B> {
        let device = images.device();
        if on_host_kernels::<B>(&device)
            && let Some(bits) = self.on_host(&images)
        {
            return Signs::from_images(bits, device);
        }
        Signs::of_binarized(self.sign.forward(self.conv.forward(images)))
    }

    /// The block on the CPU kernels, or `None` where they do not take it.
    fn on_host(&self, images: &Tensor<B, 4>) -> Option<PackedActivations> {
        let geometry = &self.conv.geometry;
        let [n, c, h, w] = images.dims();
        if c != geometry.channels[0] || geometry.call([n, c, h, w]).validate().is_err() {
            return None;
        }
        // Packed layers keep their packed weights; a trained one packs its latent weights.
        let weights = match self.conv.packed.conv_weights(geometry) {
            Some(packed) => packed.to_bytes(),
            None => PackedConvWeights::new(self.conv.weight.val(), *geometry).to_bytes(),
        };
        let bias = self.conv.bias.as_ref().map(|b| host_vector(b.val()));
        let key = KeyBits::default()
            .bytes(&weights)
            .floats(bias.as_deref())
            .norm(&self.sign.eval_norm())
            .sizes(&[h, w]);
        let first = self.folded.get_or_build((key, *geometry), || {
            let layer = PackedLayerRecord {
                weights,
                bias,
                output: norm_record(&self.sign.norm),
            };
            FirstConv::new(&layer, geometry, [h, w])
        })?;
        let codes = B::qnn_with_host_values(images.clone(), pixel_codes_if_finite)??;
        Some(first.forward(&codes, n))
    }
}

#[cfg(test)]
mod tests {
    use burn::{backend::NdArray, module::Param, nn::PaddingConfig2d, tensor::TensorData};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::nn::block_tests::{random_values, randomize_norm, shifted, vector};

    type B = NdArray;

    /// On the host, the folded integer kernel (trained and packed weights) gives exactly the
    /// parts' values over random shapes, paddings, biases and batch norms (γ of both signs and
    /// 0), for pixels on the 8-bit grid and between its steps; an image with a NaN takes the
    /// tensor path, with the parts' values.
    #[test]
    fn folded_block_equals_its_parts() {
        let mut rng = StdRng::seed_from_u64(13);
        let device = Default::default();
        for case in 0..40 {
            let c_in = rng.random_range(1..4);
            let kernel = [rng.random_range(1..4), rng.random_range(1..4)];
            let c_out = rng.random_range(1..80);
            let padding = rng.random_range(0..2);
            let mut block = BitPlaneConvBlockConfig::new(
                BitPlaneConv2dConfig::new([c_in, c_out], kernel)
                    .with_padding(PaddingConfig2d::Explicit(
                        padding, padding, padding, padding,
                    ))
                    .with_bias(rng.random_bool(0.5)),
            )
            .init::<B>(&device);
            let k = (c_in * kernel[0] * kernel[1]) as f32;
            randomize_norm(&mut block.sign.norm, &mut rng, k, 0.01);
            if block.conv.bias.is_some() {
                let bias = random_values(&mut rng, c_out, -1.0, 1.0);
                block.conv.bias = Some(Param::from_tensor(vector(bias)));
            }
            let dims = [
                rng.random_range(1..4),
                c_in,
                kernel[0] + rng.random_range(0..7),
                kernel[1] + rng.random_range(0..7),
            ];
            let pixels: Vec<f32> = (0..dims.iter().product::<usize>())
                .map(|_| match rng.random_range(0..3) {
                    // On the 8-bit grid, as the data sets' pixels are.
                    0 => rng.random_range(0..256) as f32 / 127.5 - 1.0,
                    _ => rng.random_range(-1.0..1.0),
                })
                .collect();
            let images = Tensor::<B, 4>::from_data(TensorData::new(pixels.clone(), dims), &device);
            let parts = |block: &BitPlaneConvBlock<B>, images: Tensor<B, 4>| {
                block.sign.forward(block.conv.forward(images)).into_data()
            };
            let expected = parts(&block, images.clone());
            let signs = block.forward_signs(images.clone());
            assert!(
                signs.is_packed(),
                "case {case}: the host path was not taken"
            );
            assert_eq!(signs.into_tensor().into_data(), expected, "case {case}");
            let packed = crate::inference::pack(&block).unwrap();
            assert_eq!(
                packed.forward(images.clone()).into_data(),
                expected,
                "case {case}, packed"
            );
            let mut with_nan = pixels;
            with_nan[0] = f32::NAN;
            let images = Tensor::<B, 4>::from_data(TensorData::new(with_nan, dims), &device);
            let signs = block.forward_signs(images.clone());
            assert!(
                !signs.is_packed(),
                "case {case}: a NaN pixel on the kernels"
            );
            assert_eq!(
                signs.into_tensor().into_data(),
                parts(&block, images),
                "case {case}, NaN"
            );
        }
    }

    /// The kept kernel serves only the parameters, geometry and image size it was built from:
    /// after the batch norm, the bias or the latent weights change (in a clone, which shares
    /// what is kept), and for another image size, the block still equals its parts, and the
    /// change changed the signs.
    #[test]
    fn kept_kernel_follows_every_change() {
        let device = Default::default();
        let block = BitPlaneConvBlockConfig::new(
            BitPlaneConv2dConfig::new([2, 5], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(true),
        )
        .init::<B>(&device);
        let uniform = burn::tensor::Distribution::Uniform(-1.0, 1.0);
        let images = Tensor::<B, 4>::random([3, 2, 6, 7], uniform, &device);
        let signs = |block: &BitPlaneConvBlock<B>, images: &Tensor<B, 4>| {
            let signs = block.forward_signs(images.clone());
            assert!(signs.is_packed());
            let parts = block.sign.forward(block.conv.forward(images.clone()));
            let signs = signs.into_tensor().into_data();
            assert_eq!(signs, parts.into_data());
            signs
        };
        let before = signs(&block, &images);
        assert_eq!(signs(&block, &images), before, "a second call, kept kernel");

        let mut norm_changed = block.clone();
        norm_changed.sign.norm.beta = shifted(&block.sign.norm.beta, 3.0);
        assert_ne!(signs(&norm_changed, &images), before);

        let mut bias_changed = block.clone();
        bias_changed.conv.bias = block.conv.bias.as_ref().map(|b| shifted(b, -50.0));
        assert_ne!(signs(&bias_changed, &images), before);

        let mut weights_changed = block.clone();
        let weight = weights_changed.conv.weight.val();
        weights_changed.conv.weight = Param::from_tensor(-weight);
        assert_ne!(signs(&weights_changed, &images), before);

        assert_eq!(signs(&block, &images), before, "the first block again");
        let mut padding_changed = block.clone();
        padding_changed.conv.geometry = padding_changed.conv.geometry.with_padding([0, 0]);
        assert_ne!(signs(&padding_changed, &images).shape, before.shape);

        let other_size = Tensor::<B, 4>::random([1, 2, 9, 4], uniform, &device);
        signs(&block, &other_size);
        assert_eq!(signs(&block, &images), before, "back to the first size");
    }
}
