//! The in-memory data set: Burn's `Dataset`, splits, take, shuffle.

use burn::data::dataset::Dataset;
use burn_qnn::data::{ImageDataset, ImageItem, ImageShape};

fn numbered(n: u8) -> ImageDataset {
    let items = (0..n)
        .map(|i| ImageItem {
            pixels: vec![i; 2],
            label: i % 3,
        })
        .collect();
    ImageDataset::new(items, ImageShape::new(1, 1, 2), 3, 255)
}

fn firsts(data: &ImageDataset) -> Vec<u8> {
    data.items().iter().map(|i| i.pixels[0]).collect()
}

#[test]
fn implements_burn_dataset() {
    let data = numbered(5);
    assert_eq!(Dataset::len(&data), 5);
    assert_eq!(data.get(4).unwrap().pixels, vec![4, 4]);
    assert!(data.get(5).is_none());
    assert_eq!(data.iter().count(), 5);
    assert_eq!(data.class_counts(), vec![2, 2, 1]);
    assert_eq!(ImageShape::new(3, 32, 32).len(), 3072);
}

#[test]
fn split_and_take() {
    let (train, valid) = numbered(10).split_validation(3);
    assert_eq!(firsts(&train), vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(firsts(&valid), vec![7, 8, 9]);
    assert_eq!((valid.shape(), valid.num_classes()), (train.shape(), 3));

    let (train, valid) = numbered(10).split_validation_fraction(0.25);
    assert_eq!((train.len(), valid.len()), (7, 3));
    let (train, valid) = numbered(4).split_validation(10);
    assert_eq!((train.len(), valid.len()), (0, 4));

    assert_eq!(firsts(&numbered(10).take(4)), vec![0, 1, 2, 3]);
    assert_eq!(numbered(3).take(10).len(), 3);
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let a = numbered(50).shuffled(9);
    let b = numbered(50).shuffled(9);
    let c = numbered(50).shuffled(10);
    assert_eq!(firsts(&a), firsts(&b));
    assert_ne!(firsts(&a), firsts(&c));
    assert_ne!(firsts(&a), (0..50).collect::<Vec<_>>());
    let mut sorted = firsts(&a);
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
}

#[test]
fn append_concatenates() {
    let mut a = numbered(2);
    a.append(numbered(3));
    assert_eq!(firsts(&a), vec![0, 1, 0, 1, 2]);
}

#[test]
#[should_panic(expected = "pixel values")]
fn new_rejects_items_of_another_shape() {
    let items = vec![ImageItem {
        pixels: vec![0; 3],
        label: 0,
    }];
    let _ = ImageDataset::new(items, ImageShape::new(1, 1, 2), 3, 255);
}

#[test]
#[should_panic(expected = "label")]
fn new_rejects_labels_out_of_range() {
    let items = vec![ImageItem {
        pixels: vec![0; 2],
        label: 3,
    }];
    let _ = ImageDataset::new(items, ImageShape::new(1, 1, 2), 3, 255);
}

/// The validation-size rule of the examples: a default never takes more than a tenth of a
/// small training set; an explicit size that leaves nothing to train on is an error.
#[test]
fn validation_size_rule() {
    use burn_qnn::data::{ValidationSize, ValidationSizeError};

    // A default fits any data set.
    assert_eq!(ValidationSize::AtMost(5000).count(50_000), Ok(5000));
    assert_eq!(ValidationSize::AtMost(5000).count(49_999), Ok(4999));
    assert_eq!(ValidationSize::AtMost(5000).count(1797), Ok(179));
    assert_eq!(ValidationSize::AtMost(5000).count(15), Ok(1));
    assert_eq!(ValidationSize::AtMost(5000).count(2), Ok(1));
    assert_eq!(ValidationSize::AtMost(5000).count(1), Ok(0));
    assert_eq!(ValidationSize::AtMost(5000).count(0), Ok(0));
    assert_eq!(ValidationSize::AtMost(0).count(100), Ok(0));
    for available in 0..200 {
        let n = ValidationSize::AtMost(10_000).count(available).unwrap();
        assert!(
            n <= available / 10 || (n == 1 && available >= 2),
            "{available}: {n}"
        );
        assert!(available == 0 || n < available, "{available}: {n}");
    }

    // An explicit size is taken as it is, unless it leaves no training image.
    assert_eq!(ValidationSize::Exactly(6000).count(73_257), Ok(6000));
    assert_eq!(ValidationSize::Exactly(0).count(5), Ok(0));
    assert_eq!(ValidationSize::Exactly(999).count(1000), Ok(999));
    for (requested, available) in [(1000, 1000), (5000, 1000), (0, 0), (1, 0)] {
        let error = ValidationSize::Exactly(requested)
            .count(available)
            .unwrap_err();
        assert_eq!(
            error,
            ValidationSizeError {
                requested,
                available
            }
        );
        let message = error.to_string();
        assert!(
            message.contains(&requested.to_string()) && message.contains(&available.to_string()),
            "{message}"
        );
    }

    // With the split it feeds: the default on 15 images keeps 14 for training.
    let n = ValidationSize::AtMost(5000).count(15).unwrap();
    let (train, valid) = numbered(15).split_validation(n);
    assert_eq!((train.len(), valid.len()), (14, 1));
}

/// The conversions in the layout of Burn's `MnistItem` (`[[f32; 28]; 28]`, `u8`): values
/// rounded and clamped to bytes row by row, back exactly, and a wrong size is a typed error.
#[test]
fn mnist_item_layout_round_trips() {
    use burn_qnn::data::ImageSizeError;

    let mut image = [[0.0f32; 28]; 28];
    for (r, row) in image.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (r * 28 + c) as f32 % 256.0;
        }
    }
    image[3][4] = -7.0;
    image[5][6] = 300.0;
    image[7][8] = f32::NAN;
    image[9][10] = 41.5;
    let item = ImageItem::from((image, 3));
    assert_eq!(item.label, 3);
    assert_eq!(item.pixels.len(), 784);
    assert_eq!(item.pixels[28 + 2], 30);
    assert_eq!(item.pixels[3 * 28 + 4], 0);
    assert_eq!(item.pixels[5 * 28 + 6], 255);
    assert_eq!(item.pixels[7 * 28 + 8], 0);
    assert_eq!(item.pixels[9 * 28 + 10], 42);
    let (back, label): ([[f32; 28]; 28], u8) = (&item).try_into().unwrap();
    assert_eq!(label, 3);
    assert!(
        back.iter()
            .flatten()
            .zip(&item.pixels)
            .all(|(&v, &p)| v == f32::from(p))
    );
    assert_eq!(ImageItem::from((back, label)), item);
    let wrong: Result<([[f32; 8]; 8], u8), _> = (&item).try_into();
    assert_eq!(
        wrong,
        Err(ImageSizeError {
            pixels: 784,
            expected: 64
        })
    );
}

/// Burn's own `MnistItem` converts to an image item (the values row by row, rounded and
/// clamped) and back, and a Burn data set of them feeds the crate's data set; an item of
/// another size is a typed error.
#[cfg(feature = "vision")]
#[test]
fn burn_mnist_items_convert_both_ways() {
    use burn::data::dataset::InMemDataset;
    use burn::data::dataset::vision::MnistItem;
    use burn_qnn::data::ImageSizeError;

    let burn_items: Vec<MnistItem> = (0..4u8)
        .map(|n| {
            let mut image = [[0.0f32; 28]; 28];
            image[n as usize][27] = 200.4 + f32::from(n);
            image[27][n as usize] = -3.0;
            MnistItem { image, label: n }
        })
        .collect();
    let burn_data = InMemDataset::new(burn_items.clone());
    let items: Vec<ImageItem> = (0..burn_data.len())
        .map(|i| ImageItem::from(burn_data.get(i).unwrap()))
        .collect();
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item.label as usize, n);
        assert_eq!(item.pixels[n * 28 + 27], 200 + n as u8);
        assert_eq!(item.pixels[27 * 28 + n], 0);
        assert_eq!(item.pixels.iter().filter(|&&p| p != 0).count(), 1);
        let back = MnistItem::try_from(item).unwrap();
        assert_eq!(back.label, burn_items[n].label);
        assert_eq!(back.image[n][27], f32::from(200 + n as u8));
    }
    let data = ImageDataset::new(items, ImageShape::new(1, 28, 28), 10, 255);
    assert_eq!(data.len(), 4);
    let small = ImageItem {
        pixels: vec![0; 64],
        label: 1,
    };
    assert_eq!(
        MnistItem::try_from(&small).map(|i| i.label),
        Err(ImageSizeError {
            pixels: 64,
            expected: 784
        })
    );
}
