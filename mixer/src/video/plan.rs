//! Per-subscriber canvas planning: which member goes in which tile for each subscriber, and
//! which subscribers see identical canvases (compose and encode each distinct canvas once).

use super::layout::{LayoutConfig, LayoutKind, Rect};
use crate::MixerError;

/// A conference member as far as video is concerned. `id` is the caller's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VideoMember {
    pub id: u32,
    /// Number drawn on its no-video tile (e.g. the conference member number).
    pub number: u32,
    /// A decoded picture is (or will be) available.
    pub has_video: bool,
    /// Show the no-video tile even if video is available.
    pub video_off: bool,
    /// Receives a composed canvas.
    pub subscribed: bool,
}

/// What a tile shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileContent {
    /// The member's video, scaled to fit with letterboxing.
    Video,
    /// A dark tile with the member's number.
    NoVideo { number: u32 },
}

/// One tile of a canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileDesc {
    pub member: u32,
    pub rect: Rect,
    pub content: TileContent,
    /// Drawn with the active-speaker border.
    pub border: bool,
}

/// One distinct canvas.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CanvasDesc {
    pub width: u32,
    pub height: u32,
    /// The member in the big tile (active-speaker and presenter layouts), if any.
    pub big: Option<u32>,
    pub tiles: Vec<TileDesc>,
}

/// Inputs of [`plan_canvases`].
#[derive(Clone, Copy, Debug)]
pub struct SceneInput<'a> {
    /// Members in display order (e.g. join order).
    pub members: &'a [VideoMember],
    /// The dominant speaker (gets the border; big tile unless a floor is pinned).
    pub active_speaker: Option<u32>,
    /// Shown in the big tile to the active speaker itself.
    pub previous_speaker: Option<u32>,
    /// Video floor override: pinned to the big tile (first in a grid).
    pub floor: Option<u32>,
    pub layout: LayoutConfig,
}

/// The result of [`plan_canvases`]: distinct canvases and which subscriber gets which.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CanvasPlan {
    pub canvases: Vec<CanvasDesc>,
    /// `(subscriber id, index into canvases)`, in member order.
    pub assignment: Vec<(u32, usize)>,
}

impl CanvasPlan {
    /// The canvas index of `subscriber`.
    pub fn canvas_of(&self, subscriber: u32) -> Option<usize> {
        self.assignment
            .iter()
            .find(|(s, _)| *s == subscriber)
            .map(|&(_, c)| c)
    }
}

/// Plans the canvases for every subscribed member. A subscriber never sees itself in the big
/// tile: the active speaker sees the previous speaker (or the first other member) there.
/// Grids are the same for everyone. `plan` is cleared and refilled (its buffers are reused).
pub fn plan_canvases(input: &SceneInput<'_>, plan: &mut CanvasPlan) -> Result<(), MixerError> {
    plan.canvases.clear();
    plan.assignment.clear();
    let members = input.members;
    let present = |id: Option<u32>| id.filter(|i| members.iter().any(|m| m.id == *i));
    let primary = present(input.floor)
        .or(present(input.active_speaker))
        .or(members.first().map(|m| m.id));
    let speaker = present(input.active_speaker);
    let big_layout = input.layout.kind != LayoutKind::Grid;

    for sub in members.iter().filter(|m| m.subscribed) {
        let big = if !big_layout {
            None
        } else if primary == Some(sub.id) {
            present(input.previous_speaker)
                .filter(|&p| p != sub.id)
                .or(members.iter().find(|m| m.id != sub.id).map(|m| m.id))
        } else {
            primary
        };
        let idx = match plan.canvases.iter().position(|c| c.big == big) {
            Some(i) => i,
            None => {
                let c = build(input, big, speaker, primary)?;
                plan.canvases.push(c);
                plan.canvases.len() - 1
            }
        };
        plan.assignment.push((sub.id, idx));
    }
    Ok(())
}

/// The canvas of a viewer who is not a member (a broadcast, a recording): the pinned member or
/// the active speaker (else the first member) in the big tile, everyone else as thumbnails;
/// the shared grid in a grid layout. It is the canvas every member but the speaker sees.
pub fn viewer_canvas(input: &SceneInput<'_>) -> Result<CanvasDesc, MixerError> {
    let members = input.members;
    let present = |id: Option<u32>| id.filter(|i| members.iter().any(|m| m.id == *i));
    let primary = present(input.floor)
        .or(present(input.active_speaker))
        .or(members.first().map(|m| m.id));
    let speaker = present(input.active_speaker);
    let big = if input.layout.kind == LayoutKind::Grid {
        None
    } else {
        primary
    };
    build(input, big, speaker, primary)
}

fn tile(m: &VideoMember, rect: Rect, speaker: Option<u32>) -> TileDesc {
    TileDesc {
        member: m.id,
        rect,
        content: if m.has_video && !m.video_off {
            TileContent::Video
        } else {
            TileContent::NoVideo { number: m.number }
        },
        border: speaker == Some(m.id),
    }
}

fn build(
    input: &SceneInput<'_>,
    big: Option<u32>,
    speaker: Option<u32>,
    primary: Option<u32>,
) -> Result<CanvasDesc, MixerError> {
    let l = &input.layout;
    let members = input.members;
    let mut tiles = Vec::new();
    match l.kind {
        LayoutKind::Grid => {
            // Pinned member first, then the rest in order, at most 25.
            let first = primary.filter(|_| input.floor.is_some());
            let ordered = first
                .iter()
                .filter_map(|f| members.iter().find(|m| m.id == *f))
                .chain(members.iter().filter(|m| Some(m.id) != first))
                .take(super::layout::MAX_GRID_TILES);
            let n = members.len().min(super::layout::MAX_GRID_TILES);
            let rects = l.tiles(n)?;
            for (m, r) in ordered.zip(rects) {
                tiles.push(tile(m, r, speaker));
            }
        }
        LayoutKind::Presenter | LayoutKind::ActiveSpeaker => {
            let Some(big_m) = big.and_then(|b| members.iter().find(|m| m.id == b)) else {
                // Nobody else to show.
                return Ok(CanvasDesc {
                    width: l.width,
                    height: l.height,
                    big: None,
                    tiles,
                });
            };
            let rects = if l.kind == LayoutKind::Presenter {
                l.tiles(1)?
            } else {
                l.tiles(members.len())?
            };
            let mut rects = rects.into_iter();
            if let Some(r) = rects.next() {
                tiles.push(tile(big_m, r, speaker));
            }
            for (m, r) in members.iter().filter(|m| m.id != big_m.id).zip(rects) {
                tiles.push(tile(m, r, speaker));
            }
        }
    }
    Ok(CanvasDesc {
        width: l.width,
        height: l.height,
        big,
        tiles,
    })
}

#[cfg(test)]
mod viewer_tests {
    use super::*;

    #[test]
    fn the_viewer_sees_the_speaker_big_and_everyone() {
        let members: Vec<VideoMember> = (1..=3)
            .map(|id| VideoMember {
                id,
                number: id,
                has_video: true,
                video_off: false,
                subscribed: true,
            })
            .collect();
        let input = SceneInput {
            members: &members,
            active_speaker: Some(2),
            previous_speaker: None,
            floor: None,
            layout: LayoutConfig::new(LayoutKind::ActiveSpeaker, 640, 360),
        };
        let c = viewer_canvas(&input).unwrap();
        assert_eq!(c.big, Some(2));
        assert_eq!(c.tiles.len(), 3);
        assert_eq!(c.tiles[0].member, 2);
        // The same canvas member 1 (not the speaker) gets.
        let mut plan = CanvasPlan::default();
        plan_canvases(&input, &mut plan).unwrap();
        assert_eq!(plan.canvases[plan.canvas_of(1).unwrap()], c);
    }
}
