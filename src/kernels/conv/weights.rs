//! Sign weights packed once ([`ConvWeightBlocks`]) and their cached zero-padding tables.

use super::*;

/// The geometry that a base table depends on besides the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BaseKey {
    size: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    pad: PaddingMode,
}

/// `K_eff − correction` for every output channel, output column and class of output rows.
#[derive(Debug)]
pub(super) struct BaseTable {
    /// The class of each output row.
    pub(super) row_class: Vec<usize>,
    /// `values[(class·o + channel)·ow + x]`.
    pub(super) values: Vec<f32>,
    /// The count limits of the last sign epilogue used with the table.
    last_limits: Mutex<Option<Arc<SignLimits>>>,
}

/// A sign epilogue's per-channel thresholds turned into a count limit per base-table value
/// ([`count_limit`]), laid out as [`BaseTable::values`].
#[derive(Debug)]
pub(super) struct SignLimits {
    /// The thresholds' bits.
    threshold: Vec<u32>,
    /// The negate flags.
    negate: Vec<bool>,
    /// `values[(class·o + channel)·ow + x]`, then [`LANES`] zeros (the tiles read whole
    /// vectors).
    pub(super) values: Vec<i64>,
}

impl BaseTable {
    /// A table of `values` (`row_class` as the field says).
    fn new(row_class: Vec<usize>, values: Vec<f32>) -> BaseTable {
        BaseTable {
            row_class,
            values,
            last_limits: Mutex::new(None),
        }
    }

    /// The count limits of the sign epilogue with `threshold` and `negate` (one per channel of
    /// the table's `ow`-wide rows): the last call's when the thresholds are the same, as they are
    /// for a layer run again and again.
    pub(super) fn sign_limits(
        &self,
        ow: usize,
        threshold: &[f32],
        negate: &[bool],
    ) -> Arc<SignLimits> {
        let mut last = self.last_limits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limits) = last.as_ref()
            && limits.negate == negate
            && limits
                .threshold
                .iter()
                .copied()
                .eq(threshold.iter().map(|t| t.to_bits()))
        {
            return limits.clone();
        }
        let o = threshold.len();
        let values = self
            .values
            .iter()
            .enumerate()
            .map(|(i, &base)| {
                let channel = i / ow % o;
                count_limit(base, threshold[channel], negate[channel])
            })
            .chain([0; LANES])
            .collect();
        let limits = Arc::new(SignLimits {
            threshold: threshold.iter().map(|t| t.to_bits()).collect(),
            negate: negate.to_vec(),
            values,
        });
        *last = Some(limits.clone());
        limits
    }
}

/// Cached base tables per packed weights.
pub(super) const BASE_CACHE_ENTRIES: usize = 4;

/// Sign weights packed once for [`convolve_nchw`] (see the module docs for the layout), with the
/// per-tap sums of their signs for the zero-padding correction.
pub struct ConvWeightBlocks {
    out_channels: usize,
    in_channels: usize,
    kernel: [usize; 2],
    /// `ceil(o/8)` blocks of `kh·kw·ceil(c/64)·8` words.
    pub(super) words: Vec<u64>,
    /// `tap_sums[o·kh·kw + t] = Σ_c sign(w[o, c, t])`.
    tap_sums: Vec<i32>,
    /// The last base tables used, most recent last.
    cache: Mutex<Vec<(BaseKey, Arc<BaseTable>)>>,
}

impl Clone for ConvWeightBlocks {
    fn clone(&self) -> Self {
        ConvWeightBlocks {
            out_channels: self.out_channels,
            in_channels: self.in_channels,
            kernel: self.kernel,
            words: self.words.clone(),
            tap_sums: self.tap_sums.clone(),
            cache: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for ConvWeightBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvWeightBlocks")
            .field("out_channels", &self.out_channels)
            .field("in_channels", &self.in_channels)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl ConvWeightBlocks {
    /// Packs the signs of OIHW weights (`o·c·kh·kw` values; `+1` for `v ≥ 0`, `−0.0` and NaN).
    pub fn new(
        weights_oihw: &[f32],
        out_channels: usize,
        in_channels: usize,
        kernel: [usize; 2],
    ) -> ConvWeightBlocks {
        let [kh, kw] = kernel;
        let taps = kh * kw;
        assert_eq!(
            weights_oihw.len(),
            out_channels * in_channels * taps,
            "ConvWeightBlocks: expected {out_channels}·{in_channels}·{kh}·{kw} weights"
        );
        let cw = words_per_row(in_channels);
        let steps = taps * cw;
        let mut words = vec![0u64; out_channels.div_ceil(BLOCK) * steps * BLOCK];
        let mut tap_sums = vec![0i32; out_channels * taps];
        for o in 0..out_channels {
            let block = &mut words[(o / BLOCK) * steps * BLOCK..][..steps * BLOCK];
            for c in 0..in_channels {
                let kernel = &weights_oihw[(o * in_channels + c) * taps..][..taps];
                for (t, &v) in kernel.iter().enumerate() {
                    let negative = v < 0.0;
                    tap_sums[o * taps + t] += if negative { -1 } else { 1 };
                    let step = t * cw + c / 64;
                    block[step * BLOCK + o % BLOCK] |= u64::from(negative) << (c % 64);
                }
            }
        }
        ConvWeightBlocks {
            out_channels,
            in_channels,
            kernel,
            words,
            tap_sums,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// Packs sign weights from rows in the crate's convolution layout: for each output channel
    /// `o` and tap `t = i·kw + j`, `ceil(c/64)` words of channel signs at
    /// `rows[(o·kh·kw + t)·ceil(c/64) ..]` (bit 1 = −1, bits past `c` zero) — the bytes of a
    /// packed tensor `[o, kh, kw, c]`.
    pub fn from_tap_rows(
        rows: &[u64],
        out_channels: usize,
        in_channels: usize,
        kernel: [usize; 2],
    ) -> ConvWeightBlocks {
        let taps = kernel[0] * kernel[1];
        let cw = words_per_row(in_channels);
        assert_eq!(
            rows.len(),
            out_channels * taps * cw,
            "ConvWeightBlocks: expected {out_channels}·{taps}·{cw} words"
        );
        let steps = taps * cw;
        let mut words = vec![0u64; out_channels.div_ceil(BLOCK) * steps * BLOCK];
        let mut tap_sums = vec![0i32; out_channels * taps];
        for o in 0..out_channels {
            let block = &mut words[(o / BLOCK) * steps * BLOCK..][..steps * BLOCK];
            for t in 0..taps {
                let tap = &rows[(o * taps + t) * cw..][..cw];
                let negatives: u32 = tap.iter().map(|w| w.count_ones()).sum();
                tap_sums[o * taps + t] = in_channels as i32 - 2 * negatives as i32;
                for (w, &word) in tap.iter().enumerate() {
                    block[(t * cw + w) * BLOCK + o % BLOCK] = word;
                }
            }
        }
        ConvWeightBlocks {
            out_channels,
            in_channels,
            kernel,
            words,
            tap_sums,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// Output channels `o`.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Input channels `c`.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Kernel size `[kh, kw]`.
    pub fn kernel(&self) -> [usize; 2] {
        self.kernel
    }

    /// `kh·kw·c`, the largest magnitude of any output dot product.
    pub fn max_dot(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.in_channels
    }

    /// The packed words (see the module docs for the layout).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Panics unless the geometry has these weights' channels and kernel.
    pub(super) fn check_geometry(&self, g: &ConvCall) {
        assert!(
            g.in_channels == self.in_channels
                && g.out_channels == self.out_channels
                && g.kernel == self.kernel,
            "convolve_nchw: the geometry has {}→{} channels and kernel {:?}, the weights {}→{} and {:?}",
            g.in_channels,
            g.out_channels,
            g.kernel,
            self.in_channels,
            self.out_channels,
            self.kernel
        );
    }

    /// The base table of a (validated) geometry, from the cache or computed and cached.
    pub(super) fn base_table(
        &self,
        g: &ConvCall,
        out_size: [usize; 2],
        pad: PaddingMode,
    ) -> Arc<BaseTable> {
        let key = BaseKey {
            size: [g.height, g.width],
            stride: g.stride,
            padding: g.padding,
            dilation: g.dilation,
            pad,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            let entry = cache.remove(i);
            let table = entry.1.clone();
            cache.push(entry);
            return table;
        }
        let table = Arc::new(self.compute_base_table(g, out_size, pad));
        if cache.len() == BASE_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((key, table.clone()));
        table
    }

    /// Computes the base table: rows and columns fall into classes by the set of kernel rows
    /// (columns) inside the image; the correction of class pair `(r, s)` and channel `o` is
    /// `Σ_{(i, j) padded} tap_sums[o, i, j]`.
    fn compute_base_table(
        &self,
        g: &ConvCall,
        [oh, ow]: [usize; 2],
        pad: PaddingMode,
    ) -> BaseTable {
        let o = self.out_channels;
        let k_eff = self.max_dot() as f32;
        if pad == PaddingMode::PlusOne {
            return BaseTable::new(vec![0; oh], vec![k_eff; o * ow]);
        }
        let [kh, kw] = self.kernel;
        let (row_class, row_sets) =
            classes(oh, kh, g.stride[0], g.dilation[0], g.padding[0], g.height);
        let (col_class, col_sets) =
            classes(ow, kw, g.stride[1], g.dilation[1], g.padding[1], g.width);
        // small[(r·cols + s)·o + oc] = base of row class r, column class s, channel oc.
        let mut small = vec![0f32; row_sets.len() * col_sets.len() * o];
        for (r, rows) in row_sets.iter().enumerate() {
            for (s, cols) in col_sets.iter().enumerate() {
                for oc in 0..o {
                    let sums = &self.tap_sums[oc * kh * kw..][..kh * kw];
                    let mut padded = 0i64;
                    for i in 0..kh {
                        for j in 0..kw {
                            if !(rows[i] && cols[j]) {
                                padded += i64::from(sums[i * kw + j]);
                            }
                        }
                    }
                    small[(r * col_sets.len() + s) * o + oc] = k_eff - padded as f32;
                }
            }
        }
        let mut values = vec![0f32; row_sets.len() * o * ow];
        for r in 0..row_sets.len() {
            for oc in 0..o {
                for (x, &s) in col_class.iter().enumerate() {
                    values[(r * o + oc) * ow + x] = small[(r * col_sets.len() + s) * o + oc];
                }
            }
        }
        BaseTable::new(row_class, values)
    }
}

/// Classes of the `out` output positions along one axis by the set of kernel taps inside the
/// image: the class of each position, and each class's set (`set[i]`: tap `i` is inside).
pub(crate) fn classes(
    out: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: usize,
    size: usize,
) -> (Vec<usize>, Vec<Vec<bool>>) {
    let mut sets: Vec<Vec<bool>> = Vec::new();
    let class = (0..out)
        .map(|y| {
            let set: Vec<bool> = (0..kernel)
                .map(|i| {
                    let p = y * stride + i * dilation;
                    p >= padding && p - padding < size
                })
                .collect();
            match sets.iter().position(|s| *s == set) {
                Some(c) => c,
                None => {
                    sets.push(set);
                    sets.len() - 1
                }
            }
        })
        .collect();
    (class, sets)
}
