//! Zeroed buffers that start on a cache line, for tile operands, kept per thread between
//! calls: a training step asks for the same few buffers in every layer, and fresh memory from
//! the operating system costs a page fault per 4 KiB on first touch.

use std::cell::RefCell;

/// One 64-byte cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zeroed buffer that starts on a cache line, seen as `i8` (int8 operands), `u16` (bf16),
/// `u32` (bf16 pairs) or `f32` values: a tile loads about three times faster from rows that
/// start on cache lines than from rows that straddle two. Dropped, it goes back to its thread's
/// spare buffers.
pub(crate) struct Lines(Vec<Line>);

/// Spare buffers a thread keeps.
const SPARES: usize = 8;

thread_local! {
    /// This thread's spare buffers.
    static SPARE: RefCell<Vec<Vec<Line>>> = const { RefCell::new(Vec::new()) };
}

impl Lines {
    /// At least `bytes` zero bytes: the smallest spare buffer of this thread that holds them,
    /// zeroed, or a new one.
    pub(crate) fn zeros(bytes: usize) -> Self {
        let lines = bytes.div_ceil(64);
        let spare = SPARE.with_borrow_mut(|spare| {
            let fits = spare
                .iter()
                .enumerate()
                .filter(|(_, buffer)| buffer.capacity() >= lines)
                .min_by_key(|(_, buffer)| buffer.capacity())
                .map(|(at, _)| at)?;
            Some(spare.swap_remove(fits))
        });
        let mut buffer = spare.unwrap_or_else(|| Vec::with_capacity(lines));
        buffer.clear();
        buffer.resize(lines, Line([0; 64]));
        Self(buffer)
    }

    /// The lines as values of `T`.
    pub(crate) fn view<T: Plain>(&self) -> &[T] {
        // SAFETY: `T` is a plain number type (`Plain`) of alignment at most 64, every bit
        // pattern is a valid `T`, and the lines hold `64 / size_of::<T>()` of them each.
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 64 / size_of::<T>())
        }
    }

    /// The lines as values of `T`, to write.
    pub(crate) fn view_mut<T: Plain>(&mut self) -> &mut [T] {
        // SAFETY: as in `view`; the view borrows the lines mutably.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.0.as_mut_ptr().cast(),
                self.0.len() * 64 / size_of::<T>(),
            )
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        // A thread being torn down has no spares to keep.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            spare.push(buffer);
            if spare.len() > SPARES {
                let smallest = (0..spare.len())
                    .min_by_key(|&at| spare[at].capacity())
                    .expect("not empty");
                spare.swap_remove(smallest);
            }
        });
    }
}

/// Number types any bit pattern of which is a value: what [`Lines`] may be seen as.
pub(crate) trait Plain: Copy {}
impl Plain for i8 {}
impl Plain for u16 {}
impl Plain for u32 {}
impl Plain for f32 {}
