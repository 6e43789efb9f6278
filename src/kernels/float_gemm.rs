//! A safe, bounds-checked front to the f32 matrix product of the `gemm` crates (`gemm-f32`), for the backward
//! kernels: `gemm` picks its AVX-512, AVX2/FMA or scalar micro-kernel at run time.

/// A strided view of an `f32` matrix: element `(r, c)` is `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

/// A mutable strided view of an `f32` matrix, laid out as [`MatRef`].
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    pub(crate) data: &'a mut [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix whose rows are `row_stride` apart.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `[cols, rows]` matrix whose rows are `stride` apart.
    pub(crate) fn transposed(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: stride,
        }
    }
}

impl<'a> MatMut<'a> {
    /// A row-major `[rows, cols]` matrix whose rows are `row_stride` apart.
    pub(crate) fn row_major(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }
}

/// Panics unless every element of a `rows × cols` view with these strides lies in `len`.
fn check_view(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
    assert!(
        last.is_some_and(|last| last < len),
        "float gemm: the {what} view {rows}×{cols} (strides {rs}, {cs}) overruns its {len} values"
    );
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`; on several threads when
/// `parallel`.
///
/// # Panics
/// If the shapes do not chain or a view overruns its slice.
pub(crate) fn gemm(
    dst: MatMut<'_>,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    parallel: bool,
) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "float gemm: [{m}, {n}] = [{}, {}] · [{}, {}] does not chain",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    check_view(
        "destination",
        dst.data.len(),
        m,
        n,
        dst.row_stride,
        dst.col_stride,
    );
    check_view("left", lhs.data.len(), m, k, lhs.row_stride, lhs.col_stride);
    check_view(
        "right",
        rhs.data.len(),
        k,
        n,
        rhs.row_stride,
        rhs.col_stride,
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst.data[r * dst.row_stride + c * dst.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    let parallelism = if parallel && rayon::current_num_threads() > 1 {
        gemm_common::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm_common::Parallelism::None
    };
    // SAFETY: the views were checked to lie inside their slices (every strides non-negative,
    // the last element in bounds), `dst` is borrowed mutably and does not alias the inputs, and
    // `read_dst = false` means the destination is only written when not accumulating.
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by three nested loops.
    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k).map(|i| a[r * k + i] * b[i * n + c]).sum();
            }
        }
        out
    }

    #[test]
    fn products_and_accumulation_match_the_definition_on_strided_views() {
        let (m, n, k) = (7, 5, 11);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let expected = naive(m, n, k, &a, &b);
        // rhs given as the transpose of its row-major [n, k] copy.
        let b_t: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut out = vec![1.0; m * n];
        gemm(
            MatMut::row_major(&mut out, m, n, n),
            false,
            MatRef::row_major(&a, m, k, k),
            MatRef::transposed(&b_t, k, n, k),
            false,
        );
        assert_eq!(out, expected);
        gemm(
            MatMut::row_major(&mut out, m, n, n),
            true,
            MatRef::row_major(&a, m, k, k),
            MatRef::row_major(&b, k, n, n),
            true,
        );
        let doubled: Vec<f32> = expected.iter().map(|v| 2.0 * v).collect();
        assert_eq!(out, doubled);
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn a_view_past_its_slice_is_refused() {
        let a = vec![0.0; 5];
        let mut out = vec![0.0; 4];
        gemm(
            MatMut::row_major(&mut out, 2, 2, 2),
            false,
            MatRef::row_major(&a, 2, 3, 3),
            MatRef::row_major(&a, 3, 2, 2),
            false,
        );
    }
}
