//! Composition: 1, 4, 9, 16 tiles (grid) of distinct 640x360 sources into 640x360 and
//! 1280x720 canvases, scalar and SIMD. One canvas per iteration, one core.

use comet_mixer::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn source(seed: u32) -> I420Image {
    let mut img = I420Image::new(640, 360).unwrap();
    let (y, u, v) = img.planes_mut();
    for (i, p) in y.iter_mut().enumerate() {
        *p = ((i % 640) as u32 / 3 + (i / 640) as u32 / 2 + seed * 17) as u8;
    }
    for (i, p) in u.iter_mut().enumerate() {
        *p = (i as u32 * 7 + seed) as u8;
    }
    for (i, p) in v.iter_mut().enumerate() {
        *p = (i as u32 * 3 + seed * 5) as u8;
    }
    img
}

fn bench(c: &mut Criterion) {
    let sources: Vec<_> = (0..16).map(source).collect();
    let mut levels = vec![SimdLevel::Scalar];
    levels.extend(SimdLevel::all_supported().filter(|&l| l != SimdLevel::Scalar));
    for (w, h) in [(640u32, 360u32), (1280, 720)] {
        for &level in &levels {
            let mut g = c.benchmark_group(format!("compose/{w}x{h}/{level:?}"));
            for tiles in [1usize, 4, 9, 16] {
                let members: Vec<_> = (0..tiles as u32)
                    .map(|id| VideoMember {
                        id,
                        number: id + 1,
                        has_video: true,
                        video_off: false,
                        subscribed: true,
                    })
                    .collect();
                let mut plan = CanvasPlan::default();
                plan_canvases(
                    &SceneInput {
                        members: &members,
                        active_speaker: Some(0),
                        previous_speaker: None,
                        floor: None,
                        layout: LayoutConfig::new(LayoutKind::Grid, w, h),
                    },
                    &mut plan,
                )
                .unwrap();
                let canvas = &plan.canvases[0];
                let mut out = I420Image::new(w, h).unwrap();
                let mut comp = Compositor::new(level);
                g.bench_function(BenchmarkId::from_parameter(tiles), |b| {
                    b.iter(|| {
                        comp.compose(canvas, |id| Some(sources[id as usize].view()), &mut out)
                            .unwrap();
                        black_box(&out);
                    })
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
