//! I420 (YUV 4:2:0 planar) images: an owned buffer and a borrowed, strided view.

use crate::MixerError;

/// Limited-range (BT.601/709) black.
pub const BLACK: Yuv = Yuv {
    y: 16,
    u: 128,
    v: 128,
};

/// One YUV colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Yuv {
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

/// Borrowed I420 image with arbitrary strides (e.g. a decoder's output).
#[derive(Clone, Copy, Debug)]
pub struct I420View<'a> {
    width: u32,
    height: u32,
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
    y_stride: usize,
    uv_stride: usize,
}

fn plane_len(stride: usize, width: usize, height: usize) -> Option<usize> {
    if height == 0 {
        return Some(0);
    }
    stride.checked_mul(height - 1)?.checked_add(width)
}

impl<'a> I420View<'a> {
    /// Checks that the planes are large enough for `width x height` with the given strides
    /// (chroma planes are `ceil(width/2) x ceil(height/2)`).
    pub fn new(
        width: u32,
        height: u32,
        y: &'a [u8],
        y_stride: usize,
        u: &'a [u8],
        v: &'a [u8],
        uv_stride: usize,
    ) -> Result<Self, MixerError> {
        if width == 0 || height == 0 {
            return Err(MixerError::InvalidImage("zero width or height"));
        }
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        if y_stride < w || uv_stride < cw {
            return Err(MixerError::InvalidImage("stride smaller than width"));
        }
        let y_need = plane_len(y_stride, w, h).ok_or(MixerError::InvalidImage("too large"))?;
        let c_need = plane_len(uv_stride, cw, ch).ok_or(MixerError::InvalidImage("too large"))?;
        if y.len() < y_need || u.len() < c_need || v.len() < c_need {
            return Err(MixerError::InvalidImage("plane buffer too short"));
        }
        Ok(I420View {
            width,
            height,
            y,
            u,
            v,
            y_stride,
            uv_stride,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn y(&self) -> &'a [u8] {
        self.y
    }
    pub fn u(&self) -> &'a [u8] {
        self.u
    }
    pub fn v(&self) -> &'a [u8] {
        self.v
    }
    pub fn y_stride(&self) -> usize {
        self.y_stride
    }
    pub fn uv_stride(&self) -> usize {
        self.uv_stride
    }
}

/// Owned, tightly packed I420 image (Y plane, then U, then V).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I420Image {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl I420Image {
    /// A black image. Width and height must be non-zero.
    pub fn new(width: u32, height: u32) -> Result<Self, MixerError> {
        Self::filled(width, height, BLACK)
    }

    /// An image of one colour.
    pub fn filled(width: u32, height: u32, c: Yuv) -> Result<Self, MixerError> {
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(MixerError::InvalidImage("size must be 1..=16384"));
        }
        let (y, c_len) = Self::sizes(width, height);
        let mut data = vec![c.y; y + 2 * c_len];
        data[y..y + c_len].fill(c.u);
        data[y + c_len..].fill(c.v);
        Ok(I420Image {
            width,
            height,
            data,
        })
    }

    fn sizes(width: u32, height: u32) -> (usize, usize) {
        let (w, h) = (width as usize, height as usize);
        (w * h, w.div_ceil(2) * h.div_ceil(2))
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Width of the chroma planes.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }
    /// Height of the chroma planes.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// The whole buffer: Y, then U, then V, each tightly packed.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The (Y, U, V) planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (y, c) = Self::sizes(self.width, self.height);
        let (py, rest) = self.data.split_at(y);
        let (pu, pv) = rest.split_at(c);
        (py, pu, pv)
    }

    /// The (Y, U, V) planes, mutable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (y, c) = Self::sizes(self.width, self.height);
        let (py, rest) = self.data.split_at_mut(y);
        let (pu, pv) = rest.split_at_mut(c);
        (py, pu, pv)
    }

    /// A borrowed view of this image.
    pub fn view(&self) -> I420View<'_> {
        let (y, u, v) = self.planes();
        I420View {
            width: self.width,
            height: self.height,
            y,
            u,
            v,
            y_stride: self.width as usize,
            uv_stride: self.chroma_width() as usize,
        }
    }

    /// The colour at luma coordinate (x, y), or `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Yuv> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let (py, pu, pv) = self.planes();
        let cw = self.chroma_width() as usize;
        let ci = (y / 2) as usize * cw + (x / 2) as usize;
        Some(Yuv {
            y: py[y as usize * self.width as usize + x as usize],
            u: pu[ci],
            v: pv[ci],
        })
    }

    /// Fills the whole image with one colour.
    pub fn fill(&mut self, c: Yuv) {
        let (y, u, v) = self.planes_mut();
        y.fill(c.y);
        u.fill(c.u);
        v.fill(c.v);
    }
}
