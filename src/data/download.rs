//! Downloading data files safely: checksum verified while streaming, written
//! under a unique temporary name, synced and renamed into place only once
//! complete and correct.
//!
//! Policy for files that are already present: [`ensure_files`] trusts them
//! and does not hash them again. Files only ever appear under their final
//! name after their checksum matched (or because a user put them there), the
//! readers validate every file's structure anyway, and re-hashing the 1.3 GB
//! SVHN extra set on every start would cost seconds. Use `verify_file` to
//! check a present file explicitly.
//!
//! The descriptions of files ([`RemoteFile`], [`Checksum`], [`DownloadPolicy`]) and
//! [`ensure_files`] are always there; fetching and hashing (`download_file`, `verify_file`,
//! `Checksum::md5_of`) need the crate feature `download` (on by default). Without it,
//! [`ensure_files`] reports missing files as a [`DataError::MissingFiles`] that says where
//! to get them.

use std::path::{Path, PathBuf};

#[cfg(feature = "download")]
use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    time::Duration,
};

#[cfg(feature = "download")]
use crate::io::AtomicFile;
#[cfg(feature = "download")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
#[cfg(feature = "download")]
use md5::{Digest, Md5};

use super::DataError;

/// A published checksum of a file, as lower- or upper-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checksum {
    /// MD5 (what the CIFAR-10, SVHN and MNIST pages publish).
    Md5(String),
}

impl Checksum {
    /// The algorithm's name, for messages.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Md5(_) => "md5",
        }
    }

    /// The expected digest, lower-case hex.
    pub fn expected_hex(&self) -> String {
        match self {
            Self::Md5(hex) => hex.to_ascii_lowercase(),
        }
    }

    /// The MD5 checksum of `data`.
    ///
    /// ```
    /// use burn_qnn::data::download::Checksum;
    ///
    /// let abc = Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into());
    /// assert_eq!(Checksum::md5_of(b"abc"), abc);
    /// ```
    #[cfg(feature = "download")]
    #[cfg_attr(docsrs, doc(cfg(feature = "download")))]
    pub fn md5_of(data: &[u8]) -> Self {
        let mut hasher = Hasher::Md5(Md5::new());
        hasher.update(data);
        Self::Md5(hasher.finish())
    }
}

/// A file to fetch: where from, under which name, and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The full address of the file.
    pub url: String,
    /// The name to store it under (no folders).
    pub file_name: String,
    /// Its published checksum.
    pub checksum: Checksum,
}

impl RemoteFile {
    /// The file `file_name` at `base_url` (a trailing `/` is optional).
    pub fn at(base_url: &str, file_name: &str, checksum: Checksum) -> Self {
        Self {
            url: format!("{}/{file_name}", base_url.trim_end_matches('/')),
            file_name: file_name.to_string(),
            checksum,
        }
    }
}

/// Whether, and from where, missing data files may be downloaded.
///
/// `bool` converts into it: `true` means [`DownloadPolicy::Official`],
/// `false` [`DownloadPolicy::Never`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DownloadPolicy {
    /// Never download; missing files are an error.
    #[default]
    Never,
    /// Download missing files from the data set's official address.
    Official,
    /// Download missing files from this base address instead (a mirror, or
    /// a local server), under the official file names.
    Mirror(String),
}

impl DownloadPolicy {
    /// The base address to download from, given the official one; `None`
    /// if downloading is not allowed.
    pub fn base_url<'a>(&'a self, official: &'a str) -> Option<&'a str> {
        match self {
            Self::Never => None,
            Self::Official => Some(official),
            Self::Mirror(base) => Some(base),
        }
    }
}

impl From<bool> for DownloadPolicy {
    fn from(allow: bool) -> Self {
        if allow { Self::Official } else { Self::Never }
    }
}

/// Makes sure every file of `files` is in `dir`; returns their paths, in
/// order.
///
/// Files already present are used as they are (see the module
/// documentation). Missing ones are downloaded one after the other with
/// `download_file` if `allow_download` is true; otherwise the result is a
/// [`DataError::MissingFiles`] listing them. On the first failed download
/// the error is returned; files completed before it stay (they are
/// verified). Built without the feature `download`, missing files are always that
/// error, which then also says the feature is off.
///
/// ```no_run
/// use burn_qnn::data::download::{ensure_files, Checksum, RemoteFile};
///
/// let file = RemoteFile::at(
///     "https://ossci-datasets.s3.amazonaws.com/mnist",
///     "t10k-labels-idx1-ubyte.gz",
///     Checksum::Md5("ec29112dd5afa0611ce80d1b7f02629c".into()),
/// );
/// let paths = ensure_files("data/mnist".as_ref(), &[file], true)?;
/// # Ok::<(), burn_qnn::data::DataError>(())
/// ```
pub fn ensure_files(
    dir: &Path,
    files: &[RemoteFile],
    allow_download: bool,
) -> Result<Vec<PathBuf>, DataError> {
    let missing: Vec<&RemoteFile> = files
        .iter()
        .filter(|f| !dir.join(&f.file_name).is_file())
        .collect();
    let allowed = allow_download && cfg!(feature = "download");
    if !missing.is_empty() && !allowed {
        let names: Vec<&str> = missing.iter().map(|f| f.file_name.as_str()).collect();
        let why = if allow_download {
            "burn-qnn was built without its `download` feature"
        } else {
            "download is disabled"
        };
        return Err(DataError::MissingFiles {
            path: dir.to_path_buf(),
            what: format!("{} of {} files", missing.len(), files.len()),
            hint: format!(
                "{why}; put {} there (from {})",
                names.join(", "),
                missing
                    .iter()
                    .map(|f| f.url.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    #[cfg(feature = "download")]
    for file in missing {
        download_file(file, dir)?;
    }
    Ok(files.iter().map(|f| dir.join(&f.file_name)).collect())
}

/// Downloads `file` into `dir` (created if needed) and returns its path.
///
/// The body is written to a temporary file of a unique name in `dir` (a
/// [`crate::io::AtomicFile`]: two downloads of the same file, in two
/// processes or threads, never write into one file) while its checksum is
/// computed; it becomes `NAME` only after the whole body arrived (as many
/// bytes as `Content-Length` announced), the checksum matched and the bytes
/// were synced to disk. On any failure the temporary file is removed and
/// nothing is left behind. A progress bar is drawn on stderr when it is a
/// terminal.
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub fn download_file(file: &RemoteFile, dir: &Path) -> Result<PathBuf, DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let target = dir.join(&file.file_name);
    let out = AtomicFile::create(&target).map_err(|e| DataError::io(&target, e))?;
    let out = fetch_verified(file, &target, out)?;
    out.commit().map_err(|e| DataError::io(&target, e))?;
    Ok(target)
}

/// Checks the file at `path` against `checksum`.
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub fn verify_file(path: &Path, checksum: &Checksum) -> Result<(), DataError> {
    let mut reader = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Hasher::new(checksum);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.check(path, checksum)
}

/// Streams `file.url` into `out`, hashing as it goes, and checks length and
/// checksum; returns `out` to be committed. Errors name `target`, the file
/// the caller asked for (dropping `out` removes its temporary file).
#[cfg(feature = "download")]
fn fetch_verified(
    file: &RemoteFile,
    target: &Path,
    out: AtomicFile,
) -> Result<AtomicFile, DataError> {
    let failed = |reason: String| DataError::Download {
        path: target.to_path_buf(),
        url: file.url.clone(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        // Each read, not the whole body: the SVHN extra set is 1.3 GB.
        .timeout_per_read(Some(Duration::from_secs(120)))
        // Statuses are reported below, with their reason phrase.
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent.get(&file.url).call().map_err(|e| {
        // Without the URL, which the error already names.
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !reason.contains(&cause_text) {
                reason = format!("{reason}: {cause_text}");
            }
            source = cause.source();
        }
        failed(reason)
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!(
            "HTTP status {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )));
    }
    let announced: Option<u64> = response
        .headers()
        .get("Content-Length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());

    let progress = progress_bar(announced, &file.file_name);
    let mut reader = response.into_body().into_reader();
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut hasher = Hasher::new(&file.checksum);
    let mut buf = vec![0u8; 1 << 16];
    let mut received: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress.abandon();
                return Err(failed(format!(
                    "transfer interrupted after {received} bytes{}: {e}",
                    announced.map(|t| format!(" of {t}")).unwrap_or_default()
                )));
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(target, e))?;
        received += n as u64;
        progress.inc(n as u64);
    }
    progress.finish_and_clear();
    if let Some(total) = announced
        && received != total
    {
        return Err(failed(format!(
            "transfer interrupted: received {received} of {total} bytes"
        )));
    }
    let out = out
        .into_inner()
        .map_err(|e| DataError::io(target, e.into_error()))?;
    hasher.check(target, &file.checksum)?;
    Ok(out)
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
#[cfg(feature = "download")]
fn progress_bar(total: Option<u64>, name: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("downloading {name}"));
    bar
}

/// A running checksum computation (MD5).
#[cfg(feature = "download")]
enum Hasher {
    Md5(Md5),
}

#[cfg(feature = "download")]
impl Hasher {
    fn new(checksum: &Checksum) -> Self {
        match checksum {
            Checksum::Md5(_) => Self::Md5(Md5::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        let bytes: Vec<u8> = match self {
            Self::Md5(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compares with `checksum`; a mismatch names `path`.
    fn check(self, path: &Path, checksum: &Checksum) -> Result<(), DataError> {
        let got = self.finish();
        let expected = checksum.expected_hex();
        if got == expected {
            Ok(())
        } else {
            Err(DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: format!("{} {expected}", checksum.algorithm()),
                got: format!("{} {got}", checksum.algorithm()),
            })
        }
    }
}
