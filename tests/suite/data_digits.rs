//! The bundled 8×8 digits and the CSV reader.

use std::io::Write;

use burn::data::dataset::Dataset;
use burn_qnn::data::{DataError, ImageItem, digits};
use flate2::Compression;
use flate2::write::GzEncoder;

#[test]
fn bundled_file_is_complete() {
    let data = digits::load_bundled().unwrap();
    assert_eq!(data.len(), digits::BUNDLED_LEN);
    assert_eq!(data.shape().dims(), [1, 8, 8]);
    assert_eq!((data.num_classes(), data.max_value()), (10, 16));
    // Class counts of the UCI optdigits test set.
    assert_eq!(
        data.class_counts(),
        vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    let first = data.get(0).unwrap();
    assert_eq!(first.label, 0);
    assert_eq!(&first.pixels[..8], &[0, 0, 5, 13, 9, 1, 0, 0]);
    assert_eq!(first.pixels.iter().map(|&p| u32::from(p)).sum::<u32>(), 294);
    assert_eq!(data.get(1796).unwrap().label, 8);
    assert!(
        data.items()
            .iter()
            .flat_map(|i| &i.pixels)
            .any(|&p| p == 16)
    );
}

fn row(pixel: &str, label: &str) -> String {
    let mut fields = vec![pixel; 64];
    fields.push(label);
    fields.join(",")
}

#[test]
fn reads_plain_and_gzip_csv() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}\n\n{}\r\n", row("3", "4"), row("16.0", "9"));
    let plain = dir.path().join("d.csv");
    std::fs::write(&plain, &text).unwrap();
    let compressed = dir.path().join("d.csv.gz");
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    std::fs::write(&compressed, e.finish().unwrap()).unwrap();
    for path in [plain, compressed] {
        let data = digits::read_file(&path).unwrap();
        assert_eq!(
            data.items(),
            &[
                ImageItem {
                    pixels: vec![3; 64],
                    label: 4
                },
                ImageItem {
                    pixels: vec![16; 64],
                    label: 9
                },
            ]
        );
    }
}

#[test]
fn bad_rows_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.csv");
    let cases = [
        (
            format!("{}\n{},1\n", row("0", "1"), row("0", "1")),
            2,
            "66 fields",
        ),
        (format!("{}\n", row("x", "1")), 1, "not an integer"),
        (
            format!("{}\n{}\n", row("1", "1"), row("17", "1")),
            2,
            "allowed 0..=16",
        ),
        (format!("{}\n", row("-1", "1")), 1, "allowed 0..=16"),
    ];
    for (text, line_no, what) in cases {
        std::fs::write(&path, text).unwrap();
        match digits::read_file(&path).unwrap_err() {
            DataError::BadRow {
                path: p,
                line,
                detail,
            } => {
                assert_eq!(p, path);
                assert_eq!(line, line_no);
                assert!(detail.contains(what), "{detail}");
            }
            other => panic!("expected a bad row, got {other:?}"),
        }
    }

    std::fs::write(&path, format!("{}\n{}\n", row("1", "2"), row("1", "10"))).unwrap();
    let error = digits::read_file(&path).unwrap_err();
    assert!(
        matches!(&error, DataError::LabelOutOfRange { path: p, value, index: 1, .. } if p == &path && *value == 10.0),
        "{error:?}"
    );

    std::fs::write(&path, "\n\n").unwrap();
    assert!(matches!(
        digits::read_file(&path).unwrap_err(),
        DataError::Malformed { .. }
    ));
}

#[test]
fn split_is_deterministic_and_complete() {
    let data = digits::load_bundled().unwrap();
    let a = digits::train_test_split(data.clone(), 0.25, 1);
    let b = digits::train_test_split(data.clone(), 0.25, 1);
    let c = digits::train_test_split(data.clone(), 0.25, 2);
    assert_eq!((a.train.len(), a.test.len()), (1348, 449));
    assert_eq!(a.train.items(), b.train.items());
    assert_eq!(a.test.items(), b.test.items());
    assert_ne!(a.test.items(), c.test.items());
    // Shuffled: the test set is not just the tail of the file.
    assert_ne!(a.test.items(), &data.items()[1348..]);
    // Together they hold exactly the original images.
    let mut all: Vec<ImageItem> = a.train.into_items();
    all.extend(a.test.into_items());
    let key = |i: &ImageItem| (i.pixels.clone(), i.label);
    all.sort_by_key(key);
    let mut original = data.into_items();
    original.sort_by_key(key);
    assert_eq!(all, original);
}
