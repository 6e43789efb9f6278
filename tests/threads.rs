//! `burn_qnn::threads::use_this_thread`: a binary of its own, since it sets up rayon's global
//! thread pool, which a process starts once.

use std::collections::HashSet;
use std::thread::{self, ThreadId};

use rayon::prelude::*;

/// The threads that ran the items of a parallel loop started on this thread.
fn threads_of_a_parallel_loop() -> HashSet<ThreadId> {
    (0..4096)
        .into_par_iter()
        .map(|_| thread::current().id())
        .collect()
}

#[test]
fn the_calling_thread_becomes_a_worker_and_runs_parallel_work() {
    let me = thread::current().id();
    // Before: a thread outside the pool hands its parallel loops over and only waits. (This
    // starts no pool: the loop runs on a pool of its own.)
    let outside = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a local pool");
    assert!(!outside.install(threads_of_a_parallel_loop).contains(&me));

    let threads = burn_qnn::threads::use_this_thread().expect("the global pool is not started");
    let expected = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
    assert_eq!(
        threads, expected,
        "one worker per core, this thread included"
    );
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert_eq!(rayon::current_num_threads(), threads);
    // A parallel loop started here runs (in part) on this thread.
    assert!(threads_of_a_parallel_loop().contains(&me));

    // The pool starts once: a second call says so, and changes nothing.
    let again = burn_qnn::threads::use_this_thread().expect_err("the pool is running");
    assert!(
        again.to_string().contains("use_this_thread"),
        "the error names the call to move: {again}"
    );
    assert_eq!(rayon::current_thread_index(), Some(0));
}
