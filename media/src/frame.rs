//! Raw picture type shared by the video codecs.

use crate::error::{MediaError, Result};

/// An 8-bit I420 (YUV 4:2:0 planar) picture.
///
/// Plane `y` has `height` rows of `stride_y` bytes; planes `u` and `v` have
/// `(height + 1) / 2` rows of `stride_u` / `stride_v` bytes. Only the first `width` (or
/// `(width + 1) / 2`) bytes of each row are picture data.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma plane.
    pub y: Vec<u8>,
    /// Cb plane.
    pub u: Vec<u8>,
    /// Cr plane.
    pub v: Vec<u8>,
    /// Bytes per luma row.
    pub stride_y: usize,
    /// Bytes per Cb row.
    pub stride_u: usize,
    /// Bytes per Cr row.
    pub stride_v: usize,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("strides", &(self.stride_y, self.stride_u, self.stride_v))
            .finish()
    }
}

impl I420Frame {
    /// Width of the chroma planes.
    pub fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }

    /// Height of the chroma planes.
    pub fn chroma_height(&self) -> usize {
        (self.height as usize).div_ceil(2)
    }

    /// A tightly packed frame filled with one colour.
    pub fn filled(width: u32, height: u32, y: u8, u: u8, v: u8) -> Self {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        I420Frame {
            width,
            height,
            y: vec![y; w * h],
            u: vec![u; cw * ch],
            v: vec![v; cw * ch],
            stride_y: w,
            stride_u: cw,
            stride_v: cw,
        }
    }

    /// A black, tightly packed frame.
    pub fn black(width: u32, height: u32) -> Self {
        Self::filled(width, height, 16, 128, 128)
    }

    /// Builds a frame from planes with strides, checking the sizes.
    #[allow(clippy::too_many_arguments)]
    pub fn from_planes(
        width: u32,
        height: u32,
        y: Vec<u8>,
        stride_y: usize,
        u: Vec<u8>,
        stride_u: usize,
        v: Vec<u8>,
        stride_v: usize,
    ) -> Result<Self> {
        let f = I420Frame {
            width,
            height,
            y,
            u,
            v,
            stride_y,
            stride_u,
            stride_v,
        };
        f.validate()?;
        Ok(f)
    }

    /// Checks that strides and plane lengths match the dimensions.
    pub fn validate(&self) -> Result<()> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (self.chroma_width(), self.chroma_height());
        if w == 0 || h == 0 {
            return Err(MediaError::InvalidArgument("empty frame".into()));
        }
        if self.stride_y < w || self.stride_u < cw || self.stride_v < cw {
            return Err(MediaError::InvalidArgument("stride below width".into()));
        }
        if self.y.len() < self.stride_y * (h - 1) + w
            || self.u.len() < self.stride_u * (ch - 1) + cw
            || self.v.len() < self.stride_v * (ch - 1) + cw
        {
            return Err(MediaError::InvalidArgument(
                "plane shorter than its rows".into(),
            ));
        }
        Ok(())
    }

    /// Copies planes out of row-strided sources into a tightly packed frame.
    pub(crate) fn copy_from_strided(
        width: u32,
        height: u32,
        planes: [(&[u8], usize); 3],
    ) -> Result<Self> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let copy = |(src, stride): (&[u8], usize), pw: usize, ph: usize| -> Result<Vec<u8>> {
            if ph > 0 && (stride < pw || src.len() < stride * (ph - 1) + pw) {
                return Err(MediaError::codec("decoder", "decoded plane too small"));
            }
            let mut out = Vec::with_capacity(pw * ph);
            for row in 0..ph {
                out.extend_from_slice(&src[row * stride..row * stride + pw]);
            }
            Ok(out)
        };
        Ok(I420Frame {
            width,
            height,
            y: copy(planes[0], w, h)?,
            u: copy(planes[1], cw, ch)?,
            v: copy(planes[2], cw, ch)?,
            stride_y: w,
            stride_u: cw,
            stride_v: cw,
        })
    }

    /// Returns the frame with tightly packed planes (strides equal to widths).
    pub fn packed(&self) -> Result<Self> {
        self.validate()?;
        Self::copy_from_strided(
            self.width,
            self.height,
            [
                (&self.y, self.stride_y),
                (&self.u, self.stride_u),
                (&self.v, self.stride_v),
            ],
        )
    }

    /// Luma PSNR in dB against another frame of the same size (`f64::INFINITY` if identical).
    pub fn psnr_y(&self, other: &I420Frame) -> Result<f64> {
        if (self.width, self.height) != (other.width, other.height) {
            return Err(MediaError::InvalidArgument("frame sizes differ".into()));
        }
        self.validate()?;
        other.validate()?;
        let (w, h) = (self.width as usize, self.height as usize);
        let mut sse = 0u64;
        for row in 0..h {
            let a = &self.y[row * self.stride_y..row * self.stride_y + w];
            let b = &other.y[row * other.stride_y..row * other.stride_y + w];
            for (x, y) in a.iter().zip(b) {
                let d = i64::from(*x) - i64::from(*y);
                sse += (d * d) as u64;
            }
        }
        if sse == 0 {
            return Ok(f64::INFINITY);
        }
        let mse = sse as f64 / (w * h) as f64;
        Ok(10.0 * (255.0 * 255.0 / mse).log10())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_frames_validate_and_pack() {
        let f = I420Frame::from_planes(3, 3, vec![1; 12], 4, vec![2; 6], 3, vec![3; 6], 3).unwrap();
        let p = f.packed().unwrap();
        assert_eq!((p.stride_y, p.stride_u, p.y.len(), p.u.len()), (3, 2, 9, 4));
        assert_eq!(f.psnr_y(&p).unwrap(), f64::INFINITY);
        assert!(
            I420Frame::from_planes(4, 4, vec![0; 15], 4, vec![0; 4], 2, vec![0; 4], 2).is_err()
        );
        let mut q = p.clone();
        q.y[0] = 0;
        assert!(p.psnr_y(&q).unwrap() > 40.0);
    }
}
