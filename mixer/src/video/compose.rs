//! The compositor: draws a [`CanvasDesc`] into an I420 canvas.

use super::image::{BLACK, I420Image, I420View, Yuv};
use super::layout::{Rect, fit_rect};
use super::plan::{CanvasDesc, TileContent};
use super::scale::{PlaneMut, PlaneRef, Scratch, scale_plane};
use crate::MixerError;
use crate::simd::SimdLevel;

/// Background of a member without video.
pub const NO_VIDEO: Yuv = Yuv {
    y: 40,
    u: 128,
    v: 128,
};
/// Colour of the member number on a no-video tile.
pub const DIGIT: Yuv = Yuv {
    y: 200,
    u: 128,
    v: 128,
};
/// Active-speaker border (amber).
pub const BORDER: Yuv = Yuv {
    y: 178,
    u: 35,
    v: 170,
};

/// 3x5 bitmap digits, one row per nibble (bit 2 = left column).
const FONT: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b001, 0b001, 0b001],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Border thickness in luma pixels for a tile (even, at least 2).
pub fn border_width(tile: Rect) -> u32 {
    ((tile.w.min(tile.h) / 60) & !1).max(2)
}

/// Draws canvases. Holds scratch buffers that grow to the largest tile seen, so composing
/// does not allocate once warmed up.
#[derive(Debug)]
pub struct Compositor {
    simd: SimdLevel,
    scratch: Scratch,
}

impl Default for Compositor {
    fn default() -> Self {
        Self::new(SimdLevel::detect())
    }
}

impl Compositor {
    pub fn new(simd: SimdLevel) -> Self {
        Compositor {
            simd: simd.effective(),
            scratch: Scratch::default(),
        }
    }

    pub fn simd_level(&self) -> SimdLevel {
        self.simd
    }

    /// Draws `canvas` into `out` (which must be `canvas.width x canvas.height`): black
    /// background, each video tile scaled to fit its rectangle with black letterbox bars,
    /// members without a picture (`source` returns `None`, or `NoVideo`) as a dark tile with
    /// their number, and the active-speaker border.
    pub fn compose<'a, F>(
        &mut self,
        canvas: &CanvasDesc,
        mut source: F,
        out: &mut I420Image,
    ) -> Result<(), MixerError>
    where
        F: FnMut(u32) -> Option<I420View<'a>>,
    {
        if out.width() != canvas.width || out.height() != canvas.height {
            return Err(MixerError::InvalidImage(
                "canvas size differs from description",
            ));
        }
        let full = Rect::new(0, 0, canvas.width, canvas.height);
        if canvas
            .tiles
            .iter()
            .any(|t| !full.contains(&t.rect) || !t.rect.is_even_aligned())
        {
            return Err(MixerError::InvalidImage(
                "tile outside canvas or not even-aligned",
            ));
        }
        out.fill(BLACK);
        for t in &canvas.tiles {
            let src = match t.content {
                TileContent::Video => source(t.member),
                TileContent::NoVideo { .. } => None,
            };
            match src {
                Some(src) => self.draw_video(src, t.rect, out),
                None => {
                    let number = match t.content {
                        TileContent::NoVideo { number } => number,
                        TileContent::Video => t.member,
                    };
                    draw_no_video(out, t.rect, number);
                }
            }
            if t.border {
                draw_border(out, t.rect, border_width(t.rect));
            }
        }
        Ok(())
    }

    fn draw_video(&mut self, src: I420View<'_>, tile: Rect, out: &mut I420Image) {
        let fit = fit_rect(src.width(), src.height(), tile);
        if fit.is_empty() {
            return;
        }
        let (cw, ch) = (
            src.width().div_ceil(2) as usize,
            src.height().div_ceil(2) as usize,
        );
        let (ow, ocw) = (out.width() as usize, out.chroma_width() as usize);
        let (py, pu, pv) = out.planes_mut();
        let planes = [
            (
                src.y(),
                src.y_stride(),
                src.width() as usize,
                src.height() as usize,
                py,
                ow,
                1,
            ),
            (src.u(), src.uv_stride(), cw, ch, pu, ocw, 2),
            (src.v(), src.uv_stride(), cw, ch, pv, ocw, 2),
        ];
        for (data, stride, width, height, dst, dst_stride, div) in planes {
            scale_plane(
                self.simd,
                PlaneRef {
                    data,
                    stride,
                    width,
                    height,
                },
                PlaneMut {
                    data: dst,
                    stride: dst_stride,
                    x: (fit.x / div) as usize,
                    y: (fit.y / div) as usize,
                    width: (fit.w / div) as usize,
                    height: (fit.h / div) as usize,
                },
                &mut self.scratch,
            );
        }
    }
}

/// Fills an even-aligned rectangle of the canvas with one colour.
fn fill_rect(out: &mut I420Image, r: Rect, c: Yuv) {
    let (w, cw) = (out.width() as usize, out.chroma_width() as usize);
    let (py, pu, pv) = out.planes_mut();
    for y in r.y..r.bottom() {
        let s = y as usize * w + r.x as usize;
        py[s..s + r.w as usize].fill(c.y);
    }
    for y in r.y / 2..r.bottom() / 2 {
        let s = y as usize * cw + (r.x / 2) as usize;
        pu[s..s + (r.w / 2) as usize].fill(c.u);
        pv[s..s + (r.w / 2) as usize].fill(c.v);
    }
}

/// Dark tile with `number` drawn in the centre using the 3x5 font.
fn draw_no_video(out: &mut I420Image, tile: Rect, number: u32) {
    fill_rect(out, tile, NO_VIDEO);
    let mut digits = [0u8; 10];
    let mut n = number;
    let mut count = 0;
    loop {
        digits[count] = (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[..count].reverse();
    // Each digit is 3 cells wide plus 1 cell of spacing; the text is at most a third of
    // the tile high and 80% of its width.
    let cols = (4 * count - 1) as u32;
    let cell = (tile.h / 15).min(tile.w * 4 / 5 / cols);
    if cell == 0 {
        return;
    }
    let x0 = tile.x + (tile.w - cols * cell) / 2;
    let y0 = tile.y + (tile.h - 5 * cell) / 2;
    let w = out.width() as usize;
    let (py, _, _) = out.planes_mut();
    for (i, &d) in digits[..count].iter().enumerate() {
        for (row, bits) in FONT[d as usize].iter().enumerate() {
            for col in 0..3u32 {
                if bits & (0b100 >> col) == 0 {
                    continue;
                }
                let px = x0 + (i as u32 * 4 + col) * cell;
                let py0 = y0 + row as u32 * cell;
                for y in py0..py0 + cell {
                    let s = y as usize * w + px as usize;
                    py[s..s + cell as usize].fill(DIGIT.y);
                }
            }
        }
    }
}

/// Border of `t` (even) pixels inside the tile's edges.
fn draw_border(out: &mut I420Image, r: Rect, t: u32) {
    let t = t.min(r.w / 2).min(r.h / 2) & !1;
    if t == 0 {
        return;
    }
    fill_rect(out, Rect::new(r.x, r.y, r.w, t), BORDER);
    fill_rect(out, Rect::new(r.x, r.bottom() - t, r.w, t), BORDER);
    fill_rect(out, Rect::new(r.x, r.y, t, r.h), BORDER);
    fill_rect(out, Rect::new(r.right() - t, r.y, t, r.h), BORDER);
}
