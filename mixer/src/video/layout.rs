//! Layouts as pure geometry. Every rectangle produced here has even x, y, width and height
//! (I420 chroma is subsampled 2x2), lies inside the canvas, and no two tiles overlap.

use crate::MixerError;

/// Largest grid.
pub const MAX_GRID_TILES: usize = 25;

/// A rectangle in luma pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Rect { x, y, w, h }
    }
    pub fn right(&self) -> u32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> u32 {
        self.y + self.h
    }
    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }
    /// Whether the two rectangles share at least one pixel.
    pub fn intersects(&self, o: &Rect) -> bool {
        !self.is_empty()
            && !o.is_empty()
            && self.x < o.right()
            && o.x < self.right()
            && self.y < o.bottom()
            && o.y < self.bottom()
    }
    /// Whether `o` lies entirely inside `self`.
    pub fn contains(&self, o: &Rect) -> bool {
        o.x >= self.x && o.y >= self.y && o.right() <= self.right() && o.bottom() <= self.bottom()
    }
    /// All four coordinates even.
    pub fn is_even_aligned(&self) -> bool {
        (self.x | self.y | self.w | self.h) & 1 == 0
    }
}

/// Which arrangement of tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayoutKind {
    /// One big tile (the active speaker or pinned member) above a strip of thumbnails.
    ActiveSpeaker,
    /// Up to 25 equal tiles, rows x columns chosen for the largest tiles.
    Grid,
    /// Only the presenter (pinned member or active speaker), full canvas.
    Presenter,
}

/// Canvas and layout parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayoutConfig {
    pub kind: LayoutKind,
    /// Canvas width, even, >= 2.
    pub width: u32,
    /// Canvas height, even, >= 2.
    pub height: u32,
    /// Most thumbnails in the active-speaker strip (default 6).
    pub max_thumbnails: usize,
    /// Aspect ratio tiles are optimised for (default 16:9).
    pub tile_aspect: (u32, u32),
}

impl LayoutConfig {
    pub fn new(kind: LayoutKind, width: u32, height: u32) -> Self {
        LayoutConfig {
            kind,
            width,
            height,
            max_thumbnails: 6,
            tile_aspect: (16, 9),
        }
    }

    fn validate(&self) -> Result<(), MixerError> {
        if self.width < 2 || self.height < 2 || (self.width | self.height) & 1 != 0 {
            return Err(MixerError::InvalidImage(
                "canvas size must be even and >= 2",
            ));
        }
        if self.width > 16384 || self.height > 16384 {
            return Err(MixerError::InvalidImage("canvas larger than 16384"));
        }
        if self.tile_aspect.0 == 0 || self.tile_aspect.1 == 0 {
            return Err(MixerError::InvalidConfig("tile aspect must be non-zero"));
        }
        Ok(())
    }

    /// Tiles for `members` participants. For `ActiveSpeaker` and `Presenter` tile 0 is the
    /// big tile; `ActiveSpeaker` adds `min(members - 1, max_thumbnails)` thumbnails; a grid
    /// has one tile per member (at most 25). Zero members give zero tiles.
    pub fn tiles(&self, members: usize) -> Result<Vec<Rect>, MixerError> {
        self.validate()?;
        if members == 0 {
            return Ok(Vec::new());
        }
        match self.kind {
            LayoutKind::Presenter => Ok(vec![Rect::new(0, 0, self.width, self.height)]),
            LayoutKind::Grid => grid(self.width, self.height, members, self.tile_aspect),
            LayoutKind::ActiveSpeaker => self.active_speaker(members),
        }
    }

    fn active_speaker(&self, members: usize) -> Result<Vec<Rect>, MixerError> {
        let (w, h) = (self.width, self.height);
        let thumbs = (members - 1).min(self.max_thumbnails);
        if thumbs == 0 {
            return Ok(vec![Rect::new(0, 0, w, h)]);
        }
        let too_small = MixerError::CanvasTooSmall {
            width: w,
            height: h,
            tiles: thumbs + 1,
        };
        let strip_h = even(h / 5);
        if strip_h < 2 {
            return Err(too_small);
        }
        let (aw, ah) = self.tile_aspect;
        let ideal = (strip_h as u64 * aw as u64 / ah as u64).min(u32::MAX as u64) as u32;
        let thumb_w = even(ideal).min(even(w / thumbs as u32));
        if thumb_w < 2 {
            return Err(too_small);
        }
        let mut out = Vec::with_capacity(thumbs + 1);
        out.push(Rect::new(0, 0, w, h - strip_h));
        let x0 = even((w - thumb_w * thumbs as u32) / 2);
        for i in 0..thumbs as u32 {
            out.push(Rect::new(x0 + i * thumb_w, h - strip_h, thumb_w, strip_h));
        }
        Ok(out)
    }
}

fn even(v: u32) -> u32 {
    v & !1
}

/// Best-fit grid of `n` (1..=25) equal cells on a `width x height` canvas: the column count
/// that makes the largest `aspect`-shaped picture fit in a cell; ties go to fewer empty
/// cells, then fewer columns. Cells are centred; a partial last row is centred too.
pub fn grid(
    width: u32,
    height: u32,
    n: usize,
    aspect: (u32, u32),
) -> Result<Vec<Rect>, MixerError> {
    if n > MAX_GRID_TILES {
        return Err(MixerError::TooManyTiles {
            max: MAX_GRID_TILES,
            got: n,
        });
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let (aw, ah) = (aspect.0.max(1) as u64, aspect.1.max(1) as u64);
    let mut best: Option<(u64, usize, u32, u32, u32, u32)> = None; // score, empty, cols, rows, cw, ch
    for cols in 1..=n as u32 {
        let rows = (n as u32).div_ceil(cols);
        let (cw, ch) = (even(width / cols), even(height / rows));
        if cw < 2 || ch < 2 {
            continue;
        }
        // Width of the largest aspect-shaped picture in the cell, scaled by `ah`.
        let score = (cw as u64 * ah).min(ch as u64 * aw);
        let empty = (cols * rows) as usize - n;
        let better = match best {
            None => true,
            Some((s, e, ..)) => score > s || (score == s && empty < e),
        };
        if better {
            best = Some((score, empty, cols, rows, cw, ch));
        }
    }
    let Some((_, _, cols, rows, cw, ch)) = best else {
        return Err(MixerError::CanvasTooSmall {
            width,
            height,
            tiles: n,
        });
    };
    let x0 = even((width - cols * cw) / 2);
    let y0 = even((height - rows * ch) / 2);
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u32 {
        let (r, c) = (i / cols, i % cols);
        let in_row = (n as u32 - r * cols).min(cols);
        let row_x = x0 + even((cols - in_row) * cw / 2);
        out.push(Rect::new(row_x + c * cw, y0 + r * ch, cw, ch));
    }
    Ok(out)
}

/// The largest rectangle with the aspect ratio of `src_w x src_h` that fits in `cell`,
/// centred, even-aligned (the rest of the cell is letterbox). Returns an empty rectangle
/// at the cell's origin if the source or the cell is empty.
pub fn fit_rect(src_w: u32, src_h: u32, cell: Rect) -> Rect {
    if src_w == 0 || src_h == 0 || cell.w < 2 || cell.h < 2 {
        return Rect::new(cell.x, cell.y, 0, 0);
    }
    let (sw, sh) = (src_w as u64, src_h as u64);
    let (cw, ch) = (cell.w as u64, cell.h as u64);
    let (w, h) = if cw * sh <= ch * sw {
        // width-limited
        (cw, (cw * sh + sw / 2) / sw)
    } else {
        ((ch * sw + sh / 2) / sh, ch)
    };
    let w = even((w.min(cw) as u32).max(2));
    let h = even((h.min(ch) as u32).max(2));
    Rect::new(
        cell.x + even((cell.w - w) / 2),
        cell.y + even((cell.h - h) / 2),
        w,
        h,
    )
}
