//! A fuzz harness over every parser of files and bytes the crate reads: the SVHN MAT reader,
//! the MNIST IDX reader (images and labels, plain and gzip), the CIFAR-10 batch reader, the
//! digits CSV, `HostPacked::from_bytes`, `PackedNet::load` and `load_checkpoint_model`.
//!
//! Each parser gets valid inputs written here in its exact format, mutated (bit flips, bytes set
//! to extremes, length fields set to extremes, truncations, inserted, deleted and repeated
//! bytes), and each call must return `Ok` or a typed error: never panic, and never allocate
//! more than a bound tied to the input's size (this binary counts every allocation).
//!
//! `cargo test --test fuzz` runs a short round (a few hundred inputs a parser). For a long run,
//! `scripts/fuzz.sh [INPUTS]` sets `BURN_QNN_FUZZ_INPUTS` (and `BURN_QNN_FUZZ_SEED`) and runs
//! this binary in release under a memory limit; every failing input is written to
//! `target/fuzz-failures/`.

#![cfg(all(feature = "ndarray", feature = "train"))]

mod common;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::Instant;

use burn::backend::NdArray;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn_qnn::data::{cifar10, digits, mnist, svhn};
use burn_qnn::inference::PackedNet;
use burn_qnn::learner::{AtomicFileRecorder, load_checkpoint_model};
use burn_qnn::models::{Net, NetConfig};
use burn_qnn::ops::{Encoding, HostPacked};
use burn_qnn::quant::Bits;
use common::counting_alloc::Measure;
use common::files::{gzip, write as file};
use common::mat;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type B = NdArray;

/// What a parser is given: the bytes of one input, and a folder to write files into.
type Parse = Box<dyn Fn(&[u8], &Path) -> Result<(), String>>;

/// One parser under test.
struct Target {
    name: &'static str,
    /// Valid inputs, each of which the parser must accept.
    seeds: Vec<Vec<u8>>,
    /// The most bytes a call may allocate at once, for an input of `len` bytes.
    bound: fn(len: usize) -> usize,
    parse: Parse,
}

/// What a round over one target found.
#[derive(Debug, Default)]
struct Report {
    inputs: u64,
    accepted: u64,
    /// Largest allocation peak seen, and the input length it was seen with.
    peak: (usize, usize),
    failures: Vec<String>,
}

/// The panic messages raised while a call runs on this thread: the hook below stores them
/// instead of printing them, so that a long run is not flooded (each one is a failure); panics
/// outside calls (a test's own assertions) go to the default hook.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

fn quiet_panics() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CALL.with(Cell::get) {
                return default(info);
            }
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info.location().map(|l| l.to_string()).unwrap_or_default();
            PANICS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{message} at {at}"));
        }));
    });
}

/// How many inputs each parser gets: `BURN_QNN_FUZZ_INPUTS`, or a short round.
fn inputs_per_parser() -> u64 {
    std::env::var("BURN_QNN_FUZZ_INPUTS")
        .ok()
        .map(|v| v.parse().expect("BURN_QNN_FUZZ_INPUTS must be a count"))
        .unwrap_or(300)
}

fn seed() -> u64 {
    std::env::var("BURN_QNN_FUZZ_SEED")
        .ok()
        .map(|v| v.parse().expect("BURN_QNN_FUZZ_SEED must be an integer"))
        .unwrap_or(0x5eed)
}

/// Values a length or count field is set to: the edges of every integer width.
const EXTREMES: [u64; 10] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 61,
    u64::MAX,
];

/// A position to change: anywhere, or (half the time) in the first 512 bytes, where the
/// headers and length fields are.
fn position(rng: &mut StdRng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let span = if rng.random_bool(0.5) {
        len.min(512)
    } else {
        len
    };
    rng.random_range(0..span)
}

/// Applies one to four random changes to `input`.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>) {
    let changes = 1 + (rng.random::<u32>() % 8).trailing_ones().min(3);
    for _ in 0..changes {
        let len = input.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let at = position(rng, len);
                input[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = position(rng, len);
                input[at] = [0, 0xff, 0x7f, 0x80, rng.random()][rng.random_range(0..5)];
            }
            2 | 3 if len >= 8 => {
                // A 1-, 2-, 4- or 8-byte field, either byte order, set to an extreme.
                let width = [1, 2, 4, 8][rng.random_range(0..4)];
                let at = position(rng, len - width + 1).min(len - width);
                let at = at - at % width;
                let value = EXTREMES[rng.random_range(0..EXTREMES.len())];
                let little_endian = value.to_le_bytes();
                let big_endian = value.to_be_bytes();
                let bytes = if rng.random_bool(0.5) {
                    &little_endian[..width]
                } else {
                    &big_endian[8 - width..]
                };
                input[at..at + width].copy_from_slice(bytes);
            }
            4 => input.truncate(position(rng, len)),
            5 => {
                let at = position(rng, len + 1).min(len);
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                input.splice(at..at, bytes);
            }
            6 if len > 0 => {
                let at = position(rng, len);
                let end = (at + rng.random_range(1..=64)).min(len);
                input.drain(at..end);
            }
            7 if len > 0 => {
                let at = position(rng, len);
                let end = (at + rng.random_range(1..=64)).min(len);
                let copy = input[at..end].to_vec();
                let to = position(rng, len + 1).min(len);
                input.splice(to..to, copy);
            }
            _ => {
                let n = rng.random_range(1..=32);
                input.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
    }
}

/// Runs `target` on its seeds, then on `count` mutations of them.
fn fuzz(target: &Target, count: u64, seed: u64) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let measure = Measure::start();
    let mut rng = StdRng::seed_from_u64(seed ^ target.name.len() as u64);
    let mut report = Report::default();
    let failed_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    let check = |input: &[u8], must_accept: bool, report: &mut Report| {
        PANICS.lock().unwrap_or_else(|e| e.into_inner()).clear();
        IN_CALL.with(|c| c.set(true));
        let (result, peak) = measure
            .peak_of(|| catch_unwind(AssertUnwindSafe(|| (target.parse)(input, dir.path()))));
        IN_CALL.with(|c| c.set(false));
        report.inputs += 1;
        if peak > report.peak.0 {
            report.peak = (peak, input.len());
        }
        let bound = (target.bound)(input.len());
        let failure = match result {
            Err(_) => Some(format!(
                "panicked: {}",
                PANICS.lock().unwrap_or_else(|e| e.into_inner()).join("; ")
            )),
            Ok(_) if peak > bound => Some(format!(
                "allocated {peak} bytes for {} input bytes (bound {bound})",
                input.len()
            )),
            Ok(Err(e)) if must_accept => Some(format!("rejected a valid input: {e}")),
            Ok(Ok(())) => {
                report.accepted += 1;
                None
            }
            Ok(Err(_)) => None,
        };
        if let Some(failure) = failure {
            let n = report.failures.len();
            let file = failed_dir.join(format!("{}-{seed}-{n}.bin", target.name));
            let saved = std::fs::create_dir_all(&failed_dir)
                .and_then(|()| std::fs::write(&file, input))
                .map(|()| format!(" (input in {})", file.display()))
                .unwrap_or_default();
            report.failures.push(format!("{failure}{saved}"));
        }
    };
    for input in &target.seeds {
        check(input, true, &mut report);
    }
    for _ in 0..count {
        let mut input = target.seeds[rng.random_range(0..target.seeds.len())].clone();
        mutate(&mut rng, &mut input);
        check(&input, false, &mut report);
        if report.failures.len() >= 10 {
            break;
        }
    }
    report
}

/// Fuzzes `target` and fails with every failing input's description.
fn run(target: Target) {
    quiet_panics();
    let count = inputs_per_parser();
    let started = Instant::now();
    let report = fuzz(&target, count, seed());
    println!(
        "fuzz {}: {} inputs ({} accepted) in {:.1} s, largest allocation {} bytes (input of {} \
         bytes), {} failures",
        target.name,
        report.inputs,
        report.accepted,
        started.elapsed().as_secs_f64(),
        report.peak.0,
        report.peak.1,
        report.failures.len()
    );
    assert!(
        report.failures.is_empty(),
        "fuzz {}: {} failures:\n{}",
        target.name,
        report.failures.len(),
        report.failures.join("\n")
    );
}

/// The most one byte of deflate data inflates to.
const INFLATION: usize = 1032;

/// Room for the readers' fixed buffers (a 1 MiB read buffer, a decoder's window).
const FIXED: usize = 4 << 20;

#[test]
fn svhn_mat_reader() {
    let x = |count: u32, fill: u8| {
        mat::matrix(
            "X",
            mat::MX_UINT8,
            &[32, 32, 3, count],
            mat::MI_UINT8,
            &vec![fill; 3072 * count as usize],
        )
    };
    let y = |labels: &[f64]| {
        let data: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        mat::matrix(
            "y",
            mat::MX_DOUBLE,
            &[labels.len() as u32, 1],
            mat::MI_DOUBLE,
            &data,
        )
    };
    let plain = [mat::header(), x(1, 9), y(&[3.0])].concat();
    let packed = [
        mat::header(),
        mat::compressed(&x(2, 200)),
        mat::compressed(&y(&[10.0, 1.0])),
    ]
    .concat();
    run(Target {
        name: "svhn-mat",
        seeds: vec![plain, packed],
        // The images as bytes and their items, each bounded by what the file's elements can
        // inflate to.
        bound: |len| 4 * INFLATION * len + FIXED,
        parse: Box::new(|input, dir| {
            svhn::read_file(file(dir, "train_32x32.mat", input))
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    });
}

/// The IDX files of `count` MNIST images and their labels.
fn idx_files(count: u32) -> (Vec<u8>, Vec<u8>) {
    let mut images: Vec<u8> = [2051u32, count, 28, 28]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    images.extend((0..784 * count).map(|i| (i * 7 % 256) as u8));
    let mut labels: Vec<u8> = [2049u32, count]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    labels.extend((0..count).map(|i| (i % 10) as u8));
    (images, labels)
}

/// The IDX reader on a mutated image file (`images`) or label file, the other one valid.
fn idx_target(name: &'static str, images: bool) -> Target {
    let (image_file, label_file) = idx_files(2);
    let (mutated, fixed) = if images {
        (image_file, label_file)
    } else {
        (label_file, image_file)
    };
    Target {
        name,
        seeds: vec![gzip(&mutated), mutated],
        bound: |len| 4 * INFLATION * len + 8 * 1568 + FIXED,
        parse: Box::new(move |input, dir| {
            let fuzzed = file(dir, "fuzzed-idx", input);
            let other = file(dir, "other-idx", &fixed);
            let (images, labels) = if images {
                (&fuzzed, &other)
            } else {
                (&other, &fuzzed)
            };
            mnist::read_pair(images, labels)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    }
}

#[test]
fn mnist_idx_images() {
    run(idx_target("mnist-idx-images", true));
}

#[test]
fn mnist_idx_labels() {
    run(idx_target("mnist-idx-labels", false));
}

#[test]
fn cifar10_batch_reader() {
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072u32).map(|i| (i * 13 % 256) as u8));
        r
    };
    run(Target {
        name: "cifar10-batch",
        seeds: vec![[record(3), record(9)].concat(), record(0)],
        bound: |len| 4 * len + FIXED,
        parse: Box::new(|input, dir| {
            cifar10::read_batch(file(dir, "data_batch_1.bin", input))
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    });
}

#[test]
fn digits_csv() {
    let row = |label: u32| {
        let mut fields: Vec<String> = (0..64u32).map(|i| (i * label % 17).to_string()).collect();
        fields.push(label.to_string());
        fields.join(",") + "\n"
    };
    let csv: String = (0..3).map(row).collect();
    run(Target {
        name: "digits-csv",
        seeds: vec![gzip(csv.as_bytes()), csv.into_bytes()],
        // The text, its fields and its items, from at most what the gzip data inflates to.
        bound: |len| 16 * INFLATION * len + FIXED,
        parse: Box::new(|input, dir| {
            digits::read_file(file(dir, "digits.csv", input))
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    });
}

/// `HostPacked::from_bytes` on an input framed as: the encoding (a byte: 0 for signs, `k` for
/// `k`-bit codes), the rank (a byte), the dimensions (little-endian `u64`s), the packed bytes.
/// A frame too short to hold its own dimensions is not a call.
fn host_packed(input: &[u8], _dir: &Path) -> Result<(), String> {
    let [encoding, rank, rest @ ..] = input else {
        return Ok(());
    };
    let encoding = match *encoding {
        0 => Encoding::Signs,
        k => match Bits::new(u32::from(k)) {
            Ok(bits) => Encoding::Codes(bits),
            Err(e) => return Err(e.to_string()),
        },
    };
    let rank = usize::from(*rank);
    let Some((dims, bytes)) = rest.split_at_checked(8 * rank) else {
        return Ok(());
    };
    let shape: Vec<usize> = dims
        .chunks_exact(8)
        .map(|d| u64::from_le_bytes(d.try_into().unwrap()) as usize)
        .collect();
    let packed = HostPacked::from_bytes(bytes, &shape, encoding).map_err(|e| e.to_string())?;
    // What was accepted can be used: its values and its bytes.
    let values = packed.unpack();
    assert_eq!(packed.to_bytes(), bytes, "a round trip changed the bytes");
    drop(values);
    Ok(())
}

#[test]
fn host_packed_from_bytes() {
    let frame = |shape: &[usize], encoding: Encoding, code: u8| {
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len).map(|i| (i % 5) as f32 - 2.0).collect();
        let packed = HostPacked::pack(&values, shape, encoding);
        let mut input = vec![code, shape.len() as u8];
        input.extend(shape.iter().flat_map(|&d| (d as u64).to_le_bytes()));
        input.extend(packed.to_bytes());
        input
    };
    let three = Encoding::Codes(Bits::new(3).unwrap());
    run(Target {
        name: "host-packed",
        seeds: vec![
            frame(&[3, 70], Encoding::Signs, 0),
            frame(&[2, 2, 64], Encoding::Signs, 0),
            frame(&[4, 33], three, 3),
        ],
        // The words, their values as f32 (at most 64 a word: 8 bytes) and the round trip.
        bound: |len| 48 * len + (1 << 16),
        parse: Box::new(host_packed),
    });
}

#[test]
fn packed_net_load() {
    let device = Default::default();
    let mut seeds = Vec::new();
    for config in [
        NetConfig::new(1, 8, vec![], vec![20, 12]),
        NetConfig::new(3, 8, vec![4, 8], vec![6]),
    ] {
        let net: Net<B> = config.init(&device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.bin");
        PackedNet::from_net(&net).unwrap().save(&path).unwrap();
        seeds.push(std::fs::read(&path).unwrap());
    }
    run(Target {
        name: "packed-net",
        seeds,
        // The record and the network built from it; sizes come from the record's own lengths.
        bound: |len| 64 * len + FIXED,
        parse: Box::new(move |input, dir| {
            PackedNet::<B>::load(file(dir, "net.bin", input), &device)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    });
}

#[test]
fn checkpoint_model() {
    let device = Default::default();
    let config = NetConfig::new(1, 8, vec![], vec![16]).with_classes(3);
    let recorder = AtomicFileRecorder::new(NamedMpkFileRecorder::<FullPrecisionSettings>::new());
    let dir = tempfile::tempdir().unwrap();
    let net: Net<B> = config.init(&device);
    net.clone()
        .save_file(dir.path().join("model-1"), &recorder)
        .unwrap();
    let seed = std::fs::read(dir.path().join("model-1.mpk")).unwrap();
    run(Target {
        name: "checkpoint",
        seeds: vec![seed],
        // The file, its check, the model's own record (to compare with) and the loaded one.
        bound: |len| 64 * len + FIXED,
        parse: Box::new(move |input, dir| {
            let folder = dir.join("checkpoint");
            std::fs::create_dir_all(&folder).unwrap();
            file(&folder, "model-1.mpk", input);
            load_checkpoint_model(net.clone(), dir, 1, &recorder, &device)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    });
}
