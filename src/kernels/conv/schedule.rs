//! One convolution call: argument checks, the list of work items (pack a band, compute a
//! chunk of tiles) that the threads claim from an atomic counter, and the scratch buffer.

use super::*;

thread_local! {
    /// The packed-input buffer of the last call on this thread, reused to avoid page faults.
    static SCRATCH: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
}

/// Where a call writes.
pub(super) enum Output<'a> {
    /// NCHW floats, every one written (so the slots need not be initialized).
    Floats(&'a mut [MaybeUninit<f32>]),
    /// Packed signs (all zero on entry).
    Bits(&'a mut [u64]),
}

/// Checks the arguments and runs one convolution.
pub(super) fn convolve(
    isa: Isa,
    input: ConvInput<'_>,
    weights: &ConvWeightBlocks,
    geometry: &ConvCall,
    pad: PaddingMode,
    epilogue: ConvEpilogue<'_>,
    output: Output<'_>,
) {
    let g = geometry;
    let out_size = g
        .output_size()
        .unwrap_or_else(|e| panic!("convolve_nchw: {e}"));
    weights.check_geometry(g);
    match input {
        ConvInput::Nchw(values) => {
            assert_eq!(values.len(), g.input_len(), "convolve_nchw: input length")
        }
        ConvInput::Packed(packed) => assert_eq!(
            packed.shape(),
            [g.batch, g.in_channels, g.height, g.width],
            "convolve_nchw: packed input shape"
        ),
    }
    let [oh, ow] = out_size;
    let o = g.out_channels;
    let out = match output {
        Output::Floats(out) => {
            assert_eq!(
                out.len(),
                g.batch * o * oh * ow,
                "convolve_nchw: output length"
            );
            OutPtr::floats(out)
        }
        Output::Bits(out) => {
            assert!(
                matches!(epilogue, ConvEpilogue::Sign { .. }),
                "convolve_nchw: bits need signs"
            );
            assert_eq!(
                out.len(),
                g.batch * oh * words_per_row(o) * ow,
                "convolve_nchw: output length"
            );
            OutPtr::bits(out)
        }
    };
    if let ConvEpilogue::Sign { threshold, negate } = epilogue {
        assert_eq!(threshold.len(), o, "convolve_nchw: thresholds");
        assert_eq!(negate.len(), o, "convolve_nchw: negate flags");
    }
    if g.batch * o * oh * ow == 0 {
        return;
    }
    let isa = CheckedIsa::new(isa).isa();
    let table = weights.base_table(g, out_size, pad);
    let limits = match epilogue {
        ConvEpilogue::Raw => None,
        ConvEpilogue::Sign { threshold, negate } => Some(table.sign_limits(ow, threshold, negate)),
    };
    let layout = InputLayout::new(g, ow);
    let total = g.batch * layout.image_words;
    let mut buf = SCRATCH.take();
    if buf.len() < total {
        buf.resize(total, 0);
    }
    let buf_ptr = BufPtr {
        ptr: buf.as_mut_ptr(),
        len: total,
    };
    let tap_offsets = layout.tap_offsets(g);
    let conv = Conv {
        isa,
        input,
        buf: buf_ptr,
        frame: Frame {
            // SAFETY: `buf` is neither touched nor dropped until `conv.run()` returns; tiles
            // read only packed images (see `Conv::run`).
            input: unsafe { InPtr::new(buf_ptr.ptr, total) },
            max_tap_offset: tap_offsets.iter().copied().max().unwrap_or(0),
            tap_offsets: &tap_offsets,
            words: layout.words,
            word_stride: layout.word_stride,
            base: &table.values,
            base_channel_stride: ow,
            limits: limits.as_ref().map_or(&[], |l| &l.values),
            out_channel_stride: oh * ow,
        },
        layout,
        geometry: *g,
        out_size,
        row_class: &table.row_class,
        weights,
        epilogue,
        out,
    };
    conv.run();
    SCRATCH.set(buf);
}

/// Word-pair popcounts (one per pixel, channel and 64 input bits) below which one thread
/// does the whole convolution.
pub(super) const PAR_MIN_WORK: usize = 1 << 17;
/// Word-pair popcounts of a compute item at the least, when splitting the channel blocks.
pub(super) const ITEM_MIN_WORK: usize = 1 << 16;
/// Compute items per thread that the channel split aims for, for load balance.
pub(super) const ITEMS_PER_THREAD: usize = 16;
/// Tiles of a compute item: their input stays in L1 while the item's weight blocks stream from
/// L2.
pub(super) const CHUNK_TILES: usize = 8;
/// Busy-wait rounds before a thread waiting for packed input starts yielding.
pub(super) const SPINS_BEFORE_YIELD: u32 = 1 << 12;

/// A unit of work of a call, claimed by one thread.
#[derive(Clone, Debug)]
pub(super) enum Item {
    /// Pack band `band` of image `image`.
    Pack { image: usize, band: usize },
    /// Compute tiles `tiles` against channel blocks `blocks`, once bands `needs` (numbered
    /// `image·bands + band`) are packed.
    Compute {
        tiles: Range<usize>,
        blocks: Range<usize>,
        needs: Range<usize>,
    },
}

/// The packed-input buffer of a call, written by pack items (disjoint bands) while compute
/// items read the finished images.
#[derive(Clone, Copy, Debug)]
pub(super) struct BufPtr {
    ptr: *mut u64,
    len: usize,
}

// SAFETY: `Conv::run` hands each band of the buffer to exactly one pack item, and lets compute
// items read a band only after it is written (release/acquire on `done`); the buffer outlives
// the call.
unsafe impl Send for BufPtr {}
// SAFETY: as above.
unsafe impl Sync for BufPtr {}

/// One call, ready to run: the geometry, weights, base table and the buffers.
pub(super) struct Conv<'a> {
    isa: Isa,
    input: ConvInput<'a>,
    buf: BufPtr,
    frame: Frame<'a>,
    layout: InputLayout,
    geometry: ConvCall,
    out_size: [usize; 2],
    row_class: &'a [usize],
    weights: &'a ConvWeightBlocks,
    epilogue: ConvEpilogue<'a>,
    out: OutPtr,
}

impl Conv<'_> {
    /// Vectors of 8 output pixels in a row of the output.
    fn vectors_per_row(&self) -> usize {
        self.out_size[1].div_ceil(LANES)
    }

    /// Vectors of one image.
    fn vectors_per_image(&self) -> usize {
        self.out_size[0] * self.vectors_per_row()
    }

    /// Vectors of the whole output.
    fn vectors(&self) -> usize {
        self.geometry.batch * self.vectors_per_image()
    }

    /// The tile of vectors `first .. first + mr`.
    fn tile(&self, first: usize, mr: usize) -> Tile {
        let [oh, ow] = self.out_size;
        let per_row = self.vectors_per_row();
        let o = self.geometry.out_channels;
        let mut tile = Tile {
            mr,
            ..Tile::default()
        };
        for r in 0..mr {
            let v = first + r;
            let (image, rest) = (v / (oh * per_row), v % (oh * per_row));
            let (y, x0) = (rest / per_row, LANES * (rest % per_row));
            tile.input[r] = image * self.layout.image_words
                + y * self.geometry.stride[0] * self.layout.row_words
                + x0;
            tile.out[r] = image * o * oh * ow + y * ow + x0;
            tile.base[r] = self.row_class[y] * o * ow + x0;
            tile.bits[r] = (image * oh + y) * words_per_row(o) * ow + x0;
            tile.lanes[r] = (ow - x0).min(LANES);
        }
        tile
    }

    /// Output channel block `ob`.
    fn block(&self, ob: usize) -> Block<'_> {
        let [oh, ow] = self.out_size;
        let o = self.geometry.out_channels;
        let steps = self.frame.tap_offsets.len() * self.layout.words;
        let o0 = ob * BLOCK;
        let channels = (o - o0).min(BLOCK);
        let finish = match self.epilogue {
            ConvEpilogue::Raw => Finish::Raw,
            ConvEpilogue::Sign { negate, .. } => Finish::Sign {
                negated: (0..channels)
                    .filter(|&c| negate[o0 + c])
                    .map(|c| 0xFF << (8 * c))
                    .sum(),
            },
        };
        Block {
            weights: &self.weights.words[ob * steps * BLOCK..][..steps * BLOCK],
            channels,
            out: o0 * oh * ow,
            base: o0 * ow,
            bits_word: o0 / 64 * ow,
            bits_byte: o0 / 8 % 8,
            finish,
        }
    }

    /// Computes tiles `tiles` (of `MAX_MR` vectors) against channel blocks `blocks`.
    ///
    /// # Safety
    /// The packed rows that the tiles read are written, and nobody writes them meanwhile.
    unsafe fn compute(&self, tiles: Range<usize>, blocks: Range<usize>) {
        let vectors = self.vectors();
        let mut chunk = [Tile::default(); CHUNK_TILES];
        for c0 in tiles.clone().step_by(CHUNK_TILES) {
            let count = (tiles.end - c0).min(CHUNK_TILES);
            for (k, tile) in chunk.iter_mut().enumerate().take(count) {
                let first = (c0 + k) * MAX_MR;
                *tile = self.tile(first, (vectors - first).min(MAX_MR));
            }
            for ob in blocks.clone() {
                let block = self.block(ob);
                for tile in &chunk[..count] {
                    // SAFETY: `isa` is checked; the tile's input words are packed (caller).
                    unsafe { conv_tile::tile(self.isa, &self.frame, tile, &block, self.out) };
                }
            }
        }
    }

    /// The words of band `band` of `bands` of image `image` in the packed-input buffer.
    fn band_words(&self, image: usize, band: usize, bands: usize) -> Range<usize> {
        let rows = band_rows(self.geometry.height, band, bands);
        let ph = self.geometry.padding[0];
        let top = if band == 0 { 0 } else { ph + rows.start };
        let bottom = if band + 1 == bands {
            self.layout.rows
        } else {
            ph + rows.end
        };
        let base = image * self.layout.image_words;
        base + top * self.layout.row_words..base + bottom * self.layout.row_words
    }

    /// The bands (numbered `image·bands + band`) holding every packed row that tiles `tiles`
    /// read: rows `y·sh ..= y·sh + (kh − 1)·dh` (padded) of each vector's output row `y`. The
    /// numbering follows the buffer, so they form a range.
    fn needed_bands(&self, tiles: &Range<usize>, bands: usize) -> Range<usize> {
        let g = &self.geometry;
        let per_image = self.vectors_per_image().max(1);
        let per_row = self.vectors_per_row().max(1);
        let band_of = |vector: usize, last: bool| {
            let (image, y) = (vector / per_image, vector % per_image / per_row);
            let row = y * g.stride[0]
                + if last {
                    (g.kernel[0] - 1) * g.dilation[0]
                } else {
                    0
                };
            // Padding rows above belong to the first band, those below to the last.
            let band = match row.checked_sub(g.padding[0]) {
                None => 0,
                Some(r) if r >= g.height => bands - 1,
                Some(r) => (0..bands)
                    .rfind(|&b| band_rows(g.height, b, bands).start <= r)
                    .unwrap_or(0),
            };
            image * bands + band
        };
        let first = tiles.start * MAX_MR;
        let last = (tiles.end * MAX_MR).min(self.vectors()) - 1;
        band_of(first, false)..band_of(last, true) + 1
    }

    /// The work items in claiming order, with the bands per image. Images are packed one ahead
    /// of the compute items that read them, so that a compute item rarely waits, and every item
    /// comes after the pack items it depends on.
    fn schedule(&self, threads: usize) -> (Vec<Item>, usize) {
        let n = self.geometry.batch;
        let tiles = self.vectors().div_ceil(MAX_MR);
        let blocks = self.geometry.out_channels.div_ceil(BLOCK);
        let steps = self.frame.tap_offsets.len() * self.layout.words;
        let chunks = tiles.div_ceil(CHUNK_TILES);
        let chunk_work = CHUNK_TILES * MAX_MR * LANES * blocks * BLOCK * steps.max(1);
        let (bands, groups) = if threads <= 1 {
            (1, 1)
        } else {
            let bands = (2 * threads)
                .div_ceil(n)
                .clamp(1, self.geometry.height.max(1));
            let groups = (threads * ITEMS_PER_THREAD)
                .div_ceil(chunks)
                .min(chunk_work / ITEM_MIN_WORK)
                .clamp(1, blocks);
            (bands, groups)
        };
        let block_bounds = bounds(blocks, groups);
        let mut items = Vec::with_capacity(n * bands + chunks * groups);
        let mut packed = 0;
        let mut pack_through = |items: &mut Vec<Item>, image: usize| {
            while packed <= image.min(n - 1) {
                items.extend((0..bands).map(|band| Item::Pack {
                    image: packed,
                    band,
                }));
                packed += 1;
            }
        };
        pack_through(&mut items, 1);
        for chunk in 0..chunks {
            let tiles = chunk * CHUNK_TILES..((chunk + 1) * CHUNK_TILES).min(tiles);
            let needs = self.needed_bands(&tiles, bands);
            pack_through(&mut items, needs.end.div_ceil(bands));
            for g in block_bounds.windows(2) {
                items.push(Item::Compute {
                    tiles: tiles.clone(),
                    blocks: g[0]..g[1],
                    needs: needs.clone(),
                });
            }
        }
        pack_through(&mut items, n);
        (items, bands)
    }

    /// Runs the call: the threads claim the items in order; a compute item first waits until
    /// the bands it reads are packed. That never deadlocks: a pack item comes before every item that
    /// waits for it, so it was claimed earlier by a thread that is running it, and packing waits
    /// for nothing.
    fn run(&self) {
        let tiles = self.vectors().div_ceil(MAX_MR);
        let blocks = self.geometry.out_channels.div_ceil(BLOCK);
        let steps = self.frame.tap_offsets.len() * self.layout.words;
        let work = tiles * MAX_MR * LANES * blocks * BLOCK * steps.max(1);
        let threads = rayon::current_num_threads();
        let threads = if work < PAR_MIN_WORK { 1 } else { threads };
        let (items, bands) = self.schedule(threads);
        let next = AtomicUsize::new(0);
        let done: Vec<AtomicBool> = (0..self.geometry.batch * bands)
            .map(|_| AtomicBool::new(false))
            .collect();
        let worker = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                match item {
                    Item::Pack { image, band } => {
                        let words = self.band_words(*image, *band, bands);
                        assert!(words.end <= self.buf.len, "conv: band out of bounds");
                        // SAFETY: the band lies in the buffer (checked) and is handed to this
                        // item alone; no compute item reads it before `done` says it is written.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                self.buf.ptr.add(words.start),
                                words.len(),
                            )
                        };
                        let image_band = (*image, *band, bands);
                        pack_band(
                            self.isa,
                            self.input,
                            &self.geometry,
                            &self.layout,
                            image_band,
                            dst,
                        );
                        done[image * bands + band].store(true, Ordering::Release);
                    }
                    Item::Compute {
                        tiles,
                        blocks,
                        needs,
                    } => {
                        for flag in &done[needs.clone()] {
                            wait_until(flag);
                        }
                        // SAFETY: the bands the tiles read are packed (acquired above) and no
                        // pack item writes them again.
                        unsafe { self.compute(tiles.clone(), blocks.clone()) };
                    }
                }
            }
        };
        if threads <= 1 {
            worker();
        } else {
            (0..threads).into_par_iter().for_each(|_| worker());
        }
    }
}

/// Waits until `flag` is set (acquiring what was released with it): spins, then yields the
/// CPU.
pub(super) fn wait_until(flag: &AtomicBool) {
    let mut spins = 0u32;
    while !flag.load(Ordering::Acquire) {
        if spins < SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// `parts + 1` boundaries splitting `0..len` into near-equal parts.
pub(super) fn bounds(len: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, len.max(1));
    (0..=parts).map(|t| len * t / parts).collect()
}
