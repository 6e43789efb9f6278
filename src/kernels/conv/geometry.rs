//! The shape of one binary convolution call: [`ConvCall`], its errors, and [`PaddingMode`].

/// The largest `kh·kw·c` supported: every dot product and correction is an integer of at most
/// this magnitude, exact in `f32`.
pub const MAX_TAPS_BITS: usize = 1 << 24;

/// One call of a 2-D convolution as the kernels take it: the input's batch and size with the
/// layer's shape (a layer's shape alone is [`crate::ops::ConvGeometry`], whose
/// [`call`](crate::ops::ConvGeometry::call) gives this); every pair is
/// `[vertical, horizontal]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvCall {
    /// Images `n`.
    pub batch: usize,
    /// Input channels `c`.
    pub in_channels: usize,
    /// Input height `h`.
    pub height: usize,
    /// Input width `w`.
    pub width: usize,
    /// Output channels `o`.
    pub out_channels: usize,
    /// Kernel size `[kh, kw]` (at least 1).
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]` (at least 1).
    pub stride: [usize; 2],
    /// Padding `[ph, pw]` on both sides of each axis.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]` (at least 1).
    pub dilation: [usize; 2],
}

/// Why a [`ConvCall`] is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvCallError {
    /// A kernel size, stride or dilation is 0.
    #[error("conv2d: {name} must be at least 1 on both axes, got {value:?}")]
    Zero {
        /// `kernel`, `stride` or `dilation`.
        name: &'static str,
        /// The offending pair.
        value: [usize; 2],
    },
    /// The dilated kernel is larger than the padded input, so there is no output position.
    #[error(
        "conv2d: the dilated kernel spans {extent} {axis} but the padded input has only {padded} \
         ({axis} {size} + 2 × padding {padding})"
    )]
    KernelTooLarge {
        /// `rows` or `columns`.
        axis: &'static str,
        /// `dilation·(kernel − 1) + 1`.
        extent: usize,
        /// `size + 2·padding`.
        padded: usize,
        /// The input size on the axis.
        size: usize,
        /// The padding on the axis.
        padding: usize,
    },
    /// `kh·kw·c` exceeds [`MAX_TAPS_BITS`], or a size overflows `usize`.
    #[error("conv2d: the geometry is too large ({0})")]
    TooLarge(&'static str),
}

impl ConvCall {
    /// The output size `[oh, ow]`: `oh = (h + 2·ph − dh·(kh − 1) − 1) / sh + 1`, likewise `ow`;
    /// an error if a kernel size, stride or dilation is 0, the dilated kernel exceeds the padded
    /// input, or the sizes overflow.
    pub fn output_size(&self) -> Result<[usize; 2], ConvCallError> {
        for (name, value) in [
            ("kernel", self.kernel),
            ("stride", self.stride),
            ("dilation", self.dilation),
        ] {
            if value.contains(&0) {
                return Err(ConvCallError::Zero { name, value });
            }
        }
        let overflow = ConvCallError::TooLarge("size overflow");
        let mut out = [0; 2];
        for (axis, name) in ["rows", "columns"].into_iter().enumerate() {
            let size = [self.height, self.width][axis];
            let padded = self.padding[axis]
                .checked_mul(2)
                .and_then(|p| p.checked_add(size))
                .ok_or(overflow.clone())?;
            let extent = (self.kernel[axis] - 1)
                .checked_mul(self.dilation[axis])
                .ok_or(overflow.clone())?
                + 1;
            if extent > padded {
                return Err(ConvCallError::KernelTooLarge {
                    axis: name,
                    extent,
                    padded,
                    size,
                    padding: self.padding[axis],
                });
            }
            out[axis] = (padded - extent) / self.stride[axis] + 1;
        }
        let taps = self.kernel[0]
            .checked_mul(self.kernel[1])
            .and_then(|t| t.checked_mul(self.in_channels))
            .ok_or(overflow.clone())?;
        if taps > MAX_TAPS_BITS {
            return Err(ConvCallError::TooLarge("kh·kw·c exceeds 2^24"));
        }
        let lens = [
            [self.batch, self.in_channels, self.height, self.width],
            [self.batch, self.out_channels, out[0], out[1]],
        ];
        for dims in lens {
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or(overflow.clone())?;
        }
        Ok(out)
    }

    /// Checks the geometry (see [`ConvCall::output_size`]).
    pub fn validate(&self) -> Result<(), ConvCallError> {
        self.output_size().map(|_| ())
    }

    /// Values of the NCHW input: `n·c·h·w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    /// Values of the OIHW weights: `o·c·kh·kw`.
    pub fn weights_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Values of the NCHW output, `n·o·oh·ow`.
    pub fn output_len(&self) -> Result<usize, ConvCallError> {
        let [oh, ow] = self.output_size()?;
        Ok(self.batch * self.out_channels * oh * ow)
    }

    /// Binary multiply-accumulates of the convolution (`n·o·oh·ow·c·kh·kw`), for throughput
    /// figures.
    pub fn macs(&self) -> Result<u64, ConvCallError> {
        let taps = (self.in_channels * self.kernel[0] * self.kernel[1]) as u64;
        Ok(self.output_len()? as u64 * taps)
    }
}

/// What out-of-image taps of a binary convolution hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum PaddingMode {
    /// Zero, as the paper's float convolution: padded taps contribute nothing (exact in the
    /// packed kernel through a correction term).
    #[default]
    Zero,
    /// `+1` (Larq Compute Engine's "one padding"): padded taps add the weight's sign; cheapest.
    PlusOne,
}
