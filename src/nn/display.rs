//! How the layers print (`println!("{model}")`), as Burn's own layers do: their shapes and
//! settings on one line each, then the parameter count.

use burn::module::{Content, DisplaySettings, ModuleDisplay};

use super::{
    BinaryConv2d, BinaryConvBlock, BinaryLinear, BinaryLinearBlock, BitPlaneConv2d,
    BitPlaneConvBlock, BitPlaneLinear, PackedWeight, QuantConv2d, QuantLinear, ShiftBatchNorm,
};
use crate::{QnnBackend, ops::ConvGeometry, quant::Quantize};

/// Attributes on one line, as Burn's `Linear` and `Conv2d` print.
fn one_line() -> Option<DisplaySettings> {
    DisplaySettings::new()
        .with_new_line_after_attribute(false)
        .optional()
}

/// The latent weight's dimensions, also once it is packed away.
fn weight_dims<const D: usize, B: QnnBackend, W: Quantize>(
    slot: &PackedWeight<B, W>,
) -> [usize; D] {
    slot.weight_shape()
        .try_into()
        .expect("the layer's weight rank")
}

/// Whether the layer holds packed weights, where it does.
fn packed_content<B: QnnBackend, W: Quantize>(
    content: Content,
    slot: &PackedWeight<B, W>,
) -> Content {
    if slot.is_packed() {
        content.add("packed", &true)
    } else {
        content
    }
}

/// A fully connected layer's `d_input`, `d_output` and `bias`.
fn linear_content(content: Content, dims: [usize; 2], bias: bool) -> Content {
    let [d_input, d_output] = dims;
    content
        .add("d_input", &d_input)
        .add("d_output", &d_output)
        .add("bias", &bias)
}

/// A convolution's channels, kernel, stride, padding and dilation.
fn conv_content(content: Content, geometry: &ConvGeometry, bias: bool) -> Content {
    let [ch_in, ch_out] = geometry.channels;
    content
        .add("ch_in", &ch_in)
        .add("ch_out", &ch_out)
        .add_debug_attribute("kernel_size", &geometry.kernel)
        .add_debug_attribute("stride", &geometry.stride)
        .add_debug_attribute("padding", &geometry.padding)
        .add_debug_attribute("dilation", &geometry.dilation)
        .add("bias", &bias)
}

/// The binary layers' own settings.
fn binary_content(
    content: Content,
    (binarize_input, scaling): (bool, bool),
    grad_bits: Option<crate::quant::Bits>,
    grad_rounding: crate::quant::GradRounding,
) -> Content {
    let content = content
        .add("binarize_input", &binarize_input)
        .add("scaling", &scaling)
        .add_debug_attribute("grad_bits", &grad_bits.map(|bits| bits.get()));
    match grad_rounding {
        crate::quant::GradRounding::Nearest => content,
        rounding => content.add_debug_attribute("grad_rounding", &rounding),
    }
}

impl<B: QnnBackend> ModuleDisplay for BinaryLinear<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let content = linear_content(content, weight_dims(&self.packed), self.bias.is_some());
        let settings = (self.binarize_input, self.scaling);
        let content = binary_content(content, settings, self.grad_bits, self.grad_rounding);
        packed_content(content, &self.packed).optional()
    }
}

impl<B: QnnBackend> ModuleDisplay for BinaryConv2d<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let content = conv_content(content, &self.geometry, self.bias.is_some())
            .add_debug_attribute("padding_mode", &self.geometry.padding_mode);
        let settings = (self.binarize_input, self.scaling);
        let content = binary_content(content, settings, self.grad_bits, self.grad_rounding);
        packed_content(content, &self.packed).optional()
    }
}

impl<B: QnnBackend> ModuleDisplay for BitPlaneLinear<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let content = linear_content(content, weight_dims(&self.packed), self.bias.is_some());
        packed_content(content, &self.packed).optional()
    }
}

// The blocks show their layers as a derived display would, without what they keep between
// calls.

impl<B: QnnBackend> ModuleDisplay for BinaryConvBlock<B> {
    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("conv", &self.conv)
            .add("pool", &self.pool)
            .add("sign", &self.sign)
            .optional()
    }
}

impl<B: QnnBackend> ModuleDisplay for BinaryLinearBlock<B> {
    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("linear", &self.linear)
            .add("sign", &self.sign)
            .optional()
    }
}

impl<B: QnnBackend> ModuleDisplay for BitPlaneConvBlock<B> {
    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("conv", &self.conv)
            .add("sign", &self.sign)
            .optional()
    }
}

impl<B: QnnBackend> ModuleDisplay for BitPlaneConv2d<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let content = conv_content(content, &self.geometry, self.bias.is_some());
        packed_content(content, &self.packed).optional()
    }
}

impl<B: QnnBackend, W: Quantize, X: Quantize> ModuleDisplay for QuantLinear<B, W, X> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let content = linear_content(content, weight_dims(&self.packed), self.bias.is_some())
            .add_debug_attribute("weight_quantizer", &self.weight_quantizer)
            .add_debug_attribute("input_quantizer", &self.input_quantizer);
        packed_content(content, &self.packed).optional()
    }
}

impl<B: QnnBackend, W: Quantize, X: Quantize> ModuleDisplay for QuantConv2d<B, W, X> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let [ch_out, ch_in, kh, kw] = weight_dims(&self.packed);
        let mut geometry = ConvGeometry::new([ch_in, ch_out], [kh, kw]);
        geometry.stride = self.options.stride;
        geometry.padding = self.options.padding;
        geometry.dilation = self.options.dilation;
        let content = conv_content(content, &geometry, self.bias.is_some())
            .add_debug_attribute("weight_quantizer", &self.weight_quantizer)
            .add_debug_attribute("input_quantizer", &self.input_quantizer);
        packed_content(content, &self.packed).optional()
    }
}

impl<B: QnnBackend> ModuleDisplay for ShiftBatchNorm<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("num_features", &self.gamma.dims()[0])
            .add("momentum", &self.momentum)
            .add("epsilon", &self.epsilon)
            .optional()
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::{backend::NdArray, nn::PaddingConfig2d};

    use super::super::{
        BinaryConv2dConfig, BinaryConvBlockConfig, BinaryLinearBlockConfig, BinaryLinearConfig,
        BitPlaneConv2dConfig, BitPlaneConvBlockConfig, BitPlaneLinearConfig, QuantConv2dConfig,
        QuantLinearConfig, ShiftBatchNormConfig,
    };
    use crate::quant::Bits;

    /// Asserts that `shown` names the layer type and holds each of `parts`.
    fn assert_shows(shown: String, layer: &str, parts: &[&str]) {
        assert!(shown.starts_with(layer), "{shown}");
        for part in parts {
            assert!(shown.contains(part), "{part:?} missing from {shown}");
        }
    }

    /// Each layer prints its shape and settings, and its parameter count.
    #[test]
    fn layers_show_their_settings() {
        let device = Default::default();
        let linear = BinaryLinearConfig::new(70, 5)
            .with_grad_bits(Some(Bits::new(6).unwrap()))
            .with_grad_rounding(crate::quant::GradRounding::Stochastic)
            .init::<NdArray>(&device);
        assert_shows(
            linear.to_string(),
            "BinaryLinear",
            &[
                "d_input: 70",
                "d_output: 5",
                "bias: true",
                "grad_bits: Some(6)",
                "grad_rounding: Stochastic",
                "params: 355",
            ],
        );
        let conv = BinaryConv2dConfig::new([3, 8], [3, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<NdArray>(&device);
        assert_shows(
            conv.to_string(),
            "BinaryConv2d",
            &[
                "ch_in: 3",
                "ch_out: 8",
                "kernel_size: [3, 2]",
                "padding: [1, 1]",
                "padding_mode: Zero",
                "binarize_input: true",
            ],
        );
        let bit_plane = BitPlaneLinearConfig::new(784, 10).init::<NdArray>(&device);
        assert_shows(
            bit_plane.to_string(),
            "BitPlaneLinear",
            &["d_input: 784", "d_output: 10"],
        );
        let bit_plane = BitPlaneConv2dConfig::new([3, 16], [3, 3]).init::<NdArray>(&device);
        assert_shows(
            bit_plane.to_string(),
            "BitPlaneConv2d",
            &["ch_in: 3", "ch_out: 16", "stride: [1, 1]"],
        );
        let quant = QuantLinearConfig::new(4, 3)
            .with_bits(Bits::new(3).unwrap(), Bits::TWO)
            .init::<NdArray>(&device);
        assert_shows(
            quant.to_string(),
            "QuantLinear",
            &[
                "d_input: 4",
                "weight_quantizer: Signed",
                "input_quantizer: Some(Unsigned",
            ],
        );
        let quant = QuantConv2dConfig::new([2, 4], [3, 3])
            .with_stride([2, 1])
            .init::<NdArray>(&device);
        assert_shows(
            quant.to_string(),
            "QuantConv2d",
            &["ch_in: 2", "ch_out: 4", "stride: [2, 1]", "params: 76"],
        );
        let norm = ShiftBatchNormConfig::new(8).init::<NdArray>(&device);
        assert_shows(norm.to_string(), "ShiftBatchNorm", &["num_features: 8"]);
        let stem = BitPlaneConvBlockConfig::new(BitPlaneConv2dConfig::new([1, 8], [3, 3]))
            .init::<NdArray>(&device)
            .to_string();
        assert_shows(
            stem.clone(),
            "BitPlaneConvBlock",
            &[
                "conv: BitPlaneConv2d",
                "ch_out: 8",
                "sign: ",
                "num_features: 8",
            ],
        );
        assert!(!stem.contains("Kept"), "{stem}");
        let block = BinaryConvBlockConfig::new(BinaryConv2dConfig::new([8, 16], [3, 3]))
            .with_pool(true)
            .init::<NdArray>(&device)
            .to_string();
        assert_shows(
            block.clone(),
            "BinaryConvBlock",
            &[
                "conv: BinaryConv2d",
                "ch_out: 16",
                "pool: true",
                "num_features: 16",
            ],
        );
        assert!(!block.contains("Kept"), "{block}");
        let block = BinaryLinearBlockConfig::new(BinaryLinearConfig::new(32, 12))
            .init::<NdArray>(&device)
            .to_string();
        assert_shows(
            block.clone(),
            "BinaryLinearBlock",
            &["linear: BinaryLinear", "d_output: 12", "num_features: 12"],
        );
        assert!(!block.contains("Kept"), "{block}");
    }
}
