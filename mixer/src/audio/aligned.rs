//! Sample buffers that start on a cache line.
//!
//! The kernels write 16- or 32-byte vectors; a buffer from the global allocator is only
//! 16-byte aligned, so every other 32-byte store of an AVX2 kernel crossed a cache line and
//! cost two stores, and which ones did changed with where the allocator put the buffer (a
//! run-to-run difference of ~20 % in the mix bench). The mixer's own buffers (the i32 sum,
//! the shared mix, every own output, silence) are therefore [`Aligned`].

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// One 64-byte cache line of storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Plain integer sample types whose all-zero bit pattern is the value 0.
pub(crate) trait Sample: Copy + sealed::Sealed {}
impl Sample for i16 {}
impl Sample for i32 {}
mod sealed {
    pub trait Sealed {}
    impl Sealed for i16 {}
    impl Sealed for i32 {}
}

/// A fixed-length, zero-initialised slice of `T` that starts on a 64-byte boundary.
#[derive(Clone)]
pub(crate) struct Aligned<T: Sample> {
    lines: Vec<Line>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Sample> Aligned<T> {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        let bytes = len * size_of::<T>();
        Aligned {
            lines: vec![Line([0; 64]); bytes.div_ceil(64)],
            len,
            _t: PhantomData,
        }
    }
}

impl<T: Sample> Default for Aligned<T> {
    /// The empty buffer (nothing allocated).
    fn default() -> Self {
        Aligned {
            lines: Vec::new(),
            len: 0,
            _t: PhantomData,
        }
    }
}

impl<T: Sample> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `lines` holds at least `len * size_of::<T>()` initialised bytes, aligned to
        // 64 (>= align_of::<T>()), and every bit pattern is a valid `T` (i16 or i32). An
        // empty Vec's dangling pointer is aligned to 64 too, valid for a zero-length slice.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }
}

impl<T: Sample> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` gives exclusive access to the storage.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }
}

impl<T: Sample + std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aligned").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_start_on_a_cache_line_and_have_their_length() {
        for len in [0usize, 1, 31, 32, 33, 960, 1920] {
            let a = Aligned::<i16>::zeroed(len);
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&s| s == 0));
            assert_eq!(a.as_ptr() as usize % 64, 0);
            let mut b = Aligned::<i32>::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            b.fill(-7);
            assert!(b.iter().all(|&s| s == -7));
            let c = b.clone();
            assert_eq!(&c[..], &b[..]);
        }
        let e = Aligned::<i16>::default();
        assert!(e.is_empty());
    }
}
