//! Zeroed buffers that start on a cache line, for tile operands.

/// One 64-byte cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zeroed buffer that starts on a cache line, seen as `u16` (bf16), `u32` (bf16 pairs) or
/// `f32` values: tile rows laid out on 64-byte boundaries load fastest.
pub(super) struct Lines(Vec<Line>);

impl Lines {
    /// At least `bytes` zero bytes.
    pub(super) fn zeros(bytes: usize) -> Self {
        Self(vec![Line([0; 64]); bytes.div_ceil(64)])
    }

    /// The lines as values of `T`.
    pub(super) fn view<T: Plain>(&self) -> &[T] {
        // SAFETY: `T` is a plain number type (`Plain`) of alignment at most 64, every bit
        // pattern is a valid `T`, and the lines hold `64 / size_of::<T>()` of them each.
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 64 / size_of::<T>())
        }
    }

    /// The lines as values of `T`, to write.
    pub(super) fn view_mut<T: Plain>(&mut self) -> &mut [T] {
        // SAFETY: as in `view`; the view borrows the lines mutably.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.0.as_mut_ptr().cast(),
                self.0.len() * 64 / size_of::<T>(),
            )
        }
    }
}

/// Number types any bit pattern of which is a value: what [`Lines`] may be seen as.
pub(super) trait Plain: Copy {}
impl Plain for u16 {}
impl Plain for u32 {}
impl Plain for f32 {}
