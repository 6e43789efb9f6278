//! Output buffers that kernels write in full without zeroing them first: a training step's
//! outputs are tens of MiB, and zeroing them only to overwrite every value cost about a tenth
//! of the step.

use std::mem::MaybeUninit;

/// A vector of `len` values, every one written by `write`, with what `write` returns. Nest
/// calls for several outputs of one kernel.
///
/// # Safety
/// `write` must initialize every element of the slice it is given (or panic: then nothing is
/// returned and nothing is read).
#[cfg(any(feature = "ndarray", feature = "flex"))]
pub(crate) unsafe fn written<T, R>(
    len: usize,
    write: impl FnOnce(&mut [MaybeUninit<T>]) -> R,
) -> (Vec<T>, R) {
    let mut values = Vec::with_capacity(len);
    let result = write(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: the first `len` elements were initialized by `write` (the caller's promise).
    unsafe { values.set_len(len) };
    (values, result)
}

/// `values` as slots to write.
///
/// # Safety
/// Only initialized values may be written through the result (never `MaybeUninit::uninit()`),
/// so that `values` stays initialized.
pub(crate) unsafe fn as_slots<T>(values: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout; the caller writes only initialized values.
    unsafe { &mut *(values as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// Writes `src` into the slots `dst` (one copy, as `copy_from_slice` does for initialized
/// values).
///
/// # Panics
/// If the lengths differ.
pub(crate) fn write_all<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "write_all: lengths");
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, both slices hold `src.len()` values, and a
    // shared and a mutable borrow cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<T>(), src.len());
    }
}

/// Writes 0 to every slot of `dst` and hands the values back, initialized.
pub(crate) fn write_zeros<T: Copy + Default>(dst: &mut [MaybeUninit<T>]) -> &mut [T] {
    dst.fill(MaybeUninit::new(T::default()));
    // SAFETY: every slot was just written.
    unsafe { assume_written(dst) }
}

/// The slots `written` as the values they hold.
///
/// # Safety
/// Every slot of `written` must have been written.
pub(crate) unsafe fn assume_written<T>(written: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and every slot holds a value (the caller).
    unsafe { &mut *(written as *mut [MaybeUninit<T>] as *mut [T]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_values_come_back_in_order() {
        // SAFETY: the closure writes every slot.
        let (values, count) = unsafe {
            written(5, |slots| {
                for (i, slot) in slots.iter_mut().enumerate() {
                    slot.write(i as f32 * 1.5);
                }
                slots.len()
            })
        };
        assert_eq!((values, count), (vec![0.0, 1.5, 3.0, 4.5, 6.0], 5));
    }

    #[test]
    fn write_zeros_initializes_every_slot() {
        // SAFETY: `write_zeros` writes every slot.
        let (values, sum) = unsafe {
            written(3, |slots| {
                let values = write_zeros(slots);
                values[1] = 2.0f32;
                values.iter().sum::<f32>()
            })
        };
        assert_eq!((values, sum), (vec![0.0, 2.0, 0.0], 2.0));
    }

    #[test]
    fn write_all_copies_every_value() {
        // SAFETY: `write_all` writes every slot.
        let (values, ()) = unsafe { written(4, |slots| write_all(slots, &[1.0, -2.0, 3.5, 0.0])) };
        assert_eq!(values, [1.0, -2.0, 3.5, 0.0]);
    }
}
