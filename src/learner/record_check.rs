//! The tensors of a MessagePack record (the format of Burn's `NamedMpk*` recorders), read
//! without building them, so that a checkpoint can be checked against the model it is loaded
//! into before Burn makes tensors of it: Burn's own loading trusts a record's shapes and byte
//! counts, and panics (or loads a model of the wrong shape) on a corrupt or foreign file.

use rmp::Marker;

/// One tensor of a record: where it is, its shape, data type and number of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorEntry {
    /// The field names from the record's root, joined by `.` (e.g. `item.conv1.weight.param`).
    pub path: String,
    /// The shape, `None` if the file's `shape` is not a list of integers.
    pub shape: Option<Vec<u64>>,
    /// The data type's name (`F32`, …), `None` if it is not a plain name.
    pub dtype: Option<String>,
    /// The number of bytes of its values.
    pub bytes: u64,
}

impl TensorEntry {
    /// Whether the byte count is the shape's element count times the data type's size (for
    /// plain numeric types; others are not checked).
    pub fn consistent(&self) -> bool {
        let Some(shape) = &self.shape else {
            return false;
        };
        let size = match self.dtype.as_deref() {
            Some("F64" | "I64" | "U64") => 8,
            Some("F32" | "Flex32" | "I32" | "U32") => 4,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            Some("I8" | "U8") => 1,
            _ => return true,
        };
        shape
            .iter()
            .try_fold(size, |n: u64, &d| n.checked_mul(d))
            .is_some_and(|n| n == self.bytes)
    }
}

/// The most nested lists and maps read (a record of Burn's modules is a few levels deep).
const MAX_DEPTH: usize = 128;

/// The longest list of integers kept as a shape.
const MAX_RANK: usize = 16;

/// What a record holds that Burn's loading trusts.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// The tensors (maps with the fields `bytes`, `shape` and `dtype`), in file order.
    pub tensors: Vec<TensorEntry>,
    /// The parameter ids (the `id` of maps with the fields `id` and `param`) and where they are.
    pub param_ids: Vec<(String, String)>,
}

/// Whether Burn reads `id` as a parameter id (its loading panics on any other): base32 (the
/// DNSSEC alphabet) of at most 8 bytes, or a UUID.
pub(crate) fn param_id_is_valid(id: &str) -> bool {
    match data_encoding::BASE32_DNSSEC.decode(id.as_bytes()) {
        Ok(bytes) => bytes.len() <= 8,
        Err(_) => uuid::Uuid::try_parse(id).is_ok(),
    }
}

/// The tensors and parameter ids of the MessagePack value `bytes`.
///
/// # Errors
/// A description of the first thing that is not MessagePack: a truncated value, a length past
/// the end, nesting deeper than [`MAX_DEPTH`], or bytes after the value.
pub(crate) fn read(bytes: &[u8]) -> Result<Found, String> {
    let mut reader = Reader { bytes, at: 0 };
    let mut found = Found::default();
    reader.value(&mut String::new(), 0, &mut found)?;
    if reader.at != bytes.len() {
        return Err(format!(
            "{} bytes after the record's end at byte {}",
            bytes.len() - reader.at,
            reader.at
        ));
    }
    Ok(found)
}

/// What a value was, as far as recognising a tensor needs.
enum Value {
    Int(u64),
    Str(String),
    /// A byte string of this length, or a list of this many items (a list of integers of at
    /// most [`MAX_RANK`] is [`Value::Ints`]).
    Len(u64),
    Ints(Vec<u64>),
    Other,
}

/// The bytes that follow `marker`: the value of a fixed-width number, the data of a fixed-size
/// extension, or the length field of a string, byte string, extension, list or map; 0 for the
/// markers that hold their value or length themselves.
fn width(marker: Marker) -> u64 {
    match marker {
        Marker::U8 | Marker::I8 | Marker::Str8 | Marker::Bin8 | Marker::Ext8 | Marker::FixExt1 => 1,
        Marker::U16
        | Marker::I16
        | Marker::Str16
        | Marker::Bin16
        | Marker::Ext16
        | Marker::Array16
        | Marker::Map16
        | Marker::FixExt2 => 2,
        Marker::U32
        | Marker::I32
        | Marker::F32
        | Marker::Str32
        | Marker::Bin32
        | Marker::Ext32
        | Marker::Array32
        | Marker::Map32
        | Marker::FixExt4 => 4,
        Marker::U64 | Marker::I64 | Marker::F64 | Marker::FixExt8 => 8,
        Marker::FixExt16 => 16,
        _ => 0,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: u64) -> Result<&[u8], String> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(format!(
                "a value of {n} bytes at byte {} runs past the end ({left} bytes left)",
                self.at
            ));
        }
        let start = self.at;
        self.at += n as usize;
        Ok(&self.bytes[start..self.at])
    }

    fn uint(&mut self, width: u64) -> Result<u64, String> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    }

    /// Reads one value (and what it holds), recording the tensors found under `path`.
    fn value(
        &mut self,
        path: &mut String,
        depth: usize,
        found: &mut Found,
    ) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "values nested deeper than {MAX_DEPTH} levels at byte {}",
                self.at
            ));
        }
        let marker = Marker::from_u8(self.take(1)?[0]);
        let width = width(marker);
        Ok(match marker {
            Marker::FixPos(n) => Value::Int(u64::from(n)),
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => Value::Int(self.uint(width)?),
            Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => Value::Other,
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 | Marker::F32 | Marker::F64 => {
                self.take(width)?;
                Value::Other
            }
            Marker::FixStr(n) => self.string(u64::from(n))?,
            Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.uint(width)?;
                self.string(n)?
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = self.uint(width)?;
                self.take(n)?;
                Value::Len(n)
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16 => {
                // The type byte, then the data.
                self.take(1 + width)?;
                Value::Other
            }
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => {
                let n = self.uint(width)?;
                self.take(1 + n)?;
                Value::Other
            }
            Marker::FixArray(n) => self.list(u64::from(n), path, depth, found)?,
            Marker::Array16 | Marker::Array32 => {
                let n = self.uint(width)?;
                self.list(n, path, depth, found)?
            }
            Marker::FixMap(n) => self.map(u64::from(n), path, depth, found)?,
            Marker::Map16 | Marker::Map32 => {
                let n = self.uint(width)?;
                self.map(n, path, depth, found)?
            }
            Marker::Reserved => return Err(format!("byte 0xc1 at byte {}", self.at - 1)),
        })
    }

    fn string(&mut self, n: u64) -> Result<Value, String> {
        let bytes = self.take(n)?;
        Ok(Value::Str(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn list(
        &mut self,
        n: u64,
        path: &mut String,
        depth: usize,
        found: &mut Found,
    ) -> Result<Value, String> {
        let mut ints = Some(Vec::new());
        for index in 0..n {
            let len = path.len();
            path.push_str(&format!(".{index}"));
            let item = self.value(path, depth + 1, found)?;
            path.truncate(len);
            ints = match (ints, item) {
                (Some(mut ints), Value::Int(d)) if ints.len() < MAX_RANK => {
                    ints.push(d);
                    Some(ints)
                }
                _ => None,
            };
        }
        Ok(ints.map_or(Value::Len(n), Value::Ints))
    }

    fn map(
        &mut self,
        n: u64,
        path: &mut String,
        depth: usize,
        found: &mut Found,
    ) -> Result<Value, String> {
        let (mut bytes, mut shape, mut dtype) = (None, None, None);
        let (mut id, mut param) = (None, false);
        for _ in 0..n {
            let key = match self.value(path, depth + 1, found)? {
                Value::Str(key) => key,
                Value::Int(key) => key.to_string(),
                _ => "?".to_string(),
            };
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key);
            let value = self.value(path, depth + 1, found)?;
            path.truncate(len);
            match (key.as_str(), value) {
                ("bytes", Value::Len(n)) => bytes = Some(n),
                // A short list of integers read as bytes (Burn's reader takes a list too).
                ("bytes", Value::Ints(values)) => bytes = Some(values.len() as u64),
                ("shape", Value::Ints(dims)) => shape = Some(Some(dims)),
                ("shape", _) => shape = Some(None),
                ("dtype", Value::Str(name)) => dtype = Some(Some(name)),
                ("dtype", _) => dtype = Some(None),
                ("id", Value::Str(text)) => id = Some(text),
                ("param", _) => param = true,
                _ => {}
            }
        }
        if let (Some(id), true) = (id, param) {
            found.param_ids.push((path.clone(), id));
        }
        if let (Some(bytes), Some(shape), Some(dtype)) = (bytes, shape, dtype) {
            found.tensors.push(TensorEntry {
                path: path.clone(),
                shape,
                dtype,
                bytes,
            });
        }
        Ok(Value::Other)
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::NdArray;
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    type B = NdArray;

    fn record_bytes(data: TensorData) -> Vec<u8> {
        let tensor = Tensor::<B, 2>::from_data(data, &Default::default());
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        Recorder::<B>::record(&recorder, tensor, ()).unwrap()
    }

    #[test]
    fn finds_the_tensor_of_a_burn_record() {
        let bytes = record_bytes(TensorData::new(vec![1.0f32; 6], [2, 3]));
        let found = read(&bytes).unwrap().tensors;
        assert_eq!(found.len(), 1, "{found:?}");
        let entry = &found[0];
        assert_eq!(entry.path, "item");
        assert_eq!(entry.shape, Some(vec![2, 3]));
        assert_eq!(entry.dtype.as_deref(), Some("F32"));
        assert_eq!(entry.bytes, 24);
        assert!(entry.consistent());
    }

    #[test]
    fn a_changed_shape_is_inconsistent() {
        let bytes = record_bytes(TensorData::new(vec![1.0f32; 6], [2, 3]));
        // The shape [2, 3] is written as the two positive fixints 0x02 0x03 after the fixarray
        // marker 0x92: make it [2, 5].
        let at = bytes
            .windows(3)
            .position(|w| w == [0x92, 0x02, 0x03])
            .unwrap();
        let mut changed = bytes.clone();
        changed[at + 2] = 0x05;
        let entry = &read(&changed).unwrap().tensors[0];
        assert_eq!(entry.shape, Some(vec![2, 5]));
        assert!(!entry.consistent());
    }

    #[test]
    fn param_ids_are_those_burn_reads() {
        let id = burn::module::ParamId::new().serialize();
        assert!(param_id_is_valid(&id));
        assert!(param_id_is_valid("67e55044-10b1-426f-9247-bb680e5fe0c8"));
        // Burn panics on each of these: not base32 nor a UUID, and base32 of 9 bytes.
        for bad in ["!", "0", "0123456789abcdef"] {
            assert!(!param_id_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn truncated_deep_and_trailing_bytes_are_errors() {
        let bytes = record_bytes(TensorData::new(vec![1.0f32; 6], [2, 3]));
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            let error = read(&bytes[..cut]).unwrap_err();
            assert!(error.contains("runs past the end"), "{error}");
        }
        let deep = vec![0x91; 10_000];
        assert!(read(&deep).unwrap_err().contains("nested deeper"));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(read(&trailing).unwrap_err().contains("after the record"));
        // A list claiming 2^32 - 1 items in 5 bytes fails on its first missing item, without
        // reserving anything for them.
        assert!(read(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
