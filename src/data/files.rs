//! Small file helpers shared by the readers: whole-file reads with errors
//! that name the file, transparent gzip decompression, file look-up.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads the whole file.
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Reads the whole file, decompressing it if it is gzip-compressed
/// (recognised by its magic bytes, whatever its name).
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read_all(path)?;
    if raw.starts_with(&GZIP_MAGIC) {
        gunzip(path, &raw)
    } else {
        Ok(raw)
    }
}

/// Decompresses the gzip stream `raw` read from `path`.
pub(crate) fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| DataError::malformed(path, format!("broken gzip data: {e}")))?;
    Ok(out)
}

/// The first of `names` that exists as a file in `dir`.
#[cfg_attr(not(feature = "data"), allow(dead_code))]
pub(crate) fn find_first(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}
