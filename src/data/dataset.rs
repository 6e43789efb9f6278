//! The common item type and the in-memory data set all readers return.

#[cfg(feature = "data")]
use burn::data::dataset::Dataset;

use super::rng::SplitMix64;

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// Pixel values, channel-major: `channels × height × width`, each channel
    /// row by row.
    pub pixels: Vec<u8>,
    /// The class, `0..num_classes`.
    pub label: u8,
}

/// A one-channel image of `f32` pixel values in `0..=255` and its label, the layout of Burn's
/// `burn::data::dataset::vision::MnistItem` (`image: [[f32; 28]; 28]`, `label: u8`), so that a
/// Burn data pipeline feeds the crate's batcher: `ImageItem::from((item.image, item.label))`.
/// Each value is rounded to the nearest integer and clamped to `0..=255` (NaN gives 0).
///
/// The conversion takes the fields rather than `MnistItem` itself because Burn defines that
/// type only with its `vision` feature, which pulls image codecs, an HTTP client and a TLS stack
/// (over 130 crates, C code among them) into every build.
///
/// ```
/// use burn_qnn::data::{ImageDataset, ImageItem, ImageShape};
///
/// // What a `MnistItem` holds: a 28×28 image of values 0.0..=255.0 and a label.
/// let mut image = [[0.0f32; 28]; 28];
/// image[0][1] = 255.0;
/// image[27][27] = 127.6;
/// let item = ImageItem::from((image, 7));
/// assert_eq!((item.pixels.len(), item.pixels[1], item.pixels[28 * 28 - 1]), (784, 255, 128));
/// assert_eq!(item.label, 7);
/// // And back, for a Burn pipeline:
/// let (back, label): ([[f32; 28]; 28], u8) = (&item).try_into()?;
/// assert_eq!((back[0][1], back[27][27], label), (255.0, 128.0, 7));
///
/// let data = ImageDataset::new(vec![item], ImageShape::new(1, 28, 28), 10, 255);
/// # Ok::<(), burn_qnn::data::ImageSizeError>(())
/// ```
impl<const H: usize, const W: usize> From<([[f32; W]; H], u8)> for ImageItem {
    fn from((image, label): ([[f32; W]; H], u8)) -> Self {
        let pixels = image
            .iter()
            .flatten()
            // `as` saturates (and maps NaN to 0) after the rounding.
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        Self { pixels, label }
    }
}

/// An [`ImageItem`] whose pixel count is not that of the image type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the item has {pixels} pixel values, the image type takes {expected}")]
pub struct ImageSizeError {
    /// The item's pixel values.
    pub pixels: usize,
    /// `height × width` of the type.
    pub expected: usize,
}

/// A one-channel item as an image of `f32` values `0.0..=255.0` and its label (the layout of
/// Burn's `MnistItem`; see the example of the conversion the other way).
impl<const H: usize, const W: usize> TryFrom<&ImageItem> for ([[f32; W]; H], u8) {
    type Error = ImageSizeError;

    fn try_from(item: &ImageItem) -> Result<Self, ImageSizeError> {
        if item.pixels.len() != H * W {
            return Err(ImageSizeError {
                pixels: item.pixels.len(),
                expected: H * W,
            });
        }
        let mut image = [[0.0f32; W]; H];
        for (value, &pixel) in image.iter_mut().flatten().zip(&item.pixels) {
            *value = f32::from(pixel);
        }
        Ok((image, item.label))
    }
}

/// Burn's MNIST item as an [`ImageItem`]: its 28×28 values rounded to the nearest integer and
/// clamped to `0..=255` (NaN gives 0), as the conversion from `([[f32; 28]; 28], u8)`.
///
/// ```
/// use burn::data::dataset::vision::MnistItem;
/// use burn_qnn::data::ImageItem;
///
/// let mut image = [[0.0f32; 28]; 28];
/// image[0][1] = 254.6;
/// let item = ImageItem::from(MnistItem { image, label: 7 });
/// assert_eq!((item.pixels.len(), item.pixels[1], item.label), (784, 255, 7));
/// let back = MnistItem::try_from(&item)?;
/// assert_eq!((back.image[0][1], back.label), (255.0, 7));
/// # Ok::<(), burn_qnn::data::ImageSizeError>(())
/// ```
#[cfg(feature = "vision")]
#[cfg_attr(docsrs, doc(cfg(feature = "vision")))]
impl From<burn_dataset::vision::MnistItem> for ImageItem {
    fn from(item: burn_dataset::vision::MnistItem) -> Self {
        Self::from((item.image, item.label))
    }
}

/// A one-channel 28×28 [`ImageItem`] as Burn's MNIST item (values `0.0..=255.0`).
///
/// # Errors
/// [`ImageSizeError`] if the item does not have 784 pixel values.
#[cfg(feature = "vision")]
#[cfg_attr(docsrs, doc(cfg(feature = "vision")))]
impl TryFrom<&ImageItem> for burn_dataset::vision::MnistItem {
    type Error = ImageSizeError;

    fn try_from(item: &ImageItem) -> Result<Self, ImageSizeError> {
        let (image, label) = <([[f32; 28]; 28], u8)>::try_from(item)?;
        Ok(Self { image, label })
    }
}

/// The shape of every image of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Number of channels (1 for grey, 3 for RGB).
    pub channels: usize,
    /// Number of rows.
    pub height: usize,
    /// Number of columns.
    pub width: usize,
}

impl ImageShape {
    /// A shape of `channels × height × width`.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// Number of pixel values of one image (`channels * height * width`).
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether an image of this shape holds no values.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape as `[channels, height, width]`.
    pub const fn dims(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// A training set and a test set.
#[derive(Debug, Clone)]
pub struct TrainTest {
    /// The training images.
    pub train: ImageDataset,
    /// The test images.
    pub test: ImageDataset,
}

/// Labelled images held in memory, all of one shape.
///
/// With the `data` feature it implements Burn's `burn::data::dataset::Dataset`, so it plugs into
/// a `DataLoaderBuilder`.
///
/// ```
/// use burn_qnn::data::{ImageDataset, ImageItem, ImageShape};
///
/// let items = (0..10u8)
///     .map(|i| ImageItem { pixels: vec![i; 4], label: i % 2 })
///     .collect();
/// let data = ImageDataset::new(items, ImageShape::new(1, 2, 2), 2, 255);
/// let (train, valid) = data.split_validation(3);
/// assert_eq!((train.len(), valid.len()), (7, 3));
/// assert_eq!(valid.items()[0].pixels, vec![7; 4]);
/// ```
#[derive(Debug, Clone)]
pub struct ImageDataset {
    items: Vec<ImageItem>,
    shape: ImageShape,
    num_classes: usize,
    max_value: u8,
}

impl ImageDataset {
    /// A data set of `items`, each of `shape`, with labels in
    /// `0..num_classes` and pixel values in `0..=max_value`.
    ///
    /// # Panics
    ///
    /// If an item has another number of pixel values than `shape` holds, a
    /// label `>= num_classes` or a pixel value above `max_value`. (The
    /// readers of this module validate files before building a data set and
    /// return a [`DataError`](crate::data::DataError) instead.)
    pub fn new(
        items: Vec<ImageItem>,
        shape: ImageShape,
        num_classes: usize,
        max_value: u8,
    ) -> Self {
        for (index, item) in items.iter().enumerate() {
            assert_eq!(
                item.pixels.len(),
                shape.len(),
                "item {index}: {} pixel values, shape {shape:?} needs {}",
                item.pixels.len(),
                shape.len()
            );
            assert!(
                usize::from(item.label) < num_classes,
                "item {index}: label {} not below {num_classes}",
                item.label
            );
            assert!(
                item.pixels.iter().all(|&p| p <= max_value),
                "item {index}: pixel value above {max_value}"
            );
        }
        Self {
            items,
            shape,
            num_classes,
            max_value,
        }
    }

    /// The items, in order.
    pub fn items(&self) -> &[ImageItem] {
        &self.items
    }

    /// The items, by value.
    pub fn into_items(self) -> Vec<ImageItem> {
        self.items
    }

    /// The shape of every image.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// The number of classes (labels are `0..num_classes`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The largest pixel value the data set can hold (255 for 8-bit
    /// images, 16 for the 8×8 digits); used to scale pixels to [−1, 1].
    pub fn max_value(&self) -> u8 {
        self.max_value
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many images each class has (index = label).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for item in &self.items {
            counts[usize::from(item.label)] += 1;
        }
        counts
    }

    /// Keeps only the first `n` images (all of them if there are fewer).
    pub fn take(mut self, n: usize) -> Self {
        self.items.truncate(n);
        self
    }

    /// Splits off the last `n` images as a validation set; returns
    /// `(train, validation)`. Deterministic: no shuffling (shuffle first with
    /// [`ImageDataset::shuffled`] if the file order is sorted). `n` larger
    /// than the data set takes everything.
    pub fn split_validation(mut self, n: usize) -> (Self, Self) {
        let at = self.items.len().saturating_sub(n);
        let validation = self.items.split_off(at);
        let validation = Self {
            items: validation,
            ..self.empty_like()
        };
        (self, validation)
    }

    /// Like [`ImageDataset::split_validation`], with the size of the
    /// validation set given as a fraction (`0.0..=1.0`, rounded to the
    /// nearest count) of the data set.
    ///
    /// # Panics
    ///
    /// If `fraction` is not within `0.0..=1.0`.
    pub fn split_validation_fraction(self, fraction: f64) -> (Self, Self) {
        assert!(
            (0.0..=1.0).contains(&fraction),
            "validation fraction {fraction} not within 0..=1"
        );
        let n = (self.items.len() as f64 * fraction).round() as usize;
        self.split_validation(n)
    }

    /// The same images in an order that depends only on `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        SplitMix64::new(seed).shuffle(&mut self.items);
        self
    }

    /// Appends the images of `other` (e.g. SVHN's extra set to its training
    /// set).
    ///
    /// # Panics
    ///
    /// If the two data sets differ in shape, number of classes or maximum
    /// value.
    pub fn append(&mut self, other: Self) {
        assert_eq!(
            (self.shape, self.num_classes, self.max_value),
            (other.shape, other.num_classes, other.max_value),
            "appending a data set of another kind"
        );
        self.items.extend(other.items);
    }

    /// An empty data set with the same shape, classes and maximum value.
    fn empty_like(&self) -> Self {
        Self {
            items: Vec::new(),
            shape: self.shape,
            num_classes: self.num_classes,
            max_value: self.max_value,
        }
    }
}

/// Burn's data-set trait, for its `DataLoaderBuilder` (feature `data`).
#[cfg(feature = "data")]
#[cfg_attr(docsrs, doc(cfg(feature = "data")))]
impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Option<ImageItem> {
        self.items.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// How many images of a training set to hold out for validation: the rule of the examples'
/// `--valid`, which must not fail on a small data set.
///
/// - [`ValidationSize::AtMost`]`(n)` (a default): `n`, but never more than a tenth of the
///   images (rounded down, and at least 1 when there are 2 images or more), so that a small
///   data set keeps 90 % of its images for training.
/// - [`ValidationSize::Exactly`]`(n)` (asked for explicitly): `n`, or an error if that leaves
///   no training image.
///
/// ```
/// use burn_qnn::data::ValidationSize;
///
/// assert_eq!(ValidationSize::AtMost(5000).count(50_000), Ok(5000));
/// assert_eq!(ValidationSize::AtMost(5000).count(1200), Ok(120));
/// assert_eq!(ValidationSize::Exactly(300).count(1200), Ok(300));
/// let error = ValidationSize::Exactly(1200).count(1200).unwrap_err();
/// assert_eq!((error.requested, error.available), (1200, 1200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidationSize {
    /// At most this many images, and at most a tenth of the training set.
    AtMost(usize),
    /// Exactly this many images; fewer than the training set has.
    Exactly(usize),
}

impl ValidationSize {
    /// The number of validation images out of `available` training images.
    ///
    /// # Errors
    /// For [`ValidationSize::Exactly`]`(n)`, if `n` is not smaller than `available` (no image
    /// would be left to train on).
    pub fn count(self, available: usize) -> Result<usize, ValidationSizeError> {
        match self {
            Self::AtMost(n) => {
                let tenth = (available / 10).max(usize::from(available >= 2));
                Ok(n.min(tenth))
            }
            Self::Exactly(n) if n < available => Ok(n),
            Self::Exactly(requested) => Err(ValidationSizeError {
                requested,
                available,
            }),
        }
    }
}

/// A validation set as large as the whole training set, or larger
/// ([`ValidationSize::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a validation set of {requested} images leaves no training images: the training set has \
     {available}"
)]
pub struct ValidationSizeError {
    /// The validation images asked for.
    pub requested: usize,
    /// The images of the training set.
    pub available: usize,
}
