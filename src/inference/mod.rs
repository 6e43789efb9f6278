//! Packed inference form of a trained binary network: weights stored as bits, batch norm and
//! sign folded into per-channel thresholds where the layer's products are integers.
//!
//! [`PackedNet::from_net`] converts a [`Net`]; its outputs equal the network's evaluation-mode
//! outputs (same backend). It saves and loads through Burn's recorders ([`PackedNet::save`],
//! [`PackedNet::load`], or [`PackedNet::record`] with any recorder); its bytes are the same on
//! every backend, so a file written on NdArray loads on Wgpu.
//!
//! On NdArray (`f32`), [`PackedNet::forward`] runs the CPU kernels of [`crate::kernels`]
//! directly and keeps the activations as packed bits from layer to layer: the bit-plane first
//! convolution compares its integer products with folded ranges, each binary convolution writes
//! its signs as bits and pools them, and the fully connected layers run the XNOR-popcount GEMM
//! ([`PackedNet::runs_on_cpu_kernels`] tells). Other backends run the same network on tensor
//! operations. Both give the network's values exactly.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use burn_qnn::inference::PackedNet;
//! use burn_qnn::models::NetConfig;
//!
//! let device = Default::default();
//! let net = NetConfig::cifar10().with_width(1.0 / 16.0).init::<NdArray>(&device);
//! let packed = PackedNet::from_net(&net)?;
//! let images = Tensor::<NdArray, 4>::random([2, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &device);
//! assert_eq!(packed.forward(images.clone()).into_data(), net.forward(images).into_data());
//! # Ok::<(), burn_qnn::inference::PackedNetError>(())
//! ```

mod error;
pub(crate) mod host;
mod pack;
mod quant_conv2d;
mod quant_linear;
mod record;
pub(crate) mod thresholds;

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

pub use error::PackedNetError;
pub use pack::{load_packed, pack, save_packed};
pub use quant_conv2d::PackedQuantConv2d;
pub use quant_linear::PackedQuantLinear;
pub use record::{FORMAT_VERSION, OutputRecord, PackedLayerRecord, PackedNetRecord};

use burn::{
    nn::BatchNorm,
    tensor::{
        Device, Tensor, TensorData,
        module::{conv2d, max_pool2d},
    },
};

use crate::{
    QnnBackend,
    models::{ConvLayer, DenseLayer, Net, NetConfig, Precision},
    nn::{host_vector, inside_sums, pixel_codes, scaled_output},
    ops::{self, Encoding, Packed, PackedConvWeights},
    quant::Bits,
};

/// A binary [`Net`] in packed inference form.
#[derive(Debug, Clone)]
pub struct PackedNet<B: QnnBackend> {
    /// The weights as bits, batch norms folded: what is saved, and what the two forms below
    /// are built from.
    record: PackedNetRecord,
    device: Device<B>,
    /// The network on the backend's tensor operations: built with the network where the CPU
    /// kernels do not run it, else at the first input they leave to it (one with a value that
    /// is not finite), so that a network on the CPU kernels holds its weights once beside the
    /// record.
    tensors: OnceLock<TensorNet<B>>,
    /// The network on the CPU kernels with bit activations, where the backend computes on the
    /// host in f32, or why not.
    host: Result<Arc<host::HostNet>, String>,
}

/// The layers of a [`PackedNet`] on the backend's tensor operations.
#[derive(Debug, Clone)]
struct TensorNet<B: QnnBackend> {
    convs: Vec<ConvStage<B>>,
    dense: Vec<DenseStage<B>>,
}

#[derive(Debug, Clone)]
struct ConvStage<B: QnnBackend> {
    weights: PackedConvWeights<B>,
    /// The float weight signs of a bit-plane first layer (for its inside sums).
    bit_plane_signs: Option<Tensor<B, 4>>,
    bias: Option<Tensor<B, 1>>,
    pool: bool,
    output: Output<B>,
}

#[derive(Debug, Clone)]
struct DenseStage<B: QnnBackend> {
    /// Rows of `sign(W)ᵀ`, `[d_out, d_in]`.
    weights: Packed<B>,
    /// The inside sums `[1, d_out]` of a bit-plane first layer.
    bit_plane_sums: Option<Tensor<B, 2>>,
    bias: Option<Tensor<B, 1>>,
    output: Output<B>,
}

#[derive(Debug, Clone)]
enum Output<B: QnnBackend> {
    Threshold {
        lo: Tensor<B, 1>,
        hi: Tensor<B, 1>,
    },
    Norm {
        mean: Tensor<B, 1>,
        var: Tensor<B, 1>,
        gamma: Tensor<B, 1>,
        beta: Tensor<B, 1>,
        epsilon: f64,
    },
}

impl<B: QnnBackend> TensorNet<B> {
    /// The layers of a record whose counts match its configuration.
    ///
    /// # Errors
    /// [`PackedNetError::Mismatch`] or [`PackedNetError::Packed`] for a layer that does not
    /// fit its configuration.
    fn new(record: &PackedNetRecord, device: &Device<B>) -> Result<Self, PackedNetError> {
        let config = &record.config;
        let mut convs = Vec::new();
        for (i, layer) in record.convs.iter().enumerate() {
            let name = format!("conv {i}");
            let geometry = config.conv_geometry(i);
            let weights = PackedConvWeights::from_bytes(&layer.weights, geometry, device).map_err(
                |source| PackedNetError::Packed {
                    layer: name.clone(),
                    source,
                },
            )?;
            let bit_plane_signs = (i == 0).then(|| conv_signs(&weights));
            convs.push(ConvStage {
                bias: channel_vector(
                    &name,
                    "bias",
                    layer.bias.as_deref(),
                    geometry.channels[1],
                    device,
                )?,
                output: Output::new(&name, &layer.output, geometry.channels[1], device)?,
                weights,
                bit_plane_signs,
                pool: NetConfig::pools_after(i),
            });
        }
        let mut dense = Vec::new();
        for (i, layer) in record.dense.iter().enumerate() {
            let name = format!("dense {i}");
            let (d_in, d_out) = config.dense_shape(i);
            let weights =
                Packed::from_bytes(&layer.weights, &[d_out, d_in], Encoding::Signs, device)
                    .map_err(|source| PackedNetError::Packed {
                        layer: name.clone(),
                        source,
                    })?;
            let bit_plane_sums = (i == 0 && config.conv_channels.is_empty())
                .then(|| weights.unpack::<2>().transpose().sum_dim(0));
            dense.push(DenseStage {
                bias: channel_vector(&name, "bias", layer.bias.as_deref(), d_out, device)?,
                output: Output::new(&name, &layer.output, d_out, device)?,
                weights,
                bit_plane_sums,
            });
        }
        Ok(Self { convs, dense })
    }
}

pub(crate) fn norm_record<B: QnnBackend>(norm: &BatchNorm<B>) -> OutputRecord {
    OutputRecord::Norm {
        mean: host_vector(norm.running_mean.value_sync()),
        var: host_vector(norm.running_var.value_sync()),
        gamma: host_vector(norm.gamma.val()),
        beta: host_vector(norm.beta.val()),
        epsilon: norm.epsilon,
    }
}

/// The output of a layer whose (pooled, biased) products are integers in `[−k, k]`: thresholds
/// when the next layer binarizes, else the float batch norm.
fn integer_output(norm: OutputRecord, bias: Option<&[f32]>, k: usize, last: bool) -> OutputRecord {
    if last {
        return norm;
    }
    match norm.eval_norm() {
        Some(eval) => {
            let (lo, hi) = thresholds::fold(&eval, k, None, bias);
            OutputRecord::Threshold { lo, hi }
        }
        None => norm,
    }
}

impl<B: QnnBackend> PackedNet<B> {
    /// Packs a trained binary network.
    ///
    /// # Errors
    /// [`PackedNetError::NotBinary`] for a full-precision network;
    /// [`PackedNetError::Unsupported`] for layers with α scaling or float inputs past the first.
    pub fn from_net(net: &Net<B>) -> Result<Self, PackedNetError> {
        let device = match net.dense.first() {
            Some(DenseLayer::Binary(l)) => l.weight.device(),
            Some(DenseLayer::BitPlane(l)) => l.weight.device(),
            _ => return Err(PackedNetError::NotBinary),
        };
        if net.precision != Precision::Binary {
            return Err(PackedNetError::NotBinary);
        }
        let config = &net.config;
        let mut convs = Vec::new();
        for (i, (layer, norm)) in net.convs.iter().zip(&net.conv_norms).enumerate() {
            let name = || format!("conv {i}");
            let geometry = config.conv_geometry(i);
            let layer_geometry = match layer {
                ConvLayer::BitPlane(l) => Some(l.geometry),
                ConvLayer::Binary(l) => Some(l.geometry),
                ConvLayer::Float(_) => None,
            };
            if layer_geometry.is_some_and(|g| g != geometry) {
                return Err(PackedNetError::Unsupported {
                    layer: name(),
                    what: "a geometry other than its configuration's",
                });
            }
            let (weight, bias, integer) = match layer {
                ConvLayer::BitPlane(l) => (l.weight.val(), l.bias.as_ref(), false),
                ConvLayer::Binary(l) if l.scaling => {
                    return Err(PackedNetError::Unsupported {
                        layer: name(),
                        what: "α scaling",
                    });
                }
                ConvLayer::Binary(l) if !l.binarize_input => {
                    return Err(PackedNetError::Unsupported {
                        layer: name(),
                        what: "float inputs",
                    });
                }
                ConvLayer::Binary(l) => (l.weight.val(), l.bias.as_ref(), true),
                ConvLayer::Float(_) => return Err(PackedNetError::NotBinary),
            };
            let bias = bias.map(|b| host_vector(b.val()));
            let norm = norm_record(norm);
            let output = if integer {
                integer_output(
                    norm,
                    bias.as_deref(),
                    geometry.channels[0] * geometry.taps(),
                    false,
                )
            } else {
                norm
            };
            convs.push(PackedLayerRecord {
                weights: PackedConvWeights::new(weight, geometry).to_bytes(),
                bias,
                output,
            });
        }
        let mut dense = Vec::new();
        let last = net.dense.len() - 1;
        for (i, (layer, norm)) in net.dense.iter().zip(&net.dense_norms).enumerate() {
            let (weight, bias, integer) = match layer {
                DenseLayer::BitPlane(l) => (l.weight.val(), l.bias.as_ref(), false),
                DenseLayer::Binary(l) if l.scaling || !l.binarize_input => {
                    return Err(PackedNetError::Unsupported {
                        layer: format!("dense {i}"),
                        what: "α scaling or float inputs",
                    });
                }
                DenseLayer::Binary(l) => (l.weight.val(), l.bias.as_ref(), true),
                DenseLayer::Float(_) => return Err(PackedNetError::NotBinary),
            };
            let d_in = weight.dims()[0];
            let bias = bias.map(|b| host_vector(b.val()));
            let norm = norm_record(norm);
            let output = if integer {
                integer_output(norm, bias.as_deref(), d_in, i == last)
            } else {
                norm
            };
            dense.push(PackedLayerRecord {
                weights: Packed::new(weight.transpose(), Encoding::Signs).to_bytes(),
                bias,
                output,
            });
        }
        let record = PackedNetRecord {
            format: FORMAT_VERSION,
            config: config.clone(),
            convs,
            dense,
        };
        Self::from_record(record, &device)
    }

    /// Builds the network from a record, checking it against its configuration.
    ///
    /// # Errors
    /// [`PackedNetError::Format`], [`PackedNetError::Mismatch`] or [`PackedNetError::Packed`]
    /// for a record that does not fit its configuration (corrupt or of another network).
    pub fn from_record(
        record: PackedNetRecord,
        device: &Device<B>,
    ) -> Result<Self, PackedNetError> {
        if record.format != FORMAT_VERSION {
            return Err(PackedNetError::Format {
                expected: FORMAT_VERSION,
                found: record.format,
            });
        }
        let config = &record.config;
        if config.precision != Precision::Binary {
            return Err(PackedNetError::NotBinary);
        }
        validate_config(config)?;
        let count = |what, expected: usize, found: usize| {
            (expected != found).then(|| PackedNetError::Mismatch {
                layer: "network".into(),
                what,
                expected,
                found,
            })
        };
        if let Some(e) = count(
            "convolutions",
            config.conv_channels.len(),
            record.convs.len(),
        ) {
            return Err(e);
        }
        if let Some(e) = count(
            "fully connected layers",
            config.hidden_units.len() + 1,
            record.dense.len(),
        ) {
            return Err(e);
        }
        let tensors = TensorNet::new(&record, device)?;
        let host = if B::qnn_computes_on_host() {
            host::HostNet::new(&record).map(Arc::new)
        } else {
            Err("the backend does not compute on the host in f32".to_owned())
        };
        // The tensor form is built once anyway, to check the record against the
        // configuration; where the CPU kernels run the network it is dropped until needed.
        let tensors = match host {
            Ok(_) => OnceLock::new(),
            Err(_) => OnceLock::from(tensors),
        };
        Ok(Self {
            record,
            device: device.clone(),
            tensors,
            host,
        })
    }

    /// Whether [`PackedNet::forward`] runs on the CPU kernels of [`crate::kernels`] with the
    /// activations kept as packed bits between layers (the NdArray backend with `f32`
    /// elements, for the layouts of [`crate::models`]); otherwise it runs on the backend's
    /// tensor operations. Both give the same values.
    pub fn runs_on_cpu_kernels(&self) -> bool {
        self.host.is_ok()
    }

    /// Why [`PackedNet::forward`] does not run on the CPU kernels, where it does not (the
    /// backend, or a layer the kernels do not take); `None` where it does.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn_qnn::inference::PackedNet;
    /// use burn_qnn::models::NetConfig;
    ///
    /// let net = NetConfig::mnist_mlp().with_width(1.0 / 64.0).init::<NdArray>(&Default::default());
    /// let packed = PackedNet::from_net(&net)?;
    /// assert_eq!(packed.cpu_kernels_unavailable(), None);
    /// assert!(packed.runs_on_cpu_kernels());
    /// # Ok::<(), burn_qnn::inference::PackedNetError>(())
    /// ```
    pub fn cpu_kernels_unavailable(&self) -> Option<&str> {
        self.host.as_ref().err().map(String::as_str)
    }

    /// The record (for any Burn recorder).
    pub fn record(&self) -> &PackedNetRecord {
        &self.record
    }

    /// The network's configuration.
    pub fn config(&self) -> &NetConfig {
        &self.record.config
    }

    /// Class scores `[N, classes]` of images `[N, C, H, W]` in `[−1, 1]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        if let Ok(host) = &self.host {
            let [n, ..] = images.dims();
            // The whole forward runs on one of rayon's workers: its layers' parallel loops
            // then start there, instead of each handing its work from this thread to the pool
            // and sleeping until it is done.
            let scores = B::qnn_with_host_values(images.clone(), |values| {
                rayon::scope(|_| host.forward(values, n))
            });
            if let Some(scores) = scores.flatten() {
                let classes = self.record.config.classes;
                return Tensor::from_data(TensorData::new(scores, [n, classes]), &images.device());
            }
        }
        let tensors = self.tensors.get_or_init(|| {
            TensorNet::new(&self.record, &self.device)
                .expect("a record checked when the network was built")
        });
        let mut x = images;
        for stage in &tensors.convs {
            let [_, _, h, w] = x.dims();
            let geometry = stage.weights.geometry();
            let mut y = match &stage.bit_plane_signs {
                // The 8-bit codes times the ±1 weights: integers, exact in f32 as in the
                // trained network. (Burn's float convolution: with 3 input channels it is far
                // cheaper than bit planes through im2col, whose taps pad to 64 channels.)
                Some(signs) => {
                    let codes = pixel_codes(x);
                    let product = conv2d(codes, signs.clone(), None, geometry.options());
                    scaled_output(product, inside_sums(signs.clone(), geometry, [h, w]))
                }
                None => stage.weights.forward(x),
            };
            if let Some(bias) = &stage.bias {
                y = B::qnn_channel_affine(y, None, Some(bias.clone()));
            }
            if stage.pool {
                y = max_pool2d(y, [2, 2], [2, 2], [0, 0], [1, 1], false);
            }
            x = stage.output.apply(y);
        }
        let mut x = x.flatten::<2>(1, 3);
        for stage in &tensors.dense {
            let mut y: Tensor<B, 2> = match &stage.bit_plane_sums {
                Some(sums) => {
                    let codes = Packed::new(pixel_codes(x), Encoding::Codes(Bits::EIGHT));
                    scaled_output(ops::packed_matmul(&codes, &stage.weights), sums.clone())
                }
                None => ops::xnor_matmul_prepacked(x, &stage.weights),
            };
            if let Some(bias) = &stage.bias {
                y = y + bias.clone().unsqueeze();
            }
            x = stage.output.apply(y);
        }
        x
    }

    /// Saves the network to `path` with Burn's `NamedMpkBytesRecorder` (full precision), with
    /// [`crate::io::write_atomic`]: a unique temporary file, synced and renamed into place, so
    /// that `path` holds either its previous content or the whole new record, never a part.
    ///
    /// # Errors
    /// [`PackedNetError::Recorder`] or [`PackedNetError::Io`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PackedNetError> {
        pack::write_record::<B, _>(self.record.clone(), path.as_ref())
    }

    /// Loads a network saved by [`PackedNet::save`] (on any backend) onto `device`.
    ///
    /// # Errors
    /// [`PackedNetError::Io`] if the file cannot be read, [`PackedNetError::Recorder`] if it is
    /// not a packed network record, or the errors of [`PackedNet::from_record`].
    pub fn load(path: impl AsRef<Path>, device: &Device<B>) -> Result<Self, PackedNetError> {
        let record: PackedNetRecord = pack::read_record::<B, _>(path.as_ref(), device)?;
        Self::from_record(record, device)
    }
}

/// The ±1 weights `[C_out, C_in, k_h, k_w]` of packed convolution weights.
fn conv_signs<B: QnnBackend>(weights: &PackedConvWeights<B>) -> Tensor<B, 4> {
    let geometry = weights.geometry();
    let [c_in, c_out] = geometry.channels;
    let [kh, kw] = geometry.kernel;
    weights
        .packed()
        .unpack::<2>()
        .reshape([c_out, kh, kw, geometry.padded_channels()])
        .slice([0..c_out, 0..kh, 0..kw, 0..c_in])
        .permute([0, 3, 1, 2])
}

/// A per-channel vector of `len` values on `device`, if present.
fn channel_vector<B: QnnBackend>(
    layer: &str,
    what: &'static str,
    values: Option<&[f32]>,
    len: usize,
    device: &Device<B>,
) -> Result<Option<Tensor<B, 1>>, PackedNetError> {
    values
        .map(|values| {
            if values.len() != len {
                return Err(PackedNetError::Mismatch {
                    layer: layer.to_owned(),
                    what,
                    expected: len,
                    found: values.len(),
                });
            }
            Ok(Tensor::from_data(
                TensorData::new(values.to_vec(), [len]),
                device,
            ))
        })
        .transpose()
}

/// The sizes a packed network needs: at least one input channel, class, pixel, channel and
/// unit, and a pixel left after every pooling.
fn validate_config(config: &NetConfig) -> Result<(), PackedNetError> {
    let invalid = |layer: String, what: String| Err(PackedNetError::Invalid { layer, what });
    for (what, value) in [
        ("in_channels", config.in_channels),
        ("image_size", config.image_size),
        ("classes", config.classes),
    ] {
        if value == 0 {
            return invalid("network".into(), format!("{what} is 0"));
        }
    }
    let mut side = config.image_size;
    for (i, &channels) in config.conv_channels.iter().enumerate() {
        if channels == 0 {
            return invalid(format!("conv {i}"), "0 output channels".into());
        }
        if NetConfig::pools_after(i) {
            if side < 2 {
                return invalid(
                    format!("conv {i}"),
                    format!(
                        "pooling a {side}×{side} image leaves no pixel (image_size {} is too \
                         small for {} convolutions)",
                        config.image_size,
                        config.conv_channels.len()
                    ),
                );
            }
            side /= 2;
        }
    }
    for (i, &units) in config.hidden_units.iter().enumerate() {
        if units == 0 {
            return invalid(format!("dense {i}"), "0 units".into());
        }
    }
    Ok(())
}

/// Errors where a layer's output values would make its outputs NaN: NaN thresholds (±∞ are
/// fine: a channel always or never +1), non-finite batch-norm values, a negative variance or
/// ε.
fn validate_output(layer: &str, record: &OutputRecord) -> Result<(), PackedNetError> {
    let invalid = |what: String| {
        Err(PackedNetError::Invalid {
            layer: layer.into(),
            what,
        })
    };
    match record {
        OutputRecord::Threshold { lo, hi } => {
            for (what, values) in [("lower threshold", lo), ("upper threshold", hi)] {
                if let Some(c) = values.iter().position(|v| v.is_nan()) {
                    return invalid(format!("{what} of channel {c} is NaN"));
                }
            }
        }
        OutputRecord::Norm {
            mean,
            var,
            gamma,
            beta,
            epsilon,
        } => {
            if !(epsilon.is_finite() && *epsilon >= 0.0) {
                return invalid(format!("batch norm ε is {epsilon}"));
            }
            for (what, values) in [
                ("batch norm mean", mean),
                ("batch norm variance", var),
                ("batch norm scale", gamma),
                ("batch norm shift", beta),
            ] {
                if let Some(c) = values.iter().position(|v| !v.is_finite()) {
                    return invalid(format!("{what} of channel {c} is {}", values[c]));
                }
            }
            if let Some(c) = var.iter().position(|&v| v < 0.0) {
                return invalid(format!("batch norm variance of channel {c} is {}", var[c]));
            }
        }
    }
    Ok(())
}

impl<B: QnnBackend> Output<B> {
    fn new(
        layer: &str,
        record: &OutputRecord,
        channels: usize,
        device: &Device<B>,
    ) -> Result<Self, PackedNetError> {
        validate_output(layer, record)?;
        let vector = |what, values: &[f32]| {
            channel_vector::<B>(layer, what, Some(values), channels, device)
                .map(|v| v.expect("present"))
        };
        Ok(match record {
            OutputRecord::Threshold { lo, hi } => Output::Threshold {
                lo: vector("thresholds", lo)?,
                hi: vector("thresholds", hi)?,
            },
            OutputRecord::Norm {
                mean,
                var,
                gamma,
                beta,
                epsilon,
            } => Output::Norm {
                mean: vector("batch norm mean", mean)?,
                var: vector("batch norm variance", var)?,
                gamma: vector("batch norm scale", gamma)?,
                beta: vector("batch norm shift", beta)?,
                epsilon: *epsilon,
            },
        })
    }

    /// The next layer's input from this layer's products `[N, C, ..]`.
    fn apply<const D: usize>(&self, y: Tensor<B, D>) -> Tensor<B, D> {
        let channels = y.dims()[1];
        let mut shape = [1; D];
        shape[1] = channels;
        match self {
            Output::Threshold { lo, hi } => {
                let inside = y
                    .clone()
                    .greater_equal(lo.clone().reshape(shape))
                    .bool_and(y.lower_equal(hi.clone().reshape(shape)));
                inside.float() * 2.0 - 1.0
            }
            Output::Norm {
                mean,
                var,
                gamma,
                beta,
                epsilon,
            } => crate::backend::batch_norm::eval_portable(
                y,
                mean.clone(),
                var.clone(),
                gamma.clone(),
                beta.clone(),
                *epsilon,
            ),
        }
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::{backend::NdArray, tensor::Distribution};

    use super::*;

    fn same_values(a: Tensor<NdArray, 2>, b: Tensor<NdArray, 2>) -> bool {
        let (a, b) = (a.into_data().to_vec::<f32>(), b.into_data().to_vec::<f32>());
        let (a, b) = (a.unwrap(), b.unwrap());
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| x == y || x.is_nan() && y.is_nan())
    }

    /// On NdArray the packed network runs on the CPU kernels without its tensor form, which is
    /// built at the first input the kernels leave to it (a value that is not finite); both give
    /// the network's values.
    #[test]
    fn tensor_form_is_built_only_where_needed() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<PackedNet<NdArray>>();
        let device = Default::default();
        let net = NetConfig::cifar10()
            .with_width(1.0 / 16.0)
            .init::<NdArray>(&device);
        let packed = PackedNet::from_net(&net).unwrap();
        assert!(packed.runs_on_cpu_kernels());
        assert!(packed.tensors.get().is_none(), "built with the network");
        let images =
            Tensor::<NdArray, 4>::random([2, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &device);
        assert!(same_values(
            packed.forward(images.clone()),
            net.forward(images.clone())
        ));
        assert!(packed.tensors.get().is_none(), "built for finite images");
        let mut values = images.into_data().to_vec::<f32>().unwrap();
        values[100] = f32::NAN;
        values[2000] = f32::INFINITY;
        let images =
            Tensor::<NdArray, 4>::from_data(TensorData::new(values, [2, 3, 32, 32]), &device);
        assert!(same_values(
            packed.forward(images.clone()),
            net.forward(images)
        ));
        assert!(packed.tensors.get().is_some());
    }
}
