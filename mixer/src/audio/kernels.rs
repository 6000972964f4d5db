//! Per-sample audio kernels: energy, weighted accumulation and the output stage (N-1
//! subtraction, gain ramp, soft-knee limiter, rounding to i16).
//!
//! Each kernel has a scalar twin and SSE2/AVX2 versions that produce bit-identical results:
//! - integer parts (energy, accumulation, subtraction, peak) are exact in every version;
//! - the float output stage performs the same IEEE-754 single-precision operations in the
//!   same order in every version (convert, multiply, add, divide, copysign, round half to
//!   even), never fused, so the results are identical.
//!
//! Safety argument for the `unsafe` blocks: the vector functions are only called through the
//! dispatchers below after [`SimdLevel::effective`] confirmed the CPU has the feature, and every
//! unaligned load/store reads or writes `[i, i + LANES)` with `i + LANES <= len` of a slice of
//! at least `len` elements (the loop conditions), so all accesses are in bounds.

use crate::simd::SimdLevel;

/// Start of the soft knee: below this magnitude the limiter is transparent.
pub(crate) const KNEE: f32 = 24576.0;
/// Headroom above the knee: outputs approach `KNEE + KNEE_RANGE = 32767` asymptotically.
pub(crate) const KNEE_RANGE: f32 = 8191.0;
/// Unity gain in the Q12 fixed-point input gain.
pub(crate) const UNITY_Q12: i32 = 4096;

/// A linear gain ramp over one frame: sample `n` is multiplied by `g0 + step * n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ramp {
    pub g0: f32,
    pub step: f32,
}

impl Ramp {
    pub const UNITY: Ramp = Ramp { g0: 1.0, step: 0.0 };

    /// Gain 1 on every sample.
    pub fn is_unity(self) -> bool {
        self.g0 == 1.0 && self.step == 0.0
    }
}

/// Sum of squares of `x` (exact).
pub(crate) fn energy(level: SimdLevel, x: &[i16]) -> u64 {
    match level.effective() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `effective` confirmed AVX2 is available.
        SimdLevel::Avx2 => unsafe { x86::energy_avx2(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86_64 baseline.
        SimdLevel::Sse2 => unsafe { x86::energy_sse2(x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline.
        SimdLevel::Neon => unsafe { neon::energy_neon(x) },
        _ => energy_scalar(x),
    }
}

/// `acc[n] += (x[n] * gain_q12) >> 12` for `n < min(acc.len(), x.len())`.
/// `gain_q12` must be in `0..=32767`.
pub(crate) fn accumulate(level: SimdLevel, acc: &mut [i32], x: &[i16], gain_q12: i32) {
    let gain_q12 = gain_q12.clamp(0, i16::MAX as i32);
    match level.effective() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `effective` confirmed AVX2 is available.
        SimdLevel::Avx2 => unsafe { x86::accumulate_avx2(acc, x, gain_q12) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86_64 baseline.
        SimdLevel::Sse2 => unsafe { x86::accumulate_sse2(acc, x, gain_q12) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline.
        SimdLevel::Neon => unsafe { neon::accumulate_neon(acc, x, gain_q12) },
        _ => accumulate_scalar(acc, x, gain_q12),
    }
}

/// Sources summed per pass by the vector `sum` kernels.
pub(crate) const SUM_GROUP: usize = 4;

/// Sums talkers in one pass per group of [`SUM_GROUP`]: with `assign`, `acc` is first
/// cleared; then `acc[n] += (x[n] * g) >> 12` for every `(x, g)` in `srcs` and
/// `n < min(acc.len(), x.len())`. Exactly `acc.fill(0)` (if `assign`) followed by
/// [`accumulate`] per source, which is what the scalar twin does; the vector versions keep
/// the running sum of a block in registers (one store per block instead of a read-modify-write
/// per source, and no separate clearing pass).
pub(crate) fn sum(level: SimdLevel, acc: &mut [i32], srcs: &[(&[i16], i32)], assign: bool) {
    let level = level.effective();
    if level == SimdLevel::Scalar {
        return sum_scalar(acc, srcs, assign);
    }
    if srcs.is_empty() && assign {
        acc.fill(0);
    }
    for (j, chunk) in srcs.chunks(SUM_GROUP).enumerate() {
        let mut group: [(&[i16], i32); SUM_GROUP] = [(&[], 0); SUM_GROUP];
        for (g, &(x, gain)) in group.iter_mut().zip(chunk) {
            *g = (x, gain.clamp(0, i16::MAX as i32));
        }
        let group = &group[..chunk.len()];
        let assign = assign && j == 0;
        match level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `effective` confirmed AVX2 is available.
            SimdLevel::Avx2 => unsafe { x86::sum_avx2(acc, group, assign) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            SimdLevel::Sse2 => unsafe { x86::sum_sse2(acc, group, assign) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is part of the aarch64 baseline.
            SimdLevel::Neon => unsafe { neon::sum_neon(acc, group, assign) },
            _ => sum_scalar(acc, group, assign),
        }
    }
}

pub(crate) fn sum_scalar(acc: &mut [i32], srcs: &[(&[i16], i32)], assign: bool) {
    if assign {
        acc.fill(0);
    }
    for &(x, g) in srcs {
        accumulate_scalar(acc, x, g.clamp(0, i16::MAX as i32));
    }
}

/// Calls `$f::<N, GAIN>(acc, &group, assign)` for the group's source count `N` (1..=4) and
/// whether any gain needs a multiply, so that the per-source loop is unrolled; returns the
/// number of samples done (the rest is the scalar tail).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! by_count {
    ($f:ident, $acc:expr, $g:expr, $assign:expr) => {
        match ($g.n, $g.unity) {
            (1, true) => $f::<1, false>($acc, $g, $assign),
            (1, false) => $f::<1, true>($acc, $g, $assign),
            (2, true) => $f::<2, false>($acc, $g, $assign),
            (2, false) => $f::<2, true>($acc, $g, $assign),
            (3, true) => $f::<3, false>($acc, $g, $assign),
            (3, false) => $f::<3, true>($acc, $g, $assign),
            (4, true) => $f::<4, false>($acc, $g, $assign),
            (4, false) => $f::<4, true>($acc, $g, $assign),
            _ => 0,
        }
    };
}

/// Calls `$f::<K, ...>` for the source count `K` (0..=4) so that the per-source loops unroll;
/// `[...]` are further const arguments after `K`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! by_sources {
    ($f:ident [$($c:expr),*], $srcs:expr, $len:expr, $shared:expr, $owns:expr, $peaks:expr) => {
        match $srcs.len() {
            0 => $f::<0 $(, { $c })*>($srcs, $len, $shared, $owns, $peaks),
            1 => $f::<1 $(, { $c })*>($srcs, $len, $shared, $owns, $peaks),
            2 => $f::<2 $(, { $c })*>($srcs, $len, $shared, $owns, $peaks),
            3 => $f::<3 $(, { $c })*>($srcs, $len, $shared, $owns, $peaks),
            _ => $f::<4 $(, { $c })*>($srcs, $len, $shared, $owns, $peaks),
        }
    };
}

/// The sources' pointers and the own outputs' (null for an absent one), for the vector
/// one-pass kernels.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn onepass_ptrs<const K: usize>(
    srcs: &[&[i16]],
    owns: &mut [&mut [i16]],
) -> ([*const i16; K], [*mut i16; K]) {
    let p = std::array::from_fn(|k| srcs[k].as_ptr());
    let o = std::array::from_fn(|k| {
        if owns[k].is_empty() {
            std::ptr::null_mut()
        } else {
            owns[k].as_mut_ptr()
        }
    });
    (p, o)
}

/// The common length of `acc` and every source, the sources' pointers and gains (at most
/// [`SUM_GROUP`]) and the scalar tail after the first `i` samples.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct Group<'a> {
    len: usize,
    n: usize,
    /// Every gain is unity (no multiplies).
    unity: bool,
    ptr: [*const i16; SUM_GROUP],
    gain: [i32; SUM_GROUP],
    srcs: &'a [(&'a [i16], i32)],
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl<'a> Group<'a> {
    fn new(acc_len: usize, srcs: &'a [(&'a [i16], i32)]) -> Self {
        let n = srcs.len().min(SUM_GROUP);
        let mut g = Group {
            len: acc_len,
            n,
            unity: true,
            ptr: [std::ptr::null(); SUM_GROUP],
            gain: [0; SUM_GROUP],
            srcs: &srcs[..n],
        };
        for (k, &(x, gain)) in g.srcs.iter().enumerate() {
            g.len = g.len.min(x.len());
            g.ptr[k] = x.as_ptr();
            g.gain[k] = gain;
            g.unity &= gain == UNITY_Q12;
        }
        g
    }

    /// Samples `i..` (`i <= len`) with the scalar twin.
    fn tail(&self, acc: &mut [i32], i: usize, assign: bool) {
        let mut rest: [(&[i16], i32); SUM_GROUP] = [(&[], 0); SUM_GROUP];
        for (r, &(x, g)) in rest.iter_mut().zip(self.srcs) {
            *r = (&x[i..], g);
        }
        sum_scalar(&mut acc[i..], &rest[..self.n], assign);
    }
}

/// Output stage. For every sample `v = acc[n] - own(n)` where `own(n) = (x[n] * g) >> 12`
/// when `own = Some((x, g))`; writes `limit(v * (g0 + step * n))` to `out[n]` and returns
/// `max |v|`. Processes `min` of the slice lengths.
pub(crate) fn render(
    level: SimdLevel,
    acc: &[i32],
    own: Option<(&[i16], i32)>,
    ramp: Ramp,
    out: &mut [i16],
) -> u32 {
    let own = own.map(|(x, g)| (x, g.clamp(0, i16::MAX as i32)));
    match level.effective() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `effective` confirmed AVX2 is available.
        SimdLevel::Avx2 => unsafe { x86::render_avx2(acc, own, ramp, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86_64 baseline.
        SimdLevel::Sse2 => unsafe { x86::render_sse2(acc, own, ramp, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline.
        SimdLevel::Neon => unsafe { neon::render_neon(acc, own, ramp, out) },
        _ => render_scalar(acc, own, ramp, out, 0),
    }
}

/// Most talkers the one-pass renderer ([`onepass`]) takes.
pub(crate) const ONEPASS_MAX: usize = 4;

/// One pass over up to [`ONEPASS_MAX`] talkers' frames at unity gains (input gains and output
/// ramps all unity), for the common case where nothing needs limiting: writes the shared mix
/// (the sum of all `srcs`) to `shared` and, for each `k` whose `owns[k]` is not empty, talker
/// `k`'s N-1 mix (the sum of the others) to `owns[k]`; `peaks[k]` gets that output's peak
/// `max |v|`. `owns` and `peaks` have one entry per source. Processes the common length of
/// `shared` and the sources; a non-empty `owns[k]` must be at least that long.
///
/// Exactly what [`sum`] and a unity [`render`] produce, whenever no sample goes beyond the
/// knee: returns `None` (nothing valid) if a sample of the shared mix or of a partial sum of
/// the first `j` sources (`2 <= j < srcs.len()`) is beyond [`KNEE`], otherwise the shared
/// mix's peak; an own output whose peak is beyond `KNEE` is not valid either (render it with
/// [`render`]). Within the knee everything fits in i16, so the vector versions sum and
/// subtract with saturating i16 arithmetic (16 samples per AVX2 register instead of 8 i32)
/// and every own output is one subtraction from the shared block in registers.
pub(crate) fn onepass(
    level: SimdLevel,
    srcs: &[&[i16]],
    shared: &mut [i16],
    owns: &mut [&mut [i16]],
    peaks: &mut [u32],
) -> Option<u32> {
    assert!(srcs.len() <= ONEPASS_MAX && owns.len() == srcs.len() && peaks.len() == srcs.len());
    let len = srcs.iter().fold(shared.len(), |l, x| l.min(x.len()));
    for o in owns.iter() {
        assert!(o.is_empty() || o.len() >= len, "own output too short");
    }
    let shared = &mut shared[..len];
    match level.effective() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `effective` confirmed AVX2 is available; lengths checked above.
        SimdLevel::Avx2 => unsafe { x86::onepass_avx2(srcs, len, shared, owns, peaks) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86_64 baseline; lengths checked above.
        SimdLevel::Sse2 => unsafe { x86::onepass_sse2(srcs, len, shared, owns, peaks) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline; lengths checked above.
        SimdLevel::Neon => unsafe { neon::onepass_neon(srcs, len, shared, owns, peaks) },
        _ => onepass_scalar(srcs, shared, owns, peaks, 0, 0, [0; ONEPASS_MAX]),
    }
}

/// The scalar twin of [`onepass`], from sample `start` (the vector versions finish their
/// tails, or just their result, with it, passing their partial peaks: `shared_peak` and
/// `own_peaks`). Straightforward i32 arithmetic: the sum of the sources, the
/// partial sums checked against the knee, each own output as the sum minus the source.
#[inline]
pub(crate) fn onepass_scalar(
    srcs: &[&[i16]],
    shared: &mut [i16],
    owns: &mut [&mut [i16]],
    peaks: &mut [u32],
    start: usize,
    shared_peak: u32,
    own_peaks: [u32; ONEPASS_MAX],
) -> Option<u32> {
    // No samples left (the vector versions' usual end: 960 is a whole number of blocks):
    // only the result, inlined into them.
    let (peak, own_peak) = if start < shared.len() {
        onepass_scalar_samples(srcs, shared, owns, start, shared_peak, own_peaks)?
    } else {
        (shared_peak, own_peaks)
    };
    if peak > KNEE as u32 {
        return None;
    }
    peaks.copy_from_slice(&own_peak[..srcs.len()]);
    Some(peak)
}

/// The samples of [`onepass_scalar`] from `start`: the shared and own peaks so far, `None`
/// as soon as a partial sum or the shared mix is beyond the knee.
#[inline(never)]
fn onepass_scalar_samples(
    srcs: &[&[i16]],
    shared: &mut [i16],
    owns: &mut [&mut [i16]],
    start: usize,
    shared_peak: u32,
    own_peaks: [u32; ONEPASS_MAX],
) -> Option<(u32, [u32; ONEPASS_MAX])> {
    let k = srcs.len();
    let mut peak = shared_peak;
    let mut own_peak = own_peaks;
    for n in start..shared.len() {
        let mut v = 0i32;
        for (j, x) in srcs.iter().enumerate() {
            v += x[n] as i32;
            if j >= 1 && j + 1 < k && v.unsigned_abs() > KNEE as u32 {
                return None;
            }
        }
        peak = peak.max(v.unsigned_abs());
        if peak > KNEE as u32 {
            return None;
        }
        shared[n] = v as i16;
        for (j, (x, o)) in srcs.iter().zip(owns.iter_mut()).enumerate() {
            if !o.is_empty() {
                let w = v - x[n] as i32;
                own_peak[j] = own_peak[j].max(w.unsigned_abs());
                // Beyond the knee the output is invalid anyway (the caller renders it again).
                o[n] = w.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            }
        }
    }
    Some((peak, own_peak))
}

pub(crate) fn energy_scalar(x: &[i16]) -> u64 {
    x.iter().map(|&s| (s as i32 * s as i32) as u32 as u64).sum()
}

pub(crate) fn accumulate_scalar(acc: &mut [i32], x: &[i16], gain_q12: i32) {
    if gain_q12 == UNITY_Q12 {
        for (a, &s) in acc.iter_mut().zip(x) {
            *a += s as i32;
        }
    } else {
        for (a, &s) in acc.iter_mut().zip(x) {
            *a += (s as i32 * gain_q12) >> 12;
        }
    }
}

/// The limiter curve and rounding for one sample; the reference the vector code matches.
#[inline(always)]
fn shape(v: i32, ramp: Ramp, n: usize) -> i16 {
    let g = ramp.g0 + ramp.step * (n as f32);
    let y = (v as f32) * g;
    let a = y.abs();
    let comp = if a > KNEE {
        let over = a - KNEE;
        KNEE + over * KNEE_RANGE / (over + KNEE_RANGE)
    } else {
        a
    };
    // |comp| <= 32767 by construction, so the cast never saturates.
    comp.copysign(y).round_ties_even() as i16
}

/// Scalar output stage starting at sample index `start` (the vector versions use it for
/// their tails, so the ramp index stays global).
pub(crate) fn render_scalar(
    acc: &[i32],
    own: Option<(&[i16], i32)>,
    ramp: Ramp,
    out: &mut [i16],
    start: usize,
) -> u32 {
    let len = acc.len().min(out.len());
    let unity = ramp.step == 0.0 && ramp.g0 == 1.0;
    let mut peak = 0u32;
    let mut put = |n: usize, v: i32| {
        let a = v.unsigned_abs();
        peak = peak.max(a);
        // At unity gain a sample within the knee comes out unchanged (same as `shape`).
        out[n] = if unity && a <= KNEE as u32 {
            v as i16
        } else {
            shape(v, ramp, n)
        };
    };
    match own {
        Some((x, g)) => {
            for n in start..len.min(x.len()) {
                put(n, acc[n] - ((x[n] as i32 * g) >> 12));
            }
        }
        None => {
            for (n, &v) in acc.iter().enumerate().take(len).skip(start) {
                put(n, v);
            }
        }
    }
    peak
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{KNEE, KNEE_RANGE, Ramp, UNITY_Q12, render_scalar};

    /// `|s| + KNEE_BIAS >= 0x8000` (unsigned) iff `|s| > KNEE`.
    const KNEE_BIAS: i16 = (0x8000 - KNEE as i32 - 1) as i16;
    use std::arch::x86_64::*;

    /// Folds the lane sums of the energy kernels: every `pmaddwd` lane is a sum of two
    /// squares (<= 2^31) that the kernels add, as the low or high half of a u64 lane, into
    /// `total` (so it holds `sum(lo) + 2^32 * sum(hi)` modulo 2^64) while `high` collects
    /// `sum(hi)`. The energy is `sum(lo) + sum(hi) = total - (2^32 - 1) * high`, exact modulo
    /// 2^64 and therefore exact.
    fn fold_energy(total: &[u64], high: &[u64]) -> u64 {
        let t = total.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        let h = high.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        t.wrapping_sub(h.wrapping_mul(0xFFFF_FFFF))
    }

    /// 32 samples per iteration in two independent accumulator pairs; four vector operations
    /// per 16 samples (multiply-add, shift, two adds).
    #[target_feature(enable = "avx2")]
    pub(super) fn energy_avx2(x: &[i16]) -> u64 {
        let len = x.len();
        let p = x.as_ptr() as *const __m256i;
        let (mut t0, mut t1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let (mut h0, mut h1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut i = 0;
        while i + 32 <= len {
            // SAFETY: reads x[i..i + 32], in bounds by the loop condition.
            let (v0, v1) = unsafe {
                (
                    _mm256_loadu_si256(p.add(i / 16)),
                    _mm256_loadu_si256(p.add(i / 16 + 1)),
                )
            };
            let s0 = _mm256_madd_epi16(v0, v0);
            let s1 = _mm256_madd_epi16(v1, v1);
            t0 = _mm256_add_epi64(t0, s0);
            h0 = _mm256_add_epi64(h0, _mm256_srli_epi64::<32>(s0));
            t1 = _mm256_add_epi64(t1, s1);
            h1 = _mm256_add_epi64(h1, _mm256_srli_epi64::<32>(s1));
            i += 32;
        }
        if i + 16 <= len {
            // SAFETY: reads x[i..i + 16], in bounds by the condition.
            let v = unsafe { _mm256_loadu_si256(p.add(i / 16)) };
            let s = _mm256_madd_epi16(v, v);
            t0 = _mm256_add_epi64(t0, s);
            h0 = _mm256_add_epi64(h0, _mm256_srli_epi64::<32>(s));
            i += 16;
        }
        let (mut t, mut h) = ([0u64; 4], [0u64; 4]);
        // SAFETY: `t` and `h` are 32 bytes each.
        unsafe {
            _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, _mm256_add_epi64(t0, t1));
            _mm256_storeu_si256(h.as_mut_ptr() as *mut __m256i, _mm256_add_epi64(h0, h1));
        }
        fold_energy(&t, &h).wrapping_add(super::energy_scalar(&x[i..]))
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn energy_sse2(x: &[i16]) -> u64 {
        let len = x.len();
        let p = x.as_ptr() as *const __m128i;
        let (mut t0, mut t1) = (_mm_setzero_si128(), _mm_setzero_si128());
        let (mut h0, mut h1) = (_mm_setzero_si128(), _mm_setzero_si128());
        let mut i = 0;
        while i + 16 <= len {
            // SAFETY: reads x[i..i + 16], in bounds by the loop condition.
            let (v0, v1) = unsafe {
                (
                    _mm_loadu_si128(p.add(i / 8)),
                    _mm_loadu_si128(p.add(i / 8 + 1)),
                )
            };
            let s0 = _mm_madd_epi16(v0, v0);
            let s1 = _mm_madd_epi16(v1, v1);
            t0 = _mm_add_epi64(t0, s0);
            h0 = _mm_add_epi64(h0, _mm_srli_epi64::<32>(s0));
            t1 = _mm_add_epi64(t1, s1);
            h1 = _mm_add_epi64(h1, _mm_srli_epi64::<32>(s1));
            i += 16;
        }
        if i + 8 <= len {
            // SAFETY: reads x[i..i + 8], in bounds by the condition.
            let v = unsafe { _mm_loadu_si128(p.add(i / 8)) };
            let s = _mm_madd_epi16(v, v);
            t0 = _mm_add_epi64(t0, s);
            h0 = _mm_add_epi64(h0, _mm_srli_epi64::<32>(s));
            i += 8;
        }
        let (mut t, mut h) = ([0u64; 2], [0u64; 2]);
        // SAFETY: `t` and `h` are 16 bytes each.
        unsafe {
            _mm_storeu_si128(t.as_mut_ptr() as *mut __m128i, _mm_add_epi64(t0, t1));
            _mm_storeu_si128(h.as_mut_ptr() as *mut __m128i, _mm_add_epi64(h0, h1));
        }
        fold_energy(&t, &h).wrapping_add(super::energy_scalar(&x[i..]))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn accumulate_avx2(acc: &mut [i32], x: &[i16], gain_q12: i32) {
        let len = acc.len().min(x.len());
        let g = _mm256_set1_epi32(gain_q12);
        let mut i = 0;
        if gain_q12 == UNITY_Q12 {
            while i + 8 <= len {
                // SAFETY: x[i..i + 8] and acc[i..i + 8] are in bounds by the loop condition.
                unsafe {
                    let s =
                        _mm256_cvtepi16_epi32(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
                    let p = acc.as_mut_ptr().add(i) as *mut __m256i;
                    _mm256_storeu_si256(p, _mm256_add_epi32(_mm256_loadu_si256(p), s));
                }
                i += 8;
            }
        } else {
            while i + 8 <= len {
                // SAFETY: as above.
                unsafe {
                    let s =
                        _mm256_cvtepi16_epi32(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
                    let c = _mm256_srai_epi32::<12>(_mm256_mullo_epi32(s, g));
                    let p = acc.as_mut_ptr().add(i) as *mut __m256i;
                    _mm256_storeu_si256(p, _mm256_add_epi32(_mm256_loadu_si256(p), c));
                }
                i += 8;
            }
        }
        super::accumulate_scalar(&mut acc[i..len], &x[i..len], gain_q12);
    }

    /// Eight samples per iteration: the group's `N` contributions (unrolled; multiplied only
    /// when `GAIN`, since `(x * 4096) >> 12 == x`) are added in registers and the block is
    /// stored once. Returns the samples done.
    #[target_feature(enable = "avx2")]
    fn sum_n_avx2<const N: usize, const GAIN: bool>(
        acc: &mut [i32],
        g: &super::Group<'_>,
        assign: bool,
    ) -> usize {
        let gv: [__m256i; N] = std::array::from_fn(|k| _mm256_set1_epi32(g.gain[k]));
        let p: [*const i16; N] = std::array::from_fn(|k| g.ptr[k]);
        let mut i = 0;
        while i + 8 <= g.len {
            // SAFETY: acc[i..i + 8] and every source's [i..i + 8] are in bounds (`g.len` is
            // the minimum of the lengths).
            unsafe {
                let pa = acc.as_mut_ptr().add(i) as *mut __m256i;
                let mut s = if assign {
                    _mm256_setzero_si256()
                } else {
                    _mm256_loadu_si256(pa)
                };
                for k in 0..N {
                    let x = _mm_loadu_si128(p[k].add(i) as *const __m128i);
                    let mut c = _mm256_cvtepi16_epi32(x);
                    if GAIN {
                        c = _mm256_srai_epi32::<12>(_mm256_mullo_epi32(c, gv[k]));
                    }
                    s = _mm256_add_epi32(s, c);
                }
                _mm256_storeu_si256(pa, s);
            }
            i += 8;
        }
        i
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn sum_avx2(acc: &mut [i32], srcs: &[(&[i16], i32)], assign: bool) {
        let g = super::Group::new(acc.len(), srcs);
        let i = by_count!(sum_n_avx2, acc, &g, assign);
        g.tail(acc, i, assign);
    }

    #[target_feature(enable = "sse2")]
    fn sum_n_sse2<const N: usize, const GAIN: bool>(
        acc: &mut [i32],
        g: &super::Group<'_>,
        assign: bool,
    ) -> usize {
        let gv: [__m128i; N] = std::array::from_fn(|k| _mm_set1_epi16(g.gain[k] as i16));
        let p: [*const i16; N] = std::array::from_fn(|k| g.ptr[k]);
        let mut i = 0;
        while i + 8 <= g.len {
            // SAFETY: acc[i..i + 8] and every source's [i..i + 8] are in bounds (`g.len` is
            // the minimum of the lengths).
            unsafe {
                let pa = acc.as_mut_ptr().add(i) as *mut __m128i;
                let (mut s0, mut s1) = if assign {
                    (_mm_setzero_si128(), _mm_setzero_si128())
                } else {
                    (_mm_loadu_si128(pa), _mm_loadu_si128(pa.add(1)))
                };
                for k in 0..N {
                    let x = _mm_loadu_si128(p[k].add(i) as *const __m128i);
                    let (c0, c1) = if GAIN {
                        let (p0, p1) = mul_widen_sse2(x, gv[k]);
                        (_mm_srai_epi32::<12>(p0), _mm_srai_epi32::<12>(p1))
                    } else {
                        widen_sse2(x)
                    };
                    s0 = _mm_add_epi32(s0, c0);
                    s1 = _mm_add_epi32(s1, c1);
                }
                _mm_storeu_si128(pa, s0);
                _mm_storeu_si128(pa.add(1), s1);
            }
            i += 8;
        }
        i
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn sum_sse2(acc: &mut [i32], srcs: &[(&[i16], i32)], assign: bool) {
        let g = super::Group::new(acc.len(), srcs);
        let i = by_count!(sum_n_sse2, acc, &g, assign);
        g.tail(acc, i, assign);
    }

    /// i16 x i16 -> two vectors of four i32 products (elements 0..4 and 4..8).
    #[target_feature(enable = "sse2")]
    fn mul_widen_sse2(s: __m128i, g: __m128i) -> (__m128i, __m128i) {
        let lo = _mm_mullo_epi16(s, g);
        let hi = _mm_mulhi_epi16(s, g);
        (_mm_unpacklo_epi16(lo, hi), _mm_unpackhi_epi16(lo, hi))
    }

    /// Sign-extends eight i16 to two vectors of four i32.
    #[target_feature(enable = "sse2")]
    fn widen_sse2(s: __m128i) -> (__m128i, __m128i) {
        (
            _mm_srai_epi32::<16>(_mm_unpacklo_epi16(s, s)),
            _mm_srai_epi32::<16>(_mm_unpackhi_epi16(s, s)),
        )
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn accumulate_sse2(acc: &mut [i32], x: &[i16], gain_q12: i32) {
        let len = acc.len().min(x.len());
        let g = _mm_set1_epi16(gain_q12 as i16);
        let unity = gain_q12 == UNITY_Q12;
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: x[i..i + 8] and acc[i..i + 8] are in bounds by the loop condition.
            unsafe {
                let s = _mm_loadu_si128(x.as_ptr().add(i) as *const __m128i);
                let (c0, c1) = if unity {
                    widen_sse2(s)
                } else {
                    let (p0, p1) = mul_widen_sse2(s, g);
                    (_mm_srai_epi32::<12>(p0), _mm_srai_epi32::<12>(p1))
                };
                let p = acc.as_mut_ptr().add(i) as *mut __m128i;
                _mm_storeu_si128(p, _mm_add_epi32(_mm_loadu_si128(p), c0));
                let p = p.add(1);
                _mm_storeu_si128(p, _mm_add_epi32(_mm_loadu_si128(p), c1));
            }
            i += 8;
        }
        super::accumulate_scalar(&mut acc[i..len], &x[i..len], gain_q12);
    }

    /// See `super::onepass`; `len` is the common length (checked by the dispatcher).
    #[target_feature(enable = "avx2")]
    pub(super) fn onepass_avx2(
        srcs: &[&[i16]],
        len: usize,
        shared: &mut [i16],
        owns: &mut [&mut [i16]],
        peaks: &mut [u32],
    ) -> Option<u32> {
        // Every own output present (the usual case): no per-block test for the absent ones.
        if owns.iter().all(|o| !o.is_empty()) {
            by_sources!(onepass_k_avx2[true], srcs, len, shared, owns, peaks)
        } else {
            by_sources!(onepass_k_avx2[false], srcs, len, shared, owns, peaks)
        }
    }

    /// Sixteen samples per iteration in i16: the saturating sum of the `K` sources (partial
    /// sums and the shared mix tracked by their largest magnitude; a saturated sum is beyond
    /// the knee), then each own output as a saturating subtraction from it. `ALL`: every own
    /// output is present.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn onepass_k_avx2<const K: usize, const ALL: bool>(
        srcs: &[&[i16]],
        len: usize,
        shared: &mut [i16],
        owns: &mut [&mut [i16]],
        peaks: &mut [u32],
    ) -> Option<u32> {
        let (p, o) = super::onepass_ptrs::<K>(srcs, owns);
        let mut over = _mm256_setzero_si256();
        let mut peak = _mm256_setzero_si256();
        let mut own_peak = [_mm256_setzero_si256(); K];
        let mut i = 0;
        while i + 16 <= len {
            // SAFETY: every source, `shared` and every non-null own output hold at least
            // `len >= i + 16` samples (the dispatcher's checks).
            unsafe {
                let x: [__m256i; K] =
                    std::array::from_fn(|k| _mm256_loadu_si256(p[k].add(i) as *const __m256i));
                let mut t = if K == 0 { _mm256_setzero_si256() } else { x[0] };
                for (j, &xj) in x.iter().enumerate().skip(1) {
                    t = _mm256_adds_epi16(t, xj);
                    if j + 1 < K {
                        over = _mm256_max_epu16(over, _mm256_abs_epi16(t));
                    }
                }
                peak = _mm256_max_epu16(peak, _mm256_abs_epi16(t));
                _mm256_storeu_si256(shared.as_mut_ptr().add(i) as *mut __m256i, t);
                for k in 0..K {
                    if ALL || !o[k].is_null() {
                        let w = _mm256_subs_epi16(t, x[k]);
                        own_peak[k] = _mm256_max_epu16(own_peak[k], _mm256_abs_epi16(w));
                        _mm256_storeu_si256(o[k].add(i) as *mut __m256i, w);
                    }
                }
            }
            i += 16;
        }
        let hmax = |v: __m256i| hmax_epu16_avx2(v);
        if hmax(over) > KNEE as u32 {
            return None;
        }
        let mut own = [0u32; super::ONEPASS_MAX];
        for k in 0..K {
            own[k] = hmax(own_peak[k]);
        }
        super::onepass_scalar(srcs, &mut shared[..len], owns, peaks, i, hmax(peak), own)
    }

    /// The largest of sixteen u16 lanes: `phminposuw` finds the smallest of their complements.
    #[target_feature(enable = "avx2")]
    fn hmax_epu16_avx2(v: __m256i) -> u32 {
        let m = _mm_max_epu16(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let ones = _mm_set1_epi16(-1);
        0xFFFF - (_mm_cvtsi128_si32(_mm_minpos_epu16(_mm_xor_si128(m, ones))) as u32 & 0xFFFF)
    }

    /// See `super::onepass`.
    #[target_feature(enable = "sse2")]
    pub(super) fn onepass_sse2(
        srcs: &[&[i16]],
        len: usize,
        shared: &mut [i16],
        owns: &mut [&mut [i16]],
        peaks: &mut [u32],
    ) -> Option<u32> {
        by_sources!(onepass_k_sse2[], srcs, len, shared, owns, peaks)
    }

    /// Eight samples per iteration, like `onepass_k_avx2`. SSE2 has no `pabsw`/`pmaxuw`: the
    /// magnitude is `max(t, 0 -sat t)` (so -32768 reads 32767, still beyond the knee) and
    /// the maxima are signed.
    #[target_feature(enable = "sse2")]
    fn onepass_k_sse2<const K: usize>(
        srcs: &[&[i16]],
        len: usize,
        shared: &mut [i16],
        owns: &mut [&mut [i16]],
        peaks: &mut [u32],
    ) -> Option<u32> {
        let (p, o) = super::onepass_ptrs::<K>(srcs, owns);
        let zero = _mm_setzero_si128();
        let abs = |v: __m128i| _mm_max_epi16(v, _mm_subs_epi16(zero, v));
        let mut over = zero;
        let mut peak = zero;
        let mut own_peak = [zero; K];
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: as in `onepass_k_avx2`, with `len >= i + 8`.
            unsafe {
                let x: [__m128i; K] =
                    std::array::from_fn(|k| _mm_loadu_si128(p[k].add(i) as *const __m128i));
                let mut t = if K == 0 { zero } else { x[0] };
                for (j, &xj) in x.iter().enumerate().skip(1) {
                    t = _mm_adds_epi16(t, xj);
                    if j + 1 < K {
                        over = _mm_max_epi16(over, abs(t));
                    }
                }
                peak = _mm_max_epi16(peak, abs(t));
                _mm_storeu_si128(shared.as_mut_ptr().add(i) as *mut __m128i, t);
                for k in 0..K {
                    if !o[k].is_null() {
                        let w = _mm_subs_epi16(t, x[k]);
                        own_peak[k] = _mm_max_epi16(own_peak[k], abs(w));
                        _mm_storeu_si128(o[k].add(i) as *mut __m128i, w);
                    }
                }
            }
            i += 8;
        }
        let hmax = |v: __m128i| -> u32 {
            let mut lanes = [0i16; 8];
            // SAFETY: `lanes` is 16 bytes.
            unsafe { _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, v) };
            lanes.iter().map(|&l| l as u32).max().unwrap_or(0)
        };
        if hmax(over) > KNEE as u32 {
            return None;
        }
        let mut own = [0u32; super::ONEPASS_MAX];
        for k in 0..K {
            own[k] = hmax(own_peak[k]);
        }
        super::onepass_scalar(srcs, &mut shared[..len], owns, peaks, i, hmax(peak), own)
    }

    /// The limiter on eight lanes; same operation order as `super::shape`. With `constant`
    /// (a zero ramp step) the gain is `g0`, which equals `g0 + 0 * n` exactly.
    #[target_feature(enable = "avx2")]
    fn shape_avx2(v: __m256i, g0: __m256, step: __m256, nf: __m256, constant: bool) -> __m256i {
        let g = if constant {
            g0
        } else {
            _mm256_add_ps(g0, _mm256_mul_ps(step, nf))
        };
        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(v), g);
        let sign = _mm256_set1_ps(-0.0);
        let a = _mm256_andnot_ps(sign, y);
        let knee = _mm256_set1_ps(KNEE);
        let over_mask = _mm256_cmp_ps::<_CMP_GT_OQ>(a, knee);
        let comp = if _mm256_movemask_ps(over_mask) == 0 {
            a
        } else {
            let range = _mm256_set1_ps(KNEE_RANGE);
            let over = _mm256_sub_ps(a, knee);
            let soft = _mm256_add_ps(
                knee,
                _mm256_div_ps(_mm256_mul_ps(over, range), _mm256_add_ps(over, range)),
            );
            _mm256_blendv_ps(a, soft, over_mask)
        };
        let signed = _mm256_or_ps(comp, _mm256_and_ps(y, sign));
        _mm256_cvtps_epi32(signed)
    }

    /// `acc[i..i + 16]` minus the own contribution, as two vectors of eight i32.
    ///
    /// # Safety
    /// `acc[i..i + 16]` and (with `own`) `x[i..i + 16]` must be in bounds.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load_n1_avx2(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        i: usize,
    ) -> (__m256i, __m256i) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let pa = acc.as_ptr().add(i) as *const __m256i;
            let mut v0 = _mm256_loadu_si256(pa);
            let mut v1 = _mm256_loadu_si256(pa.add(1));
            if let Some((x, g)) = own {
                let px = x.as_ptr().add(i) as *const __m128i;
                let mut c0 = _mm256_cvtepi16_epi32(_mm_loadu_si128(px));
                let mut c1 = _mm256_cvtepi16_epi32(_mm_loadu_si128(px.add(1)));
                if g != UNITY_Q12 {
                    let gv = _mm256_set1_epi32(g);
                    c0 = _mm256_srai_epi32::<12>(_mm256_mullo_epi32(c0, gv));
                    c1 = _mm256_srai_epi32::<12>(_mm256_mullo_epi32(c1, gv));
                }
                v0 = _mm256_sub_epi32(v0, c0);
                v1 = _mm256_sub_epi32(v1, c1);
            }
            (v0, v1)
        }
    }

    /// Sixteen samples per iteration, in one of two loops. At unity gain (the common case) a
    /// block whose samples are all within the knee is passed through in integer arithmetic,
    /// which is exactly what the float path computes for it; the knee test and the peak of
    /// such blocks use the saturated i16 samples (a sample beyond i16 stays beyond the knee).
    #[target_feature(enable = "avx2")]
    pub(super) fn render_avx2(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        ramp: Ramp,
        out: &mut [i16],
    ) -> u32 {
        let mut len = acc.len().min(out.len());
        if let Some((x, _)) = own {
            len = len.min(x.len());
        }
        let constant = ramp.step == 0.0;
        let unity = constant && ramp.g0 == 1.0;
        let g0 = _mm256_set1_ps(ramp.g0);
        let step = _mm256_set1_ps(ramp.step);
        // Peak of the pass-through blocks (|v| <= KNEE, exact in u16) and of the others.
        let mut peak16 = _mm256_setzero_si256();
        let mut peak = _mm256_setzero_si256();
        let mut i = 0;
        if unity {
            // |s| + KNEE_BIAS has its top bit set (unsigned saturating add) iff |s| > KNEE.
            let knee_bias = _mm256_set1_epi16(KNEE_BIAS);
            let top = _mm256_set1_epi16(i16::MIN);
            let zero = _mm256_setzero_ps();
            while i + 16 <= len {
                // SAFETY: acc[i..i + 16], x[i..i + 16] and out[i..i + 16] are in bounds (loop
                // condition, `len` is the minimum of the lengths).
                unsafe {
                    let (v0, v1) = load_n1_avx2(acc, own, i);
                    let sat = _mm256_packs_epi32(v0, v1);
                    let a = _mm256_abs_epi16(sat);
                    let packed = if _mm256_testz_si256(_mm256_adds_epu16(a, knee_bias), top) == 1 {
                        peak16 = _mm256_max_epu16(peak16, a);
                        sat
                    } else {
                        let m = _mm256_max_epu32(_mm256_abs_epi32(v0), _mm256_abs_epi32(v1));
                        peak = _mm256_max_epu32(peak, m);
                        _mm256_packs_epi32(
                            shape_avx2(v0, g0, zero, zero, true),
                            shape_avx2(v1, g0, zero, zero, true),
                        )
                    };
                    // packs interleaves 128-bit lanes: restore sample order.
                    let r = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
                    _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, r);
                }
                i += 16;
            }
        } else if constant {
            (i, peak) = render_gain_avx2::<false>(acc, own, g0, step, out, len);
        } else {
            (i, peak) = render_gain_avx2::<true>(acc, own, g0, step, out, len);
        }
        let mut lanes = [0u32; 8];
        let mut lanes16 = [0u16; 16];
        // SAFETY: `lanes` and `lanes16` are 32 bytes.
        unsafe {
            _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, peak);
            _mm256_storeu_si256(lanes16.as_mut_ptr() as *mut __m256i, peak16);
        }
        let tail = if i < len {
            render_scalar(&acc[..len], own, ramp, &mut out[..len], i)
        } else {
            0
        };
        let tail = lanes16.iter().map(|&p| p as u32).fold(tail, u32::max);
        lanes.iter().copied().fold(tail, u32::max)
    }

    /// The output stage with a gain (constant, or a ramp when `RAMP`): per sample the gain,
    /// the product and its rounding (`shape`'s operations up to the knee); a block whose
    /// rounded samples are all within the knee is done, which is exact: `|round(y)| <= KNEE`
    /// means `|y| <= KNEE + 0.5`, where the soft knee moves `y` by less than it takes to
    /// change the rounding. Only a block with a sample beyond (or a product beyond i32, which
    /// converts to `i32::MIN`) goes through the knee formula. Returns the samples done and
    /// the peak lanes.
    #[target_feature(enable = "avx2")]
    fn render_gain_avx2<const RAMP: bool>(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        g0: __m256,
        step: __m256,
        out: &mut [i16],
        len: usize,
    ) -> (usize, __m256i) {
        let knee_bias = _mm256_set1_epi16(KNEE_BIAS);
        let top = _mm256_set1_epi16(i16::MIN);
        // Sample indices as floats, stepped by 16.0 (exact below 2^24).
        let mut n0 = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
        let mut n1 = _mm256_add_ps(n0, _mm256_set1_ps(8.0));
        let sixteen = _mm256_set1_ps(16.0);
        let mut peak = _mm256_setzero_si256();
        let mut i = 0;
        while i + 16 <= len {
            // SAFETY: acc[i..i + 16], x[i..i + 16] and out[i..i + 16] are in bounds (loop
            // condition, `len` is the minimum of the lengths).
            unsafe {
                let (v0, v1) = load_n1_avx2(acc, own, i);
                let m = _mm256_max_epu32(_mm256_abs_epi32(v0), _mm256_abs_epi32(v1));
                peak = _mm256_max_epu32(peak, m);
                let (ga, gb) = if RAMP {
                    (
                        _mm256_add_ps(g0, _mm256_mul_ps(step, n0)),
                        _mm256_add_ps(g0, _mm256_mul_ps(step, n1)),
                    )
                } else {
                    (g0, g0)
                };
                let r0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(v0), ga));
                let r1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(v1), gb));
                let mut packed = _mm256_packs_epi32(r0, r1);
                let a = _mm256_abs_epi16(packed);
                if _mm256_testz_si256(_mm256_adds_epu16(a, knee_bias), top) == 0 {
                    packed = _mm256_packs_epi32(
                        shape_avx2(v0, g0, step, n0, !RAMP),
                        shape_avx2(v1, g0, step, n1, !RAMP),
                    );
                }
                // packs interleaves 128-bit lanes: restore sample order.
                let r = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
                _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, r);
            }
            if RAMP {
                n0 = _mm256_add_ps(n0, sixteen);
                n1 = _mm256_add_ps(n1, sixteen);
            }
            i += 16;
        }
        (i, peak)
    }

    /// The limiter on four lanes; same operation order as `super::shape`.
    #[target_feature(enable = "sse2")]
    fn shape_sse2(v: __m128i, g0: __m128, step: __m128, nf: __m128, constant: bool) -> __m128i {
        let g = if constant {
            g0
        } else {
            _mm_add_ps(g0, _mm_mul_ps(step, nf))
        };
        let y = _mm_mul_ps(_mm_cvtepi32_ps(v), g);
        let sign = _mm_set1_ps(-0.0);
        let a = _mm_andnot_ps(sign, y);
        let knee = _mm_set1_ps(KNEE);
        let over_mask = _mm_cmpgt_ps(a, knee);
        let comp = if _mm_movemask_ps(over_mask) == 0 {
            a
        } else {
            let range = _mm_set1_ps(KNEE_RANGE);
            let over = _mm_sub_ps(a, knee);
            let soft = _mm_add_ps(
                knee,
                _mm_div_ps(_mm_mul_ps(over, range), _mm_add_ps(over, range)),
            );
            _mm_or_ps(_mm_and_ps(over_mask, soft), _mm_andnot_ps(over_mask, a))
        };
        let signed = _mm_or_ps(comp, _mm_and_ps(y, sign));
        _mm_cvtps_epi32(signed)
    }

    /// Eight samples per iteration, like `render_gain_avx2` (the knee test on the saturated
    /// i16 magnitude `max(s, 0 -sat s)`, which reads -32768 as 32767: beyond the knee).
    #[target_feature(enable = "sse2")]
    fn render_gain_sse2<const RAMP: bool>(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        g0: __m128,
        step: __m128,
        out: &mut [i16],
        len: usize,
    ) -> (usize, __m128i) {
        let knee16 = _mm_set1_epi16(KNEE as i16);
        let zero = _mm_setzero_si128();
        let mut n0 = _mm_setr_ps(0.0, 1.0, 2.0, 3.0);
        let mut n1 = _mm_add_ps(n0, _mm_set1_ps(4.0));
        let eight = _mm_set1_ps(8.0);
        let mut peak = zero;
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: acc[i..i + 8], x[i..i + 8] and out[i..i + 8] are in bounds (loop
            // condition, `len` is the minimum of the lengths).
            unsafe {
                let (v0, v1) = load_n1_sse2(acc, own, i);
                peak = max_sse2(peak, max_sse2(abs_sse2(v0), abs_sse2(v1)));
                let (ga, gb) = if RAMP {
                    (
                        _mm_add_ps(g0, _mm_mul_ps(step, n0)),
                        _mm_add_ps(g0, _mm_mul_ps(step, n1)),
                    )
                } else {
                    (g0, g0)
                };
                let r0 = _mm_cvtps_epi32(_mm_mul_ps(_mm_cvtepi32_ps(v0), ga));
                let r1 = _mm_cvtps_epi32(_mm_mul_ps(_mm_cvtepi32_ps(v1), gb));
                let mut packed = _mm_packs_epi32(r0, r1);
                let a = _mm_max_epi16(packed, _mm_subs_epi16(zero, packed));
                if _mm_movemask_epi8(_mm_cmpgt_epi16(a, knee16)) != 0 {
                    packed = _mm_packs_epi32(
                        shape_sse2(v0, g0, step, n0, !RAMP),
                        shape_sse2(v1, g0, step, n1, !RAMP),
                    );
                }
                _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, packed);
            }
            if RAMP {
                n0 = _mm_add_ps(n0, eight);
                n1 = _mm_add_ps(n1, eight);
            }
            i += 8;
        }
        (i, peak)
    }

    /// |v| for i32 lanes whose magnitude is below 2^31 (SSE2 has no pabsd).
    #[target_feature(enable = "sse2")]
    fn abs_sse2(v: __m128i) -> __m128i {
        let s = _mm_srai_epi32::<31>(v);
        _mm_sub_epi32(_mm_xor_si128(v, s), s)
    }

    /// max for non-negative i32 lanes (SSE2 has no pmaxsd/pmaxud).
    #[target_feature(enable = "sse2")]
    fn max_sse2(a: __m128i, b: __m128i) -> __m128i {
        let m = _mm_cmpgt_epi32(a, b);
        _mm_or_si128(_mm_and_si128(m, a), _mm_andnot_si128(m, b))
    }

    /// `acc[i..i + 8]` minus the own contribution, as two vectors of four i32.
    ///
    /// # Safety
    /// `acc[i..i + 8]` and (with `own`) `x[i..i + 8]` must be in bounds.
    #[target_feature(enable = "sse2")]
    #[inline]
    unsafe fn load_n1_sse2(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        i: usize,
    ) -> (__m128i, __m128i) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let pa = acc.as_ptr().add(i) as *const __m128i;
            let mut v0 = _mm_loadu_si128(pa);
            let mut v1 = _mm_loadu_si128(pa.add(1));
            if let Some((x, g)) = own {
                let s = _mm_loadu_si128(x.as_ptr().add(i) as *const __m128i);
                let (c0, c1) = if g == UNITY_Q12 {
                    widen_sse2(s)
                } else {
                    let (p0, p1) = mul_widen_sse2(s, _mm_set1_epi16(g as i16));
                    (_mm_srai_epi32::<12>(p0), _mm_srai_epi32::<12>(p1))
                };
                v0 = _mm_sub_epi32(v0, c0);
                v1 = _mm_sub_epi32(v1, c1);
            }
            (v0, v1)
        }
    }

    /// Eight samples per iteration, in one of two loops like `render_avx2`.
    #[target_feature(enable = "sse2")]
    pub(super) fn render_sse2(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        ramp: Ramp,
        out: &mut [i16],
    ) -> u32 {
        let mut len = acc.len().min(out.len());
        if let Some((x, _)) = own {
            len = len.min(x.len());
        }
        let constant = ramp.step == 0.0;
        let unity = constant && ramp.g0 == 1.0;
        let g0 = _mm_set1_ps(ramp.g0);
        let step = _mm_set1_ps(ramp.step);
        // Peak of the pass-through blocks (|v| <= KNEE, exact in i16) and of the others.
        let mut peak16 = _mm_setzero_si128();
        let mut peak = _mm_setzero_si128();
        let mut i = 0;
        if unity {
            let knee16 = _mm_set1_epi16(KNEE as i16);
            let zero = _mm_setzero_si128();
            let zf = _mm_setzero_ps();
            while i + 8 <= len {
                // SAFETY: acc[i..i + 8], x[i..i + 8] and out[i..i + 8] are in bounds (loop
                // condition, `len` is the minimum of the lengths).
                unsafe {
                    let (v0, v1) = load_n1_sse2(acc, own, i);
                    // Saturating pack, then |s| saturating (-32768 -> 32767): a sample
                    // beyond the i16 range stays beyond the knee.
                    let sat = _mm_packs_epi32(v0, v1);
                    let a = _mm_max_epi16(sat, _mm_subs_epi16(zero, sat));
                    let packed = if _mm_movemask_epi8(_mm_cmpgt_epi16(a, knee16)) == 0 {
                        peak16 = _mm_max_epi16(peak16, a);
                        sat
                    } else {
                        peak = max_sse2(peak, max_sse2(abs_sse2(v0), abs_sse2(v1)));
                        _mm_packs_epi32(
                            shape_sse2(v0, g0, zf, zf, true),
                            shape_sse2(v1, g0, zf, zf, true),
                        )
                    };
                    _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, packed);
                }
                i += 8;
            }
        } else if constant {
            (i, peak) = render_gain_sse2::<false>(acc, own, g0, step, out, len);
        } else {
            (i, peak) = render_gain_sse2::<true>(acc, own, g0, step, out, len);
        }
        let mut lanes = [0u32; 4];
        let mut lanes16 = [0i16; 8];
        // SAFETY: `lanes` and `lanes16` are 16 bytes.
        unsafe {
            _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, peak);
            _mm_storeu_si128(lanes16.as_mut_ptr() as *mut __m128i, peak16);
        }
        let tail = if i < len {
            render_scalar(&acc[..len], own, ramp, &mut out[..len], i)
        } else {
            0
        };
        let tail = lanes16.iter().map(|&p| p as u32).fold(tail, u32::max);
        lanes.iter().copied().fold(tail, u32::max)
    }
}

/// aarch64 NEON (part of the aarch64 baseline, so always available there). Same structure
/// as the x86 kernels: exact integer energy and accumulation; the output stage passes
/// in-knee blocks through at unity gain and otherwise performs `shape`'s float operations
/// in the same order (separate multiply and add, never fused; `fcvtns` rounds half to even).
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{KNEE, KNEE_RANGE, Ramp, UNITY_Q12, render_scalar};
    use std::arch::aarch64::*;

    /// 16 samples per iteration: `smull` squares (<= 2^30 each), a pair of them added in
    /// u32 (<= 2^31), then pairwise widening accumulation into u64 lanes.
    #[target_feature(enable = "neon")]
    pub(super) fn energy_neon(x: &[i16]) -> u64 {
        let len = x.len();
        let p = x.as_ptr();
        let (mut a0, mut a1) = (vdupq_n_u64(0), vdupq_n_u64(0));
        let mut i = 0;
        while i + 16 <= len {
            // SAFETY: reads x[i..i + 16], in bounds by the loop condition.
            let (v0, v1) = unsafe { (vld1q_s16(p.add(i)), vld1q_s16(p.add(i + 8))) };
            let q0 = vaddq_u32(
                vreinterpretq_u32_s32(vmull_s16(vget_low_s16(v0), vget_low_s16(v0))),
                vreinterpretq_u32_s32(vmull_high_s16(v0, v0)),
            );
            let q1 = vaddq_u32(
                vreinterpretq_u32_s32(vmull_s16(vget_low_s16(v1), vget_low_s16(v1))),
                vreinterpretq_u32_s32(vmull_high_s16(v1, v1)),
            );
            a0 = vpadalq_u32(a0, q0);
            a1 = vpadalq_u32(a1, q1);
            i += 16;
        }
        vaddvq_u64(vaddq_u64(a0, a1)) + super::energy_scalar(&x[i..])
    }

    #[target_feature(enable = "neon")]
    pub(super) fn accumulate_neon(acc: &mut [i32], x: &[i16], gain_q12: i32) {
        let len = acc.len().min(x.len());
        let g = gain_q12 as i16;
        let unity = gain_q12 == UNITY_Q12;
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: x[i..i + 8] and acc[i..i + 8] are in bounds by the loop condition.
            unsafe {
                let s = vld1q_s16(x.as_ptr().add(i));
                let (c0, c1) = if unity {
                    (vmovl_s16(vget_low_s16(s)), vmovl_high_s16(s))
                } else {
                    (
                        vshrq_n_s32::<12>(vmull_n_s16(vget_low_s16(s), g)),
                        vshrq_n_s32::<12>(vmull_high_n_s16(s, g)),
                    )
                };
                let pa = acc.as_mut_ptr().add(i);
                vst1q_s32(pa, vaddq_s32(vld1q_s32(pa), c0));
                vst1q_s32(pa.add(4), vaddq_s32(vld1q_s32(pa.add(4)), c1));
            }
            i += 8;
        }
        super::accumulate_scalar(&mut acc[i..len], &x[i..len], gain_q12);
    }

    #[target_feature(enable = "neon")]
    fn sum_n_neon<const N: usize, const GAIN: bool>(
        acc: &mut [i32],
        g: &super::Group<'_>,
        assign: bool,
    ) -> usize {
        let gain: [i16; N] = std::array::from_fn(|k| g.gain[k] as i16);
        let p: [*const i16; N] = std::array::from_fn(|k| g.ptr[k]);
        let mut i = 0;
        while i + 8 <= g.len {
            // SAFETY: acc[i..i + 8] and every source's [i..i + 8] are in bounds (`g.len` is
            // the minimum of the lengths).
            unsafe {
                let pa = acc.as_mut_ptr().add(i);
                let (mut s0, mut s1) = if assign {
                    (vdupq_n_s32(0), vdupq_n_s32(0))
                } else {
                    (vld1q_s32(pa), vld1q_s32(pa.add(4)))
                };
                for k in 0..N {
                    let x = vld1q_s16(p[k].add(i));
                    let (c0, c1) = if GAIN {
                        (
                            vshrq_n_s32::<12>(vmull_n_s16(vget_low_s16(x), gain[k])),
                            vshrq_n_s32::<12>(vmull_high_n_s16(x, gain[k])),
                        )
                    } else {
                        (vmovl_s16(vget_low_s16(x)), vmovl_high_s16(x))
                    };
                    s0 = vaddq_s32(s0, c0);
                    s1 = vaddq_s32(s1, c1);
                }
                vst1q_s32(pa, s0);
                vst1q_s32(pa.add(4), s1);
            }
            i += 8;
        }
        i
    }

    #[target_feature(enable = "neon")]
    pub(super) fn sum_neon(acc: &mut [i32], srcs: &[(&[i16], i32)], assign: bool) {
        let g = super::Group::new(acc.len(), srcs);
        let i = by_count!(sum_n_neon, acc, &g, assign);
        g.tail(acc, i, assign);
    }

    /// See `super::onepass`.
    #[target_feature(enable = "neon")]
    pub(super) fn onepass_neon(
        srcs: &[&[i16]],
        len: usize,
        shared: &mut [i16],
        owns: &mut [&mut [i16]],
        peaks: &mut [u32],
    ) -> Option<u32> {
        by_sources!(onepass_k_neon[], srcs, len, shared, owns, peaks)
    }

    /// Eight samples per iteration, like the x86 versions: saturating i16 sum (`sqadd`),
    /// own outputs by `sqsub`, magnitudes by `sqabs` (-32768 reads 32767, beyond the knee).
    #[target_feature(enable = "neon")]
    fn onepass_k_neon<const K: usize>(
        srcs: &[&[i16]],
        len: usize,
        shared: &mut [i16],
        owns: &mut [&mut [i16]],
        peaks: &mut [u32],
    ) -> Option<u32> {
        let (p, o) = super::onepass_ptrs::<K>(srcs, owns);
        let mut over = vdupq_n_s16(0);
        let mut peak = vdupq_n_s16(0);
        let mut own_peak = [vdupq_n_s16(0); K];
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: every source, `shared` and every non-null own output hold at least
            // `len >= i + 8` samples (the dispatcher's checks).
            unsafe {
                let x: [int16x8_t; K] = std::array::from_fn(|k| vld1q_s16(p[k].add(i)));
                let mut t = if K == 0 { vdupq_n_s16(0) } else { x[0] };
                for (j, &xj) in x.iter().enumerate().skip(1) {
                    t = vqaddq_s16(t, xj);
                    if j + 1 < K {
                        over = vmaxq_s16(over, vqabsq_s16(t));
                    }
                }
                peak = vmaxq_s16(peak, vqabsq_s16(t));
                vst1q_s16(shared.as_mut_ptr().add(i), t);
                for k in 0..K {
                    if !o[k].is_null() {
                        let w = vqsubq_s16(t, x[k]);
                        own_peak[k] = vmaxq_s16(own_peak[k], vqabsq_s16(w));
                        vst1q_s16(o[k].add(i), w);
                    }
                }
            }
            i += 8;
        }
        if vmaxvq_s16(over) as u32 > KNEE as u32 {
            return None;
        }
        let mut own = [0u32; super::ONEPASS_MAX];
        for k in 0..K {
            own[k] = vmaxvq_s16(own_peak[k]) as u32;
        }
        let peak = vmaxvq_s16(peak) as u32;
        super::onepass_scalar(srcs, &mut shared[..len], owns, peaks, i, peak, own)
    }

    /// The limiter on four lanes; same operation order as `super::shape`.
    #[target_feature(enable = "neon")]
    #[inline]
    fn shape_neon(
        v: int32x4_t,
        g0: float32x4_t,
        step: float32x4_t,
        nf: float32x4_t,
        constant: bool,
    ) -> int32x4_t {
        let g = if constant {
            g0
        } else {
            vaddq_f32(g0, vmulq_f32(step, nf))
        };
        let y = vmulq_f32(vcvtq_f32_s32(v), g);
        let a = vabsq_f32(y);
        let knee = vdupq_n_f32(KNEE);
        let over_mask = vcgtq_f32(a, knee);
        let comp = if vmaxvq_u32(over_mask) == 0 {
            a
        } else {
            let range = vdupq_n_f32(KNEE_RANGE);
            let over = vsubq_f32(a, knee);
            let soft = vaddq_f32(
                knee,
                vdivq_f32(vmulq_f32(over, range), vaddq_f32(over, range)),
            );
            vbslq_f32(over_mask, soft, a)
        };
        // copysign: the sign bit from y, the rest from comp.
        let signed = vbslq_f32(vdupq_n_u32(0x8000_0000), y, comp);
        vcvtnq_s32_f32(signed)
    }

    /// `acc[i..i + 8]` minus the own contribution, as two vectors of four i32.
    ///
    /// # Safety
    /// `acc[i..i + 8]` and (with `own`) `x[i..i + 8]` must be in bounds.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load_n1_neon(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        i: usize,
    ) -> (int32x4_t, int32x4_t) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let pa = acc.as_ptr().add(i);
            let mut v0 = vld1q_s32(pa);
            let mut v1 = vld1q_s32(pa.add(4));
            if let Some((x, g)) = own {
                let s = vld1q_s16(x.as_ptr().add(i));
                let (c0, c1) = if g == UNITY_Q12 {
                    (vmovl_s16(vget_low_s16(s)), vmovl_high_s16(s))
                } else {
                    (
                        vshrq_n_s32::<12>(vmull_n_s16(vget_low_s16(s), g as i16)),
                        vshrq_n_s32::<12>(vmull_high_n_s16(s, g as i16)),
                    )
                };
                v0 = vsubq_s32(v0, c0);
                v1 = vsubq_s32(v1, c1);
            }
            (v0, v1)
        }
    }

    /// Eight samples per iteration, in one of two loops like `render_avx2`. At unity gain a
    /// block is passed through when its saturated i16 samples are all within the knee
    /// (`sqxtn` then `sqabs`: a sample beyond i16 stays beyond the knee).
    #[target_feature(enable = "neon")]
    pub(super) fn render_neon(
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        ramp: Ramp,
        out: &mut [i16],
    ) -> u32 {
        let mut len = acc.len().min(out.len());
        if let Some((x, _)) = own {
            len = len.min(x.len());
        }
        let constant = ramp.step == 0.0;
        let unity = constant && ramp.g0 == 1.0;
        let g0 = vdupq_n_f32(ramp.g0);
        let step = vdupq_n_f32(ramp.step);
        // Peak of the pass-through blocks (|v| <= KNEE, exact in i16) and of the others.
        let mut peak16 = vdupq_n_s16(0);
        let mut peak = vdupq_n_u32(0);
        let mut i = 0;
        if unity {
            let zero = vdupq_n_f32(0.0);
            while i + 8 <= len {
                // SAFETY: acc[i..i + 8], x[i..i + 8] and out[i..i + 8] are in bounds (loop
                // condition, `len` is the minimum of the lengths).
                unsafe {
                    let (v0, v1) = load_n1_neon(acc, own, i);
                    let sat = vcombine_s16(vqmovn_s32(v0), vqmovn_s32(v1));
                    let a = vqabsq_s16(sat);
                    let r = if vmaxvq_s16(a) <= KNEE as i16 {
                        peak16 = vmaxq_s16(peak16, a);
                        sat
                    } else {
                        let m = vmaxq_u32(
                            vreinterpretq_u32_s32(vabsq_s32(v0)),
                            vreinterpretq_u32_s32(vabsq_s32(v1)),
                        );
                        peak = vmaxq_u32(peak, m);
                        vcombine_s16(
                            vqmovn_s32(shape_neon(v0, g0, zero, zero, true)),
                            vqmovn_s32(shape_neon(v1, g0, zero, zero, true)),
                        )
                    };
                    vst1q_s16(out.as_mut_ptr().add(i), r);
                }
                i += 8;
            }
        } else {
            const IDX: [i32; 4] = [0, 1, 2, 3];
            // SAFETY: IDX holds four i32.
            let mut idx = unsafe { vld1q_s32(IDX.as_ptr()) };
            let four = vdupq_n_s32(4);
            let eight = vdupq_n_s32(8);
            while i + 8 <= len {
                // SAFETY: as above.
                unsafe {
                    let (v0, v1) = load_n1_neon(acc, own, i);
                    let m = vmaxq_u32(
                        vreinterpretq_u32_s32(vabsq_s32(v0)),
                        vreinterpretq_u32_s32(vabsq_s32(v1)),
                    );
                    peak = vmaxq_u32(peak, m);
                    let n0 = vcvtq_f32_s32(idx);
                    let n1 = vcvtq_f32_s32(vaddq_s32(idx, four));
                    let r = vcombine_s16(
                        vqmovn_s32(shape_neon(v0, g0, step, n0, constant)),
                        vqmovn_s32(shape_neon(v1, g0, step, n1, constant)),
                    );
                    vst1q_s16(out.as_mut_ptr().add(i), r);
                }
                idx = vaddq_s32(idx, eight);
                i += 8;
            }
        }
        let tail = if i < len {
            render_scalar(&acc[..len], own, ramp, &mut out[..len], i)
        } else {
            0
        };
        tail.max(vmaxvq_s16(peak16) as u32).max(vmaxvq_u32(peak))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_transparent_below_knee_and_bounded_above() {
        let unity = Ramp { g0: 1.0, step: 0.0 };
        for v in [-24576, -1000, -1, 0, 1, 1000, 24576] {
            assert_eq!(shape(v, unity, 0) as i32, v);
        }
        let mut last = 24576;
        for v in (24577..2_000_000).step_by(997) {
            let s = shape(v, unity, 0) as i32;
            assert!(s >= last && s <= 32767, "monotone and bounded: {v} -> {s}");
            assert_eq!(shape(-v, unity, 0) as i32, -s, "odd symmetry");
            last = s;
        }
        assert_eq!(
            shape(
                i32::MAX / 4,
                Ramp {
                    g0: 64.0,
                    step: 0.0
                },
                0
            ),
            32767
        );
    }
}
