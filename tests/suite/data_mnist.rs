//! MNIST IDX reader, plain and gzip-compressed.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use burn_qnn::data::{DataError, DownloadPolicy, mnist};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::data_support::{Reply, TestServer, dir_entries};

fn pixel(n: usize, i: usize) -> u8 {
    ((n * 31 + i * 3) % 256) as u8
}

fn images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [2051, count, rows, cols] {
        out.extend(word.to_be_bytes());
    }
    for n in 0..count as usize {
        out.extend((0..(rows * cols) as usize).map(|i| pixel(n, i)));
    }
    out
}

fn labels(values: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(2049u32.to_be_bytes());
    out.extend((values.len() as u32).to_be_bytes());
    out.extend(values);
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn reads_images_and_labels_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "i", &images(3, 28, 28));
    let l = write(dir.path(), "l", &labels(&[7, 0, 9]));
    let items = mnist::read_pair(&i, &l).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items.iter().map(|i| i.label).collect::<Vec<_>>(),
        vec![7, 0, 9]
    );
    for (n, item) in items.iter().enumerate() {
        assert_eq!(
            item.pixels,
            (0..784).map(|i| pixel(n, i)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn loads_plain_and_gz_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "train-images-idx3-ubyte.gz",
        &gz(&images(2, 28, 28)),
    );
    write(dir.path(), "train-labels-idx1-ubyte", &labels(&[4, 5]));
    write(dir.path(), "t10k-images-idx3-ubyte", &images(1, 28, 28));
    write(dir.path(), "t10k-labels-idx1-ubyte.gz", &gz(&labels(&[3])));
    let data = mnist::load(dir.path(), false).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (2, 1));
    assert_eq!(data.train.shape(), mnist::SHAPE);
    assert_eq!(data.train.get(1).unwrap().label, 5);
    assert_eq!(data.train.get(1).unwrap().pixels[10], pixel(1, 10));
    assert_eq!(data.test.get(0).unwrap().label, 3);
}

#[test]
fn wrong_magic_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "i", &images(1, 28, 28));
    // An image file where the labels should be.
    let l = write(dir.path(), "l", &images(1, 28, 28));
    let error = mnist::read_pair(&i, &l).unwrap_err();
    match &error {
        DataError::BadHeader { path, detail } => {
            assert_eq!(path, &l);
            assert!(
                detail.contains("2051") && detail.contains("2049"),
                "{detail}"
            );
        }
        other => panic!("expected bad header, got {other:?}"),
    }
}

#[test]
fn truncated_and_oversized_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let l = write(dir.path(), "l", &labels(&[1, 2]));
    let mut short = images(2, 28, 28);
    short.truncate(16 + 784 + 100);
    let i = write(dir.path(), "i", &short);
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::Truncated { path, expected: 1584, got: 900 } if path == &i),
        "{error:?}"
    );

    let i = write(dir.path(), "i", &images(2, 28, 28)[..10]);
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(matches!(
        error,
        DataError::Truncated {
            expected: 16,
            got: 10,
            ..
        }
    ));

    let mut long = images(2, 28, 28);
    long.push(0);
    let i = write(dir.path(), "i", &long);
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &i),
        "{error:?}"
    );
}

#[test]
fn wrong_dimensions_and_counts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let l = write(dir.path(), "l", &labels(&[1]));
    let i = write(dir.path(), "i", &images(1, 28, 27));
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::WrongDimensions { path, found, .. } if path == &i && found.contains("28×27")),
        "{error:?}"
    );

    let i = write(dir.path(), "i", &images(2, 28, 28));
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::WrongDimensions { path, expected, found } if path == &l && expected.contains("2 labels") && found == "1 labels"),
        "{error:?}"
    );
}

#[test]
fn label_above_nine_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "i", &images(3, 28, 28));
    let l = write(dir.path(), "l", &labels(&[1, 2, 12]));
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::LabelOutOfRange { path, value, index: 2, .. } if path == &l && *value == 12.0),
        "{error:?}"
    );
}

#[test]
fn broken_gzip_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = gz(&images(2, 28, 28));
    data.truncate(data.len() / 2);
    let i = write(dir.path(), "i.gz", &data);
    let l = write(dir.path(), "l", &labels(&[1, 2]));
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &i),
        "{error:?}"
    );
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train-images-idx3-ubyte", &images(1, 28, 28));
    let error = mnist::load(dir.path(), false).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DataError::MissingFiles { .. }));
    assert!(message.contains("MNIST not found"));
    assert!(message.contains("t10k-labels-idx1-ubyte"));
    assert!(!message.contains("train-images-idx3-ubyte "), "{message}");
}

#[test]
fn download_requests_only_missing_files_and_checks_md5() {
    let server = TestServer::start(vec![(
        "/t10k-labels-idx1-ubyte.gz",
        Reply::Ok(gz(&labels(&[1]))),
    )]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train-images-idx3-ubyte", &images(1, 28, 28));
    write(dir.path(), "train-labels-idx1-ubyte.gz", &gz(&labels(&[1])));
    write(dir.path(), "t10k-images-idx3-ubyte", &images(1, 28, 28));
    let error = mnist::load(dir.path(), DownloadPolicy::Mirror(server.base_url())).unwrap_err();
    assert!(
        matches!(&error, DataError::ChecksumMismatch { path, .. } if path == &dir.path().join("t10k-labels-idx1-ubyte.gz")),
        "{error:?}"
    );
    assert_eq!(server.requests(), vec!["/t10k-labels-idx1-ubyte.gz"]);
    assert_eq!(dir_entries(dir.path()).len(), 3);

    // With all four present nothing is requested.
    write(dir.path(), "t10k-labels-idx1-ubyte", &labels(&[1]));
    mnist::load(dir.path(), DownloadPolicy::Mirror(server.base_url())).unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn remote_files_point_to_the_torchvision_mirror() {
    let files = mnist::remote_files(mnist::OFFICIAL_BASE_URL);
    assert_eq!(files.len(), 4);
    assert_eq!(
        files[0].url,
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    );
}

/// Files of no images or no labels are errors naming the file, not an empty data set; plain
/// or compressed.
#[test]
fn empty_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (i, l) = (images(0, 28, 28), labels(&[]));
    for (images_file, labels_file) in [(i.clone(), l.clone()), (gz(&i), gz(&l))] {
        let i = write(dir.path(), "i", &images_file);
        let l = write(dir.path(), "l", &labels_file);
        let error = mnist::read_pair(&i, &l).unwrap_err();
        assert!(
            matches!(&error, DataError::WrongDimensions { path, found, .. } if path == &i && found.starts_with("0 images")),
            "{error:?}"
        );
        let ok = write(dir.path(), "ok", &images(1, 28, 28));
        let error = mnist::read_pair(&ok, &l).unwrap_err();
        assert!(
            matches!(&error, DataError::WrongDimensions { path, found, .. } if path == &l && found.starts_with("0 labels")),
            "{error:?}"
        );
    }
}

/// A compressed file whose header promises more than its size can inflate to is rejected on
/// the header, naming the file; one whose stream goes on past the promise is rejected too.
#[test]
fn gzip_streams_are_bounded_by_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let l = write(dir.path(), "l", &labels(&[1]));
    // 4 billion images promised by a file of a few dozen bytes.
    let header: Vec<u8> = [2051u32, 4_000_000_000, 28, 28]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    let i = write(dir.path(), "i.gz", &gz(&header));
    let error = mnist::read_pair(&i, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, detail } if path == &i && detail.contains("can hold")),
        "{error:?}"
    );
    let mut long = labels(&[1]);
    long.extend([0; 100_000]);
    let l = write(dir.path(), "l.gz", &gz(&long));
    let one = write(dir.path(), "one", &images(1, 28, 28));
    let error = mnist::read_pair(&one, &l).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &l),
        "{error:?}"
    );
}
