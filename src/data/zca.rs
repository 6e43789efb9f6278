//! ZCA whitening, fitted on a training set: `x ↦ W·(x − μ)` with
//! `W = U·diag(1/sqrt(λ + ε))·Uᵀ` from the eigendecomposition `Σ = U·diag(λ)·Uᵀ` of the
//! images' covariance (as in the papers' CIFAR-10 and SVHN preprocessing, after global contrast
//! normalisation).

use faer::{Accum, Mat, MatRef, Par, Side, linalg::matmul::matmul};

use super::{ImageDataset, Preprocess};

/// Rows processed at once when accumulating the covariance.
const CHUNK: usize = 512;

/// Why a whitening could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum ZcaError {
    /// No images to fit on.
    #[error("ZCA whitening: no images to fit on")]
    Empty,
    /// `ε` must be positive and finite.
    #[error("ZCA whitening: epsilon must be positive and finite, got {0}")]
    Epsilon(f32),
    /// A value of the images is not finite.
    #[error("ZCA whitening: image {image} holds a value that is not finite")]
    NotFinite {
        /// The image's index.
        image: usize,
    },
    /// The eigendecomposition did not converge.
    #[error("ZCA whitening: the eigendecomposition of the covariance did not converge")]
    NoConvergence,
}

/// A fitted ZCA whitening of vectors of `dim` values (flattened images).
///
/// ```
/// use burn_qnn::data::Zca;
///
/// // Two strongly correlated features.
/// let rows: Vec<f32> = (0..200)
///     .flat_map(|i| {
///         let t = (i as f32 * 0.37).sin();
///         [t, 0.9 * t + 0.1 * (i as f32 * 1.3).cos()]
///     })
///     .collect();
/// let zca = Zca::fit_rows(&rows, 2, 1e-6)?;
/// let mut white = rows.clone();
/// zca.apply(&mut white);
/// // Whitened features are uncorrelated with unit variance.
/// let cov = |a: usize, b: usize| white.chunks(2).map(|r| r[a] * r[b]).sum::<f32>() / 200.0;
/// assert!((cov(0, 0) - 1.0).abs() < 1e-2 && cov(0, 1).abs() < 1e-2);
/// # Ok::<(), burn_qnn::data::ZcaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Zca {
    dim: usize,
    mean: Vec<f32>,
    /// `W`, `dim × dim`, symmetric.
    matrix: Vec<f32>,
}

impl Zca {
    /// Fits on the images of `data` after `preprocess` (e.g. scaling and global contrast
    /// normalisation), with `epsilon` added to the eigenvalues (it damps the directions of
    /// least variance; 0.1 suits images scaled to `[−1, 1]`). Shows progress on standard error
    /// when `progress` is set.
    ///
    /// # Errors
    /// [`ZcaError`] for an empty data set, a bad `epsilon`, values that are not finite or an
    /// eigendecomposition that fails.
    pub fn fit(
        data: &ImageDataset,
        preprocess: Preprocess,
        epsilon: f32,
        progress: bool,
    ) -> Result<Zca, ZcaError> {
        let dim = data.shape().len();
        let rows = |range: std::ops::Range<usize>| {
            let mut values = Vec::with_capacity(range.len() * dim);
            for item in &data.items()[range] {
                preprocess.apply(&item.pixels, &mut values);
            }
            values
        };
        fit_chunks(data.len(), dim, epsilon, progress, rows)
    }

    /// Fits on `rows`, vectors of `dim` values one after the other (see [`Zca::fit`]).
    ///
    /// # Errors
    /// As [`Zca::fit`].
    ///
    /// # Panics
    /// If `rows.len()` is not a multiple of `dim`.
    pub fn fit_rows(rows: &[f32], dim: usize, epsilon: f32) -> Result<Zca, ZcaError> {
        assert!(
            dim > 0 && rows.len().is_multiple_of(dim),
            "Zca::fit_rows: {} values are not rows of {dim}",
            rows.len()
        );
        fit_chunks(rows.len() / dim, dim, epsilon, false, |range| {
            rows[range.start * dim..range.end * dim].to_vec()
        })
    }

    /// The length of the vectors it whitens.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The mean that is subtracted.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Whitens vectors of [`Zca::dim`] values, one after the other, in place.
    ///
    /// # Panics
    /// If `rows.len()` is not a multiple of [`Zca::dim`].
    pub fn apply(&self, rows: &mut [f32]) {
        let dim = self.dim;
        assert!(
            rows.len().is_multiple_of(dim),
            "Zca::apply: {} values are not rows of {dim}",
            rows.len()
        );
        let n = rows.len() / dim;
        for row in rows.chunks_exact_mut(dim) {
            for (v, m) in row.iter_mut().zip(&self.mean) {
                *v -= m;
            }
        }
        let centered = Mat::from_fn(n, dim, |i, j| rows[i * dim + j]);
        let whitening = MatRef::from_row_major_slice(&self.matrix, dim, dim);
        let mut out = Mat::<f32>::zeros(n, dim);
        matmul(
            out.as_mut(),
            Accum::Replace,
            centered.as_ref(),
            whitening,
            1.0,
            Par::rayon(0),
        );
        for (i, row) in rows.chunks_exact_mut(dim).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = out[(i, j)];
            }
        }
    }
}

/// Fits on `n` rows of `dim` values that `rows(range)` produces chunk by chunk: the mean in a
/// first pass, the covariance (`f64`) in a second, then the eigendecomposition.
fn fit_chunks(
    n: usize,
    dim: usize,
    epsilon: f32,
    progress: bool,
    rows: impl Fn(std::ops::Range<usize>) -> Vec<f32>,
) -> Result<Zca, ZcaError> {
    if n == 0 || dim == 0 {
        return Err(ZcaError::Empty);
    }
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(ZcaError::Epsilon(epsilon));
    }
    let bar = crate::progress::bar(
        progress,
        2 * n as u64 + 1,
        "ZCA fit {bar:30} {pos}/{len} [{elapsed}]",
    );
    let chunks = || (0..n.div_ceil(CHUNK)).map(|c| c * CHUNK..((c + 1) * CHUNK).min(n));
    let mut sum = vec![0f64; dim];
    for range in chunks() {
        let values = rows(range.clone());
        for (r, row) in values.chunks_exact(dim).enumerate() {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(ZcaError::NotFinite {
                    image: range.start + r,
                });
            }
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        bar.inc(range.len() as u64);
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let mut covariance = Mat::<f64>::zeros(dim, dim);
    for range in chunks() {
        let values = rows(range.clone());
        let centered = Mat::from_fn(range.len(), dim, |i, j| {
            f64::from(values[i * dim + j]) - mean[j]
        });
        matmul(
            covariance.as_mut(),
            Accum::Add,
            centered.transpose(),
            centered.as_ref(),
            1.0 / n as f64,
            Par::rayon(0),
        );
        bar.inc(range.len() as u64);
    }
    let eigen = covariance
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| ZcaError::NoConvergence)?;
    let (u, lambda) = (eigen.U(), eigen.S().column_vector());
    // `U·diag(1/sqrt(λ + ε))`, then times `Uᵀ`. Rounding can leave tiny negative λ: clamp.
    let scaled = Mat::from_fn(dim, dim, |i, j| {
        u[(i, j)] / (lambda[j].max(0.0) + f64::from(epsilon)).sqrt()
    });
    let mut whitening = Mat::<f64>::zeros(dim, dim);
    matmul(
        whitening.as_mut(),
        Accum::Replace,
        scaled.as_ref(),
        u.transpose(),
        1.0,
        Par::rayon(0),
    );
    bar.finish_and_clear();
    Ok(Zca {
        dim,
        mean: mean.iter().map(|&m| m as f32).collect(),
        matrix: (0..dim * dim)
            .map(|k| whitening[(k / dim, k % dim)] as f32)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correlated_rows(n: usize, dim: usize) -> Vec<f32> {
        let mut s = 7u64;
        let mut noise = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2000) as f32 / 1000.0 - 1.0
        };
        (0..n)
            .flat_map(|_| {
                let base = noise();
                (0..dim)
                    .map(|j| 0.5 + base * (j as f32 + 1.0) / dim as f32 + 0.2 * noise())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whitened training rows have zero mean and (up to ε) identity covariance, and `W` is
    /// symmetric (ZCA, not any whitening).
    #[test]
    fn whitened_rows_have_identity_covariance() {
        let (n, dim) = (3000, 12);
        let rows = correlated_rows(n, dim);
        let zca = Zca::fit_rows(&rows, dim, 1e-7).unwrap();
        let mut white = rows.clone();
        zca.apply(&mut white);
        for a in 0..dim {
            let mean: f64 = white.chunks(dim).map(|r| f64::from(r[a])).sum::<f64>() / n as f64;
            assert!(mean.abs() < 1e-4, "mean {mean}");
            for b in 0..dim {
                let cov: f64 = white
                    .chunks(dim)
                    .map(|r| f64::from(r[a]) * f64::from(r[b]))
                    .sum::<f64>()
                    / n as f64;
                let expected = if a == b { 1.0 } else { 0.0 };
                assert!((cov - expected).abs() < 1e-3, "cov[{a}][{b}] = {cov}");
                let (wab, wba) = (zca.matrix[a * dim + b], zca.matrix[b * dim + a]);
                assert!((wab - wba).abs() < 1e-5 * wab.abs().max(1.0));
            }
        }
    }

    /// Bad inputs give the matching errors.
    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(Zca::fit_rows(&[], 3, 0.1), Err(ZcaError::Empty)));
        assert!(matches!(
            Zca::fit_rows(&[1.0; 6], 3, 0.0),
            Err(ZcaError::Epsilon(_))
        ));
        let mut rows = vec![1.0; 9];
        rows[4] = f32::NAN;
        assert!(matches!(
            Zca::fit_rows(&rows, 3, 0.1),
            Err(ZcaError::NotFinite { image: 1 })
        ));
    }
}
