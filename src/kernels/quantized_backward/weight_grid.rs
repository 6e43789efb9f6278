//! The quantized weight gradient of a stride-1 convolution on the padded grid, several images
//! to a product.
//!
//! On the padded grid ([`PaddedGrid`]) each tap's row of an image is one run of its padded
//! image, so the product reads it in place. Several images' padded images lie one after the
//! other, and a tap's row is then the runs of all of them: one product sums over the positions
//! of all those images, with their codes side by side as its right operand. A single image's
//! product at the small layers sums only a few dozen groups of four values per row of sums, and
//! its right operand is laid out anew for every image.

use std::ops::Range;

use super::QuantizedGrad;
use crate::kernels::{
    backward::Bits,
    conv::ConvCall,
    im2col::{PaddedGrid, Shapes},
    int8::{self, CheckedInt8},
};

/// Grid positions a product sums over at least, where the images have fewer: enough groups of
/// four values per row of sums that the products, not their setup, take the time, while the
/// codes (`C_out` rows of them) stay in L1 or L2.
const POSITIONS: usize = 1024;

/// Adds the weight gradient's sums of images `images` into `sum` `[taps, C_out]` (taps in the
/// weight's `[C_in, k_h, k_w]` order): `Σ_n Σ_p rows_n[tap, p] · codes_n[co, p]` over the grid
/// positions `p` of each image `n` (the extra grid positions have zero codes), the ±1 inputs
/// `input_signs` read as `pad` on the padding. For stride 1 (`g.stride == [1, 1]`).
#[allow(clippy::too_many_arguments)]
pub(super) fn accumulate_stride_one(
    isa: CheckedInt8,
    grad: &QuantizedGrad,
    input_signs: Bits<'_>,
    pad: i8,
    g: &ConvCall,
    s: &Shapes,
    images: Range<usize>,
    sum: &mut [i32],
) {
    debug_assert_eq!(g.stride, [1, 1], "the padded grid needs stride 1");
    let grid = PaddedGrid::of(g, s);
    let positions = grid.positions;
    let c_out = s.c_out;
    let per_product = POSITIONS
        .div_ceil(positions.max(1))
        .clamp(1, images.len().max(1));
    let slot = grid.image_buffer(pad);
    let slot_len = slot.len();
    let mut padded: Vec<i8> = slot.repeat(per_product);
    let mut values = vec![0i8; s.image_len()];
    // All images' codes on their grids: codes[co, j·positions + p]. The extra grid positions
    // are never written, so they stay zero: every offset (`co·k`, `j·positions`, a row's) is
    // a multiple of the padded width, so a position is extra (a column past `w_out` in its
    // row) in every product's layout, whatever its number of images.
    let mut codes = vec![0i8; c_out * per_product * positions];
    let starts: Vec<usize> = (0..s.taps).map(|tap| grid.tap_start(tap)).collect();
    let offsets: Vec<usize> = (0..per_product).map(|j| j * slot_len).collect();
    let image_grad = c_out * s.positions;
    let mut scratch = Vec::new();
    for first in images.clone().step_by(per_product) {
        let count = per_product.min(images.end - first);
        let k = count * positions;
        for j in 0..count {
            let n = first + j;
            let slot = &mut padded[j * slot_len..(j + 1) * slot_len];
            grid.fill_image(input_signs, n, &mut values, slot);
            grid.fill_output_channels(
                &grad.codes[n * image_grad..][..image_grad],
                &mut codes[j * positions..],
                k,
            );
        }
        let codes = int8::Rhs::new(isa, &codes[..c_out * k], c_out, k);
        let rows = int8::RowsIn {
            base: &padded[..count * slot_len],
            starts: &starts,
            offsets: &offsets[..count],
            run: positions,
        };
        // sum[tap, co] += Σ_{j, p} padded_j[starts[tap] + p] · codes[co, j·positions + p]
        int8::gemm_accumulate_rows_in(&rows, &codes, sum, &mut scratch);
    }
}
