//! Register tiles of the binary convolution ([`super::conv`]) and the packing of input rows.
//!
//! A tile computes `MR` *vectors* of [`LANES`] horizontally adjacent output pixels (each vector
//! one lane a pixel) against a block of [`BLOCK`] output channels. The input words of a vector's
//! pixels lie side by side in the packed input (one word a pixel), so a vector is one 512-bit load
//! per tap and channel word, and a weight word is broadcast to all lanes: every lane counts for
//! its own pixel, and no horizontal reduction is needed. The counts of a vector and channel are
//! then a row segment of the NCHW output, written (after the epilogue) as 8 floats.

use std::mem::MaybeUninit;

use super::isa::Isa;

/// Pixels of one vector (lanes of 64 bits in 512).
pub(crate) const LANES: usize = 8;
/// Output channels of one weight block (the interleave of the packed weights).
pub(crate) const BLOCK: usize = 8;
/// The most vectors in a tile.
pub(crate) const MAX_MR: usize = 3;

/// What every tile of a call shares: the packed input, the tap offsets, the base table and the
/// output strides.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame<'a> {
    /// The packed input (see `conv::InputLayout`); parts of it may still be written by other
    /// threads, but never the words a tile reads while it runs.
    pub input: InPtr,
    /// Word offset of each tap relative to a vector's first word, in weight order.
    pub tap_offsets: &'a [usize],
    /// The largest of `tap_offsets`.
    pub max_tap_offset: usize,
    /// Channel words per tap.
    pub words: usize,
    /// Words between consecutive channel words of a pixel.
    pub word_stride: usize,
    /// `K_eff − correction` per (row class, channel, output column).
    pub base: &'a [f32],
    /// Values between consecutive channels in `base` and `limits`.
    pub base_channel_stride: usize,
    /// For [`Finish::Sign`], the count limit of each `base` value (same layout), then
    /// [`LANES`] more values, so that a tile may read whole vectors: the output is `−1` where
    /// `(count > limit) != negated` (see `conv::count_limit`); empty for [`Finish::Raw`].
    pub limits: &'a [i64],
    /// Values between consecutive channels in the output.
    pub out_channel_stride: usize,
}

/// A read-only view of the packed input that, unlike a slice, may coexist with writers of
/// other parts of the buffer (the packing of later images or bands).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InPtr {
    ptr: *const u64,
    len: usize,
}

// SAFETY: an `InPtr` is only read through by `tile`, at words that `conv::Conv::run` has made
// sure are written (and published with release/acquire) before, and not written during, the
// call; the buffer outlives every use.
unsafe impl Send for InPtr {}
// SAFETY: as above.
unsafe impl Sync for InPtr {}

impl InPtr {
    /// A view of the `len` words at `ptr`.
    ///
    /// # Safety
    /// The words stay allocated while the view is used, and [`tile`] is only called on words
    /// that are initialised and not being written.
    pub(crate) unsafe fn new(ptr: *const u64, len: usize) -> InPtr {
        InPtr { ptr, len }
    }
}

/// Up to [`MAX_MR`] vectors of output pixels.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tile {
    /// Vectors in the tile (`1 ..= MAX_MR`).
    pub mr: usize,
    /// Word offset in the packed input of each vector's first pixel at tap offset 0.
    pub input: [usize; MAX_MR],
    /// Output offset of each vector's first pixel in channel 0.
    pub out: [usize; MAX_MR],
    /// Offset in the base table of each vector's first pixel in channel 0.
    pub base: [usize; MAX_MR],
    /// Word index in packed sign output of each vector's first pixel in channel word 0.
    pub bits: [usize; MAX_MR],
    /// Valid pixels of each vector (`1 ..= LANES`).
    pub lanes: [usize; MAX_MR],
}

/// What the epilogue does with the dot products.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Finish {
    /// Writes the dot products.
    Raw,
    /// Writes `−1` where `(count > limit) != negated`, the limit from [`Frame::limits`], else
    /// `+1`.
    Sign {
        /// Byte `c` is `0xFF` where channel `c` of the block is negated, else 0 (also past the
        /// block's channels).
        negated: u64,
    },
}

impl Finish {
    /// Whether channel `c` of the block is negated (`Raw`: never).
    #[inline]
    fn negated(&self, c: usize) -> bool {
        match self {
            Finish::Raw => false,
            Finish::Sign { negated } => (negated >> (8 * c)) & 1 == 1,
        }
    }
}

/// Transposes an 8 × 8 bit matrix held in a word (row `i` is byte `i`, column `j` bit `j` of
/// it): afterwards bit `j` of byte `i` is what bit `i` of byte `j` was.
#[inline]
pub(crate) fn transpose8(mut x: u64) -> u64 {
    // Swap the off-diagonal 1×1, then 2×2, then 4×4 blocks of each 2×2 (4×4, 8×8) block.
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// A block of up to [`BLOCK`] output channels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block<'a> {
    /// `taps · words` steps of [`BLOCK`] interleaved words (channels past `channels` are zero).
    pub weights: &'a [u64],
    /// Channels of the block (`1 ..= BLOCK`).
    pub channels: usize,
    /// Output offset of the block's first channel.
    pub out: usize,
    /// Base-table offset of the block's first channel.
    pub base: usize,
    /// Word offset, in packed sign output, of the channel word holding the block.
    pub bits_word: usize,
    /// The byte of that word holding the block (`first channel / 8 % 8`).
    pub bits_byte: usize,
    /// The epilogue.
    pub finish: Finish,
}

/// The output of a call, written by many tasks at disjoint positions: NCHW floats, or sign
/// bits (bytes of packed words, one byte a block of 8 channels of one pixel).
#[derive(Clone, Copy, Debug)]
pub(crate) enum OutPtr {
    /// `len` floats.
    Floats { ptr: *mut f32, len: usize },
    /// `len` bytes of packed sign words.
    Bits { ptr: *mut u8, len: usize },
}

// SAFETY: an `OutPtr` is only written through by `tile`, at floats or bytes that the callers
// give to exactly one tile each (see `conv::Conv::run`), while the buffer it came from is
// borrowed mutably for the duration of the call.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Wraps an NCHW float output (the tiles write every value, so it need not be
    /// initialized); it must outlive every use of the pointer.
    pub(crate) fn floats(out: &mut [MaybeUninit<f32>]) -> OutPtr {
        OutPtr::Floats {
            ptr: out.as_mut_ptr().cast(),
            len: out.len(),
        }
    }

    /// Wraps a packed sign output (zero on entry: bits no tile writes stay 0); it must outlive
    /// every use of the pointer.
    pub(crate) fn bits(out: &mut [u64]) -> OutPtr {
        OutPtr::Bits {
            ptr: out.as_mut_ptr().cast(),
            len: out.len() * 8,
        }
    }
}

/// Panics unless every word and value that the tile reads or writes lies inside its slice.
fn check(f: &Frame<'_>, t: &Tile, b: &Block<'_>, out: OutPtr) {
    assert!((1..=MAX_MR).contains(&t.mr), "conv tile: {} vectors", t.mr);
    assert!((1..=BLOCK).contains(&b.channels), "conv tile: channels");
    let steps = f.tap_offsets.len() * f.words;
    assert!(b.weights.len() >= steps * BLOCK, "conv tile: weights");
    for r in 0..t.mr {
        let lanes = t.lanes[r];
        assert!((1..=LANES).contains(&lanes), "conv tile: lanes");
        if steps > 0 {
            let last = t.input[r] + f.max_tap_offset + (f.words - 1) * f.word_stride + LANES;
            assert!(last <= f.input.len, "conv tile: input out of bounds");
        }
        match out {
            OutPtr::Floats { len, .. } => {
                let last = t.out[r] + b.out + (b.channels - 1) * f.out_channel_stride + lanes;
                assert!(last <= len, "conv tile: output out of bounds");
            }
            OutPtr::Bits { len, .. } => {
                assert!(
                    matches!(b.finish, Finish::Sign { .. }),
                    "conv tile: bits need signs"
                );
                assert!(b.bits_byte < 8, "conv tile: bits byte");
                let last = (t.bits[r] + b.bits_word + lanes - 1) * 8 + b.bits_byte;
                assert!(last < len, "conv tile: bits out of bounds");
            }
        }
        let last_base = t.base[r] + b.base + (b.channels - 1) * f.base_channel_stride;
        let end = match b.finish {
            Finish::Raw => last_base + lanes <= f.base.len(),
            Finish::Sign { .. } => last_base + LANES <= f.limits.len(),
        };
        assert!(end, "conv tile: base out of bounds");
    }
}

/// Computes the tile against the block on `isa` and writes the outputs. For vector `r`, channel
/// `c < channels` and lane `l < lanes[r]`, `count` is the popcount over every tap and channel
/// word of the input word of pixel `l` XOR the weight word of channel `c`, and
/// `i = t.base[r] + b.base + c·base_channel_stride + l`. [`Finish::Raw`] writes
/// `dot = base[i] − 2·count` to `out[t.out[r] + b.out + c·out_channel_stride + l]`;
/// [`Finish::Sign`] writes `−1` there where `(count > limits[i]) != negated(c)`, else `+1`, or
/// its sign bit to bit `c` of byte `b.bits_byte` of word `t.bits[r] + b.bits_word + l` (1 where
/// the sign is `−1`; the byte's bits past `channels` are 0).
///
/// # Safety
/// `isa` runs on this CPU (it came from a [`super::CheckedIsa`]); the input words that the tile
/// reads (see [`InPtr::new`]) are initialised and nobody writes them during the call.
pub(crate) unsafe fn tile(isa: Isa, f: &Frame<'_>, t: &Tile, b: &Block<'_>, out: OutPtr) {
    check(f, t, b, out);
    match isa {
        // SAFETY: the caller checked the CPU for the AVX-512 features; `check` proved that all
        // accesses lie inside their slices.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            match t.mr {
                1 => x86::tile_avx512::<1>(f, t, b, out),
                2 => x86::tile_avx512::<2>(f, t, b, out),
                _ => x86::tile_avx512::<3>(f, t, b, out),
            }
        },
        // SAFETY: the caller checked the CPU for AVX2; `check` proved the accesses in bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            for r in 0..t.mr {
                x86::tile_avx2(f, t, r, b, out);
            }
        },
        _ => {
            for r in 0..t.mr {
                // SAFETY: `check` proved the accesses in bounds.
                unsafe { tile_generic(f, t, r, b, out) };
            }
        }
    }
}

/// One vector (`r` of the tile) against the block, in plain Rust on `u32` lane counters; the
/// AVX2 path compiles the same code with AVX2 enabled.
///
/// # Safety
/// [`check`] passed for the tile, block and output.
#[inline(always)]
unsafe fn tile_generic(f: &Frame<'_>, t: &Tile, r: usize, b: &Block<'_>, out: OutPtr) {
    let mut acc = [[0u32; LANES]; BLOCK];
    let input = f.input.ptr;
    let mut w = b.weights.as_ptr();
    for &off in f.tap_offsets {
        let mut p = t.input[r] + off;
        for _ in 0..f.words {
            // SAFETY: `check` proved words `p .. p + LANES` inside the input.
            let a: [u64; LANES] = unsafe { input.add(p).cast::<[u64; LANES]>().read_unaligned() };
            // SAFETY: `check` proved `BLOCK` words a step inside the weights.
            let ws: [u64; BLOCK] = unsafe { w.cast::<[u64; BLOCK]>().read_unaligned() };
            for (acc, &wc) in acc.iter_mut().zip(&ws) {
                for (n, &x) in acc.iter_mut().zip(&a) {
                    *n += (x ^ wc).count_ones();
                }
            }
            // SAFETY: stays within (or one past) the weights, see above.
            w = unsafe { w.add(BLOCK) };
            p += f.word_stride;
        }
    }
    let mut bytes = [0u8; LANES];
    for (c, counts) in acc.iter().enumerate().take(b.channels) {
        let base = t.base[r] + b.base + c * f.base_channel_stride;
        let dst = t.out[r] + b.out + c * f.out_channel_stride;
        for (l, &n) in counts.iter().enumerate().take(t.lanes[r]) {
            let value = match b.finish {
                Finish::Raw => f.base[base + l] - 2.0 * n as f32,
                Finish::Sign { .. } => {
                    let minus = (i64::from(n) > f.limits[base + l]) != b.finish.negated(c);
                    bytes[l] |= u8::from(minus) << c;
                    if minus { -1.0 } else { 1.0 }
                }
            };
            if let OutPtr::Floats { ptr, .. } = out {
                // SAFETY: `check` proved the position inside the output; no other tile writes
                // it.
                unsafe { *ptr.add(dst + l) = value };
            }
        }
    }
    if let OutPtr::Bits { ptr, .. } = out {
        for (l, &byte) in bytes.iter().enumerate().take(t.lanes[r]) {
            let at = (t.bits[r] + b.bits_word + l) * 8 + b.bits_byte;
            // SAFETY: `check` proved the byte inside the output; no other tile writes it.
            unsafe { *ptr.add(at) = byte };
        }
    }
}

/// Where the packed words of one image row go (see `conv::InputLayout`): a packed row holds,
/// per column phase `q < stride`, per channel word, the padded columns `X ≡ q (mod stride)` at
/// index `X / stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowLayout {
    /// Input channels `c`.
    pub channels: usize,
    /// Image height `h`.
    pub height: usize,
    /// Image width `w`.
    pub width: usize,
    /// Channel words per pixel.
    pub words: usize,
    /// Words between consecutive channel words of a phase.
    pub word_stride: usize,
    /// Words of a packed row.
    pub row_words: usize,
    /// Horizontal stride (the number of phases).
    pub stride: usize,
    /// Horizontal padding.
    pub padding: usize,
}

impl RowLayout {
    /// The offset in a packed row of channel word `wd` of image column `x`.
    #[inline]
    pub(crate) fn at(&self, wd: usize, x: usize) -> usize {
        let col = x + self.padding;
        ((col % self.stride) * self.words + wd) * self.word_stride + col / self.stride
    }
}

/// Channels packed in one pass over a band of rows (the sources streamed at once).
const PACK_GROUP: usize = 8;

/// Packs the channel signs of image rows `rows` of one NCHW image (`c·h·w` values) into `dst`,
/// their packed rows (`rows.len() · row_words` words, all zero on entry): bit `t` of the word of
/// channel word `wd` of pixel `(y, x)` is set where channel `64·wd + t` is `< 0` there.
pub(crate) fn pack_rows(
    isa: Isa,
    image: &[f32],
    l: &RowLayout,
    rows: std::ops::Range<usize>,
    dst: &mut [u64],
) {
    assert_eq!(
        image.len(),
        l.channels * l.height * l.width,
        "pack_rows: image"
    );
    assert!(
        rows.start <= rows.end && rows.end <= l.height,
        "pack_rows: rows"
    );
    assert_eq!(dst.len(), rows.len() * l.row_words, "pack_rows: dst");
    assert_eq!(l.words, l.channels.div_ceil(64), "pack_rows: words");
    if l.words == 0 || l.width == 0 || rows.is_empty() {
        return;
    }
    assert!(
        l.stride >= 1
            && (0..l.stride.min(l.width)).all(|x| {
                let last = x + (l.width - 1 - x) / l.stride * l.stride;
                l.at(l.words - 1, last) < l.row_words
            }),
        "pack_rows: layout"
    );
    match isa {
        // SAFETY: the caller checked the CPU for the AVX-512 features; the asserts above bound
        // every access.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::pack_rows_avx512(image, l, rows, dst) },
        // SAFETY: the caller checked the CPU for AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::pack_rows_avx2(image, l, rows, dst) },
        _ => pack_rows_generic(image, l, rows, dst),
    }
}

/// [`pack_rows`] in plain Rust (vectorised by the compiler where it can): each row into a
/// temporary `[word][x]` block, then into place.
#[inline(always)]
fn pack_rows_generic(image: &[f32], l: &RowLayout, rows: std::ops::Range<usize>, dst: &mut [u64]) {
    let (w, plane) = (l.width, l.height * l.width);
    let mut tmp = vec![0u64; w];
    for (y, row) in rows.zip(dst.chunks_exact_mut(l.row_words)) {
        for wd in 0..l.words {
            tmp.fill(0);
            let c0 = 64 * wd;
            for t in 0..(l.channels - c0).min(64) {
                let src = &image[(c0 + t) * plane + y * w..][..w];
                for (d, &v) in tmp.iter_mut().zip(src) {
                    *d |= u64::from(v < 0.0) << t;
                }
            }
            if l.stride == 1 {
                let at = l.at(wd, 0);
                row[at..at + w].copy_from_slice(&tmp);
            } else {
                for (x, &word) in tmp.iter().enumerate() {
                    row[l.at(wd, x)] = word;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use std::ops::Range;

    use super::{BLOCK, Block, Finish, Frame, LANES, OutPtr, RowLayout, Tile};

    /// The AVX-512 tile: `MR × BLOCK` accumulators of 8 lane counts (`VPXORQ` with a broadcast
    /// weight word, `VPOPCNTQ`, `VPADDQ`), then the epilogue on 8 floats at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VL and VPOPCNTDQ; `super::check` passed; `t.mr == MR`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
    pub(super) unsafe fn tile_avx512<const MR: usize>(
        f: &Frame<'_>,
        t: &Tile,
        b: &Block<'_>,
        out: OutPtr,
    ) {
        let mut acc = [[_mm512_setzero_si512(); BLOCK]; MR];
        let input = f.input.ptr;
        let mut w = b.weights.as_ptr();
        for &off in f.tap_offsets {
            // `wrapping_add`: with no channel words the offsets may pass the end unread.
            let mut p = [input; MR];
            for (p, &start) in p.iter_mut().zip(&t.input) {
                *p = input.wrapping_add(start + off);
            }
            for _ in 0..f.words {
                let mut a = [_mm512_setzero_si512(); MR];
                for (a, &p) in a.iter_mut().zip(&p) {
                    // SAFETY: `check` proved 8 words at `p` inside the input.
                    *a = unsafe { _mm512_loadu_si512(p.cast()) };
                }
                // SAFETY: `check` proved `BLOCK` words a step inside the weights.
                let ws: [u64; BLOCK] = unsafe { w.cast::<[u64; BLOCK]>().read_unaligned() };
                for (c, &wc) in ws.iter().enumerate() {
                    let wc = _mm512_set1_epi64(wc as i64);
                    for (row, &a) in acc.iter_mut().zip(&a) {
                        let pop = _mm512_popcnt_epi64(_mm512_xor_si512(a, wc));
                        row[c] = _mm512_add_epi64(row[c], pop);
                    }
                }
                w = w.wrapping_add(BLOCK);
                for p in p.iter_mut() {
                    *p = p.wrapping_add(f.word_stride);
                }
            }
        }
        match b.finish {
            Finish::Raw => {
                let OutPtr::Floats { ptr, .. } = out else {
                    unreachable!("conv tile: `check` lets only signs go to bits")
                };
                // Narrowed in a fully unrolled loop, so that the accumulators stay in registers
                // (the loop below runs over a run-time channel count).
                let mut narrow = [[_mm256_setzero_si256(); BLOCK]; MR];
                for (n, a) in narrow.iter_mut().zip(&acc) {
                    for (n, &a) in n.iter_mut().zip(a) {
                        *n = _mm512_cvtepi64_epi32(a);
                    }
                }
                for (r, narrow) in narrow.iter().enumerate() {
                    let mask = ((1u32 << t.lanes[r]) - 1) as __mmask8;
                    for (c, &n) in narrow.iter().enumerate().take(b.channels) {
                        let counts = _mm256_cvtepi32_ps(n);
                        let base_at = t.base[r] + b.base + c * f.base_channel_stride;
                        // SAFETY: `check` proved the lanes of `mask` inside the base table.
                        let base =
                            unsafe { _mm256_maskz_loadu_ps(mask, f.base.as_ptr().add(base_at)) };
                        let dot = _mm256_sub_ps(base, _mm256_add_ps(counts, counts));
                        let at = t.out[r] + b.out + c * f.out_channel_stride;
                        // SAFETY: `check` proved the lanes of `mask` inside the output; no other
                        // tile writes them.
                        unsafe { _mm256_mask_storeu_ps(ptr.add(at), mask, dot) };
                    }
                }
            }
            Finish::Sign { negated } => {
                // Byte `c` of `minus[r]` holds the lanes of vector `r` where channel `c` is `−1`:
                // the counts above their limits, flipped where the channel is negated. Whole
                // vectors of limits are read (the table has `LANES` values more than it uses),
                // the channels past the block at its last channel, and their bits cleared
                // after: a loop of fixed trip counts, no masks and no stores, which the
                // compiler unrolls, so that the accumulators stay in registers.
                let channels = u64::MAX >> (8 * (BLOCK - b.channels));
                let mut minus = [0u64; MR];
                for (r, (minus, acc)) in minus.iter_mut().zip(&acc).enumerate() {
                    for (c, &counts) in acc.iter().enumerate() {
                        let at = t.base[r] + b.base + c.min(b.channels - 1) * f.base_channel_stride;
                        // SAFETY: `check` proved `LANES` limits at `at` inside the table.
                        let limit = unsafe { _mm512_loadu_epi64(f.limits.as_ptr().add(at)) };
                        let above = _mm512_cmpgt_epi64_mask(counts, limit);
                        *minus |= u64::from(above) << (8 * c);
                    }
                    *minus = *minus & channels ^ negated;
                }
                let minus_one = _mm256_set1_ps(-1.0);
                let plus_one = _mm256_set1_ps(1.0);
                for (r, &minus) in minus.iter().enumerate() {
                    match out {
                        OutPtr::Floats { ptr, .. } => {
                            let mask = ((1u32 << t.lanes[r]) - 1) as __mmask8;
                            for c in 0..b.channels {
                                let value = _mm256_mask_blend_ps(
                                    (minus >> (8 * c)) as __mmask8,
                                    plus_one,
                                    minus_one,
                                );
                                let at = t.out[r] + b.out + c * f.out_channel_stride;
                                // SAFETY: `check` proved the lanes of `mask` inside the output;
                                // no other tile writes them.
                                unsafe { _mm256_mask_storeu_ps(ptr.add(at), mask, value) };
                            }
                        }
                        OutPtr::Bits { ptr, .. } => {
                            // Byte `l` of the transpose (lane `l`'s signs) goes to byte
                            // `bits_byte` of word `l`: spread to one byte a word, then one
                            // masked store, which leaves the words' other bytes (other blocks'
                            // channels, written by other threads) alone.
                            let bytes = super::transpose8(minus) as i64;
                            let spread = _mm512_sll_epi64(
                                _mm512_cvtepu8_epi64(_mm_cvtsi64_si128(bytes)),
                                _mm_cvtsi64_si128(8 * b.bits_byte as i64),
                            );
                            let words = u64::MAX >> (8 * (LANES - t.lanes[r]));
                            let keep = (0x0101_0101_0101_0101u64 << b.bits_byte) & words;
                            let at = (t.bits[r] + b.bits_word) * 8;
                            // SAFETY: `check` proved the kept bytes inside the output (the
                            // masked-out ones are not touched); no other tile writes them.
                            unsafe { _mm512_mask_storeu_epi8(ptr.add(at).cast(), keep, spread) };
                        }
                    }
                }
            }
        }
    }

    /// [`super::tile_generic`] compiled with AVX2 (the compiler vectorises the lane counters).
    ///
    /// # Safety
    /// The CPU has AVX2 and POPCNT; `super::check` passed; `r < t.mr`.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn tile_avx2(f: &Frame<'_>, t: &Tile, r: usize, b: &Block<'_>, out: OutPtr) {
        // SAFETY: forwarded contract.
        unsafe { super::tile_generic(f, t, r, b, out) }
    }

    /// [`super::pack_rows`] with AVX-512: per group of [`super::PACK_GROUP`] channels (that many
    /// sequential source streams), per 8 pixels of a row, an accumulator of 8 words takes bit `t`
    /// from the sign mask of channel `t` by masked OR, then is OR-ed into place.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VL; the asserts of `super::pack_rows` passed.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pack_rows_avx512(
        image: &[f32],
        l: &RowLayout,
        rows: Range<usize>,
        dst: &mut [u64],
    ) {
        let zero = _mm256_setzero_ps();
        let (w, plane) = (l.width, l.height * l.width);
        let src = image.as_ptr();
        for wd in 0..l.words {
            let c0 = 64 * wd;
            let count = (l.channels - c0).min(64);
            for g0 in (0..count).step_by(super::PACK_GROUP) {
                let g1 = (g0 + super::PACK_GROUP).min(count);
                for (y, row) in rows.clone().zip(dst.chunks_exact_mut(l.row_words)) {
                    let mut x = 0;
                    while x < w {
                        let n = (w - x).min(LANES);
                        let mask = ((1u32 << n) - 1) as __mmask8;
                        let mut acc = _mm512_setzero_si512();
                        for t in g0..g1 {
                            // SAFETY: the `n` loaded values lie in row `y` of channel `c0 + t`
                            // (`pack_rows` checked the image size).
                            let v = unsafe {
                                _mm256_maskz_loadu_ps(mask, src.add((c0 + t) * plane + y * w + x))
                            };
                            let neg = _mm256_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
                            acc = _mm512_mask_or_epi64(acc, neg, acc, _mm512_set1_epi64(1 << t));
                        }
                        if l.stride == 1 {
                            let d = row[l.at(wd, x)..l.at(wd, x + n - 1) + 1].as_mut_ptr();
                            // SAFETY: the masked load and store touch the `n` words of `d`.
                            unsafe {
                                let old = _mm512_maskz_loadu_epi64(mask, d.cast());
                                _mm512_mask_storeu_epi64(d.cast(), mask, _mm512_or_si512(old, acc));
                            }
                        } else {
                            let mut words = [0u64; LANES];
                            // SAFETY: `words` holds 8 words.
                            unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), acc) };
                            for (k, &word) in words.iter().enumerate().take(n) {
                                row[l.at(wd, x + k)] |= word;
                            }
                        }
                        x += n;
                    }
                }
            }
        }
    }

    /// [`super::pack_rows_generic`] compiled with AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_rows_avx2(
        image: &[f32],
        l: &RowLayout,
        rows: Range<usize>,
        dst: &mut [u64],
    ) {
        super::pack_rows_generic(image, l, rows, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose8_swaps_rows_and_columns() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let t = transpose8(state);
            for i in 0..8 {
                for j in 0..8 {
                    assert_eq!((t >> (8 * i + j)) & 1, (state >> (8 * j + i)) & 1);
                }
            }
        }
    }
}
