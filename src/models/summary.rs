//! A per-layer summary of a network: parameters by precision, memory, multiply-accumulates by
//! precision and the compression ratio (like Larq's `summary()`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ConvLayer, DenseLayer, Net, NetConfig, Precision};
use crate::QnnBackend;

/// One row of a [`ModelSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSummary {
    /// The layer, e.g. `conv 1 (binary 3×3)`.
    pub name: String,
    /// Output shape of one example.
    pub output: Vec<usize>,
    /// Parameters stored in 1 bit.
    pub params_1bit: u64,
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
        self.params_1bit.div_ceil(8) + 4 * self.params_32bit
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
        4 * (self.params_1bit() + self.params_32bit())
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
            "{:<26} {:>16} {:>12} {:>12} {:>10} {:>14} {:>12} {:>12}",
            "layer",
            "output",
            "1-bit par.",
            "32-bit par.",
            "MiB",
            "binary MACs",
            "8-bit MACs",
            "f32 MACs"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<26} {:>16} {:>12} {:>12} {:>10.3} {:>14} {:>12} {:>12}",
                l.name,
                format!("{:?}", l.output),
                l.params_1bit,
                l.params_32bit,
                mib(l.memory_bytes()),
                l.macs_binary,
                l.macs_8bit,
                l.macs_float
            )?;
        }
        writeln!(
            f,
            "{:<26} {:>16} {:>12} {:>12} {:>10.3} {:>14} {:>12} {:>12}",
            "total",
            "",
            self.params_1bit(),
            self.params_32bit(),
            mib(self.memory_bytes()),
            self.macs_binary(),
            self.macs_8bit(),
            self.macs_float()
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
        macs_binary: 0,
        macs_8bit: 0,
        macs_float: 0,
    }
}

/// The summary of `net`: a row per weight layer and per batch norm.
pub fn summary<B: QnnBackend>(net: &Net<B>) -> ModelSummary {
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
