//! Rayon's thread pool, set up for a training loop: an opt-in setting for programs that train
//! on the CPU.
//!
//! The crate's CPU kernels (and burn-ndarray's own parallel operations) run on rayon's global
//! thread pool, one worker per core by default. A training loop runs on a thread of its own,
//! usually `main`, which is not one of those workers: every parallel operation it starts is
//! handed over to the pool, the loop's thread sleeps while the workers run it, and the
//! workers, asleep during the loop's serial work (the autodiff graph, small tensor operations),
//! have to be woken first. A step of the paper's networks starts a few hundred such
//! operations. [`use_this_thread`] makes the loop's thread one of the pool's workers instead:
//! each parallel operation starts on it at once, with one worker fewer to wake, and the
//! process runs one thread per core instead of one more than that.

/// The error of [`use_this_thread`]: rayon's global pool could not be built with the calling
/// thread in it, most often because something already ran in parallel (the pool starts on
/// first use and cannot be rebuilt).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot make this thread one of rayon's workers (call `burn_qnn::threads::use_this_thread` \
     before anything runs in parallel): {0}"
)]
pub struct UseThisThreadError(#[from] rayon::ThreadPoolBuildError);

/// Starts rayon's global thread pool with the calling thread as one of its workers (worker 0)
/// and returns the pool's number of threads: rayon's default, one per core, or
/// `RAYON_NUM_THREADS` where set, the calling thread included.
///
/// Call it once, first thing, from the thread that runs the training loop (for burn-train's
/// single-device `SupervisedTraining::launch`, the thread that calls `launch`). Work stays
/// the same; only where it runs changes: on the paper's CIFAR-10 network at width 0.25 the
/// step on `NdArray` took about a tenth less time (see `BENCHMARKS.md`). The thread keeps
/// running its own code as before; it runs the pool's jobs only while it waits inside a
/// parallel operation, so jobs other threads hand to the pool go to the other workers.
///
/// # Errors
/// [`UseThisThreadError`] if rayon's global pool is already running (anything in the process
/// ran in parallel before) or its threads cannot be started. Nothing changes then: the
/// program runs as it would without the call.
///
/// ```no_run
/// // First thing in `main`, before any tensor operation.
/// match burn_qnn::threads::use_this_thread() {
///     Ok(threads) => println!("training on {threads} threads"),
///     Err(e) => eprintln!("warning: {e}"),
/// }
/// ```
pub fn use_this_thread() -> Result<usize, UseThisThreadError> {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()?;
    Ok(rayon::current_num_threads())
}
