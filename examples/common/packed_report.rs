//! What the quick start and the custom-model example both check and report of a packed model.

use burn::{
    module::Module,
    record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder},
    tensor::backend::Backend,
};
use burn_qnn::data::ImageDataset;

/// Bytes of a model's record in f32 with Burn's named MessagePack recorder.
pub fn f32_record_bytes<B: Backend, M: Module<B>>(model: M) -> usize {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    Recorder::<B>::record(&recorder, model.into_record(), ())
        .expect("the model serializes")
        .len()
}

/// The packed form must classify `test` exactly as the trained model: their accuracies may not
/// differ by a single image.
pub fn check_same_accuracy(
    trained: f64,
    packed: f64,
    test: &ImageDataset,
) -> Result<(), Box<dyn std::error::Error>> {
    if (trained - packed).abs() * test.len() as f64 > 0.5 {
        return Err(format!(
            "the packed model's accuracy {packed} differs from the trained model's {trained}"
        )
        .into());
    }
    Ok(())
}
