//! Reading a record's tensors on another thread while training goes on, safely on `Fusion`.
//!
//! burn-train's file checkpointer hands each epoch's records to threads of its own, which read
//! their tensors while the training thread goes on. Until the optimizer's next step replaces
//! them, those tensors are the model's and the optimizer's own. On Burn 0.21's `Fusion`
//! backends (`burn::backend::Wgpu`, `burn::backend::Cuda`) a read that races with the step
//! consuming the same tensor panics ("Should have handle for tensor"): the reading thread
//! gives up its reference before the device has read the tensor, and the step, then holding
//! the last one, frees it or writes over it.
//!
//! [`exclusively`] keeps the two apart: [`super::AtomicFileRecorder`] reads records inside it,
//! and the crate's optimizer wrappers ([`super::ClipLatentWeights`], [`super::TrackFlips`])
//! step inside it.

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

/// Held while a record's tensors are read or an optimizer steps.
static TENSOR_ACCESS: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`TENSOR_ACCESS`] (an optimizer wrapping another steps
    /// inside the outer one's hold).
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`HELD`] when dropped, also on a panic.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        HELD.set(false);
    }
}

/// Runs `f` while no record is read and no optimizer steps on another thread. Re-entrant on
/// one thread; a panic in `f` leaves the lock usable.
pub(crate) fn exclusively<T>(f: impl FnOnce() -> T) -> T {
    if HELD.get() {
        return f();
    }
    let _lock = TENSOR_ACCESS.lock().unwrap_or_else(PoisonError::into_inner);
    HELD.set(true);
    let _release = Release;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn nested_holds_do_not_deadlock() {
        assert_eq!(exclusively(|| exclusively(|| 7)), 7);
        assert!(!HELD.get(), "released after the outer hold");
    }

    #[test]
    fn other_threads_wait_for_the_hold() {
        let holding = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = exclusively(|| {
                holding.store(true, Ordering::SeqCst);
                // Without the lock the other thread would enter now and see `true`.
                let waiter = s.spawn(|| exclusively(|| holding.load(Ordering::SeqCst)));
                std::thread::sleep(Duration::from_millis(100));
                holding.store(false, Ordering::SeqCst);
                waiter
            });
            assert!(
                !waiter.join().unwrap(),
                "the other thread entered during the hold"
            );
        });
    }

    #[test]
    fn a_panic_releases_the_hold() {
        let caught = std::panic::catch_unwind(|| exclusively(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(!HELD.get());
        assert_eq!(std::thread::spawn(|| exclusively(|| 1)).join().unwrap(), 1);
    }
}
