//! SVHN reader on real level-5 MAT-files written here, compressed and not.

use std::io::Write;
use std::path::Path;

use burn::data::dataset::Dataset;
use burn_qnn::data::svhn::{self, Extra};
use burn_qnn::data::{DataError, DownloadPolicy};
use flate2::Compression;
use flate2::write::ZlibEncoder;

use crate::data_support::{Reply, TestServer, dir_entries};
use crate::mat_format::*;

/// The test value of pixel (row, col, channel) of image `n`: all four
/// indices matter, and swapping row and column changes it.
fn value(row: usize, col: usize, channel: usize, n: usize) -> u8 {
    ((row * 7 + col * 13 + channel * 61 + n * 101) % 256) as u8
}

/// `X` as MATLAB stores it: column-major 32×32×3×N.
fn x_column_major(count: usize) -> Vec<u8> {
    let mut x = vec![0u8; 32 * 32 * 3 * count];
    for n in 0..count {
        for channel in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    x[row + 32 * col + 1024 * channel + 3072 * n] = value(row, col, channel, n);
                }
            }
        }
    }
    x
}

/// What the reader must return for image `n`: channel-major C×H×W.
fn expected_pixels(n: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(3072);
    for channel in 0..3 {
        for row in 0..32 {
            for col in 0..32 {
                p.push(value(row, col, channel, n));
            }
        }
    }
    p
}

/// `y` as an N×1 double array.
fn y_double(labels: &[f64]) -> Vec<u8> {
    let data: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    matrix("y", MX_DOUBLE, &[labels.len() as u32, 1], MI_DOUBLE, &data)
}

/// `X` as a uint8 32×32×3×N array.
fn x_uint8(count: usize) -> Vec<u8> {
    matrix(
        "X",
        MX_UINT8,
        &[32, 32, 3, count as u32],
        MI_UINT8,
        &x_column_major(count),
    )
}

/// A whole SVHN file with `labels.len()` images, every variable compressed.
fn svhn_file(labels: &[f64]) -> Vec<u8> {
    let mut file = header();
    file.extend(compressed(&x_uint8(labels.len())));
    file.extend(compressed(&y_double(labels)));
    file
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn reads_compressed_file_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "train_32x32.mat",
        &svhn_file(&[10.0, 1.0, 5.0, 9.0]),
    );
    let items = svhn::read_file(&path).unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(
        items.iter().map(|i| i.label).collect::<Vec<_>>(),
        vec![0, 1, 5, 9]
    );
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item.pixels, expected_pixels(n), "image {n}");
    }
    // Spot check: row 1, column 2 of the green plane of image 3.
    assert_eq!(items[3].pixels[1024 + 32 + 2], value(1, 2, 1, 3));
}

#[test]
fn reads_uncompressed_file_and_other_label_storage() {
    let dir = tempfile::tempdir().unwrap();
    // y of class uint8, then y of class double stored as miUINT8 (what
    // MATLAB does for small integers); an unrelated variable in between.
    for y in [
        matrix("y", MX_UINT8, &[2, 1], MI_UINT8, &[10, 3]),
        matrix("y", MX_DOUBLE, &[2, 1], MI_UINT8, &[10, 3]),
    ] {
        let mut file = header();
        file.extend(x_uint8(2));
        file.extend(compressed(&matrix(
            "other_name",
            MX_DOUBLE,
            &[1, 1],
            MI_DOUBLE,
            &1.5f64.to_le_bytes(),
        )));
        file.extend(y);
        let path = write(dir.path(), "test_32x32.mat", &file);
        let items = svhn::read_file(&path).unwrap();
        assert_eq!(
            items.iter().map(|i| i.label).collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert_eq!(items[1].pixels, expected_pixels(1));
    }
}

#[test]
fn loads_train_test_and_extra() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), svhn::TRAIN_FILE, &svhn_file(&[1.0, 2.0]));
    write(dir.path(), svhn::TEST_FILE, &svhn_file(&[3.0]));
    let data = svhn::load(dir.path(), Extra::Exclude, false).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (2, 1));
    assert_eq!(data.train.shape(), svhn::SHAPE);

    let error = svhn::load(dir.path(), Extra::Include, false).unwrap_err();
    assert!(error.to_string().contains("extra_32x32.mat"), "{error}");

    write(dir.path(), svhn::EXTRA_FILE, &svhn_file(&[4.0, 10.0, 6.0]));
    let data = svhn::load(dir.path(), Extra::Include, false).unwrap();
    let labels: Vec<u8> = data.train.iter().map(|i| i.label).collect();
    assert_eq!(labels, vec![1, 2, 4, 0, 6]);
    assert_eq!(data.train.get(3).unwrap().pixels, expected_pixels(1));
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = svhn::load(dir.path(), Extra::Exclude, false).unwrap_err();
    let DataError::MissingFiles { path, what, hint } = &error else {
        panic!("expected missing files, got {error:?}");
    };
    assert_eq!(path, dir.path());
    assert_eq!(what, "SVHN");
    assert!(hint.contains("train_32x32.mat") && hint.contains("test_32x32.mat"));
}

#[test]
fn wrong_header_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = svhn_file(&[1.0]);
    file[126..128].copy_from_slice(b"XX");
    let path = write(dir.path(), "a.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::BadHeader { path: p, .. } if p == &path),
        "{error:?}"
    );

    let mut file = svhn_file(&[1.0]);
    file[..10].copy_from_slice(b"MATLAB 7.3");
    let path = write(dir.path(), "b.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::BadHeader { detail, .. } if detail.contains("7.3")),
        "{error:?}"
    );

    let path = write(dir.path(), "c.mat", b"short");
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::Truncated {
                expected: 128,
                got: 5,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let full = svhn_file(&[1.0, 2.0, 3.0]);
    let cut = full.len() - 40;
    let path = write(dir.path(), "train_32x32.mat", &full[..cut]);
    let error = svhn::read_file(&path).unwrap_err();
    match error {
        DataError::Truncated {
            path: p,
            expected,
            got,
        } => {
            assert_eq!(p, path);
            assert_eq!((expected, got), (full.len() as u64, cut as u64));
        }
        other => panic!("expected truncated, got {other:?}"),
    }
}

#[test]
fn corrupt_compressed_data_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = svhn_file(&[1.0, 2.0]);
    // Garble bytes inside X's zlib stream (header 128 + tag 8 + 2 bytes of
    // zlib header = 138).
    assert!(compressed(&x_uint8(2)).len() > 200);
    for b in &mut file[160..180] {
        *b ^= 0x5A;
    }
    let path = write(dir.path(), "train_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path: p, .. } if p == &path),
        "{error:?}"
    );
}

#[test]
fn wrong_zlib_checksum_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = svhn_file(&[1.0, 2.0]);
    // The last 4 bytes of X's zlib stream are its Adler-32 checksum.
    let x_end = 128 + compressed(&x_uint8(2)).len();
    file[x_end - 1] ^= 0x01;
    let path = write(dir.path(), "train_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path: p, .. } if p == &path),
        "{error:?}"
    );
}

#[test]
fn wrong_dimensions_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // Grey images instead of RGB.
        matrix("X", MX_UINT8, &[32, 32, 1, 2], MI_UINT8, &[7; 2048]),
        // 28×28 instead of 32×32.
        matrix("X", MX_UINT8, &[28, 28, 3, 1], MI_UINT8, &[7; 2352]),
    ];
    for x in cases {
        let mut file = header();
        file.extend(compressed(&x));
        file.extend(compressed(&y_double(&[1.0, 2.0])));
        let path = write(dir.path(), "train_32x32.mat", &file);
        let error = svhn::read_file(&path).unwrap_err();
        assert!(
            matches!(&error, DataError::WrongDimensions { path: p, expected, .. } if p == &path && expected.contains("32×32×3×N")),
            "{error:?}"
        );
    }

    // Three labels for two images.
    let mut file = header();
    file.extend(compressed(&x_uint8(2)));
    file.extend(compressed(&y_double(&[1.0, 2.0, 3.0])));
    let path = write(dir.path(), "test_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::WrongDimensions { found, .. } if found == "y of 3×1"),
        "{error:?}"
    );
}

#[test]
fn labels_outside_one_to_ten_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (labels, bad_index, bad_value) in [
        (vec![1.0, 0.0], 1, 0.0),
        (vec![11.0, 1.0], 0, 11.0),
        (vec![1.0, 2.0, 2.5], 2, 2.5),
    ] {
        let path = write(dir.path(), "train_32x32.mat", &svhn_file(&labels));
        match svhn::read_file(&path).unwrap_err() {
            DataError::LabelOutOfRange {
                path: p,
                value,
                index,
                allowed,
            } => {
                assert_eq!(p, path);
                assert_eq!((value, index, allowed), (bad_value, bad_index, "1..=10"));
            }
            other => panic!("expected label error, got {other:?}"),
        }
    }
}

#[test]
fn missing_or_mistyped_variables_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = header();
    file.extend(compressed(&x_uint8(1)));
    let path = write(dir.path(), "train_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { detail, .. } if detail.contains("no variable y")),
        "{error:?}"
    );

    // X as double.
    let x: Vec<u8> = x_column_major(1)
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect();
    let mut file = header();
    file.extend(compressed(&matrix(
        "X",
        MX_DOUBLE,
        &[32, 32, 3, 1],
        MI_DOUBLE,
        &x,
    )));
    file.extend(compressed(&y_double(&[1.0])));
    let path = write(dir.path(), "train_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { detail, .. } if detail.contains("double")),
        "{error:?}"
    );

    // Data shorter than the dimensions need.
    let mut file = header();
    file.extend(compressed(&matrix(
        "X",
        MX_UINT8,
        &[32, 32, 3, 2],
        MI_UINT8,
        &[0; 3072],
    )));
    file.extend(compressed(&y_double(&[1.0, 1.0])));
    let path = write(dir.path(), "train_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(matches!(&error, DataError::Malformed { .. }), "{error:?}");
}

#[test]
fn download_checks_md5_and_skips_present_files() {
    let server = TestServer::start(vec![
        ("/train_32x32.mat", Reply::Ok(svhn_file(&[1.0]))),
        ("/test_32x32.mat", Reply::Ok(svhn_file(&[2.0]))),
    ]);
    let policy = DownloadPolicy::Mirror(server.base_url());

    // Missing files: downloaded, but they are not the official ones.
    let dir = tempfile::tempdir().unwrap();
    let error = svhn::load(dir.path(), Extra::Exclude, policy.clone()).unwrap_err();
    assert!(
        matches!(&error, DataError::ChecksumMismatch { path, .. } if path == &dir.path().join("train_32x32.mat")),
        "{error:?}"
    );
    assert!(dir_entries(dir.path()).is_empty());

    // Present files: used as they are, nothing requested.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), svhn::TRAIN_FILE, &svhn_file(&[1.0, 2.0]));
    write(dir.path(), svhn::TEST_FILE, &svhn_file(&[3.0]));
    let requests_before = server.requests().len();
    let data = svhn::load(dir.path(), Extra::Exclude, policy).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (2, 1));
    assert_eq!(server.requests().len(), requests_before);
}

#[test]
fn remote_files_use_the_official_names_and_md5s() {
    let files = svhn::remote_files(svhn::OFFICIAL_BASE_URL, Extra::Include);
    let urls: Vec<&str> = files.iter().map(|f| f.url.as_str()).collect();
    assert_eq!(
        urls,
        vec![
            "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",
        ]
    );
    assert_eq!(svhn::remote_files("http://m", Extra::Exclude).len(), 2);
}

/// A wanted variable found twice is an error naming it, whichever copy would have been used.
#[test]
fn duplicate_variables_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (first, second) in [
        (compressed(&x_uint8(1)), compressed(&x_uint8(1))),
        (y_double(&[1.0]), compressed(&y_double(&[2.0]))),
    ] {
        let mut file = header();
        file.extend(compressed(&x_uint8(1)));
        file.extend(compressed(&y_double(&[3.0])));
        file.extend(first);
        file.extend(second);
        let path = write(dir.path(), "train_32x32.mat", &file);
        let error = svhn::read_file(&path).unwrap_err();
        assert!(
            matches!(&error, DataError::Malformed { path: p, detail } if p == &path && detail.contains("second variable")),
            "{error:?}"
        );
    }
}

/// A file of no images is an error, not an empty data set.
#[test]
fn empty_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = header();
    file.extend(compressed(&x_uint8(0)));
    file.extend(compressed(&y_double(&[])));
    let path = write(dir.path(), "train_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::WrongDimensions { path: p, expected, .. } if p == &path && expected.contains("at least one")),
        "{error:?}"
    );
}

/// y with more values than X has images is rejected on its dimensions, before its data is read:
/// here its data is not even there.
#[test]
fn labels_are_bounded_by_the_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = MX_DOUBLE.to_le_bytes().to_vec();
    flags.extend(0u32.to_le_bytes());
    let dims: Vec<u8> = [1_000_000u32, 1]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    let mut content = element(MI_UINT32, &flags);
    content.extend(element(MI_INT32, &dims));
    content.extend(small_element(MI_INT8, b"y"));
    // The data's tag only: 8 MB announced, none present.
    content.extend(MI_DOUBLE.to_le_bytes());
    content.extend(8_000_000u32.to_le_bytes());
    let mut file = header();
    file.extend(compressed(&x_uint8(2)));
    file.extend(compressed(&element(MI_MATRIX, &content)));
    let path = write(dir.path(), "train_32x32.mat", &file);
    let error = svhn::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::WrongDimensions { expected, found, .. } if expected.contains("y of 2×1") && found.contains("1000000×1")),
        "{error:?}"
    );
}

/// A big-endian MAT-file (endian indicator `MI`, every number of the tags, dimensions and
/// values most significant byte first, as MATLAB writes on a big-endian machine) reads as the
/// same file written little-endian does; compressed and plain elements, and labels as doubles
/// and as 16-bit integers.
#[test]
fn reads_big_endian_files() {
    /// A tag and data in big-endian order, padded to 8 bytes.
    fn element_be(data_type: u32, data: &[u8]) -> Vec<u8> {
        let mut out = data_type.to_be_bytes().to_vec();
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(data);
        out.resize(out.len().next_multiple_of(8), 0);
        out
    }
    /// The small format: the byte count in the high half of the first word.
    fn small_element_be(data_type: u32, data: &[u8]) -> Vec<u8> {
        let mut out = ((data.len() as u32) << 16 | data_type)
            .to_be_bytes()
            .to_vec();
        out.extend(data);
        out.resize(8, 0);
        out
    }
    fn matrix_be(name: &str, class: u32, dims: &[u32], data_type: u32, data: &[u8]) -> Vec<u8> {
        let mut flags = class.to_be_bytes().to_vec();
        flags.extend(0u32.to_be_bytes());
        let dims: Vec<u8> = dims.iter().flat_map(|d| d.to_be_bytes()).collect();
        let mut content = element_be(MI_UINT32, &flags);
        content.extend(element_be(MI_INT32, &dims));
        content.extend(small_element_be(MI_INT8, name.as_bytes()));
        content.extend(element_be(data_type, data));
        element_be(MI_MATRIX, &content)
    }
    fn compressed_be(inner: &[u8]) -> Vec<u8> {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(inner).unwrap();
        let z = z.finish().unwrap();
        let mut out = MI_COMPRESSED.to_be_bytes().to_vec();
        out.extend((z.len() as u32).to_be_bytes());
        out.extend(z);
        out
    }
    const MI_INT16: u32 = 3;
    let mut head = header();
    head[124..126].copy_from_slice(&0x0100u16.to_be_bytes());
    head[126..128].copy_from_slice(b"MI");

    let labels = [10.0, 4.0, 7.0];
    let x = || matrix_be("X", MX_UINT8, &[32, 32, 3, 3], MI_UINT8, &x_column_major(3));
    let doubles: Vec<u8> = labels.iter().flat_map(|l: &f64| l.to_be_bytes()).collect();
    let shorts: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l as i16).to_be_bytes())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let little = write(dir.path(), "little.mat", &svhn_file(&labels));
    let expected = svhn::read_file(&little).unwrap();
    assert_eq!(
        expected.iter().map(|i| i.label).collect::<Vec<_>>(),
        [0, 4, 7]
    );
    for (x, y) in [
        (
            compressed_be(&x()),
            compressed_be(&matrix_be("y", MX_DOUBLE, &[3, 1], MI_DOUBLE, &doubles)),
        ),
        (x(), matrix_be("y", MX_DOUBLE, &[3, 1], MI_INT16, &shorts)),
    ] {
        let mut file = head.clone();
        file.extend(x);
        file.extend(y);
        let path = write(dir.path(), "big.mat", &file);
        assert_eq!(svhn::read_file(&path).unwrap(), expected);
    }
    // The same bytes announced as little-endian are not read as this file.
    let mut file = head.clone();
    file[126..128].copy_from_slice(b"IM");
    file.extend(x());
    let path = write(dir.path(), "misread.mat", &file);
    assert!(svhn::read_file(&path).is_err());
}
