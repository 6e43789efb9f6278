//! CubeCL kernels on 32-bit words: packing, the tiled popcount GEMM and unpacking.
//!
//! The packed layout is the one of [`crate::kernels`]: a row of `k` values takes
//! `2·ceil(k/64)` 32-bit words (the bytes of the CPU's 64-bit words), value `j` is bit `j % 32`
//! of word `j / 32`.

use cubecl::prelude::*;

/// Rows (and columns) of the output tile a cube computes.
pub const TILE: u32 = 64;
/// 32-bit words of the reduction loaded into shared memory per step.
pub const TILE_WORDS: u32 = 8;
/// Threads per side of a cube; each thread computes `OUT_PER_THREAD²` outputs.
pub const THREADS: u32 = 16;
const OUT_PER_THREAD: u32 = TILE / THREADS;

/// How the popcount GEMM combines two words.
pub mod mode {
    /// `popcount(a XOR b)`.
    pub const XOR: u32 = 0;
    /// `popcount(a AND b)`.
    pub const AND: u32 = 1;
    /// `popcount(a) − 2·popcount(a AND b)`: codes times signs.
    pub const AND_SIGNED_RHS: u32 = 2;
    /// `popcount(b) − 2·popcount(a AND b)`: signs times codes.
    pub const AND_SIGNED_LHS: u32 = 3;
}

/// Packs one output word per thread. The value `j` of row `r` of matrix `mat` is read at
/// `mat·mat_stride + r·row_stride + j·col_stride`; plane `p` of a code is bit `p` of
/// `min(floor(x), max_code)` for `x ≥ 0` (0 otherwise, NaN included); a sign is `x < 0`.
#[cube(launch)]
pub fn pack_kernel<F: Float>(
    input: &Tensor<F>,
    output: &mut Tensor<u32>,
    k: u32,
    words: u32,
    planes: u32,
    rows: u32,
    mat_stride: u32,
    row_stride: u32,
    col_stride: u32,
    codes: u32,
    max_code: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= output.len() {
        terminate!();
    }
    let w = pos % words;
    let plane_row = pos / words;
    let p = plane_row % planes;
    let mat_row = plane_row / planes;
    let r = mat_row % rows;
    let mat = mat_row / rows;
    let base = mat * mat_stride + r * row_stride;
    let mut word = 0u32;
    for b in 0..32u32 {
        let j = w * 32 + b;
        if j < k {
            let x = input[(base + j * col_stride) as usize];
            let mut bit = 0u32;
            if codes == 0 {
                if x < F::new(0.0) {
                    bit = 1u32;
                }
            } else if x >= F::new(0.0) {
                let code = u32::cast_from(F::min(F::floor(x), F::cast_from(max_code)));
                bit = (code >> p) & 1u32;
            }
            word |= bit << b;
        }
    }
    output[pos as usize] = word;
}

/// Unpacks one value per thread: ±1 for signs, the integer code for codes.
#[cube(launch)]
pub fn unpack_kernel<F: Float>(
    input: &Tensor<u32>,
    output: &mut Tensor<F>,
    k: u32,
    words: u32,
    planes: u32,
    codes: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= output.len() {
        terminate!();
    }
    let row = pos / k;
    let j = pos % k;
    let mut value = 0u32;
    for p in 0..planes {
        let word = input[((row * planes + p) * words + j / 32) as usize];
        value |= ((word >> (j % 32)) & 1u32) << p;
    }
    if codes == 0 {
        output[pos as usize] = F::new(1.0) - F::new(2.0) * F::cast_from(value);
    } else {
        output[pos as usize] = F::cast_from(value);
    }
}

/// `out[mat, i, j] = offset + scale · Σ_w op(a[mat, i, w], b[mat, j, w])` over rows of `words`
/// 32-bit words, `op` given by `mode`. Each cube computes a `TILE × TILE` block of the output
/// from `TILE_WORDS`-word slices of `a` and `b` staged in shared memory; each thread keeps
/// `OUT_PER_THREAD × OUT_PER_THREAD` sums in registers.
#[cube(launch)]
pub fn popcount_gemm_kernel<F: Float>(
    a: &Tensor<u32>,
    b: &Tensor<u32>,
    out: &mut Tensor<F>,
    m: u32,
    n: u32,
    words: u32,
    a_mat_stride: u32,
    b_mat_stride: u32,
    scale: i32,
    offset: i32,
    mode: u32,
    #[define(F)] _dtype: StorageType,
) {
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let thread = ty * THREADS + tx;
    let row0 = CUBE_POS_X * TILE;
    let col0 = CUBE_POS_Y * TILE;
    let mat = CUBE_POS_Z;
    let a_base = mat * a_mat_stride;
    let b_base = mat * b_mat_stride;

    let mut tile_a = SharedMemory::<u32>::new((TILE * TILE_WORDS) as usize);
    let mut tile_b = SharedMemory::<u32>::new((TILE * TILE_WORDS) as usize);
    let mut acc = Array::<i32>::new((OUT_PER_THREAD * OUT_PER_THREAD) as usize);
    for i in 0..OUT_PER_THREAD * OUT_PER_THREAD {
        acc[i as usize] = 0i32;
    }

    let loads = TILE * TILE_WORDS / (THREADS * THREADS);
    let mut w0 = 0u32;
    while w0 < words {
        for l in 0..loads {
            let index = thread + l * THREADS * THREADS;
            let r = index / TILE_WORDS;
            let w = w0 + index % TILE_WORDS;
            let mut va = 0u32;
            if row0 + r < m && w < words {
                va = a[(a_base + (row0 + r) * words + w) as usize];
            }
            tile_a[index as usize] = va;
            let mut vb = 0u32;
            if col0 + r < n && w < words {
                vb = b[(b_base + (col0 + r) * words + w) as usize];
            }
            tile_b[index as usize] = vb;
        }
        sync_cube();

        for c in 0..TILE_WORDS {
            for i in 0..OUT_PER_THREAD {
                let va = tile_a[((ty * OUT_PER_THREAD + i) * TILE_WORDS + c) as usize];
                for j in 0..OUT_PER_THREAD {
                    let vb = tile_b[((tx * OUT_PER_THREAD + j) * TILE_WORDS + c) as usize];
                    let count = popcount_op(va, vb, mode);
                    acc[(i * OUT_PER_THREAD + j) as usize] += count;
                }
            }
        }
        sync_cube();
        w0 += TILE_WORDS;
    }

    for i in 0..OUT_PER_THREAD {
        let row = row0 + ty * OUT_PER_THREAD + i;
        for j in 0..OUT_PER_THREAD {
            let col = col0 + tx * OUT_PER_THREAD + j;
            if row < m && col < n {
                let value = offset + scale * acc[(i * OUT_PER_THREAD + j) as usize];
                out[((mat * m + row) * n + col) as usize] = F::cast_from(value);
            }
        }
    }
}

/// The count one pair of words adds, as [`mode`] says.
#[cube]
fn popcount_op(va: u32, vb: u32, mode: u32) -> i32 {
    let both = i32::cast_from((va & vb).count_ones());
    let mut count = both;
    if mode == 0 {
        count = i32::cast_from((va ^ vb).count_ones());
    } else if mode == 2 {
        count = i32::cast_from(va.count_ones()) - 2i32 * both;
    } else if mode == 3 {
        count = i32::cast_from(vb.count_ones()) - 2i32 * both;
    }
    count
}

/// The popcount GEMM for few rows of `a` (batch-1 to batch-8 inference): one output per
/// thread, consecutive threads on consecutive rows of `b`, so no thread of a tile idles for
/// want of rows. Same arguments and result as [`popcount_gemm_kernel`].
#[cube(launch)]
pub fn popcount_gemv_kernel<F: Float>(
    a: &Tensor<u32>,
    b: &Tensor<u32>,
    out: &mut Tensor<F>,
    m: u32,
    n: u32,
    words: u32,
    a_mat_stride: u32,
    b_mat_stride: u32,
    scale: i32,
    offset: i32,
    mode: u32,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS as u32;
    if pos as usize >= out.len() {
        terminate!();
    }
    let mat = pos / (m * n);
    let i = pos % (m * n) / n;
    let j = pos % n;
    let a_base = mat * a_mat_stride + i * words;
    let b_base = mat * b_mat_stride + j * words;
    let mut acc = 0i32;
    for w in 0..words {
        acc += popcount_op(a[(a_base + w) as usize], b[(b_base + w) as usize], mode);
    }
    out[pos as usize] = F::cast_from(offset + scale * acc);
}
