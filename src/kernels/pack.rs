//! Packing floats into sign bits or bit planes, and back.

use super::words_per_row;

/// Packs the signs of `rows` rows of `k` values (row-major `src`) into `out`
/// (`rows · words_per_row(k)` words): bit 1 where the value is `< 0`.
pub fn pack_signs(src: &[f32], rows: usize, k: usize, out: &mut [u64]) {
    let words = words_per_row(k);
    assert_eq!(src.len(), rows * k, "pack_signs: source length");
    assert_eq!(out.len(), rows * words, "pack_signs: output length");
    for r in 0..rows {
        let row = &src[r * k..(r + 1) * k];
        let dst = &mut out[r * words..(r + 1) * words];
        dst.fill(0);
        for (j, &x) in row.iter().enumerate() {
            if x < 0.0 {
                dst[j / 64] |= 1 << (j % 64);
            }
        }
    }
}

/// Packs the signs of the columns of a row-major `[k, n]` matrix: output row `c` holds column `c`.
pub fn pack_signs_columns(src: &[f32], k: usize, n: usize, out: &mut [u64]) {
    let words = words_per_row(k);
    assert_eq!(src.len(), k * n, "pack_signs_columns: source length");
    assert_eq!(out.len(), n * words, "pack_signs_columns: output length");
    out.fill(0);
    for j in 0..k {
        for c in 0..n {
            if src[j * n + c] < 0.0 {
                out[c * words + j / 64] |= 1 << (j % 64);
            }
        }
    }
}

/// Unpacks sign bits into ±1.
pub fn unpack_signs(packed: &[u64], rows: usize, k: usize, out: &mut [f32]) {
    let words = words_per_row(k);
    assert_eq!(packed.len(), rows * words, "unpack_signs: packed length");
    assert_eq!(out.len(), rows * k, "unpack_signs: output length");
    for r in 0..rows {
        for j in 0..k {
            let bit = (packed[r * words + j / 64] >> (j % 64)) & 1;
            out[r * k + j] = if bit == 1 { -1.0 } else { 1.0 };
        }
    }
}

/// The integer code of a value: truncated towards zero and saturated to `[0, 2^bits − 1]`
/// (NaN → 0).
pub fn code(x: f32, bits: u32) -> u32 {
    (x as u32).min((1 << bits) - 1)
}

/// Packs unsigned `bits`-bit codes of `rows` rows of `k` values into bit planes
/// (`rows · bits · words_per_row(k)` words).
pub fn pack_planes(src: &[f32], rows: usize, k: usize, bits: u32, out: &mut [u64]) {
    let words = words_per_row(k);
    let b = bits as usize;
    assert_eq!(src.len(), rows * k, "pack_planes: source length");
    assert_eq!(out.len(), rows * b * words, "pack_planes: output length");
    out.fill(0);
    for r in 0..rows {
        for j in 0..k {
            let c = code(src[r * k + j], bits);
            for p in 0..b {
                if (c >> p) & 1 == 1 {
                    out[(r * b + p) * words + j / 64] |= 1 << (j % 64);
                }
            }
        }
    }
}

/// Packs the columns of a row-major `[k, n]` matrix of codes into bit planes: row `c` of the
/// output holds column `c`.
pub fn pack_planes_columns(src: &[f32], k: usize, n: usize, bits: u32, out: &mut [u64]) {
    let words = words_per_row(k);
    let b = bits as usize;
    assert_eq!(src.len(), k * n, "pack_planes_columns: source length");
    assert_eq!(
        out.len(),
        n * b * words,
        "pack_planes_columns: output length"
    );
    out.fill(0);
    for j in 0..k {
        for c in 0..n {
            let v = code(src[j * n + c], bits);
            for p in 0..b {
                if (v >> p) & 1 == 1 {
                    out[(c * b + p) * words + j / 64] |= 1 << (j % 64);
                }
            }
        }
    }
}

/// Unpacks bit planes into codes (as f32).
pub fn unpack_planes(packed: &[u64], rows: usize, k: usize, bits: u32, out: &mut [f32]) {
    let words = words_per_row(k);
    let b = bits as usize;
    assert_eq!(
        packed.len(),
        rows * b * words,
        "unpack_planes: packed length"
    );
    assert_eq!(out.len(), rows * k, "unpack_planes: output length");
    for r in 0..rows {
        for j in 0..k {
            let mut c = 0u32;
            for p in 0..b {
                c |= (((packed[(r * b + p) * words + j / 64] >> (j % 64)) & 1) as u32) << p;
            }
            out[r * k + j] = c as f32;
        }
    }
}
