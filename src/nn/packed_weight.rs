//! The packed form of a layer's weights: what its forward computes with (the signs of a binary
//! layer's latent weights, the integer codes of a k-bit layer's quantized weights), stored as
//! bits in the layer itself, so that any model built from the crate's layers packs in place
//! ([`crate::inference::pack`]) and saves through Burn's recorders.
//!
//! Each layer of the crate holds a [`PackedWeight`] declared before its `weight`. It is empty
//! while the model trains; packing fills it from the latent weight and empties the latent
//! weight. Visiting or mapping a slot first announces the weights' stored form
//! ([`StoredForm`]), so every walk knows the layer's `weight` is a latent weight before it
//! reaches it: the slot is the type-level marker of latent weights ([`super::LatentPath`]),
//! whatever the layer is called or wrapped in. Packing runs two walks: one collects the latent
//! weights by layer path, the next hands each to its slot through a thread-local walk state
//! (Burn's module walk offers no other way to pass values into a module) and empties it.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use burn::{
    module::{
        AutodiffModule, Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault,
        ModuleMapper, ModuleVisitor, Param, ParamId,
    },
    record::Record,
    tensor::{
        Device, Int, Tensor, TensorData, TensorPrimitive,
        backend::{AutodiffBackend, Backend},
        ops::FloatTensor,
    },
};

use crate::{
    QnnBackend,
    ops::{ConvGeometry, Encoding, Packed, PackedConvWeights},
    quant::{CodeGrid, Operand, Quantize, Quantizer},
};

/// How a layer's forward turns its latent weight into the weight it computes with, which the
/// packed form stores.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightForm<W: Quantize = Quantizer> {
    /// `sign(W)` (binary layers): one bit a weight, bit 1 for −1.
    Signs {
        /// Whether the layer multiplies its output by the mean absolute latent weight of each
        /// output channel (XNOR-Net's α), which the packed form then keeps in f32.
        scaled: bool,
    },
    /// `q(W)` of a weight quantizer (k-bit layers): the quantizer's integer codes, `k` bits a
    /// weight. A quantizer without a [`CodeGrid`] has no packed form.
    Quantized(W),
}

/// The packed weights of one layer (empty until the model is packed).
///
/// A layer that holds packed weights computes with them instead of its latent `weight`, which
/// packing empties; see [`crate::inference::pack`]. Its record is `None` while the layer is
/// not packed, so records written before packing existed still load.
#[derive(Debug, Clone)]
pub struct PackedWeight<B: QnnBackend, W: Quantize = Quantizer> {
    form: WeightForm<W>,
    /// The latent weight's shape: `[d_input, d_output]` or `[C_out, C_in, k_h, k_w]`.
    shape: Vec<usize>,
    device: Device<B>,
    state: Option<PackedState<B>>,
}

/// The saved form of a [`PackedWeight`]: the bytes of the packed rows (one output channel a
/// row, [`Packed::to_bytes`]) as little-endian `i32` words, and the per-channel scale of a
/// scaled binary layer.
#[derive(Record, Debug, Clone)]
pub struct PackedWeightRecord<B: Backend> {
    /// [`Packed::to_bytes`] of the rows, four bytes an element.
    pub words: Param<Tensor<B, 1, Int>>,
    /// The mean absolute latent weight per output channel, for scaled binary layers.
    pub scale: Option<Param<Tensor<B, 1>>>,
}

#[derive(Debug, Clone)]
struct PackedState<B: QnnBackend> {
    record: PackedWeightRecord<B>,
    /// The rows on the backend, read from `record.words` at first use.
    rows: Arc<OnceLock<Packed<B>>>,
    /// A binary convolution's signs in the convolution kernels' layout, made at first use.
    conv: Arc<OnceLock<PackedConvWeights<B>>>,
    /// The weight the forward computes with, unpacked from the rows at first use.
    weight: Arc<OnceLock<FloatTensor<B>>>,
}

impl<B: QnnBackend> PackedState<B> {
    fn new(record: PackedWeightRecord<B>) -> Self {
        Self {
            record,
            rows: Arc::new(OnceLock::new()),
            conv: Arc::new(OnceLock::new()),
            weight: Arc::new(OnceLock::new()),
        }
    }
}

/// How a layer's weights are stored once packed, as a [`PackedWeight`] announces it to a
/// module walk: visiting a slot enters (and at once leaves) a module of container type
/// [`StoredForm::CONTAINER`] whose name is the form, so that a `ModuleVisitor` (such as
/// [`crate::models::summary`]) learns what it cannot see in the parameters, the weights'
/// stored precision, packed or not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredForm {
    /// `count` weights in 1 bit, and a scale of `scales` f32 values that packing will add
    /// (XNOR-Net's α of a scaled layer not packed yet; 0 once packed, where the scale is a
    /// parameter).
    Signs { count: u64, scales: u64 },
    /// `count` weights in `bits` bits.
    Codes { bits: u64, count: u64 },
    /// `count` weights in f32 (no packed form).
    Float(u64),
}

impl StoredForm {
    /// The container type of the announcement.
    pub(crate) const CONTAINER: &'static str = "burn_qnn::StoredForm";

    fn name(self) -> String {
        match self {
            Self::Signs { count, scales } => format!("signs{scales}:{count}"),
            Self::Codes { bits, count } => format!("codes{bits}:{count}"),
            Self::Float(count) => format!("float:{count}"),
        }
    }

    /// The form a walk's `enter_module(name, container_type)` announces, if it is one.
    pub(crate) fn parse(container_type: &str, name: &str) -> Option<Self> {
        if container_type != Self::CONTAINER {
            return None;
        }
        let (kind, count) = name.split_once(':')?;
        let count = count.parse().ok()?;
        if kind == "float" {
            return Some(Self::Float(count));
        }
        if let Some(scales) = kind.strip_prefix("signs") {
            let scales = scales.parse().ok()?;
            return Some(Self::Signs { count, scales });
        }
        let bits = kind.strip_prefix("codes")?.parse().ok()?;
        Some(Self::Codes { bits, count })
    }
}

/// The state of a walk of the crate's own mappers over a model (packing, checking), which the
/// slots read: Burn's walk gives a module no other way to learn where it is or to receive
/// values from outside.
#[derive(Default)]
struct Walk {
    /// The module path of the walk's position.
    path: Vec<String>,
    /// Packing: the latent weight of each layer to pack, by layer path.
    latents: HashMap<String, TensorData>,
    /// Checking: whether each slot checks that its packed weights fit it.
    check: bool,
    /// The layers that could not be packed or checked, as `(layer, reason)`.
    refusals: Vec<(String, String)>,
}

thread_local! {
    static WALK: RefCell<Option<Walk>> = const { RefCell::new(None) };
}

/// Runs `walk` (a map of the model with a mapper that calls [`walk_enter`] and [`walk_exit`])
/// with the slots packing the `latents` of their layers (by layer path) or, with `check`,
/// checking their packed weights; returns its result and the refusals `(layer, reason)`.
pub(crate) fn run_walk<R>(
    latents: HashMap<String, TensorData>,
    check: bool,
    walk: impl FnOnce() -> R,
) -> (R, Vec<(String, String)>) {
    WALK.with(|state| {
        *state.borrow_mut() = Some(Walk {
            latents,
            check,
            ..Walk::default()
        })
    });
    let result = walk();
    let state = WALK
        .with(|state| state.borrow_mut().take())
        .unwrap_or_default();
    (result, state.refusals)
}

/// Follows a walk's `enter_module`.
pub(crate) fn walk_enter(name: &str) {
    WALK.with(|state| {
        if let Some(walk) = state.borrow_mut().as_mut() {
            walk.path.push(name.to_owned());
        }
    });
}

/// Follows a walk's `exit_module`.
pub(crate) fn walk_exit() {
    WALK.with(|state| {
        if let Some(walk) = state.borrow_mut().as_mut() {
            walk.path.pop();
        }
    });
}

/// Checks that the packed weights of every layer in `module` fit the layer; the first that does
/// not as `(layer, reason)`.
pub(crate) fn check_packed<B: QnnBackend, M: Module<B>>(
    module: &M,
) -> Result<(), (String, String)> {
    let (_, refusals) = run_walk(HashMap::new(), true, || module.clone().map(&mut WalkMapper));
    refusals.into_iter().next().map_or(Ok(()), Err)
}

/// A mapper that only follows the walk's path.
struct WalkMapper;

impl<B: QnnBackend> ModuleMapper<B> for WalkMapper {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        walk_enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        walk_exit();
    }
}

/// The mean absolute value per output channel of a latent weight (XNOR-Net's α), `[outputs]`:
/// over the input axis 0 of a `[d_input, d_output]` weight, over all but axis 0 of a
/// `[C_out, ..]` weight.
pub(crate) fn output_scale<B: Backend, const D: usize>(weight: Tensor<B, D>) -> Tensor<B, 1> {
    let dims = weight.dims();
    if D == 2 {
        weight.abs().mean_dim(0).reshape([dims[1]])
    } else {
        weight
            .abs()
            .reshape([dims[0] as i32, -1])
            .mean_dim(1)
            .reshape([dims[0]])
    }
}

/// The per-output scale `α = mean|W|` that a binary layer with `scaling` on multiplies its
/// product by: from the latent `weight`, or the one kept in `packed` once packed.
///
/// # Panics
/// If `scaling` is on but the layer was packed without its scale.
pub(crate) fn binary_alpha<B: QnnBackend, const D: usize>(
    layer: &str,
    scaling: bool,
    packed: &PackedWeight<B>,
    weight: &Param<Tensor<B, D>>,
) -> Option<Tensor<B, 1>> {
    if !scaling {
        return None;
    }
    if !packed.is_packed() {
        return Some(output_scale(weight.val()));
    }
    Some(packed.scale().unwrap_or_else(|| {
        panic!(
            "{layer}: `scaling` is on but the layer was packed without its scale (turn \
             `scaling` on before packing)"
        )
    }))
}

/// A weight as rows, one output channel a row: the transpose of `[d_input, d_output]`, or
/// `[C_out, C_in·k_h·k_w]`.
fn rows_of<B: Backend, const D: usize>(weight: Tensor<B, D>) -> Tensor<B, 2> {
    let dims = weight.dims();
    if D == 2 {
        weight.reshape([dims[0], dims[1]]).transpose()
    } else {
        weight.reshape([dims[0] as i32, -1])
    }
}

/// The inverse of [`rows_of`] for a weight of shape `shape`.
fn weight_of<B: Backend, const D: usize>(rows: Tensor<B, 2>, shape: &[usize]) -> Tensor<B, D> {
    let shape: [usize; D] = shape.try_into().expect("the weight's rank");
    if D == 2 {
        rows.transpose().reshape(shape)
    } else {
        rows.reshape(shape)
    }
}

impl<B: QnnBackend, W: Quantize> PackedWeight<B, W> {
    /// An empty slot for a latent weight of `shape` (`[d_input, d_output]` or
    /// `[C_out, C_in, k_h, k_w]`) on `device`.
    ///
    /// A layer of your own gets what the crate's layers get (clipping and the learning-rate
    /// scale of its latent weight, binary optimizers, packing, [`crate::models::summary`]) by
    /// declaring a `PackedWeight` field before a field named `weight` and computing with
    /// [`PackedWeight::forward_weight`] once packed:
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::module::{Module, Param};
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_qnn::{QnnBackend, inference::pack, nn::{PackedWeight, WeightForm, clip_latent_weights}, quant};
    ///
    /// #[derive(Module, Debug)]
    /// struct MySignDense<B: QnnBackend> {
    ///     packed: PackedWeight<B>, // before `weight`: marks it as a latent weight
    ///     weight: Param<Tensor<B, 2>>,
    /// }
    ///
    /// impl<B: QnnBackend> MySignDense<B> {
    ///     fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
    ///         let signs = self.packed.forward_weight().unwrap_or_else(|| quant::sign(self.weight.val()));
    ///         x.matmul(signs)
    ///     }
    /// }
    ///
    /// let device = Default::default();
    /// let layer = MySignDense::<NdArray> {
    ///     packed: PackedWeight::new(WeightForm::Signs { scaled: false }, vec![8, 3], &device),
    ///     weight: Param::from_tensor(Tensor::random([8, 3], Distribution::Uniform(-3.0, 3.0), &device)),
    /// };
    /// let clipped = clip_latent_weights(layer.clone());
    /// assert!(clipped.weight.val().abs().max().into_scalar() <= 1.0);
    /// let x = Tensor::<NdArray, 2>::ones([2, 8], &device);
    /// let packed = pack(&layer)?;
    /// assert!(packed.packed.is_packed());
    /// assert_eq!(packed.forward(x.clone()).into_data(), layer.forward(x).into_data());
    /// # Ok::<(), burn_qnn::inference::PackedNetError>(())
    /// ```
    ///
    /// # Panics
    /// If `shape` is not of rank 2 or 4.
    pub fn new(form: WeightForm<W>, shape: Vec<usize>, device: &Device<B>) -> Self {
        assert!(
            matches!(shape.len(), 2 | 4),
            "PackedWeight: a weight of rank 2 or 4, got {shape:?}"
        );
        Self {
            form,
            shape,
            device: device.clone(),
            state: None,
        }
    }

    /// Whether the layer holds packed weights (and computes with them).
    pub fn is_packed(&self) -> bool {
        self.state.is_some()
    }

    /// The shape of the latent weight the packed weights stand for (also once the latent
    /// weight is emptied).
    pub fn weight_shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of bytes the packed weights take in a record (0 while not packed).
    pub fn stored_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, |state| {
            4 * state.record.words.shape().num_elements()
                + state
                    .record
                    .scale
                    .as_ref()
                    .map_or(0, |scale| 4 * scale.shape().num_elements())
        })
    }

    /// How the weights are stored once packed.
    fn stored_form(&self) -> StoredForm {
        let count = self.shape.iter().product::<usize>() as u64;
        match self.encoding() {
            Ok((Encoding::Signs, _)) => {
                let scaled = matches!(self.form, WeightForm::Signs { scaled: true });
                let scales = if scaled && !self.is_packed() {
                    self.rows_shape()[0] as u64
                } else {
                    0
                };
                StoredForm::Signs { count, scales }
            }
            Ok((Encoding::Codes(bits), _)) => StoredForm::Codes {
                bits: u64::from(bits.get()),
                count,
            },
            Err(_) => StoredForm::Float(count),
        }
    }

    fn encoding(&self) -> Result<(Encoding, Option<CodeGrid>), String> {
        match &self.form {
            WeightForm::Signs { .. } => Ok((Encoding::Signs, None)),
            WeightForm::Quantized(quantizer) => match quantizer.code_grid() {
                Some(grid) => Ok((Encoding::Codes(grid.bits), Some(grid))),
                None => Err(format!(
                    "the weight quantizer {quantizer:?} has no integer code grid, so its \
                     weights have no packed form"
                )),
            },
        }
    }

    fn rows_shape(&self) -> [usize; 2] {
        if self.shape.len() == 2 {
            [self.shape[1], self.shape[0]]
        } else {
            [self.shape[0], self.shape[1..].iter().product()]
        }
    }

    /// Packs the latent weight `latent` (the layer's `weight` values).
    fn packed_from(&self, latent: TensorData) -> Result<PackedState<B>, String> {
        let (encoding, grid) = self.encoding()?;
        if latent.shape.as_slice() != self.shape.as_slice() {
            return Err(format!(
                "the latent weight has shape {:?}, the layer expects {:?}",
                latent.shape, self.shape
            ));
        }
        let (rows, scale) = match self.shape.len() {
            2 => self.rows_and_scale::<2>(latent),
            _ => self.rows_and_scale::<4>(latent),
        };
        let packed = match grid {
            Some(grid) => Packed::from_primitive(B::qnn_pack_codes(rows, grid)),
            None => Packed::new(rows, encoding),
        };
        let words = packed
            .to_bytes()
            .chunks_exact(4)
            .map(|word| i32::from_le_bytes(word.try_into().expect("four bytes")))
            .collect::<Vec<_>>();
        let count = words.len();
        let words = Tensor::from_data(TensorData::new(words, [count]), &self.device);
        let record = PackedWeightRecord {
            words: Param::initialized(ParamId::new(), words),
            scale: scale.map(Param::from_tensor),
        };
        let state = PackedState::new(record);
        let _ = state.rows.set(packed);
        Ok(state)
    }

    /// The forward's weight as rows, and the scale where the form keeps one.
    fn rows_and_scale<const D: usize>(
        &self,
        latent: TensorData,
    ) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        let latent = Tensor::<B, D>::from_data(latent, &self.device);
        match &self.form {
            WeightForm::Signs { scaled } => {
                let scale = scaled.then(|| output_scale(latent.clone()));
                (rows_of(latent), scale)
            }
            WeightForm::Quantized(quantizer) => {
                let output_axis = if D == 2 { 1 } else { 0 };
                let weight = quantizer.quantize(latent, Operand::Weight { output_axis });
                (rows_of(weight), None)
            }
        }
    }

    /// The packed rows `[outputs, inputs]` (signs or codes), read from the record at first use.
    ///
    /// # Panics
    /// If the stored words do not fit the layer (a record of another model, loaded without
    /// [`crate::inference::load_packed`]'s checks).
    pub(crate) fn rows(&self) -> Option<&Packed<B>> {
        self.try_rows()
            .map(|rows| rows.unwrap_or_else(|why| panic!("{why}")))
    }

    fn try_rows(&self) -> Option<Result<&Packed<B>, String>> {
        let state = self.state.as_ref()?;
        if let Some(rows) = state.rows.get() {
            return Some(Ok(rows));
        }
        let decoded = self.decode(&state.record.words);
        Some(decoded.map(|rows| state.rows.get_or_init(|| rows)))
    }

    fn decode(&self, words: &Param<Tensor<B, 1, Int>>) -> Result<Packed<B>, String> {
        let bytes: Vec<u8> = words
            .val()
            .into_data()
            .convert::<i32>()
            .into_vec::<i32>()
            .map_err(|error| format!("packed words that are not integers: {error:?}"))?
            .into_iter()
            .flat_map(i32::to_le_bytes)
            .collect();
        let (encoding, _) = self.encoding()?;
        Packed::from_bytes(&bytes, &self.rows_shape(), encoding, &self.device).map_err(|error| {
            format!(
                "packed weights that do not fit the layer's weight {:?}: {error}",
                self.shape
            )
        })
    }

    /// The weight the forward computes with, in the latent weight's layout: `±1` for signs,
    /// the quantizer's values for codes (the grid's values quantized again, so that they are
    /// bit for bit the values the quantizer gives, not only equal up to rounding). `None`
    /// while not packed.
    ///
    /// # Panics
    /// If `D` is not the latent weight's rank, or the packed words do not fit the layer (a
    /// record of another model loaded without [`crate::inference::load_packed`]'s checks).
    pub fn forward_weight<const D: usize>(&self) -> Option<Tensor<B, D>> {
        let rows = self.rows()?;
        assert_eq!(
            D,
            self.shape.len(),
            "the packed weights of shape {:?} asked for as a rank-{D} tensor",
            self.shape
        );
        let state = self.state.as_ref()?;
        // Unpacked once: the layers that compute with float weights call this on every forward.
        let weight = state.weight.get_or_init(|| {
            let weight: Tensor<B, D> = match (&self.form, self.encoding()) {
                (WeightForm::Quantized(quantizer), Ok((_, Some(grid)))) => {
                    let values =
                        weight_of(B::qnn_unpack_codes(rows.primitive(), grid), &self.shape);
                    let output_axis = if D == 2 { 1 } else { 0 };
                    quantizer.quantize(values, Operand::Weight { output_axis })
                }
                _ => weight_of(rows.unpack::<2>(), &self.shape),
            };
            weight.into_primitive().tensor()
        });
        Some(Tensor::from_primitive(TensorPrimitive::Float(
            weight.clone(),
        )))
    }

    /// The signs of a binary convolution's weights in the convolution kernels' layout.
    pub(crate) fn conv_weights(&self, geometry: &ConvGeometry) -> Option<&PackedConvWeights<B>> {
        let state = self.state.as_ref()?;
        Some(state.conv.get_or_init(|| {
            let signs = self.forward_weight::<4>().expect("packed weights");
            PackedConvWeights::new(signs, *geometry)
        }))
    }

    /// The per-output scale kept by a scaled binary layer.
    pub(crate) fn scale(&self) -> Option<Tensor<B, 1>> {
        let state = self.state.as_ref()?;
        state.record.scale.as_ref().map(Param::val)
    }

    /// During a walk of the crate's mappers: packs the latent weight the walk holds for this
    /// slot's layer, or checks the packed weights, noting any refusal.
    fn follow_walk(mut self) -> Self {
        WALK.with(|state| {
            let mut state = state.borrow_mut();
            let Some(walk) = state.as_mut() else {
                return;
            };
            // At `layer.packed`: the layer is the path without the slot's field.
            let layer = walk.path[..walk.path.len().saturating_sub(1)].join(".");
            if let Some(latent) = walk.latents.remove(&layer) {
                match self.packed_from(latent) {
                    Ok(state) => self.state = Some(state),
                    Err(reason) => walk.refusals.push((layer.clone(), reason)),
                }
            }
            if walk.check
                && let Some(Err(reason)) = self.try_rows()
            {
                walk.refusals.push((layer, reason));
            }
        });
        self
    }
}

impl<B: QnnBackend, W: Quantize> Module<B> for PackedWeight<B, W> {
    type Record = Option<PackedWeightRecord<B>>;

    fn collect_devices(&self, mut devices: Devices<B>) -> Devices<B> {
        if !devices.contains(&self.device) {
            devices.push(self.device.clone());
        }
        devices
    }

    fn fork(self, device: &Device<B>) -> Self {
        self.to_device(device)
    }

    fn to_device(self, device: &Device<B>) -> Self {
        Self {
            state: self.state.map(|state| {
                PackedState::new(PackedWeightRecord {
                    words: state.record.words.to_device(device),
                    scale: state.record.scale.map(|scale| scale.to_device(device)),
                })
            }),
            device: device.clone(),
            ..self
        }
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        // Tells the walk how the layer's weights are stored, before it reaches them.
        let form = self.stored_form().name();
        visitor.enter_module(&form, StoredForm::CONTAINER);
        visitor.exit_module(&form, StoredForm::CONTAINER);
        if let Some(state) = &self.state {
            visitor.visit_int(&state.record.words);
            if let Some(scale) = &state.record.scale {
                visitor.visit_float(scale);
            }
        }
    }

    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        let form = self.stored_form().name();
        mapper.enter_module(&form, StoredForm::CONTAINER);
        mapper.exit_module(&form, StoredForm::CONTAINER);
        let this = self.follow_walk();
        Self {
            state: this.state.map(|state| {
                PackedState::new(PackedWeightRecord {
                    words: mapper.map_int(state.record.words),
                    scale: state.record.scale.map(|scale| mapper.map_float(scale)),
                })
            }),
            ..this
        }
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            state: record.map(PackedState::new),
            ..self
        }
    }

    fn into_record(self) -> Self::Record {
        self.state.map(|state| state.record)
    }
}

impl<B: QnnBackend, W: Quantize> ModuleDisplayDefault for PackedWeight<B, W> {
    fn content(&self, content: Content) -> Option<Content> {
        let text = if self.is_packed() {
            format!("packed ({} bytes)", self.stored_bytes())
        } else {
            "not packed".to_owned()
        };
        content.add_formatted(&text).optional()
    }
}

impl<B: QnnBackend, W: Quantize> ModuleDisplay for PackedWeight<B, W> {}

impl<B, W> AutodiffModule<B> for PackedWeight<B, W>
where
    B: AutodiffBackend + QnnBackend,
    B::InnerBackend: QnnBackend,
    W: Quantize,
{
    type InnerModule = PackedWeight<B::InnerBackend, W>;

    fn valid(&self) -> Self::InnerModule {
        PackedWeight {
            form: self.form.clone(),
            shape: self.shape.clone(),
            device: self.device.clone(),
            state: self.state.as_ref().map(|state| {
                PackedState::new(PackedWeightRecord {
                    words: state.record.words.valid(),
                    scale: state.record.scale.as_ref().map(AutodiffModule::valid),
                })
            }),
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        PackedWeight {
            form: module.form,
            shape: module.shape,
            device: module.device,
            state: module.state.map(|state| {
                PackedState::new(PackedWeightRecord {
                    words: Param::from_inner(state.record.words),
                    scale: state.record.scale.map(Param::from_inner),
                })
            }),
        }
    }
}
