//! The readers' memory is bounded by what a file's header promises and what the file can hold:
//! files built to make a reader allocate gigabytes (a small gzip stream inflating far past its
//! header's promise, a sparse file far longer than its header says, labels far more than the
//! images) are rejected with a typed error after a few megabytes at most.
//!
//! A binary of its own: it counts every allocation (a global allocator), and its tests run one at
//! a time.

#![cfg(feature = "data")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn_qnn::data::{DataError, cifar10, mnist, svhn};
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};

/// The system allocator, counting the bytes allocated now and the most at any time.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call goes to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the counters are the whole process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The most bytes allocated at once while `f` ran, beyond what was allocated before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = f();
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

/// What every rejection here may take: a few buffers, nothing like the gigabytes asked for.
const BOUND: usize = 8 << 20;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn idx_labels_header(count: u32) -> Vec<u8> {
    [2049u32, count]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

fn one_image() -> Vec<u8> {
    let mut out: Vec<u8> = [2051u32, 1, 28, 28]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    out.resize(16 + 784, 7);
    out
}

/// A 1 MB gzip file promising one label and inflating to 1 GiB: 1,024 gzip members of
/// 1 MiB of zeros each after the header's member (a gzip file may hold several).
#[test]
fn gzip_bomb_is_rejected_after_the_promised_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = Vec::new();
    let mut first = GzEncoder::new(Vec::new(), Compression::fast());
    first.write_all(&idx_labels_header(1)).unwrap();
    first.write_all(&[3]).unwrap();
    file.extend(first.finish().unwrap());
    let mut zeros = GzEncoder::new(Vec::new(), Compression::best());
    zeros.write_all(&vec![0u8; 1 << 20]).unwrap();
    let zeros = zeros.finish().unwrap();
    for _ in 0..1024 {
        file.extend(&zeros);
    }
    let labels = write(dir.path(), "labels.gz", &file);
    drop(file);
    let images = write(dir.path(), "images", &one_image());
    let (result, peak) = peak_of(|| mnist::read_pair(&images, &labels));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &labels),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}

/// A plain IDX file 2 GiB long (sparse) whose header promises one label is rejected on its
/// length, before it is read.
#[test]
fn long_plain_idx_file_is_rejected_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write(dir.path(), "labels", &idx_labels_header(1));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&labels)
        .unwrap()
        .set_len(1 << 31)
        .unwrap();
    let images = write(dir.path(), "images", &one_image());
    let (result, peak) = peak_of(|| mnist::read_pair(&images, &labels));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::Malformed { path, .. } if path == &labels),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}

/// A CIFAR-10 batch 2 GiB long (sparse), not a whole number of records, is rejected on its
/// length, before it is read.
#[test]
fn long_cifar10_batch_is_rejected_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "data_batch_1.bin", &[]);
    let len = cifar10::RECORD_BYTES as u64 * 700_000 + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    let (result, peak) = peak_of(|| cifar10::read_batch(&path));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::Truncated { path: p, got, .. } if p == &path && *got == len),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}

/// Labels of an SVHN file compressed to a few kilobytes but holding 32 MB of doubles (four
/// million labels for two images) are rejected on their dimensions, not inflated and converted.
#[test]
fn svhn_labels_are_bounded_by_the_images_before_inflating() {
    fn element(data_type: u32, data: &[u8]) -> Vec<u8> {
        let mut out = data_type.to_le_bytes().to_vec();
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out.resize(out.len().next_multiple_of(8), 0);
        out
    }
    fn matrix(name: &[u8; 1], class: u32, dims: &[u32], data_type: u32, data: &[u8]) -> Vec<u8> {
        let mut flags = class.to_le_bytes().to_vec();
        flags.extend(0u32.to_le_bytes());
        let dims: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        let mut content = element(6, &flags);
        content.extend(element(5, &dims));
        // The name in the small format.
        let mut small = (1u32 << 16 | 1).to_le_bytes().to_vec();
        small.extend(name);
        small.resize(8, 0);
        content.extend(small);
        content.extend(element(data_type, data));
        element(14, &content)
    }
    fn compressed(inner: &[u8]) -> Vec<u8> {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
        z.write_all(inner).unwrap();
        let z = z.finish().unwrap();
        let mut out = 15u32.to_le_bytes().to_vec();
        out.extend((z.len() as u32).to_le_bytes());
        out.extend(z);
        out
    }
    let mut file = b"MATLAB 5.0 MAT-file".to_vec();
    file.resize(124, b' ');
    file.extend(0x0100u16.to_le_bytes());
    file.extend(b"IM");
    file.extend(compressed(&matrix(b"X", 9, &[32, 32, 3, 2], 2, &[5; 6144])));
    let labels = 4_000_000;
    let y: Vec<u8> = std::iter::repeat_n(1.0f64.to_le_bytes(), labels)
        .flatten()
        .collect();
    file.extend(compressed(&matrix(b"y", 6, &[labels as u32, 1], 9, &y)));
    drop(y);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "train_32x32.mat", &file);
    drop(file);
    let (result, peak) = peak_of(|| svhn::read_file(&path));
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DataError::WrongDimensions { path: p, .. } if p == &path),
        "{error:?}"
    );
    assert!(peak < BOUND, "{peak} bytes allocated to reject the file");
}
