//! Runtime selection of the SIMD instruction set used by the audio and video kernels.
//!
//! Every kernel exists as a scalar twin; the vector versions are bit-exact with it (the
//! integer parts trivially, the float parts because they perform the same IEEE-754 operations
//! in the same order, with no fused multiply-add). Property tests in `tests/simd_equivalence.rs`
//! hold the kernels to that.

/// Instruction set used by a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Portable Rust, no explicit vector intrinsics (the compiler may still auto-vectorise).
    Scalar,
    /// x86_64 SSE2 (always present on x86_64).
    Sse2,
    /// x86_64 AVX2 (detected at run time).
    Avx2,
    /// aarch64 NEON (always present on aarch64). Audio kernels only; the video scaler uses
    /// the scalar code at this level.
    Neon,
}

impl SimdLevel {
    /// The best level supported by the CPU this runs on.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return SimdLevel::Avx2;
            }
            SimdLevel::Sse2
        }
        #[cfg(target_arch = "aarch64")]
        {
            SimdLevel::Neon
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            SimdLevel::Scalar
        }
    }

    /// Whether this CPU can run kernels of this level.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Sse2 => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => true,
            _ => false,
        }
    }

    /// All levels this CPU supports, scalar first.
    pub fn all_supported() -> impl Iterator<Item = SimdLevel> {
        [
            SimdLevel::Scalar,
            SimdLevel::Sse2,
            SimdLevel::Avx2,
            SimdLevel::Neon,
        ]
        .into_iter()
        .filter(|l| l.is_supported())
    }

    /// `self` if supported, otherwise the best supported level below it.
    pub(crate) fn effective(self) -> Self {
        if self.is_supported() {
            self
        } else {
            SimdLevel::detect()
        }
    }
}
