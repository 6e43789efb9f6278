//! Convolutions as blocks of im2col rows times a float GEMM: the rows of one image's im2col
//! matrix (each tap's input values at every output position) are expanded a cache-sized block
//! at a time, from packed sign bits or from floats (`TapSource`), and multiplied on the `gemm`
//! crate's f32 micro-kernels; no activation-sized copy is made. The binary layers' gradients
//! ([`super::backward`]) and the float convolutions of the bit-plane first layer
//! ([`conv2d_forward`], [`conv2d_weight_grad`]) share this machinery.

use rayon::prelude::*;

use super::{
    backward::Bits,
    conv::ConvCall,
    float_gemm::{MatMut, MatRef, gemm},
};

/// Floats of expanded values at a time (1 MiB: fewer, larger products; measured fastest of
/// 128 KiB to 4 MiB on the training step).
pub(super) const BLOCK_VALUES: usize = 256 * 1024;

/// Where im2col rows read their input values of type `T`: packed ±1 bits (as `f32` or `i8`), or
/// floats.
pub(super) trait TapSource<T>: Copy + Sync {
    /// Writes values `start .. start + out.len()` into `out`.
    fn expand(&self, start: usize, out: &mut [T]);
    /// Value `i`.
    fn value(&self, i: usize) -> T;
}

impl TapSource<f32> for Bits<'_> {
    fn expand(&self, start: usize, out: &mut [f32]) {
        Bits::expand(self, start, out)
    }

    #[inline(always)]
    fn value(&self, i: usize) -> f32 {
        self.sign(i)
    }
}

impl TapSource<i8> for Bits<'_> {
    fn expand(&self, start: usize, out: &mut [i8]) {
        Bits::expand(self, start, out)
    }

    #[inline(always)]
    fn value(&self, i: usize) -> i8 {
        1 - 2 * self.bit(i) as i8
    }
}

impl TapSource<i8> for &[i8] {
    fn expand(&self, start: usize, out: &mut [i8]) {
        out.copy_from_slice(&self[start..start + out.len()]);
    }

    #[inline(always)]
    fn value(&self, i: usize) -> i8 {
        self[i]
    }
}

impl TapSource<f32> for &[f32] {
    fn expand(&self, start: usize, out: &mut [f32]) {
        out.copy_from_slice(&self[start..start + out.len()]);
    }

    #[inline(always)]
    fn value(&self, i: usize) -> f32 {
        self[i]
    }
}

/// One image's share of a convolution's shapes, in `usize`.
pub(super) struct Shapes {
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Rows of the im2col matrix: `c_in·k_h·k_w`, in the weight's `[C_in, k_h, k_w]` order.
    pub(super) taps: usize,
    /// Columns: output positions `oh·ow`.
    pub(super) positions: usize,
    /// im2col rows expanded at a time.
    pub(super) block: usize,
}

impl Shapes {
    pub(super) fn of(g: &ConvCall) -> Self {
        let [oh, ow] = g.output_size().unwrap_or_else(|e| panic!("conv2d: {e}"));
        let taps = g.in_channels * g.kernel[0] * g.kernel[1];
        let positions = oh * ow;
        Self {
            c_in: g.in_channels,
            c_out: g.out_channels,
            h: g.height,
            w: g.width,
            oh,
            ow,
            taps,
            positions,
            block: (BLOCK_VALUES / positions.max(1)).clamp(1, taps.max(1)),
        }
    }

    pub(super) fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
}

/// The output columns `ox` whose input column `ix = ox·s_w + kx·d_w − p_w` lies inside the
/// image (the others read padding).
#[inline(always)]
fn inside_columns(g: &ConvCall, s: &Shapes, kx: usize) -> std::ops::Range<usize> {
    let offset = kx * g.dilation[1];
    let (stride, pad) = (g.stride[1], g.padding[1]);
    // ix = ox·stride + offset − pad must lie in [0, w).
    let lo = if offset >= pad {
        0
    } else {
        (pad - offset).div_ceil(stride)
    };
    let hi = if s.w + pad > offset {
        ((s.w + pad - offset - 1) / stride + 1).min(s.ow)
    } else {
        0
    };
    lo.min(hi)..hi
}

/// The input row read by output row `oy` through tap row `ky`, if inside the image.
#[inline(always)]
fn input_row(g: &ConvCall, s: &Shapes, oy: usize, ky: usize) -> Option<usize> {
    (oy * g.stride[0] + ky * g.dilation[0])
        .checked_sub(g.padding[0])
        .filter(|&iy| iy < s.h)
}

/// Writes im2col rows `tap0 .. tap0 + rows.len() / positions` of image `n` (the input values
/// each tap reads at each output position, `pad` where it reads padding) into `rows`.
pub(super) fn expand_taps<T: Copy>(
    x: impl TapSource<T>,
    g: &ConvCall,
    s: &Shapes,
    n: usize,
    tap0: usize,
    pad: T,
    rows: &mut [T],
) {
    let [kh, kw] = g.kernel;
    for (r, row) in rows.chunks_exact_mut(s.positions).enumerate() {
        let tap = tap0 + r;
        let (ci, ky, kx) = (tap / (kh * kw), tap / kw % kh, tap % kw);
        let inside = inside_columns(g, s, kx);
        for (oy, out) in row.chunks_exact_mut(s.ow).enumerate() {
            let Some(iy) = input_row(g, s, oy, ky) else {
                out.fill(pad);
                continue;
            };
            out[..inside.start].fill(pad);
            out[inside.end..].fill(pad);
            let base = ((n * s.c_in + ci) * s.h + iy) * s.w + kx * g.dilation[1];
            if g.stride[1] == 1 {
                x.expand(base + inside.start - g.padding[1], &mut out[inside.clone()]);
            } else {
                for ox in inside.clone() {
                    out[ox] = x.value(base + ox * g.stride[1] - g.padding[1]);
                }
            }
        }
    }
}

/// A stride-1 convolution on the padded grid: the output positions are taken `w + 2·p_w` a row
/// (the padded width) instead of `w_out`; the extra ones get a zero output gradient (weight
/// gradients) or are dropped (the forward). Then tap `(c, i, j)` reads, at position `(y, x)` of
/// the grid, the padded image at `(c, y + i·d_h, x + j·d_w)`: one contiguous run of it, so each
/// tap's row of the product is a single copy instead of an im2col row assembled from `h_out`
/// pieces and padding.
pub(super) struct PaddedGrid {
    /// The padded image's height and width.
    padded: [usize; 2],
    /// Grid positions of an image: `h_out · (w + 2·p_w)`.
    pub(super) positions: usize,
    /// Where each tap's run starts in its channel's padded plane: `i·d_h·(w + 2·p_w) + j·d_w`.
    tap_offsets: Vec<usize>,
    kernel_taps: usize,
    padding: [usize; 2],
    /// `[C_in, h, w, h_out, w_out]`.
    shapes: [usize; 5],
    /// How far the last channel's last tap reads past its plane: `(k_w − 1)·d_w`.
    slack: usize,
}

impl PaddedGrid {
    pub(super) fn of(g: &ConvCall, s: &Shapes) -> Self {
        let padded = [s.h + 2 * g.padding[0], s.w + 2 * g.padding[1]];
        let [kh, kw] = g.kernel;
        let tap_offsets = (0..kh * kw)
            .map(|t| (t / kw) * g.dilation[0] * padded[1] + (t % kw) * g.dilation[1])
            .collect();
        Self {
            padded,
            positions: s.oh * padded[1],
            tap_offsets,
            kernel_taps: kh * kw,
            padding: g.padding,
            shapes: [s.c_in, s.h, s.w, s.oh, s.ow],
            slack: (kw - 1) * g.dilation[1],
        }
    }

    fn plane(&self) -> usize {
        self.padded[0] * self.padded[1]
    }

    /// Where tap `c·k_h·k_w + i·k_w + j`'s run starts in the padded image.
    pub(super) fn tap_start(&self, tap: usize) -> usize {
        let (c, t) = (tap / self.kernel_taps, tap % self.kernel_taps);
        c * self.plane() + self.tap_offsets[t]
    }

    /// The padded image `[C_in, h + 2·p_h, w + 2·p_w]` filled with `pad`, plus the run past the
    /// last plane that the last taps' extra positions read.
    pub(super) fn image_buffer<T: Copy>(&self, pad: T) -> Vec<T> {
        vec![pad; self.shapes[0] * self.plane() + self.slack]
    }

    /// Writes image `n`'s values (`values`, expanded from `source`, is scratch space of one
    /// image) inside the padding of `image` (the padding stays).
    pub(super) fn fill_image<T: Copy>(
        &self,
        source: impl TapSource<T>,
        n: usize,
        values: &mut [T],
        image: &mut [T],
    ) {
        let [_, h, w, ..] = self.shapes;
        source.expand(n * values.len(), values);
        let rows = image.chunks_exact_mut(self.plane()).flat_map(|plane| {
            plane
                .chunks_exact_mut(self.padded[1])
                .skip(self.padding[0])
                .take(h)
        });
        for (padded, row) in rows.zip(values.chunks_exact(w)) {
            padded[self.padding[1]..][..w].copy_from_slice(row);
        }
    }

    /// Writes an image's output values `[C_out, h_out, w_out]` on the grid: row `r` (channel and
    /// output row together) starts at `r` padded widths. The extra positions keep what they
    /// hold (zeros).
    pub(super) fn fill_output<T: Copy>(&self, output: &[T], grid: &mut [T]) {
        self.fill_output_channels(output, grid, self.positions);
    }

    /// [`PaddedGrid::fill_output`] with each channel's grid `channel_stride` values after the
    /// last one's (at least `positions`): channel `c`, output row `y` starts at
    /// `c·channel_stride + y·(w + 2·p_w)`.
    pub(super) fn fill_output_channels<T: Copy>(
        &self,
        output: &[T],
        grid: &mut [T],
        channel_stride: usize,
    ) {
        let [oh, ow] = [self.shapes[3], self.shapes[4]];
        for (c, channel) in output.chunks_exact(oh * ow).enumerate() {
            for (y, row) in channel.chunks_exact(ow).enumerate() {
                grid[c * channel_stride + y * self.padded[1]..][..ow].copy_from_slice(row);
            }
        }
    }

    /// The inverse of [`PaddedGrid::fill_output`]: an image's output `[C_out, h_out, w_out]`
    /// from its values on the grid (the extra positions dropped).
    pub(super) fn take_output<T: Copy>(&self, grid: &[T], output: &mut [T]) {
        let ow = self.shapes[4];
        for (r, row) in output.chunks_exact_mut(ow).enumerate() {
            row.copy_from_slice(&grid[r * self.padded[1]..][..ow]);
        }
    }

    /// Writes the rows of taps `tap0 ..` (`rows.len() / positions` of them): each the run of the
    /// padded image `image` that tap `c·k_h·k_w + i·k_w + j` reads.
    pub(super) fn tap_rows<T: Copy>(&self, image: &[T], tap0: usize, rows: &mut [T]) {
        for (row, tap) in rows.chunks_exact_mut(self.positions).zip(tap0..) {
            row.copy_from_slice(&image[self.tap_start(tap)..][..self.positions]);
        }
    }
}

/// Hands the tap rows of images `images`, `count` taps from `tap0` at a time, to
/// `product(tap0, count, rows, grad, positions)`, with the image's output gradient `grad`
/// (`[C_out, positions]`, from `grad_out` `[N, C_out, H_out, W_out]`) on the same positions:
/// `rows` holds each tap's input values at every position (`pad` where it reads padding), as
/// the weight gradients `Σ_p grad[co, p] · rows[tap, p]` need. Stride 1 runs on the padded grid
/// ([`PaddedGrid`]: a copy a tap row, the gradient laid on the grid with zeros at the extra
/// positions); other strides take im2col rows. A block of rows holds at most `budget` values
/// (one tap at least).
#[allow(clippy::too_many_arguments)]
pub(super) fn for_each_tap_block<T: Copy + Default>(
    source: impl TapSource<T>,
    pad: T,
    grad_out: &[T],
    g: &ConvCall,
    s: &Shapes,
    images: std::ops::Range<usize>,
    budget: usize,
    mut product: impl FnMut(usize, usize, &[T], &[T], usize),
) where
    for<'a> &'a [T]: TapSource<T>,
{
    // Stride 1: the grid, the padded image and the gradient on the grid.
    let mut on_grid = (g.stride == [1, 1]).then(|| {
        let grid = PaddedGrid::of(g, s);
        let (padded, grad) = (
            grid.image_buffer(pad),
            vec![T::default(); s.c_out * grid.positions],
        );
        (grid, padded, grad)
    });
    let positions = on_grid
        .as_ref()
        .map_or(s.positions, |(grid, ..)| grid.positions);
    let block = (budget / positions.max(1)).clamp(1, s.taps.max(1));
    let image_grad = s.c_out * s.positions;
    // The image's values, expanded once: the tap rows copy runs of them.
    let mut values = vec![T::default(); s.image_len()];
    let mut rows = vec![T::default(); block * positions];
    for n in images {
        let grad = &grad_out[n * image_grad..(n + 1) * image_grad];
        match &mut on_grid {
            Some((grid, padded, grid_grad)) => {
                grid.fill_image(source, n, &mut values, padded);
                grid.fill_output(grad, grid_grad);
            }
            None => source.expand(n * values.len(), &mut values),
        }
        let grad = on_grid
            .as_ref()
            .map_or(grad, |(_, _, grid_grad)| &grid_grad[..]);
        for tap0 in (0..s.taps).step_by(block) {
            let count = block.min(s.taps - tap0);
            let rows = &mut rows[..count * positions];
            match &on_grid {
                Some((grid, padded, _)) => grid.tap_rows(padded, tap0, rows),
                None => expand_taps(&values[..], g, s, 0, tap0, pad, rows),
            }
            product(tap0, count, rows, grad, positions);
        }
    }
}

/// Adds im2col rows `tap0 ..` of an input gradient (`rows`, `positions` values each) into the
/// image's gradient `dx` `[C_in, H, W]` (col2im); taps on padding are dropped.
pub(super) fn scatter_taps<T: Copy + std::ops::AddAssign>(
    g: &ConvCall,
    s: &Shapes,
    tap0: usize,
    rows: &[T],
    dx: &mut [T],
) {
    let [kh, kw] = g.kernel;
    for (r, row) in rows.chunks_exact(s.positions).enumerate() {
        let tap = tap0 + r;
        let (ci, ky, kx) = (tap / (kh * kw), tap / kw % kh, tap % kw);
        let inside = inside_columns(g, s, kx);
        for (oy, values) in row.chunks_exact(s.ow).enumerate() {
            let Some(iy) = input_row(g, s, oy, ky) else {
                continue;
            };
            let base = (ci * s.h + iy) * s.w + kx * g.dilation[1];
            if g.stride[1] == 1 {
                let start = base + inside.start - g.padding[1];
                let dst = &mut dx[start..start + inside.len()];
                for (d, &v) in dst.iter_mut().zip(&values[inside.clone()]) {
                    *d += v;
                }
            } else {
                for ox in inside.clone() {
                    dx[base + ox * g.stride[1] - g.padding[1]] += values[ox];
                }
            }
        }
    }
}

/// `Σ_n grad_out[n] · rows(n)ᵀ`: the weight gradient `[C_out, taps]` of a convolution whose
/// input values come from `source` (padded taps read `pad`), before any straight-through cut.
/// Groups of images run in parallel, each into its own sum.
pub(super) fn weight_grad_sum(
    grad_out: &[f32],
    source: impl TapSource<f32>,
    pad: f32,
    g: &ConvCall,
    out: &mut [f32],
) {
    let s = Shapes::of(g);
    let groups = rayon::current_num_threads().min(g.batch).max(1);
    let inner_parallel = groups < rayon::current_num_threads();
    let images_per_group = g.batch.div_ceil(groups).max(1);
    let sum_group = |first: usize| -> Vec<f32> {
        let mut sum = vec![0f32; s.c_out * s.taps];
        let images = first..(first + images_per_group).min(g.batch);
        let product = |tap0, count, rows: &[f32], grad: &[f32], positions| {
            // sum[co, tap] += Σ_p grad[co, p] · rows[tap, p]
            gemm(
                MatMut::row_major(&mut sum[tap0..], s.c_out, count, s.taps),
                true,
                MatRef::row_major(grad, s.c_out, positions, positions),
                MatRef::transposed(rows, positions, count, positions),
                inner_parallel,
            );
        };
        for_each_tap_block(source, pad, grad_out, g, &s, images, BLOCK_VALUES, product);
        sum
    };
    let firsts: Vec<usize> = (0..g.batch).step_by(images_per_group).collect();
    let sums: Vec<Vec<f32>> = if groups > 1 {
        firsts.into_par_iter().map(sum_group).collect()
    } else {
        firsts.into_iter().map(sum_group).collect()
    };
    out.fill(0.0);
    for sum in &sums {
        for (o, v) in out.iter_mut().zip(sum) {
            *o += v;
        }
    }
}

/// Panics unless the geometry is possible and the lengths match it.
fn check_float_conv(what: &str, g: &ConvCall, input: usize, weights: usize, output: usize) {
    g.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
    let [oh, ow] = g.output_size().expect("validated");
    assert_eq!(
        input,
        g.input_len(),
        "{what}: the input should hold [N, C_in, H, W] values"
    );
    assert_eq!(
        weights,
        g.weights_len(),
        "{what}: the weights should hold [C_out, C_in, k_h, k_w] values"
    );
    assert_eq!(
        output,
        g.batch * g.out_channels * oh * ow,
        "{what}: the output should hold [N, C_out, H_out, W_out] = {:?} values",
        [g.batch, g.out_channels, oh, ow]
    );
}

/// The float convolution of `input` `[N, C_in, H, W]` with `weights` `[C_out, C_in, k_h, k_w]`,
/// zero padding, written to `out` `[N, C_out, H_out, W_out]`. Images run in parallel.
///
/// ```
/// use burn_qnn::kernels::{conv::ConvCall, im2col::conv2d_forward};
///
/// let g = ConvCall {
///     batch: 1, in_channels: 1, height: 2, width: 2, out_channels: 1,
///     kernel: [2, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1],
/// };
/// let mut out = [0.0];
/// conv2d_forward(&[1.0, 2.0, 3.0, 4.0], &[1.0, -1.0, 0.5, 2.0], &g, &mut out);
/// assert_eq!(out, [1.0 - 2.0 + 1.5 + 8.0]);
/// ```
///
/// # Panics
/// If the geometry is impossible or a length does not match it.
pub fn conv2d_forward(input: &[f32], weights: &[f32], g: &ConvCall, out: &mut [f32]) {
    check_float_conv("conv2d", g, input.len(), weights.len(), out.len());
    let s = Shapes::of(g);
    let image_out = s.c_out * s.positions;
    if image_out == 0 {
        return;
    }
    let inner_parallel = g.batch < rayon::current_num_threads();
    let grid = (g.stride == [1, 1]).then(|| PaddedGrid::of(g, &s));
    let per_image = |(n, y): (usize, &mut [f32])| {
        if let Some(grid) = &grid {
            return conv2d_forward_on_grid(input, weights, grid, &s, n, y, inner_parallel);
        }
        let mut rows = vec![0f32; s.block * s.positions];
        for tap0 in (0..s.taps).step_by(s.block) {
            let count = s.block.min(s.taps - tap0);
            let rows = &mut rows[..count * s.positions];
            expand_taps(input, g, &s, n, tap0, 0.0, rows);
            // y[co, p] (+)= Σ_tap w[co, tap] · rows[tap, p]
            gemm(
                MatMut::row_major(y, s.c_out, s.positions, s.positions),
                tap0 > 0,
                MatRef::row_major(&weights[tap0..], s.c_out, count, s.taps),
                MatRef::row_major(rows, count, s.positions, s.positions),
                inner_parallel,
            );
        }
        if s.taps == 0 {
            y.fill(0.0);
        }
    };
    if inner_parallel {
        out.chunks_mut(image_out).enumerate().for_each(per_image);
    } else {
        out.par_chunks_mut(image_out)
            .enumerate()
            .for_each(per_image);
    }
}

/// Image `n` of [`conv2d_forward`] with stride 1, on the padded grid: each tap's row is one run
/// of the padded image, the product is taken at every grid position, and the positions past
/// `w_out` in each row are dropped when the result is copied to `y` `[C_out, h_out, w_out]`.
fn conv2d_forward_on_grid(
    input: &[f32],
    weights: &[f32],
    grid: &PaddedGrid,
    s: &Shapes,
    n: usize,
    y: &mut [f32],
    inner_parallel: bool,
) {
    let positions = grid.positions;
    let block = (BLOCK_VALUES / positions.max(1)).clamp(1, s.taps.max(1));
    let mut values = vec![0f32; s.image_len()];
    let mut padded = grid.image_buffer(0.0);
    grid.fill_image(input, n, &mut values, &mut padded);
    let mut on_grid = vec![0f32; s.c_out * positions];
    let mut rows = vec![0f32; block * positions];
    for tap0 in (0..s.taps).step_by(block) {
        let count = block.min(s.taps - tap0);
        let rows = &mut rows[..count * positions];
        grid.tap_rows(&padded, tap0, rows);
        // on_grid[co, p] (+)= Σ_tap w[co, tap] · rows[tap, p]
        gemm(
            MatMut::row_major(&mut on_grid, s.c_out, positions, positions),
            tap0 > 0,
            MatRef::row_major(&weights[tap0..], s.c_out, count, s.taps),
            MatRef::row_major(rows, count, positions, positions),
            inner_parallel,
        );
    }
    grid.take_output(&on_grid, y);
}

/// The gradient with respect to the weights `[C_out, C_in, k_h, k_w]` of the float
/// convolution [`conv2d_forward`] of `input`: `grad_out` `[N, C_out, H_out, W_out]` against
/// the input values each tap reads (zero on padding), written to `out`.
///
/// # Panics
/// If the geometry is impossible or a length does not match it.
pub fn conv2d_weight_grad(grad_out: &[f32], input: &[f32], g: &ConvCall, out: &mut [f32]) {
    check_float_conv(
        "conv2d weight gradient",
        g,
        input.len(),
        out.len(),
        grad_out.len(),
    );
    weight_grad_sum(grad_out, input, 0.0, g, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in `[−2, 2)` from a small deterministic generator.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn float_convolution_and_weight_gradient_match_their_definition() {
        for (case, (batch, c, h, w, o, kernel, stride, padding, dilation)) in [
            (2, 3, 7, 6, 5, [3, 3], [1, 1], [1, 1], [1, 1]),
            (1, 3, 9, 8, 33, [3, 3], [2, 1], [1, 2], [1, 1]),
            (3, 2, 8, 9, 4, [5, 3], [1, 2], [2, 0], [1, 2]),
        ]
        .into_iter()
        .enumerate()
        {
            let g = ConvCall {
                batch,
                in_channels: c,
                height: h,
                width: w,
                out_channels: o,
                kernel,
                stride,
                padding,
                dilation,
            };
            let [oh, ow] = g.output_size().unwrap();
            let x = values(g.input_len(), case as u64);
            let wt = values(g.weights_len(), 10 + case as u64);
            let dy = values(batch * o * oh * ow, 20 + case as u64);
            let (mut y, mut y_terms) = (vec![0f64; dy.len()], vec![0f64; dy.len()]);
            let (mut dw, mut dw_terms) = (vec![0f64; wt.len()], vec![0f64; wt.len()]);
            let [kh, kw] = kernel;
            for n in 0..batch {
                for oc in 0..o {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let yi = ((n * o + oc) * oh + oy) * ow + ox;
                            for ic in 0..c {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let iy = (oy * stride[0] + ky * dilation[0])
                                            .checked_sub(padding[0])
                                            .filter(|&v| v < h);
                                        let ix = (ox * stride[1] + kx * dilation[1])
                                            .checked_sub(padding[1])
                                            .filter(|&v| v < w);
                                        let (Some(iy), Some(ix)) = (iy, ix) else {
                                            continue;
                                        };
                                        let wi = ((oc * c + ic) * kh + ky) * kw + kx;
                                        let xv = x[((n * c + ic) * h + iy) * w + ix] as f64;
                                        y[yi] += xv * wt[wi] as f64;
                                        y_terms[yi] += (xv * wt[wi] as f64).abs();
                                        dw[wi] += xv * dy[yi] as f64;
                                        dw_terms[wi] += (xv * dy[yi] as f64).abs();
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let close = |what: &str, got: &[f32], expected: &[f64], terms: &[f64]| {
                for (i, ((&a, &e), &t)) in got.iter().zip(expected).zip(terms).enumerate() {
                    assert!(
                        (a as f64 - e).abs() <= 1e-5 * t + 1e-30,
                        "case {case} {what}: element {i} is {a}, expected {e}"
                    );
                }
            };
            let mut got = vec![f32::NAN; dy.len()];
            conv2d_forward(&x, &wt, &g, &mut got);
            close("forward", &got, &y, &y_terms);
            let mut got = vec![f32::NAN; wt.len()];
            conv2d_weight_grad(&dy, &x, &g, &mut got);
            close("weight gradient", &got, &dw, &dw_terms);
        }
    }
}
