//! The batcher: shapes, scaling to [−1, 1], contrast normalisation, targets.

use burn::backend::NdArray;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn_qnn::data::{
    ImageBatch, ImageBatcher, ImageDataset, ImageItem, ImageShape, Preprocess, digits,
    global_contrast_normalize,
};

type B = NdArray;

fn rgb_items() -> Vec<ImageItem> {
    (0..3u8)
        .map(|n| ImageItem {
            // 11 varied values, then 255.
            pixels: (1..12).map(|i| i * 20 + n * 5).chain([255]).collect(),
            label: 2 - n,
        })
        .collect()
}

#[test]
fn batch_has_nchw_shape_scaled_values_and_targets() {
    let items = rgb_items();
    let data = ImageDataset::new(items.clone(), ImageShape::new(3, 2, 2), 3, 255);
    let batcher = ImageBatcher::for_dataset(&data);
    let batch: ImageBatch<B> = batcher.batch(items.clone(), &Default::default());
    // Burn's `Batcher` trait gives the same batch as the inherent method.
    let through_trait: ImageBatch<B> =
        Batcher::<B, _, _>::batch(&batcher, items.clone(), &Default::default());
    assert_eq!(
        through_trait.images.to_data().to_vec::<f32>().unwrap(),
        batch.images.to_data().to_vec::<f32>().unwrap()
    );
    assert_eq!(batch.images.dims(), [3, 3, 2, 2]);
    assert_eq!(batch.targets.dims(), [3]);
    assert_eq!(
        batch.targets.into_data().to_vec::<i64>().unwrap(),
        vec![2, 1, 0]
    );

    let values = batch.images.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
    // Same order as the items' channel-major pixels, mapped p → 2p/255 − 1.
    let expected: Vec<f32> = items
        .iter()
        .flat_map(|i| i.pixels.iter().map(|&p| f32::from(p) * 2.0 / 255.0 - 1.0))
        .collect();
    for (v, e) in values.iter().zip(&expected) {
        assert!((v - e).abs() < 1e-6, "{v} vs {e}");
    }
    // The 255 pixel maps to exactly 1.
    assert_eq!(values[11], 1.0);
}

#[test]
fn digits_scale_by_sixteen() {
    let data = digits::load_bundled().unwrap().take(32);
    let batcher = ImageBatcher::for_dataset(&data);
    assert_eq!(batcher.preprocess(), Preprocess::scale(16));
    let batch: ImageBatch<B> = batcher.batch(data.items().to_vec(), &Default::default());
    assert_eq!(batch.images.dims(), [32, 1, 8, 8]);
    let values = batch.images.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert!(values.contains(&-1.0) && values.contains(&1.0));
}

#[test]
fn contrast_normalisation_gives_zero_mean_unit_std_per_image() {
    let items = rgb_items();
    let batcher = ImageBatcher::new(ImageShape::new(3, 2, 2), Preprocess::scale(255))
        .with_contrast_normalization(1e-8);
    let batch: ImageBatch<B> = batcher.batch(items, &Default::default());
    let values = batch.images.into_data().to_vec::<f32>().unwrap();
    for image in values.chunks(12) {
        let mean = image.iter().sum::<f32>() / 12.0;
        let var = image.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 12.0;
        assert!(mean.abs() < 1e-5, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 1e-4, "std {}", var.sqrt());
    }

    let mut flat = vec![0.3f32; 5];
    global_contrast_normalize(&mut flat, 0.0);
    assert_eq!(flat, vec![0.0; 5]);
}

#[test]
fn works_with_burn_data_loader() {
    let split = digits::train_test_split(digits::load_bundled().unwrap(), 0.1, 3);
    let batcher = ImageBatcher::for_dataset(&split.test);
    let loader = DataLoaderBuilder::<B, _, _>::new(batcher)
        .batch_size(50)
        .build(split.test.clone());
    let sizes: Vec<usize> = loader.iter().map(|b| b.images.dims()[0]).collect();
    assert_eq!(sizes.iter().sum::<usize>(), split.test.len());
    assert_eq!(sizes[0], 50);
}

/// ZCA whitening fitted on the digits: the whitened batch of the training images has zero mean
/// and a covariance near the identity along the directions of real variance, and the batcher
/// applies exactly the fitted whitening after its preprocessing.
#[cfg(feature = "zca")]
#[test]
fn zca_whitening_decorrelates_the_training_images() {
    use std::sync::Arc;

    use burn_qnn::data::{Zca, ZcaError};

    let data = digits::load_bundled().unwrap();
    let preprocess = Preprocess::for_dataset(&data).with_contrast_normalization(1e-8);
    let zca = Zca::fit(&data, preprocess, 1e-6, false).unwrap();
    let batcher = ImageBatcher::new(data.shape(), preprocess).with_whitening(Arc::new(zca.clone()));
    let batch: ImageBatch<B> = batcher.batch(data.items().to_vec(), &Default::default());
    let white = batch.images.into_data().to_vec::<f32>().unwrap();

    let mut expected = Vec::new();
    for item in data.items() {
        preprocess.apply(&item.pixels, &mut expected);
    }
    zca.apply(&mut expected);
    assert_eq!(white, expected, "the batcher whitens after preprocessing");

    let (n, dim) = (data.len(), 64);
    let column = |j: usize| white.chunks(dim).map(move |r| f64::from(r[j]));
    // Pixels 8·i + 0 of the digits are nearly constant; look at central ones.
    for a in [19, 27, 28, 36] {
        let mean = column(a).sum::<f64>() / n as f64;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        for b in [19, 27, 28, 36] {
            let cov = column(a).zip(column(b)).map(|(x, y)| x * y).sum::<f64>() / n as f64;
            let expected = if a == b { 1.0 } else { 0.0 };
            assert!((cov - expected).abs() < 0.05, "cov[{a}][{b}] = {cov}");
        }
    }

    let empty = ImageDataset::new(Vec::new(), data.shape(), 10, 16);
    assert!(matches!(
        Zca::fit(&empty, preprocess, 0.1, false),
        Err(ZcaError::Empty)
    ));
}
