//! Packing floats into sign bits or bit planes, and back.
//!
//! Rows pack independently, in parallel once the input is large; the SIMD paths compare 16
//! (AVX-512) or 8 (AVX2) values at a time. Column packing reads 64 × 64 blocks of the row-major
//! matrix and transposes their bits.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::pack_x86;
use super::{
    CheckedIsa,
    isa::{Isa, active_isa},
    transpose::transpose64,
    words_per_row,
};

/// Values below which one thread packs everything.
const PAR_MIN_VALUES: usize = 1 << 16;
/// Words per task when a single long row is split between threads.
const ROW_SPLIT_WORDS: usize = 1024;
/// Columns packed by one task: 1024 `f32` (4 KiB, a page) of every source row, so that a band of
/// 64 rows touches few pages and reads them whole.
const COLUMN_GROUP: usize = 1024;
/// The bit pattern of `1.0f32`; setting the sign bit gives `−1.0`.
const ONE_BITS: u32 = 0x3f80_0000;

/// Each row's sum of unsigned codes from its bit planes (`rows` rows of `bits` planes of
/// `words_per_row(k)` words, padding bits 0): `Σ_p 2^p · popcount(plane p)`, rows in parallel.
pub fn plane_code_sums(words: &[u64], rows: usize, k: usize, bits: u32) -> Vec<f32> {
    let row_words = bits as usize * words_per_row(k);
    assert_eq!(
        words.len(),
        rows * row_words,
        "plane_code_sums: words length"
    );
    let mut sums = vec![0f32; rows];
    sums.par_iter_mut()
        .zip(words.par_chunks(row_words.max(1)))
        .for_each(|(sum, row)| {
            let total: u64 = row
                .chunks(words_per_row(k).max(1))
                .enumerate()
                .map(|(p, plane)| plane.iter().map(|w| u64::from(w.count_ones())).sum::<u64>() << p)
                .sum();
            *sum = total as f32;
        });
    sums
}

/// Packs the signs of `rows` rows of `k` values (row-major `src`) into `out`
/// (`rows · words_per_row(k)` words): bit 1 where the value is `< 0`.
pub fn pack_signs(src: &[f32], rows: usize, k: usize, out: &mut [u64]) {
    let isa = active_isa();
    let words = words_per_row(k);
    super::check_len("pack_signs: source length", src.len(), &[rows, k]);
    super::check_len("pack_signs: output length", out.len(), &[rows, words]);
    let isa = CheckedIsa::new(isa);
    if k >= PAR_MIN_VALUES && rows < 2 * rayon::current_num_threads() {
        for (row, dst) in src.chunks(k).zip(out.chunks_mut(words)) {
            row.par_chunks(64 * ROW_SPLIT_WORDS)
                .zip(dst.par_chunks_mut(ROW_SPLIT_WORDS))
                .for_each(|(part, dst)| signs_row(isa, part, dst));
        }
    } else {
        for_each_row(src, k, out, words, |row, dst| signs_row(isa, row, dst));
    }
}

/// Packs the signs of convolution weights `[C_out, C_in, k_h, k_w]` (row-major `src`) into
/// rows `[C_out, k_h·k_w·padded]`: in output channel `o`'s row, tap `t = y·k_w + x` and input
/// channel `i` at bit `t·padded + i` (bit 1 where the value is `< 0`), the `padded − C_in`
/// bits after each tap's channels 0 (+1). The same bits as [`pack_signs`] of the weights
/// permuted to `[C_out, k_h, k_w, C_in]` and zero-padded to `padded` channels; `padded` must be
/// a multiple of 64, so that each tap starts a word. Output channels run in parallel.
///
/// # Panics
/// If `padded` is below `C_in` or not a multiple of 64, or a length does not match.
pub fn pack_conv_weight_signs(src: &[f32], dims: [usize; 4], padded: usize, out: &mut [u64]) {
    let [c_out, c_in, kh, kw] = dims;
    assert!(
        padded >= c_in && padded.is_multiple_of(64),
        "pack_conv_weight_signs: {padded} padded channels for {c_in} input channels"
    );
    super::check_len("pack_conv_weight_signs: source length", src.len(), &dims);
    let (taps, tap_words) = (kh * kw, padded / 64);
    super::check_len(
        "pack_conv_weight_signs: output length",
        out.len(),
        &[c_out, taps, tap_words],
    );
    if out.is_empty() {
        return;
    }
    let per_output = c_in * taps;
    out.par_chunks_mut(taps * tap_words)
        .enumerate()
        .for_each(|(o, row)| {
            row.fill(0);
            let weights = &src[o * per_output..(o + 1) * per_output];
            for (i, taps_of_i) in weights.chunks(taps.max(1)).enumerate() {
                for (tap, &w) in taps_of_i.iter().enumerate() {
                    let bit = tap * padded + i;
                    row[bit / 64] |= u64::from(w < 0.0) << (bit % 64);
                }
            }
        });
}

/// Packs the signs of the columns of a row-major `[k, n]` matrix: output row `c` holds column `c`.
pub fn pack_signs_columns(src: &[f32], k: usize, n: usize, out: &mut [u64]) {
    let isa = active_isa();
    let words = words_per_row(k);
    super::check_len("pack_signs_columns: source length", src.len(), &[k, n]);
    super::check_len("pack_signs_columns: output length", out.len(), &[n, words]);
    let isa = CheckedIsa::new(isa);
    for_each_column_block(out, COLUMN_GROUP * words, k * n, |c0, block| {
        signs_column_group(isa, src, k, n, c0, block)
    });
}

/// Unpacks sign bits into ±1.
pub fn unpack_signs(packed: &[u64], rows: usize, k: usize, out: &mut [f32]) {
    let words = words_per_row(k);
    super::check_len("unpack_signs: packed length", packed.len(), &[rows, words]);
    super::check_len("unpack_signs: output length", out.len(), &[rows, k]);
    for_each_row(packed, words, out, k, unpack_signs_row);
}

/// The integer code of a value: truncated towards zero and saturated to `[0, 2^bits − 1]`
/// (NaN → 0).
pub fn code(x: f32, bits: u32) -> u32 {
    (x as u32).min((1 << bits) - 1)
}

/// Packs unsigned `bits`-bit codes of `rows` rows of `k` values into bit planes
/// (`rows · bits · words_per_row(k)` words).
pub fn pack_planes(src: &[f32], rows: usize, k: usize, bits: u32, out: &mut [u64]) {
    let isa = active_isa();
    let words = words_per_row(k);
    let b = bits as usize;
    super::check_len("pack_planes: source length", src.len(), &[rows, k]);
    super::check_len("pack_planes: output length", out.len(), &[rows, b, words]);
    let isa = CheckedIsa::new(isa);
    for_each_row(src, k, out, b * words, |row, dst| {
        planes_row(isa, row, bits, dst)
    });
}

/// Packs the columns of a row-major `[k, n]` matrix of codes into bit planes: row `c` of the
/// output holds column `c`.
pub fn pack_planes_columns(src: &[f32], k: usize, n: usize, bits: u32, out: &mut [u64]) {
    let isa = active_isa();
    let words = words_per_row(k);
    let b = bits as usize;
    super::check_len("pack_planes_columns: source length", src.len(), &[k, n]);
    super::check_len(
        "pack_planes_columns: output length",
        out.len(),
        &[n, b, words],
    );
    let isa = CheckedIsa::new(isa);
    for_each_column_block(out, COLUMN_GROUP * b * words, k * n * b, |c0, block| {
        planes_column_group(isa, src, (k, n), c0, bits, block)
    });
}

/// Unpacks bit planes into codes (as f32).
pub fn unpack_planes(packed: &[u64], rows: usize, k: usize, bits: u32, out: &mut [f32]) {
    let codes: Vec<f32> = (0..1u32 << bits).map(|c| c as f32).collect();
    decode_planes(packed, rows, k, bits, &codes, out);
}

/// Unpacks bit planes into `levels[code]`: the values of the codes (`levels` holds one value
/// for each of the `2^bits` codes).
///
/// # Panics
/// If a length does not fit `rows`, `k` and `bits`.
pub fn decode_planes(
    packed: &[u64],
    rows: usize,
    k: usize,
    bits: u32,
    levels: &[f32],
    out: &mut [f32],
) {
    let words = words_per_row(k);
    let b = bits as usize;
    super::check_len(
        "decode_planes: packed length",
        packed.len(),
        &[rows, b, words],
    );
    super::check_len("decode_planes: output length", out.len(), &[rows, k]);
    assert_eq!(levels.len(), 1 << bits, "decode_planes: one level per code");
    for_each_row(packed, b * words, out, k, |planes, dst| {
        decode_planes_row(planes, b, words, levels, dst)
    });
}

/// 64 flags (each 0 or 1) as the bits of a word, flag `j` in bit `j`: eight at a time, a
/// multiplication gathering bit 0 of each byte into the top byte.
pub(crate) fn flags_to_bits(flags: &[u8; 64]) -> u64 {
    flags
        .chunks_exact(8)
        .enumerate()
        .fold(0, |word, (i, group)| {
            let group = u64::from_le_bytes(group.try_into().expect("8 flags"));
            word | ((group.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * i))
        })
}

/// Calls `f(src row i, dst row i)` for every row (`src_len` and `dst_len` long), over threads
/// once the data is large.
fn for_each_row<S: Sync, D: Send>(
    src: &[S],
    src_len: usize,
    dst: &mut [D],
    dst_len: usize,
    f: impl Fn(&[S], &mut [D]) + Sync,
) {
    if dst_len == 0 {
        return;
    }
    let job = |(i, d): (usize, &mut [D])| f(&src[i * src_len..(i + 1) * src_len], d);
    if src.len().max(dst.len()) < PAR_MIN_VALUES || rayon::current_num_threads() <= 1 {
        dst.chunks_mut(dst_len).enumerate().for_each(job);
    } else {
        let min_rows = (PAR_MIN_VALUES / 4 / src_len.max(dst_len)).max(1);
        dst.par_chunks_mut(dst_len)
            .enumerate()
            .with_min_len(min_rows)
            .for_each(job);
    }
}

/// Calls `f(first column, output block)` for every block of [`COLUMN_GROUP`] output rows
/// (`block_len` words), over threads once `work` is large.
fn for_each_column_block(
    out: &mut [u64],
    block_len: usize,
    work: usize,
    f: impl Fn(usize, &mut [u64]) + Sync,
) {
    if block_len == 0 {
        return;
    }
    let job = |(cb, block): (usize, &mut [u64])| f(COLUMN_GROUP * cb, block);
    if work < PAR_MIN_VALUES || rayon::current_num_threads() <= 1 {
        out.chunks_mut(block_len).enumerate().for_each(job);
    } else {
        out.par_chunks_mut(block_len).enumerate().for_each(job);
    }
}

/// Sign words of one row (or a 64-aligned piece of one): `dst[w]` packs `row[64w ..]`.
fn signs_row(isa: CheckedIsa, row: &[f32], dst: &mut [u64]) {
    match isa.isa() {
        // SAFETY: a `CheckedIsa` holds an x86 path only where the CPU runs it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { pack_x86::signs_row_avx512(row, dst) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { pack_x86::signs_row_avx2(row, dst) },
        _ => {
            for (d, chunk) in dst.iter_mut().zip(row.chunks(64)) {
                *d = signs64_portable(chunk);
            }
        }
    }
}

/// Sign word of ≤ 64 values: bit `t` is `chunk[t] < 0`.
fn signs64_portable(chunk: &[f32]) -> u64 {
    chunk
        .iter()
        .enumerate()
        .fold(0, |acc, (t, &x)| acc | (u64::from(x < 0.0) << t))
}

/// Sign words of a band of `rows` rows of the `[k, n]` matrix from row `r0`: `m[tile][t]`
/// packs the 64 values of row `r0 + t` from column `c0 + 64·tile`.
fn signs_band(
    isa: CheckedIsa,
    src: &[f32],
    n: usize,
    (r0, rows, c0): (usize, usize, usize),
    m: &mut [[u64; 64]],
) {
    match isa.isa() {
        // SAFETY: a `CheckedIsa` holds an x86 path only where the CPU runs it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { pack_x86::signs_band_avx512(src, n, (r0, rows), c0, m) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { pack_x86::signs_band_avx2(src, n, (r0, rows), c0, m) },
        _ => {
            let width = n.saturating_sub(c0).min(64 * m.len());
            for t in 0..rows {
                let start = (r0 + t) * n + c0;
                for (tile, chunk) in m.iter_mut().zip(src[start..start + width].chunks(64)) {
                    tile[t] = signs64_portable(chunk);
                }
            }
        }
    }
}

/// Packs columns `c0 ..` (as many as `group` holds) of the `[k, n]` matrix: for every band of 64
/// rows, reads the rows' segments whole into 64 × 64 tiles of sign bits, then transposes them.
fn signs_column_group(
    isa: CheckedIsa,
    src: &[f32],
    k: usize,
    n: usize,
    c0: usize,
    group: &mut [u64],
) {
    let words = words_per_row(k);
    let columns = group.len() / words;
    let mut m = vec![[0u64; 64]; columns.div_ceil(64)];
    for w in 0..words {
        let r0 = 64 * w;
        m.iter_mut().for_each(|tile| tile.fill(0));
        signs_band(isa, src, n, (r0, (k - r0).min(64), c0), &mut m);
        for (t, tile) in m.iter_mut().enumerate() {
            transpose64(tile);
            let width = (columns - 64 * t).min(64);
            for (c, &word) in tile.iter().enumerate().take(width) {
                group[(64 * t + c) * words + w] = word;
            }
        }
    }
}

/// Unpacks one row of sign words into ±1.
fn unpack_signs_row(packed: &[u64], out: &mut [f32]) {
    for (chunk, &word) in out.chunks_mut(64).zip(packed) {
        for (t, o) in chunk.iter_mut().enumerate() {
            *o = f32::from_bits(ONE_BITS | ((((word >> t) & 1) as u32) << 31));
        }
    }
}

/// Whether the SIMD plane paths handle codes of `bits` bits.
fn simd_planes(isa: CheckedIsa, bits: u32) -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    if bits <= pack_x86::SIMD_MAX_BITS && isa.isa() != Isa::Portable {
        return Some(isa.isa());
    }
    let _ = (isa, bits);
    None
}

/// Bit planes of one row: `dst[p·words + w]` packs plane `p` of `row[64w ..]`.
fn planes_row(isa: CheckedIsa, row: &[f32], bits: u32, dst: &mut [u64]) {
    match simd_planes(isa, bits) {
        // SAFETY: a `CheckedIsa` holds an x86 path only where the CPU runs it; `bits` is in the
        // SIMD range.
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx512) => unsafe { pack_x86::planes_row_avx512(row, bits, dst) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx2) => unsafe { pack_x86::planes_row_avx2(row, bits, dst) },
        _ => {
            let mut tmp = vec![0u64; bits as usize];
            let words = dst.len() / bits as usize;
            for (w, chunk) in row.chunks(64).enumerate() {
                planes64_portable(chunk, bits, &mut tmp);
                for (p, &plane) in tmp.iter().enumerate() {
                    dst[p * words + w] = plane;
                }
            }
        }
    }
}

/// Bit planes of ≤ 64 codes: `out[p]` bit `t` is bit `p` of `code(chunk[t], bits)`.
fn planes64_portable(chunk: &[f32], bits: u32, out: &mut [u64]) {
    out.fill(0);
    for (t, &x) in chunk.iter().enumerate() {
        let c = code(x, bits);
        for (p, o) in out.iter_mut().enumerate() {
            *o |= u64::from((c >> p) & 1) << t;
        }
    }
}

/// Bit planes of a band of `rows` rows of the `[k, n]` matrix from row `r0`:
/// `m[tile·bits + p][t]` is plane `p` of the 64 values of row `r0 + t` from column
/// `c0 + 64·tile`.
fn planes_band(
    isa: CheckedIsa,
    src: &[f32],
    n: usize,
    (r0, rows, c0): (usize, usize, usize),
    bits: u32,
    m: &mut [[u64; 64]],
) {
    match simd_planes(isa, bits) {
        // SAFETY: a `CheckedIsa` holds an x86 path only where the CPU runs it; `bits` is in the
        // SIMD range.
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx512) => unsafe {
            pack_x86::planes_band_avx512(src, n, (r0, rows), c0, bits, m)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx2) => unsafe { pack_x86::planes_band_avx2(src, n, (r0, rows), c0, bits, m) },
        _ => {
            let b = bits as usize;
            let width = n.saturating_sub(c0).min(64 * (m.len() / b));
            let mut tmp = vec![0u64; b];
            for t in 0..rows {
                let start = (r0 + t) * n + c0;
                for (tile, chunk) in m.chunks_mut(b).zip(src[start..start + width].chunks(64)) {
                    planes64_portable(chunk, bits, &mut tmp);
                    for (plane, &word) in tile.iter_mut().zip(&tmp) {
                        plane[t] = word;
                    }
                }
            }
        }
    }
}

/// Packs the bit planes of columns `c0 ..` (as many as `group` holds) of the `[k, n]` matrix:
/// for every band of 64 rows, reads the rows' segments whole into 64 × 64 tiles per plane, then
/// transposes them.
fn planes_column_group(
    isa: CheckedIsa,
    src: &[f32],
    (k, n): (usize, usize),
    c0: usize,
    bits: u32,
    group: &mut [u64],
) {
    let words = words_per_row(k);
    let b = bits as usize;
    let columns = group.len() / (b * words);
    let mut m = vec![[0u64; 64]; columns.div_ceil(64) * b];
    for w in 0..words {
        let r0 = 64 * w;
        m.iter_mut().for_each(|plane| plane.fill(0));
        planes_band(isa, src, n, (r0, (k - r0).min(64), c0), bits, &mut m);
        for (i, plane) in m.iter_mut().enumerate() {
            transpose64(plane);
            let (t, p) = (i / b, i % b);
            let width = (columns - 64 * t).min(64);
            for (c, &word) in plane.iter().enumerate().take(width) {
                group[((64 * t + c) * b + p) * words + w] = word;
            }
        }
    }
}

/// Bit `j` of a byte moved to bit 0 of byte `j` of a word, for every byte.
static SPREAD: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut j = 0;
        while j < 8 {
            table[byte] |= ((byte as u64 >> j) & 1) << (8 * j);
            j += 1;
        }
        byte += 1;
    }
    table
};

/// One row of [`decode_planes`]: the codes of 64 values are assembled as 64 bytes (eight bits
/// of a plane spread into eight bytes at a time), then looked up in `levels`.
fn decode_planes_row(planes: &[u64], bits: usize, words: usize, levels: &[f32], out: &mut [f32]) {
    for (w, chunk) in out.chunks_mut(64).enumerate() {
        let mut codes = [0u64; 8];
        for p in 0..bits {
            let word = planes[p * words + w];
            for (byte, code) in codes.iter_mut().enumerate() {
                *code |= SPREAD[((word >> (8 * byte)) & 0xff) as usize] << p;
            }
        }
        let codes = codes.iter().flat_map(|c| c.to_le_bytes());
        for (o, c) in chunk.iter_mut().zip(codes) {
            *o = levels[usize::from(c)];
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::kernels::isa::with_isa;

    const KS: [usize; 9] = [1, 31, 63, 64, 65, 127, 128, 1000, 4097];
    /// Zeros, NaNs, infinities and the smallest normal and subnormal values, of both signs.
    pub(in crate::kernels) const SPECIAL: [f32; 10] = [
        0.0,
        -0.0,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
    ];

    /// Random values with a sprinkling of special ones.
    fn values(rng: &mut StdRng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| {
                if rng.random_range(0..8) == 0 {
                    SPECIAL[rng.random_range(0..SPECIAL.len())]
                } else {
                    rng.random_range(-3.0f32..300.0) - 20.0
                }
            })
            .collect()
    }

    /// Row-major `[rows, k]` sign bits from the definition.
    fn ref_signs(src: &[f32], rows: usize, k: usize) -> Vec<u64> {
        let words = words_per_row(k);
        let mut out = vec![0; rows * words];
        for r in 0..rows {
            for j in 0..k {
                if src[r * k + j] < 0.0 {
                    out[r * words + j / 64] |= 1 << (j % 64);
                }
            }
        }
        out
    }

    /// Row-major bit planes from the definition.
    fn ref_planes(src: &[f32], rows: usize, k: usize, bits: u32) -> Vec<u64> {
        let words = words_per_row(k);
        let b = bits as usize;
        let mut out = vec![0; rows * b * words];
        for r in 0..rows {
            for j in 0..k {
                let c = code(src[r * k + j], bits);
                for p in 0..b {
                    out[(r * b + p) * words + j / 64] |= u64::from((c >> p) & 1) << (j % 64);
                }
            }
        }
        out
    }

    /// The transpose of a row-major `[k, n]` matrix.
    fn transposed(src: &[f32], k: usize, n: usize) -> Vec<f32> {
        (0..n * k).map(|i| src[(i % k) * n + i / k]).collect()
    }

    /// Convolution weights packed per tap equal the signs of the weights permuted to
    /// `[C_out, k_h, k_w, C_in]` and zero-padded, channel counts off the word size included.
    #[test]
    fn conv_weight_signs_match_the_permuted_padded_rows() {
        let mut rng = StdRng::seed_from_u64(5);
        for dims in [
            [3usize, 5, 3, 3],
            [32, 64, 3, 3],
            [7, 65, 2, 3],
            [2, 130, 1, 1],
            [1, 1, 1, 1],
        ] {
            let [c_out, c_in, kh, kw] = dims;
            let padded = c_in.next_multiple_of(64);
            let src = values(&mut rng, c_out * c_in * kh * kw);
            let k = kh * kw * padded;
            let mut rows = vec![0.0f32; c_out * k];
            for o in 0..c_out {
                for i in 0..c_in {
                    for tap in 0..kh * kw {
                        rows[o * k + tap * padded + i] = src[(o * c_in + i) * kh * kw + tap];
                    }
                }
            }
            let mut out = vec![u64::MAX; c_out * words_per_row(k)];
            pack_conv_weight_signs(&src, dims, padded, &mut out);
            assert_eq!(out, ref_signs(&rows, c_out, k), "{dims:?}");
        }
    }

    #[test]
    #[should_panic(expected = "padded channels")]
    fn conv_weight_signs_need_word_aligned_taps() {
        pack_conv_weight_signs(&[1.0; 70 * 9], [1, 70, 3, 3], 70, &mut [0; 10]);
    }

    #[test]
    fn signs_match_definition_on_every_isa() {
        let mut rng = StdRng::seed_from_u64(1);
        for isa in Isa::available() {
            for &k in &KS {
                for rows in [1, 3] {
                    let src = values(&mut rng, rows * k);
                    let mut out = vec![u64::MAX; rows * words_per_row(k)];
                    with_isa(isa, || pack_signs(&src, rows, k, &mut out));
                    assert_eq!(out, ref_signs(&src, rows, k), "{isa:?} k={k} rows={rows}");
                }
            }
        }
    }

    #[test]
    fn signs_of_special_values() {
        let src = [
            -0.0,
            f32::NAN,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1e-45,
            -f32::NAN,
        ];
        for isa in Isa::available() {
            let mut out = [u64::MAX];
            with_isa(isa, || pack_signs(&src, 1, src.len(), &mut out));
            assert_eq!(out[0], 0b011_0000, "{isa:?}");
        }
    }

    #[test]
    fn signs_of_large_inputs_split_between_threads() {
        let mut rng = StdRng::seed_from_u64(2);
        for (rows, k) in [(1, 200_000), (300, 300)] {
            let src = values(&mut rng, rows * k);
            for isa in Isa::available() {
                let mut out = vec![0; rows * words_per_row(k)];
                with_isa(isa, || pack_signs(&src, rows, k, &mut out));
                assert_eq!(out, ref_signs(&src, rows, k), "{isa:?} {rows}x{k}");
            }
        }
    }

    #[test]
    fn sign_columns_match_rows_of_the_transpose() {
        let mut rng = StdRng::seed_from_u64(3);
        for isa in Isa::available() {
            for (k, n) in [
                (1, 1),
                (63, 5),
                (64, 64),
                (65, 130),
                (127, 1),
                (1000, 70),
                (300, 300),
            ] {
                let src = values(&mut rng, k * n);
                let mut out = vec![u64::MAX; n * words_per_row(k)];
                with_isa(isa, || pack_signs_columns(&src, k, n, &mut out));
                let expected = ref_signs(&transposed(&src, k, n), n, k);
                assert_eq!(out, expected, "{isa:?} k={k} n={n}");
            }
        }
    }

    #[test]
    fn planes_match_definition_on_every_isa() {
        let mut rng = StdRng::seed_from_u64(4);
        for isa in Isa::available() {
            for bits in [1, 2, 3, 8, 16, 24, 25] {
                for &k in &KS[..8] {
                    let src = values(&mut rng, 2 * k);
                    let mut out = vec![u64::MAX; 2 * bits as usize * words_per_row(k)];
                    with_isa(isa, || pack_planes(&src, 2, k, bits, &mut out));
                    let expected = ref_planes(&src, 2, k, bits);
                    assert_eq!(out, expected, "{isa:?} bits={bits} k={k}");
                }
            }
        }
    }

    #[test]
    fn planes_of_special_values() {
        let src = [
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            255.5,
            256.0,
            3.99,
            -7.0,
            1e30,
        ];
        let expected = [0.0, 0.0, 255.0, 0.0, 255.0, 255.0, 3.0, 0.0, 255.0];
        for isa in Isa::available() {
            let mut packed = vec![0; 8];
            with_isa(isa, || pack_planes(&src, 1, src.len(), 8, &mut packed));
            let mut back = vec![0.0; src.len()];
            unpack_planes(&packed, 1, src.len(), 8, &mut back);
            assert_eq!(back, expected, "{isa:?}");
        }
    }

    #[test]
    fn plane_columns_match_rows_of_the_transpose() {
        let mut rng = StdRng::seed_from_u64(5);
        for isa in Isa::available() {
            for bits in [1, 3, 8, 25] {
                for (k, n) in [(1, 1), (63, 5), (65, 130), (200, 64)] {
                    let src = values(&mut rng, k * n);
                    let mut out = vec![u64::MAX; n * bits as usize * words_per_row(k)];
                    with_isa(isa, || pack_planes_columns(&src, k, n, bits, &mut out));
                    let expected = ref_planes(&transposed(&src, k, n), n, k, bits);
                    assert_eq!(out, expected, "{isa:?} bits={bits} k={k} n={n}");
                }
            }
        }
    }

    #[test]
    fn signs_round_trip() {
        let mut rng = StdRng::seed_from_u64(6);
        for &k in &KS {
            let signs: Vec<f32> = (0..3 * k)
                .map(|_| if rng.random() { 1.0 } else { -1.0 })
                .collect();
            let mut packed = vec![0; 3 * words_per_row(k)];
            pack_signs(&signs, 3, k, &mut packed);
            let mut back = vec![0.0; 3 * k];
            unpack_signs(&packed, 3, k, &mut back);
            assert_eq!(back, signs, "k={k}");
        }
    }

    /// Flag `j` lands in bit `j`, for every single flag and for mixed patterns.
    #[test]
    fn flags_become_their_bits() {
        for j in 0..64 {
            let mut flags = [0u8; 64];
            flags[j] = 1;
            assert_eq!(flags_to_bits(&flags), 1 << j, "flag {j}");
        }
        let flags: [u8; 64] = std::array::from_fn(|j| u8::from(j % 3 == 0 || j > 60));
        let expected = (0..64).fold(0u64, |w, j| w | (u64::from(flags[j]) << j));
        assert_eq!(flags_to_bits(&flags), expected);
        assert_eq!(flags_to_bits(&[1; 64]), u64::MAX);
    }

    #[test]
    fn planes_round_trip() {
        let mut rng = StdRng::seed_from_u64(7);
        // 40 rows of 4097 values are split between threads.
        for rows in [2, 40] {
            for bits in 1..=8 {
                for &k in &KS {
                    let codes: Vec<f32> = (0..rows * k)
                        .map(|_| rng.random_range(0..1u32 << bits) as f32)
                        .collect();
                    let mut packed = vec![0; rows * bits as usize * words_per_row(k)];
                    pack_planes(&codes, rows, k, bits, &mut packed);
                    let mut back = vec![0.0; rows * k];
                    unpack_planes(&packed, rows, k, bits, &mut back);
                    assert_eq!(back, codes, "rows={rows} bits={bits} k={k}");
                    // Any levels: each code's own value.
                    let levels: Vec<f32> = (0..1u32 << bits).map(|c| 0.5 - c as f32).collect();
                    decode_planes(&packed, rows, k, bits, &levels, &mut back);
                    let expected: Vec<f32> = codes.iter().map(|&c| 0.5 - c).collect();
                    assert_eq!(back, expected, "levels: rows={rows} bits={bits} k={k}");
                }
            }
        }
    }

    #[test]
    fn padding_bits_are_zero() {
        for isa in Isa::available() {
            for &k in &KS {
                let src = vec![-1.0f32; 2 * k];
                let words = words_per_row(k);
                let mut out = vec![0; 2 * words];
                with_isa(isa, || pack_signs(&src, 2, k, &mut out));
                let ones: u32 = out.iter().map(|w| w.count_ones()).sum();
                assert_eq!(ones as usize, 2 * k, "{isa:?} k={k}");
                let mut cols = vec![0; 2 * words];
                with_isa(isa, || pack_signs_columns(&src, k, 2, &mut cols));
                assert_eq!(cols, out, "{isa:?} k={k}");
                let mut planes = vec![0; 2 * 3 * words];
                let codes = vec![7.0f32; 2 * k];
                with_isa(isa, || pack_planes(&codes, 2, k, 3, &mut planes));
                let ones: u32 = planes.iter().map(|w| w.count_ones()).sum();
                assert_eq!(ones as usize, 2 * 3 * k, "{isa:?} k={k}");
            }
        }
    }

    #[test]
    fn empty_shapes() {
        for isa in Isa::available() {
            with_isa(isa, || pack_signs(&[], 0, 5, &mut []));
            with_isa(isa, || pack_signs(&[], 3, 0, &mut []));
            with_isa(isa, || pack_signs_columns(&[], 0, 3, &mut []));
            with_isa(isa, || pack_planes(&[1.0; 4], 1, 4, 0, &mut []));
            let mut back = [9.0; 4];
            unpack_planes(&[], 1, 4, 0, &mut back);
            assert_eq!(back, [0.0; 4]);
        }
    }
}
