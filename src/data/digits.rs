//! scikit-learn's 8×8 handwritten digits (1,797 images, UCI "Optical
//! Recognition of Handwritten Digits" test set), shipped with this crate.
//!
//! The file `data/digits.csv.gz` comes unchanged from the scikit-learn wheel
//! (BSD-3-Clause; see `data/LICENSE-digits.txt` for its origin, licence and
//! citation). Each CSV line holds 64 pixel values (0..=16, row by row) and
//! the label (0..=9). Images are 1×8×8 with a maximum value of 16. Bad
//! rows are reported as [`DataError::BadRow`] with their line number; a bad
//! label as [`DataError::LabelOutOfRange`] with the sample's index (its line
//! number minus one when the file has no blank lines).
//!
//! ```
//! use burn_qnn::data::digits;
//!
//! let all = digits::load_bundled()?;
//! assert_eq!(all.len(), 1797);
//! let split = digits::train_test_split(all, 0.2, 42);
//! assert_eq!((split.train.len(), split.test.len()), (1438, 359));
//! # Ok::<(), burn_qnn::data::DataError>(())
//! ```

use std::path::Path;

use super::{DataError, ImageDataset, ImageItem, ImageShape, TrainTest, files};

/// Shape of a digit image.
pub const SHAPE: ImageShape = ImageShape::new(1, 8, 8);
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// Largest pixel value.
pub const MAX_VALUE: u8 = 16;
/// Number of images in the bundled file.
pub const BUNDLED_LEN: usize = 1797;

/// The bundled file, gzip-compressed CSV.
const BUNDLED: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz"));

/// The name errors about the bundled file carry.
const BUNDLED_NAME: &str = "data/digits.csv.gz (bundled)";

/// Reads the digits from a CSV file, gzip-compressed or not.
pub fn read_file(path: impl AsRef<Path>) -> Result<ImageDataset, DataError> {
    let path = path.as_ref();
    let bytes = files::read_maybe_gzip(path)?;
    parse(path, &bytes)
}

/// The digits shipped with the crate.
pub fn load_bundled() -> Result<ImageDataset, DataError> {
    let path = Path::new(BUNDLED_NAME);
    parse(path, &files::gunzip(path, BUNDLED)?)
}

/// Shuffles `data` with `seed` and splits off a test set of
/// `test_fraction` (rounded to the nearest count) of the images.
///
/// # Panics
///
/// If `test_fraction` is not within `0.0..=1.0`.
pub fn train_test_split(data: ImageDataset, test_fraction: f64, seed: u64) -> TrainTest {
    let (train, test) = data.shuffled(seed).split_validation_fraction(test_fraction);
    TrainTest { train, test }
}

/// Parses CSV text; errors name `path` and the line.
fn parse(path: &Path, bytes: &[u8]) -> Result<ImageDataset, DataError> {
    let bad = |line: usize, detail: String| DataError::BadRow {
        path: path.to_path_buf(),
        line,
        detail,
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DataError::malformed(path, format!("not UTF-8 text: {e}")))?;
    let mut items = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != SHAPE.len() + 1 {
            return Err(bad(
                number,
                format!(
                    "{} fields, expected {} (64 pixels and the label)",
                    fields.len(),
                    SHAPE.len() + 1
                ),
            ));
        }
        let mut values = Vec::with_capacity(fields.len());
        for (column, field) in fields.iter().enumerate() {
            let value = parse_integer(field).ok_or_else(|| {
                bad(
                    number,
                    format!("field {}: {field:?} is not an integer", column + 1),
                )
            })?;
            values.push(value);
        }
        let label = values.pop().unwrap_or_default();
        if let Some(column) = values
            .iter()
            .position(|v| !(0..=i64::from(MAX_VALUE)).contains(v))
        {
            return Err(bad(
                number,
                format!("pixel {} is {}, allowed 0..=16", column + 1, values[column]),
            ));
        }
        if !(0..NUM_CLASSES as i64).contains(&label) {
            return Err(DataError::label(path, label as f64, items.len(), "0..=9"));
        }
        items.push(ImageItem {
            pixels: values.into_iter().map(|v| v as u8).collect(),
            label: label as u8,
        });
    }
    if items.is_empty() {
        return Err(DataError::malformed(path, "no rows"));
    }
    Ok(ImageDataset::new(items, SHAPE, NUM_CLASSES, MAX_VALUE))
}

/// An integer written as `7` or `7.0`.
fn parse_integer(field: &str) -> Option<i64> {
    field.parse::<i64>().ok().or_else(|| {
        let value: f64 = field.parse().ok()?;
        (value.fract() == 0.0 && value.abs() < 1e9).then_some(value as i64)
    })
}
