//! Packed operands held in host memory and the products on them, on top of [`crate::kernels`].
//!
//! Burn-free: shapes are plain `Vec<usize>`, data plain slices. The CPU backend keeps its packed
//! tensors in this form; other backends use it until they have kernels of their own.

use std::sync::{Arc, OnceLock};

use crate::kernels::{bitserial, conv, pack, words_per_row, xnor};

use super::{Encoding, PackedError};

/// Packed rows in host memory: shape `[.., rows, k]`, each row `planes × words_per_row(k)`
/// little-endian `u64` words (see [`crate::kernels`] for the bit layout).
#[derive(Clone, Debug)]
pub struct HostPacked {
    words: Arc<Vec<u64>>,
    shape: Vec<usize>,
    encoding: Encoding,
    /// These words rearranged for the direct convolution kernel, made on first use (by the
    /// NdArray backend and the packed network's CPU path).
    conv_weights: OnceLock<Arc<ConvWeights>>,
    /// Each row's sum of codes (for codes), made on first use by the products of prepacked
    /// codes.
    code_sums: OnceLock<Arc<Vec<f32>>>,
}

/// Convolution weights in the direct kernel's layout, with the channels and kernel they were
/// made for.
#[derive(Debug)]
pub(crate) struct ConvWeights {
    pub(crate) in_channels: usize,
    pub(crate) kernel: [usize; 2],
    pub(crate) weights: conv::ConvWeightBlocks,
}

impl HostPacked {
    /// Packs row-major `values` of `shape` along the last dimension.
    pub fn pack(values: &[f32], shape: &[usize], encoding: Encoding) -> Self {
        let (rows, k) = rows_and_k(shape);
        let mut words = vec![0u64; rows * encoding.planes() * words_per_row(k)];
        match encoding {
            Encoding::Signs => pack::pack_signs(values, rows, k, &mut words),
            Encoding::Codes(bits) => pack::pack_planes(values, rows, k, bits.get(), &mut words),
        }
        Self::from_words(words, shape.to_vec(), encoding)
    }

    /// Packs the columns of the row-major matrices `[.., k, n]` in `values`: the result has
    /// shape `[.., n, k]` (the transpose, packed along `k`).
    pub fn pack_columns(values: &[f32], shape: &[usize], encoding: Encoding) -> Self {
        let (batch, k, n) = split_matrix(shape);
        let words_per_matrix = n * encoding.planes() * words_per_row(k);
        let mut words = vec![0u64; batch * words_per_matrix];
        for (src, dst) in values
            .chunks_exact((k * n).max(1))
            .zip(words.chunks_exact_mut(words_per_matrix.max(1)))
            .take(batch)
        {
            match encoding {
                Encoding::Signs => pack::pack_signs_columns(src, k, n, dst),
                Encoding::Codes(bits) => pack::pack_planes_columns(src, k, n, bits.get(), dst),
            }
        }
        let mut packed_shape = shape.to_vec();
        let last = packed_shape.len() - 1;
        packed_shape.swap(last - 1, last);
        Self::from_words(words, packed_shape, encoding)
    }

    /// Packed rows from their words (`words_per_row(k)` per row and plane).
    pub(crate) fn from_words(words: Vec<u64>, shape: Vec<usize>, encoding: Encoding) -> Self {
        Self {
            words: Arc::new(words),
            shape,
            encoding,
            conv_weights: OnceLock::new(),
            code_sums: OnceLock::new(),
        }
    }

    /// Each row's sum of codes, `Σ_p 2^p · popcount(plane p)`, computed once and kept (for the
    /// affine terms of a product of codes).
    ///
    /// # Panics
    /// If the rows hold signs.
    pub(crate) fn row_code_sums(&self) -> Arc<Vec<f32>> {
        let Encoding::Codes(bits) = self.encoding else {
            panic!("row_code_sums: the rows hold signs, not codes");
        };
        self.code_sums
            .get_or_init(|| {
                let (rows, k) = rows_and_k(&self.shape);
                Arc::new(pack::plane_code_sums(&self.words, rows, k, bits.get()))
            })
            .clone()
    }

    /// These packed rows `[C_out, k_h·k_w·C']` (see [`crate::ops::PackedConvWeights`]) in the
    /// direct convolution kernel's layout, rearranged once and kept.
    pub(crate) fn conv_weights(&self, in_channels: usize, kernel: [usize; 2]) -> Arc<ConvWeights> {
        let made = self.conv_weights.get_or_init(|| {
            Arc::new(ConvWeights {
                in_channels,
                kernel,
                weights: conv::ConvWeightBlocks::from_tap_rows(
                    &self.words,
                    self.shape[0],
                    in_channels,
                    kernel,
                ),
            })
        });
        assert!(
            made.in_channels == in_channels && made.kernel == kernel,
            "packed convolution weights used with another geometry"
        );
        made.clone()
    }

    /// The packed words (see [`crate::kernels`] for the layout).
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// The logical shape `[.., rows, k]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// How the values are encoded.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The values back as floats: ±1 for signs, the integer codes for codes.
    pub fn unpack(&self) -> Vec<f32> {
        let (rows, k) = rows_and_k(&self.shape);
        let mut out = vec![0f32; rows * k];
        match self.encoding {
            Encoding::Signs => pack::unpack_signs(&self.words, rows, k, &mut out),
            Encoding::Codes(bits) => {
                pack::unpack_planes(&self.words, rows, k, bits.get(), &mut out)
            }
        }
        out
    }

    /// The packed words as little-endian bytes: the layout shared by every backend.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Reads packed bytes written by [`HostPacked::to_bytes`] on any backend, checking their
    /// length and that every padding bit is zero.
    pub fn from_bytes(
        bytes: &[u8],
        shape: &[usize],
        encoding: Encoding,
    ) -> Result<Self, PackedError> {
        if shape.len() < 2 {
            return Err(PackedError::Rank(shape.len()));
        }
        // The shape comes from outside (a file): every size is checked, so that a shape whose
        // byte count wraps around (`[1 << 61, 1, 64]`: 2^64 bytes) cannot pass for 0 bytes.
        let (k, leading) = shape.split_last().unwrap_or((&0, &[]));
        let k = *k;
        let row_words = words_per_row(k);
        let rows = leading.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let sizes = rows.and_then(|rows| {
            let bytes = rows
                .checked_mul(encoding.planes())?
                .checked_mul(row_words)?
                .checked_mul(8)?;
            // `unpack` makes `rows · k` values.
            rows.checked_mul(k)?;
            Some(bytes)
        });
        let Some(expected) = sizes else {
            return Err(PackedError::TooLarge {
                shape: shape.to_vec(),
            });
        };
        if bytes.len() != expected {
            return Err(PackedError::Length {
                expected,
                actual: bytes.len(),
                shape: shape.to_vec(),
            });
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("chunks of 8 bytes")))
            .collect();
        let padding = padding_mask(k);
        if padding != 0 {
            let dirty = words
                .chunks_exact(row_words)
                .position(|row| row[row_words - 1] & padding != 0);
            if let Some(row) = dirty {
                return Err(PackedError::Padding { row });
            }
        }
        Ok(Self::from_words(words, shape.to_vec(), encoding))
    }

    /// The product of `self` `[.., m, k]` and the transpose of `rhs` `[.., n, k]`:
    /// `out[.., i, j] = Σ_t self[.., i, t] · rhs[.., j, t]`, with output shape `[.., m, n]`.
    ///
    /// # Panics
    /// If the ranks, `k` or the batch dimensions do not match (a batch of 1 broadcasts).
    pub fn matmul_transposed(&self, rhs: &HostPacked) -> (Vec<f32>, Vec<usize>) {
        let plan = BatchPlan::new("packed_matmul", &self.shape, &rhs.shape);
        let (m, n, k) = (plan.m, plan.n, plan.k);
        let lhs_stride = m * self.encoding.planes() * words_per_row(k);
        let rhs_stride = n * rhs.encoding.planes() * words_per_row(k);
        let mut out = vec![0f32; plan.batch * m * n];
        if m * n == 0 {
            return (out, plan.out_shape);
        }
        for (index, dst) in out.chunks_exact_mut(m * n).enumerate() {
            let a = &self.words[plan.lhs_index(index) * lhs_stride..][..lhs_stride];
            let b = &rhs.words[plan.rhs_index(index) * rhs_stride..][..rhs_stride];
            product(a, self.encoding, b, rhs.encoding, m, n, k, dst);
        }
        (out, plan.out_shape)
    }
}

/// One `[m, k] × [n, k]ᵀ` product, dispatched on the encodings.
#[allow(clippy::too_many_arguments)]
fn product(
    a: &[u64],
    ea: Encoding,
    b: &[u64],
    eb: Encoding,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    match (ea, eb) {
        (Encoding::Signs, Encoding::Signs) => xnor::xnor_gemm(a, b, m, n, k, out),
        (Encoding::Codes(bits), Encoding::Signs) => {
            bitserial::bitserial_binary_gemm(a, bits.get(), b, m, n, k, out)
        }
        (Encoding::Signs, Encoding::Codes(bits)) => {
            let mut transposed = vec![0f32; m * n];
            bitserial::bitserial_binary_gemm(b, bits.get(), a, n, m, k, &mut transposed);
            for i in 0..m {
                for j in 0..n {
                    out[i * n + j] = transposed[j * m + i];
                }
            }
        }
        (Encoding::Codes(a_bits), Encoding::Codes(b_bits)) => {
            bitserial::bitserial_gemm(a, a_bits.get(), b, b_bits.get(), m, n, k, out)
        }
    }
}

/// The bits of a row's last word that lie past `k`.
fn padding_mask(k: usize) -> u64 {
    match k % 64 {
        0 => 0,
        used => !0u64 << used,
    }
}

/// The number of rows (all dimensions but the last, multiplied) and the row length.
fn rows_and_k(shape: &[usize]) -> (usize, usize) {
    let (k, rows) = shape
        .split_last()
        .expect("a packed shape has at least one dimension");
    (rows.iter().product(), *k)
}

/// `(batch, rows, cols)` of a shape `[.., rows, cols]`.
fn split_matrix(shape: &[usize]) -> (usize, usize, usize) {
    let d = shape.len();
    assert!(
        d >= 2,
        "a matrix product needs at least 2 dimensions, got shape {shape:?}"
    );
    (shape[..d - 2].iter().product(), shape[d - 2], shape[d - 1])
}

/// How the batch dimensions of `[.., m, k]` and `[.., n, k]` pair up: equal, or one of them
/// holding a single matrix that is shared by all.
pub(crate) struct BatchPlan {
    /// Matrices in the output.
    pub batch: usize,
    /// Rows of the left operand.
    pub m: usize,
    /// Rows of the right operand (columns of the output).
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    lhs_batch: usize,
    rhs_batch: usize,
    /// The output shape `[.., m, n]`.
    pub out_shape: Vec<usize>,
}

impl BatchPlan {
    /// Checks that `[.., m, k]` and `[.., n, k]` can be multiplied; panics with the shapes if not.
    pub fn new(op: &str, lhs: &[usize], rhs: &[usize]) -> Self {
        assert!(
            lhs.len() == rhs.len() && lhs.len() >= 2,
            "{op}: the operands must have the same rank, at least 2, got shapes {lhs:?} and {rhs:?}"
        );
        let (lhs_batch, m, k) = split_matrix(lhs);
        let (rhs_batch, n, rhs_k) = split_matrix(rhs);
        assert_eq!(
            k, rhs_k,
            "{op}: the reduction dimensions differ ({k} and {rhs_k}) for shapes {lhs:?} and {rhs:?}"
        );
        let d = lhs.len();
        let out_batch_dims = if lhs_batch == 1 {
            &rhs[..d - 2]
        } else {
            &lhs[..d - 2]
        };
        assert!(
            lhs[..d - 2] == rhs[..d - 2] || lhs_batch == 1 || rhs_batch == 1,
            "{op}: the batch dimensions {:?} and {:?} do not match (nor is either a single matrix)",
            &lhs[..d - 2],
            &rhs[..d - 2]
        );
        let mut out_shape = out_batch_dims.to_vec();
        out_shape.extend([m, n]);
        let batch = if lhs_batch == 1 { rhs_batch } else { lhs_batch };
        BatchPlan {
            batch,
            m,
            n,
            k,
            lhs_batch,
            rhs_batch,
            out_shape,
        }
    }

    /// Whether one left matrix serves every output matrix.
    pub fn lhs_shared(&self) -> bool {
        self.lhs_batch == 1
    }

    /// Whether one right matrix serves every output matrix.
    pub fn rhs_shared(&self) -> bool {
        self.rhs_batch == 1
    }

    /// The matrix of the left operand that output matrix `index` reads.
    pub fn lhs_index(&self, index: usize) -> usize {
        if self.lhs_shared() { 0 } else { index }
    }

    /// The matrix of the right operand that output matrix `index` reads.
    pub fn rhs_index(&self, index: usize) -> usize {
        if self.rhs_shared() { 0 } else { index }
    }
}
