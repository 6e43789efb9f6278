//! SVHN, format 2 (cropped 32×32 digits): `train_32x32.mat`,
//! `test_32x32.mat` and the optional `extra_32x32.mat`.
//!
//! Each file is a level-5 MAT-file with two variables: `X`, a `uint8` array
//! of 32×32×3×N (row, column, channel, image; MATLAB's column-major order)
//! and `y`, N×1 labels `1..=10` where 10 stands for the digit 0 (stored as
//! `double` in the official files; `uint8` is accepted too). Labels are
//! mapped to `0..=9` (10 → 0).
//!
//! Reading a file holds its `X` array and the converted images at once, so
//! the peak memory is about twice the raw pixel data: ~0.45 GB for the
//! training set, ~3.3 GB when the extra set is included.
//!
//! ```no_run
//! use burn_qnn::data::svhn::{self, Extra};
//!
//! let data = svhn::load("data/svhn", Extra::Include, true)?;
//! println!("{} training images", data.train.len());
//! # Ok::<(), burn_qnn::data::DataError>(())
//! ```

use std::path::Path;

use super::download::{Checksum, DownloadPolicy, RemoteFile, ensure_files};
use super::mat::{self, MatData, format_dims};
use super::{DataError, ImageDataset, ImageItem, ImageShape, TrainTest};

/// Shape of an SVHN image.
pub const SHAPE: ImageShape = ImageShape::new(3, 32, 32);
/// Number of classes (digits 0..=9).
pub const NUM_CLASSES: usize = 10;
/// The training file.
pub const TRAIN_FILE: &str = "train_32x32.mat";
/// The test file.
pub const TEST_FILE: &str = "test_32x32.mat";
/// The extra training file.
pub const EXTRA_FILE: &str = "extra_32x32.mat";
/// Official download location (base address).
pub const OFFICIAL_BASE_URL: &str = "http://ufldl.stanford.edu/housenumbers";
/// MD5 of `train_32x32.mat` (as listed by torchvision).
pub const TRAIN_MD5: &str = "e26dedcc434d2e4c54c9b2d4a06d8373";
/// MD5 of `test_32x32.mat` (as listed by torchvision).
pub const TEST_MD5: &str = "eb5a983be6a315427106f1b164d9cef3";
/// MD5 of `extra_32x32.mat` (as listed by torchvision).
pub const EXTRA_MD5: &str = "a93ce644f1a588dc4d68dda5feec44a7";

/// Whether to add the 531,131 "extra" images to the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Extra {
    /// Training set = `train_32x32.mat` only.
    #[default]
    Exclude,
    /// Training set = `train_32x32.mat` followed by `extra_32x32.mat`.
    Include,
}

/// Reads one SVHN file (`X` and `y`).
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<ImageItem>, DataError> {
    let path = path.as_ref();
    // y holds one label per image of X: once X is read, y's dimensions bound it before its
    // data is read (or inflated and converted).
    let bound = |name: &str, seen: &[mat::MatVariable]| {
        let x = seen.iter().find(|v| v.name == "X")?;
        let count = image_count(&x.dims)?;
        (name == "y").then(|| (count, format!("y of {count}×1 (one label per image of X)")))
    };
    let mut variables = mat::read_variables(path, &["X", "y"], &bound)?;
    let take = |variables: &mut Vec<mat::MatVariable>, name: &str| {
        variables
            .iter()
            .position(|v| v.name == name)
            .map(|i| variables.swap_remove(i))
            .ok_or_else(|| DataError::malformed(path, format!("no variable {name}")))
    };
    let x = take(&mut variables, "X")?;
    let y = take(&mut variables, "y")?;

    let Some(count) = image_count(&x.dims) else {
        return Err(DataError::wrong_dimensions(
            path,
            "X of 32×32×3×N",
            format!("X of {}", format_dims(&x.dims)),
        ));
    };
    if count == 0 {
        return Err(DataError::wrong_dimensions(
            path,
            "X of 32×32×3×N with at least one image",
            format!("X of {}", format_dims(&x.dims)),
        ));
    }
    let MatData::UInt8(pixels) = x.data else {
        return Err(DataError::malformed(
            path,
            format!("X is a {} array, expected uint8", mat::class_name(x.class)),
        ));
    };
    let column = y.dims.len() == 2 && (y.dims[1] == 1 || y.dims[0] == 1);
    if !column || y.data.len() != count {
        return Err(DataError::wrong_dimensions(
            path,
            format!("y of {count}×1 (one label per image of X)"),
            format!("y of {}", format_dims(&y.dims)),
        ));
    }

    let plane = 32 * 32;
    let mut items = Vec::with_capacity(count);
    for (index, image) in pixels.chunks_exact(3 * plane).enumerate() {
        let value = y.data.value(index);
        if !(value.fract() == 0.0 && (1.0..=10.0).contains(&value)) {
            return Err(DataError::label(path, value, index, "1..=10"));
        }
        // Column-major (row, col, channel) → channel-major (channel, row, col).
        let mut chw = vec![0u8; 3 * plane];
        for channel in 0..3 {
            for col in 0..32 {
                let source = &image[channel * plane + col * 32..][..32];
                for (row, &p) in source.iter().enumerate() {
                    chw[channel * plane + row * 32 + col] = p;
                }
            }
        }
        items.push(ImageItem {
            pixels: chw,
            label: (value as u8) % 10,
        });
    }
    Ok(items)
}

/// Reads SVHN from `dir` without downloading.
pub fn load_local(dir: impl AsRef<Path>, extra: Extra) -> Result<TrainTest, DataError> {
    let dir = dir.as_ref();
    let missing: Vec<&str> = file_names(extra)
        .filter(|n| !dir.join(n).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::MissingFiles {
            path: dir.to_path_buf(),
            what: "SVHN".into(),
            hint: format!(
                "put the official format-2 files {} there (from {OFFICIAL_BASE_URL}/), \
                 or allow download",
                missing.join(", ")
            ),
        });
    }
    let mut train = read_file(dir.join(TRAIN_FILE))?;
    if extra == Extra::Include {
        train.extend(read_file(dir.join(EXTRA_FILE))?);
    }
    let test = read_file(dir.join(TEST_FILE))?;
    Ok(TrainTest {
        train: ImageDataset::new(train, SHAPE, NUM_CLASSES, 255),
        test: ImageDataset::new(test, SHAPE, NUM_CLASSES, 255),
    })
}

/// Reads SVHN from `dir`, first downloading missing files (MD5-checked) if
/// `download` allows it (`bool` or [`DownloadPolicy`]).
pub fn load(
    dir: impl AsRef<Path>,
    extra: Extra,
    download: impl Into<DownloadPolicy>,
) -> Result<TrainTest, DataError> {
    let dir = dir.as_ref();
    let policy = download.into();
    if let Some(base) = policy.base_url(OFFICIAL_BASE_URL) {
        ensure_files(dir, &remote_files(base, extra), true)?;
    }
    load_local(dir, extra)
}

/// The files to download from `base_url`.
pub fn remote_files(base_url: &str, extra: Extra) -> Vec<RemoteFile> {
    [
        (TRAIN_FILE, TRAIN_MD5),
        (TEST_FILE, TEST_MD5),
        (EXTRA_FILE, EXTRA_MD5),
    ]
    .into_iter()
    .filter(|(name, _)| extra == Extra::Include || *name != EXTRA_FILE)
    .map(|(name, md5)| RemoteFile::at(base_url, name, Checksum::Md5(md5.into())))
    .collect()
}

/// The file names needed.
fn file_names(extra: Extra) -> impl Iterator<Item = &'static str> {
    [TRAIN_FILE, TEST_FILE]
        .into_iter()
        .chain((extra == Extra::Include).then_some(EXTRA_FILE))
}

/// The number of images of an `X` of dimensions `dims` (32×32×3×N); `None` for other
/// dimensions.
fn image_count(dims: &[usize]) -> Option<usize> {
    match dims {
        [32, 32, 3, n] => Some(*n),
        // MATLAB drops trailing singleton dimensions.
        [32, 32, 3] => Some(1),
        _ => None,
    }
}
