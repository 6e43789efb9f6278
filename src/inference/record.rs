//! The saved form of a [`super::PackedNet`]: packed bits and per-channel parameters, read and
//! written by Burn's recorders.

use burn::{
    record::{PrecisionSettings, Record},
    tensor::backend::Backend,
};
use serde::{Deserialize, Serialize};

use crate::{kernels::eval_norm::EvalNorm, models::NetConfig};

/// The record format this crate writes; records of another format are refused.
pub const FORMAT_VERSION: u32 = 1;

/// A packed network: its configuration and, per layer, the packed weight signs and what turns
/// the layer's products into the next layer's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedNetRecord {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// The network's shape.
    pub config: NetConfig,
    /// The convolutions, in order.
    pub convs: Vec<PackedLayerRecord>,
    /// The fully connected layers, in order.
    pub dense: Vec<PackedLayerRecord>,
}

/// One packed layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedLayerRecord {
    /// The packed weight signs (the bytes of [`crate::ops::Packed::to_bytes`]).
    #[serde(with = "serde_bytes")]
    pub weights: Vec<u8>,
    /// Bias per output channel, if the layer has one.
    pub bias: Option<Vec<f32>>,
    /// What follows the product.
    pub output: OutputRecord,
}

/// What follows a layer's product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputRecord {
    /// Batch norm and sign folded: output `+1` where `lo[c] ≤ v ≤ hi[c]` for the (pooled)
    /// product `v` of channel `c`, `−1` elsewhere.
    Threshold {
        /// Lowest value giving `+1`, per channel.
        lo: Vec<f32>,
        /// Highest value giving `+1`, per channel.
        hi: Vec<f32>,
    },
    /// Batch norm in float (evaluation mode): `(v − mean)/sqrt(var + ε)·γ + β`.
    Norm {
        /// Running mean.
        mean: Vec<f32>,
        /// Running variance.
        var: Vec<f32>,
        /// Scale.
        gamma: Vec<f32>,
        /// Shift.
        beta: Vec<f32>,
        /// ε.
        epsilon: f64,
    },
}

impl OutputRecord {
    /// The batch norm of a [`OutputRecord::Norm`], ready to apply (`None` for thresholds).
    pub(crate) fn eval_norm(&self) -> Option<EvalNorm> {
        match self {
            OutputRecord::Norm {
                mean,
                var,
                gamma,
                beta,
                epsilon,
            } => Some(EvalNorm::new(
                mean.clone(),
                var,
                gamma.clone(),
                beta.clone(),
                *epsilon,
            )),
            OutputRecord::Threshold { .. } => None,
        }
    }
}

impl<B: Backend> Record<B> for PackedNetRecord {
    type Item<S: PrecisionSettings> = PackedNetRecord;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        self
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, _device: &B::Device) -> Self {
        item
    }
}
