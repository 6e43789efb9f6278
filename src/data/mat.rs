//! A minimal reader for MATLAB level-5 MAT-files (the format of `save -v7`
//! and of scipy's `savemat`): just enough to read named, real, numeric,
//! non-sparse arrays, whether stored plainly or in `miCOMPRESSED` (zlib)
//! elements.
//!
//! The file is streamed: compressed variables are inflated directly into
//! their final buffer, and variables that are not asked for are skipped
//! after their header (name) has been read.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Take};
use std::path::Path;

use flate2::read::ZlibDecoder;

use super::DataError;
use super::files::{MAX_INFLATION, MAX_UPFRONT};

const HEADER_BYTES: u64 = 128;

// Data types of data elements.
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;

// Array classes.
const MX_DOUBLE: u32 = 6;
const MX_UINT8: u32 = 9;
const MX_UINT64: u32 = 15;

/// The values of a numeric array, in MATLAB's column-major order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MatData {
    /// A `uint8` array stored as bytes.
    UInt8(Vec<u8>),
    /// Any other numeric array, converted to `f64`.
    Double(Vec<f64>),
}

impl MatData {
    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::UInt8(v) => v.len(),
            Self::Double(v) => v.len(),
        }
    }

    /// The value at `index` as `f64`.
    pub(crate) fn value(&self, index: usize) -> f64 {
        match self {
            Self::UInt8(v) => f64::from(v[index]),
            Self::Double(v) => v[index],
        }
    }
}

/// One variable of a MAT-file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MatVariable {
    /// Its name.
    pub(crate) name: String,
    /// Its MATLAB class (`mxDOUBLE_CLASS` = 6, `mxUINT8_CLASS` = 9, ...).
    pub(crate) class: u32,
    /// Its dimensions.
    pub(crate) dims: Vec<usize>,
    /// Its values.
    pub(crate) data: MatData,
}

/// The name of a MATLAB class, for messages.
pub(crate) fn class_name(class: u32) -> &'static str {
    match class {
        1 => "cell",
        2 => "struct",
        3 => "object",
        4 => "char",
        5 => "sparse",
        6 => "double",
        7 => "single",
        8 => "int8",
        9 => "uint8",
        10 => "int16",
        11 => "uint16",
        12 => "int32",
        13 => "uint32",
        14 => "int64",
        15 => "uint64",
        _ => "unknown",
    }
}

/// The most values a variable may hold, given the variables read before it:
/// `None` for no bound, or the bound and what it is, for the error message
/// (e.g. `"y of 2×1 (one label per image of X)"`).
pub(crate) type Bound<'a> = &'a dyn Fn(&str, &[MatVariable]) -> Option<(usize, String)>;

/// Reads the variables named in `wanted` from the MAT-file at `path`, in
/// file order. Variables not found are simply absent from the result; one
/// found twice is an error.
///
/// Every read is bounded before it happens: a variable's values by
/// `bound` (checked on its dimensions, before its data is read or
/// inflated), a compressed element's content by what deflate can inflate
/// its size to, and an uncompressed element by the file's length.
pub(crate) fn read_variables(
    path: &Path,
    wanted: &[&str],
    bound: Bound<'_>,
) -> Result<Vec<MatVariable>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let order = read_header(path, &mut reader, file_len)?;

    let mut variables = Vec::new();
    let mut offset = HEADER_BYTES;
    while offset < file_len {
        if file_len - offset < 8 {
            return Err(DataError::truncated(path, offset + 8, file_len));
        }
        let tag = read_tag(&mut reader, order).map_err(|e| DataError::io(path, e))?;
        let end = offset + 8 + u64::from(tag.bytes);
        if end > file_len {
            return Err(DataError::truncated(path, end, file_len));
        }
        let at = |e: Failure| e.into_error(path, offset);
        let mut body = (&mut reader).take(u64::from(tag.bytes));
        let variable = match tag.data_type {
            MI_COMPRESSED => {
                let mut inflated = ZlibDecoder::new(body);
                let inner = read_tag(&mut inflated, order)
                    .map_err(Failure::Read)
                    .map_err(at)?;
                if inner.data_type == MI_MATRIX {
                    let most = u64::from(tag.bytes).saturating_mul(MAX_INFLATION);
                    if u64::from(inner.bytes) > most {
                        return Err(at(Failure::Format(format!(
                            "a compressed element of {} bytes cannot inflate to the {} bytes \
                             its content claims",
                            tag.bytes, inner.bytes
                        ))));
                    }
                    let mut matrix = Read::take(&mut inflated, u64::from(inner.bytes));
                    let variable =
                        read_matrix(&mut matrix, order, wanted, &variables, bound).map_err(at)?;
                    if variable.is_some() {
                        // Inflate to the end of the stream so its checksum
                        // is verified: corrupt data must not pass as pixels.
                        std::io::copy(&mut inflated, &mut std::io::sink())
                            .map_err(|e| at(Failure::Read(e)))?;
                    }
                    variable
                } else {
                    None
                }
            }
            MI_MATRIX => read_matrix(&mut body, order, wanted, &variables, bound).map_err(at)?,
            _ => None,
        };
        variables.extend(variable);
        // Uncompressed elements are padded to 8 bytes; compressed ones not.
        offset = if tag.data_type == MI_COMPRESSED {
            end
        } else {
            end.next_multiple_of(8).min(file_len)
        };
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| DataError::io(path, e))?;
    }
    Ok(variables)
}

/// Byte order of the file.
#[derive(Debug, Clone, Copy)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Self::Little => u32::from_le_bytes(b),
            Self::Big => u32::from_be_bytes(b),
        }
    }

    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Self::Little => u16::from_le_bytes(b),
            Self::Big => u16::from_be_bytes(b),
        }
    }
}

/// Checks the 128-byte header and returns the byte order.
fn read_header(path: &Path, reader: &mut impl Read, file_len: u64) -> Result<Order, DataError> {
    if file_len < HEADER_BYTES {
        return Err(DataError::truncated(path, HEADER_BYTES, file_len));
    }
    let mut header = [0u8; HEADER_BYTES as usize];
    reader
        .read_exact(&mut header)
        .map_err(|e| DataError::io(path, e))?;
    if header.starts_with(b"MATLAB 7.3") {
        return Err(DataError::bad_header(
            path,
            "MATLAB 7.3 (HDF5) files are not supported; need a level-5 MAT-file (save -v7)",
        ));
    }
    let order = match &header[126..128] {
        b"IM" => Order::Little,
        b"MI" => Order::Big,
        other => {
            return Err(DataError::bad_header(
                path,
                format!(
                    "endian indicator {:?} at byte 126, expected \"IM\" or \"MI\": not a level-5 MAT-file",
                    String::from_utf8_lossy(other)
                ),
            ));
        }
    };
    let version = order.u16([header[124], header[125]]);
    if version != 0x0100 {
        return Err(DataError::bad_header(
            path,
            format!("version {version:#06x}, expected 0x0100 (level-5 MAT-file)"),
        ));
    }
    Ok(order)
}

/// A data element tag.
struct Tag {
    data_type: u32,
    bytes: u32,
    /// The data of a small data element (at most 4 bytes, packed in the
    /// tag).
    small: Option<[u8; 4]>,
}

/// Reads a tag (normal or small format).
fn read_tag(reader: &mut impl Read, order: Order) -> std::io::Result<Tag> {
    let mut raw = [0u8; 8];
    reader.read_exact(&mut raw)?;
    let first = order.u32([raw[0], raw[1], raw[2], raw[3]]);
    let second = [raw[4], raw[5], raw[6], raw[7]];
    Ok(if first >> 16 != 0 {
        Tag {
            data_type: first & 0xFFFF,
            bytes: first >> 16,
            small: Some(second),
        }
    } else {
        Tag {
            data_type: first,
            bytes: order.u32(second),
            small: None,
        }
    })
}

/// Why an element could not be read; turned into a [`DataError`] naming the
/// file and the element's offset.
enum Failure {
    Read(std::io::Error),
    Format(String),
    /// A variable of other dimensions than allowed: what is, what was found.
    Dimensions(String, String),
}

impl Failure {
    fn into_error(self, path: &Path, offset: u64) -> DataError {
        match self {
            Self::Format(detail) => {
                DataError::malformed(path, format!("element at byte {offset}: {detail}"))
            }
            Self::Dimensions(expected, found) => DataError::wrong_dimensions(path, expected, found),
            Self::Read(e) => match e.kind() {
                ErrorKind::UnexpectedEof => DataError::malformed(
                    path,
                    format!("element at byte {offset} ends before its content is complete"),
                ),
                ErrorKind::InvalidData | ErrorKind::InvalidInput => DataError::malformed(
                    path,
                    format!("element at byte {offset}: corrupt compressed data: {e}"),
                ),
                _ => DataError::io(path, e),
            },
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Read(e)
    }
}

/// Reads the data of a sub-element (normal or small format) and skips its
/// padding.
///
/// `reader` is limited to the enclosing matrix's content: a sub-element claiming more than is
/// left of it is an error before anything is reserved for it.
fn read_sub<R: Read>(reader: &mut Take<R>, tag: &Tag) -> Result<Vec<u8>, Failure> {
    if let Some(small) = tag.small {
        let n = tag.bytes as usize;
        if n > 4 {
            return Err(Failure::Format(format!("small element claims {n} bytes")));
        }
        return Ok(small[..n].to_vec());
    }
    let n = tag.bytes as usize;
    if u64::from(tag.bytes) > reader.limit() {
        return Err(Failure::Format(format!(
            "a sub-element claims {n} bytes, more than the {} left of its matrix",
            reader.limit()
        )));
    }
    let mut data = Vec::with_capacity(n.min(MAX_UPFRONT));
    Read::take(&mut *reader, n as u64).read_to_end(&mut data)?;
    if data.len() < n {
        return Err(Failure::Read(ErrorKind::UnexpectedEof.into()));
    }
    let padding = (n.next_multiple_of(8) - n) as u64;
    std::io::copy(&mut Read::take(&mut *reader, padding), &mut std::io::sink())?;
    Ok(data)
}

/// Reads a `miMATRIX` element's content; `None` if its name is not wanted.
/// `seen` are the variables read before it.
fn read_matrix<R: Read>(
    reader: &mut Take<R>,
    order: Order,
    wanted: &[&str],
    seen: &[MatVariable],
    bound: Bound<'_>,
) -> Result<Option<MatVariable>, Failure> {
    let flags_tag = read_tag(reader, order)?;
    if flags_tag.data_type != MI_UINT32 || flags_tag.bytes != 8 {
        return Err(Failure::Format("array flags sub-element missing".into()));
    }
    let flags = read_sub(reader, &flags_tag)?;
    let flags = order.u32([flags[0], flags[1], flags[2], flags[3]]);
    let class = flags & 0xFF;
    let complex = flags & 0x0800 != 0;

    let dims_tag = read_tag(reader, order)?;
    if dims_tag.data_type != MI_INT32 || dims_tag.bytes < 8 || dims_tag.bytes % 4 != 0 {
        return Err(Failure::Format("dimensions sub-element missing".into()));
    }
    let dims = read_sub(reader, &dims_tag)?
        .chunks_exact(4)
        .map(|d| {
            let d = order.u32([d[0], d[1], d[2], d[3]]) as i32;
            usize::try_from(d).map_err(|_| Failure::Format(format!("negative dimension {d}")))
        })
        .collect::<Result<Vec<usize>, Failure>>()?;

    let name_tag = read_tag(reader, order)?;
    if !matches!(name_tag.data_type, MI_INT8 | MI_UINT8 | MI_UTF8) {
        return Err(Failure::Format("array name sub-element missing".into()));
    }
    let name = String::from_utf8_lossy(&read_sub(reader, &name_tag)?).into_owned();
    if !wanted.contains(&name.as_str()) {
        return Ok(None);
    }
    if seen.iter().any(|v| v.name == name) {
        return Err(Failure::Format(format!(
            "a second variable {name} (a file has one of each name)"
        )));
    }
    if !(MX_DOUBLE..=MX_UINT64).contains(&class) {
        return Err(Failure::Format(format!(
            "variable {name} is a {} array, not a numeric one",
            class_name(class)
        )));
    }
    if complex {
        return Err(Failure::Format(format!("variable {name} is complex")));
    }

    let data_tag = read_tag(reader, order)?;
    let Some(width) = type_width(data_tag.data_type) else {
        return Err(Failure::Format(format!(
            "variable {name}: unsupported data type {}",
            data_tag.data_type
        )));
    };
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Failure::Format(format!("variable {name}: dimensions {dims:?} overflow")))?;
    if let Some((most, allowed)) = bound(&name, seen)
        && count > most
    {
        return Err(Failure::Dimensions(
            allowed,
            format!("{name} of {}", format_dims(&dims)),
        ));
    }
    if count.checked_mul(width) != Some(data_tag.bytes as usize) {
        return Err(Failure::Format(format!(
            "variable {name}: {} data bytes, but dimensions {dims:?} of {width}-byte values need {}",
            data_tag.bytes,
            count.saturating_mul(width)
        )));
    }
    let raw = read_sub(reader, &data_tag)?;
    let data = if class == MX_UINT8 {
        if data_tag.data_type != MI_UINT8 {
            return Err(Failure::Format(format!(
                "variable {name}: uint8 array stored as data type {}",
                data_tag.data_type
            )));
        }
        MatData::UInt8(raw)
    } else {
        MatData::Double(to_f64(&raw, data_tag.data_type, order))
    };
    Ok(Some(MatVariable {
        name,
        class,
        dims,
        data,
    }))
}

/// `a×b×c` for messages.
pub(crate) fn format_dims(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Size in bytes of one value of a numeric data type.
fn type_width(data_type: u32) -> Option<usize> {
    match data_type {
        MI_INT8 | MI_UINT8 => Some(1),
        MI_INT16 | MI_UINT16 => Some(2),
        MI_INT32 | MI_UINT32 | MI_SINGLE => Some(4),
        MI_DOUBLE | MI_INT64 | MI_UINT64 => Some(8),
        _ => None,
    }
}

/// Converts raw values of a numeric data type to `f64`.
fn to_f64(raw: &[u8], data_type: u32, order: Order) -> Vec<f64> {
    fn array<const N: usize>(chunk: &[u8], order: Order) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(chunk);
        if matches!(order, Order::Big) {
            b.reverse();
        }
        b
    }
    let width = type_width(data_type).unwrap_or(1);
    raw.chunks_exact(width)
        .map(|c| match data_type {
            MI_INT8 => f64::from(c[0] as i8),
            MI_UINT8 => f64::from(c[0]),
            MI_INT16 => f64::from(i16::from_le_bytes(array(c, order))),
            MI_UINT16 => f64::from(u16::from_le_bytes(array(c, order))),
            MI_INT32 => f64::from(i32::from_le_bytes(array(c, order))),
            MI_UINT32 => f64::from(u32::from_le_bytes(array(c, order))),
            MI_SINGLE => f64::from(f32::from_le_bytes(array(c, order))),
            MI_INT64 => i64::from_le_bytes(array(c, order)) as f64,
            MI_UINT64 => u64::from_le_bytes(array(c, order)) as f64,
            _ => f64::from_le_bytes(array(c, order)),
        })
        .collect()
}
