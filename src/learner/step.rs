//! burn-train's step traits for [`Net`]: squared hinge loss and a classification output.

use burn::tensor::{Int, Tensor, backend::Backend};
use burn_train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::{
    QnnAutodiffBackend, QnnBackend, data::ImageBatch, loss::SquaredHingeLoss, models::Net,
};

/// The paper's squared hinge loss of `scores` `[N, classes]` against the labels `targets`
/// `[N]`, as the output burn-train's [`LossMetric`](burn_train::metric::LossMetric) and
/// [`AccuracyMetric`](burn_train::metric::AccuracyMetric) read (the predicted class is the
/// highest score). The step traits of [`Net`] use it; so can a model of your own:
///
/// ```
/// use burn::prelude::*;
/// use burn_qnn::{QnnAutodiffBackend, QnnBackend, data::ImageBatch, learner::classification_output};
/// use burn_qnn::nn::{BinaryLinear, BinaryLinearConfig};
/// use burn_train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
///
/// #[derive(Module, Debug)]
/// struct Tiny<B: QnnBackend> {
///     fc: BinaryLinear<B>,
/// }
///
/// impl<B: QnnBackend> Tiny<B> {
///     fn output(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
///         let scores = self.fc.forward(batch.images.flatten(1, 3));
///         classification_output(scores, batch.targets)
///     }
/// }
///
/// impl<B: QnnAutodiffBackend> TrainStep for Tiny<B> {
///     type Input = ImageBatch<B>;
///     type Output = ClassificationOutput<B>;
///     fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
///         let output = self.output(batch);
///         TrainOutput::new(self, output.loss.backward(), output)
///     }
/// }
///
/// impl<B: QnnBackend> InferenceStep for Tiny<B> {
///     type Input = ImageBatch<B>;
///     type Output = ClassificationOutput<B>;
///     fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
///         self.output(batch)
///     }
/// }
///
/// let device = Default::default();
/// let tiny = Tiny::<burn::backend::NdArray> {
///     fc: BinaryLinearConfig::new(16, 2).init(&device),
/// };
/// let batch = ImageBatch {
///     images: Tensor::zeros([3, 1, 4, 4], &device),
///     targets: Tensor::from_ints([0, 1, 1], &device),
/// };
/// let output = InferenceStep::step(&tiny, batch);
/// assert_eq!(output.output.dims(), [3, 2]);
/// assert_eq!(output.loss.dims(), [1]);
/// ```
pub fn classification_output<B: Backend>(
    scores: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> ClassificationOutput<B> {
    let loss = SquaredHingeLoss.forward(scores.clone(), targets.clone());
    ClassificationOutput::new(loss, scores, targets)
}

/// A training step: forward, squared hinge loss, backward.
impl<B: QnnAutodiffBackend> TrainStep for Net<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let output = classification_output(self.forward(batch.images), batch.targets);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

/// A validation step: forward and squared hinge loss, without gradients.
impl<B: QnnBackend> InferenceStep for Net<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        classification_output(self.forward(batch.images), batch.targets)
    }
}
