//! The system allocator, counting the bytes allocated now and the most at any time, installed
//! as the test binary's global allocator: [`peak_of`] measures what a call allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator with counters updated around each call.
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

/// Holds the measurement lock: while it lives, [`Measure::peak_of`] counts only this thread's
/// work (no other measuring test runs).
pub struct Measure(#[allow(unused)] std::sync::MutexGuard<'static, ()>);

impl Measure {
    /// Takes the measurement lock (waiting for another test's measurements to end).
    pub fn start() -> Self {
        Self(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The most bytes allocated at once while `f` ran, beyond what was allocated before.
    pub fn peak_of<T>(&self, f: impl FnOnce() -> T) -> (T, usize) {
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let result = f();
        (result, PEAK.load(Ordering::Relaxed).saturating_sub(before))
    }
}

/// The most bytes allocated at once while `f` ran, beyond what was allocated before (one
/// measurement at a time).
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    Measure::start().peak_of(f)
}
