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
use crate::ops::{BatchPlan, Encoding, HostPacked};

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
}
