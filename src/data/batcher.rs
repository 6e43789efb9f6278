//! Turning [`ImageItem`]s into tensors for Burn's data loader.

#[cfg(feature = "data")]
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::{Backend, Int, Tensor, TensorData};

#[cfg(feature = "zca")]
use std::sync::Arc;

#[cfg(feature = "zca")]
use super::Zca;
use super::{ImageDataset, ImageItem, ImageShape, Preprocess};

/// A batch of images and their class indices.
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// Preprocessed images, `[batch, channels, height, width]`.
    pub images: Tensor<B, 4>,
    /// Class indices, `[batch]`.
    pub targets: Tensor<B, 1, Int>,
}

/// Builds [`ImageBatch`]es, preprocessing the pixels with a [`Preprocess`].
///
/// ```
/// use burn::backend::NdArray;
/// use burn_qnn::data::{ImageBatch, ImageBatcher, ImageItem, ImageShape, Preprocess};
///
/// let batcher = ImageBatcher::new(ImageShape::new(1, 2, 2), Preprocess::scale(255));
/// let items = vec![
///     ImageItem { pixels: vec![0, 255, 0, 255], label: 3 },
///     ImageItem { pixels: vec![255; 4], label: 1 },
/// ];
/// let batch: ImageBatch<NdArray> = batcher.batch(items, &Default::default());
/// assert_eq!(batch.images.dims(), [2, 1, 2, 2]);
/// assert_eq!(batch.targets.into_data().to_vec::<i64>().unwrap(), vec![3, 1]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatcher {
    shape: ImageShape,
    preprocess: Preprocess,
    /// ZCA whitening after the preprocessing, if any.
    #[cfg(feature = "zca")]
    whitening: Option<Arc<Zca>>,
}

impl ImageBatcher {
    /// A batcher for images of `shape`.
    pub fn new(shape: ImageShape, preprocess: Preprocess) -> Self {
        Self {
            shape,
            preprocess,
            #[cfg(feature = "zca")]
            whitening: None,
        }
    }

    /// A batcher for `data`: its shape, scaling by its maximum value.
    pub fn for_dataset(data: &ImageDataset) -> Self {
        Self::new(data.shape(), Preprocess::for_dataset(data))
    }

    /// The same batcher with global contrast normalisation (see
    /// [`Preprocess::with_contrast_normalization`]).
    pub fn with_contrast_normalization(self, eps: f32) -> Self {
        Self {
            preprocess: self.preprocess.with_contrast_normalization(eps),
            ..self
        }
    }

    /// The same batcher with ZCA whitening after the preprocessing (fit it with [`Zca::fit`]
    /// on the training set and the same [`Preprocess`]).
    ///
    /// # Panics
    /// If the whitening is not for images of this batcher's shape.
    #[cfg(feature = "zca")]
    #[cfg_attr(docsrs, doc(cfg(feature = "zca")))]
    pub fn with_whitening(self, zca: Arc<Zca>) -> Self {
        assert_eq!(
            zca.dim(),
            self.shape.len(),
            "ImageBatcher::with_whitening: the whitening is for vectors of {} values, the images have {}",
            zca.dim(),
            self.shape.len()
        );
        Self {
            whitening: Some(zca),
            ..self
        }
    }

    /// The image shape.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// The preprocessing.
    pub fn preprocess(&self) -> Preprocess {
        self.preprocess
    }
}

impl ImageBatcher {
    /// The batch of `items`, preprocessed, on `device` (what Burn's `Batcher` does with the
    /// `data` feature, without it).
    ///
    /// # Panics
    ///
    /// If an item's number of pixel values differs from the batcher's
    /// shape (items from an [`ImageDataset`] of that shape never do).
    pub fn batch<B: Backend>(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        let n = items.len();
        let [c, h, w] = self.shape.dims();
        let mut values = Vec::with_capacity(n * self.shape.len());
        let mut targets = Vec::with_capacity(n);
        for (index, item) in items.iter().enumerate() {
            assert_eq!(
                item.pixels.len(),
                self.shape.len(),
                "item {index} of the batch does not have shape {:?}",
                self.shape
            );
            self.preprocess.apply(&item.pixels, &mut values);
            targets.push(i64::from(item.label));
        }
        #[cfg(feature = "zca")]
        if let Some(zca) = &self.whitening {
            zca.apply(&mut values);
        }
        ImageBatch {
            images: Tensor::from_data(TensorData::new(values, [n, c, h, w]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        }
    }
}

/// Burn's batcher trait, for its `DataLoaderBuilder` (feature `data`).
#[cfg(feature = "data")]
#[cfg_attr(docsrs, doc(cfg(feature = "data")))]
impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        ImageBatcher::batch(self, items, device)
    }
}
