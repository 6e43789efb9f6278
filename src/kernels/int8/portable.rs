//! The int8 products in plain Rust: a sum of `i32` products per output, which the compiler
//! vectorises for the target it builds for.

/// `out[i·n + j] += Σ_t a[i·k + t] · b[j·k + t]` (lengths checked by the caller).
pub(super) fn gemm_accumulate(a: &[i8], b: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    for (a_row, out_row) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)).take(m) {
        for (b_row, out) in b.chunks_exact(k).zip(out_row.iter_mut()) {
            *out += dot(a_row, b_row);
        }
    }
}

/// `Σ_t a[t] · b[t]` in `i32`.
pub(super) fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}
