//! Downloads against a local HTTP server: success, checksum mismatch,
//! interrupted transfer, HTTP error, present files, disabled downloads.

use burn_qnn::data::DataError;
use burn_qnn::data::download::{Checksum, RemoteFile, download_file, ensure_files, verify_file};

use crate::data_support::{Reply, TestServer, dir_entries, pattern};

fn md5_of(data: &[u8]) -> Checksum {
    Checksum::md5_of(data)
}

#[test]
fn digests_match_known_vectors() {
    assert_eq!(
        Checksum::md5_of(b""),
        Checksum::Md5("d41d8cd98f00b204e9800998ecf8427e".into())
    );
    assert_eq!(
        Checksum::md5_of(b"abc"),
        Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into())
    );
}

#[test]
fn remote_file_joins_base_and_name() {
    let a = RemoteFile::at("http://h/x/", "f.bin", Checksum::Md5("00".into()));
    let b = RemoteFile::at("http://h/x", "f.bin", Checksum::Md5("00".into()));
    assert_eq!(a.url, "http://h/x/f.bin");
    assert_eq!(a, b);
}

#[test]
fn download_succeeds_and_places_file() {
    let body = pattern(300_000, 1);
    let server = TestServer::start(vec![("/d/file.bin", Reply::Ok(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let file = RemoteFile::at(
        &format!("{}/d", server.base_url()),
        "file.bin",
        md5_of(&body),
    );
    let paths = ensure_files(dir.path(), &[file], true).unwrap();
    assert_eq!(paths, vec![dir.path().join("file.bin")]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), body);
    assert_eq!(dir_entries(dir.path()), vec!["file.bin"]);
    assert_eq!(server.requests(), vec!["/d/file.bin"]);
}

/// A download writes only into a temporary file of its own: another download's file of the
/// same target (the `NAME.part` an older version, or another process, is writing) is left as
/// it is, and nothing else is left behind.
#[test]
fn download_leaves_other_writers_files_alone() {
    let body = pattern(200_000, 4);
    let server = TestServer::start(vec![("/file.bin", Reply::Ok(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let others = ["file.bin.part", ".file.bin.1-0.tmp"];
    for other in others {
        std::fs::write(dir.path().join(other), b"another download in progress").unwrap();
    }
    let file = RemoteFile::at(&server.base_url(), "file.bin", md5_of(&body));
    let path = download_file(&file, dir.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    for other in others {
        assert_eq!(
            std::fs::read(dir.path().join(other)).unwrap(),
            b"another download in progress",
            "{other}"
        );
    }
    let mut expected = vec!["file.bin", others[0], others[1]];
    expected.sort();
    assert_eq!(dir_entries(dir.path()), expected);
}

#[test]
fn download_with_upper_case_hex() {
    let body = pattern(10_000, 2);
    let server = TestServer::start(vec![("/s.bin", Reply::Ok(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let hex = Checksum::md5_of(&body).expected_hex().to_ascii_uppercase();
    let file = RemoteFile::at(&server.base_url(), "s.bin", Checksum::Md5(hex));
    let path = download_file(&file, dir.path()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let body = pattern(50_000, 3);
    let server = TestServer::start(vec![("/f.bin", Reply::Ok(body))]);
    let dir = tempfile::tempdir().unwrap();
    let wrong = Checksum::Md5("0123456789abcdef0123456789abcdef".into());
    let file = RemoteFile::at(&server.base_url(), "f.bin", wrong);
    let error = ensure_files(dir.path(), &[file], true).unwrap_err();
    match &error {
        DataError::ChecksumMismatch {
            path,
            expected,
            got,
        } => {
            assert_eq!(path, &dir.path().join("f.bin"));
            assert_eq!(expected, "md5 0123456789abcdef0123456789abcdef");
            assert_ne!(got, expected);
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert!(
        dir_entries(dir.path()).is_empty(),
        "left {:?}",
        dir_entries(dir.path())
    );
}

#[test]
fn interrupted_transfer_leaves_nothing() {
    let body = pattern(4_000, 4);
    let server = TestServer::start(vec![(
        "/cut.bin",
        Reply::Cut {
            body: body.clone(),
            announced: 10_000,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    // The checksum of what was sent: only the length check can catch it.
    let file = RemoteFile::at(&server.base_url(), "cut.bin", md5_of(&body));
    let error = download_file(&file, dir.path()).unwrap_err();
    match &error {
        DataError::Download { path, url, reason } => {
            assert_eq!(path, &dir.path().join("cut.bin"));
            assert!(url.ends_with("/cut.bin"));
            assert!(reason.contains("interrupted"), "{reason}");
        }
        other => panic!("expected a download error, got {other:?}"),
    }
    assert!(error.to_string().contains("cut.bin"));
    assert!(
        dir_entries(dir.path()).is_empty(),
        "left {:?}",
        dir_entries(dir.path())
    );
}

#[test]
fn http_error_status_leaves_nothing() {
    let server = TestServer::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let file = RemoteFile::at(&server.base_url(), "absent.bin", md5_of(b""));
    let error = download_file(&file, dir.path()).unwrap_err();
    let DataError::Download { reason, .. } = &error else {
        panic!("expected a download error, got {error:?}");
    };
    assert!(reason.contains("404"), "{reason}");
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn connection_refused_is_a_download_error() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = RemoteFile::at(&format!("http://127.0.0.1:{port}"), "x.bin", md5_of(b""));
    let error = download_file(&file, dir.path()).unwrap_err();
    assert!(matches!(error, DataError::Download { .. }), "{error:?}");
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn present_files_are_not_requested() {
    let server = TestServer::start(vec![("/new.bin", Reply::Ok(b"new".to_vec()))]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.bin"), b"kept as is").unwrap();
    let files = [
        // Present: trusted without hashing, so even a wrong checksum passes.
        RemoteFile::at(&server.base_url(), "old.bin", md5_of(b"other")),
        RemoteFile::at(&server.base_url(), "new.bin", md5_of(b"new")),
    ];
    let paths = ensure_files(dir.path(), &files, true).unwrap();
    assert_eq!(server.requests(), vec!["/new.bin"]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), b"kept as is");
    assert_eq!(std::fs::read(&paths[1]).unwrap(), b"new");

    // Everything present now: no request at all.
    ensure_files(dir.path(), &files, true).unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn missing_files_without_download_name_them() {
    let server = TestServer::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let file = RemoteFile::at(&server.base_url(), "needed.bin", md5_of(b""));
    let error = ensure_files(dir.path(), &[file], false).unwrap_err();
    let DataError::MissingFiles { path, hint, .. } = &error else {
        panic!("expected missing files, got {error:?}");
    };
    assert_eq!(path, dir.path());
    assert!(hint.contains("needed.bin"));
    assert!(server.requests().is_empty());
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn verify_file_checks_present_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    std::fs::write(&path, b"abc").unwrap();
    verify_file(
        &path,
        &Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into()),
    )
    .unwrap();
    let error = verify_file(&path, &Checksum::Md5("00".into())).unwrap_err();
    assert!(matches!(&error, DataError::ChecksumMismatch { path: p, .. } if p == &path));
    let error = verify_file(&dir.path().join("none"), &md5_of(b"")).unwrap_err();
    assert!(matches!(error, DataError::Io { .. }));
}
