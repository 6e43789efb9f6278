//! Gradients of the binary products on a quantized output gradient, in integers.
//!
//! The paper quantizes each layer's output gradient to `K` bits (6 in its experiments), which
//! turns the backward products into sums of small integers: the gradient is
//! `g ≈ s · c / L` with one scale `s = max|g|`, `L = max(2^(K−1) − 1, 1)` and integer codes
//! `c = floor(L·g/s + ½) ∈ [−L, L]` ([`QuantizedGrad`], the same grid as
//! [`crate::quant::quantize_gradient`]), and the saved operand of a binary layer is ±1. The
//! kernels here compute `Σ c · (±1)` exactly in `i32` on the int8 products of [`super::int8`]
//! (AMX, AVX-512 VNNI, AVX2 or portable), then rescale each sum once: `s · Σ/L`. The ±1
//! operand is expanded from its saved bits into `i8` blocks (a quarter of the bytes of the f32
//! expansion the float kernels use); the straight-through band cuts the result as there.
//!
//! Each result equals the float computation on the quantized gradient (`s·c/L` through the float
//! kernels of [`super::backward`]) up to the rounding of its f32 terms, and its integer part is
//! exact: see each function's bound on the summed length.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{
    CheckedIsa,
    backward::{Bits, MatmulShape, check_conv, transposed_geometry},
    conv::{ConvCall, PaddingMode},
    im2col::{Shapes, for_each_tap_block, scatter_taps},
    int8::{self, CheckedInt8, MAX_EXACT_SIGN_LEN},
    isa::{Isa, active_isa},
    transpose::transpose_into,
    uninit::{as_slots, assume_written},
};

/// Bytes of expanded `i8` im2col rows at a time (one image's rows when they fit).
const BLOCK_BYTES: usize = 2 << 20;

/// An output gradient quantized to `K` bits: `g ≈ max · code / steps` (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedGrad {
    /// The integer codes, in `[−steps, steps]`, one per gradient value.
    pub codes: Vec<i8>,
    /// `L = max(2^(K−1) − 1, 1)`: the largest code.
    pub steps: f32,
    /// `s = max|g|` (at least `f32::MIN_POSITIVE`), or NaN where the gradient held a
    /// non-finite value (every result is then NaN).
    pub max: f32,
}

/// How [`QuantizedGrad`] rounds a scaled value to its code.
#[derive(Clone, Copy)]
enum Rounding<'a> {
    /// To the nearest code, ties up.
    Nearest,
    /// Down after adding one noise value (uniform in `[0, 1)`) per gradient value.
    Stochastic(&'a [f32]),
}

impl QuantizedGrad {
    /// Quantizes `grad` to `bits` bits (1 to 8; 1 acts as 2), on the grid of
    /// [`crate::quant::quantize_gradient`]: `c = floor(g/s · L + ½)`.
    ///
    /// ```
    /// use burn_qnn::kernels::quantized_backward::QuantizedGrad;
    ///
    /// let q = QuantizedGrad::quantize(&[0.5, -1.0, 0.26, 0.0], 3);
    /// assert_eq!((q.steps, q.max), (3.0, 1.0));
    /// assert_eq!(q.codes, [2, -3, 1, 0]);
    /// assert_eq!(q.value(2), 2.0 / 3.0);
    /// ```
    ///
    /// # Panics
    /// If `bits` is not between 1 and 8.
    pub fn quantize(grad: &[f32], bits: u32) -> QuantizedGrad {
        Self::quantize_rounded(grad, bits, Rounding::Nearest)
    }

    /// Quantizes `grad` to `bits` bits with stochastic rounding, as
    /// [`crate::quant::quantize_gradient_stochastic`]: with `x = g/s · L` and `u = noise[i]`
    /// (uniform in `[0, 1)`), `c = ⌊x⌋ + [u ≥ 1 − (x − ⌊x⌋)]`: `floor(x + u)`, without the
    /// f32 rounding of `x + u` that can turn `±L + u` into another integer, so `±s` (`x = ±L`)
    /// stays exact. The grid is [`QuantizedGrad::quantize`]'s.
    ///
    /// ```
    /// use burn_qnn::kernels::quantized_backward::QuantizedGrad;
    ///
    /// let q = QuantizedGrad::quantize_stochastic(&[0.5, -1.0, 0.5, 0.0], &[0.4, 0.9, 0.6, 0.99], 3);
    /// assert_eq!(q.codes, [1, -3, 2, 0]); // 1.5 + 0.4 → 1, −3 + 0.9 → −3, 1.5 + 0.6 → 2
    /// ```
    ///
    /// # Panics
    /// If `bits` is not between 1 and 8, or `noise` and `grad` differ in length.
    pub fn quantize_stochastic(grad: &[f32], noise: &[f32], bits: u32) -> QuantizedGrad {
        assert_eq!(
            grad.len(),
            noise.len(),
            "stochastic gradient quantization: {} gradient values but {} noise values",
            grad.len(),
            noise.len()
        );
        Self::quantize_rounded(grad, bits, Rounding::Stochastic(noise))
    }

    /// [`QuantizedGrad::quantize`] or [`QuantizedGrad::quantize_stochastic`].
    fn quantize_rounded(grad: &[f32], bits: u32, rounding: Rounding<'_>) -> QuantizedGrad {
        assert!(
            (1..=8).contains(&bits),
            "quantized gradient: {bits} bits (1 to 8 are possible)"
        );
        const CHUNK: usize = 1 << 16;
        let steps = ((1u32 << (bits - 1)) - 1).max(1) as f32;
        // max|g| and whether any value is non-finite, in one pass of chunks.
        let isa = CheckedIsa::new(active_isa());
        let (max, non_finite) = grad
            .par_chunks(CHUNK)
            .map(|chunk| isa.max_magnitude(chunk))
            .reduce(|| (0.0, false), |a, b| (a.0.max(b.0), a.1 | b.1));
        if non_finite {
            return QuantizedGrad {
                codes: vec![0; grad.len()],
                steps,
                max: f32::NAN,
            };
        }
        let max = max.max(f32::MIN_POSITIVE);
        let mut codes = vec![0i8; grad.len()];
        let chunks = codes.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK));
        match rounding {
            Rounding::Nearest => {
                chunks.for_each(|(codes, grad)| isa.codes(grad, max, steps, codes));
            }
            Rounding::Stochastic(noise) => {
                chunks
                    .zip(noise.par_chunks(CHUNK))
                    .for_each(|((codes, grad), noise)| {
                        isa.stochastic_codes(grad, noise, max, steps, codes)
                    })
            }
        }
        QuantizedGrad { codes, steps, max }
    }

    /// The gradient value of `code`: `code / steps · max`, as the float quantizer computes it.
    pub fn value(&self, code: i8) -> f32 {
        f32::from(code) / self.steps * self.max
    }

    /// Every code's value ([`QuantizedGrad::value`]): the quantized gradient in f32.
    pub fn values(&self) -> Vec<f32> {
        self.codes.par_iter().map(|&c| self.value(c)).collect()
    }

    /// The factor of [`QuantizedGrad::rescale`]: `max / steps` in f64.
    fn step_value(&self) -> f64 {
        f64::from(self.max) / f64::from(self.steps)
    }

    /// The gradient value of an integer sum of codes times ±1: `sum · max / steps`, computed in
    /// f64 (`sum` times [`QuantizedGrad::step_value`], within two f64 roundings of the true
    /// value) and rounded to f32, so exact wherever the true value is an f32 (e.g. integer sums
    /// when `max = steps`).
    #[inline(always)]
    fn rescale(step_value: f64, sum: i32) -> f32 {
        (f64::from(sum) * step_value) as f32
    }

    /// Writes the rescaled `sums` into `out` and zeroes `out[j]` where bit `first + j` of
    /// `blocked` is set (`out` is the part of the gradient from value `first` on), rescaling on
    /// `isa`. Blocks of values run in parallel where `parallel` is set; a caller that already
    /// runs on every thread (one image each) finishes its part on its own thread.
    fn finish(
        &self,
        isa: CheckedIsa,
        sums: &[i32],
        blocked: Bits<'_>,
        first: usize,
        out: &mut [MaybeUninit<f32>],
        parallel: bool,
    ) {
        assert_eq!(
            sums.len(),
            out.len(),
            "quantized gradient: sums for every value"
        );
        let step_value = self.step_value();
        if parallel {
            out.par_chunks_mut(1 << 14)
                .zip(sums.par_chunks(1 << 14))
                .for_each(|(out, sums)| isa.rescale(step_value, sums, out));
        } else {
            isa.rescale(step_value, sums, out);
        }
        // SAFETY: every slot was written just above (as many sums as slots).
        blocked.cut(first, unsafe { assume_written(out) });
    }

    /// [`QuantizedGrad::finish`] of a whole gradient, from its first value, blocks in parallel
    /// on the active vector path.
    fn finish_whole(&self, sums: &[i32], blocked: Bits<'_>, out: &mut [f32]) {
        let isa = CheckedIsa::new(active_isa());
        // SAFETY: `finish` writes only initialized values.
        self.finish(isa, sums, blocked, 0, unsafe { as_slots(out) }, true);
    }
}

/// Each sum's gradient value ([`QuantizedGrad::rescale`]) into `out` (as long as `sums`).
#[inline(always)]
fn rescale_into(step_value: f64, sums: &[i32], out: &mut [MaybeUninit<f32>]) {
    for (o, &sum) in out.iter_mut().zip(sums) {
        o.write(QuantizedGrad::rescale(step_value, sum));
    }
}

impl CheckedIsa {
    /// [`max_magnitude`], compiled for AVX-512 where the CPU has it (the same operations).
    fn max_magnitude(self, grad: &[f32]) -> (f32, bool) {
        match self.isa() {
            // SAFETY: a checked instruction set runs on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::max_magnitude_avx512(grad) },
            _ => max_magnitude(grad),
        }
    }

    /// [`rescale_into`], compiled for AVX-512 where the CPU has it (the same operations).
    fn rescale(self, step_value: f64, sums: &[i32], out: &mut [MaybeUninit<f32>]) {
        match self.isa() {
            // SAFETY: a checked instruction set runs on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::rescale_avx512(step_value, sums, out) },
            _ => rescale_into(step_value, sums, out),
        }
    }

    /// [`codes_into`], compiled for AVX-512 where the CPU has it (the same operations).
    fn codes(self, grad: &[f32], max: f32, steps: f32, codes: &mut [i8]) {
        match self.isa() {
            // SAFETY: a checked instruction set runs on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::codes_avx512(grad, max, steps, codes) },
            _ => codes_into(grad, max, steps, codes),
        }
    }

    /// [`stochastic_codes_into`], compiled for AVX-512 where the CPU has it (the same
    /// operations).
    fn stochastic_codes(self, grad: &[f32], noise: &[f32], max: f32, steps: f32, codes: &mut [i8]) {
        match self.isa() {
            // SAFETY: a checked instruction set runs on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::stochastic_codes_avx512(grad, noise, max, steps, codes) },
            _ => stochastic_codes_into(grad, noise, max, steps, codes),
        }
    }
}

/// The [`CheckedIsa`] paths' AVX-512 builds of the portable loops.
#[cfg(target_arch = "x86_64")]
mod x86 {
    /// [`super::max_magnitude`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn max_magnitude_avx512(grad: &[f32]) -> (f32, bool) {
        super::max_magnitude(grad)
    }

    /// [`super::rescale_into`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn rescale_avx512(
        step_value: f64,
        sums: &[i32],
        out: &mut [std::mem::MaybeUninit<f32>],
    ) {
        super::rescale_into(step_value, sums, out)
    }

    /// [`super::codes_into`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn codes_avx512(grad: &[f32], max: f32, steps: f32, codes: &mut [i8]) {
        super::codes_into(grad, max, steps, codes)
    }

    /// [`super::stochastic_codes_into`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn stochastic_codes_avx512(
        grad: &[f32],
        noise: &[f32],
        max: f32,
        steps: f32,
        codes: &mut [i8],
    ) {
        super::stochastic_codes_into(grad, noise, max, steps, codes)
    }
}

/// Each value's code `floor(g/max · steps + ½)`, for a finite `grad` whose largest magnitude is
/// at most `max` (so the codes lie in `[−steps, steps]`; a value outside gives a meaningless
/// code, never undefined behaviour).
#[inline(always)]
fn codes_into(grad: &[f32], max: f32, steps: f32, codes: &mut [i8]) {
    for (c, &g) in codes.iter_mut().zip(grad) {
        *c = floor_of_code(g / max * steps + 0.5) as i8;
    }
}

/// Each value's stochastically rounded code `⌊x⌋ + [u ≥ 1 − (x − ⌊x⌋)]` with
/// `x = g/max · steps` and `u` the value's noise in `[0, 1)`: `floor(x + u)` up to the f32
/// rounding of `1 − (x − ⌊x⌋)`, for a finite `grad` whose largest magnitude is at most `max`.
#[inline(always)]
fn stochastic_codes_into(grad: &[f32], noise: &[f32], max: f32, steps: f32, codes: &mut [i8]) {
    for ((c, &g), &u) in codes.iter_mut().zip(grad).zip(noise) {
        let x = g / max * steps;
        let down = floor_of_code(x);
        let fraction = x - down as f32;
        *c = (down + i32::from(u >= 1.0 - fraction)) as i8;
    }
}

/// The largest `|g|` of the finite values of `grad` and whether any value is not finite, in 16
/// lanes so that it vectorizes (`f32::max` does not: it orders NaN).
#[inline(always)]
fn max_magnitude(grad: &[f32]) -> (f32, bool) {
    const LANES: usize = 16;
    let (mut max, mut finite) = ([0f32; LANES], [true; LANES]);
    let blocks = grad.chunks_exact(LANES);
    let tail = blocks.remainder();
    for block in blocks {
        for i in 0..LANES {
            let a = block[i].abs();
            max[i] = if a > max[i] { a } else { max[i] };
            finite[i] &= a <= f32::MAX;
        }
    }
    for (i, g) in tail.iter().enumerate() {
        let a = g.abs();
        max[i] = if a > max[i] { a } else { max[i] };
        finite[i] &= a <= f32::MAX;
    }
    let largest = max.into_iter().fold(0f32, f32::max);
    (largest, finite.contains(&false))
}

/// `floor(v)` as an integer for `|v| ≤ 2^24` (0 for other values, NaN included), without the
/// call to libm's `floorf` that `f32::floor` makes on baseline x86-64 and without the
/// saturating float-to-integer cast, which does not vectorize: truncation towards zero, one
/// less where that rounded a negative value up.
#[inline(always)]
fn floor_of_code(v: f32) -> i32 {
    let v = if v.abs() <= 16_777_216.0 { v } else { 0.0 };
    // SAFETY: `v` is finite and `|v| ≤ 2^24`, so its truncation fits in `i32`.
    let truncated = unsafe { v.to_int_unchecked::<i32>() };
    truncated - i32::from(truncated as f32 > v)
}

/// Panics unless `sum_len` terms of `±1 × [−127, 127]` stay exact in `i32`.
fn check_exact(what: &str, sum_len: usize) {
    assert!(
        sum_len <= MAX_EXACT_SIGN_LEN,
        "quantized binary {what}: {sum_len} summed terms can overflow i32 (at most \
         {MAX_EXACT_SIGN_LEN})"
    );
}

/// `[rows, cols]` bytes transposed to `[cols, rows]`.
fn transpose_i8(values: &[i8], rows: usize, cols: usize) -> Vec<i8> {
    let mut out = vec![0i8; values.len()];
    transpose_into(values, cols, rows, cols, &mut out, rows);
    out
}

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `w` `[C_out, C_in, k_h, k_w]` on a
/// quantized output gradient `[N, C_out, H_out, W_out]`, written to `out`: the codes against the
/// ±1 inputs (`input_signs`, `[N, C_in, H, W]`; padded taps read 0 or +1 as `pad` says), summed
/// over images and positions in `i32`, rescaled, then zero wherever `weight_blocked` is set.
/// Groups of images run in parallel, each into its own sum.
///
/// # Panics
/// If the geometry is impossible, a length does not match it, or `N·H_out·W_out` exceeds
/// [`MAX_EXACT_SIGN_LEN`].
pub fn binary_conv2d_weight_grad(
    grad: &QuantizedGrad,
    input_signs: Bits<'_>,
    pad: PaddingMode,
    weight_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) {
    let isa = CheckedInt8::active();
    let s = Shapes::of(g);
    check_conv("quantized weight gradient", g, &s, grad.codes.len());
    assert_eq!(
        out.len(),
        g.weights_len(),
        "quantized binary conv2d weight gradient: output length"
    );
    assert_eq!(
        input_signs.len(),
        g.input_len(),
        "quantized binary conv2d: input bits"
    );
    assert_eq!(
        weight_blocked.len(),
        g.weights_len(),
        "quantized binary conv2d: weight bits"
    );
    check_exact("conv2d weight gradient", g.batch * s.positions);
    let pad: i8 = match pad {
        PaddingMode::Zero => 0,
        PaddingMode::PlusOne => 1,
    };
    let groups = rayon::current_num_threads().min(g.batch).max(1);
    let images_per_group = g.batch.div_ceil(groups).max(1);
    // Each group sums dWᵀ [taps, C_out]: the tap rows are the left operand, so that their
    // expansion is the operand itself and each block's result is contiguous. On the padded grid
    // (stride 1) the rows are read where they lie in the padded images, several images a
    // product ([`weight_grid`]); other strides copy im2col rows, image by image, with each
    // image's codes laid out once as the right operand of all its tap rows.
    let sum_group = |first: usize| -> Vec<i32> {
        let mut sum = vec![0i32; s.taps * s.c_out];
        let images = first..(first + images_per_group).min(g.batch);
        if g.stride == [1, 1] {
            weight_grid::accumulate_stride_one(
                isa,
                grad,
                input_signs,
                pad,
                g,
                &s,
                images,
                &mut sum,
            );
            return sum;
        }
        let product = |tap0, count, rows: &[i8], codes: &[i8], positions| {
            let codes = int8::Rhs::new(isa, codes, s.c_out, positions);
            // sum[tap, co] += Σ_p rows[tap, p] · codes[co, p]
            let sum = &mut sum[tap0 * s.c_out..(tap0 + count) * s.c_out];
            int8::gemm_accumulate_rhs(rows, &codes, count, sum);
        };
        for_each_tap_block(
            input_signs,
            pad,
            &grad.codes,
            g,
            &s,
            images,
            BLOCK_BYTES,
            product,
        );
        sum
    };
    let firsts: Vec<usize> = (0..g.batch).step_by(images_per_group).collect();
    let sums: Vec<Vec<i32>> = firsts.into_par_iter().map(sum_group).collect();
    let mut total = vec![0i32; s.c_out * s.taps];
    for sum in &sums {
        for (tap, row) in sum.chunks_exact(s.c_out).enumerate() {
            for (co, &v) in row.iter().enumerate() {
                total[co * s.taps + tap] += v;
            }
        }
    }
    grad.finish_whole(&total, weight_blocked, out);
}

/// The gradient of `sign(x) ⊛ sign(w)` with respect to `x` `[N, C_in, H, W]` on a quantized
/// output gradient `[N, C_out, H_out, W_out]`, written to `out`: for each tap, the codes summed
/// over output channels against the ±1 weights (`weight_signs`, `[C_out, C_in, k_h, k_w]`) in
/// `i32`, added into the input positions each tap read (col2im; taps on padding contribute to no
/// input, in either padding mode), rescaled, then zero wherever `input_blocked` is set. Every
/// stride, dilation and padding the forward takes; images run in parallel.
///
/// # Panics
/// If the geometry is impossible or a length does not match it.
pub fn binary_conv2d_input_grad(
    grad: &QuantizedGrad,
    weight_signs: Bits<'_>,
    input_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [f32],
) {
    // SAFETY: `binary_conv2d_input_grad_into` writes only initialized values.
    binary_conv2d_input_grad_into(grad, weight_signs, input_blocked, g, unsafe {
        as_slots(out)
    });
}

/// [`binary_conv2d_input_grad`] into slots it writes every one of (so `out` need not be initialized).
pub(crate) fn binary_conv2d_input_grad_into(
    grad: &QuantizedGrad,
    weight_signs: Bits<'_>,
    input_blocked: Bits<'_>,
    g: &ConvCall,
    out: &mut [MaybeUninit<f32>],
) {
    let isa = CheckedInt8::active();
    let float_isa = CheckedIsa::new(active_isa());
    let s = Shapes::of(g);
    check_conv("quantized input gradient", g, &s, grad.codes.len());
    assert_eq!(
        out.len(),
        g.input_len(),
        "quantized binary conv2d input gradient: output length"
    );
    assert_eq!(
        weight_signs.len(),
        g.weights_len(),
        "quantized binary conv2d: weight bits"
    );
    assert_eq!(
        input_blocked.len(),
        g.input_len(),
        "quantized binary conv2d: input bits"
    );
    // Each input value sums at most C_out·k_h·k_w terms.
    check_exact("conv2d input gradient", s.c_out * g.kernel[0] * g.kernel[1]);
    let image_len = s.image_len();
    if image_len == 0 {
        return;
    }
    // The weights as [C_out, taps]: weight-sized.
    let mut weights = vec![0i8; s.c_out * s.taps];
    weight_signs.expand(0, &mut weights);
    if let Some(transposed) = transposed_geometry(g) {
        input_grad_stride_one(isa, grad, &weights, input_blocked, g, &transposed, &s, out);
        return;
    }
    let mut sums = vec![0i32; out.len()];
    let weights_t = transpose_i8(&weights, s.c_out, s.taps);
    let block = (BLOCK_BYTES / (4 * s.positions.max(1))).clamp(1, s.taps.max(1));
    let image_grad = s.c_out * s.positions;
    sums.par_chunks_mut(image_len)
        .enumerate()
        .for_each(|(n, dx)| {
            let codes_t = transpose_i8(
                &grad.codes[n * image_grad..(n + 1) * image_grad],
                s.c_out,
                s.positions,
            );
            let mut rows = vec![0i32; block * s.positions];
            for tap0 in (0..s.taps).step_by(block) {
                let count = block.min(s.taps - tap0);
                let rows = &mut rows[..count * s.positions];
                rows.fill(0);
                // rows[tap, p] = Σ_co w[co, tap] · codes[co, p]
                int8::gemm_accumulate(
                    isa,
                    &weights_t[tap0 * s.c_out..(tap0 + count) * s.c_out],
                    &codes_t,
                    count,
                    s.positions,
                    s.c_out,
                    rows,
                );
                scatter_taps(g, &s, tap0, rows, dx);
            }
        });
    grad.finish(float_isa, &sums, input_blocked, 0, out, true);
}

/// The input gradient `[N, C_in, H, W]` for stride 1, written to `out`: the convolution of the
/// output gradient with the flipped weights (`transposed`, see [`transposed_geometry`]) in
/// integers, rescaled, zero where `input_blocked` is set. For each input position, the row of
/// the output-gradient codes its taps read (channels last, `C_out` bytes a tap) meets each
/// input channel's flipped ±1 weights in the same order, the rows padded with zeros to whole
/// 64-byte steps.
///
/// The codes are laid out once per image channels last on a grid padded by the transposed
/// padding (zeros around them), so every tap of every position reads inside it, and the taps of
/// one kernel row are one run of it (where the horizontal dilation is 1). The product reads
/// each position's row from those runs where they lie on AVX-512 VNNI
/// ([`int8::gemm_accumulate_rows_in`]), and copies it out on the other paths. Each image's sums
/// are finished (rescaled and cut) while they are in cache, and each thread reuses its buffers
/// from image to image.
#[allow(clippy::too_many_arguments)]
fn input_grad_stride_one(
    isa: CheckedInt8,
    grad: &QuantizedGrad,
    weights: &[i8],
    input_blocked: Bits<'_>,
    g: &ConvCall,
    transposed: &ConvCall,
    s: &Shapes,
    out: &mut [MaybeUninit<f32>],
) {
    // Taken here, on the caller's thread (a path forced there holds in the images' jobs).
    let float_isa = CheckedIsa::new(active_isa());
    let [kh, kw] = g.kernel;
    let taps = kh * kw;
    let c_out = s.c_out;
    let depth = (taps * c_out).next_multiple_of(64);
    // flipped[ci, (ky·k_w + kx)·C_out + co] = w[co, ci, k_h − 1 − ky, k_w − 1 − kx]
    let mut flipped = vec![0i8; s.c_in * depth];
    for co in 0..c_out {
        for ci in 0..s.c_in {
            for tap in 0..taps {
                let (ky, kx) = (tap / kw, tap % kw);
                let source = ((co * s.c_in + ci) * kh + kh - 1 - ky) * kw + kw - 1 - kx;
                flipped[ci * depth + tap * c_out + co] = weights[source];
            }
        }
    }
    // Laid out once for the product's kernel, for every image.
    let flipped = int8::Rhs::new(isa, &flipped, s.c_in, depth);
    let (in_positions, out_positions) = (s.h * s.w, s.positions);
    let image_grad = c_out * out_positions;
    let [pad_y, pad_x] = transposed.padding;
    let [dil_y, dil_x] = g.dilation;
    // The padded codes grid: `h + (k_h − 1)·d_h` rows of `w + (k_w − 1)·d_w` positions.
    let grid_width = s.ow + 2 * pad_x;
    let grid_len = (s.oh + 2 * pad_y) * grid_width * c_out;
    let image_len = s.c_in * in_positions;
    // Input position q's row of the product: the runs of the grid its taps read (one a kernel
    // row where the horizontal dilation is 1, one a tap elsewhere), then zeros up to `depth`.
    let (run, offsets): (usize, Vec<usize>) = if dil_x == 1 {
        let rows = (0..kh).map(|ky| ky * dil_y * grid_width * c_out);
        (kw * c_out, rows.collect())
    } else {
        let taps = (0..taps).map(|t| ((t / kw) * dil_y * grid_width + (t % kw) * dil_x) * c_out);
        (c_out, taps.collect())
    };
    let starts: Vec<usize> = (0..in_positions)
        .map(|q| ((q / s.w) * grid_width + q % s.w) * c_out)
        .collect();
    let buffers = || {
        (
            vec![0i8; grid_len],
            Vec::new(),
            vec![0i32; image_len],
            vec![0i32; image_len],
        )
    };
    out.par_chunks_mut(image_len).enumerate().for_each_init(
        buffers,
        |(grid, scratch, dx_t, dx), (n, out)| {
            // grid[((y + p_y)·width + x + p_x)·C_out + co] = codes[co, y, x]; the rest stays 0.
            let codes = &grad.codes[n * image_grad..(n + 1) * image_grad];
            for y in 0..s.oh {
                let first = ((y + pad_y) * grid_width + pad_x) * c_out;
                let row = &codes[y * s.ow..];
                transpose_into(row, out_positions, c_out, s.ow, &mut grid[first..], c_out);
            }
            let rows = int8::RowsIn {
                base: grid,
                starts: &starts,
                offsets: &offsets,
                run,
            };
            // dxᵀ[q, ci] = Σ_r rows[q, r] · flipped[ci, r]
            dx_t.fill(0);
            int8::gemm_accumulate_rows_in(&rows, &flipped, dx_t, scratch);
            transpose_into(dx_t, s.c_in, in_positions, s.c_in, dx, in_positions);
            grad.finish(float_isa, dx, input_blocked, n * image_len, out, false);
        },
    );
}

/// Panics unless the lengths match `shape`.
fn check_matmul(what: &str, grad: &QuantizedGrad, a: Bits<'_>, b: Bits<'_>, shape: MatmulShape) {
    let MatmulShape { batch, m, k, n } = shape;
    assert_eq!(
        grad.codes.len(),
        batch * m * n,
        "quantized binary matmul {what}: gradient length"
    );
    assert_eq!(
        a.len(),
        batch * m * k,
        "quantized binary matmul {what}: left operand bits"
    );
    assert_eq!(
        b.len(),
        batch * k * n,
        "quantized binary matmul {what}: right operand bits"
    );
}

/// The gradient of `sign(a)·sign(b)` with respect to `a` `[batch, m, k]` on a quantized
/// gradient `[batch, m, n]`: the codes times the transpose of the ±1 `b` (`b_signs`,
/// `[batch, k, n]`) in `i32`, rescaled, zero wherever `a_blocked` is set.
///
/// # Panics
/// If a length does not match `shape` or `n` exceeds [`MAX_EXACT_SIGN_LEN`].
pub fn binary_matmul_lhs_grad(
    grad: &QuantizedGrad,
    b_signs: Bits<'_>,
    a_blocked: Bits<'_>,
    shape: MatmulShape,
    out: &mut [f32],
) {
    check_matmul("left gradient", grad, a_blocked, b_signs, shape);
    let MatmulShape { batch, m, k, n } = shape;
    assert_eq!(
        out.len(),
        batch * m * k,
        "quantized binary matmul left gradient: output length"
    );
    check_exact("matmul left gradient", n);
    let mut sums = vec![0i32; out.len()];
    let mut b = vec![0i8; k * n];
    for i in 0..batch {
        b_signs.expand(i * k * n, &mut b);
        // sums[r, j] = Σ_c codes[r, c] · b[j, c]
        int8::gemm(
            &grad.codes[i * m * n..(i + 1) * m * n],
            &b,
            m,
            k,
            n,
            &mut sums[i * m * k..(i + 1) * m * k],
        );
    }
    grad.finish_whole(&sums, a_blocked, out);
}

/// The gradient of `sign(a)·sign(b)` with respect to `b` `[batch, k, n]` on a quantized
/// gradient `[batch, m, n]`: the transpose of the ±1 `a` (`a_signs`, `[batch, m, k]`) times the
/// codes in `i32`, rescaled, zero wherever `b_blocked` is set.
///
/// # Panics
/// If a length does not match `shape` or `m` exceeds [`MAX_EXACT_SIGN_LEN`].
pub fn binary_matmul_rhs_grad(
    grad: &QuantizedGrad,
    a_signs: Bits<'_>,
    b_blocked: Bits<'_>,
    shape: MatmulShape,
    out: &mut [f32],
) {
    check_matmul("right gradient", grad, a_signs, b_blocked, shape);
    let MatmulShape { batch, m, k, n } = shape;
    assert_eq!(
        out.len(),
        batch * k * n,
        "quantized binary matmul right gradient: output length"
    );
    check_exact("matmul right gradient", m);
    let mut sums = vec![0i32; out.len()];
    let mut a = vec![0i8; m * k];
    for i in 0..batch {
        a_signs.expand(i * m * k, &mut a);
        let a_t = transpose_i8(&a, m, k);
        let codes_t = transpose_i8(&grad.codes[i * m * n..(i + 1) * m * n], m, n);
        // sums[t, c] = Σ_r a[r, t] · codes[r, c]
        int8::gemm(
            &a_t,
            &codes_t,
            k,
            n,
            m,
            &mut sums[i * k * n..(i + 1) * k * n],
        );
    }
    grad.finish_whole(&sums, b_blocked, out);
}

mod weight_grid;

#[cfg(test)]
mod tests;
