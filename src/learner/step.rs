//! burn-train's step traits for [`Net`]: squared hinge loss and a classification output.

use burn_train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::{
    QnnAutodiffBackend, QnnBackend, data::ImageBatch, loss::SquaredHingeLoss, models::Net,
};

/// The forward pass of `net` on `batch`, with the paper's squared hinge loss: the output
/// burn-train's [`LossMetric`](burn_train::metric::LossMetric) and
/// [`AccuracyMetric`](burn_train::metric::AccuracyMetric) read (the scores are the last batch
/// norm's outputs; the predicted class is the highest score).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use burn_qnn::{data::ImageBatch, learner::classification_output, models::NetConfig};
///
/// let device = Default::default();
/// let net = NetConfig::new(1, 4, vec![], vec![8]).with_classes(2).init::<NdArray>(&device);
/// let batch = ImageBatch {
///     images: Tensor::zeros([3, 1, 4, 4], &device),
///     targets: Tensor::<NdArray, 1, Int>::from_ints([0, 1, 1], &device),
/// };
/// let output = classification_output(&net, batch);
/// assert_eq!(output.output.dims(), [3, 2]);
/// assert_eq!(output.loss.dims(), [1]);
/// ```
pub fn classification_output<B: QnnBackend>(
    net: &Net<B>,
    batch: ImageBatch<B>,
) -> ClassificationOutput<B> {
    let scores = net.forward(batch.images);
    let loss = SquaredHingeLoss.forward(scores.clone(), batch.targets.clone());
    ClassificationOutput::new(loss, scores, batch.targets)
}

/// A training step: forward, squared hinge loss, backward.
impl<B: QnnAutodiffBackend> TrainStep for Net<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let output = classification_output(self, batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

/// A validation step: forward and squared hinge loss, without gradients.
impl<B: QnnBackend> InferenceStep for Net<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        classification_output(self, batch)
    }
}
