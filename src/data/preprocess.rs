//! Pixel preprocessing as in the BNN/QNN papers: scale to [−1, 1] by the
//! data set's maximum value, optionally followed by global contrast
//! normalisation per image.

use super::ImageDataset;

/// How pixel bytes become network inputs.
///
/// ```
/// use burn_qnn::data::Preprocess;
///
/// let mut out = Vec::new();
/// Preprocess::scale(16).apply(&[0, 16, 8, 12], &mut out);
/// assert_eq!(out, vec![-1.0, 1.0, 0.0, 0.5]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// The pixel value mapped to 1 (0 maps to −1).
    pub max_value: f32,
    /// Global contrast normalisation after scaling: `Some(eps)` makes every
    /// image zero-mean and divides it by its standard deviation plus `eps`.
    /// The result is no longer bounded by [−1, 1].
    pub contrast_normalization: Option<f32>,
}

impl Preprocess {
    /// Scaling only, for pixel values `0..=max_value`.
    pub fn scale(max_value: u8) -> Self {
        Self {
            max_value: f32::from(max_value.max(1)),
            contrast_normalization: None,
        }
    }

    /// Scaling for the maximum value of `data` (255, or 16 for the digits).
    pub fn for_dataset(data: &ImageDataset) -> Self {
        Self::scale(data.max_value())
    }

    /// Adds global contrast normalisation with `eps` added to the standard
    /// deviation (e.g. `1e-8`; larger values damp nearly flat images).
    pub fn with_contrast_normalization(self, eps: f32) -> Self {
        Self {
            contrast_normalization: Some(eps),
            ..self
        }
    }

    /// Appends the preprocessed values of one image's `pixels` to `out`.
    pub fn apply(&self, pixels: &[u8], out: &mut Vec<f32>) {
        let start = out.len();
        scale_to_unit_range(pixels, self.max_value, out);
        if let Some(eps) = self.contrast_normalization {
            global_contrast_normalize(&mut out[start..], eps);
        }
    }
}

/// Appends `pixels` mapped linearly from `0..=max_value` to `-1..=1`.
pub fn scale_to_unit_range(pixels: &[u8], max_value: f32, out: &mut Vec<f32>) {
    let factor = 2.0 / max_value;
    out.extend(pixels.iter().map(|&p| f32::from(p) * factor - 1.0));
}

/// Makes `values` (one image) zero-mean and divides them by their standard
/// deviation plus `eps`. A constant image becomes all zeros.
pub fn global_contrast_normalize(values: &mut [f32], eps: f32) {
    if values.is_empty() {
        return;
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = 1.0 / (variance.sqrt() + f64::from(eps));
    let scale = if scale.is_finite() { scale } else { 0.0 };
    for v in values {
        *v = ((f64::from(*v) - mean) * scale) as f32;
    }
}
