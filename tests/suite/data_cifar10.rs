//! CIFAR-10 binary reader, folder look-up, archive extraction, download.

use std::io::Write;
use std::path::Path;

use burn::data::dataset::Dataset;
use burn_qnn::data::{DataError, DownloadPolicy, cifar10};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::data_support::{Reply, TestServer, dir_entries};

/// One record: label then 3072 pixels, pixel `i` = `(i * 7 + seed) % 256`.
fn record(label: u8, seed: usize) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|i| ((i * 7 + seed) % 256) as u8));
    r
}

/// A batch file of records with the given labels; record `k` uses seed
/// `base + k`.
fn batch(labels: &[u8], base: usize) -> Vec<u8> {
    labels
        .iter()
        .enumerate()
        .flat_map(|(k, &l)| record(l, base + k))
        .collect()
}

/// Writes all six files to `dir` (file `f` has records with seeds
/// `100 * f + k`, train files 2 records, test file 3).
fn write_all(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (f, name) in cifar10::TRAIN_FILES.iter().enumerate() {
        std::fs::write(dir.join(name), batch(&[f as u8, 9], 100 * f)).unwrap();
    }
    std::fs::write(dir.join(cifar10::TEST_FILE), batch(&[3, 0, 7], 900)).unwrap();
}

#[test]
fn reads_records_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    std::fs::write(&path, batch(&[6, 9, 0], 5)).unwrap();
    let items = cifar10::read_batch(&path).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items.iter().map(|i| i.label).collect::<Vec<_>>(),
        vec![6, 9, 0]
    );
    // Channel-major as stored: red plane first, then green, then blue.
    assert_eq!(items[1].pixels, record(9, 6)[1..].to_vec());
    assert_eq!(items[2].pixels[1024], ((1024 * 7 + 7) % 256) as u8);
}

#[test]
fn loads_from_folder_or_parent() {
    for nested in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let files = if nested {
            root.path().join(cifar10::FOLDER)
        } else {
            root.path().to_path_buf()
        };
        write_all(&files);
        assert_eq!(cifar10::locate(root.path()), Some(files.clone()));
        let data = cifar10::load(root.path(), false).unwrap();
        assert_eq!(data.train.len(), 10);
        assert_eq!(data.test.len(), 3);
        assert_eq!(data.train.shape(), cifar10::SHAPE);
        assert_eq!(
            (data.train.num_classes(), data.train.max_value()),
            (10, 255)
        );
        // Train files in order 1..5, records in file order.
        let labels: Vec<u8> = data.train.iter().map(|i| i.label).collect();
        assert_eq!(labels, vec![0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(
            data.train.get(4).unwrap().pixels,
            record(2, 200)[1..].to_vec()
        );
        assert_eq!(
            data.test.get(2).unwrap().pixels,
            record(7, 902)[1..].to_vec()
        );
    }
}

#[test]
fn length_not_a_multiple_of_the_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_2.bin");
    let mut bytes = batch(&[1, 2], 0);
    bytes.truncate(2 * 3073 - 10);
    std::fs::write(&path, &bytes).unwrap();
    let error = cifar10::read_batch(&path).unwrap_err();
    match &error {
        DataError::Truncated {
            path: p,
            expected,
            got,
        } => {
            assert_eq!(p, &path);
            assert_eq!((*expected, *got), (2 * 3073, 2 * 3073 - 10));
        }
        other => panic!("expected truncated, got {other:?}"),
    }
    assert!(error.to_string().contains("data_batch_2.bin"));

    std::fs::write(&path, b"").unwrap();
    let error = cifar10::read_batch(&path).unwrap_err();
    assert!(matches!(
        error,
        DataError::Truncated {
            expected: 3073,
            got: 0,
            ..
        }
    ));
}

#[test]
fn label_above_nine_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test_batch.bin");
    std::fs::write(&path, batch(&[1, 2, 10], 0)).unwrap();
    let error = cifar10::read_batch(&path).unwrap_err();
    match error {
        DataError::LabelOutOfRange {
            path: p,
            value,
            index,
            ..
        } => {
            assert_eq!(p, path);
            assert_eq!((value, index), (10.0, 2));
        }
        other => panic!("expected label error, got {other:?}"),
    }
}

#[test]
fn a_broken_file_fails_the_whole_load() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path());
    std::fs::write(dir.path().join("data_batch_4.bin"), [0u8; 100]).unwrap();
    let error = cifar10::load_local(dir.path()).unwrap_err();
    assert_eq!(error.path(), dir.path().join("data_batch_4.bin"));
}

#[test]
fn missing_files_explain_what_to_put_where() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path());
    std::fs::remove_file(dir.path().join("data_batch_3.bin")).unwrap();
    let error = cifar10::load(dir.path(), false).unwrap_err();
    assert!(matches!(&error, DataError::MissingFiles { path, .. } if path == dir.path()));
    let message = error.to_string();
    for needed in [
        "CIFAR-10 not found",
        "data_batch_1.bin",
        "test_batch.bin",
        "cifar-10-binary.tar.gz",
        "allow download",
        "missing: data_batch_3.bin",
    ] {
        assert!(message.contains(needed), "{needed:?} not in {message}");
    }
}

/// A `.tar.gz` like the official one (with a few extra entries to ignore).
fn archive(with_test_batch: bool) -> Vec<u8> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, data).unwrap();
    };
    for (f, name) in cifar10::TRAIN_FILES.iter().enumerate() {
        add(
            &format!("cifar-10-batches-bin/{name}"),
            &batch(&[f as u8], 10 * f),
        );
    }
    if with_test_batch {
        add("cifar-10-batches-bin/test_batch.bin", &batch(&[5, 6], 77));
    }
    add("cifar-10-batches-bin/batches.meta.txt", b"airplane\n");
    add("elsewhere/data_batch_1.bin", &batch(&[9], 0));
    add("cifar-10-batches-bin/sub/evil.bin", b"x");
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn extracts_only_the_batch_files() {
    let dir = tempfile::tempdir().unwrap();
    let archive_path = dir.path().join(cifar10::ARCHIVE_NAME);
    std::fs::File::create(&archive_path)
        .unwrap()
        .write_all(&archive(true))
        .unwrap();
    let folder = cifar10::extract_archive(&archive_path, dir.path()).unwrap();
    assert_eq!(folder, dir.path().join(cifar10::FOLDER));
    assert_eq!(
        dir_entries(dir.path()),
        vec![cifar10::FOLDER, cifar10::ARCHIVE_NAME]
    );
    assert_eq!(
        dir_entries(&folder),
        vec![
            "batches.meta.txt",
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin"
        ]
    );
    let data = cifar10::load(dir.path(), false).unwrap();
    assert_eq!(
        data.train.get(0).unwrap().pixels,
        record(0, 0)[1..].to_vec()
    );
    assert_eq!(
        data.test.iter().map(|i| i.label).collect::<Vec<_>>(),
        vec![5, 6]
    );
}

/// An extraction works in a folder of its own: another extraction's folder (the
/// `cifar-10-batches-bin.part` an older version, or another process, is filling) is left as it
/// is.
#[test]
fn extraction_leaves_other_extractions_alone() {
    let dir = tempfile::tempdir().unwrap();
    let archive_path = dir.path().join(cifar10::ARCHIVE_NAME);
    std::fs::write(&archive_path, archive(true)).unwrap();
    let other = dir.path().join(format!("{}.part", cifar10::FOLDER));
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("data_batch_1.bin"), b"in progress").unwrap();
    let folder = cifar10::extract_archive(&archive_path, dir.path()).unwrap();
    assert_eq!(
        std::fs::read(other.join("data_batch_1.bin")).unwrap(),
        b"in progress"
    );
    let mut expected = vec![
        cifar10::ARCHIVE_NAME.to_string(),
        cifar10::FOLDER.to_string(),
        format!("{}.part", cifar10::FOLDER),
    ];
    expected.sort();
    assert_eq!(dir_entries(dir.path()), expected);
    assert_eq!(
        cifar10::read_batch(folder.join("test_batch.bin"))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn incomplete_or_broken_archive_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let archive_path = dir.path().join(cifar10::ARCHIVE_NAME);
    std::fs::write(&archive_path, archive(false)).unwrap();
    let error = cifar10::extract_archive(&archive_path, dir.path()).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, detail } if path == &archive_path && detail.contains("test_batch.bin"))
    );
    assert_eq!(dir_entries(dir.path()), vec![cifar10::ARCHIVE_NAME]);

    let mut cut = archive(true);
    cut.truncate(cut.len() / 2);
    std::fs::write(&archive_path, cut).unwrap();
    let error = cifar10::extract_archive(&archive_path, dir.path()).unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &archive_path),
        "{error:?}"
    );
    assert_eq!(dir_entries(dir.path()), vec![cifar10::ARCHIVE_NAME]);
}

#[test]
fn download_checks_the_official_md5() {
    // The test archive cannot have the official checksum: the download must
    // be refused and leave nothing behind.
    let server = TestServer::start(vec![(
        "/mirror/cifar-10-binary.tar.gz",
        Reply::Ok(archive(true)),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let policy = DownloadPolicy::Mirror(format!("{}/mirror/", server.base_url()));
    let error = cifar10::load(dir.path(), policy).unwrap_err();
    match &error {
        DataError::ChecksumMismatch { path, expected, .. } => {
            assert_eq!(path, &dir.path().join(cifar10::ARCHIVE_NAME));
            assert_eq!(expected, &format!("md5 {}", cifar10::ARCHIVE_MD5));
        }
        other => panic!("expected checksum mismatch, got {other:?}"),
    }
    assert_eq!(server.requests(), vec!["/mirror/cifar-10-binary.tar.gz"]);
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn present_archive_is_extracted_without_request() {
    let server = TestServer::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(cifar10::ARCHIVE_NAME), archive(true)).unwrap();
    let data = cifar10::load(dir.path(), DownloadPolicy::Mirror(server.base_url())).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (5, 2));
    assert!(server.requests().is_empty());
}
