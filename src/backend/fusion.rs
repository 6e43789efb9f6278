//! [`QnnBackend`] on `Fusion<B>`, the form `burn::backend::Wgpu` takes under Burn's default
//! features. Quantizers are plain tensor ops that Fusion records and fuses; every packed op is
//! registered as a custom operation that runs the inner backend's kernel when the stream
//! executes.

use std::marker::PhantomData;

use burn::tensor::{DType, Device, Element, Shape, Tensor, TensorPrimitive, ops::FloatTensor};
use burn_fusion::{
    Fusion, FusionBackend, FusionRuntime, FusionTensor,
    stream::{Operation, OperationStreams},
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use super::{PackedWords, QnnBackend};
use crate::ops::{BatchPlan, ConvGeometry, Encoding, HostPacked};

/// A packed tensor on `Fusion<B>`.
pub type FusionPacked<R> = PackedWords<FusionTensor<R>>;

/// A backend whose packed tensors are word tensors, as `Fusion<B>` needs of its inner backend.
pub trait WordPackedBackend:
    FusionBackend
    + QnnBackend<
        Packed = PackedWords<<Self as burn::tensor::backend::BackendTypes>::IntTensorPrimitive>,
    >
{
}

impl<B> WordPackedBackend for B where
    B: FusionBackend
        + QnnBackend<
            Packed = PackedWords<<B as burn::tensor::backend::BackendTypes>::IntTensorPrimitive>,
        >
{
}

type Handles<B> =
    HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

/// What a custom op needs to rebuild a packed operand on the inner backend.
#[derive(Clone, Debug)]
struct PackedMeta {
    word_count: usize,
    shape: Vec<usize>,
    encoding: Encoding,
}

impl PackedMeta {
    fn of<T>(packed: &PackedWords<T>) -> Self {
        Self {
            word_count: packed.word_count,
            shape: packed.shape.clone(),
            encoding: packed.encoding,
        }
    }

    fn with_words<T>(&self, words: T) -> PackedWords<T> {
        PackedWords {
            words,
            word_count: self.word_count,
            shape: self.shape.clone(),
            encoding: self.encoding,
        }
    }
}

/// The words a tensor of `shape` packs into (see `PackedWords`).
fn word_count(shape: &[usize], encoding: Encoding) -> usize {
    let (k, rows) = shape.split_last().expect("a packed tensor has dimensions");
    rows.iter().product::<usize>() * encoding.planes() * 2 * crate::kernels::words_per_row(*k)
}

#[derive(Clone, Debug)]
struct PackOp<B, const D: usize> {
    desc: CustomOpIr,
    encoding: Encoding,
    _backend: PhantomData<B>,
}

impl<B: WordPackedBackend, const D: usize> Operation<B::FusionRuntime> for PackOp<B, D> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([x], [out]) = self.desc.as_fixed();
        let x = float_tensor::<B, D>(handles.get_float_tensor::<B>(x));
        handles.register_int_tensor::<B>(&out.id, B::qnn_pack(x, self.encoding).words);
    }
}

#[derive(Clone, Debug)]
struct UnpackOp<B, const D: usize> {
    desc: CustomOpIr,
    meta: PackedMeta,
    _backend: PhantomData<B>,
}

impl<B: WordPackedBackend, const D: usize> Operation<B::FusionRuntime> for UnpackOp<B, D> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([words], [out]) = self.desc.as_fixed();
        let packed = self.meta.with_words(handles.get_int_tensor::<B>(words));
        let values = B::qnn_unpack::<D>(&packed);
        handles.register_float_tensor::<B>(&out.id, values.into_primitive().tensor());
    }
}

#[derive(Clone, Debug)]
struct PackedMatmulOp<B, const D: usize> {
    desc: CustomOpIr,
    lhs: PackedMeta,
    rhs: PackedMeta,
    _backend: PhantomData<B>,
}

impl<B: WordPackedBackend, const D: usize> Operation<B::FusionRuntime> for PackedMatmulOp<B, D> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([lhs, rhs], [out]) = self.desc.as_fixed();
        let lhs = self.lhs.with_words(handles.get_int_tensor::<B>(lhs));
        let rhs = self.rhs.with_words(handles.get_int_tensor::<B>(rhs));
        let product = B::qnn_packed_matmul::<D>(&lhs, &rhs);
        handles.register_float_tensor::<B>(&out.id, product.into_primitive().tensor());
    }
}

#[derive(Clone, Debug)]
struct XnorMatmulOp<B, const D: usize> {
    desc: CustomOpIr,
    _backend: PhantomData<B>,
}

impl<B: WordPackedBackend, const D: usize> Operation<B::FusionRuntime> for XnorMatmulOp<B, D> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([lhs, rhs], [out]) = self.desc.as_fixed();
        let lhs = float_tensor::<B, D>(handles.get_float_tensor::<B>(lhs));
        let rhs = float_tensor::<B, D>(handles.get_float_tensor::<B>(rhs));
        let product = B::qnn_xnor_matmul(lhs, rhs);
        handles.register_float_tensor::<B>(&out.id, product.into_primitive().tensor());
    }
}

#[derive(Clone, Debug)]
struct SaveSignsOp<B, const D: usize> {
    desc: CustomOpIr,
    _backend: PhantomData<B>,
}

impl<B: WordPackedBackend, const D: usize> Operation<B::FusionRuntime> for SaveSignsOp<B, D> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([x], [signs, blocked]) = self.desc.as_fixed();
        let x = float_tensor::<B, D>(handles.get_float_tensor::<B>(x));
        let (s, b) = B::qnn_save_signs(x);
        handles.register_int_tensor::<B>(&signs.id, s.words);
        handles.register_int_tensor::<B>(&blocked.id, b.words);
    }
}

/// Which gradient of a binary convolution a [`ConvGradOp`] computes.
#[derive(Clone, Copy, Debug)]
enum ConvGrad {
    Input,
    Weight,
}

#[derive(Clone, Debug)]
struct ConvGradOp<B> {
    desc: CustomOpIr,
    which: ConvGrad,
    signs: PackedMeta,
    blocked: PackedMeta,
    input_shape: [usize; 4],
    geometry: ConvGeometry,
    _backend: PhantomData<B>,
}

impl<B: WordPackedBackend> Operation<B::FusionRuntime> for ConvGradOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([grad, signs, blocked], [out]) = self.desc.as_fixed();
        let grad = float_tensor::<B, 4>(handles.get_float_tensor::<B>(grad));
        let signs = self.signs.with_words(handles.get_int_tensor::<B>(signs));
        let blocked = self
            .blocked
            .with_words(handles.get_int_tensor::<B>(blocked));
        let (shape, geometry) = (self.input_shape, &self.geometry);
        let result = match self.which {
            ConvGrad::Input => {
                B::qnn_binary_conv2d_input_grad(grad, &signs, &blocked, shape, geometry)
            }
            ConvGrad::Weight => {
                B::qnn_binary_conv2d_weight_grad(grad, &signs, &blocked, shape, geometry)
            }
        };
        handles.register_float_tensor::<B>(&out.id, result.into_primitive().tensor());
    }
}

/// Which operand's gradient of a binary matrix product a [`MatmulGradOp`] computes.
#[derive(Clone, Copy, Debug)]
enum MatmulGrad {
    Lhs,
    Rhs,
}

#[derive(Clone, Debug)]
struct MatmulGradOp<B, const D: usize> {
    desc: CustomOpIr,
    which: MatmulGrad,
    signs: PackedMeta,
    blocked: PackedMeta,
    a_shape: [usize; D],
    b_shape: [usize; D],
    _backend: PhantomData<B>,
}

impl<B: WordPackedBackend, const D: usize> Operation<B::FusionRuntime> for MatmulGradOp<B, D> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([grad, signs, blocked], [out]) = self.desc.as_fixed();
        let grad = float_tensor::<B, D>(handles.get_float_tensor::<B>(grad));
        let signs = self.signs.with_words(handles.get_int_tensor::<B>(signs));
        let blocked = self
            .blocked
            .with_words(handles.get_int_tensor::<B>(blocked));
        let (a, b) = (self.a_shape, self.b_shape);
        let result = match self.which {
            MatmulGrad::Lhs => B::qnn_binary_matmul_lhs_grad(grad, &signs, &blocked, a, b),
            MatmulGrad::Rhs => B::qnn_binary_matmul_rhs_grad(grad, &signs, &blocked, a, b),
        };
        handles.register_float_tensor::<B>(&out.id, result.into_primitive().tensor());
    }
}

/// Registers a gradient op of `grad` and two saved bit rows, whose output is a float tensor of
/// `out_shape`; `op` builds the operation from its description.
fn register_grad<B: WordPackedBackend, const D: usize, const E: usize, O>(
    name: &'static str,
    grad: Tensor<Fusion<B>, D>,
    signs: &FusionPacked<B::FusionRuntime>,
    blocked: &FusionPacked<B::FusionRuntime>,
    out_shape: [usize; E],
    op: impl FnOnce(CustomOpIr) -> O,
) -> Tensor<Fusion<B>, E>
where
    O: Operation<B::FusionRuntime> + 'static,
{
    let grad = grad.into_primitive().tensor();
    let client = grad.client.clone();
    let out = TensorIr::uninit(
        client.create_empty_handle(),
        Shape::new(out_shape),
        B::FloatElem::dtype(),
    );
    let streams = OperationStreams::with_inputs([&grad, &signs.words, &blocked.words]);
    let desc = CustomOpIr::new(
        name,
        &[
            grad.into_ir(),
            signs.words.clone().into_ir(),
            blocked.words.clone().into_ir(),
        ],
        &[out],
    );
    float_tensor(
        client
            .register(streams, OperationIr::Custom(desc.clone()), op(desc))
            .output(),
    )
}

fn float_tensor<B: burn::tensor::backend::Backend, const D: usize>(
    primitive: FloatTensor<B>,
) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

impl<B: WordPackedBackend> QnnBackend for Fusion<B> {
    type Packed = FusionPacked<B::FusionRuntime>;

    fn qnn_pack<const D: usize>(x: Tensor<Self, D>, encoding: Encoding) -> Self::Packed {
        let shape = x.dims().to_vec();
        let word_count = word_count(&shape, encoding);
        let x = x.into_primitive().tensor();
        let client = x.client.clone();
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::new([word_count.max(1)]),
            DType::U32,
        );
        let streams = OperationStreams::with_inputs([&x]);
        let desc = CustomOpIr::new("burn_qnn::pack", &[x.into_ir()], &[out]);
        let op = PackOp::<B, D> {
            desc: desc.clone(),
            encoding,
            _backend: PhantomData,
        };
        let words = client
            .register(streams, OperationIr::Custom(desc), op)
            .output();
        PackedWords {
            words,
            word_count,
            shape,
            encoding,
        }
    }

    fn qnn_packed_shape(packed: &Self::Packed) -> Vec<usize> {
        packed.shape.clone()
    }

    fn qnn_packed_encoding(packed: &Self::Packed) -> Encoding {
        packed.encoding
    }

    fn qnn_unpack<const D: usize>(packed: &Self::Packed) -> Tensor<Self, D> {
        let client = packed.words.client.clone();
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::from(packed.shape.clone()),
            B::FloatElem::dtype(),
        );
        let streams = OperationStreams::with_inputs([&packed.words]);
        let desc = CustomOpIr::new(
            "burn_qnn::unpack",
            &[packed.words.clone().into_ir()],
            &[out],
        );
        let op = UnpackOp::<B, D> {
            desc: desc.clone(),
            meta: PackedMeta::of(packed),
            _backend: PhantomData,
        };
        float_tensor(
            client
                .register(streams, OperationIr::Custom(desc), op)
                .output(),
        )
    }

    fn qnn_packed_to_bytes(packed: &Self::Packed) -> Vec<u8> {
        packed.to_bytes::<Self>()
    }

    fn qnn_packed_from_host(host: HostPacked, device: &Device<Self>) -> Self::Packed {
        PackedWords::upload::<Self>(&host, device)
    }

    fn qnn_packed_matmul<const D: usize>(a: &Self::Packed, b_t: &Self::Packed) -> Tensor<Self, D> {
        let plan = BatchPlan::new("packed_matmul", &a.shape, &b_t.shape);
        let client = a.words.client.clone();
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::from(plan.out_shape),
            B::FloatElem::dtype(),
        );
        let streams = OperationStreams::with_inputs([&a.words, &b_t.words]);
        let desc = CustomOpIr::new(
            "burn_qnn::packed_matmul",
            &[a.words.clone().into_ir(), b_t.words.clone().into_ir()],
            &[out],
        );
        let op = PackedMatmulOp::<B, D> {
            desc: desc.clone(),
            lhs: PackedMeta::of(a),
            rhs: PackedMeta::of(b_t),
            _backend: PhantomData,
        };
        float_tensor(
            client
                .register(streams, OperationIr::Custom(desc), op)
                .output(),
        )
    }

    fn qnn_xnor_matmul<const D: usize>(a: Tensor<Self, D>, b: Tensor<Self, D>) -> Tensor<Self, D> {
        let mut b_transposed = b.dims();
        b_transposed.swap(D - 2, D - 1);
        let plan = BatchPlan::new("xnor_matmul", &a.dims(), &b_transposed);
        let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
        let client = a.client.clone();
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::from(plan.out_shape),
            B::FloatElem::dtype(),
        );
        let streams = OperationStreams::with_inputs([&a, &b]);
        let desc = CustomOpIr::new("burn_qnn::xnor_matmul", &[a.into_ir(), b.into_ir()], &[out]);
        let op = XnorMatmulOp::<B, D> {
            desc: desc.clone(),
            _backend: PhantomData,
        };
        float_tensor(
            client
                .register(streams, OperationIr::Custom(desc), op)
                .output(),
        )
    }

    /// The inner backend's kernel packing signs and band, as one custom op of two outputs.
    fn qnn_save_signs<const D: usize>(x: Tensor<Self, D>) -> (Self::Packed, Self::Packed) {
        let len = x.shape().num_elements();
        let shape = vec![1, len];
        let word_count = word_count(&shape, Encoding::Signs);
        let x = x.into_primitive().tensor();
        let client = x.client.clone();
        let words = || {
            TensorIr::uninit(
                client.create_empty_handle(),
                Shape::new([word_count.max(1)]),
                DType::U32,
            )
        };
        let streams = OperationStreams::with_inputs([&x]);
        let desc = CustomOpIr::new("burn_qnn::save_signs", &[x.into_ir()], &[words(), words()]);
        let op = SaveSignsOp::<B, D> {
            desc: desc.clone(),
            _backend: PhantomData,
        };
        let [signs, blocked] = client
            .register(streams, OperationIr::Custom(desc), op)
            .outputs();
        let row = |words| PackedWords {
            words,
            word_count,
            shape: shape.clone(),
            encoding: Encoding::Signs,
        };
        (row(signs), row(blocked))
    }

    /// The inner backend's input gradient kernel, as a custom op.
    fn qnn_binary_conv2d_input_grad(
        grad_out: Tensor<Self, 4>,
        weight_signs: &Self::Packed,
        input_blocked: &Self::Packed,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let (signs, blocked) = (PackedMeta::of(weight_signs), PackedMeta::of(input_blocked));
        register_grad(
            "burn_qnn::binary_conv2d_input_grad",
            grad_out,
            weight_signs,
            input_blocked,
            input_shape,
            |desc| ConvGradOp::<B> {
                desc,
                which: ConvGrad::Input,
                signs,
                blocked,
                input_shape,
                geometry: *geometry,
                _backend: PhantomData,
            },
        )
    }

    /// The inner backend's weight gradient kernel, as a custom op.
    fn qnn_binary_conv2d_weight_grad(
        grad_out: Tensor<Self, 4>,
        input_signs: &Self::Packed,
        weight_blocked: &Self::Packed,
        input_shape: [usize; 4],
        geometry: &ConvGeometry,
    ) -> Tensor<Self, 4> {
        let [c_in, c_out] = geometry.channels;
        let [kh, kw] = geometry.kernel;
        let (signs, blocked) = (PackedMeta::of(input_signs), PackedMeta::of(weight_blocked));
        register_grad(
            "burn_qnn::binary_conv2d_weight_grad",
            grad_out,
            input_signs,
            weight_blocked,
            [c_out, c_in, kh, kw],
            |desc| ConvGradOp::<B> {
                desc,
                which: ConvGrad::Weight,
                signs,
                blocked,
                input_shape,
                geometry: *geometry,
                _backend: PhantomData,
            },
        )
    }

    /// The inner backend's left gradient (its kernel, or its portable body for broadcast
    /// shapes), as a custom op.
    fn qnn_binary_matmul_lhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        b_signs: &Self::Packed,
        a_blocked: &Self::Packed,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        let (signs, blocked) = (PackedMeta::of(b_signs), PackedMeta::of(a_blocked));
        register_grad(
            "burn_qnn::binary_matmul_lhs_grad",
            grad,
            b_signs,
            a_blocked,
            a_shape,
            |desc| MatmulGradOp::<B, D> {
                desc,
                which: MatmulGrad::Lhs,
                signs,
                blocked,
                a_shape,
                b_shape,
                _backend: PhantomData,
            },
        )
    }

    /// The inner backend's right gradient (its kernel, or its portable body for broadcast
    /// shapes), as a custom op.
    fn qnn_binary_matmul_rhs_grad<const D: usize>(
        grad: Tensor<Self, D>,
        a_signs: &Self::Packed,
        b_blocked: &Self::Packed,
        a_shape: [usize; D],
        b_shape: [usize; D],
    ) -> Tensor<Self, D> {
        let (signs, blocked) = (PackedMeta::of(a_signs), PackedMeta::of(b_blocked));
        register_grad(
            "burn_qnn::binary_matmul_rhs_grad",
            grad,
            a_signs,
            b_blocked,
            b_shape,
            |desc| MatmulGradOp::<B, D> {
                desc,
                which: MatmulGrad::Rhs,
                signs,
                blocked,
                a_shape,
                b_shape,
                _backend: PhantomData,
            },
        )
    }
}
