//! [`QnnBackend`] on every CubeCL runtime (wgpu, CUDA, ROCm) through burn-cubecl.
//!
//! Packed tensors live on the device as 32-bit words ([`CubePacked`]); packing, the tiled
//! XNOR/AND-popcount GEMM and unpacking are CubeCL kernels (see `kernels.rs`).

mod kernels;

use burn::tensor::{DType, Device, Shape, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous,
    ops::numeric::empty_device_dtype, tensor::CubeTensor,
};
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

use super::{PackedWords, QnnBackend};
use crate::ops::{BatchPlan, Encoding, HostPacked};
use kernels::{THREADS, TILE, mode};

/// Below this many rows of bit planes on the left, the one-output-per-thread kernel runs: the
/// tiled one would leave most of its `TILE` rows idle.
const GEMV_MAX_ROWS: usize = 16;

/// A packed tensor on a CubeCL device.
pub type CubePacked<R> = PackedWords<CubeTensor<R>>;

/// 32-bit words per row of `k` bits (a whole number of 64-bit words).
fn words_per_row(k: usize) -> usize {
    2 * crate::kernels::words_per_row(k)
}

fn max_code(encoding: Encoding) -> u32 {
    match encoding {
        Encoding::Signs => 0,
        Encoding::Codes(bits) => bits.max_code(),
    }
}

/// How the values of a float tensor are laid out for packing: `mats` matrices of `rows` rows of
/// `k` values, value `j` of row `r` of matrix `mat` at
/// `mat·mat_stride + r·row_stride + j·col_stride`.
struct PackLayout {
    mats: usize,
    rows: usize,
    k: usize,
    mat_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

fn pack<R: CubeRuntime>(
    input: CubeTensor<R>,
    layout: PackLayout,
    shape: Vec<usize>,
    encoding: Encoding,
) -> CubePacked<R> {
    let words = words_per_row(layout.k);
    let planes = encoding.planes();
    let word_count = layout.mats * layout.rows * planes * words;
    let output = empty_device_dtype(
        input.client.clone(),
        input.device.clone(),
        Shape::new([word_count.max(1)]),
        DType::U32,
    );
    if word_count > 0 {
        let cube_dim = CubeDim::new_1d(256);
        let cube_count = calculate_cube_count_elemwise(&input.client, word_count, cube_dim);
        let dtype = input.dtype;
        kernels::pack_kernel::launch::<R>(
            &input.client,
            cube_count,
            cube_dim,
            input.clone().into_tensor_arg(),
            output.clone().into_tensor_arg(),
            layout.k as u32,
            words as u32,
            planes as u32,
            layout.rows as u32,
            layout.mat_stride as u32,
            layout.row_stride as u32,
            layout.col_stride as u32,
            u32::from(matches!(encoding, Encoding::Codes(_))),
            max_code(encoding),
            dtype.into(),
        );
    }
    CubePacked {
        words: output,
        word_count,
        shape,
        encoding,
    }
}

/// Packs `[.., rows, k]` along `k`.
fn pack_rows<R: CubeRuntime>(x: CubeTensor<R>, encoding: Encoding) -> CubePacked<R> {
    let x = into_contiguous(x);
    let shape = x.meta.shape().to_vec();
    let k = *shape.last().expect("a packed tensor has dimensions");
    let rows = shape[..shape.len() - 1].iter().product();
    let layout = PackLayout {
        mats: 1,
        rows,
        k,
        mat_stride: 0,
        row_stride: k,
        col_stride: 1,
    };
    pack(x, layout, shape, encoding)
}

/// Packs the columns of `[.., k, n]`: the result is `[.., n, k]`.
fn pack_columns<R: CubeRuntime>(x: CubeTensor<R>, encoding: Encoding) -> CubePacked<R> {
    let x = into_contiguous(x);
    let mut shape = x.meta.shape().to_vec();
    let d = shape.len();
    let (k, n) = (shape[d - 2], shape[d - 1]);
    let mats = shape[..d - 2].iter().product();
    shape.swap(d - 2, d - 1);
    let layout = PackLayout {
        mats,
        rows: n,
        k,
        mat_stride: k * n,
        row_stride: 1,
        col_stride: n,
    };
    pack(x, layout, shape, encoding)
}

fn unpack<R: CubeRuntime>(packed: &CubePacked<R>, dtype: DType) -> CubeTensor<R> {
    let k = *packed.shape.last().expect("a packed tensor has dimensions");
    let len: usize = packed.shape.iter().product();
    let words = &packed.words;
    let output = empty_device_dtype(
        words.client.clone(),
        words.device.clone(),
        Shape::new([len.max(1)]),
        dtype,
    );
    if len > 0 {
        let cube_dim = CubeDim::new_1d(256);
        let cube_count = calculate_cube_count_elemwise(&words.client, len, cube_dim);
        kernels::unpack_kernel::launch::<R>(
            &words.client,
            cube_count,
            cube_dim,
            words.clone().into_tensor_arg(),
            output.clone().into_tensor_arg(),
            k as u32,
            words_per_row(k) as u32,
            packed.encoding.planes() as u32,
            u32::from(matches!(packed.encoding, Encoding::Codes(_))),
            dtype.into(),
        );
    }
    burn_cubecl::ops::reshape(output, Shape::from(packed.shape.clone()))
}

/// The popcount GEMM of `a [.., m, k]` and `b_t [.., n, k]` over their bit-plane rows:
/// `[batch, m·planes_a, n·planes_b]`, and the batch plan.
fn popcount_gemm<R: CubeRuntime>(
    a: &CubePacked<R>,
    b_t: &CubePacked<R>,
    dtype: DType,
) -> (CubeTensor<R>, BatchPlan) {
    let plan = BatchPlan::new("packed_matmul", &a.shape, &b_t.shape);
    let (pa, pb) = (a.encoding.planes(), b_t.encoding.planes());
    let (gemm_mode, a_rows, b_rows) = match (a.encoding, b_t.encoding) {
        (Encoding::Signs, Encoding::Signs) => (mode::XOR, plan.m, plan.n),
        (Encoding::Codes(_), Encoding::Signs) => (mode::AND_SIGNED_RHS, plan.m * pa, plan.n),
        (Encoding::Signs, Encoding::Codes(_)) => (mode::AND_SIGNED_LHS, plan.m, plan.n * pb),
        (Encoding::Codes(_), Encoding::Codes(_)) => (mode::AND, plan.m * pa, plan.n * pb),
    };
    let words = words_per_row(plan.k);
    let (scale, offset) = if gemm_mode == mode::XOR {
        (-2, plan.k as i32)
    } else {
        (1, 0)
    };
    let client = a.words.client.clone();
    let raw = empty_device_dtype(
        client.clone(),
        a.words.device.clone(),
        Shape::new([plan.batch, a_rows, b_rows]),
        dtype,
    );
    if plan.batch * a_rows * b_rows > 0 {
        let stride = |rows: usize, shared: bool| if shared { 0 } else { (rows * words) as u32 };
        let (a_stride, b_stride) = (
            stride(a_rows, plan.lhs_shared()),
            stride(b_rows, plan.rhs_shared()),
        );
        // Both kernels take the same arguments; they differ in how threads map to outputs.
        let few_rows = a_rows < GEMV_MAX_ROWS;
        let launch = if few_rows {
            kernels::popcount_gemv_kernel::launch::<R>
        } else {
            kernels::popcount_gemm_kernel::launch::<R>
        };
        let (cube_count, cube_dim) = if few_rows {
            let cube_dim = CubeDim::new_1d(256);
            let total = plan.batch * a_rows * b_rows;
            (
                calculate_cube_count_elemwise(&client, total, cube_dim),
                cube_dim,
            )
        } else {
            let cube_count = CubeCount::Static(
                a_rows.div_ceil(TILE as usize) as u32,
                b_rows.div_ceil(TILE as usize) as u32,
                plan.batch as u32,
            );
            (cube_count, CubeDim::new_2d(THREADS, THREADS))
        };
        launch(
            &client,
            cube_count,
            cube_dim,
            a.words.clone().into_tensor_arg(),
            b_t.words.clone().into_tensor_arg(),
            raw.clone().into_tensor_arg(),
            a_rows as u32,
            b_rows as u32,
            words as u32,
            a_stride,
            b_stride,
            scale,
            offset,
            gemm_mode,
            dtype.into(),
        );
    }
    (raw, plan)
}

impl<R, F, I, BT> QnnBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type Packed = CubePacked<R>;

    fn qnn_pack<const D: usize>(x: Tensor<Self, D>, encoding: Encoding) -> CubePacked<R> {
        pack_rows(x.into_primitive().tensor(), encoding)
    }

    fn qnn_packed_shape(packed: &CubePacked<R>) -> Vec<usize> {
        packed.shape.clone()
    }

    fn qnn_packed_encoding(packed: &CubePacked<R>) -> Encoding {
        packed.encoding
    }

    fn qnn_unpack<const D: usize>(packed: &CubePacked<R>) -> Tensor<Self, D> {
        Tensor::from_primitive(TensorPrimitive::Float(unpack(packed, F::dtype())))
    }

    fn qnn_packed_to_bytes(packed: &CubePacked<R>) -> Vec<u8> {
        packed.to_bytes::<Self>()
    }

    fn qnn_packed_from_host(host: HostPacked, device: &Device<Self>) -> CubePacked<R> {
        PackedWords::upload::<Self>(&host, device)
    }

    fn qnn_packed_matmul<const D: usize>(
        a: &CubePacked<R>,
        b_t: &CubePacked<R>,
    ) -> Tensor<Self, D> {
        let (raw, plan) = popcount_gemm(a, b_t, F::dtype());
        let raw = Tensor::<Self, 3>::from_primitive(TensorPrimitive::Float(raw));
        let (pa, pb) = match (a.encoding, b_t.encoding) {
            (Encoding::Codes(_), Encoding::Codes(_)) => {
                (a.encoding.planes(), b_t.encoding.planes())
            }
            (Encoding::Codes(_), Encoding::Signs) => (a.encoding.planes(), 1),
            (Encoding::Signs, Encoding::Codes(_)) => (1, b_t.encoding.planes()),
            (Encoding::Signs, Encoding::Signs) => (1, 1),
        };
        let out = if pa * pb == 1 {
            raw
        } else {
            // Σ_p Σ_q 2^(p+q) · count[p, q]: integers times powers of two, exact in f32.
            let device = raw.device();
            let weights: Vec<f32> = (0..pa)
                .flat_map(|p| (0..pb).map(move |q| (1u32 << (p + q)) as f32))
                .collect();
            let weights =
                Tensor::<Self, 5>::from_data(TensorData::new(weights, [1, 1, pa, 1, pb]), &device);
            let planes = raw.reshape([plan.batch, plan.m, pa, plan.n, pb]);
            (planes * weights)
                .sum_dim(4)
                .sum_dim(2)
                .reshape([plan.batch, plan.m, plan.n])
        };
        out.reshape(Shape::from(plan.out_shape))
    }

    fn qnn_xnor_matmul<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>) -> Tensor<Self, D> {
        let a = pack_rows(a.into_primitive().tensor(), Encoding::Signs);
        let b_t = pack_columns(b.into_primitive().tensor(), Encoding::Signs);
        Self::qnn_packed_matmul(&a, &b_t)
    }
}
