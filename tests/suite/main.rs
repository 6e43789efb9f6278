//! Integration tests of burn-qnn, one module per capability, run on every backend the build has.

mod backend_switch;
mod backends;
mod blocks;
#[cfg(feature = "ndarray")]
mod cifar10_net {
    use burn::backend::NdArray;

    #[test]
    fn summary_counts() {
        let _rng = crate::reference::backend_rng_lock();
        crate::modules::cifar10_summary::<NdArray>(&Default::default());
    }

    #[test]
    fn records_from_before_packing_load() {
        let _rng = crate::reference::backend_rng_lock();
        crate::packing::records_from_before_packing_load::<NdArray>(&Default::default());
    }

    #[test]
    fn packed_user_record_is_25_times_smaller() {
        let _rng = crate::reference::backend_rng_lock();
        crate::packing::packed_record_is_25_times_smaller::<NdArray>(&Default::default());
    }

    #[test]
    fn packed_file_is_25_times_smaller() {
        let _rng = crate::reference::backend_rng_lock();
        crate::modules::cifar10_file_sizes::<NdArray>(&Default::default());
    }
}
mod conv;
#[cfg(all(feature = "ndarray", feature = "wgpu"))]
mod cross_backend;
mod custom_quantizers;
#[cfg(all(feature = "ndarray", feature = "data"))]
mod data_batcher;
#[cfg(feature = "download")]
mod data_cifar10;
#[cfg(feature = "data")]
mod data_dataset;
#[cfg(feature = "data")]
mod data_digits;
#[cfg(feature = "download")]
mod data_download;
#[cfg(feature = "download")]
mod data_mnist;
#[cfg(feature = "download")]
mod data_support;
#[cfg(feature = "download")]
mod data_svhn;
#[cfg(feature = "train")]
mod latent_lr_scale;
#[cfg(feature = "download")]
#[path = "../common/mat.rs"]
#[allow(dead_code)]
mod mat_format;
#[cfg(all(feature = "train", feature = "ndarray"))]
mod latent_lr_scale_ndarray {
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray>;

    #[test]
    fn adam_matches_definition() {
        let _rng = crate::reference::backend_rng_lock();
        crate::latent_lr_scale::adam_matches_definition::<B>(&Default::default());
    }

    #[test]
    fn sgd_matches_definition() {
        let _rng = crate::reference::backend_rng_lock();
        crate::latent_lr_scale::sgd_matches_definition::<B>(&Default::default());
    }

    #[test]
    fn clipping_follows_scaling() {
        let _rng = crate::reference::backend_rng_lock();
        crate::latent_lr_scale::clipping_follows_scaling::<B>(&Default::default());
    }

    #[test]
    fn scale_of_each_layer() {
        let _rng = crate::reference::backend_rng_lock();
        crate::latent_lr_scale::scale_of_each_layer::<B>(&Default::default());
    }

    #[test]
    fn trains_a_network() {
        let _rng = crate::reference::backend_rng_lock();
        crate::latent_lr_scale::trains_a_network::<B>(&Default::default());
    }

    #[test]
    fn record_is_the_inner_record() {
        let _rng = crate::reference::backend_rng_lock();
        crate::latent_lr_scale::record_is_the_inner_record::<B>(&Default::default());
    }
}
#[cfg(feature = "train")]
mod learner;
#[cfg(all(feature = "train", feature = "ndarray"))]
mod learner_ndarray {
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn lowers_the_loss() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::learner_lowers_the_loss::<Autodiff<NdArray>>(&Default::default());
    }

    #[test]
    fn clipping_optimizer() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::clipping_optimizer::<Autodiff<NdArray>>(&Default::default());
    }

    #[test]
    fn resume_restores_optimizer_and_schedule() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::resume_restores_optimizer_and_schedule::<Autodiff<NdArray>>(
            &Default::default(),
        );
    }

    #[test]
    fn resume_errors() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::resume_errors::<Autodiff<NdArray>>(&Default::default());
    }

    #[test]
    fn flip_ratio() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::flip_ratio::<Autodiff<NdArray>>(&Default::default());
    }

    #[test]
    fn bop_through_the_learner() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::bop_through_the_learner::<Autodiff<NdArray>>(&Default::default());
    }

    #[test]
    fn multi_device_equals_accumulation() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::multi_device_equals_accumulation::<Autodiff<NdArray>>(&Default::default());
    }

    #[test]
    fn checkpoints_while_training() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::checkpoints_while_training::<Autodiff<NdArray>>(&Default::default());
    }

    #[test]
    fn best_validation_checkpoint_survives() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::best_validation_checkpoint_survives::<Autodiff<NdArray>>(
            &Default::default(),
        );
    }
}
mod modules;
mod optim_bop;
mod packed;
mod packing;
mod params;
mod quantizers;
mod reference;
mod training_ops;
/// burn-train's learner on `burn::backend::Wgpu` (fused): its checkpointer reads the records
/// on threads of its own while training goes on.
#[cfg(all(feature = "train", feature = "wgpu"))]
mod learner_wgpu {
    use burn::backend::{Autodiff, Wgpu};

    type AD = Autodiff<Wgpu>;

    #[test]
    fn lowers_the_loss() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::learner_lowers_the_loss::<AD>(&Default::default());
    }

    #[test]
    fn clipping_optimizer() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::clipping_optimizer::<AD>(&Default::default());
    }

    #[test]
    fn checkpoints_while_training() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::checkpoints_while_training::<AD>(&Default::default());
    }

    #[test]
    fn resume_restores_optimizer_and_schedule() {
        let _rng = crate::reference::backend_rng_lock();
        crate::learner::resume_restores_optimizer_and_schedule::<AD>(&Default::default());
    }
}
