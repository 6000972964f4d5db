//! Audio mixing throughput: scalar vs SIMD, against a memcpy of the same bytes.
//!
//! `mix/<K>/<level>/<N>`: one 20 ms mono frame for N members, everyone talking. K=all mixes
//! every member (N own N-1 outputs, the worst case); K=3 is the default configuration.
//! `memcpy/<N>`: copying the N input frames into N output buffers (the machine's limit).
//! Throughput is reported over the N input frames (N x 1920 bytes).

use comet_mixer::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const COUNTS: [usize; 5] = [2, 8, 32, 128, 512];

fn inputs(n: usize) -> Vec<Vec<i16>> {
    (0..n)
        .map(|i| {
            let f = 200.0 + 13.0 * i as f32;
            (0..SAMPLES_PER_CHANNEL)
                .map(|t| (3000.0 * (t as f32 * f * std::f32::consts::TAU / 48000.0).sin()) as i16)
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let frame_bytes = (SAMPLES_PER_CHANNEL * 2) as u64;
    let mut levels = vec![SimdLevel::Scalar];
    levels.extend(SimdLevel::all_supported().filter(|&l| l != SimdLevel::Scalar));

    let mut g = c.benchmark_group("memcpy");
    for n in COUNTS {
        g.throughput(Throughput::Bytes(n as u64 * frame_bytes));
        let src = inputs(n);
        let mut dst = vec![vec![0i16; SAMPLES_PER_CHANNEL]; n];
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                for (d, s) in dst.iter_mut().zip(&src) {
                    d.copy_from_slice(black_box(s));
                }
                black_box(&dst);
            })
        });
    }
    g.finish();

    for (k_name, k_all) in [("all", true), ("3", false)] {
        for &level in &levels {
            let mut g = c.benchmark_group(format!("mix/{k_name}/{level:?}"));
            for n in COUNTS {
                g.throughput(Throughput::Bytes(n as u64 * frame_bytes));
                let src = inputs(n);
                let mut m = AudioMixer::new(MixerConfig {
                    max_talkers: if k_all { n } else { 3 },
                    simd: level,
                    ..MixerConfig::default()
                })
                .unwrap();
                let ids: Vec<_> = (0..n).map(|_| m.add_member().unwrap()).collect();
                let frame: Vec<_> = ids
                    .iter()
                    .zip(&src)
                    .map(|(&member, pcm)| MemberInput {
                        member,
                        pcm,
                        audio_level: None,
                    })
                    .collect();
                let mut now = 0u64;
                for _ in 0..10 {
                    now += 20;
                    m.mix(now, &frame).unwrap();
                }
                assert_eq!(m.mixed_members().count(), if k_all { n } else { n.min(3) });
                g.bench_function(BenchmarkId::from_parameter(n), |b| {
                    b.iter(|| {
                        now += 20;
                        m.mix(now, black_box(&frame)).unwrap();
                        black_box(m.shared_mix());
                    })
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
