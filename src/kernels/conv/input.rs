//! The packed input: its layout, [`ConvInput`], [`PackedActivations`] (with pooling) and the
//! packing of bands of rows.

use super::*;

/// Where the packed input of a geometry keeps each word (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(super) struct InputLayout {
    /// Channel words per pixel.
    pub(super) words: usize,
    /// Words between consecutive channel words of a pixel (one phase of one padded row).
    pub(super) word_stride: usize,
    /// Words of one padded row (all phases and channel words).
    pub(super) row_words: usize,
    /// Words of one image.
    pub(super) image_words: usize,
    /// Padded rows `h + 2·ph`.
    pub(super) rows: usize,
}

impl InputLayout {
    pub(super) fn new(g: &ConvCall, ow: usize) -> InputLayout {
        let words = words_per_row(g.in_channels);
        let [sw, dw, kw] = [g.stride[1], g.dilation[1], g.kernel[1]];
        let padded_width = g.width + 2 * g.padding[1];
        // Every phase holds its padded columns, and the lanes past the output's last column
        // (up to a whole vector) still read inside the row at every tap.
        let word_stride = padded_width
            .div_ceil(sw)
            .max(ow.div_ceil(LANES) * LANES + (kw - 1) * dw / sw);
        let row_words = sw * words * word_stride;
        let rows = g.height + 2 * g.padding[0];
        InputLayout {
            words,
            word_stride,
            row_words,
            image_words: rows * row_words,
            rows,
        }
    }

    /// The offset of each tap `(i, j)` (`i·kw + j`) from an output pixel's first word.
    pub(super) fn tap_offsets(&self, g: &ConvCall) -> Vec<usize> {
        let [kh, kw] = g.kernel;
        let [dh, dw] = g.dilation;
        let sw = g.stride[1];
        (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i, j)))
            .map(|(i, j)| {
                let (phase, index) = ((j * dw) % sw, (j * dw) / sw);
                i * dh * self.row_words + phase * self.words * self.word_stride + index
            })
            .collect()
    }
}

/// The input of a binary convolution.
#[derive(Clone, Copy, Debug)]
pub enum ConvInput<'a> {
    /// NCHW floats (`geometry.input_len()` values); only their signs count.
    Nchw(&'a [f32]),
    /// Signs already packed, e.g. by a previous [`convolve_to_signs`].
    Packed(&'a PackedActivations),
}

/// Sign activations (`±1`) packed as bits, for chaining binary layers without floats.
///
/// Layout ("row-planar"): image `b`, row `y`, channel word `wd`, column `x` is word
/// `((b·h + y)·words_per_row(c) + wd)·w + x`; its bit `t` is channel `64·wd + t`, 1 for `−1`
/// (`x < 0`; `+0`, `−0.0` and NaN are `+1`), and bits of channels `≥ c` are 0. (So the words of a
/// row and channel word are the row's pixels side by side — the layout the convolution reads.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedActivations {
    pub(super) batch: usize,
    pub(super) channels: usize,
    pub(super) height: usize,
    pub(super) width: usize,
    pub(super) words: Vec<u64>,
}

impl PackedActivations {
    /// Takes words already in this type's layout, for `[batch, channels, height, width]`.
    ///
    /// # Panics
    /// If `words` has not `batch·height·ceil(channels/64)·width` words, or a bit of a channel
    /// `≥ channels` is set.
    pub fn from_words(
        words: Vec<u64>,
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> PackedActivations {
        let cw = words_per_row(channels);
        assert_eq!(
            words.len(),
            batch * height * cw * width,
            "PackedActivations::from_words: word count"
        );
        if !channels.is_multiple_of(64) && width > 0 {
            let padding = !0u64 << (channels % 64);
            let last_word = |row: &[u64]| row[(cw - 1) * width..].iter().all(|w| w & padding == 0);
            assert!(
                words.chunks_exact(cw * width).all(last_word),
                "PackedActivations::from_words: bits set past channel {channels}"
            );
        }
        PackedActivations {
            batch,
            channels,
            height,
            width,
            words,
        }
    }

    /// Packs the signs of NCHW floats (`batch·channels·height·width` values).
    pub fn from_nchw(
        input: &[f32],
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> PackedActivations {
        let isa = active_isa();
        assert_eq!(
            input.len(),
            batch * channels * height * width,
            "PackedActivations::from_nchw: input length"
        );
        let isa = CheckedIsa::new(isa).isa();
        let cw = words_per_row(channels);
        let rows = RowLayout {
            channels,
            height,
            width,
            words: cw,
            word_stride: width,
            row_words: cw * width,
            stride: 1,
            padding: 0,
        };
        let mut words = vec![0u64; batch * height * cw * width];
        let image_values = channels * height * width;
        let parallel = input.len() >= PACK_PAR_MIN_VALUES && rayon::current_num_threads() > 1;
        let bands = if parallel {
            (2 * rayon::current_num_threads())
                .div_ceil(batch.max(1))
                .clamp(1, height.max(1))
        } else {
            1
        };
        let mut tasks = Vec::with_capacity(batch * bands);
        if rows.row_words > 0 {
            for (image, mut rest) in words.chunks_mut(height * rows.row_words).enumerate() {
                for band in 0..bands {
                    let band_rows = band_rows(height, band, bands);
                    let (chunk, tail) =
                        std::mem::take(&mut rest).split_at_mut(band_rows.len() * rows.row_words);
                    rest = tail;
                    tasks.push((image, band_rows, chunk));
                }
            }
        }
        let job = |(image, band, chunk): (usize, Range<usize>, &mut [u64])| {
            let pixels = &input[image * image_values..][..image_values];
            conv_tile::pack_rows(isa, pixels, &rows, band, chunk);
        };
        if parallel {
            tasks.into_par_iter().for_each(job);
        } else {
            tasks.into_iter().for_each(job);
        }
        PackedActivations {
            batch,
            channels,
            height,
            width,
            words,
        }
    }

    /// Unpacks into NCHW `±1` floats (`batch·channels·height·width` values).
    pub fn to_nchw(&self, out: &mut [f32]) {
        let [n, c, h, w] = self.shape();
        assert_eq!(
            out.len(),
            n * c * h * w,
            "PackedActivations::to_nchw: output length"
        );
        let (cw, plane) = (words_per_row(c), h * w);
        if plane == 0 {
            return;
        }
        // One image a job. Row `y` of channel `ch` is bit `ch % 64` of the words of row `y`
        // and channel word `ch / 64`, written as the sign bit of `1.0`.
        let signs = |out: &mut [f32], src: &[u64], bit: u32| {
            for (o, &word) in out.iter_mut().zip(src) {
                let negative = (word >> bit) as u32 & 1;
                *o = f32::from_bits(0x3f80_0000 | (negative << 31));
            }
        };
        let job = |(image, out): (usize, &mut [f32])| {
            let words = &self.words[image * h * cw * w..][..h * cw * w];
            for (ch, plane) in out.chunks_exact_mut(plane).enumerate() {
                let (wd, bit) = (ch / 64, (ch % 64) as u32);
                if cw == 1 {
                    // The plane's rows of words follow each other: one run.
                    signs(plane, words, bit);
                    continue;
                }
                for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                    signs(row, &words[(y * cw + wd) * w..][..w], bit);
                }
            }
        };
        let image = c * plane;
        if out.len() >= PACK_PAR_MIN_VALUES && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(image).enumerate().for_each(job);
        } else {
            out.chunks_mut(image).enumerate().for_each(job);
        }
    }

    /// 2 × 2 max pooling with stride 2 (output `floor(h/2) × floor(w/2)`), in the bit domain:
    /// the max of `±1` values is `+1` unless all are `−1`, so the output bit is the AND of the
    /// 4 input bits.
    pub fn max_pool2x2(&self) -> PackedActivations {
        self.sign_of_max_pool2x2(&[])
    }

    /// The signs that a monotone sign function of 2 × 2 max-pooled values gives, from the signs
    /// it gives before pooling (`self`): where channel `c`'s function rises with the value (its
    /// bit in `falling`, word `c / 64`, is 0), the sign of the max is the max of the signs (AND
    /// of the `−1` bits, as [`PackedActivations::max_pool2x2`]); where it falls (bit 1), the
    /// sign of the max is the min of the signs (OR of the bits). So a layer's pooling can follow
    /// its sign epilogue. Words missing from `falling` count as 0.
    pub fn sign_of_max_pool2x2(&self, falling: &[u64]) -> PackedActivations {
        let [n, c, h, w] = self.shape();
        let (h2, w2, cw) = (h / 2, w / 2, words_per_row(c));
        let mut words = vec![0u64; n * h2 * cw * w2];
        let job = |(row, dst): (usize, &mut [u64])| {
            // `row` counts (image, output row, channel word).
            let (image, y, wd) = (row / (h2 * cw), row / cw % h2, row % cw);
            let at = |yy: usize| ((image * h + yy) * cw + wd) * w;
            let (top, bottom) = (
                &self.words[at(2 * y)..][..w],
                &self.words[at(2 * y + 1)..][..w],
            );
            let or = falling.get(wd).copied().unwrap_or(0);
            for (x, d) in dst.iter_mut().enumerate() {
                let quad = [top[2 * x], top[2 * x + 1], bottom[2 * x], bottom[2 * x + 1]];
                let all = quad[0] & quad[1] & quad[2] & quad[3];
                let any = quad[0] | quad[1] | quad[2] | quad[3];
                *d = (all & !or) | (any & or);
            }
        };
        if w2 > 0 {
            if words.len() >= PACK_PAR_MIN_VALUES && rayon::current_num_threads() > 1 {
                words
                    .par_chunks_mut(w2)
                    .enumerate()
                    .with_min_len(64)
                    .for_each(job);
            } else {
                words.chunks_mut(w2).enumerate().for_each(job);
            }
        }
        PackedActivations {
            batch: n,
            channels: c,
            height: h2,
            width: w2,
            words,
        }
    }

    /// `[batch, channels, height, width]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.batch, self.channels, self.height, self.width]
    }

    /// The packed words (see the type docs for the layout).
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

/// Input values below which one thread packs them.
pub(super) const PACK_PAR_MIN_VALUES: usize = 1 << 16;

/// Packs band `band` of `bands` of image `image` of the input into its packed rows `dst`:
/// image rows `h·band/bands .. h·(band+1)/bands`, and the padding rows above (first band) or
/// below (last band). Every word of `dst` is written; padding is 0.
pub(super) fn pack_band(
    isa: Isa,
    input: ConvInput<'_>,
    g: &ConvCall,
    layout: &InputLayout,
    (image, band, bands): (usize, usize, usize),
    dst: &mut [u64],
) {
    dst.fill(0);
    let (c, h, w) = (g.in_channels, g.height, g.width);
    let rows = band_rows(h, band, bands);
    let first = if band == 0 { g.padding[0] } else { 0 };
    let inner = &mut dst[first * layout.row_words..][..rows.len() * layout.row_words];
    let row_layout = RowLayout {
        channels: c,
        height: h,
        width: w,
        words: layout.words,
        word_stride: layout.word_stride,
        row_words: layout.row_words,
        stride: g.stride[1],
        padding: g.padding[1],
    };
    match input {
        ConvInput::Nchw(values) => {
            let image_values = c * h * w;
            let pixels = &values[image * image_values..][..image_values];
            conv_tile::pack_rows(isa, pixels, &row_layout, rows, inner);
        }
        ConvInput::Packed(packed) => {
            if w == 0 || layout.row_words == 0 {
                return;
            }
            for (y, row) in rows.zip(inner.chunks_exact_mut(layout.row_words)) {
                for wd in 0..layout.words {
                    let src = &packed.words[((image * h + y) * layout.words + wd) * w..][..w];
                    if g.stride[1] == 1 {
                        row[row_layout.at(wd, 0)..][..w].copy_from_slice(src);
                    } else {
                        for (x, &word) in src.iter().enumerate() {
                            row[row_layout.at(wd, x)] = word;
                        }
                    }
                }
            }
        }
    }
}

/// Image rows of band `band` of `bands` of an image of `h` rows.
pub(super) fn band_rows(h: usize, band: usize, bands: usize) -> Range<usize> {
    h * band / bands..h * (band + 1) / bands
}
