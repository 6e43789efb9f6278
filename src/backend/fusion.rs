//! [`QnnBackend`] on `Fusion<B>`, the form `burn::backend::Wgpu` takes under Burn's default
//! features. The quantizers are plain tensor ops, so Fusion records and fuses them as it does any
//! other element-wise op; packed products use the host fallback for now.

use burn_fusion::{Fusion, FusionBackend};

use super::{QnnBackend, host_fallback::host_fallback_packed_ops};

impl<B: FusionBackend + QnnBackend> QnnBackend for Fusion<B> {
    host_fallback_packed_ops!();
}
