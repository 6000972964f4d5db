//! Codec and jitter buffer costs. Run with
//! `cargo bench -p comet-media --bench media -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use comet_media::frame::I420Frame;
use comet_media::jitter::{JitterBuffer, JitterConfig};
use comet_media::opus::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusEncoderConfig};
use comet_media::rtp::RtpPacket;
use comet_media::video_codec::{H264Decoder, H264Encoder, H264EncoderConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn speech_like(frames: usize) -> Vec<Vec<i16>> {
    (0..frames)
        .map(|f| {
            (0..FRAME_SAMPLES)
                .map(|i| {
                    let t = (f * FRAME_SAMPLES + i) as f64 / 48_000.0;
                    let am = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                    (am * 8000.0
                        * ((2.0 * std::f64::consts::PI * 220.0 * t).sin()
                            + 0.5 * (2.0 * std::f64::consts::PI * 1400.0 * t).sin()))
                        as i16
                })
                .collect()
        })
        .collect()
}

fn opus(c: &mut Criterion) {
    let pcm = speech_like(50);
    let mut g = c.benchmark_group("opus_20ms_mono_32kbps");
    for complexity in [10u8, 5, 0] {
        let mut enc = OpusEncoder::new(OpusEncoderConfig {
            complexity,
            ..Default::default()
        })
        .unwrap();
        let mut i = 0;
        g.bench_function(format!("encode_complexity_{complexity}"), |b| {
            b.iter(|| {
                i = (i + 1) % pcm.len();
                black_box(enc.encode(&pcm[i]).unwrap())
            })
        });
        let mut enc = OpusEncoder::new(OpusEncoderConfig {
            complexity,
            ..Default::default()
        })
        .unwrap();
        let packets: Vec<Vec<u8>> = pcm.iter().map(|f| enc.encode(f).unwrap()).collect();
        let mut dec = OpusDecoder::new(1).unwrap();
        let mut out = Vec::with_capacity(FRAME_SAMPLES);
        let mut i = 0;
        g.bench_function(format!("decode_complexity_{complexity}"), |b| {
            b.iter(|| {
                i = (i + 1) % packets.len();
                out.clear();
                black_box(dec.decode(&packets[i], &mut out).unwrap())
            })
        });
    }
    g.finish();
}

fn pattern(w: u32, h: u32, t: u32) -> I420Frame {
    let mut f = I420Frame::black(w, h);
    for y in 0..h as usize {
        for x in 0..w as usize {
            f.y[y * f.stride_y + x] = (((x ^ y) + 3 * t as usize) % 220) as u8 + 16;
        }
    }
    f
}

fn h264(c: &mut Criterion) {
    let mut g = c.benchmark_group("h264");
    g.sample_size(20);
    for (w, h, bitrate) in [(640u32, 360u32, 800_000u32), (1280, 720, 2_000_000)] {
        let frames: Vec<I420Frame> = (0..30).map(|t| pattern(w, h, t)).collect();
        let cfg = H264EncoderConfig {
            bitrate,
            fps: 30.0,
            keyframe_interval: 3000,
            threads: 1,
        };
        let mut enc = H264Encoder::new(cfg).unwrap();
        let mut i = 0;
        g.bench_function(format!("encode_{w}x{h}"), |b| {
            b.iter(|| {
                i += 1;
                black_box(enc.encode(&frames[i % frames.len()]).unwrap())
            })
        });
        // Decode a 30-frame GOP (keyframe first) in a loop.
        let mut enc = H264Encoder::new(cfg).unwrap();
        let gop: Vec<Vec<u8>> = frames
            .iter()
            .enumerate()
            .map(|(k, f)| {
                if k == 0 {
                    enc.request_keyframe();
                }
                enc.encode(f).unwrap().data
            })
            // Rate control may skip a picture: nothing to decode then.
            .filter(|au| !au.is_empty())
            .collect();
        let mut dec = H264Decoder::new().unwrap();
        let mut i = 0;
        g.bench_function(format!("decode_{w}x{h}"), |b| {
            b.iter(|| {
                let au = &gop[i % gop.len()];
                i += 1;
                black_box(dec.decode(au).unwrap())
            })
        });
    }
    g.finish();
}

fn jitter(c: &mut Criterion) {
    let base = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let payload = vec![0x48u8; 80];
    let mut k: u32 = 0;
    c.bench_function("jitter_buffer_push_pop_per_packet", |b| {
        b.iter(|| {
            let now = base + Duration::from_millis(20 * k as u64);
            // Mild reordering: swap every 7th pair.
            let seq = if k % 7 == 3 {
                k + 1
            } else if k % 7 == 4 {
                k - 1
            } else {
                k
            };
            let p = RtpPacket::new(
                seq as u16,
                seq.wrapping_mul(960),
                false,
                payload.clone(),
                now,
            );
            black_box(jb.push(p, now));
            black_box(jb.pop(now));
            k = k.wrapping_add(1);
        })
    });
}

criterion_group!(benches, opus, h264, jitter);
criterion_main!(benches);
