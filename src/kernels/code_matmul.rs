//! Products of quantized values through their integer codes: the host body of
//! [`QnnBackend::qnn_code_matmul`](crate::QnnBackend::qnn_code_matmul).
//!
//! With `a = s_a·c_a + o_a` and `b = s_b·c_b + o_b` element-wise (the operands' code grids) and
//! `k` the inner dimension,
//!
//! ```text
//! Σ_t a_it·b_tj = s_a·s_b·Σ_t c_a,it·c_b,tj + s_a·o_b·Σ_t c_a,it + o_a·s_b·Σ_t c_b,tj + k·o_a·o_b
//! ```
//!
//! The first sum is exact on the bit-serial kernel; the row and column sums of the codes are
//! exact too; the rest is f32 arithmetic once per output.

use rayon::prelude::*;

use super::conv::ConvCall;
use super::float_gemm::{MatMut, MatRef, gemm};
use crate::ops::{Encoding, HostPacked};
use crate::quant::CodeGrid;

/// Rows one parallel task converts to codes.
const ROWS_PER_TASK: usize = 64;

/// Values one parallel task converts to codes.
const CODES_PER_TASK: usize = 1 << 14;

/// Columns one parallel task sums.
const COLUMNS_PER_TASK: usize = 256;

/// Whether every sum of code products (and of codes) of an inner dimension `k` is an integer
/// below 2^24, so that the kernel's f32 results are exact.
pub fn exact_in_f32(a_grid: CodeGrid, b_grid: CodeGrid, k: usize) -> bool {
    let largest =
        k as u128 * u128::from(a_grid.bits.max_code()) * u128::from(b_grid.bits.max_code());
    largest < 1 << 24
}

/// A product of codes with its operands' packed codes, which the backward pass keeps in place
/// of their values.
#[derive(Debug)]
pub struct CodeProduct {
    /// `a·b`, row-major `[m, n]`.
    pub out: Vec<f32>,
    /// The codes of `a`'s rows, `[m, k]`.
    pub lhs: HostPacked,
    /// The codes of `b`'s columns (the rows of `bᵀ`), `[n, k]`.
    pub rhs_t: HostPacked,
}

/// `a·b` of row-major `a` `[m, k]` and `b` `[k, n]` whose values lie on `a_grid` and `b_grid`,
/// with the code sums exact where [`exact_in_f32`] holds (the caller's to check).
///
/// # Panics
/// If a length does not fit `m`, `k`, `n`.
pub fn code_matmul(
    a: &[f32],
    a_grid: CodeGrid,
    b: &[f32],
    b_grid: CodeGrid,
    [m, k, n]: [usize; 3],
) -> CodeProduct {
    assert_eq!(a.len(), m * k, "code_matmul: lhs length");
    assert_eq!(b.len(), k * n, "code_matmul: rhs length");
    let (a_codes, a_sums) = codes_and_row_sums(a, a_grid, k);
    let b_codes = codes(b, b_grid);
    let b_sums = column_sums(&b_codes, n);
    let lhs = HostPacked::pack(&a_codes, &[m, k], Encoding::Codes(a_grid.bits));
    let rhs_t = HostPacked::pack_columns(&b_codes, &[k, n], Encoding::Codes(b_grid.bits));
    let out = product_of_codes(&lhs, &a_sums, a_grid, &rhs_t, &b_sums, b_grid, k);
    CodeProduct { out, lhs, rhs_t }
}

/// [`code_matmul`] with `b` given as the packed codes of its columns, `b_t` `[n, k]` (the rows of
/// `bᵀ` on `b_grid`, as [`pack_column_codes`] packs them), for weights packed once: the same
/// product of codes, without decoding and packing `b` again. The code sums of `b`'s columns
/// come from the bit planes' popcounts, once per packed tensor. Exact where [`exact_in_f32`] holds (the caller's to
/// check).
///
/// # Panics
/// If `a` does not hold `m · k` values for `b_t`'s `k`, or `b_t` does not hold codes of
/// `b_grid`'s width.
pub fn code_matmul_prepacked(
    a: &[f32],
    a_grid: CodeGrid,
    b_t: &HostPacked,
    b_grid: CodeGrid,
    m: usize,
) -> Vec<f32> {
    let rows = CodeRows::new(b_t, b_grid, "code_matmul_prepacked");
    let k = rows.k;
    assert_eq!(
        a.len(),
        m * k,
        "code_matmul_prepacked: lhs length for k = {k}"
    );
    let (a_codes, a_sums) = codes_and_row_sums(a, a_grid, k);
    let lhs = HostPacked::pack(&a_codes, &[m, k], Encoding::Codes(a_grid.bits));
    product_of_codes(&lhs, &a_sums, a_grid, b_t, &b_t.row_code_sums(), b_grid, k)
}

/// The codes of row-major `values` `[rows, k]` on `grid`, packed along `k`.
pub fn pack_codes(values: &[f32], grid: CodeGrid, [rows, k]: [usize; 2]) -> HostPacked {
    assert_eq!(values.len(), rows * k, "pack_codes: values length");
    HostPacked::pack(&codes(values, grid), &[rows, k], Encoding::Codes(grid.bits))
}

/// The codes of the columns of row-major `values` `[k, n]` on `grid`: the rows of the
/// transpose, packed along `k` (`[n, k]`).
pub fn pack_column_codes(values: &[f32], grid: CodeGrid, [k, n]: [usize; 2]) -> HostPacked {
    assert_eq!(values.len(), k * n, "pack_column_codes: values length");
    HostPacked::pack_columns(&codes(values, grid), &[k, n], Encoding::Codes(grid.bits))
}

/// The values of packed codes (rows `[rows, k]`, row-major) on `grid`: `scale·c + offset`.
///
/// # Panics
/// If `packed` does not hold codes of `grid`'s width.
pub fn unpack_codes(packed: &HostPacked, grid: CodeGrid) -> Vec<f32> {
    let rows = CodeRows::new(packed, grid, "unpack_codes");
    let mut out = vec![0f32; rows.rows * rows.k];
    rows.decode(0..rows.rows, &mut out);
    out
}

/// Packed codes `[rows, k]` with their grid, decoded a block of rows at a time.
struct CodeRows<'a> {
    packed: &'a HostPacked,
    rows: usize,
    k: usize,
    bits: u32,
    /// The value of each code.
    levels: Vec<f32>,
}

impl<'a> CodeRows<'a> {
    /// # Panics
    /// If `packed` is not a matrix of codes of `grid`'s width (`what` names the caller).
    fn new(packed: &'a HostPacked, grid: CodeGrid, what: &str) -> Self {
        assert_eq!(
            packed.encoding(),
            Encoding::Codes(grid.bits),
            "{what}: the packed codes are not {}-bit codes",
            grid.bits.get()
        );
        let &[rows, k] = packed.shape() else {
            panic!(
                "{what}: packed codes of shape {:?}, not [rows, k]",
                packed.shape()
            );
        };
        Self {
            packed,
            rows,
            k,
            bits: grid.bits.get(),
            levels: (0..=grid.bits.max_code())
                .map(|c| grid.scale * c as f32 + grid.offset)
                .collect(),
        }
    }

    /// The values of rows `range` into `out` (`range.len() · k` values).
    fn decode(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
        let row_words = self.bits as usize * super::words_per_row(self.k);
        let words = &self.packed.words()[range.start * row_words..range.end * row_words];
        super::pack::decode_planes(words, range.len(), self.k, self.bits, &self.levels, out);
    }

    /// Rows per block: a block of decoded values stays within cache.
    fn block(&self) -> usize {
        (super::im2col::BLOCK_VALUES / self.k.max(1)).clamp(1, self.rows.max(1))
    }
}

/// `grad · b` for `grad` `[m, n]` (row-major) and `b` `[n, k]` given as the packed codes of its
/// rows on `grid` (the rows of `bᵀ` of a product `a·bᵀ`, or of `b` in `a·b`'s left gradient
/// `g·bᵀ` with `b_t` the codes of `bᵀ`): `[m, k]`. The codes are decoded a cache-sized block of
/// rows at a time and multiplied by the `gemm` crate's f32 kernels; no operand-sized float
/// copy is made.
///
/// # Panics
/// If `grad` does not hold `m · n` values for the `n` rows of `b_rows`.
pub fn grad_times_codes(grad: &[f32], m: usize, b_rows: &HostPacked, grid: CodeGrid) -> Vec<f32> {
    let b = CodeRows::new(b_rows, grid, "grad_times_codes");
    let (n, k) = (b.rows, b.k);
    assert_eq!(grad.len(), m * n, "grad_times_codes: gradient length");
    let mut out = vec![0f32; m * k];
    if m == 0 {
        return out;
    }
    let block = b.block();
    let mut rows = vec![0f32; block * k];
    for c0 in (0..n).step_by(block) {
        let count = block.min(n - c0);
        let rows = &mut rows[..count * k];
        b.decode(c0..c0 + count, rows);
        // out[r, j] += Σ_c grad[r, c0 + c] · b[c0 + c, j]
        gemm(
            MatMut::row_major(&mut out, m, k, k),
            c0 > 0,
            MatRef::row_major(&grad[c0..], m, count, n),
            MatRef::row_major(rows, count, k, k),
            true,
        );
    }
    out
}

/// `aᵀ · grad` for `a` `[m, k]` given as the packed codes of its rows on `grid` and `grad`
/// `[m, n]` (row-major): `[k, n]`, the right gradient of a product `a·b`. Decoded a block of
/// rows at a time, as [`grad_times_codes`].
///
/// # Panics
/// If `grad` does not hold `m · n` values for the `m` rows of `a_rows`.
pub fn codes_transposed_times_grad(
    a_rows: &HostPacked,
    grid: CodeGrid,
    grad: &[f32],
    n: usize,
) -> Vec<f32> {
    let a = CodeRows::new(a_rows, grid, "codes_transposed_times_grad");
    let (m, k) = (a.rows, a.k);
    assert_eq!(
        grad.len(),
        m * n,
        "codes_transposed_times_grad: gradient length"
    );
    let mut out = vec![0f32; k * n];
    let block = a.block();
    let mut rows = vec![0f32; block * k];
    for r0 in (0..m).step_by(block) {
        let count = block.min(m - r0);
        let rows = &mut rows[..count * k];
        a.decode(r0..r0 + count, rows);
        // out[j, c] += Σ_r a[r0 + r, j] · grad[r0 + r, c]
        gemm(
            MatMut::row_major(&mut out, k, n, n),
            r0 > 0,
            MatRef::transposed(rows, k, count, k),
            MatRef::row_major(&grad[r0 * n..], count, n, n),
            true,
        );
    }
    out
}

/// `Σ_t a_it·b_tj` from the packed codes of `a`'s rows (`lhs`) and of `b`'s columns
/// (`rhs_t`), with their code sums: the bit-serial product, then the grids' scales and offsets
/// (the module's formula). Row-major `[rows of a, columns of b]`.
fn product_of_codes(
    lhs: &HostPacked,
    a_sums: &[f32],
    a_grid: CodeGrid,
    rhs_t: &HostPacked,
    b_sums: &[f32],
    b_grid: CodeGrid,
    k: usize,
) -> Vec<f32> {
    let n = b_sums.len();
    let (mut out, _) = lhs.matmul_transposed(rhs_t);
    // In f64: the terms can be much larger than their sum (offsets cancel), and each is exact
    // there, so only the final rounding to f32 remains.
    let [sa, oa, sb, ob] =
        [a_grid.scale, a_grid.offset, b_grid.scale, b_grid.offset].map(f64::from);
    let constant = k as f64 * oa * ob;
    out.par_chunks_mut(n.max(1))
        .zip(a_sums)
        .for_each(|(row, &a_sum)| {
            let row_term = sa * ob * f64::from(a_sum) + constant;
            for (o, &b_sum) in row.iter_mut().zip(b_sums) {
                *o = (sa * sb * f64::from(*o) + row_term + oa * sb * f64::from(b_sum)) as f32;
            }
        });
    out
}

/// The convolution `x ⊛ w` (zero padding, NCHW input, OIHW weights, NCHW output) of values on
/// `x_grid` and `w_grid` as a product of codes: the im2col matrix of `x`'s codes times the
/// weights' codes. Exact code sums need [`exact_in_f32`] for `k = C_in·k_h·k_w`, and zero
/// padding needs `x_grid.offset` to be 0 (so that the padded value 0 is code 0); the caller's
/// to check.
///
/// # Panics
/// If the geometry is impossible ([`ConvCall::output_size`]) or a length does not fit it.
pub fn code_conv2d(
    x: &[f32],
    x_grid: CodeGrid,
    w: &[f32],
    w_grid: CodeGrid,
    shape: &ConvCall,
) -> Vec<f32> {
    assert_eq!(w.len(), shape.weights_len(), "code_conv2d: weight length");
    // The weights `[C_out, taps]` are already the rows of the product's right operand.
    let taps = shape.in_channels * shape.kernel[0] * shape.kernel[1];
    let (w_codes, w_sums) = codes_and_row_sums(w, w_grid, taps);
    let rhs_t = HostPacked::pack(
        &w_codes,
        &[shape.out_channels, taps],
        Encoding::Codes(w_grid.bits),
    );
    conv_of_codes(x, x_grid, &rhs_t, &w_sums, w_grid, shape)
}

/// [`code_conv2d`] with the weights given as their packed codes `w_rows` `[C_out,
/// C_in·k_h·k_w]` (OIHW rows, as [`pack_codes`] packs the weights reshaped to rows): weights
/// packed once, the same result.
///
/// # Panics
/// As [`code_conv2d`], and if `w_rows` does not hold codes of `w_grid`'s width in that shape.
pub fn code_conv2d_prepacked(
    x: &[f32],
    x_grid: CodeGrid,
    w_rows: &HostPacked,
    w_grid: CodeGrid,
    shape: &ConvCall,
) -> Vec<f32> {
    let taps = shape.in_channels * shape.kernel[0] * shape.kernel[1];
    let rows = CodeRows::new(w_rows, w_grid, "code_conv2d_prepacked");
    assert_eq!(
        [rows.rows, rows.k],
        [shape.out_channels, taps],
        "code_conv2d_prepacked: weight rows for {shape:?}"
    );
    conv_of_codes(x, x_grid, w_rows, &w_rows.row_code_sums(), w_grid, shape)
}

/// The convolution of `x`'s codes with the packed weight rows `rhs_t` (code sums `w_sums`).
fn conv_of_codes(
    x: &[f32],
    x_grid: CodeGrid,
    rhs_t: &HostPacked,
    w_sums: &[f32],
    w_grid: CodeGrid,
    shape: &ConvCall,
) -> Vec<f32> {
    let [h_out, w_out] = shape
        .output_size()
        .unwrap_or_else(|error| panic!("code_conv2d: {error}"));
    let (n, c_in, h, wid) = (shape.batch, shape.in_channels, shape.height, shape.width);
    let (c_out, [kh, kw]) = (shape.out_channels, shape.kernel);
    let (taps, positions) = (c_in * kh * kw, h_out * w_out);
    assert_eq!(x.len(), shape.input_len(), "code_conv2d: input length");
    // The input's codes, once; then their im2col: one row per output position, one column per
    // tap; padded taps are code 0 (the value 0 when the grid's offset is 0), with each row's
    // code sum.
    let x_codes = codes(x, x_grid);
    let mut cols = vec![0f32; n * positions * taps];
    let mut col_sums = vec![0f32; n * positions];
    cols.par_chunks_mut(taps.max(1))
        .zip(col_sums.par_iter_mut())
        .enumerate()
        .for_each(|(row, (out, sum))| {
            let (image, position) = (row / positions, row % positions);
            let (oy, ox) = (position / w_out, position % w_out);
            let columns: Vec<Option<usize>> = (0..kw)
                .map(|kx| {
                    (ox * shape.stride[1] + kx * shape.dilation[1])
                        .checked_sub(shape.padding[1])
                        .filter(|&ix| ix < wid)
                })
                .collect();
            for ky in 0..kh {
                let Some(iy) = (oy * shape.stride[0] + ky * shape.dilation[0])
                    .checked_sub(shape.padding[0])
                    .filter(|&iy| iy < h)
                else {
                    continue;
                };
                for c in 0..c_in {
                    let line = &x_codes[((image * c_in + c) * h + iy) * wid..][..wid];
                    let taps_of_line = &mut out[(c * kh + ky) * kw..][..kw];
                    for (tap, column) in taps_of_line.iter_mut().zip(&columns) {
                        if let Some(ix) = *column {
                            *tap = line[ix];
                        }
                    }
                }
            }
            *sum = sum_of_codes(out);
        });
    let lhs = HostPacked::pack(&cols, &[n * positions, taps], Encoding::Codes(x_grid.bits));
    let rows = product_of_codes(&lhs, &col_sums, x_grid, rhs_t, w_sums, w_grid, taps);
    let mut out = vec![0f32; n * c_out * positions];
    out.par_chunks_mut(positions.max(1))
        .enumerate()
        .for_each(|(plane, out)| {
            let (image, o) = (plane / c_out, plane % c_out);
            for (p, value) in out.iter_mut().enumerate() {
                *value = rows[(image * positions + p) * c_out + o];
            }
        });
    out
}

/// The sum of integer codes, in 16 independent lanes (so that it vectorizes): exact, and so
/// equal to the sum in order, while it stays below 2^24, which [`exact_in_f32`] ensures.
fn sum_of_codes(codes: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = codes.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &c) in lanes.iter_mut().zip(chunk) {
            *lane += c;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// The codes of `values`, in parallel.
fn codes(values: &[f32], grid: CodeGrid) -> Vec<f32> {
    let mut codes = vec![0f32; values.len()];
    codes
        .par_chunks_mut(CODES_PER_TASK)
        .zip(values.par_chunks(CODES_PER_TASK))
        .for_each(|(codes, values)| {
            for (c, &v) in codes.iter_mut().zip(values) {
                *c = grid.code_of(v);
            }
        });
    codes
}

/// The sum of each column of the row-major `codes` with rows of `width`, a block of columns per
/// parallel task.
fn column_sums(codes: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0f32; width];
    sums.par_chunks_mut(COLUMNS_PER_TASK)
        .enumerate()
        .for_each(|(block, sums)| {
            let start = block * COLUMNS_PER_TASK;
            for row in codes.chunks_exact(width.max(1)) {
                for (s, &c) in sums.iter_mut().zip(&row[start..]) {
                    *s += c;
                }
            }
        });
    sums
}

/// The codes of `values` (rows of `width`) and the sum of each row's codes.
fn codes_and_row_sums(values: &[f32], grid: CodeGrid, width: usize) -> (Vec<f32>, Vec<f32>) {
    let mut codes = vec![0f32; values.len()];
    let rows = values.len() / width.max(1);
    let mut sums = vec![0f32; rows];
    let task = ROWS_PER_TASK * width.max(1);
    codes
        .par_chunks_mut(task)
        .zip(values.par_chunks(task))
        .zip(sums.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((codes, values), sums)| {
            for ((codes, values), sum) in codes
                .chunks_mut(width.max(1))
                .zip(values.chunks(width.max(1)))
                .zip(sums)
            {
                for (c, &v) in codes.iter_mut().zip(values) {
                    *c = grid.code_of(v);
                }
                *sum = sum_of_codes(codes);
            }
        });
    (codes, sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Bits, Quantizer};

    /// The product with prepacked column codes is [`code_matmul`]'s, bit for bit, for every grid
    /// kind and widths that are not multiples of 64 (the code sums read the planes).
    #[test]
    fn prepacked_product_equals_the_product_of_values() {
        let grids = [
            Quantizer::Unsigned(Bits::TWO),
            Quantizer::Signed(Bits::new(3).unwrap()),
            Quantizer::Sign,
            Quantizer::Unsigned(Bits::new(8).unwrap()),
        ]
        .map(|q| CodeGrid::of(q).unwrap());
        for (case, [m, k, n]) in [[1, 70, 5], [3, 200, 9], [4, 64, 1], [2, 1, 3]]
            .into_iter()
            .enumerate()
        {
            let a_grid = grids[case % 4];
            let b_grid = grids[(case + 1) % 4];
            let level = |g: CodeGrid, i: usize| {
                g.scale * ((i * 7 + i / 3) % (g.bits.max_code() as usize + 1)) as f32 + g.offset
            };
            let a: Vec<f32> = (0..m * k).map(|i| level(a_grid, i)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| level(b_grid, i + 5)).collect();
            let expected = code_matmul(&a, a_grid, &b, b_grid, [m, k, n]).out;
            let b_t = pack_column_codes(&b, b_grid, [k, n]);
            assert_eq!(
                code_matmul_prepacked(&a, a_grid, &b_t, b_grid, m),
                expected,
                "case {case}: [{m}, {k}] × [{k}, {n}]"
            );
        }
    }

    /// The convolution of codes equals a direct f64 convolution of the values, with padding,
    /// stride and dilation, with the weights' codes packed on each call or once.
    #[test]
    fn convolution_equals_the_direct_sum() {
        let x_grid = CodeGrid::of(Quantizer::Unsigned(Bits::TWO)).unwrap();
        let w_grid = CodeGrid::of(Quantizer::Signed(Bits::new(3).unwrap())).unwrap();
        let shape = ConvCall {
            batch: 2,
            in_channels: 3,
            height: 7,
            width: 6,
            out_channels: 4,
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 2],
            dilation: [1, 2],
        };
        let level = |g: CodeGrid, i: usize| {
            g.scale * ((i * 7 + i / 5) % (g.bits.max_code() as usize + 1)) as f32 + g.offset
        };
        let x: Vec<f32> = (0..2 * 3 * 7 * 6).map(|i| level(x_grid, i)).collect();
        let w: Vec<f32> = (0..4 * 3 * 3 * 2).map(|i| level(w_grid, i + 3)).collect();
        let out = code_conv2d(&x, x_grid, &w, w_grid, &shape);
        // The weights packed once give the same convolution.
        let w_rows = pack_codes(&w, w_grid, [4, 3 * 3 * 2]);
        assert_eq!(
            code_conv2d_prepacked(&x, x_grid, &w_rows, w_grid, &shape),
            out
        );
        let [h_out, w_out] = shape.output_size().unwrap();
        assert_eq!([h_out, w_out], [4, 8]);
        for n in 0..2 {
            for o in 0..4 {
                for oy in 0..h_out {
                    for ox in 0..w_out {
                        let mut exact = 0f64;
                        for c in 0..3 {
                            for ky in 0..3 {
                                for kx in 0..2 {
                                    let iy = (oy * 2 + ky) as isize - 1;
                                    let ix = (ox + kx * 2) as isize - 2;
                                    if iy < 0 || ix < 0 || iy >= 7 || ix >= 6 {
                                        continue;
                                    }
                                    let xv = x[((n * 3 + c) * 7 + iy as usize) * 6 + ix as usize];
                                    let wv = w[((o * 3 + c) * 3 + ky) * 2 + kx];
                                    exact += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        let got = out[((n * 4 + o) * h_out + oy) * w_out + ox];
                        assert!(
                            (f64::from(got) - exact).abs() < 1e-5,
                            "[{n}, {o}, {oy}, {ox}]: {got} against {exact}"
                        );
                    }
                }
            }
        }
    }

    /// The product's packed operands are the codes of `a`'s rows and `b`'s columns, and
    /// unpack to the values, on each kind of grid.
    #[test]
    fn packed_operands_are_the_codes_of_the_values() {
        let (m, k, n) = (3, 70, 5);
        for q in [
            Quantizer::Sign,
            Quantizer::Signed(Bits::new(3).unwrap()),
            Quantizer::Unsigned(Bits::new(8).unwrap()),
        ] {
            let grid = CodeGrid::of(q).unwrap();
            let level = |i: usize| {
                grid.scale * (i % (grid.bits.max_code() as usize + 1)) as f32 + grid.offset
            };
            let a: Vec<f32> = (0..m * k).map(|i| level(i * 7 + i / 3)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| level(i * 5 + i / 11)).collect();
            let product = code_matmul(&a, grid, &b, grid, [m, k, n]);
            assert_eq!(product.lhs.shape(), [m, k]);
            assert_eq!(product.rhs_t.shape(), [n, k]);
            assert_eq!(
                product.lhs.to_bytes(),
                pack_codes(&a, grid, [m, k]).to_bytes()
            );
            assert_eq!(
                product.rhs_t.to_bytes(),
                pack_column_codes(&b, grid, [k, n]).to_bytes()
            );
            assert_eq!(unpack_codes(&product.lhs, grid), a, "{q:?}");
            let b_t: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            assert_eq!(unpack_codes(&product.rhs_t, grid), b_t, "{q:?}");
            // `bits` bits a value, each row in whole 64-bit words.
            let words = k.div_ceil(64);
            assert_eq!(
                product.lhs.to_bytes().len(),
                m * grid.bits.get() as usize * words * 8
            );
        }
    }

    /// Both gradients of a product of codes equal their f64 definitions from the values, over
    /// several blocks of decoded rows (`n · k` and `m · k` past a block) and for an empty
    /// gradient.
    #[test]
    fn gradients_from_codes_equal_their_definitions() {
        let grid = CodeGrid::of(Quantizer::Signed(Bits::new(3).unwrap())).unwrap();
        let level = |i: usize| grid.scale * ((i * 7 + i / 13) % 8) as f32 + grid.offset;
        for (m, n, k) in [(3, 600, 1000), (700, 5, 1000), (0, 4, 70), (2, 3, 1)] {
            let grad: Vec<f32> = (0..m * n)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
                .collect();
            // `b` [n, k] as rows, and `a` [m, k] as rows.
            let b: Vec<f32> = (0..n * k).map(level).collect();
            let a: Vec<f32> = (0..m * k).map(|i| level(i + 5)).collect();
            let lhs = grad_times_codes(&grad, m, &pack_codes(&b, grid, [n, k]), grid);
            let rhs = codes_transposed_times_grad(&pack_codes(&a, grid, [m, k]), grid, &grad, n);
            assert_eq!((lhs.len(), rhs.len()), (m * k, k * n));
            for r in 0..m {
                for j in 0..k {
                    let exact: f64 = (0..n)
                        .map(|c| f64::from(grad[r * n + c]) * f64::from(b[c * k + j]))
                        .sum();
                    let got = f64::from(lhs[r * k + j]);
                    assert!(
                        (got - exact).abs() < 1e-4,
                        "lhs [{r}, {j}] of {m}×{n}×{k}: {got} against {exact}"
                    );
                }
            }
            for j in 0..k {
                for c in 0..n {
                    let exact: f64 = (0..m)
                        .map(|r| f64::from(a[r * k + j]) * f64::from(grad[r * n + c]))
                        .sum();
                    let got = f64::from(rhs[j * n + c]);
                    assert!(
                        (got - exact).abs() < 1e-4,
                        "rhs [{j}, {c}] of {m}×{n}×{k}: {got} against {exact}"
                    );
                }
            }
        }
    }

    /// The sums of 8-bit × 8-bit codes stay exact in f32 up to an inner dimension of 258.
    #[test]
    fn exactness_bound() {
        let byte = CodeGrid::of(Quantizer::Unsigned(Bits::new(8).unwrap())).unwrap();
        assert!(exact_in_f32(byte, byte, 258));
        assert!(!exact_in_f32(byte, byte, 259));
        let sign = CodeGrid::of(Quantizer::Sign).unwrap();
        assert!(exact_in_f32(sign, sign, (1 << 24) - 1));
    }

    /// Values on both grids multiply to the f64 product of the values, for odd sizes and each
    /// kind of grid.
    #[test]
    fn equals_the_product_of_the_values() {
        let (m, k, n) = (5, 131, 7);
        for (qa, qb) in [
            (Quantizer::Unsigned(Bits::TWO), Quantizer::Signed(Bits::TWO)),
            (Quantizer::Sign, Quantizer::Sign),
            (
                Quantizer::Signed(Bits::new(3).unwrap()),
                Quantizer::Unsigned(Bits::new(4).unwrap()),
            ),
        ] {
            let (ga, gb) = (CodeGrid::of(qa).unwrap(), CodeGrid::of(qb).unwrap());
            let level = |g: CodeGrid, i: usize| {
                g.scale * (i % (g.bits.max_code() as usize + 1)) as f32 + g.offset
            };
            let a: Vec<f32> = (0..m * k).map(|i| level(ga, i * 7 + i / 3)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| level(gb, i * 5 + i / 11)).collect();
            let out = code_matmul(&a, ga, &b, gb, [m, k, n]).out;
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|t| f64::from(a[i * k + t]) * f64::from(b[t * n + j]))
                        .sum();
                    let got = f64::from(out[i * n + j]);
                    assert!(
                        (got - exact).abs() < 1e-4 * exact.abs().max(1.0),
                        "{qa:?}·{qb:?} [{i}, {j}]: {got} against {exact}"
                    );
                }
            }
        }
    }
}
