//! Errors of building, saving and loading packed networks.

use std::path::PathBuf;

use burn::record::RecorderError;

use crate::ops::PackedError;

/// Why a packed network could not be built, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PackedNetError {
    /// Only binary networks have a packed form.
    #[error("only a binary network has a packed form; this one is full precision")]
    NotBinary,
    /// A layer uses an option the packed form does not support.
    #[error("layer {layer}: {what} is not supported by the packed form")]
    Unsupported {
        /// The layer, e.g. `conv 2`.
        layer: String,
        /// The option.
        what: &'static str,
    },
    /// A layer of a model given to [`super::pack`] has no packed form.
    #[error("layer {layer}: {reason}")]
    NoPackedForm {
        /// The layer's path in the model, e.g. `blocks.1.conv`.
        layer: String,
        /// Why.
        reason: String,
    },
    /// The file could not be read or written by the recorder (missing, not a record, corrupt).
    #[error("packed network file {path}: {source}")]
    Recorder {
        /// The file.
        path: PathBuf,
        /// The recorder's error.
        source: RecorderError,
    },
    /// A file system error.
    #[error("packed network file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The record was written by another format version.
    #[error("packed network record of format {found}, this version reads format {expected}")]
    Format {
        /// The format this version reads.
        expected: u32,
        /// The record's format.
        found: u32,
    },
    /// A layer's packed weights do not fit its configuration.
    #[error("layer {layer}: packed weights do not fit the configuration: {source}")]
    Packed {
        /// The layer.
        layer: String,
        /// The problem.
        source: PackedError,
    },
    /// A configuration or layer value the packed form cannot use: a zero size, more poolings
    /// than the image has pixels, a NaN or negative variance, a NaN threshold.
    #[error("layer {layer}: {what}")]
    Invalid {
        /// The layer, or `network`.
        layer: String,
        /// What is wrong.
        what: String,
    },
    /// The record does not match its configuration.
    #[error("layer {layer}: {what}: expected {expected}, found {found}")]
    Mismatch {
        /// The layer, or `network`.
        layer: String,
        /// What does not match.
        what: &'static str,
        /// The value the configuration implies.
        expected: usize,
        /// The value in the record.
        found: usize,
    },
}
