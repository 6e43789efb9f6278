//! The error type of the data module.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while finding, downloading or reading a data
/// set.
///
/// Every variant names the file (or, for [`DataError::MissingFiles`], the
/// folder) it is about, so a message always says where to look. Readers never
/// panic on bad files and never return partially parsed data: a file is
/// either read completely and validated, or rejected with one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The operating system failed to open, read, write or rename a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file does not start the way its format requires (wrong magic
    /// number, wrong header, not the expected kind of file).
    #[error("{}: bad header: {detail}", path.display())]
    BadHeader {
        /// The file concerned.
        path: PathBuf,
        /// What was expected and what was found.
        detail: String,
    },

    /// The file is shorter than its header or record size says it must be
    /// (for compressed files: the decompressed content).
    #[error("{}: truncated: expected {expected} bytes, got {got}", path.display())]
    Truncated {
        /// The file concerned.
        path: PathBuf,
        /// The number of bytes the file should have.
        expected: u64,
        /// The number of bytes it has.
        got: u64,
    },

    /// An array or image has other dimensions (or another count) than the
    /// format requires.
    #[error("{}: wrong dimensions: expected {expected}, found {found}", path.display())]
    WrongDimensions {
        /// The file concerned.
        path: PathBuf,
        /// The dimensions the format requires.
        expected: String,
        /// The dimensions found in the file.
        found: String,
    },

    /// A label lies outside the range the data set allows.
    #[error(
        "{}: label {value} of sample {index} is out of range (allowed: {allowed})",
        path.display()
    )]
    LabelOutOfRange {
        /// The file concerned.
        path: PathBuf,
        /// The label as stored in the file.
        value: f64,
        /// The index of the sample (0-based, in file order).
        index: usize,
        /// The allowed range, e.g. `0..=9`.
        allowed: &'static str,
    },

    /// A line of a text file cannot be used.
    #[error("{}: line {line}: {detail}", path.display())]
    BadRow {
        /// The file concerned.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// What is wrong with the line.
        detail: String,
    },

    /// The file's structure is broken in a way the other variants do not
    /// describe (corrupt compressed stream, unsupported element, missing
    /// variable, trailing bytes, ...).
    #[error("{}: malformed: {detail}", path.display())]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A file's checksum differs from the published one.
    #[error("{}: checksum mismatch: expected {expected}, got {got}", path.display())]
    ChecksumMismatch {
        /// The file concerned.
        path: PathBuf,
        /// The published checksum (lower-case hex, with its algorithm).
        expected: String,
        /// The checksum of the data received or read.
        got: String,
    },

    /// Downloading a file failed (network error, HTTP error status,
    /// interrupted transfer).
    #[error("{}: download from {url} failed: {reason}", path.display())]
    Download {
        /// The file that was to be written.
        path: PathBuf,
        /// The address it was downloaded from.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The files of a data set are not where they were looked for, and
    /// downloading was not allowed.
    #[error("{what} not found in {}: {hint}", path.display())]
    MissingFiles {
        /// The folder that was searched.
        path: PathBuf,
        /// What is missing, e.g. `CIFAR-10`.
        what: String,
        /// Which files to put where to fix it.
        hint: String,
    },
}

impl DataError {
    /// The file (or folder) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::BadHeader { path, .. }
            | Self::Truncated { path, .. }
            | Self::WrongDimensions { path, .. }
            | Self::LabelOutOfRange { path, .. }
            | Self::BadRow { path, .. }
            | Self::Malformed { path, .. }
            | Self::ChecksumMismatch { path, .. }
            | Self::Download { path, .. }
            | Self::MissingFiles { path, .. } => path,
        }
    }

    /// An [`DataError::Io`] for `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A [`DataError::BadHeader`] for `path`.
    #[cfg_attr(not(feature = "data"), allow(dead_code))]
    pub(crate) fn bad_header(path: &Path, detail: impl Into<String>) -> Self {
        Self::BadHeader {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// A [`DataError::Malformed`] for `path`.
    pub(crate) fn malformed(path: &Path, detail: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// A [`DataError::Truncated`] for `path`.
    #[cfg_attr(not(feature = "data"), allow(dead_code))]
    pub(crate) fn truncated(path: &Path, expected: u64, got: u64) -> Self {
        Self::Truncated {
            path: path.to_path_buf(),
            expected,
            got,
        }
    }

    /// A [`DataError::WrongDimensions`] for `path`.
    #[cfg_attr(not(feature = "data"), allow(dead_code))]
    pub(crate) fn wrong_dimensions(
        path: &Path,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self::WrongDimensions {
            path: path.to_path_buf(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// A [`DataError::LabelOutOfRange`] for `path`.
    pub(crate) fn label(path: &Path, value: f64, index: usize, allowed: &'static str) -> Self {
        Self::LabelOutOfRange {
            path: path.to_path_buf(),
            value,
            index,
            allowed,
        }
    }
}
