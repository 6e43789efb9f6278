//! [`QnnBackend`] on every CubeCL runtime (wgpu, CUDA, ROCm) through burn-cubecl.
//!
//! Packed tensors live on the device as 32-bit words ([`CubePacked`]); packing, the tiled
//! XNOR/AND-popcount GEMM and unpacking are CubeCL kernels (see `kernels.rs`).

mod backward;
mod kernels;

use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Shape, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::kernel::conv::{conv_data_backward, conv_weight_backward};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous,
    ops::numeric::empty_device_dtype, tensor::CubeTensor,
};
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

use super::{PackedWords, QnnBackend, binary_backward};
use crate::kernels::backward::MatmulShape;
use crate::ops::{BatchPlan, ConvGeometry, Encoding, HostPacked, PaddingMode};
use kernels::{THREADS, TILE, mode};

/// Below this many rows of bit planes on the left, the one-output-per-thread kernel runs: the
/// tiled one would leave most of its `TILE` rows idle.
const GEMV_MAX_ROWS: usize = 16;

/// The GPU kernels index with 32-bit integers: every size, stride and element count they are
/// given must fit in a `u32` (at most 2^32 − 1). Exactness is as on the CPU: the popcount sums
/// are exact 32-bit integers (`K < 2^31`), and the float output holds them exactly below 2^24
/// (for ±1 operands `K < 2^24`; longer sums round once, when written).
///
/// # Panics
/// With `what` and the value, if it does not fit: like a shape mismatch, a tensor too large for
/// these kernels is the caller's error.
fn index_u32(what: &str, value: usize) -> u32 {
    u32::try_from(value).unwrap_or_else(|_| {
        panic!(
            "{what} = {value} is too large for the GPU kernels, which index with 32-bit \
             integers (at most {})",
            u32::MAX
        )
    })
}

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
        index_u32("pack: packed words", word_count);
        index_u32("pack: input values", layout.mats * layout.rows * layout.k);
        let cube_dim = CubeDim::new_1d(256);
        let cube_count = calculate_cube_count_elemwise(&input.client, word_count, cube_dim);
        let dtype = input.dtype;
        kernels::pack_kernel::launch::<R>(
            &input.client,
            cube_count,
            cube_dim,
            input.clone().into_tensor_arg(),
            output.clone().into_tensor_arg(),
            index_u32("pack: row length", layout.k),
            index_u32("pack: words per row", words),
            index_u32("pack: bit planes", planes),
            index_u32("pack: rows", layout.rows),
            index_u32("pack: matrix stride", layout.mat_stride),
            index_u32("pack: row stride", layout.row_stride),
            index_u32("pack: column stride", layout.col_stride),
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
        index_u32("unpack: values", len);
        let cube_dim = CubeDim::new_1d(256);
        let cube_count = calculate_cube_count_elemwise(&words.client, len, cube_dim);
        kernels::unpack_kernel::launch::<R>(
            &words.client,
            cube_count,
            cube_dim,
            words.clone().into_tensor_arg(),
            output.clone().into_tensor_arg(),
            index_u32("unpack: row length", k),
            index_u32("unpack: words per row", words_per_row(k)),
            index_u32("unpack: bit planes", packed.encoding.planes()),
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
        let k = i32::try_from(plan.k).unwrap_or_else(|_| {
            panic!(
                "packed_matmul: K = {} is too large for the GPU kernels' 32-bit sums (at most {})",
                plan.k,
                i32::MAX
            )
        });
        (-2, k)
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
        index_u32("packed_matmul: outputs", plan.batch * a_rows * b_rows);
        let stride = |rows: usize, shared: bool| {
            if shared {
                0
            } else {
                index_u32("packed_matmul: words per matrix", rows * words)
            }
        };
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
                index_u32("packed_matmul: row tiles", a_rows.div_ceil(TILE as usize)),
                index_u32(
                    "packed_matmul: column tiles",
                    b_rows.div_ceil(TILE as usize),
                ),
                index_u32("packed_matmul: batch", plan.batch),
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
            index_u32("packed_matmul: rows", a_rows),
            index_u32("packed_matmul: columns", b_rows),
            index_u32("packed_matmul: words per row", words),
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

/// The launch of a kernel of one thread per value of a `len`-value output.
fn elementwise<R: CubeRuntime>(
    client: &cubecl::client::ComputeClient<R>,
    len: usize,
) -> (CubeCount, CubeDim) {
    index_u32("elementwise kernel: outputs", len);
    let cube_dim = CubeDim::new_1d(256);
    (
        calculate_cube_count_elemwise(client, len, cube_dim),
        cube_dim,
    )
}

/// An uninitialized float tensor of `shape` on the device of `like`.
fn empty_like<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: &[usize],
    dtype: DType,
) -> CubeTensor<R> {
    let len: usize = shape.iter().product();
    let output = empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new([len.max(1)]),
        dtype,
    );
    burn_cubecl::ops::reshape(output, Shape::from(shape.to_vec()))
}

/// Checks that `packed` is one row of `len` signs, as [`QnnBackend::qnn_save_signs`] packs them.
fn check_saved<R: CubeRuntime>(what: &str, packed: &CubePacked<R>, len: usize) {
    assert!(
        packed.shape == [1, len] && packed.encoding == Encoding::Signs,
        "{what}: expected one row of {len} signs, got shape {:?} ({:?})",
        packed.shape,
        packed.encoding
    );
}

/// [`QnnBackend::qnn_save_signs`]: both bit rows of `x` in one kernel.
fn save_signs<R: CubeRuntime>(x: CubeTensor<R>) -> (CubePacked<R>, CubePacked<R>) {
    let x = into_contiguous(x);
    let len = x.meta.shape().iter().product::<usize>();
    let word_count = words_per_row(len);
    let words = || {
        empty_device_dtype(
            x.client.clone(),
            x.device.clone(),
            Shape::new([word_count.max(1)]),
            DType::U32,
        )
    };
    let (signs, blocked) = (words(), words());
    if word_count > 0 {
        let (cube_count, cube_dim) = elementwise(&x.client, word_count);
        backward::save_signs_kernel::launch::<R>(
            &x.client,
            cube_count,
            cube_dim,
            x.clone().into_tensor_arg(),
            signs.clone().into_tensor_arg(),
            blocked.clone().into_tensor_arg(),
            index_u32("save_signs: values", len),
            x.dtype.into(),
        );
    }
    let row = |words| CubePacked {
        words,
        word_count,
        shape: vec![1, len],
        encoding: Encoding::Signs,
    };
    (row(signs), row(blocked))
}

/// The kernels' `u32` arguments of a convolution's geometry on `input_shape`:
/// `[C_in, C_out, H, W, H_out, W_out, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w]`.
fn conv_arguments(input_shape: [usize; 4], geometry: &ConvGeometry) -> [u32; 14] {
    let [_, c, h, w] = input_shape;
    let [c_in, c_out] = geometry.channels;
    assert_eq!(
        c, c_in,
        "binary conv2d backward: input has {c} channels, the convolution expects {c_in}"
    );
    let [oh, ow] = geometry.output_size([h, w]);
    let [kh, kw] = geometry.kernel;
    [
        c_in,
        c_out,
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        geometry.stride[0],
        geometry.stride[1],
        geometry.padding[0],
        geometry.padding[1],
        geometry.dilation[0],
        geometry.dilation[1],
    ]
    .map(|v| index_u32("binary conv2d backward: a size", v))
}

/// `grad_out` as a contiguous tensor of the output's shape.
fn conv_grad_out<R: CubeRuntime>(
    grad_out: CubeTensor<R>,
    input_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> CubeTensor<R> {
    let [n, _, h, w] = input_shape;
    let [oh, ow] = geometry.output_size([h, w]);
    let expected = [n, geometry.channels[1], oh, ow];
    assert_eq!(
        grad_out.meta.shape().to_vec(),
        expected,
        "binary conv2d backward: the output gradient should be [N, C_out, H_out, W_out]"
    );
    into_contiguous(grad_out)
}

/// The options of Burn's convolution for `geometry`, with `padding`.
fn burn_conv_options(geometry: &ConvGeometry, padding: [usize; 2]) -> ConvOptions<2> {
    ConvOptions::new(geometry.stride, padding, geometry.dilation, 1)
}

/// `values` made contiguous, zeroed where `blocked` (one row of as many bits as `values` has
/// values) has a bit set.
fn zero_blocked<R: CubeRuntime>(values: CubeTensor<R>, blocked: &CubePacked<R>) -> CubeTensor<R> {
    let values = into_contiguous(values);
    let len = values.meta.shape().iter().product::<usize>();
    if len > 0 {
        let client = values.client.clone();
        let (cube_count, cube_dim) = elementwise(&client, len);
        backward::zero_blocked_kernel::launch::<R>(
            &client,
            cube_count,
            cube_dim,
            values.clone().into_tensor_arg(),
            blocked.words.clone().into_tensor_arg(),
            values.dtype.into(),
        );
    }
    values
}

/// [`QnnBackend::qnn_binary_conv2d_input_grad`]: Burn's data gradient of a convolution (its
/// autotuned kernels) with the weights' ±1 values unpacked from their bits, then the
/// straight-through cut from the input's bits. Where a kernel side is smaller than its stride,
/// Burn 0.21's direct transposed convolution (which its autotuner may pick) is wrong, and
/// [`conv2d_input_grad_direct`] computes it instead.
fn conv2d_input_grad<R: CubeRuntime>(
    grad_out: CubeTensor<R>,
    weight_signs: &CubePacked<R>,
    input_blocked: &CubePacked<R>,
    input_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> CubeTensor<R> {
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    let grad_out = conv_grad_out(grad_out, input_shape, geometry);
    check_saved(
        "binary conv2d input gradient: weight bits",
        weight_signs,
        c_out * c_in * kh * kw,
    );
    check_saved(
        "binary conv2d input gradient: input bits",
        input_blocked,
        input_shape.iter().product(),
    );
    let burn_is_exact = (0..2).all(|d| geometry.kernel[d] >= geometry.stride[d]);
    if !burn_is_exact || input_shape.contains(&0) {
        return conv2d_input_grad_direct(
            grad_out,
            input_shape,
            weight_signs,
            input_blocked,
            geometry,
        );
    }
    // The same checks as the direct kernel's: the input's channels, and every size within the
    // `u32` indices of `zero_blocked`.
    conv_arguments(input_shape, geometry);
    let weights = burn_cubecl::ops::reshape(
        unpack(weight_signs, grad_out.dtype),
        Shape::new([c_out, c_in, kh, kw]),
    );
    let grad = conv_data_backward::<R, 2>(
        grad_out,
        weights,
        Shape::new(input_shape),
        burn_conv_options(geometry, geometry.padding),
        Default::default(),
    )
    .expect("Burn's convolution data gradient accepts a binary convolution's geometry");
    zero_blocked(grad, input_blocked)
}

/// [`QnnBackend::qnn_binary_conv2d_weight_grad`]: Burn's weight gradient of a convolution (its
/// autotuned kernels) over the input's ±1 values unpacked from their bits, padded beforehand
/// with the geometry's padding value, then the straight-through cut from the weights' bits.
fn conv2d_weight_grad<R: CubeRuntime>(
    grad_out: CubeTensor<R>,
    input_signs: &CubePacked<R>,
    weight_blocked: &CubePacked<R>,
    input_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> CubeTensor<R> {
    let grad_out = conv_grad_out(grad_out, input_shape, geometry);
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    let weight_shape = [c_out, c_in, kh, kw];
    check_saved(
        "binary conv2d weight gradient: input bits",
        input_signs,
        input_shape.iter().product(),
    );
    check_saved(
        "binary conv2d weight gradient: weight bits",
        weight_blocked,
        weight_shape.iter().product(),
    );
    let [_, _, h, w, _, _, _, _, _, _, pad_h, pad_w, _, _] = conv_arguments(input_shape, geometry);
    if input_shape.contains(&0) || grad_out.meta.shape().contains(&0) {
        // Nothing to sum: zero gradients.
        return burn_cubecl::ops::numeric::zeros::<R>(
            grad_out.device.clone(),
            Shape::new(weight_shape),
            grad_out.dtype,
        );
    }
    let [n, _, _, _] = input_shape;
    let [ph, pw] = geometry.padding;
    let padded = empty_like(
        &grad_out,
        &[n, c_in, input_shape[2] + 2 * ph, input_shape[3] + 2 * pw],
        grad_out.dtype,
    );
    let client = grad_out.client.clone();
    let (cube_count, cube_dim) = elementwise(&client, padded.meta.shape().iter().product());
    backward::padded_signs_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        input_signs.words.clone().into_tensor_arg(),
        padded.clone().into_tensor_arg(),
        h,
        w,
        pad_h,
        pad_w,
        u32::from(geometry.padding_mode == PaddingMode::PlusOne),
        grad_out.dtype.into(),
    );
    let grad = conv_weight_backward::<R, 2>(
        padded,
        grad_out,
        Shape::new(weight_shape),
        burn_conv_options(geometry, [0, 0]),
        Default::default(),
    )
    .expect("Burn's convolution weight gradient accepts a binary convolution's geometry");
    zero_blocked(grad, weight_blocked)
}

/// [`QnnBackend::qnn_binary_conv2d_input_grad`] by [`backward::conv_input_grad_kernel`], one
/// input value per thread: where Burn's data gradient is wrong (see [`conv2d_input_grad`]).
/// `grad_out` is contiguous and the saved bits checked.
fn conv2d_input_grad_direct<R: CubeRuntime>(
    grad_out: CubeTensor<R>,
    input_shape: [usize; 4],
    weight_signs: &CubePacked<R>,
    input_blocked: &CubePacked<R>,
    geometry: &ConvGeometry,
) -> CubeTensor<R> {
    let input_len = input_shape.iter().product();
    let [c_in, c_out, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] =
        conv_arguments(input_shape, geometry);
    let out = empty_like(&grad_out, &input_shape, grad_out.dtype);
    if input_len > 0 {
        let client = &grad_out.client;
        let (cube_count, cube_dim) = elementwise(client, input_len);
        backward::conv_input_grad_kernel::launch::<R>(
            client,
            cube_count,
            cube_dim,
            grad_out.clone().into_tensor_arg(),
            weight_signs.words.clone().into_tensor_arg(),
            input_blocked.words.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            c_in,
            c_out,
            h,
            w,
            oh,
            ow,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            grad_out.dtype.into(),
        );
    }
    out
}

/// Which operand's gradient a matmul backward kernel computes.
#[derive(Clone, Copy)]
enum Side {
    Lhs,
    Rhs,
}

/// [`QnnBackend::qnn_binary_matmul_lhs_grad`] (`Side::Lhs`, `signs` of `b`, `blocked` of `a`) or
/// `rhs_grad` for equal batch dimensions.
fn matmul_grad<R: CubeRuntime>(
    side: Side,
    grad: CubeTensor<R>,
    signs: &CubePacked<R>,
    blocked: &CubePacked<R>,
    MatmulShape { batch, m, k, n }: MatmulShape,
    out_shape: &[usize],
) -> CubeTensor<R> {
    assert_eq!(
        grad.meta.shape().iter().product::<usize>(),
        batch * m * n,
        "binary matmul backward: the output gradient should hold [.., m, n] values"
    );
    let (what, signs_len, out_len) = match side {
        Side::Lhs => ("binary matmul left gradient", batch * k * n, batch * m * k),
        Side::Rhs => ("binary matmul right gradient", batch * m * k, batch * k * n),
    };
    check_saved(what, signs, signs_len);
    check_saved(what, blocked, out_len);
    let grad = into_contiguous(grad);
    let out = empty_like(&grad, out_shape, grad.dtype);
    if out_len > 0 {
        let client = &grad.client;
        let (cube_count, cube_dim) = elementwise(client, out_len);
        let launch = match side {
            Side::Lhs => backward::matmul_lhs_grad_kernel::launch::<R>,
            Side::Rhs => backward::matmul_rhs_grad_kernel::launch::<R>,
        };
        let [m, k, n] = [m, k, n].map(|v| index_u32("binary matmul backward: a size", v));
        launch(
            client,
            cube_count,
            cube_dim,
            grad.clone().into_tensor_arg(),
            signs.words.clone().into_tensor_arg(),
            blocked.words.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            m,
            k,
            n,
            grad.dtype.into(),
        );
    }
    out
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

    /// Signs and band in one kernel, a word of each per thread.
    fn qnn_save_signs<const D: usize>(x: Tensor<Self, D>) -> (CubePacked<R>, CubePacked<R>) {
        save_signs(x.into_primitive().tensor())
    }

    /// One thread per input value, reading the weight signs from the bits.
    fn qnn_binary_conv2d_input_grad(
        grad_out: Tensor<Self, 4>,
        weight_signs: &CubePacked<R>,
        input_blocked: &CubePacked<R>,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let grad = conv2d_input_grad(
            grad_out.into_primitive().tensor(),
            weight_signs,
            input_blocked,
            input_shape,
            geometry,
        );
        Tensor::from_primitive(TensorPrimitive::Float(grad))
    }

    /// One thread per weight, looping over the batch and output positions and reading the
    /// input signs from the bits.
    fn qnn_binary_conv2d_weight_grad(
        grad_out: Tensor<Self, 4>,
        input_signs: &CubePacked<R>,
        weight_blocked: &CubePacked<R>,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let grad = conv2d_weight_grad(
            grad_out.into_primitive().tensor(),
            input_signs,
            weight_blocked,
            input_shape,
            geometry,
        );
        Tensor::from_primitive(TensorPrimitive::Float(grad))
    }

    /// One thread per value of `a` where `a` and `b` have the same batch dimensions; broadcast
    /// products take the portable path.
    fn qnn_binary_matmul_lhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        b_signs: &CubePacked<R>,
        a_blocked: &CubePacked<R>,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        let Some(shape) = MatmulShape::same_batch(&a_shape, &b_shape) else {
            return binary_backward::matmul_lhs_grad_portable(
                grad, b_signs, a_blocked, a_shape, b_shape,
            );
        };
        let grad = matmul_grad(
            Side::Lhs,
            grad.into_primitive().tensor(),
            b_signs,
            a_blocked,
            shape,
            &a_shape,
        );
        Tensor::from_primitive(TensorPrimitive::Float(grad))
    }

    /// One thread per value of `b` where `a` and `b` have the same batch dimensions; broadcast
    /// products take the portable path.
    fn qnn_binary_matmul_rhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        a_signs: &CubePacked<R>,
        b_blocked: &CubePacked<R>,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        let Some(shape) = MatmulShape::same_batch(&a_shape, &b_shape) else {
            return binary_backward::matmul_rhs_grad_portable(
                grad, a_signs, b_blocked, a_shape, b_shape,
            );
        };
        let grad = matmul_grad(
            Side::Rhs,
            grad.into_primitive().tensor(),
            a_signs,
            b_blocked,
            shape,
            &b_shape,
        );
        Tensor::from_primitive(TensorPrimitive::Float(grad))
    }
}

#[cfg(test)]
mod tests {
    use super::index_u32;

    #[test]
    fn sizes_up_to_u32_max_pass_to_the_kernels() {
        assert_eq!(index_u32("rows", 0), 0);
        assert_eq!(index_u32("rows", u32::MAX as usize), u32::MAX);
    }

    #[test]
    #[should_panic(expected = "pack: rows = 4294967296 is too large for the GPU kernels")]
    fn a_size_past_u32_max_is_refused_with_its_name() {
        index_u32("pack: rows", u32::MAX as usize + 1);
    }
}
