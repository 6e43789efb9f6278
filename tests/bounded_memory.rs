//! The readers' memory is bounded by what a file's header promises and what the file can hold:
//! files built to make a reader allocate gigabytes (a small gzip stream inflating far past its
//! header's promise, a sparse file far longer than its header says, labels far more than the
//! images) are rejected with a typed error after a few megabytes at most.
//!
//! A binary of its own: it counts every allocation (a global allocator), and its tests run one at
//! a time.

#![cfg(feature = "data")]

mod common;

use std::io::Write;

use burn_qnn::data::{DataError, cifar10, mnist, svhn};
use common::counting_alloc::peak_of;
use common::files::write;
use common::mat::{MI_DOUBLE, MI_UINT8, MX_DOUBLE, MX_UINT8, compressed, header, matrix};
use flate2::Compression;
use flate2::write::GzEncoder;

/// What every rejection here may take: a few buffers, nothing like the gigabytes asked for.
const BOUND: usize = 8 << 20;

fn idx_labels_header(count: u32) -> Vec<u8> {
    [2049u32, count]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

fn one_image() -> Vec<u8> {
    let mut out: Vec<u8> = [2051u32, 1, 28, 28]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    out.resize(16 + 784, 7);
    out
}

/// A 1 MB gzip file promising one label and inflating to 1 GiB: 1,024 gzip members of
/// 1 MiB of zeros each after the header's member (a gzip file may hold several).
#[test]
fn gzip_bomb_is_rejected_after_the_promised_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = Vec::new();
    let mut first = GzEncoder::new(Vec::new(), Compression::fast());
    first.write_all(&idx_labels_header(1)).unwrap();
    first.write_all(&[3]).unwrap();
    file.extend(first.finish().unwrap());
    let mut zeros = GzEncoder::new(Vec::new(), Compression::best());
    zeros.write_all(&vec![0u8; 1 << 20]).unwrap();
    let zeros = zeros.finish().unwrap();
    for _ in 0..1024 {
        file.extend(&zeros);
    }
    let labels = write(dir.path(), "labels.gz", &file);
    drop(file);
    let images = write(dir.path(), "images", &one_image());
    let (result, peak) = peak_of(|| mnist::read_pair(&images, &labels));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &labels),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}

/// A plain IDX file 2 GiB long (sparse) whose header promises one label is rejected on its
/// length, before it is read.
#[test]
fn long_plain_idx_file_is_rejected_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write(dir.path(), "labels", &idx_labels_header(1));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&labels)
        .unwrap()
        .set_len(1 << 31)
        .unwrap();
    let images = write(dir.path(), "images", &one_image());
    let (result, peak) = peak_of(|| mnist::read_pair(&images, &labels));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &labels),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}

/// A CIFAR-10 batch 2 GiB long (sparse), not a whole number of records, is rejected on its
/// length, before it is read.
#[test]
fn long_cifar10_batch_is_rejected_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "data_batch_1.bin", &[]);
    let len = cifar10::RECORD_BYTES as u64 * 700_000 + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    let (result, peak) = peak_of(|| cifar10::read_batch(&path));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::Truncated { path: p, got, .. } if p == &path && *got == len),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}

/// Labels of an SVHN file compressed to a few kilobytes but holding 32 MB of doubles (four
/// million labels for two images) are rejected on their dimensions, not inflated and converted.
#[test]
fn svhn_labels_are_bounded_by_the_images_before_inflating() {
    let mut file = header();
    file.extend(compressed(&matrix(
        "X",
        MX_UINT8,
        &[32, 32, 3, 2],
        MI_UINT8,
        &[5; 6144],
    )));
    let labels = 4_000_000;
    let y: Vec<u8> = std::iter::repeat_n(1.0f64.to_le_bytes(), labels)
        .flatten()
        .collect();
    file.extend(compressed(&matrix(
        "y",
        MX_DOUBLE,
        &[labels as u32, 1],
        MI_DOUBLE,
        &y,
    )));
    drop(y);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "train_32x32.mat", &file);
    drop(file);
    let (result, peak) = peak_of(|| svhn::read_file(&path));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::WrongDimensions { path: p, .. } if p == &path),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}
