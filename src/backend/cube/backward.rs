//! CubeCL kernels of the binary layers' backward pass, reading the ±1 operands from packed bits.
//!
//! The saved bits are one row over a tensor's values in row-major order (see
//! [`crate::backend::QnnBackend::qnn_save_signs`]): value `i` is bit `i % 32` of word `i / 32`,
//! bit 1 standing for −1 (signs) or for "outside the pass band" (the gradient is cut). The
//! convolution's gradients mostly run Burn's own convolution kernels on values unpacked here
//! ([`padded_signs_kernel`], [`zero_blocked_kernel`]). The other kernels compute one gradient
//! value per thread, looping over its reduction; the sum is kept as
//! short partial sums (one per output channel, output row or block of 32 terms) added into the
//! total, so its rounding stays within a few ulps of `Σ|terms|`, and integer gradients are
//! exact.

// CubeCL's kernels take `%`, not `u32::is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

use cubecl::prelude::*;

/// Terms of a matrix product's reduction summed before they join the total.
const PARTIAL_TERMS: u32 = 32;

/// Bit `i` of a packed row.
#[cube]
fn bit(words: &Tensor<u32>, i: u32) -> u32 {
    (words[(i / 32) as usize] >> (i % 32)) & 1u32
}

/// `value` times the sign of bit `i` of `words`: `−value` where the bit is set.
#[cube]
fn signed<F: Float>(words: &Tensor<u32>, i: u32, value: F) -> F {
    let mut out = value;
    if bit(words, i) == 1u32 {
        out = -value;
    }
    out
}

/// Packs the signs of `input` (bit 1 where `x < 0`) and its band (bit 1 where `|x| > 1` or `x`
/// is NaN), one 32-bit word of each per thread; bits past `len` are 0.
#[cube(launch)]
pub fn save_signs_kernel<F: Float>(
    input: &Tensor<F>,
    signs: &mut Tensor<u32>,
    blocked: &mut Tensor<u32>,
    len: u32,
    #[define(F)] _dtype: StorageType,
) {
    let w = ABSOLUTE_POS as u32;
    if w as usize >= signs.len() {
        terminate!();
    }
    let mut sign_word = 0u32;
    let mut band_word = 0u32;
    for b in 0..32u32 {
        let j = w * 32 + b;
        if j < len {
            let x = input[j as usize];
            if x < F::new(0.0) {
                sign_word |= 1u32 << b;
            }
            // Written so that NaN, for which both comparisons fail, is outside the band.
            let inside = x >= F::new(-1.0) && x <= F::new(1.0);
            if !inside {
                band_word |= 1u32 << b;
            }
        }
    }
    signs[w as usize] = sign_word;
    blocked[w as usize] = band_word;
}

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `x` `[N, C_in, H, W]`, one input value per
/// thread: `Σ_{co, ky, kx} grad_out[n, co, oy, ox] · sign(w[co, ci, ky, kx])` over the output
/// positions whose tap `(ky, kx)` reads `(iy, ix)`, zero where `input_blocked` is set. Taps on
/// padding reach no input.
#[cube(launch)]
pub fn conv_input_grad_kernel<F: Float>(
    grad_out: &Tensor<F>,
    weight_signs: &Tensor<u32>,
    input_blocked: &Tensor<u32>,
    out: &mut Tensor<F>,
    c_in: u32,
    c_out: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dilation_h: u32,
    dilation_w: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= out.len() {
        terminate!();
    }
    let ix = pos % w;
    let iy = pos / w % h;
    let ci = pos / (w * h) % c_in;
    let n = pos / (w * h * c_in);
    let mut total = F::new(0.0);
    if bit(input_blocked, pos) == 0u32 {
        for co in 0..c_out {
            let grad_base = (n * c_out + co) * oh;
            let weight_base = (co * c_in + ci) * kh;
            let mut partial = F::new(0.0);
            for ky in 0..kh {
                // oy·s_h + ky·d_h − p_h = iy
                let ty = iy + pad_h;
                let dy = ky * dilation_h;
                if ty >= dy {
                    let ty = ty - dy;
                    let oy = ty / stride_h;
                    if ty % stride_h == 0u32 && oy < oh {
                        for kx in 0..kw {
                            let tx = ix + pad_w;
                            let dx = kx * dilation_w;
                            if tx >= dx {
                                let tx = tx - dx;
                                let ox = tx / stride_w;
                                if tx % stride_w == 0u32 && ox < ow {
                                    let g = grad_out[((grad_base + oy) * ow + ox) as usize];
                                    partial +=
                                        signed::<F>(weight_signs, (weight_base + ky) * kw + kx, g);
                                }
                            }
                        }
                    }
                }
            }
            total += partial;
        }
    }
    out[pos as usize] = total;
}

/// The gradient of `sign(a)·sign(b)` with respect to `a` `[batch, m, k]`, one value per thread:
/// `Σ_c grad[i, r, c] · sign(b[i, j, c])` (`b` `[batch, k, n]`), zero where `a_blocked` is set.
#[cube(launch)]
pub fn matmul_lhs_grad_kernel<F: Float>(
    grad: &Tensor<F>,
    b_signs: &Tensor<u32>,
    a_blocked: &Tensor<u32>,
    out: &mut Tensor<F>,
    m: u32,
    k: u32,
    n: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= out.len() {
        terminate!();
    }
    let j = pos % k;
    let r = pos / k % m;
    let i = pos / (k * m);
    let grad_base = (i * m + r) * n;
    let b_base = (i * k + j) * n;
    let mut total = F::new(0.0);
    if bit(a_blocked, pos) == 0u32 {
        let mut c0 = 0u32;
        while c0 < n {
            let mut end = c0 + PARTIAL_TERMS;
            if end > n {
                end = n;
            }
            let mut partial = F::new(0.0);
            for c in c0..end {
                partial += signed::<F>(b_signs, b_base + c, grad[(grad_base + c) as usize]);
            }
            total += partial;
            c0 = end;
        }
    }
    out[pos as usize] = total;
}

/// The gradient of `sign(a)·sign(b)` with respect to `b` `[batch, k, n]`, one value per thread:
/// `Σ_r sign(a[i, r, j]) · grad[i, r, c]` (`a` `[batch, m, k]`), zero where `b_blocked` is set.
#[cube(launch)]
pub fn matmul_rhs_grad_kernel<F: Float>(
    grad: &Tensor<F>,
    a_signs: &Tensor<u32>,
    b_blocked: &Tensor<u32>,
    out: &mut Tensor<F>,
    m: u32,
    k: u32,
    n: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= out.len() {
        terminate!();
    }
    let c = pos % n;
    let j = pos / n % k;
    let i = pos / (n * k);
    let mut total = F::new(0.0);
    if bit(b_blocked, pos) == 0u32 {
        let mut r0 = 0u32;
        while r0 < m {
            let mut end = r0 + PARTIAL_TERMS;
            if end > m {
                end = m;
            }
            let mut partial = F::new(0.0);
            for r in r0..end {
                let g = grad[((i * m + r) * n + c) as usize];
                partial += signed::<F>(a_signs, (i * m + r) * k + j, g);
            }
            total += partial;
            r0 = end;
        }
    }
    out[pos as usize] = total;
}

/// Sets `values[i]` to 0 where bit `i` of `blocked` is set (the straight-through cut), one
/// value per thread.
#[cube(launch)]
pub fn zero_blocked_kernel<F: Float>(
    values: &mut Tensor<F>,
    blocked: &Tensor<u32>,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= values.len() {
        terminate!();
    }
    if bit(blocked, pos) == 1u32 {
        values[pos as usize] = F::new(0.0);
    }
}

/// The ±1 values `[N, C, H, W]` of saved sign bits, padded on both sides by `pad_h` rows and
/// `pad_w` columns of +1 (`pad_one == 1`) or 0: `[N, C, H + 2·pad_h, W + 2·pad_w]`, one value
/// per thread.
#[cube(launch)]
pub fn padded_signs_kernel<F: Float>(
    signs: &Tensor<u32>,
    out: &mut Tensor<F>,
    h: u32,
    w: u32,
    pad_h: u32,
    pad_w: u32,
    pad_one: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= out.len() {
        terminate!();
    }
    let padded_w = w + 2 * pad_w;
    let padded_h = h + 2 * pad_h;
    let x = pos % padded_w;
    let y = pos / padded_w % padded_h;
    let plane = pos / (padded_w * padded_h);
    let mut value = F::cast_from(pad_one);
    if y >= pad_h && y < pad_h + h && x >= pad_w && x < pad_w + w {
        let i = (plane * h + y - pad_h) * w + x - pad_w;
        value = signed::<F>(signs, i, F::new(1.0));
    }
    out[pos as usize] = value;
}
