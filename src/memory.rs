//! The process's allocator, tuned for training loops: an opt-in setting for programs that train
//! on the CPU.
//!
//! A training step on a CPU backend allocates and frees the same large tensors every step
//! (activations and gradients of a few to tens of MiB). With glibc's default malloc, freed
//! memory above a threshold goes back to the operating system, and the next step's tensors
//! fault their pages in again, each page zeroed by the kernel: on the paper's CIFAR-10 network
//! at width 0.25 that was about a seventh of the step (see `BENCHMARKS.md`).
//! [`keep_freed_memory`] asks malloc to keep freed memory for reuse instead.

/// The largest threshold glibc accepts for serving a request with its own `mmap`
/// (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit targets): requests up to it come from the heap, so
/// their memory is reused once freed.
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Asks the C allocator to keep freed memory for reuse: requests up to [`MMAP_THRESHOLD`]
/// (32 MiB) are served from the heap, and freed memory at the heap's top is never given back to
/// the operating system. Returns whether the setting was applied: `true` on Linux with glibc
/// (whose `mallopt` accepted both values), `false` elsewhere, where nothing changes.
///
/// This is process-wide and lasts until the process exits; call it once, early, from a program
/// (not from a library). The process then keeps the peak of its heap in use instead of giving
/// memory back between steps. The same setting without code:
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647`.
///
/// ```
/// let applied = burn_qnn::memory::keep_freed_memory();
/// assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        // glibc's malloc.h: M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        let mmap = c_int::try_from(MMAP_THRESHOLD).expect("32 MiB fits a C int");
        // SAFETY: mallopt only changes malloc's parameters (it takes the arena locks itself);
        // it reads and writes no memory of ours. It returns 1 where it accepted the value.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, mmap) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of this thread so far (`/proc/thread-self/stat`, field 10).
    fn minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
        // The fields after the command name (in parentheses, which may hold spaces).
        let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
            .split(' ')
            .collect();
        fields[7].parse().expect("minflt")
    }

    /// Touches every page of a new 16 MiB buffer, then frees it.
    fn touch_and_free() {
        let mut buffer = vec![0u8; 16 << 20];
        for page in buffer.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&buffer);
    }

    #[test]
    fn a_freed_buffer_comes_back_without_page_faults() {
        assert!(keep_freed_memory(), "glibc accepts the settings");
        touch_and_free();
        let before = minor_faults();
        touch_and_free();
        let faults = minor_faults() - before;
        // 4,096 pages of 4 KiB: all of them would fault in again from a fresh mapping.
        assert!(
            faults < 256,
            "{faults} page faults for a reused 16 MiB buffer"
        );
    }
}
