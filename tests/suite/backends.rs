//! Runs each generic check on every backend: `NdArray`, `Wgpu` (fused), `CubeBackend` on wgpu
//! (no fusion), and each of them under `Autodiff`.

/// Declares, in a module named `$name`, one `#[test]` per check for backend `$b`, whose autodiff
/// form is `Autodiff<$b>`; `quick` trims the list of product shapes.
macro_rules! backend_tests {
    ($name:ident, $b:ty, quick = $quick:expr) => {
        mod $name {
            use burn::backend::Autodiff;

            type B = $b;
            type AD = Autodiff<$b>;

            fn device() -> burn::tensor::Device<B> {
                Default::default()
            }

            #[test]
            fn sign_forward() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::sign_forward::<B>(&device());
                crate::quantizers::sign_forward::<AD>(&device());
            }

            #[test]
            fn linear_forward() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::linear_forward::<B>(&device());
                crate::quantizers::linear_forward::<AD>(&device());
            }

            #[test]
            fn pow2_forward() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::pow2_forward::<B>(&device());
                crate::quantizers::pow2_forward::<AD>(&device());
            }

            #[test]
            fn edge_values() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::edge_values::<B>(&device());
                crate::quantizers::edge_values::<AD>(&device());
                crate::quantizers::backend_quantizer_matches_tensor_ops::<B>(&device());
            }

            #[test]
            fn empty_tensors() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::empty_tensors::<B>(&device());
                crate::quantizers::empty_tensors::<AD>(&device());
            }

            #[test]
            fn stochastic_sign() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::stochastic_sign_with_noise::<B>(&device());
                crate::quantizers::stochastic_sign_with_noise::<AD>(&device());
                crate::quantizers::stochastic_sign_statistics::<B>(&device());
                crate::quantizers::stochastic_sign_seeded::<B>(&device());
                crate::quantizers::stochastic_sign_seeded::<AD>(&device());
            }

            #[test]
            fn straight_through_gradients() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::straight_through_gradients::<AD>(&device());
            }

            #[test]
            fn edge_gradients() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::edge_gradients::<AD>(&device());
            }

            #[test]
            fn stochastic_sign_gradient() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::stochastic_sign_gradient::<AD>(&device());
            }

            #[test]
            fn custom_quantizers() {
                let _rng = crate::reference::backend_rng_lock();
                crate::custom_quantizers::approx_sign::<AD>(&device());
                crate::custom_quantizers::magnitude_aware_sign::<AD>(&device());
                crate::custom_quantizers::magnitude_aware_sign_bad_axis::<B>(&device());
                crate::custom_quantizers::derivative_only_when_tracked::<B>(&device());
                crate::custom_quantizers::derivative_only_when_tracked::<AD>(&device());
                crate::custom_quantizers::user_straight_through::<AD>(&device());
                crate::custom_quantizers::quant_linear_with_bi_real_quantizers::<AD>(&device());
                crate::custom_quantizers::quant_conv2d_with_bi_real_quantizers::<AD>(&device());
                crate::custom_quantizers::quant_linear_on_codes::<AD>(&device());
                crate::custom_quantizers::quant_conv2d_on_codes::<AD>(&device());
                crate::custom_quantizers::saved_codes::<B>(&device());
                crate::custom_quantizers::saved_codes::<AD>(&device());
            }

            #[test]
            fn bop() {
                let _rng = crate::reference::backend_rng_lock();
                crate::optim_bop::bop_rule_matches_definition::<B>(&device());
                crate::optim_bop::bop_beside_adam::<AD>(&device());
                crate::optim_bop::bop_step_multi_sums_devices::<AD>(&device());
                crate::optim_bop::bop_rule_in_adaptor::<AD>(&device());
            }

            #[test]
            fn gradient_quantizer() {
                let _rng = crate::reference::backend_rng_lock();
                crate::quantizers::gradient_quantizer::<AD>(&device());
                crate::quantizers::stochastic_gradient_quantizer::<AD>(&device());
                crate::modules::stochastic_rounding_layers::<AD>(&device());
            }

            #[test]
            fn xnor_matmul() {
                let _rng = crate::reference::backend_rng_lock();
                crate::packed::xnor_matmul_matches_float::<B>(&device(), $quick);
                crate::packed::xnor_matmul_matches_float::<AD>(&device(), true);
                crate::packed::xnor_matmul_batched::<B>(&device());
                crate::packed::extreme_operands::<B>(&device());
                crate::packed::shape_mismatch_panics::<B>(&device());
            }

            #[test]
            fn bit_serial_products() {
                let _rng = crate::reference::backend_rng_lock();
                crate::packed::bit_serial_products::<B>(&device());
            }

            #[test]
            fn packing() {
                let _rng = crate::reference::backend_rng_lock();
                crate::packed::pack_round_trip::<B>(&device());
                crate::packed::packed_bytes_layout::<B>(&device());
                crate::packed::bad_packed_bytes::<B>(&device());
                crate::packed::pack_round_trip::<AD>(&device());
            }

            #[test]
            fn binary_conv() {
                let _rng = crate::reference::backend_rng_lock();
                crate::conv::binary_conv_matches_reference::<B>(&device(), $quick);
                crate::conv::binary_conv_matches_reference::<AD>(&device(), true);
                crate::conv::bad_conv_weight_bytes::<B>(&device());
            }

            #[test]
            fn binary_gradients() {
                let _rng = crate::reference::backend_rng_lock();
                crate::conv::binary_conv_gradients::<AD>(&device());
                crate::conv::xnor_matmul_gradients::<AD>(&device());
            }

            #[test]
            fn quantized_gradients() {
                let _rng = crate::reference::backend_rng_lock();
                crate::conv::quantized_gradients::<AD>(&device());
            }

            #[test]
            fn training_ops() {
                let _rng = crate::reference::backend_rng_lock();
                crate::training_ops::max_pool_matches_burn::<AD>(&device());
                crate::training_ops::bit_plane_conv_gradients::<AD>(&device());
                crate::training_ops::fused_adam_matches_burn_adam::<AD>(&device());
                crate::training_ops::latent_update_matches_burn_ops::<B>(&device());
                crate::training_ops::latent_update_matches_burn_ops::<AD>(&device());
            }

            #[test]
            fn nn_modules() {
                let _rng = crate::reference::backend_rng_lock();
                crate::modules::binary_linear::<B>(&device());
                crate::modules::binary_linear::<AD>(&device());
                crate::modules::shift_batch_norm::<AD>(&device());
                crate::modules::batch_norm_sign::<AD>(&device());
                crate::modules::bit_plane_layers::<B>(&device());
                crate::modules::latent_weights::<B>(&device());
            }

            #[test]
            fn binary_blocks() {
                let _rng = crate::reference::backend_rng_lock();
                crate::blocks::binary_conv_blocks::<AD>(&device());
                crate::blocks::binary_linear_blocks::<AD>(&device());
                crate::blocks::bit_plane_blocks::<AD>(&device());
            }

            #[test]
            fn packed_quant_layers() {
                let _rng = crate::reference::backend_rng_lock();
                crate::modules::packed_quant_linear::<B>(&device());
                crate::modules::packed_quant_conv2d::<B>(&device());
            }

            #[test]
            fn packed_inference() {
                let _rng = crate::reference::backend_rng_lock();
                crate::modules::packed_inference::<AD>(&device());
                crate::modules::bad_packed_records::<B>(&device());
            }

            #[test]
            fn packed_user_models() {
                let _rng = crate::reference::backend_rng_lock();
                crate::packing::packed_user_models::<B>(&device());
                crate::packing::bad_packed_files::<B>(&device());
                crate::packing::packs_under_autodiff::<AD>(&device());
                crate::packing::summary_of_a_user_model::<B>(&device());
                crate::packing::packed_layers_with_real_inputs::<B>(&device());
            }

            #[test]
            fn drop_in_training() {
                let _rng = crate::reference::backend_rng_lock();
                crate::modules::drop_in_training::<AD>(&device());
            }

            #[test]
            fn backend_switch() {
                let _rng = crate::reference::backend_rng_lock();
                crate::backend_switch::same_on::<B>(&device());
                crate::backend_switch::same_on::<AD>(&device());
            }
        }
    };
}

#[cfg(feature = "ndarray")]
backend_tests!(ndarray, burn::backend::NdArray, quick = false);

#[cfg(feature = "wgpu")]
backend_tests!(wgpu_fusion, burn::backend::Wgpu, quick = false);

#[cfg(feature = "wgpu")]
backend_tests!(
    wgpu_no_fusion,
    burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>,
    quick = false
);

#[cfg(feature = "flex")]
backend_tests!(flex, burn::backend::Flex, quick = false);
