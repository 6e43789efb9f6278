//! Small file helpers shared by the readers: whole-file reads with errors
//! that name the file, transparent gzip decompression bounded by a header,
//! file look-up.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most bytes deflate (gzip, zlib) inflates one compressed byte to: about 1032 (a
/// 258-byte match takes at least 2 bits). A stream's headers only make the bound looser.
#[cfg_attr(not(feature = "data"), allow(dead_code))]
pub(crate) const MAX_INFLATION: u64 = 1032;

/// Initial capacity limit for a buffer whose size comes from a file: a size
/// field that lies cannot make a reader reserve more than this before the
/// data actually arrives.
#[cfg_attr(not(feature = "data"), allow(dead_code))]
pub(crate) const MAX_UPFRONT: usize = 1 << 26;

/// Reads the whole file.
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Reads the whole file after checking, from its metadata, that its length
/// passes `check` (so that a file of the wrong size is rejected before it
/// is read).
#[cfg_attr(not(feature = "data"), allow(dead_code))]
pub(crate) fn read_all_checked(
    path: &Path,
    check: impl Fn(u64) -> Result<(), DataError>,
) -> Result<Vec<u8>, DataError> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    check(len)?;
    let capacity = usize::try_from(len).unwrap_or(usize::MAX).min(MAX_UPFRONT);
    let mut bytes = Vec::with_capacity(capacity);
    file.read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    check(bytes.len() as u64)?;
    Ok(bytes)
}

/// Reads a file made of a `header_len`-byte header and a body of
/// `body_len(header)` bytes, gzip-compressed or not (recognised by its magic
/// bytes, whatever its name). Returns the header and the body.
///
/// The header is read first and bounds everything after it: a plain file's
/// length (from its metadata) must be exactly the header's promise before
/// the body is read, and a compressed stream is inflated to at most one
/// byte past the promise (so a small file inflating to gigabytes is rejected
/// after the promised bytes, not inflated whole); a promise larger than the
/// compressed file can hold is rejected before anything is inflated. Sizes
/// in errors count the decompressed content.
#[cfg_attr(not(feature = "data"), allow(dead_code))]
pub(crate) fn read_with_header(
    path: &Path,
    header_len: usize,
    body_len: impl FnOnce(&[u8]) -> Result<u64, DataError>,
) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let io = |e| DataError::io(path, e);
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
    let broken = |e: std::io::Error| DataError::malformed(path, format!("broken gzip data: {e}"));
    let mut source: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let error = |e| if gzip { broken(e) } else { io(e) };

    let mut header = Vec::with_capacity(header_len);
    (&mut source)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(error)?;
    if header.len() < header_len {
        return Err(DataError::truncated(
            path,
            header_len as u64,
            header.len() as u64,
        ));
    }
    let body_len = body_len(&header)?;
    let expected = (header_len as u64).saturating_add(body_len);
    let trailing = |got: Option<u64>| {
        DataError::malformed(
            path,
            match got {
                Some(got) => format!(
                    "{} bytes after the last item (expected {expected} bytes in all)",
                    got - expected
                ),
                None => format!("more bytes than the {expected} the header promises"),
            },
        )
    };
    if gzip {
        if body_len > file_len.saturating_mul(MAX_INFLATION) {
            return Err(DataError::malformed(
                path,
                format!(
                    "the header promises {expected} bytes, more than {file_len} bytes of gzip \
                     data can hold"
                ),
            ));
        }
    } else if file_len < expected {
        return Err(DataError::truncated(path, expected, file_len));
    } else if file_len > expected {
        return Err(trailing(Some(file_len)));
    }

    let capacity = usize::try_from(body_len)
        .unwrap_or(usize::MAX)
        .min(MAX_UPFRONT);
    let mut body = Vec::with_capacity(capacity);
    source
        .take(body_len.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(error)?;
    let got = header_len as u64 + body.len() as u64;
    if got < expected {
        return Err(DataError::truncated(path, expected, got));
    }
    if got > expected {
        return Err(trailing(None));
    }
    Ok((header, body))
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

/// Decompresses the gzip stream `raw` read from `path`, to at most what deflate can give for
/// its size ([`MAX_INFLATION`] bytes a byte): a stream that would give more is not gzip data
/// and is rejected before it is inflated further.
pub(crate) fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>, DataError> {
    let most = (raw.len() as u64).saturating_mul(MAX_INFLATION);
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    MultiGzDecoder::new(raw)
        .take(most.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DataError::malformed(path, format!("broken gzip data: {e}")))?;
    if out.len() as u64 > most {
        return Err(DataError::malformed(
            path,
            format!(
                "gzip data inflating past {most} bytes, more than {} bytes of gzip data can hold",
                raw.len()
            ),
        ));
    }
    Ok(out)
}

/// The first of `names` that exists as a file in `dir`.
#[cfg_attr(not(feature = "data"), allow(dead_code))]
pub(crate) fn find_first(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}
