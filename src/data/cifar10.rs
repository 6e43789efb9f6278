//! CIFAR-10, binary version (`cifar-10-binary.tar.gz`).
//!
//! Each file is a sequence of 3,073-byte records: one label byte (0..=9)
//! then 3,072 pixel bytes, 1,024 red, 1,024 green, 1,024 blue, each channel
//! a 32×32 image row by row (already channel-major). The official files hold
//! 10,000 records each; any whole number of records (at least one) is
//! accepted.
//!
//! ```no_run
//! use burn_qnn::data::cifar10;
//!
//! // Looks in `data/cifar10` and `data/cifar10/cifar-10-batches-bin`;
//! // downloads and extracts the official archive if the files are missing.
//! let data = cifar10::load("data/cifar10", true)?;
//! let (train, valid) = data.train.split_validation(5_000);
//! # Ok::<(), burn_qnn::data::DataError>(())
//! ```

#[cfg(feature = "download")]
use std::fs::File;
#[cfg(feature = "download")]
use std::io::{BufReader, Read, Write};
#[cfg(feature = "download")]
use std::path::Component;
use std::path::{Path, PathBuf};

#[cfg(feature = "download")]
use flate2::read::GzDecoder;

use super::download::{Checksum, DownloadPolicy, RemoteFile, ensure_files};
use super::{DataError, ImageDataset, ImageItem, ImageShape, TrainTest, files};

/// Shape of a CIFAR-10 image.
pub const SHAPE: ImageShape = ImageShape::new(3, 32, 32);
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// Class names, by label.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Size of one record: label byte plus pixels.
pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;
/// The training files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The folder the official archive unpacks to.
pub const FOLDER: &str = "cifar-10-batches-bin";
/// Official download location (base address).
pub const OFFICIAL_BASE_URL: &str = "https://www.cs.toronto.edu/~kriz";
/// Name of the official archive.
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";
/// MD5 of the official archive, as published on the CIFAR page.
pub const ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Reads one batch file (`data_batch_N.bin` or `test_batch.bin`).
pub fn read_batch(path: impl AsRef<Path>) -> Result<Vec<ImageItem>, DataError> {
    let path = path.as_ref();
    let bytes = files::read_all_checked(path, |len| whole_records(path, len))?;
    parse_batch(path, &bytes)
}

/// Checks that a batch file of `len` bytes holds a whole number of records,
/// at least one.
fn whole_records(path: &Path, len: u64) -> Result<(), DataError> {
    let record = RECORD_BYTES as u64;
    let whole = len.div_ceil(record).max(1).saturating_mul(record);
    if len != whole {
        return Err(DataError::truncated(path, whole, len));
    }
    Ok(())
}

/// Parses the content of a batch file; errors name `path`.
fn parse_batch(path: &Path, bytes: &[u8]) -> Result<Vec<ImageItem>, DataError> {
    whole_records(path, bytes.len() as u64)?;
    bytes
        .chunks_exact(RECORD_BYTES)
        .enumerate()
        .map(|(index, record)| {
            let label = record[0];
            if usize::from(label) >= NUM_CLASSES {
                return Err(DataError::label(path, f64::from(label), index, "0..=9"));
            }
            Ok(ImageItem {
                pixels: record[1..].to_vec(),
                label,
            })
        })
        .collect()
}

/// The folder holding all six batch files: `dir` itself or
/// `dir/cifar-10-batches-bin`; `None` if neither has them all.
pub fn locate(dir: impl AsRef<Path>) -> Option<PathBuf> {
    let dir = dir.as_ref();
    [dir.to_path_buf(), dir.join(FOLDER)]
        .into_iter()
        .find(|candidate| all_names().all(|name| candidate.join(name).is_file()))
}

/// Reads the training and test sets from `dir` or `dir/cifar-10-batches-bin`,
/// without downloading.
pub fn load_local(dir: impl AsRef<Path>) -> Result<TrainTest, DataError> {
    let dir = dir.as_ref();
    let folder = locate(dir).ok_or_else(|| missing(dir))?;
    let mut train = Vec::with_capacity(50_000);
    for name in TRAIN_FILES {
        train.extend(read_batch(folder.join(name))?);
    }
    let test = read_batch(folder.join(TEST_FILE))?;
    Ok(TrainTest {
        train: ImageDataset::new(train, SHAPE, NUM_CLASSES, 255),
        test: ImageDataset::new(test, SHAPE, NUM_CLASSES, 255),
    })
}

/// Reads CIFAR-10 from `dir` (or `dir/cifar-10-batches-bin`); if the files
/// are not there and `download` allows it, downloads the official archive
/// into `dir` (kept there), checks its MD5 and extracts the batch files to
/// `dir/cifar-10-batches-bin` first.
///
/// `download` is a `bool` (official address or none) or a
/// [`DownloadPolicy`].
pub fn load(
    dir: impl AsRef<Path>,
    download: impl Into<DownloadPolicy>,
) -> Result<TrainTest, DataError> {
    let dir = dir.as_ref();
    if locate(dir).is_none() {
        let policy = download.into();
        let Some(base) = policy.base_url(OFFICIAL_BASE_URL) else {
            return Err(missing(dir));
        };
        let archive = RemoteFile::at(base, ARCHIVE_NAME, Checksum::Md5(ARCHIVE_MD5.into()));
        let paths = ensure_files(dir, &[archive], true)?;
        // Without the feature `download`, `ensure_files` fails unless the archive is there.
        #[cfg(feature = "download")]
        extract_archive(&paths[0], dir)?;
        #[cfg(not(feature = "download"))]
        return Err(DataError::MissingFiles {
            path: dir.to_path_buf(),
            what: "CIFAR-10".into(),
            hint: format!(
                "burn-qnn was built without its `download` feature, which unpacks {}; \
                 extract its {FOLDER} folder there",
                paths[0].display()
            ),
        });
    }
    load_local(dir)
}

/// Extracts the batch files of the official archive at `archive` to
/// `dir/cifar-10-batches-bin` and returns that folder.
///
/// Only the expected files (`*.bin`, `batches.meta.txt`, `readme.html`
/// inside `cifar-10-batches-bin/`) are taken from the archive; nothing is
/// written outside `dir`. Extraction goes to a new temporary folder of a
/// unique name next to the destination (so that two extractions at once do
/// not mix their files), each file written with [`crate::io::AtomicFile`]
/// (synced to disk); the files are moved into place only once all six batch
/// files were extracted. On error the temporary folder is removed.
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub fn extract_archive(archive: &Path, dir: &Path) -> Result<PathBuf, DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let destination = dir.join(FOLDER);
    let staging = crate::io::create_temporary_dir(&destination)
        .map_err(|e| DataError::io(&destination, e))?;
    let result =
        unpack_to(archive, &staging).and_then(|()| move_into_place(&staging, &destination));
    // Best effort: after a successful move the staging folder is empty or gone.
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| destination)
}

/// Unpacks the wanted entries of `archive` into `staging`.
#[cfg(feature = "download")]
fn unpack_to(archive: &Path, staging: &Path) -> Result<(), DataError> {
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let broken = |e: std::io::Error| DataError::malformed(archive, format!("broken archive: {e}"));
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    for entry in tar.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let entry_path = entry.path().map_err(broken)?.into_owned();
        let Some(name) = wanted_name(&entry_path) else {
            continue;
        };
        let out_path = staging.join(&name);
        let mut out =
            crate::io::AtomicFile::create(&out_path).map_err(|e| DataError::io(&out_path, e))?;
        // A read error is the archive's, a write error the file's.
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(broken(e)),
            };
            out.write_all(&buf[..n])
                .map_err(|e| DataError::io(&out_path, e))?;
        }
        out.commit().map_err(|e| DataError::io(&out_path, e))?;
    }
    if let Some(absent) = all_names().find(|n| !staging.join(n).is_file()) {
        return Err(DataError::malformed(
            archive,
            format!("the archive has no {FOLDER}/{absent}"),
        ));
    }
    Ok(())
}

/// The file name of an archive entry `cifar-10-batches-bin/NAME` worth
/// extracting, if it is one.
#[cfg(feature = "download")]
fn wanted_name(entry: &Path) -> Option<String> {
    let mut parts = entry.components().filter(|c| *c != Component::CurDir);
    let (Some(Component::Normal(folder)), Some(Component::Normal(name)), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let name = name.to_str()?;
    let wanted = name.ends_with(".bin") || name == "batches.meta.txt" || name == "readme.html";
    (folder == FOLDER && wanted).then(|| name.to_string())
}

/// Moves the extracted files from `staging` to `destination`: the whole
/// folder at once if `destination` does not exist yet, file by file (each
/// rename atomic, replacing what is there) otherwise; then syncs the folders
/// whose entries changed.
#[cfg(feature = "download")]
fn move_into_place(staging: &Path, destination: &Path) -> Result<(), DataError> {
    let parent = destination.parent().unwrap_or(Path::new("."));
    if !destination.exists() {
        match std::fs::rename(staging, destination) {
            Ok(()) => {
                return crate::io::sync_dir(parent).map_err(|e| DataError::io(parent, e));
            }
            // Another extraction was first: move the files one by one.
            Err(_) if destination.is_dir() => {}
            Err(e) => return Err(DataError::io(destination, e)),
        }
    }
    let entries = std::fs::read_dir(staging).map_err(|e| DataError::io(staging, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(staging, e))?;
        let target = destination.join(entry.file_name());
        std::fs::rename(entry.path(), &target).map_err(|e| DataError::io(&target, e))?;
    }
    crate::io::sync_dir(destination).map_err(|e| DataError::io(destination, e))
}

/// All six batch file names.
fn all_names() -> impl Iterator<Item = &'static str> {
    TRAIN_FILES.into_iter().chain([TEST_FILE])
}

/// The error for a folder without the batch files.
fn missing(dir: &Path) -> DataError {
    // Report what is missing from whichever of the two places is closer.
    let absent_in = |folder: PathBuf| -> Vec<&str> {
        all_names().filter(|n| !folder.join(n).is_file()).collect()
    };
    let (here, below) = (absent_in(dir.to_path_buf()), absent_in(dir.join(FOLDER)));
    let absent = if below.len() < here.len() {
        below
    } else {
        here
    };
    DataError::MissingFiles {
        path: dir.to_path_buf(),
        what: "CIFAR-10".into(),
        hint: format!(
            "put the official binary files data_batch_1.bin … data_batch_5.bin and \
             test_batch.bin there or in {FOLDER}/ below it (from {ARCHIVE_NAME}, folder \
             {FOLDER}), or allow download (missing: {})",
            absent.join(", ")
        ),
    }
}
