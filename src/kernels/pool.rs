//! Max-pooling over unpadded windows, forward with the index of each window's maximum and
//! backward from those indices, on `[N, C, H, W]` values in row-major order. Planes (one image's
//! channel) run in parallel.
//!
//! The semantics are Burn's `max_pool2d_with_indices` (padding 0, dilation 1, floor mode): each
//! output is the largest value of its window, the first one in row-major order among equals;
//! its index is the position `iy·W + ix` inside the plane. A window of NaN only gives `−∞` and
//! index 0, as Burn's does (NaN is never larger).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{
    CheckedIsa,
    isa::{Isa, active_isa},
    uninit::{as_slots, write_zeros},
};

/// The shapes of a max-pooling: input `[batch·channels, height, width]` planes and the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Planes: batch size times channels.
    pub planes: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Window `[k_h, k_w]`, each at least 1.
    pub kernel: [usize; 2],
    /// Stride `[s_h, s_w]`, each at least 1.
    pub stride: [usize; 2],
}

impl PoolShape {
    /// The pooling of `kernel` windows moved by `stride` over an `[N, C, H, W]` input.
    pub fn of([n, c, h, w]: [usize; 4], kernel: [usize; 2], stride: [usize; 2]) -> Self {
        Self {
            planes: n * c,
            height: h,
            width: w,
            kernel,
            stride,
        }
    }

    /// Output `[height, width]`: `(size − k)/s + 1` (0 where the window does not fit).
    ///
    /// ```
    /// use burn_qnn::kernels::pool::PoolShape;
    ///
    /// let shape = PoolShape { planes: 1, height: 5, width: 4, kernel: [2, 2], stride: [2, 2] };
    /// assert_eq!(shape.output_size(), [2, 2]);
    /// ```
    ///
    /// # Panics
    /// If a window or stride size is 0.
    pub fn output_size(&self) -> [usize; 2] {
        assert!(
            self.kernel.iter().chain(&self.stride).all(|&v| v > 0),
            "max pool: window {:?} and stride {:?} must be positive",
            self.kernel,
            self.stride
        );
        let out = |size: usize, k: usize, s: usize| if size < k { 0 } else { (size - k) / s + 1 };
        [
            out(self.height, self.kernel[0], self.stride[0]),
            out(self.width, self.kernel[1], self.stride[1]),
        ]
    }

    fn plane_len(&self) -> usize {
        self.height * self.width
    }
}

/// Writes each window's maximum to `out` and its position inside the plane to `indices`
/// (`[planes, out_h, out_w]` each).
///
/// # Panics
/// If a length does not match `shape`.
pub fn max_pool2d_forward(x: &[f32], shape: PoolShape, out: &mut [f32], indices: &mut [i64]) {
    // SAFETY: `max_pool2d_forward_into` writes only initialized values.
    let (out, indices) = unsafe { (as_slots(out), as_slots(indices)) };
    max_pool2d_forward_into(x, shape, out, indices)
}

/// [`max_pool2d_forward`] into slots it writes every one of (so `out` and `indices` need not be
/// initialized).
pub(crate) fn max_pool2d_forward_into(
    x: &[f32],
    shape: PoolShape,
    out: &mut [MaybeUninit<f32>],
    indices: &mut [MaybeUninit<i64>],
) {
    let out_plane = check_lengths(x, shape, out.len());
    assert_eq!(indices.len(), out.len(), "max pool: index length");
    if out_plane == 0 {
        return;
    }
    let isa = CheckedIsa::new(active_isa());
    x.par_chunks(shape.plane_len().max(1))
        .zip(out.par_chunks_mut(out_plane))
        .zip(indices.par_chunks_mut(out_plane))
        .for_each(|((x, out), indices)| isa.pool_plane(x, shape, out, indices));
}

/// Writes each window's maximum to `out` (`[planes, out_h, out_w]`), as
/// [`max_pool2d_forward`] without the indices (for inference).
///
/// # Panics
/// If a length does not match `shape`.
pub fn max_pool2d(x: &[f32], shape: PoolShape, out: &mut [f32]) {
    // SAFETY: `max_pool2d_into` writes only initialized values.
    max_pool2d_into(x, shape, unsafe { as_slots(out) })
}

/// [`max_pool2d`] into slots it writes every one of.
pub(crate) fn max_pool2d_into(x: &[f32], shape: PoolShape, out: &mut [MaybeUninit<f32>]) {
    let out_plane = check_lengths(x, shape, out.len());
    if out_plane == 0 {
        return;
    }
    let isa = CheckedIsa::new(active_isa());
    x.par_chunks(shape.plane_len().max(1))
        .zip(out.par_chunks_mut(out_plane))
        .for_each(|(x, out)| isa.pool_plane(x, shape, out, &mut NoIndices));
}

/// Checks the input and output lengths against `shape`; returns the values of an output plane.
fn check_lengths(x: &[f32], shape: PoolShape, out_len: usize) -> usize {
    let [oh, ow] = shape.output_size();
    assert_eq!(
        x.len(),
        shape.planes * shape.plane_len(),
        "max pool: input length"
    );
    assert_eq!(out_len, shape.planes * oh * ow, "max pool: output length");
    oh * ow
}

/// Where the pooling writes each window's index: slots, or nowhere.
trait IndexSink {
    fn put(&mut self, at: usize, index: i64);
}

impl IndexSink for [MaybeUninit<i64>] {
    #[inline(always)]
    fn put(&mut self, at: usize, index: i64) {
        self[at].write(index);
    }
}

/// No indices (inference).
struct NoIndices;

impl IndexSink for NoIndices {
    #[inline(always)]
    fn put(&mut self, _: usize, _: i64) {}
}

impl CheckedIsa {
    /// [`pool_plane`] compiled for this CPU's widest vectors where there is a path for them
    /// (the same code, so the same results).
    fn pool_plane<I: IndexSink + ?Sized>(
        self,
        x: &[f32],
        shape: PoolShape,
        out: &mut [MaybeUninit<f32>],
        indices: &mut I,
    ) {
        match self.isa() {
            // SAFETY: a checked instruction set runs on this CPU, and DQ is checked here.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if std::is_x86_feature_detected!("avx512dq") => unsafe {
                pool_plane_avx512(x, shape, out, indices)
            },
            _ => pool_plane(x, shape, out, indices),
        }
    }
}

/// [`pool_plane`] with AVX-512 enabled.
///
/// # Safety
/// The CPU has AVX-512 F, BW, DQ and VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn pool_plane_avx512<I: IndexSink + ?Sized>(
    x: &[f32],
    shape: PoolShape,
    out: &mut [MaybeUninit<f32>],
    indices: &mut I,
) {
    pool_plane(x, shape, out, indices)
}

/// One plane: each window's maximum and its index.
#[inline(always)]
fn pool_plane<I: IndexSink + ?Sized>(
    x: &[f32],
    shape: PoolShape,
    out: &mut [MaybeUninit<f32>],
    indices: &mut I,
) {
    let [oh, ow] = shape.output_size();
    let ([kh, kw], [sh, sw], w) = (shape.kernel, shape.stride, shape.width);
    if shape.kernel == [2, 2] && shape.stride == [2, 2] {
        return pool_2x2_plane(x, w, [oh, ow], out, indices);
    }
    for oy in 0..oh {
        for ox in 0..ow {
            let (mut best, mut best_at) = (f32::NEG_INFINITY, 0usize);
            for ky in 0..kh {
                let row = (oy * sh + ky) * w + ox * sw;
                for (kx, &v) in x[row..row + kw].iter().enumerate() {
                    if v > best {
                        (best, best_at) = (v, row + kx);
                    }
                }
            }
            out[oy * ow + ox].write(best);
            indices.put(oy * ow + ox, best_at as i64);
        }
    }
}

/// One plane of a 2×2, stride-2 pooling (the paper's): the generic loop's result, written so
/// that the compiler vectorizes it (each window's four values compared in row-major order with
/// selects, no branches).
#[inline(always)]
fn pool_2x2_plane<I: IndexSink + ?Sized>(
    x: &[f32],
    w: usize,
    [oh, ow]: [usize; 2],
    out: &mut [MaybeUninit<f32>],
    indices: &mut I,
) {
    for (oy, out) in out.chunks_exact_mut(ow).enumerate().take(oh) {
        let top_at = 2 * oy * w;
        let top = &x[top_at..][..2 * ow];
        let bottom = &x[top_at + w..][..2 * ow];
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        for (ox, (out, (top, bottom))) in out.iter_mut().zip(windows).enumerate() {
            let at = (top_at + 2 * ox) as i64;
            let (mut best, mut best_at) = (f32::NEG_INFINITY, 0i64);
            for (v, at) in [
                (top[0], at),
                (top[1], at + 1),
                (bottom[0], at + w as i64),
                (bottom[1], at + w as i64 + 1),
            ] {
                let larger = v > best;
                best = if larger { v } else { best };
                best_at = if larger { at } else { best_at };
            }
            out.write(best);
            indices.put(oy * ow + ox, best_at);
        }
    }
}

/// The input gradient of a max-pooling of `planes` planes into `dx` (`[planes, height, width]`,
/// as the input): each output's gradient (`grad`, `[planes, out_h, out_w]`) added at the input
/// position its index names, zero elsewhere.
///
/// # Panics
/// If `grad`, `indices` and `dx` do not split into `planes` planes of the same lengths, or an
/// index lies outside its plane.
pub fn max_pool2d_backward(grad: &[f32], indices: &[i64], planes: usize, dx: &mut [f32]) {
    // SAFETY: `max_pool2d_backward_into` writes only initialized values.
    max_pool2d_backward_into(grad, indices, planes, unsafe { as_slots(dx) })
}

/// [`max_pool2d_backward`] into slots it writes every one of (so `dx` need not be initialized).
pub(crate) fn max_pool2d_backward_into(
    grad: &[f32],
    indices: &[i64],
    planes: usize,
    dx: &mut [MaybeUninit<f32>],
) {
    assert_eq!(indices.len(), grad.len(), "max pool backward: index length");
    let split = |len: usize, what: &str| {
        assert!(
            planes > 0 && len.is_multiple_of(planes),
            "max pool backward: the {what} ({len} values) does not split into {planes} planes"
        );
        len / planes
    };
    if planes == 0 && grad.is_empty() && dx.is_empty() {
        return;
    }
    let (plane, out_plane) = (
        split(dx.len(), "input gradient"),
        split(grad.len(), "gradient"),
    );
    if plane == 0 {
        return;
    }
    dx.par_chunks_mut(plane).enumerate().for_each(|(p, dx)| {
        let dx = write_zeros(dx);
        let range = p * out_plane..(p + 1) * out_plane;
        for (&g, &at) in grad[range.clone()].iter().zip(&indices[range]) {
            let at = usize::try_from(at)
                .ok()
                .filter(|&at| at < plane)
                .unwrap_or_else(|| {
                    panic!("max pool backward: index {at} outside a plane of {plane} values")
                });
            dx[at] += g;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers, so that windows hold ties.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 5) as f32 - 2.0
            })
            .collect()
    }

    #[test]
    fn each_output_is_the_first_maximum_of_its_window() {
        for (h, w, kernel, stride) in [
            (5, 7, [2, 2], [2, 2]),
            (8, 10, [2, 2], [2, 2]),
            (6, 6, [3, 2], [1, 2]),
            (4, 9, [2, 3], [3, 1]),
            // Rows of more outputs than a vector holds, and a tail.
            (4, 70, [2, 2], [2, 2]),
        ] {
            let shape = PoolShape {
                planes: 3,
                height: h,
                width: w,
                kernel,
                stride,
            };
            let [oh, ow] = shape.output_size();
            // NaN at every seventh value: never a maximum (no window is all NaN).
            let x: Vec<f32> = (values(3 * h * w, (h * w) as u64).into_iter().enumerate())
                .map(|(i, v)| if i % 7 == 3 { f32::NAN } else { v })
                .collect();
            let mut out = vec![0.0; 3 * oh * ow];
            let mut indices = vec![0; out.len()];
            max_pool2d_forward(&x, shape, &mut out, &mut indices);
            // Every instruction set's build of the loop gives the same.
            for isa in Isa::available() {
                let (mut isa_out, mut isa_indices) = (vec![0.0; out.len()], vec![0; out.len()]);
                crate::kernels::isa::with_isa(isa, || {
                    max_pool2d_forward(&x, shape, &mut isa_out, &mut isa_indices)
                });
                assert_eq!(
                    (&isa_out, &isa_indices),
                    (&out, &indices),
                    "{isa:?}, {shape:?}"
                );
            }
            for p in 0..3 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let window: Vec<usize> = (0..kernel[0])
                            .flat_map(|ky| {
                                (0..kernel[1])
                                    .map(move |kx| (oy * stride[0] + ky) * w + ox * stride[1] + kx)
                            })
                            .collect();
                        let max = window
                            .iter()
                            .map(|&i| x[p * h * w + i])
                            .fold(f32::NEG_INFINITY, f32::max);
                        let first = *window.iter().find(|&&i| x[p * h * w + i] == max).unwrap();
                        let o = (p * oh + oy) * ow + ox;
                        assert_eq!((out[o], indices[o]), (max, first as i64));
                    }
                }
            }
            // Without the indices: the same maxima.
            let mut values_only = vec![0.0; out.len()];
            max_pool2d(&x, shape, &mut values_only);
            assert_eq!(values_only, out, "{shape:?}");
        }
    }

    #[test]
    fn the_backward_adds_each_gradient_at_its_index() {
        let shape = PoolShape {
            planes: 2,
            height: 4,
            width: 5,
            kernel: [3, 3],
            stride: [1, 2],
        };
        let [oh, ow] = shape.output_size();
        let x = values(2 * 20, 7);
        let mut out = vec![0.0; 2 * oh * ow];
        let mut indices = vec![0; out.len()];
        max_pool2d_forward(&x, shape, &mut out, &mut indices);
        let grad: Vec<f32> = (0..out.len()).map(|i| i as f32 + 1.0).collect();
        let mut dx = vec![f32::NAN; x.len()];
        max_pool2d_backward(&grad, &indices, 2, &mut dx);
        let mut expected = vec![0.0; x.len()];
        for (o, (&g, &at)) in grad.iter().zip(&indices).enumerate() {
            expected[o / (oh * ow) * 20 + at as usize] += g;
        }
        assert_eq!(dx, expected);
        // Overlapping windows share maxima, so some inputs receive several gradients.
        assert!(expected.iter().filter(|&&v| v != 0.0).count() < grad.len());
    }

    #[test]
    fn a_window_of_nan_gives_minus_infinity_at_index_zero() {
        let shape = PoolShape {
            planes: 1,
            height: 2,
            width: 2,
            kernel: [2, 2],
            stride: [2, 2],
        };
        let (mut out, mut indices) = ([0.0], [5]);
        max_pool2d_forward(&[f32::NAN; 4], shape, &mut out, &mut indices);
        assert_eq!((out[0], indices[0]), (f32::NEG_INFINITY, 0));
    }

    #[test]
    #[should_panic(expected = "outside a plane")]
    fn an_index_outside_the_plane_is_refused() {
        max_pool2d_backward(&[1.0], &[4], 1, &mut [0.0; 4]);
    }
}
