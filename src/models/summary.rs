//! A per-layer summary of a network: parameters by precision, memory, multiply-accumulates by
//! precision and the compression ratio (like Larq's `summary()`).

use std::{collections::HashMap, fmt};

use burn::{
    module::{Module, ModuleVisitor, Param},
    tensor::Tensor,
};
use serde::{Deserialize, Serialize};

use super::{ConvLayer, DenseLayer, Net, NetConfig, Precision};
use crate::{
    QnnBackend,
    nn::{LatentPath, StoredForm},
};

/// One row of a [`ModelSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSummary {
    /// The layer, e.g. `conv 1 (binary 3×3)`.
    pub name: String,
    /// Output shape of one example (empty where unknown: rows of [`summary`]).
    pub output: Vec<usize>,
    /// Parameters stored in 1 bit.
    pub params_1bit: u64,
    /// Parameters stored in 2 to 8 bits (the weights of k-bit layers).
    pub params_kbit: u64,
    /// Bits of the `params_kbit` parameters.
    pub kbit_bits: u64,
    /// Parameters stored in 32 bits.
    pub params_32bit: u64,
    /// Multiply-accumulates of ±1 × ±1 values, per example.
    pub macs_binary: u64,
    /// Multiply-accumulates of 8-bit × ±1 values (bit-plane layers), per example.
    pub macs_8bit: u64,
    /// Multiply-accumulates in f32, per example.
    pub macs_float: u64,
}

impl LayerSummary {
    /// Bytes of the parameters in their stored precision.
    pub fn memory_bytes(&self) -> u64 {
        self.params_1bit.div_ceil(8) + self.kbit_bits.div_ceil(8) + 4 * self.params_32bit
    }
}

/// The summary of a network, per layer and in total.
///
/// ```
/// use burn::backend::NdArray;
/// use burn_qnn::models::{NetConfig, summary};
///
/// let net = NetConfig::cifar10().with_width(0.25).init::<NdArray>(&Default::default());
/// let s = summary(&net);
/// assert!(s.compression_ratio() > 20.0);
/// assert_eq!(s.params_1bit(), net.summary().params_1bit());
/// println!("{s}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The rows, in order.
    pub layers: Vec<LayerSummary>,
}

impl ModelSummary {
    /// Sum of a column.
    fn total(&self, column: impl Fn(&LayerSummary) -> u64) -> u64 {
        self.layers.iter().map(column).sum()
    }

    /// All 1-bit parameters.
    pub fn params_1bit(&self) -> u64 {
        self.total(|l| l.params_1bit)
    }

    /// All parameters stored in 2 to 8 bits.
    pub fn params_kbit(&self) -> u64 {
        self.total(|l| l.params_kbit)
    }

    /// All 32-bit parameters.
    pub fn params_32bit(&self) -> u64 {
        self.total(|l| l.params_32bit)
    }

    /// All ±1 × ±1 multiply-accumulates per example.
    pub fn macs_binary(&self) -> u64 {
        self.total(|l| l.macs_binary)
    }

    /// All 8-bit × ±1 multiply-accumulates per example.
    pub fn macs_8bit(&self) -> u64 {
        self.total(|l| l.macs_8bit)
    }

    /// All f32 multiply-accumulates per example.
    pub fn macs_float(&self) -> u64 {
        self.total(|l| l.macs_float)
    }

    /// Bytes of all parameters in their stored precision.
    pub fn memory_bytes(&self) -> u64 {
        self.total(LayerSummary::memory_bytes)
    }

    /// Bytes of all parameters in f32.
    pub fn float_memory_bytes(&self) -> u64 {
        4 * (self.params_1bit() + self.params_kbit() + self.params_32bit())
    }

    /// `float_memory_bytes / memory_bytes`.
    pub fn compression_ratio(&self) -> f64 {
        self.float_memory_bytes() as f64 / self.memory_bytes().max(1) as f64
    }
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        writeln!(
            f,
            "{:<32} {:>16} {:>12} {:>12} {:>12} {:>10} {:>14} {:>12} {:>12}",
            "layer",
            "output",
            "1-bit par.",
            "k-bit par.",
            "32-bit par.",
            "MiB",
            "binary MACs",
            "8-bit MACs",
            "f32 MACs"
        )?;
        // Rows of a walk over any model know no activations: their shape and MAC columns
        // stay empty.
        let known = |row: &LayerSummary, value: u64| {
            if row.output.is_empty() {
                String::new()
            } else {
                value.to_string()
            }
        };
        for l in &self.layers {
            let output = if l.output.is_empty() {
                String::new()
            } else {
                format!("{:?}", l.output)
            };
            writeln!(
                f,
                "{:<32} {:>16} {:>12} {:>12} {:>12} {:>10.3} {:>14} {:>12} {:>12}",
                l.name,
                output,
                l.params_1bit,
                l.params_kbit,
                l.params_32bit,
                mib(l.memory_bytes()),
                known(l, l.macs_binary),
                known(l, l.macs_8bit),
                known(l, l.macs_float)
            )?;
        }
        let any_known = self.layers.iter().any(|l| !l.output.is_empty());
        let total = |value: u64| {
            if any_known {
                value.to_string()
            } else {
                String::new()
            }
        };
        writeln!(
            f,
            "{:<32} {:>16} {:>12} {:>12} {:>12} {:>10.3} {:>14} {:>12} {:>12}",
            "total",
            "",
            self.params_1bit(),
            self.params_kbit(),
            self.params_32bit(),
            mib(self.memory_bytes()),
            total(self.macs_binary()),
            total(self.macs_8bit()),
            total(self.macs_float())
        )?;
        write!(
            f,
            "f32 equivalent {:.3} MiB; compression ratio {:.1}×",
            mib(self.float_memory_bytes()),
            self.compression_ratio()
        )
    }
}

/// The row of a weight layer with `weights` weights and `bias` biases.
fn weight_row(
    name: String,
    output: Vec<usize>,
    weights: u64,
    bias: u64,
    macs: u64,
    kind: Kind,
) -> LayerSummary {
    let (binary_weights, float_weights) = match kind {
        Kind::Float => (0, weights),
        _ => (weights, 0),
    };
    LayerSummary {
        name,
        output,
        params_1bit: binary_weights,
        params_kbit: 0,
        kbit_bits: 0,
        params_32bit: float_weights + bias,
        macs_binary: if kind == Kind::Binary { macs } else { 0 },
        macs_8bit: if kind == Kind::BitPlane { macs } else { 0 },
        macs_float: if kind == Kind::Float { macs } else { 0 },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BitPlane,
    Binary,
    Float,
}

fn norm_row(name: String, output: Vec<usize>, channels: usize) -> LayerSummary {
    LayerSummary {
        name,
        output,
        // γ, β, running mean and running variance.
        params_32bit: 4 * channels as u64,
        params_1bit: 0,
        params_kbit: 0,
        kbit_bits: 0,
        macs_binary: 0,
        macs_8bit: 0,
        macs_float: 0,
    }
}

impl<B: QnnBackend> Net<B> {
    /// The summary of the network: a row per weight layer and per batch norm, with output
    /// shapes and multiply-accumulates by precision (which [`summary`] of any model cannot
    /// know).
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn_qnn::models::NetConfig;
    ///
    /// let net = NetConfig::cifar10().with_width(0.25).init::<NdArray>(&Default::default());
    /// let s = net.summary();
    /// assert!(s.compression_ratio() > 20.0);
    /// assert!(s.macs_binary() > 0);
    /// println!("{s}");
    /// ```
    pub fn summary(&self) -> ModelSummary {
        net_summary(self)
    }
}

fn net_summary<B: QnnBackend>(net: &Net<B>) -> ModelSummary {
    let config: &NetConfig = &net.config;
    let mut layers = Vec::new();
    let mut side = config.image_size;
    let mut c_in = config.in_channels;
    for (i, layer) in net.convs.iter().enumerate() {
        let c_out = config.conv_channels[i];
        let (kind, bias) = match layer {
            ConvLayer::BitPlane(l) => (Kind::BitPlane, l.bias.is_some()),
            ConvLayer::Binary(l) => (Kind::Binary, l.bias.is_some()),
            ConvLayer::Float(l) => (Kind::Float, l.bias.is_some()),
        };
        let weights = (c_out * c_in * 9) as u64;
        let macs = weights * (side * side) as u64;
        if NetConfig::pools_after(i) {
            side /= 2;
        }
        let label = match kind {
            Kind::BitPlane => "bit-plane 3×3",
            Kind::Binary => "binary 3×3",
            Kind::Float => "f32 3×3",
        };
        let output = vec![c_out, side, side];
        let bias = if bias { c_out as u64 } else { 0 };
        layers.push(weight_row(
            format!("conv {i} ({label})"),
            output.clone(),
            weights,
            bias,
            macs,
            kind,
        ));
        layers.push(norm_row(format!("batch norm {i}"), output, c_out));
        c_in = c_out;
    }
    let mut d_in = config.flat_features();
    let outputs: Vec<usize> = config
        .hidden_units
        .iter()
        .copied()
        .chain([config.classes])
        .collect();
    for (i, (layer, &d_out)) in net.dense.iter().zip(&outputs).enumerate() {
        let (kind, bias) = match layer {
            DenseLayer::BitPlane(l) => (Kind::BitPlane, l.bias.is_some()),
            DenseLayer::Binary(l) => (Kind::Binary, l.bias.is_some()),
            DenseLayer::Float(l) => (Kind::Float, l.bias.is_some()),
        };
        let label = match kind {
            Kind::BitPlane => "bit-plane",
            Kind::Binary => "binary",
            Kind::Float => "f32",
        };
        let weights = (d_in * d_out) as u64;
        let bias = if bias { d_out as u64 } else { 0 };
        layers.push(weight_row(
            format!("dense {i} ({label})"),
            vec![d_out],
            weights,
            bias,
            weights,
            kind,
        ));
        layers.push(norm_row(format!("batch norm d{i}"), vec![d_out], d_out));
        d_in = d_out;
    }
    debug_assert!(net.precision == Precision::Float || layers.iter().all(|l| l.macs_float == 0));
    ModelSummary { layers }
}

/// The summary of any model: a row per module that holds parameters directly (a layer of this
/// crate, Burn's `BatchNorm` or `Linear`, ...), named by its path and type, with its parameters
/// by stored precision: the weights of binary layers in 1 bit, of k-bit layers in `k` bits
/// (packed or not: what their packed form keeps), the rest in 32 bits. It walks the model with
/// a `ModuleVisitor`, so it knows no shapes of activations: output shapes and multiply-
/// accumulates are left empty (a [`Net`]'s own [`Net::summary`] counts them).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use burn_qnn::QnnBackend;
/// use burn_qnn::models::summary;
/// use burn_qnn::nn::{BinaryLinear, BinaryLinearConfig};
///
/// #[derive(Module, Debug)]
/// struct Mlp<B: QnnBackend> {
///     hidden: BinaryLinear<B>,
///     norm: burn::nn::BatchNorm<B>,
///     head: burn::nn::Linear<B>,
/// }
///
/// let device = Default::default();
/// let model = Mlp::<NdArray> {
///     hidden: BinaryLinearConfig::new(784, 256).with_bias(false).init(&device),
///     norm: burn::nn::BatchNormConfig::new(256).init(&device),
///     head: burn::nn::LinearConfig::new(256, 10).init(&device),
/// };
/// let s = summary(&model);
/// assert_eq!(s.layers[0].name, "hidden (BinaryLinear)");
/// assert_eq!(s.params_1bit(), 784 * 256);
/// assert_eq!(s.params_32bit(), 4 * 256 + 256 * 10 + 10);
/// println!("{s}");
/// ```
pub fn summary<B: QnnBackend, M: Module<B>>(model: &M) -> ModelSummary {
    let mut visitor = SummaryVisitor::default();
    model.visit(&mut visitor);
    ModelSummary {
        layers: visitor.rows,
    }
}

/// The walk of [`summary`]: a row per module that holds parameters.
#[derive(Default)]
struct SummaryVisitor {
    path: LatentPath,
    rows: Vec<LayerSummary>,
    /// The row of each module path.
    row_of: HashMap<String, usize>,
}

impl SummaryVisitor {
    /// The row of the module that holds the parameter (or packed-weight slot) at the current
    /// position.
    fn row(&mut self) -> &mut LayerSummary {
        let (path, type_name) = self.path.owner();
        let index = *self.row_of.entry(path.clone()).or_insert_with(|| {
            let type_name = type_name
                .trim_start_matches("Struct:")
                .trim_start_matches("Enum:");
            let name = if path.is_empty() {
                format!("({type_name})")
            } else {
                format!("{path} ({type_name})")
            };
            self.rows.push(LayerSummary {
                name,
                output: Vec::new(),
                params_1bit: 0,
                params_kbit: 0,
                kbit_bits: 0,
                params_32bit: 0,
                macs_binary: 0,
                macs_8bit: 0,
                macs_float: 0,
            });
            self.rows.len() - 1
        });
        &mut self.rows[index]
    }
}

impl<B: QnnBackend> ModuleVisitor<B> for SummaryVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if let Some(form) = StoredForm::parse(container_type, name) {
            // Announced by a packed-weight slot: its layer's weights, packed or not.
            let row = self.row();
            match form {
                StoredForm::Signs { count, scales } => {
                    row.params_1bit += count;
                    row.params_32bit += scales;
                }
                StoredForm::Codes { bits, count } => {
                    row.params_kbit += count;
                    row.kbit_bits += bits * count;
                }
                StoredForm::Float(count) => row.params_32bit += count,
            }
        }
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // Latent weights are counted in the stored form their slot announces.
        if !self.path.at_latent_weight() {
            self.row().params_32bit += param.shape().num_elements() as u64;
        }
    }
}
