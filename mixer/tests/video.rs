//! Layout geometry, canvas planning and compositor pixels.

use comet_mixer::*;

const CANVASES: [(u32, u32); 5] = [
    (640, 360),
    (1280, 720),
    (1920, 1080),
    (320, 240),
    (176, 144),
];

fn check_tiles(tiles: &[Rect], w: u32, h: u32, what: &str) {
    let canvas = Rect::new(0, 0, w, h);
    for (i, t) in tiles.iter().enumerate() {
        assert!(!t.is_empty(), "{what}: tile {i} empty");
        assert!(canvas.contains(t), "{what}: tile {i} {t:?} outside {w}x{h}");
        assert!(t.is_even_aligned(), "{what}: tile {i} {t:?} not even");
        for (j, u) in tiles.iter().enumerate().skip(i + 1) {
            assert!(
                !t.intersects(u),
                "{what}: tiles {i} {t:?} and {j} {u:?} overlap"
            );
        }
    }
}

#[test]
fn grid_geometry_for_every_count() {
    for (w, h) in CANVASES {
        for n in 1..=25 {
            let cfg = LayoutConfig::new(LayoutKind::Grid, w, h);
            let tiles = cfg.tiles(n).unwrap();
            assert_eq!(tiles.len(), n);
            check_tiles(&tiles, w, h, &format!("grid {n} on {w}x{h}"));
            // All cells the same size, and they use the canvas well: at least one dimension of
            // the grid block spans most of the canvas.
            assert!(tiles.iter().all(|t| t.w == tiles[0].w && t.h == tiles[0].h));
            let right = tiles.iter().map(|t| t.right()).max().unwrap();
            let left = tiles.iter().map(|t| t.x).min().unwrap();
            let bottom = tiles.iter().map(|t| t.bottom()).max().unwrap();
            let top = tiles.iter().map(|t| t.y).min().unwrap();
            assert!((right - left) * 10 >= w * 9 || (bottom - top) * 10 >= h * 9);
        }
    }
    let g = |n| {
        LayoutConfig::new(LayoutKind::Grid, 1280, 720)
            .tiles(n)
            .unwrap()
    };
    assert_eq!(g(1)[0], Rect::new(0, 0, 1280, 720));
    assert_eq!(g(4)[3], Rect::new(640, 360, 640, 360), "2x2");
    assert_eq!(g(9)[8], Rect::new(852, 480, 426, 240), "3x3");
    assert_eq!(g(16)[15], Rect::new(960, 540, 320, 180), "4x4");
    // 3 tiles: 2 on top, 1 centred below.
    let t = g(3);
    assert_eq!((t[0].y, t[2].y), (0, 360));
    assert_eq!(t[2].x, 320);
    assert!(matches!(
        LayoutConfig::new(LayoutKind::Grid, 1280, 720).tiles(26),
        Err(MixerError::TooManyTiles { .. })
    ));
    assert!(LayoutConfig::new(LayoutKind::Grid, 4, 2).tiles(25).is_err());
    assert!(
        LayoutConfig::new(LayoutKind::Grid, 641, 360)
            .tiles(1)
            .is_err()
    );
    assert!(
        LayoutConfig::new(LayoutKind::Grid, 640, 360)
            .tiles(0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn active_speaker_and_presenter_geometry() {
    for (w, h) in CANVASES {
        for n in 1..=25 {
            let tiles = LayoutConfig::new(LayoutKind::ActiveSpeaker, w, h)
                .tiles(n)
                .unwrap();
            assert_eq!(tiles.len(), 1 + (n - 1).min(6));
            check_tiles(&tiles, w, h, &format!("speaker {n} on {w}x{h}"));
            // The big tile is the largest.
            assert!(
                tiles[1..]
                    .iter()
                    .all(|t| t.w * t.h < tiles[0].w * tiles[0].h)
            );
            let p = LayoutConfig::new(LayoutKind::Presenter, w, h)
                .tiles(n)
                .unwrap();
            assert_eq!(p, vec![Rect::new(0, 0, w, h)]);
        }
    }
}

#[test]
fn fit_preserves_aspect() {
    let cells = [
        Rect::new(0, 0, 640, 360),
        Rect::new(10, 20, 426, 240),
        Rect::new(2, 2, 200, 400),
    ];
    let sources = [
        (1280, 720),
        (640, 480),
        (480, 640),
        (1920, 800),
        (176, 144),
        (3, 2),
        (1000, 1000),
    ];
    for cell in cells {
        for (sw, sh) in sources {
            let f = fit_rect(sw, sh, cell);
            assert!(
                cell.contains(&f) && f.is_even_aligned(),
                "{f:?} in {cell:?}"
            );
            let want = sw as f64 / sh as f64;
            let got = f.w as f64 / f.h as f64;
            // Even rounding moves each side by at most 2 pixels.
            let tol = want * (2.0 / f.w as f64 + 2.0 / f.h as f64);
            assert!(
                (got - want).abs() <= tol,
                "{sw}x{sh} in {cell:?}: {got} vs {want}"
            );
            assert!(
                f.w + 2 >= cell.w || f.h + 2 >= cell.h,
                "fit is as large as possible"
            );
            // centred
            let (l, r) = (f.x - cell.x, cell.right() - f.right());
            let (t, b) = (f.y - cell.y, cell.bottom() - f.bottom());
            assert!(l.abs_diff(r) <= 2 && t.abs_diff(b) <= 2);
        }
    }
}

fn solid(w: u32, h: u32, c: Yuv) -> I420Image {
    I420Image::filled(w, h, c).unwrap()
}

const RED: Yuv = Yuv {
    y: 81,
    u: 90,
    v: 240,
};
const BLUE: Yuv = Yuv {
    y: 41,
    u: 240,
    v: 110,
};

fn member(id: u32) -> VideoMember {
    VideoMember {
        id,
        number: id,
        has_video: true,
        video_off: false,
        subscribed: true,
    }
}

fn single_tile(
    rect: Rect,
    member: u32,
    content: TileContent,
    border: bool,
    w: u32,
    h: u32,
) -> CanvasDesc {
    CanvasDesc {
        width: w,
        height: h,
        big: None,
        tiles: vec![TileDesc {
            member,
            rect,
            content,
            border,
        }],
    }
}

#[test]
fn solid_source_lands_in_its_tile_with_black_letterbox() {
    let src = solid(640, 480, RED); // 4:3 into a 16:9 tile: pillarbox bars left and right
    let tile = Rect::new(640, 0, 640, 360);
    let canvas = single_tile(tile, 1, TileContent::Video, false, 1280, 720);
    for level in SimdLevel::all_supported() {
        let mut out = I420Image::new(1280, 720).unwrap();
        Compositor::new(level)
            .compose(&canvas, |id| (id == 1).then(|| src.view()), &mut out)
            .unwrap();
        let fit = fit_rect(640, 480, tile);
        assert_eq!(fit, Rect::new(720, 0, 480, 360));
        for y in (0..720).step_by(3) {
            for x in (0..1280).step_by(3) {
                let p = out.pixel(x, y).unwrap();
                let inside = x >= fit.x && x < fit.right() && y >= fit.y && y < fit.bottom();
                if inside {
                    assert_eq!(p, RED, "({x},{y}) inside the picture");
                } else {
                    assert_eq!(p, BLACK, "({x},{y}) is letterbox/background");
                }
            }
        }
    }
}

#[test]
fn scaled_content_is_placed_correctly() {
    // Left half red, right half blue: after scaling, the tile's left half is red and its
    // right half blue (away from the blended seam).
    let mut src = I420Image::new(320, 180).unwrap();
    {
        let (y, u, v) = src.planes_mut();
        for row in 0..180 {
            for col in 0..320 {
                y[row * 320 + col] = if col < 160 { RED.y } else { BLUE.y };
            }
        }
        for row in 0..90 {
            for col in 0..160 {
                let c = if col < 80 { RED } else { BLUE };
                u[row * 160 + col] = c.u;
                v[row * 160 + col] = c.v;
            }
        }
    }
    for (tw, th) in [(640, 360), (160, 90), (1280, 720), (98, 56)] {
        let tile = Rect::new(0, 0, tw, th);
        let canvas = single_tile(tile, 3, TileContent::Video, false, 1280, 720);
        let mut out = I420Image::new(1280, 720).unwrap();
        Compositor::default()
            .compose(&canvas, |_| Some(src.view()), &mut out)
            .unwrap();
        let f = fit_rect(320, 180, tile);
        for y in [f.y, f.y + f.h / 2, f.bottom() - 1] {
            assert_eq!(out.pixel(f.x, y).unwrap(), RED, "{tw}x{th}");
            assert_eq!(out.pixel(f.x + f.w / 2 - 6, y).unwrap(), RED, "{tw}x{th}");
            assert_eq!(out.pixel(f.x + f.w / 2 + 6, y).unwrap(), BLUE, "{tw}x{th}");
            assert_eq!(out.pixel(f.right() - 1, y).unwrap(), BLUE, "{tw}x{th}");
        }
        if f.bottom() < 720 {
            assert_eq!(
                out.pixel(f.x, f.bottom()).unwrap(),
                BLACK,
                "below the picture"
            );
        }
    }
}

#[test]
fn border_around_the_active_speaker_only() {
    let members: Vec<_> = (1..=4).map(member).collect();
    let input = SceneInput {
        members: &members,
        active_speaker: Some(2),
        previous_speaker: None,
        floor: None,
        layout: LayoutConfig::new(LayoutKind::Grid, 1280, 720),
    };
    let mut plan = CanvasPlan::default();
    plan_canvases(&input, &mut plan).unwrap();
    assert_eq!(plan.canvases.len(), 1);
    let canvas = &plan.canvases[0];
    let srcs: Vec<_> = (0..4)
        .map(|i| solid(1280, 720, if i % 2 == 0 { RED } else { BLUE }))
        .collect();
    let mut out = I420Image::new(1280, 720).unwrap();
    Compositor::default()
        .compose(canvas, |id| Some(srcs[id as usize - 1].view()), &mut out)
        .unwrap();
    for t in &canvas.tiles {
        let bw = border_width(t.rect);
        let corner = out.pixel(t.rect.x, t.rect.y).unwrap();
        let edge_mid = out
            .pixel(t.rect.x + t.rect.w / 2, t.rect.bottom() - 1)
            .unwrap();
        let inside = out.pixel(t.rect.x + bw + 2, t.rect.y + bw + 2).unwrap();
        let fill = if t.member % 2 == 1 { RED } else { BLUE };
        if t.member == 2 {
            assert!(t.border);
            assert_eq!(corner, BORDER);
            assert_eq!(edge_mid, BORDER);
            assert_eq!(
                out.pixel(t.rect.right() - 1, t.rect.y + t.rect.h / 2)
                    .unwrap(),
                BORDER
            );
            assert_eq!(
                out.pixel(t.rect.x + bw - 1, t.rect.y + t.rect.h / 2)
                    .unwrap(),
                BORDER
            );
        } else {
            assert!(!t.border);
            assert_eq!(corner, fill);
            assert_eq!(edge_mid, fill);
        }
        assert_eq!(inside, fill);
    }
}

#[test]
fn no_video_tile_is_dark_and_numbered() {
    let tile = Rect::new(0, 0, 320, 180);
    let render = |number: u32, content: TileContent| {
        let canvas = single_tile(tile, number, content, false, 320, 180);
        let mut out = I420Image::new(320, 180).unwrap();
        Compositor::default()
            .compose(&canvas, |_| None, &mut out)
            .unwrap();
        out
    };
    let a = render(7, TileContent::NoVideo { number: 7 });
    let (y, u, v) = a.planes();
    let mean = y.iter().map(|&p| p as u64).sum::<u64>() / y.len() as u64;
    assert!(mean < 70, "dark tile, mean luma {mean}");
    assert!(u.iter().chain(v).all(|&c| c == 128), "grey, no colour");
    let lit = y.iter().filter(|&&p| p == 200).count();
    assert!(lit > 100, "the number is drawn ({lit} pixels)");
    assert_eq!(a.pixel(1, 1).unwrap(), NO_VIDEO);
    // Different numbers draw differently; "8" lights more pixels than "1".
    let count = |img: &I420Image| img.planes().0.iter().filter(|&&p| p == 200).count();
    let one = render(1, TileContent::NoVideo { number: 1 });
    let eight = render(8, TileContent::NoVideo { number: 8 });
    assert!(count(&eight) > count(&one));
    let big = render(4321, TileContent::NoVideo { number: 4321 });
    assert!(count(&big) > count(&eight));
    // A Video tile whose source is missing falls back to the no-video tile.
    let missing = render(5, TileContent::Video);
    assert_eq!(missing.pixel(1, 1).unwrap(), NO_VIDEO);
}

fn of(plan: &CanvasPlan, s: u32) -> &CanvasDesc {
    &plan.canvases[plan.canvas_of(s).unwrap()]
}

#[test]
fn canvas_plan_active_speaker() {
    let members: Vec<_> = (1..=5).map(member).collect();
    let mut input = SceneInput {
        members: &members,
        active_speaker: Some(3),
        previous_speaker: Some(1),
        floor: None,
        layout: LayoutConfig::new(LayoutKind::ActiveSpeaker, 1280, 720),
    };
    let mut plan = CanvasPlan::default();
    plan_canvases(&input, &mut plan).unwrap();
    assert_eq!(plan.canvases.len(), 2, "everyone else shares one canvas");
    assert_eq!(plan.assignment.len(), 5);
    assert_eq!(of(&plan, 1).big, Some(3));
    assert_eq!(of(&plan, 2), of(&plan, 5));
    assert_eq!(
        of(&plan, 3).big,
        Some(1),
        "the speaker sees the previous speaker"
    );
    assert_eq!(of(&plan, 3).tiles[0].member, 1);
    assert!(
        of(&plan, 1).tiles[0].border,
        "speaker's big tile has the border"
    );
    assert!(of(&plan, 3).tiles.iter().any(|t| t.member == 3 && t.border));

    // Pinned floor overrides the speaker; the pinned member sees the previous speaker.
    input.floor = Some(5);
    plan_canvases(&input, &mut plan).unwrap();
    assert_eq!(of(&plan, 1).big, Some(5));
    assert_eq!(of(&plan, 3).big, Some(5));
    assert_eq!(of(&plan, 5).big, Some(1));
    // A pinned member that left is ignored.
    input.floor = Some(42);
    plan_canvases(&input, &mut plan).unwrap();
    assert_eq!(of(&plan, 1).big, Some(3));

    // Video off / no video -> no-video tile.
    let mut members2 = members.clone();
    members2[2].video_off = true;
    members2[3].has_video = false;
    members2[4].subscribed = false;
    input.members = &members2;
    input.floor = None;
    plan_canvases(&input, &mut plan).unwrap();
    assert_eq!(plan.assignment.len(), 4);
    assert!(plan.canvas_of(5).is_none());
    let c = of(&plan, 1);
    assert_eq!(c.tiles[0].content, TileContent::NoVideo { number: 3 });
    let t4 = c.tiles.iter().find(|t| t.member == 4).unwrap();
    assert_eq!(t4.content, TileContent::NoVideo { number: 4 });

    // Presenter: one tile; grid: one canvas for all.
    input.layout.kind = LayoutKind::Presenter;
    plan_canvases(&input, &mut plan).unwrap();
    assert!(plan.canvases.iter().all(|c| c.tiles.len() == 1));
    input.layout.kind = LayoutKind::Grid;
    plan_canvases(&input, &mut plan).unwrap();
    assert_eq!(plan.canvases.len(), 1);
    assert_eq!(plan.canvases[0].tiles.len(), 5);

    // Alone: no big tile showing oneself.
    let alone = [member(9)];
    input.members = &alone;
    input.layout.kind = LayoutKind::ActiveSpeaker;
    input.active_speaker = Some(9);
    plan_canvases(&input, &mut plan).unwrap();
    assert!(plan.canvases[0].tiles.iter().all(|t| t.member != 9));
}

#[test]
fn nobody_sees_themselves_in_the_big_tile() {
    // Exhaustive over small scenes: every speaker/previous/floor choice.
    let members: Vec<_> = (1..=4).map(member).collect();
    let opts = [None, Some(1), Some(2), Some(3), Some(4), Some(7)];
    let mut plan = CanvasPlan::default();
    for kind in [
        LayoutKind::ActiveSpeaker,
        LayoutKind::Presenter,
        LayoutKind::Grid,
    ] {
        for speaker in opts {
            for prev in opts {
                for floor in opts {
                    let input = SceneInput {
                        members: &members,
                        active_speaker: speaker,
                        previous_speaker: prev,
                        floor,
                        layout: LayoutConfig::new(kind, 640, 360),
                    };
                    plan_canvases(&input, &mut plan).unwrap();
                    assert_eq!(plan.assignment.len(), 4);
                    for &(sub, c) in &plan.assignment {
                        let canvas = &plan.canvases[c];
                        if kind != LayoutKind::Grid {
                            assert_ne!(canvas.big, Some(sub));
                            assert!(canvas.big.is_some());
                            assert_eq!(canvas.tiles[0].member, canvas.big.unwrap());
                        }
                        check_tiles(
                            &canvas.tiles.iter().map(|t| t.rect).collect::<Vec<_>>(),
                            640,
                            360,
                            "plan",
                        );
                    }
                    // Distinct canvases really are distinct.
                    for (i, a) in plan.canvases.iter().enumerate() {
                        assert!(plan.canvases[i + 1..].iter().all(|b| b != a));
                    }
                    assert!(plan.canvases.len() <= 2);
                }
            }
        }
    }
}

#[test]
fn compose_rejects_bad_input() {
    let canvas = single_tile(
        Rect::new(0, 0, 64, 36),
        1,
        TileContent::Video,
        false,
        64,
        36,
    );
    let mut wrong = I420Image::new(32, 36).unwrap();
    assert!(
        Compositor::default()
            .compose(&canvas, |_| None, &mut wrong)
            .is_err()
    );
    let outside = single_tile(
        Rect::new(32, 0, 64, 36),
        1,
        TileContent::Video,
        false,
        64,
        36,
    );
    let mut out = I420Image::new(64, 36).unwrap();
    assert!(
        Compositor::default()
            .compose(&outside, |_| None, &mut out)
            .is_err()
    );
    let odd = single_tile(
        Rect::new(1, 0, 32, 36),
        1,
        TileContent::Video,
        false,
        64,
        36,
    );
    assert!(
        Compositor::default()
            .compose(&odd, |_| None, &mut out)
            .is_err()
    );
    let buf = [0u8; 100];
    assert!(
        I420View::new(16, 16, &buf, 16, &buf, &buf, 8).is_err(),
        "Y plane too short"
    );
    assert!(
        I420View::new(8, 8, &buf, 4, &buf, &buf, 4).is_err(),
        "stride below width"
    );
    assert!(I420View::new(0, 8, &buf, 8, &buf, &buf, 4).is_err());
    assert!(
        I420View::new(9, 9, &buf, 9, &buf, &buf, 5).is_ok(),
        "odd sizes are fine"
    );
    assert!(I420Image::new(0, 4).is_err());
}

#[test]
fn strided_odd_sized_sources_and_simd_levels_agree() {
    // A 101x57 source with padded strides and varied content, composed into a 16-tile
    // grid on every SIMD level: identical canvases.
    let (w, h, ys, cs) = (101u32, 57u32, 128usize, 64usize);
    let mut y = vec![0u8; ys * h as usize];
    let mut u = vec![0u8; cs * 29];
    let mut v = vec![0u8; cs * 29];
    let mut r = 12345u32;
    for p in y.iter_mut().chain(u.iter_mut()).chain(v.iter_mut()) {
        r ^= r << 13;
        r ^= r >> 17;
        r ^= r << 5;
        *p = r as u8;
    }
    let view = I420View::new(w, h, &y, ys, &u, &v, cs).unwrap();
    let members: Vec<_> = (1..=16).map(member).collect();
    let mut plan = CanvasPlan::default();
    plan_canvases(
        &SceneInput {
            members: &members,
            active_speaker: Some(5),
            previous_speaker: None,
            floor: None,
            layout: LayoutConfig::new(LayoutKind::Grid, 640, 360),
        },
        &mut plan,
    )
    .unwrap();
    let compose = |level| {
        let mut out = I420Image::new(640, 360).unwrap();
        Compositor::new(level)
            .compose(&plan.canvases[0], |_| Some(view), &mut out)
            .unwrap();
        out
    };
    let want = compose(SimdLevel::Scalar);
    for level in SimdLevel::all_supported() {
        assert!(compose(level) == want, "{level:?}");
    }
}
