//! Packing any model built from the crate's layers, in place: [`pack`], [`save_packed`] and
//! [`load_packed`].

use std::{collections::HashMap, path::Path};

use burn::{
    module::{Module, ModuleMapper, ModuleVisitor, Param},
    record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder},
    tensor::{Bool, Device, Int, Tensor, TensorData},
};

use super::PackedNetError;
use crate::{
    QnnBackend,
    nn::{LatentPath, run_walk, walk_enter, walk_exit},
};

/// The packed form of `model`, of the same type: every layer of this crate inside it (binary
/// and k-bit `Linear` and `Conv2d`, the bit-plane layers), at any depth, stores the weights its
/// forward computes with as bits (the signs of a binary layer, the integer codes of a k-bit
/// layer's quantized weights) and empties its latent f32 `weight`. Every other parameter (Burn's
/// `BatchNorm`, `Linear`, biases) stays as it is.
///
/// The packed model gives exactly the outputs of `model` in evaluation mode (on the same
/// backend); its record is about 32× smaller where binary layers dominate, and it saves and
/// loads through any of Burn's recorders, or [`save_packed`] and [`load_packed`]. Its binary
/// layers skip binarizing and packing their weights on every call. It is for inference: the
/// packed layers have no latent weights left to train. Pack the inner model of a trained one
/// (`model.valid()`).
///
/// A model that is packed already stays as it is.
///
/// # Errors
/// [`PackedNetError::NoPackedForm`] naming the first layer whose weights have no packed form (a
/// k-bit layer whose weight quantizer has no integer [`CodeGrid`](crate::quant::CodeGrid),
/// such as `Pow2`); `model` is left as it was.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use burn::tensor::Distribution;
/// use burn_qnn::QnnBackend;
/// use burn_qnn::inference::pack;
/// use burn_qnn::nn::{BinaryLinear, BinaryLinearConfig};
///
/// #[derive(Module, Debug)]
/// struct Mlp<B: QnnBackend> {
///     hidden: BinaryLinear<B>,
///     norm: burn::nn::BatchNorm<B>,
///     output: BinaryLinear<B>,
/// }
///
/// impl<B: QnnBackend> Mlp<B> {
///     fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
///         let x = self.norm.forward(self.hidden.forward(x).unsqueeze_dim::<3>(2));
///         self.output.forward(x.squeeze_dim::<2>(2))
///     }
/// }
///
/// let device = Default::default();
/// let model = Mlp::<NdArray> {
///     hidden: BinaryLinearConfig::new(100, 64).init(&device),
///     norm: burn::nn::BatchNormConfig::new(64).init(&device),
///     output: BinaryLinearConfig::new(64, 10).init(&device),
/// };
/// let packed = pack(&model)?;
/// assert!(packed.hidden.packed.is_packed());
/// assert_eq!(packed.hidden.weight.dims(), [0, 0]); // the latent weights are gone
/// let x = Tensor::<NdArray, 2>::random([4, 100], Distribution::Default, &device);
/// assert_eq!(packed.forward(x.clone()).into_data(), model.forward(x).into_data());
/// # Ok::<(), burn_qnn::inference::PackedNetError>(())
/// ```
pub fn pack<B: QnnBackend, M: Module<B>>(model: &M) -> Result<M, PackedNetError> {
    let mut latents = CollectLatents::default();
    model.visit(&mut latents);
    let (packed, refusals) = run_walk(latents.found, false, || {
        model.clone().map(&mut PackMapper {
            path: LatentPath::default(),
        })
    });
    match refusals.into_iter().next() {
        None => Ok(packed),
        Some((layer, reason)) => Err(PackedNetError::NoPackedForm { layer, reason }),
    }
}

/// The first walk of [`pack`]: the values of every latent weight, by layer path (and every
/// lazily initialized parameter initialized on the way: a clone of one initializes on its own,
/// to other random values, so the packed form must be made from initialized ones).
#[derive(Default)]
struct CollectLatents {
    path: LatentPath,
    found: HashMap<String, TensorData>,
}

impl<B: QnnBackend> ModuleVisitor<B> for CollectLatents {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if self.path.at_latent_weight() && value.shape().num_elements() > 0 {
            self.found.insert(self.path.owner_name(), value.into_data());
        }
    }
}

/// The second walk of [`pack`]: follows the path for the slots, which pack their layer's
/// latent weight, and empties the latent weights.
struct PackMapper {
    path: LatentPath,
}

impl<B: QnnBackend> ModuleMapper<B> for PackMapper {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
        walk_enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
        walk_exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.path.at_latent_weight() || param.shape().num_elements() == 0 {
            return param;
        }
        let (id, weight, _) = param.consume();
        Param::initialized(id, Tensor::empty([0; D], &weight.device()))
    }
}

/// Saves the packed form of `model` ([`pack`]) to `path` with Burn's `NamedMpkBytesRecorder`
/// (full precision); the bytes are the same on every backend. The file is written atomically:
/// `path` holds either its previous content or the whole new record, never a part.
///
/// # Errors
/// The errors of [`pack`], [`PackedNetError::Recorder`] or [`PackedNetError::Io`].
pub fn save_packed<B: QnnBackend, M: Module<B>>(
    model: &M,
    path: impl AsRef<Path>,
) -> Result<(), PackedNetError> {
    write_record::<B, _>(pack(model)?.into_record(), path.as_ref())
}

/// Writes `record` to `path` with Burn's `NamedMpkBytesRecorder` (full precision), atomically
/// ([`crate::io::write_atomic`]): the one writer of packed files.
pub(super) fn write_record<B: QnnBackend, R: Record<B>>(
    record: R,
    path: &Path,
) -> Result<(), PackedNetError> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = Recorder::<B>::record(&recorder, record, ()).map_err(|source| {
        PackedNetError::Recorder {
            path: path.to_owned(),
            source,
        }
    })?;
    crate::io::write_atomic(path, bytes).map_err(|source| PackedNetError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a record written by [`write_record`] (on any backend) onto `device`.
pub(super) fn read_record<B: QnnBackend, R: Record<B>>(
    path: &Path,
    device: &Device<B>,
) -> Result<R, PackedNetError> {
    let bytes = std::fs::read(path).map_err(|source| PackedNetError::Io {
        path: path.to_owned(),
        source,
    })?;
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    Recorder::<B>::load(&recorder, bytes, device).map_err(|source| PackedNetError::Recorder {
        path: path.to_owned(),
        source,
    })
}

/// Loads a model saved by [`save_packed`] (on any backend) into `model`, a model of the same
/// type and configuration (freshly initialized, say), on `device`; returns its packed form.
///
/// Every parameter's shape is checked against `model`'s packed form, and every layer's packed
/// weights against its shape.
///
/// # Errors
/// [`PackedNetError::Io`] if the file cannot be read, [`PackedNetError::Recorder`] if it is not
/// a record of this model type, [`PackedNetError::Invalid`] naming the parameter whose shape
/// differs (a file of another configuration, or of the unpacked model) or the layer whose
/// packed weights do not fit it; the errors of [`pack`] for `model`.
pub fn load_packed<B: QnnBackend, M: Module<B>>(
    model: M,
    path: impl AsRef<Path>,
    device: &Device<B>,
) -> Result<M, PackedNetError> {
    let path = path.as_ref();
    let expected = pack(&model.to_device(device))?;
    let record: M::Record = read_record::<B, _>(path, device)?;
    let loaded = expected.clone().load_record(record);
    let (want, found) = (param_shapes(&expected), param_shapes(&loaded));
    if let Some((layer, what)) = first_difference(&want, &found) {
        return Err(PackedNetError::Invalid { layer, what });
    }
    crate::nn::check_packed(&loaded)
        .map_err(|(layer, what)| PackedNetError::Invalid { layer, what })?;
    Ok(loaded)
}

/// `(path, kind and shape)` of every parameter of `model`, in walk order.
fn param_shapes<B: QnnBackend, M: Module<B>>(model: &M) -> Vec<(String, String)> {
    let mut shapes = ParamShapes::default();
    model.visit(&mut shapes);
    shapes.found
}

/// The first parameter whose shape differs, as `(path, description)`.
fn first_difference(
    expected: &[(String, String)],
    found: &[(String, String)],
) -> Option<(String, String)> {
    for (index, want) in expected.iter().enumerate() {
        match found.get(index) {
            Some(got) if got == want => {}
            Some((path, got)) => {
                return Some((
                    path.clone(),
                    format!(
                        "the file's parameter is {got}, the model's packed form has {}",
                        want.1
                    ),
                ));
            }
            None => {
                return Some((
                    want.0.clone(),
                    "the file has no such parameter (is it a packed record of this model?)"
                        .to_owned(),
                ));
            }
        }
    }
    (found.len() > expected.len()).then(|| {
        (
            found[expected.len()].0.clone(),
            "the file has a parameter the model's packed form does not".to_owned(),
        )
    })
}

#[derive(Default)]
struct ParamShapes {
    path: Vec<String>,
    found: Vec<(String, String)>,
}

impl ParamShapes {
    fn push(&mut self, kind: &str, dims: &[usize]) {
        self.found
            .push((self.path.join("."), format!("{kind} {dims:?}")));
    }
}

impl<B: QnnBackend> ModuleVisitor<B> for ParamShapes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.push("float", &param.shape().dims::<D>());
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.push("int", &param.shape().dims::<D>());
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.push("bool", &param.shape().dims::<D>());
    }
}
