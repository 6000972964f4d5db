//! Bilinear plane scaling (centre-aligned sampling, 8-bit fractions), written for this
//! crate. The vertical pass blends the two source rows an output row needs into a scratch
//! row with SIMD; the horizontal pass reads it through precomputed index/weight tables.
//! A 2:1 reduction in both directions makes every weight 1/2, i.e. an exact 2x2 box filter.
//!
//! Safety argument for the `unsafe` blocks: the vector functions run only after
//! [`SimdLevel::effective`] confirmed the feature, and each load/store touches
//! `[i, i + LANES)` with `i + LANES <= len`, where `len` is at most every slice's length.

use crate::simd::SimdLevel;

/// A source plane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlaneRef<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

/// A destination region inside a plane.
#[derive(Debug)]
pub(crate) struct PlaneMut<'a> {
    pub data: &'a mut [u8],
    pub stride: usize,
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Reusable tables and row buffer (grow to the largest size seen, then never allocate).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Left source pixel of each output pixel, relative to the start of the row span.
    xi: Vec<u32>,
    /// Packed 16-bit weights: `(256 - f) | f << 16`.
    wt: Vec<u32>,
    row: Vec<u8>,
}

/// Bytes of padding after a scratch row (the vector horizontal pass reads 4 bytes at a time).
const ROW_PAD: usize = 4;

/// Fixed-point (16.16) centre-aligned source position of output index `i`, clamped.
fn src_pos(i: usize, src: usize, dst: usize) -> (usize, u16) {
    let num = ((2 * i + 1) as u64 * src as u64) << 16;
    let pos = (num / (2 * dst as u64)) as i64 - (1 << 15);
    let max = ((src as i64) - 1) << 16;
    let pos = pos.clamp(0, max);
    ((pos >> 16) as usize, ((pos >> 8) & 0xff) as u16)
}

/// `out[i] = (a[i] * (256 - f) + b[i] * f + 128) >> 8`.
pub(crate) fn blend_rows(level: SimdLevel, a: &[u8], b: &[u8], f: u16, out: &mut [u8]) {
    match level.effective() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `effective` confirmed AVX2.
        SimdLevel::Avx2 => unsafe { x86::blend_avx2(a, b, f, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is baseline on x86_64.
        SimdLevel::Sse2 => unsafe { x86::blend_sse2(a, b, f, out) },
        _ => blend_scalar(a, b, f, out),
    }
}

pub(crate) fn blend_scalar(a: &[u8], b: &[u8], f: u16, out: &mut [u8]) {
    let (fa, fb) = (256 - f as u32, f as u32);
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = ((x as u32 * fa + y as u32 * fb + 128) >> 8) as u8;
    }
}

/// Horizontal pass: `out[x] = (row[xi] * wa + row[xi + 1] * wb + 128) >> 8`. `xi` must be
/// non-decreasing and `row` padded so that `row[xi + 3]` exists for every index.
fn hscale(level: SimdLevel, row: &[u8], xi: &[u32], wt: &[u32], out: &mut [u8]) {
    let n = out.len().min(xi.len()).min(wt.len());
    #[cfg(target_arch = "x86_64")]
    let fits = n == 0 || (xi[n - 1] as usize + ROW_PAD) <= row.len();
    match level.effective() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `effective` confirmed AVX2; `fits` bounds every 4-byte gather (xi is
        // non-decreasing, so the last index is the largest).
        SimdLevel::Avx2 if fits => unsafe {
            x86::hscale_avx2(row, &xi[..n], &wt[..n], &mut out[..n])
        },
        _ => hscale_scalar(row, &xi[..n], &wt[..n], &mut out[..n]),
    }
}

fn hscale_scalar(row: &[u8], xi: &[u32], wt: &[u32], out: &mut [u8]) {
    for ((o, &i), &w) in out.iter_mut().zip(xi).zip(wt) {
        let i = i as usize;
        let (wa, wb) = (w & 0xffff, w >> 16);
        let b = row.get(i + 1).copied().unwrap_or(0) as u32;
        *o = ((row[i] as u32 * wa + b * wb + 128) >> 8) as u8;
    }
}

/// Scales `src` into the region `dst`. Empty regions or sources are a no-op.
pub(crate) fn scale_plane(level: SimdLevel, src: PlaneRef<'_>, dst: PlaneMut<'_>, s: &mut Scratch) {
    let (sw, sh, dw, dh) = (src.width, src.height, dst.width, dst.height);
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return;
    }
    if sw == dw && sh == dh {
        for y in 0..dh {
            let d = (dst.y + y) * dst.stride + dst.x;
            dst.data[d..d + dw].copy_from_slice(&src.data[y * src.stride..][..dw]);
        }
        return;
    }
    // Horizontal tables.
    s.xi.clear();
    s.wt.clear();
    let lo = src_pos(0, sw, dw).0;
    for x in 0..dw {
        let (i, f) = src_pos(x, sw, dw);
        s.xi.push((i - lo) as u32);
        s.wt.push((256 - f as u32) | (f as u32) << 16);
    }
    let hi = (lo + s.xi[dw - 1] as usize + 1).min(sw - 1); // inclusive
    let span = hi - lo + 1;
    if s.row.len() < span + ROW_PAD {
        s.row.resize(span + ROW_PAD, 0);
    }
    let identity_x = sw == dw;
    for y in 0..dh {
        let (yi, yf) = src_pos(y, sh, dh);
        let r0 = &src.data[yi * src.stride..][lo..=hi];
        let d = (dst.y + y) * dst.stride + dst.x;
        let drow = &mut dst.data[d..d + dw];
        if yf == 0 {
            if identity_x {
                drow.copy_from_slice(&r0[..dw]);
                continue;
            }
            s.row[..span].copy_from_slice(r0);
        } else {
            let r1 = &src.data[(yi + 1) * src.stride..][lo..=hi];
            if identity_x {
                blend_rows(level, r0, r1, yf, drow);
                continue;
            }
            blend_rows(level, r0, r1, yf, &mut s.row[..span]);
        }
        let last = s.row[span - 1];
        s.row[span..span + ROW_PAD].fill(last);
        hscale(level, &s.row[..span + ROW_PAD], &s.xi, &s.wt, drow);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) fn blend_avx2(a: &[u8], b: &[u8], f: u16, out: &mut [u8]) {
        let len = out.len().min(a.len()).min(b.len());
        let fa = _mm256_set1_epi16((256 - f) as i16);
        let fb = _mm256_set1_epi16(f as i16);
        let half = _mm256_set1_epi16(128);
        let zero = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= len {
            // SAFETY: a, b, out [i..i + 32] in bounds by the loop condition.
            unsafe {
                let va = _mm256_loadu_si256(a.as_ptr().add(i) as *const __m256i);
                let vb = _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i);
                let lo = _mm256_add_epi16(
                    _mm256_add_epi16(
                        _mm256_mullo_epi16(_mm256_unpacklo_epi8(va, zero), fa),
                        _mm256_mullo_epi16(_mm256_unpacklo_epi8(vb, zero), fb),
                    ),
                    half,
                );
                let hi = _mm256_add_epi16(
                    _mm256_add_epi16(
                        _mm256_mullo_epi16(_mm256_unpackhi_epi8(va, zero), fa),
                        _mm256_mullo_epi16(_mm256_unpackhi_epi8(vb, zero), fb),
                    ),
                    half,
                );
                let r = _mm256_packus_epi16(_mm256_srli_epi16::<8>(lo), _mm256_srli_epi16::<8>(hi));
                _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, r);
            }
            i += 32;
        }
        super::blend_scalar(&a[i..len], &b[i..len], f, &mut out[i..len]);
    }

    /// Sixteen output pixels per iteration: gather 4 source bytes at each index, keep the
    /// first two as 16-bit lanes, and weight them with one `pmaddwd`.
    #[target_feature(enable = "avx2")]
    pub(super) fn hscale_avx2(row: &[u8], xi: &[u32], wt: &[u32], out: &mut [u8]) {
        let n = out.len().min(xi.len()).min(wt.len());
        let lo_byte = _mm256_set1_epi32(0xff);
        let hi_byte = _mm256_set1_epi32(0xff00);
        let half = _mm256_set1_epi32(128);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let base = row.as_ptr() as *const i32;
        let mut x = 0;
        while x + 16 <= n {
            // SAFETY: xi/wt/out [x..x + 16] are in bounds by the loop condition; every
            // gather reads row[xi..xi + 4], in bounds by the caller's padding check.
            unsafe {
                let one = |off: usize| {
                    let idx = _mm256_loadu_si256(xi.as_ptr().add(x + off) as *const __m256i);
                    let g = _mm256_i32gather_epi32::<1>(base, idx);
                    let pair = _mm256_or_si256(
                        _mm256_and_si256(g, lo_byte),
                        _mm256_slli_epi32::<8>(_mm256_and_si256(g, hi_byte)),
                    );
                    let w = _mm256_loadu_si256(wt.as_ptr().add(x + off) as *const __m256i);
                    _mm256_srli_epi32::<8>(_mm256_add_epi32(_mm256_madd_epi16(pair, w), half))
                };
                let (r0, r1) = (one(0), one(8));
                let p = _mm256_packus_epi32(r0, r1);
                let p = _mm256_packus_epi16(p, p);
                let p = _mm256_permutevar8x32_epi32(p, order);
                _mm_storeu_si128(
                    out.as_mut_ptr().add(x) as *mut __m128i,
                    _mm256_castsi256_si128(p),
                );
            }
            x += 16;
        }
        super::hscale_scalar(row, &xi[x..n], &wt[x..n], &mut out[x..n]);
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn blend_sse2(a: &[u8], b: &[u8], f: u16, out: &mut [u8]) {
        let len = out.len().min(a.len()).min(b.len());
        let fa = _mm_set1_epi16((256 - f) as i16);
        let fb = _mm_set1_epi16(f as i16);
        let half = _mm_set1_epi16(128);
        let zero = _mm_setzero_si128();
        let mut i = 0;
        while i + 16 <= len {
            // SAFETY: a, b, out [i..i + 16] in bounds by the loop condition.
            unsafe {
                let va = _mm_loadu_si128(a.as_ptr().add(i) as *const __m128i);
                let vb = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
                let lo = _mm_add_epi16(
                    _mm_add_epi16(
                        _mm_mullo_epi16(_mm_unpacklo_epi8(va, zero), fa),
                        _mm_mullo_epi16(_mm_unpacklo_epi8(vb, zero), fb),
                    ),
                    half,
                );
                let hi = _mm_add_epi16(
                    _mm_add_epi16(
                        _mm_mullo_epi16(_mm_unpackhi_epi8(va, zero), fa),
                        _mm_mullo_epi16(_mm_unpackhi_epi8(vb, zero), fb),
                    ),
                    half,
                );
                let r = _mm_packus_epi16(_mm_srli_epi16::<8>(lo), _mm_srli_epi16::<8>(hi));
                _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, r);
            }
            i += 16;
        }
        super::blend_scalar(&a[i..len], &b[i..len], f, &mut out[i..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_centre_aligned_and_clamped() {
        assert_eq!(src_pos(0, 4, 2), (0, 128)); // 2:1 -> between source pixels 0 and 1
        assert_eq!(src_pos(1, 4, 2), (2, 128));
        assert_eq!(src_pos(0, 2, 4), (0, 0)); // upscale edge clamps
        assert_eq!(src_pos(3, 2, 4), (1, 0));
        assert_eq!(src_pos(0, 5, 5), (0, 0));
        assert_eq!(src_pos(4, 5, 5), (4, 0));
    }

    #[test]
    fn identity_and_box_downscale() {
        let src: Vec<u8> = (0..64u8).collect();
        let p = PlaneRef {
            data: &src,
            stride: 8,
            width: 8,
            height: 8,
        };
        for level in SimdLevel::all_supported() {
            let mut s = Scratch::default();
            let mut out = vec![0u8; 64];
            scale_plane(
                level,
                p,
                PlaneMut {
                    data: &mut out,
                    stride: 8,
                    x: 0,
                    y: 0,
                    width: 8,
                    height: 8,
                },
                &mut s,
            );
            assert_eq!(out, src);
            let mut out = vec![0u8; 16];
            scale_plane(
                level,
                p,
                PlaneMut {
                    data: &mut out,
                    stride: 4,
                    x: 0,
                    y: 0,
                    width: 4,
                    height: 4,
                },
                &mut s,
            );
            // 2x2 box averages: (a + b + c + d + 2) / 4 up to the two-stage rounding.
            for y in 0..4 {
                for x in 0..4 {
                    let i = (2 * y) * 8 + 2 * x;
                    let avg =
                        (src[i] as u32 + src[i + 1] as u32 + src[i + 8] as u32 + src[i + 9] as u32)
                            as f32
                            / 4.0;
                    assert!((out[y * 4 + x] as f32 - avg).abs() <= 1.0);
                }
            }
        }
    }
}
