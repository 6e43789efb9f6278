//! MNIST in its original IDX format: `train-images-idx3-ubyte`,
//! `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`, each also accepted gzip-compressed (`.gz`).
//!
//! Image files: big-endian magic 2051, image count, rows (28), columns (28),
//! then the pixels row by row. Label files: magic 2049, count, one byte per
//! label (0..=9). The counts of a pair must match.
//!
//! ```no_run
//! use burn_qnn::data::mnist;
//!
//! let data = mnist::load("data/mnist", true)?;
//! let (train, valid) = data.train.split_validation(10_000);
//! # Ok::<(), burn_qnn::data::DataError>(())
//! ```

use std::path::{Path, PathBuf};

use super::download::{Checksum, DownloadPolicy, RemoteFile, ensure_files};
use super::{DataError, ImageDataset, ImageItem, ImageShape, TrainTest, files};

/// Shape of an MNIST image.
pub const SHAPE: ImageShape = ImageShape::new(1, 28, 28);
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// Magic number of an IDX file of unsigned bytes with 3 dimensions.
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of unsigned bytes with 1 dimension.
pub const LABELS_MAGIC: u32 = 2049;
/// Training images.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Training labels.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Test images.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Test labels.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
/// Official download location (torchvision's mirror of the original files).
pub const OFFICIAL_BASE_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist";
/// The `.gz` files and their MD5s (as listed by torchvision).
pub const GZ_MD5: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
];

/// Reads an image file and a label file into items.
///
/// Either file may be gzip-compressed. Sizes in errors count the
/// decompressed content.
pub fn read_pair(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
) -> Result<Vec<ImageItem>, DataError> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    let pixels = read_images(images)?;
    let labels_data = read_labels(labels)?;
    let count = pixels.len() / SHAPE.len();
    if labels_data.len() != count {
        return Err(DataError::wrong_dimensions(
            labels,
            format!("{count} labels (one per image of {})", images.display()),
            format!("{} labels", labels_data.len()),
        ));
    }
    Ok(pixels
        .chunks_exact(SHAPE.len())
        .zip(labels_data)
        .map(|(p, label)| ImageItem {
            pixels: p.to_vec(),
            label,
        })
        .collect())
}

/// Reads an IDX image file: all pixels, image after image.
fn read_images(path: &Path) -> Result<Vec<u8>, DataError> {
    let (_, body) = files::read_with_header(path, 16, |bytes| {
        let header = header(path, bytes, IMAGES_MAGIC)?;
        let (count, rows, cols) = (header[0], header[1], header[2]);
        if (rows, cols) != (28, 28) {
            return Err(DataError::wrong_dimensions(
                path,
                "images of 28×28",
                format!("images of {rows}×{cols}"),
            ));
        }
        non_empty(path, count, "images")?;
        Ok(u64::from(count) * 28 * 28)
    })?;
    Ok(body)
}

/// Reads an IDX label file.
fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let (_, body) = files::read_with_header(path, 8, |bytes| {
        let count = header(path, bytes, LABELS_MAGIC)?[0];
        non_empty(path, count, "labels")?;
        Ok(u64::from(count))
    })?;
    if let Some(index) = body.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
        return Err(DataError::label(
            path,
            f64::from(body[index]),
            index,
            "0..=9",
        ));
    }
    Ok(body)
}

/// Checks the magic number of the header `bytes` and returns the big-endian
/// `u32`s after it.
fn header(path: &Path, bytes: &[u8], magic: u32) -> Result<Vec<u32>, DataError> {
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    if words[0] != magic {
        return Err(DataError::bad_header(
            path,
            format!("magic number {}, expected {magic}", words[0]),
        ));
    }
    Ok(words[1..].to_vec())
}

/// An IDX file of no items is an error, not an empty data set.
fn non_empty(path: &Path, count: u32, what: &str) -> Result<(), DataError> {
    if count == 0 {
        return Err(DataError::wrong_dimensions(
            path,
            format!("at least one of the {what}"),
            format!("0 {what} (the header's count)"),
        ));
    }
    Ok(())
}

/// The path of `name` in `dir`, or of `name.gz`; `None` if neither exists.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    files::find_first(dir, &[name, &format!("{name}.gz")])
}

/// Reads MNIST from `dir` without downloading.
pub fn load_local(dir: impl AsRef<Path>) -> Result<TrainTest, DataError> {
    let dir = dir.as_ref();
    let names = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];
    let found = names.map(|n| find(dir, n));
    if found.iter().any(Option::is_none) {
        let missing: Vec<&str> = names
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(n, _)| *n)
            .collect();
        return Err(DataError::MissingFiles {
            path: dir.to_path_buf(),
            what: "MNIST".into(),
            hint: format!(
                "put the IDX files {} (plain or .gz) there, or allow download",
                missing.join(", ")
            ),
        });
    }
    let [train_images, train_labels, test_images, test_labels] =
        found.map(Option::unwrap_or_default);
    let train = read_pair(train_images, train_labels)?;
    let test = read_pair(test_images, test_labels)?;
    Ok(TrainTest {
        train: ImageDataset::new(train, SHAPE, NUM_CLASSES, 255),
        test: ImageDataset::new(test, SHAPE, NUM_CLASSES, 255),
    })
}

/// Reads MNIST from `dir`; if files are missing and `download` allows it
/// (`bool` or [`DownloadPolicy`]), first downloads the missing `.gz` files
/// (MD5-checked). The `.gz` files are read as they are, not unpacked.
pub fn load(
    dir: impl AsRef<Path>,
    download: impl Into<DownloadPolicy>,
) -> Result<TrainTest, DataError> {
    let dir = dir.as_ref();
    let policy = download.into();
    if let Some(base) = policy.base_url(OFFICIAL_BASE_URL) {
        let absent: Vec<RemoteFile> = remote_files(base)
            .into_iter()
            .filter(|f| {
                let plain = f.file_name.trim_end_matches(".gz");
                find(dir, plain).is_none()
            })
            .collect();
        ensure_files(dir, &absent, true)?;
    }
    load_local(dir)
}

/// The `.gz` files to download from `base_url`.
pub fn remote_files(base_url: &str) -> Vec<RemoteFile> {
    GZ_MD5
        .iter()
        .map(|(name, md5)| RemoteFile::at(base_url, name, Checksum::Md5((*md5).into())))
        .collect()
}
