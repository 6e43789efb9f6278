//! Gradients of the binary products, computed from packed sign bits.
//!
//! The backward pass of `sign(x) ⊛ sign(w)` and `sign(a)·sign(b)` multiplies a float output
//! gradient by ±1 operands that the forward saved as bits (see [`crate::kernels`] for the layout:
//! one row of bits over the tensor's elements in row-major order, bit 1 for −1). No
//! operand-sized float copy is made: the ±1 values are expanded a cache-sized block at a time
//! (a block of a convolution's im2col rows for one image, a block of a matrix's rows or columns)
//! and multiplied by the `gemm` crate's f32 micro-kernels. A second bit row per operand, the
//! straight-through pass band (bit 1 where `|v| > 1`, whose gradient is cut), zeroes the result.
//!
//! Each gradient equals the float simulation's (the ±1 tensors in f32 through a float
//! convolution or matrix product) up to the order of the f32 sums, and exactly where every term
//! is a small integer.

use rayon::prelude::*;

use super::{
    amx_bf16::{self, AmxBf16},
    conv::{ConvCall, PaddingMode},
    float_gemm::{MatMut, MatRef, gemm},
    im2col::{self, BLOCK_VALUES, Shapes, scatter_taps, weight_grad_sum},
    pack,
};
/// The bit pattern of `1.0f32`; setting the sign bit gives `−1.0`.
const ONE_BITS: u32 = 0x3f80_0000;

/// A row of packed sign bits over `len` values: bit `i` is bit `i % 64` of word `i / 64`.
#[derive(Clone, Copy, Debug)]
pub struct Bits<'a> {
    words: &'a [u64],
    len: usize,
}

impl<'a> Bits<'a> {
    /// `len` bits in `words`.
    ///
    /// # Panics
    /// If `words` holds fewer than `len` bits.
    pub fn new(words: &'a [u64], len: usize) -> Self {
        assert!(
            words.len() * 64 >= len,
            "packed bits: {} words cannot hold {len} bits",
            words.len()
        );
        Self { words, len }
    }

    /// The number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i` (1 stands for −1, or for "outside the pass band").
    #[inline(always)]
    pub(super) fn bit(&self, i: usize) -> u32 {
        ((self.words[i / 64] >> (i % 64)) & 1) as u32
    }

    /// `±1.0` for bit `i`: `+1` for 0, `−1` for 1.
    #[inline(always)]
    pub(crate) fn sign(&self, i: usize) -> f32 {
        f32::from_bit(self.bit(i))
    }

    /// Writes the ±1 values of bits `start .. start + out.len()` into `out` (as `f32` or `i8`):
    /// 64 at a time, from mask registers on the AVX-512 path and from the 64-bit word
    /// elsewhere, then the last few bit by bit.
    pub(super) fn expand<T: SignValue>(&self, start: usize, out: &mut [T]) {
        assert!(
            start + out.len() <= self.len,
            "packed bits: expanding past the end"
        );
        let whole = out.len() / 64 * 64;
        #[cfg(target_arch = "x86_64")]
        let avx512 =
            super::CheckedIsa::new(super::isa::active_isa()).isa() == super::isa::Isa::Avx512;
        for (chunk, block) in out[..whole].chunks_exact_mut(64).enumerate() {
            let word = self.word_at(start + chunk * 64);
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                // SAFETY: the checked path proves AVX-512 F and BW; `block` holds 64 values.
                unsafe { T::expand_word_avx512(word, block) };
                continue;
            }
            for (j, value) in block.iter_mut().enumerate() {
                *value = T::from_bit(((word >> j) & 1) as u32);
            }
        }
        for (j, value) in out.iter_mut().enumerate().skip(whole) {
            *value = T::from_bit(self.bit(start + j));
        }
    }

    /// The 64 bits from bit `i` on (zeros past the last word).
    #[inline(always)]
    pub(super) fn word_at(&self, i: usize) -> u64 {
        let (word, shift) = (i / 64, i % 64);
        let low = self.words[word] >> shift;
        if shift == 0 {
            low
        } else {
            low | self
                .words
                .get(word + 1)
                .map_or(0, |high| high << (64 - shift))
        }
    }

    /// Zeroes `values[j]` where bit `start + j` is set.
    pub(super) fn cut(&self, start: usize, values: &mut [f32]) {
        // Up to the first word boundary bit by bit, then a word (64 values) at a time, skipping
        // words with no bit set; blocks of 65,536 values run in parallel.
        let head = ((64 - start % 64) % 64).min(values.len());
        let (first, rest) = values.split_at_mut(head);
        for (j, value) in first.iter_mut().enumerate() {
            if self.bit(start + j) == 1 {
                *value = 0.0;
            }
        }
        let first_word = (start + head) / 64;
        let isa = super::CheckedIsa::new(super::isa::active_isa());
        rest.par_chunks_mut(64 * 1024)
            .enumerate()
            .for_each(|(block, values)| {
                let words = &self.words[first_word + block * 1024..];
                for (chunk, &word) in values.chunks_mut(64).zip(words) {
                    if word != 0 {
                        cut_word(isa, word, chunk);
                    }
                }
            });
    }
}

/// `values` with 0 wherever `blocked` has its bit set (bit `j` for value `j`), written to
/// `out` in one pass: a block of 65,536 values a task, each 64 copied then cut while in cache.
///
/// # Panics
/// If `out` and `values` differ in length or `blocked` holds fewer bits.
pub fn copy_cut(values: &[f32], blocked: Bits<'_>, out: &mut [f32]) {
    assert_eq!(values.len(), out.len(), "copy_cut: output length");
    assert!(blocked.len() >= values.len(), "copy_cut: too few bits");
    let isa = super::CheckedIsa::new(super::isa::active_isa());
    out.par_chunks_mut(64 * 1024)
        .zip(values.par_chunks(64 * 1024))
        .enumerate()
        .for_each(|(block, (out, values))| {
            let words = &blocked.words[block * 1024..];
            for ((out, values), &word) in out.chunks_mut(64).zip(values.chunks(64)).zip(words) {
                out.copy_from_slice(values);
                if word != 0 {
                    cut_word(isa, word, out);
                }
            }
        });
}

/// Zeroes the values of `chunk` (at most 64) whose bit in `word` is set.
#[inline]
fn cut_word(isa: super::CheckedIsa, word: u64, chunk: &mut [f32]) {
    match isa.isa() {
        // SAFETY: a `CheckedIsa` holds AVX-512 only where the CPU runs it; `chunk` holds 64
        // values.
        #[cfg(target_arch = "x86_64")]
        super::isa::Isa::Avx512 if chunk.len() == 64 => unsafe { cut_word_avx512(word, chunk) },
        _ => cut_word_portable(word, chunk),
    }
}

/// [`cut_word`] without branches: each value ANDed with a mask of all ones or all zeros.
fn cut_word_portable(word: u64, chunk: &mut [f32]) {
    for (j, value) in chunk.iter_mut().enumerate() {
        let keep = (((word >> j) & 1) as u32 ^ 1).wrapping_neg();
        *value = f32::from_bits(value.to_bits() & keep);
    }
}

/// [`cut_word`] on 64 values, 16 lanes a masked load.
///
/// # Safety
/// The CPU must have AVX-512 F, and `chunk` must hold 64 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn cut_word_avx512(word: u64, chunk: &mut [f32]) {
    use std::arch::x86_64::*;
    for lane in 0..4 {
        let keep = !((word >> (16 * lane)) as u16);
        // SAFETY: `chunk` holds 64 values (the caller's contract).
        unsafe {
            let at = chunk.as_mut_ptr().add(16 * lane);
            _mm512_storeu_ps(at, _mm512_maskz_loadu_ps(keep, at));
        }
    }
}

/// A type the ±1 values of packed bits expand into ([`Bits::expand`]).
pub(super) trait SignValue: Copy {
    /// `+1` for bit 0, `−1` for bit 1.
    fn from_bit(bit: u32) -> Self;

    /// The ±1 values of the 64 bits of `word` into `out`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW, and `out` must hold 64 values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn expand_word_avx512(word: u64, out: &mut [Self]);
}

impl SignValue for f32 {
    #[inline(always)]
    fn from_bit(bit: u32) -> f32 {
        f32::from_bits(ONE_BITS | (bit << 31))
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn expand_word_avx512(word: u64, out: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { expand_word_f32_avx512(word, out) }
    }
}

impl SignValue for i8 {
    #[inline(always)]
    fn from_bit(bit: u32) -> i8 {
        1 - 2 * bit as i8
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn expand_word_avx512(word: u64, out: &mut [i8]) {
        // SAFETY: the caller's contract.
        unsafe { expand_word_i8_avx512(word, out) }
    }
}

/// `±1.0` of the 64 bits of `word` (bit 1 → −1) into `out`, 16 lanes a blend.
///
/// # Safety
/// The CPU must have AVX-512 F, and `out` must hold 64 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn expand_word_f32_avx512(word: u64, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (plus, minus) = (_mm512_set1_ps(1.0), _mm512_set1_ps(-1.0));
    for lane in 0..4 {
        let mask = (word >> (16 * lane)) as u16;
        let values = _mm512_mask_blend_ps(mask, plus, minus);
        // SAFETY: `out` holds 64 values (the caller's contract).
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * lane), values) };
    }
}

/// `±1` bytes of the 64 bits of `word` (bit 1 → −1) into `out`.
///
/// # Safety
/// The CPU must have AVX-512 BW, and `out` must hold 64 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn expand_word_i8_avx512(word: u64, out: &mut [i8]) {
    use std::arch::x86_64::*;
    // VPMOVM2B gives 0xff (−1) for a set bit and 0 otherwise; OR 1 turns 0 into +1.
    let signs = _mm512_or_si512(_mm512_movm_epi8(word), _mm512_set1_epi8(1));
    // SAFETY: `out` holds 64 bytes (the caller's contract).
    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), signs) };
}

/// Panics unless the geometry is possible and an output gradient of `grad_len` values has its
/// output's length.
pub(super) fn check_conv(what: &str, g: &ConvCall, s: &Shapes, grad_len: usize) {
    g.validate()
        .unwrap_or_else(|e| panic!("binary conv2d {what}: {e}"));
    assert_eq!(
        grad_len,
        g.batch * s.c_out * s.positions,
        "binary conv2d {what}: the output gradient should hold [N, C_out, H_out, W_out] = {:?} values",
        [g.batch, s.c_out, s.oh, s.ow]
    );
}

/// For stride 1 and a padding no wider than the dilated kernel's reach, the geometry of the
/// convolution that gives the input gradient: over the output gradient `[N, C_out, H_out,
/// W_out]`, padded by `d·(k − 1) − p`, to `[N, C_in, H, W]`; `None` for other geometries.
pub(super) fn transposed_geometry(g: &ConvCall) -> Option<ConvCall> {
    let [oh, ow] = g.output_size().ok()?;
    let reach = |axis: usize| g.dilation[axis] * (g.kernel[axis] - 1);
    let padding = [
        reach(0).checked_sub(g.padding[0])?,
        reach(1).checked_sub(g.padding[1])?,
    ];
    (g.stride == [1, 1]).then_some(ConvCall {
        batch: g.batch,
        in_channels: g.out_channels,
        height: oh,
        width: ow,
        out_channels: g.in_channels,
        kernel: g.kernel,
        stride: [1, 1],
        padding,
        dilation: g.dilation,
    })
}

/// `weights` `[C_out, C_in, k_h, k_w]` as `[C_in, C_out, k_h, k_w]`, each kernel turned by 180°.
fn flipped_transposed(weights: &[f32], g: &ConvCall) -> Vec<f32> {
    let (c_in, c_out, [kh, kw]) = (g.in_channels, g.out_channels, g.kernel);
    let mut flipped = vec![0f32; weights.len()];
    for co in 0..c_out {
        for ci in 0..c_in {
            for ky in 0..kh {
                for kx in 0..kw {
                    flipped[((ci * c_out + co) * kh + kh - 1 - ky) * kw + kw - 1 - kx] =
                        weights[((co * c_in + ci) * kh + ky) * kw + kx];
                }
            }
        }
    }
    flipped
}

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `x` `[N, C_in, H, W]`, written to `out`:
/// `grad_out` `[N, C_out, H_out, W_out]` through the transposed convolution with the ±1 weights
/// (`weight_signs`, `[C_out, C_in, k_h, k_w]`), then zero wherever `input_blocked` is set (the
/// straight-through estimator's `|x| > 1`). Taps on padding contribute to no input, in either
/// padding mode. Images run in parallel.
///
/// # Panics
/// If the geometry is impossible or a length does not match it.
pub fn binary_conv2d_input_grad(
    grad_out: &[f32],
    weight_signs: Bits<'_>,
    input_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) {
    let amx = AmxBf16::active();
    input_grad_on(amx, grad_out, weight_signs, input_blocked, g, out);
}

/// [`binary_conv2d_input_grad`] on AMX tiles where `amx` is given and the geometry is one they
/// take, else on f32 GEMM micro-kernels.
fn input_grad_on(
    amx: Option<AmxBf16>,
    grad_out: &[f32],
    weight_signs: Bits<'_>,
    input_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) {
    let s = Shapes::of(g);
    check_conv("input gradient", g, &s, grad_out.len());
    assert_eq!(
        weight_signs.len(),
        g.weights_len(),
        "binary conv2d input gradient: weight bits"
    );
    assert_eq!(
        input_blocked.len(),
        g.input_len(),
        "binary conv2d input gradient: input bits"
    );
    assert_eq!(
        out.len(),
        g.input_len(),
        "binary conv2d input gradient: output length"
    );
    if let Some(proof) = amx
        && amx_bf16::input_grad(proof, grad_out, weight_signs, input_blocked, g, out)
    {
        return;
    }
    // The weights as a row-major [C_out, taps] f32 matrix: weight-sized, not activation-sized.
    let mut weights = vec![0f32; s.c_out * s.taps];
    pack::unpack_signs(
        &weight_signs.words[..super::words_per_row(weights.len())],
        1,
        weights.len(),
        &mut weights,
    );
    let image_len = s.image_len();
    if image_len == 0 {
        return;
    }
    if let Some(transposed) = transposed_geometry(g) {
        // Stride 1: the input gradient is the convolution of the output gradient with the
        // flipped, transposed weights, one product of depth C_out·k_h·k_w per image.
        let flipped = flipped_transposed(&weights, g);
        im2col::conv2d_forward(grad_out, &flipped, &transposed, out);
        input_blocked.cut(0, out);
        return;
    }
    let inner_parallel = g.batch < rayon::current_num_threads();
    let per_image = |(n, dx): (usize, &mut [f32])| {
        dx.fill(0.0);
        let grad = &grad_out[n * s.c_out * s.positions..(n + 1) * s.c_out * s.positions];
        let mut rows = vec![0f32; s.block * s.positions];
        for tap0 in (0..s.taps).step_by(s.block) {
            let count = s.block.min(s.taps - tap0);
            let rows = &mut rows[..count * s.positions];
            // rows[tap, p] = Σ_co w[co, tap] · grad[co, p]
            gemm(
                MatMut::row_major(rows, count, s.positions, s.positions),
                false,
                MatRef::transposed(&weights[tap0..], count, s.c_out, s.taps),
                MatRef::row_major(grad, s.c_out, s.positions, s.positions),
                inner_parallel,
            );
            scatter_taps(g, &s, tap0, rows, dx);
        }
        input_blocked.cut(n * image_len, dx);
    };
    if inner_parallel {
        out.chunks_mut(image_len).enumerate().for_each(per_image);
    } else {
        out.par_chunks_mut(image_len)
            .enumerate()
            .for_each(per_image);
    }
}

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `w` `[C_out, C_in, k_h, k_w]`, written to
/// `out`: `grad_out` `[N, C_out, H_out, W_out]` against the ±1 inputs (`input_signs`,
/// `[N, C_in, H, W]`; padded taps read 0 or +1 as `pad` says), then zero wherever
/// `weight_blocked` is set (`|w| > 1`). Groups of images run in parallel, each into its own
/// sum.
///
/// # Panics
/// If the geometry is impossible or a length does not match it.
pub fn binary_conv2d_weight_grad(
    grad_out: &[f32],
    input_signs: Bits<'_>,
    pad: PaddingMode,
    weight_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) {
    let amx = AmxBf16::active();
    weight_grad_on(amx, grad_out, input_signs, pad, weight_blocked, g, out);
}

/// [`binary_conv2d_weight_grad`] on AMX tiles where `amx` is given and the geometry is one they
/// take, else on f32 GEMM micro-kernels.
fn weight_grad_on(
    amx: Option<AmxBf16>,
    grad_out: &[f32],
    input_signs: Bits<'_>,
    pad: PaddingMode,
    weight_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) {
    let s = Shapes::of(g);
    check_conv("weight gradient", g, &s, grad_out.len());
    assert_eq!(
        input_signs.len(),
        g.input_len(),
        "binary conv2d weight gradient: input bits"
    );
    assert_eq!(
        weight_blocked.len(),
        g.weights_len(),
        "binary conv2d weight gradient: weight bits"
    );
    assert_eq!(
        out.len(),
        g.weights_len(),
        "binary conv2d weight gradient: output length"
    );
    if let Some(proof) = amx
        && amx_bf16::weight_grad(proof, grad_out, input_signs, pad, weight_blocked, g, out)
    {
        return;
    }
    let pad = match pad {
        PaddingMode::Zero => 0.0,
        PaddingMode::PlusOne => 1.0,
    };
    weight_grad_sum(grad_out, input_signs, pad, g, out);
    weight_blocked.cut(0, out);
}

/// The shapes of a batch of products `[batch, m, k] × [batch, k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// Independent products.
    pub batch: usize,
    /// Rows of the left operand.
    pub m: usize,
    /// Columns of the left operand, rows of the right one.
    pub k: usize,
    /// Columns of the right operand.
    pub n: usize,
}

impl MatmulShape {
    /// The product shape of `[.., m, k] × [.., k, n]` where both operands have the same batch
    /// dimensions; `None` for other shapes (broadcast batches, mismatched `k`, fewer than two
    /// dimensions).
    ///
    /// ```
    /// use burn_qnn::kernels::backward::MatmulShape;
    ///
    /// let shape = MatmulShape::same_batch(&[2, 3, 5, 7], &[2, 3, 7, 4]).unwrap();
    /// assert_eq!((shape.batch, shape.m, shape.k, shape.n), (6, 5, 7, 4));
    /// assert!(MatmulShape::same_batch(&[2, 5, 7], &[1, 7, 4]).is_none());
    /// ```
    pub fn same_batch(a: &[usize], b: &[usize]) -> Option<Self> {
        let d = a.len();
        (d >= 2 && b.len() == d && a[..d - 2] == b[..d - 2] && a[d - 1] == b[d - 2]).then(|| Self {
            batch: a[..d - 2].iter().product(),
            m: a[d - 2],
            k: a[d - 1],
            n: b[d - 1],
        })
    }

    fn check(
        &self,
        what: &str,
        grad: &[f32],
        a: Bits<'_>,
        b: Bits<'_>,
        out: usize,
        expected: usize,
    ) {
        let MatmulShape { batch, m, k, n } = *self;
        assert_eq!(
            grad.len(),
            batch * m * n,
            "binary matmul {what}: output gradient length"
        );
        assert_eq!(
            a.len(),
            batch * m * k,
            "binary matmul {what}: left operand bits"
        );
        assert_eq!(
            b.len(),
            batch * k * n,
            "binary matmul {what}: right operand bits"
        );
        assert_eq!(out, expected, "binary matmul {what}: output length");
    }
}

/// The gradient of `sign(a)·sign(b)` with respect to `a` `[batch, m, k]`:
/// `grad` `[batch, m, n]` times the transpose of the ±1 `b` (`b_signs`, `[batch, k, n]`), zero
/// wherever `a_blocked` is set.
///
/// # Panics
/// If a length does not match `shape`.
pub fn binary_matmul_lhs_grad(
    grad: &[f32],
    b_signs: Bits<'_>,
    a_blocked: Bits<'_>,
    shape: MatmulShape,
    out: &mut [f32],
) {
    let MatmulShape { batch, m, k, n } = shape;
    shape.check(
        "left gradient",
        grad,
        a_blocked,
        b_signs,
        out.len(),
        batch * m * k,
    );
    let block = (BLOCK_VALUES / n.max(1)).clamp(1, k.max(1));
    let mut rows = vec![0f32; block * n];
    for i in 0..batch {
        let grad = &grad[i * m * n..(i + 1) * m * n];
        let dst = &mut out[i * m * k..(i + 1) * m * k];
        for k0 in (0..k).step_by(block) {
            let count = block.min(k - k0);
            let rows = &mut rows[..count * n];
            b_signs.expand(i * k * n + k0 * n, rows);
            // dst[r, k0 + j] = Σ_c grad[r, c] · b[k0 + j, c]
            gemm(
                MatMut::row_major(&mut dst[k0..], m, count, k),
                false,
                MatRef::row_major(grad, m, n, n),
                MatRef::transposed(rows, n, count, n),
                true,
            );
        }
    }
    a_blocked.cut(0, out);
}

/// The gradient of `sign(a)·sign(b)` with respect to `b` `[batch, k, n]`: the transpose of the
/// ±1 `a` (`a_signs`, `[batch, m, k]`) times `grad` `[batch, m, n]`, zero wherever `b_blocked`
/// is set.
///
/// # Panics
/// If a length does not match `shape`.
pub fn binary_matmul_rhs_grad(
    grad: &[f32],
    a_signs: Bits<'_>,
    b_blocked: Bits<'_>,
    shape: MatmulShape,
    out: &mut [f32],
) {
    let MatmulShape { batch, m, k, n } = shape;
    shape.check(
        "right gradient",
        grad,
        a_signs,
        b_blocked,
        out.len(),
        batch * k * n,
    );
    let block = (BLOCK_VALUES / m.max(1)).clamp(1, k.max(1));
    let mut columns = vec![0f32; m * block];
    for i in 0..batch {
        let grad = &grad[i * m * n..(i + 1) * m * n];
        let dst = &mut out[i * k * n..(i + 1) * k * n];
        for k0 in (0..k).step_by(block) {
            let count = block.min(k - k0);
            let columns = &mut columns[..m * count];
            for (r, row) in columns.chunks_exact_mut(count).enumerate() {
                a_signs.expand(i * m * k + r * k + k0, row);
            }
            // dst[k0 + j, c] = Σ_r a[r, k0 + j] · grad[r, c]
            gemm(
                MatMut::row_major(&mut dst[k0 * n..], count, n, n),
                false,
                MatRef::transposed(columns, count, m, count),
                MatRef::row_major(grad, m, n, n),
                true,
            );
        }
    }
    b_blocked.cut(0, out);
}

/// Packs the signs of `values` (bit 1 where `v < 0`) and their straight-through band (bit 1
/// where `|v| > 1` or `v` is NaN, the values whose gradient is cut) as two bit rows, in one
/// pass.
pub fn pack_signs_and_band(values: &[f32], signs: &mut [u64], blocked: &mut [u64]) {
    let words = super::words_per_row(values.len());
    assert_eq!(signs.len(), words, "pack_signs_and_band: sign words");
    assert_eq!(blocked.len(), words, "pack_signs_and_band: band words");
    let isa = super::CheckedIsa::new(super::isa::active_isa());
    values
        .par_chunks(64 * 1024)
        .zip(signs.par_chunks_mut(1024))
        .zip(blocked.par_chunks_mut(1024))
        .for_each(|((values, signs), blocked)| {
            for ((chunk, s), b) in values.chunks(64).zip(signs).zip(blocked) {
                (*s, *b) = signs_and_band64(isa, chunk);
            }
        });
}

/// The sign and band words of ≤ 64 values (see [`pack_signs_and_band`]).
#[inline]
fn signs_and_band64(isa: super::CheckedIsa, chunk: &[f32]) -> (u64, u64) {
    match isa.isa() {
        // SAFETY: a `CheckedIsa` holds AVX-512 only where the CPU runs it.
        #[cfg(target_arch = "x86_64")]
        super::isa::Isa::Avx512 => unsafe { super::pack_x86::signs_and_band64_avx512(chunk) },
        _ => signs_and_band64_portable(chunk),
    }
}

/// [`signs_and_band64`] one value at a time.
fn signs_and_band64_portable(chunk: &[f32]) -> (u64, u64) {
    let (mut signs, mut band) = (0u64, 0u64);
    for (j, &v) in chunk.iter().enumerate() {
        signs |= u64::from(v < 0.0) << j;
        band |= u64::from(!(-1.0..=1.0).contains(&v)) << j;
    }
    (signs, band)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator: values in `[−2, 2)`.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn sign(v: f32) -> f32 {
        if v < 0.0 { -1.0 } else { 1.0 }
    }

    /// Signs and band bits of `v`.
    fn packed(v: &[f32]) -> (Vec<u64>, Vec<u64>) {
        let words = crate::kernels::words_per_row(v.len());
        let (mut s, mut b) = (vec![0; words], vec![0; words]);
        pack_signs_and_band(v, &mut s, &mut b);
        (s, b)
    }

    /// The gradients from their definition, in f64, with `Σ|terms|` of each element.
    #[allow(clippy::type_complexity)]
    fn reference(
        g: &ConvCall,
        pad: f32,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
    ) -> ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>)) {
        let [oh, ow] = g.output_size().unwrap();
        let (c, h, wd, o) = (g.in_channels, g.height, g.width, g.out_channels);
        let [kh, kw] = g.kernel;
        let (mut dx, mut dx_terms) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let (mut dw, mut dw_terms) = (vec![0.0; w.len()], vec![0.0; w.len()]);
        for n in 0..g.batch {
            for oc in 0..o {
                for y in 0..oh {
                    for xx in 0..ow {
                        let r = dy[((n * o + oc) * oh + y) * ow + xx] as f64;
                        for ic in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let wi = ((oc * c + ic) * kh + i) * kw + j;
                                    let iy = (y * g.stride[0] + i * g.dilation[0]) as isize
                                        - g.padding[0] as isize;
                                    let ix = (xx * g.stride[1] + j * g.dilation[1]) as isize
                                        - g.padding[1] as isize;
                                    let inside = (0..h as isize).contains(&iy)
                                        && (0..wd as isize).contains(&ix);
                                    let value = if inside {
                                        let xi =
                                            ((n * c + ic) * h + iy as usize) * wd + ix as usize;
                                        dx[xi] += r * sign(w[wi]) as f64;
                                        dx_terms[xi] += r.abs();
                                        sign(x[xi])
                                    } else {
                                        pad
                                    };
                                    dw[wi] += r * value as f64;
                                    dw_terms[wi] += (r * value as f64).abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, &v) in x.iter().enumerate() {
            if v.abs() > 1.0 {
                dx[i] = 0.0;
            }
        }
        for (i, &v) in w.iter().enumerate() {
            if v.abs() > 1.0 {
                dw[i] = 0.0;
            }
        }
        ((dx, dx_terms), (dw, dw_terms))
    }

    fn assert_close(what: &str, got: &[f32], expected: &[f64], terms: &[f64]) {
        for (i, ((&a, &e), &t)) in got.iter().zip(expected).zip(terms).enumerate() {
            assert!(
                (a as f64 - e).abs() <= 1e-5 * t + 1e-30,
                "{what}: element {i} is {a}, expected {e} (Σ|terms| {t})"
            );
        }
    }

    #[test]
    fn conv_gradients_match_their_definition() {
        let geometries = [
            // (batch, c_in, h, w, c_out, kernel, stride, padding, dilation)
            (2, 3, 7, 6, 5, [3, 3], [1, 1], [1, 1], [1, 1]),
            (1, 65, 9, 8, 7, [3, 3], [2, 1], [1, 2], [1, 1]),
            (2, 31, 8, 9, 4, [5, 3], [1, 1], [2, 0], [1, 2]),
            (1, 70, 5, 5, 3, [1, 1], [1, 1], [0, 0], [1, 1]),
            (3, 10, 11, 7, 33, [3, 2], [2, 2], [2, 1], [2, 1]),
            // Several blocks of 32 channels each way, both parities of width, a padding wider
            // than the kernel's reach.
            (3, 37, 12, 13, 66, [3, 3], [1, 1], [1, 1], [1, 1]),
            (2, 64, 8, 8, 40, [3, 3], [1, 1], [1, 1], [1, 1]),
            (1, 33, 4, 3, 32, [1, 1], [1, 1], [1, 1], [1, 1]),
            (2, 5, 6, 17, 9, [2, 4], [1, 1], [1, 3], [2, 1]),
            // Batches that split into image groups of different sizes across the threads,
            // small images.
            (8, 3, 15, 15, 5, [3, 3], [1, 1], [1, 1], [1, 1]),
            (5, 6, 5, 4, 7, [3, 3], [1, 1], [1, 1], [1, 1]),
        ];
        for (case, (batch, c, h, w, o, kernel, stride, padding, dilation)) in
            geometries.into_iter().enumerate()
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
            let wt = values(g.weights_len(), 100 + case as u64);
            let dy = values(batch * o * oh * ow, 200 + case as u64);
            let (x_signs, x_band) = packed(&x);
            let (w_signs, w_band) = packed(&wt);
            for (pad_mode, pad) in [(PaddingMode::Zero, 0.0), (PaddingMode::PlusOne, 1.0)] {
                let ((dx, dx_terms), (dw, dw_terms)) = reference(&g, pad, &x, &wt, &dy);
                for amx in std::iter::once(None).chain(AmxBf16::if_available().map(Some)) {
                    let path = if amx.is_some() { "AMX" } else { "f32" };
                    let mut got = vec![f32::NAN; x.len()];
                    input_grad_on(
                        amx,
                        &dy,
                        Bits::new(&w_signs, wt.len()),
                        Bits::new(&x_band, x.len()),
                        &g,
                        &mut got,
                    );
                    assert_close(&format!("case {case} {path} dx"), &got, &dx, &dx_terms);
                    let mut got = vec![f32::NAN; wt.len()];
                    weight_grad_on(
                        amx,
                        &dy,
                        Bits::new(&x_signs, x.len()),
                        pad_mode,
                        Bits::new(&w_band, wt.len()),
                        &g,
                        &mut got,
                    );
                    assert_close(
                        &format!("case {case} {path} {pad_mode:?} dw"),
                        &got,
                        &dw,
                        &dw_terms,
                    );
                }
                // The AMX kernels take every stride-1 geometry (the input gradient where the
                // padding is within the dilated kernel's reach).
                if let Some(proof) = AmxBf16::if_available() {
                    let mut got = vec![0.0; wt.len()];
                    let taken = amx_bf16::weight_grad(
                        proof,
                        &dy,
                        Bits::new(&x_signs, x.len()),
                        pad_mode,
                        Bits::new(&w_band, wt.len()),
                        &g,
                        &mut got,
                    );
                    assert_eq!(taken, stride == [1, 1], "case {case}: AMX weight gradient");
                    let mut got = vec![0.0; x.len()];
                    let taken = amx_bf16::input_grad(
                        proof,
                        &dy,
                        Bits::new(&w_signs, wt.len()),
                        Bits::new(&x_band, x.len()),
                        &g,
                        &mut got,
                    );
                    let within = (0..2).all(|a| padding[a] <= dilation[a] * (kernel[a] - 1));
                    assert_eq!(
                        taken,
                        stride == [1, 1] && within,
                        "case {case}: AMX input gradient"
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_gradients_match_their_definition() {
        for (case, shape) in [
            MatmulShape {
                batch: 1,
                m: 1,
                k: 129,
                n: 33,
            },
            MatmulShape {
                batch: 2,
                m: 5,
                k: 70,
                n: 3,
            },
            MatmulShape {
                batch: 1,
                m: 50,
                k: 300,
                n: 65,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let MatmulShape { batch, m, k, n } = shape;
            let a = values(batch * m * k, case as u64);
            let b = values(batch * k * n, 10 + case as u64);
            let dy = values(batch * m * n, 20 + case as u64);
            let (a_signs, a_band) = packed(&a);
            let (b_signs, b_band) = packed(&b);
            let mut da = vec![f32::NAN; a.len()];
            binary_matmul_lhs_grad(
                &dy,
                Bits::new(&b_signs, b.len()),
                Bits::new(&a_band, a.len()),
                shape,
                &mut da,
            );
            let mut db = vec![f32::NAN; b.len()];
            binary_matmul_rhs_grad(
                &dy,
                Bits::new(&a_signs, a.len()),
                Bits::new(&b_band, b.len()),
                shape,
                &mut db,
            );
            for i in 0..batch {
                for r in 0..m {
                    for j in 0..k {
                        let (mut e, mut t) = (0.0f64, 0.0f64);
                        for c in 0..n {
                            let term = dy[(i * m + r) * n + c] as f64
                                * sign(b[(i * k + j) * n + c]) as f64;
                            e += term;
                            t += term.abs();
                        }
                        let idx = (i * m + r) * k + j;
                        let e = if a[idx].abs() > 1.0 { 0.0 } else { e };
                        assert_close(&format!("case {case} da"), &da[idx..=idx], &[e], &[t]);
                    }
                }
                for j in 0..k {
                    for c in 0..n {
                        let (mut e, mut t) = (0.0f64, 0.0f64);
                        for r in 0..m {
                            let term = sign(a[(i * m + r) * k + j]) as f64
                                * dy[(i * m + r) * n + c] as f64;
                            e += term;
                            t += term.abs();
                        }
                        let idx = (i * k + j) * n + c;
                        let e = if b[idx].abs() > 1.0 { 0.0 } else { e };
                        assert_close(&format!("case {case} db"), &db[idx..=idx], &[e], &[t]);
                    }
                }
            }
        }
    }

    #[test]
    fn signs_and_band_pack_in_one_pass() {
        let v = [-0.0, 0.0, -1.0, 1.0, -1.5, 2.0, f32::NAN, -0.25];
        let (s, b) = packed(&v);
        // −0.0 and NaN are +1 (bit 0); NaN is outside the band, as `Quantizer::blocked` says.
        assert_eq!(s[0], 0b1001_0100);
        assert_eq!(b[0], 0b0111_0000);
    }

    /// Values at and around the edges of the sign and the band, NaN and infinities among them.
    fn edge_values(len: usize, seed: u64) -> Vec<f32> {
        let above_one = f32::from_bits(1.0f32.to_bits() + 1);
        let edges: Vec<f32> = [-1.0, 1.0, above_one, -above_one]
            .into_iter()
            .chain(crate::kernels::pack::tests::SPECIAL)
            .collect();
        values(len, seed)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                if i % 3 == 0 {
                    edges[(i / 3) % edges.len()]
                } else {
                    v
                }
            })
            .collect()
    }

    /// Every path of `signs_and_band64` gives the words of the definition, on every chunk length.
    #[test]
    fn sign_and_band_words_match_the_definition_on_every_path() {
        let v = edge_values(64, 5);
        for len in 0..=64 {
            let chunk = &v[..len];
            let (mut signs, mut band) = (0u64, 0u64);
            for (j, &x) in chunk.iter().enumerate() {
                signs |= u64::from(x < 0.0) << j;
                band |= u64::from(x.is_nan() || x.abs() > 1.0) << j;
            }
            for isa in crate::kernels::isa::Isa::available() {
                let got = signs_and_band64(crate::kernels::CheckedIsa::new(isa), chunk);
                assert_eq!(got, (signs, band), "{isa:?}, {len} values");
            }
        }
    }

    /// Every path of `cut_word` zeroes exactly the values whose bit is set, and `Bits::cut`
    /// does so from any start bit.
    #[test]
    fn cut_zeroes_exactly_the_set_bits_on_every_path() {
        let v = edge_values(64, 9);
        let words = [0u64, u64::MAX, 0x8000_0000_0000_0001, 0x0123_4567_89ab_cdef];
        for isa in crate::kernels::isa::Isa::available() {
            for word in words {
                for len in [1, 17, 63, 64] {
                    let mut got = v[..len].to_vec();
                    cut_word(crate::kernels::CheckedIsa::new(isa), word, &mut got);
                    for (j, (&g, &x)) in got.iter().zip(&v).enumerate() {
                        let expected = if (word >> j) & 1 == 1 { 0.0 } else { x };
                        assert_eq!(
                            g.to_bits(),
                            expected.to_bits(),
                            "{isa:?}, word {word:#x}, value {j} of {len}"
                        );
                    }
                }
            }
        }
        let bits = [0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210, u64::MAX];
        let all = values(192, 3);
        for start in [0, 5, 64, 70] {
            let mut got = all[start..].to_vec();
            Bits::new(&bits, 192).cut(start, &mut got);
            for (j, (&g, &x)) in got.iter().zip(&all[start..]).enumerate() {
                let i = start + j;
                let expected = if (bits[i / 64] >> (i % 64)) & 1 == 1 {
                    0.0
                } else {
                    x
                };
                assert_eq!(g.to_bits(), expected.to_bits(), "start {start}, value {i}");
            }
        }
    }
}
