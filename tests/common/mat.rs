//! Writers of level-5 MAT-files (the format of SVHN's files), little-endian: the data elements,
//! matrices and compressed elements the reader's tests and the fuzz harness build files from.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

pub const MI_INT8: u32 = 1;
pub const MI_UINT8: u32 = 2;
pub const MI_INT32: u32 = 5;
pub const MI_UINT32: u32 = 6;
pub const MI_DOUBLE: u32 = 9;
pub const MI_MATRIX: u32 = 14;
pub const MI_COMPRESSED: u32 = 15;
pub const MX_DOUBLE: u32 = 6;
pub const MX_UINT8: u32 = 9;

/// A data element in normal format, padded to 8 bytes.
pub fn element(data_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(data_type.to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out.resize(out.len().next_multiple_of(8), 0);
    out
}

/// A data element in small format (at most 4 bytes of data).
pub fn small_element(data_type: u32, data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= 4);
    let mut out = Vec::new();
    out.extend((data_type as u16).to_le_bytes());
    out.extend((data.len() as u16).to_le_bytes());
    out.extend(data);
    out.resize(8, 0);
    out
}

/// A `miMATRIX` element: array flags, dimensions, name, real part.
pub fn matrix(name: &str, class: u32, dims: &[u32], data_type: u32, data: &[u8]) -> Vec<u8> {
    let mut flags = class.to_le_bytes().to_vec();
    flags.extend(0u32.to_le_bytes());
    let dims: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    let mut content = element(MI_UINT32, &flags);
    content.extend(element(MI_INT32, &dims));
    if name.len() <= 4 {
        content.extend(small_element(MI_INT8, name.as_bytes()));
    } else {
        content.extend(element(MI_INT8, name.as_bytes()));
    }
    content.extend(element(data_type, data));
    element(MI_MATRIX, &content)
}

/// A `miCOMPRESSED` element holding `inner` zlib-compressed.
pub fn compressed(inner: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(inner).unwrap();
    let z = z.finish().unwrap();
    let mut out = MI_COMPRESSED.to_le_bytes().to_vec();
    out.extend((z.len() as u32).to_le_bytes());
    out.extend(z);
    out
}

/// The 128-byte header of a little-endian level-5 MAT-file.
pub fn header() -> Vec<u8> {
    let mut text =
        b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024".to_vec();
    text.resize(116, b' ');
    text.extend([0u8; 8]);
    text.extend(0x0100u16.to_le_bytes());
    text.extend(b"IM");
    text
}
