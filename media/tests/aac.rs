//! AAC encoding for RTMP: frames decode back (FFmpeg's AAC decoder) to the tone we put in.

use comet_media::aac::{AacConfig, AacEncoder, AacFrame, adts_header};

fn tone(freq: f64, seconds: f64, channels: usize) -> Vec<i16> {
    let n = (48_000.0 * seconds) as usize;
    let mut out = Vec::with_capacity(n * channels);
    for i in 0..n {
        let v = (0.4 * (2.0 * std::f64::consts::PI * freq * i as f64 / 48_000.0).sin() * 32767.0)
            as i16;
        for _ in 0..channels {
            out.push(v);
        }
    }
    out
}

/// Decodes ADTS-wrapped frames; returns (sample rate, channels, first channel's samples).
fn decode(frames: &[AacFrame], cfg: &AacConfig) -> (u32, u16, Vec<f32>) {
    ffmpeg_next::init().unwrap();
    let codec = ffmpeg_next::decoder::find(ffmpeg_next::codec::Id::AAC).unwrap();
    let mut dec = ffmpeg_next::codec::context::Context::new_with_codec(codec)
        .decoder()
        .audio()
        .unwrap();
    let mut samples = Vec::new();
    let (mut rate, mut channels) = (0, 0);
    let mut frame = ffmpeg_next::frame::Audio::empty();
    for f in frames {
        let mut adts = adts_header(f.data.len(), cfg.sample_rate, cfg.channels)
            .unwrap()
            .to_vec();
        adts.extend_from_slice(&f.data);
        dec.send_packet(&ffmpeg_next::Packet::copy(&adts)).unwrap();
        while dec.receive_frame(&mut frame).is_ok() {
            rate = frame.rate();
            channels = frame.channels();
            assert_eq!(
                frame.format(),
                ffmpeg_next::format::Sample::F32(ffmpeg_next::format::sample::Type::Planar)
            );
            let plane: &[f32] = frame.plane(0);
            samples.extend_from_slice(&plane[..frame.samples()]);
        }
    }
    (rate, channels, samples)
}

/// Frequency from zero crossings over the steady part.
fn frequency(samples: &[f32], rate: u32) -> f64 {
    let s = &samples[samples.len() / 4..samples.len() * 3 / 4];
    let crossings = s.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    crossings as f64 * rate as f64 / s.len() as f64
}

fn check(cfg: AacConfig, freq: f64) {
    let mut enc = AacEncoder::new(cfg).unwrap();
    assert_eq!(enc.frame_size(), 1024);
    let pcm = tone(freq, 2.0, cfg.input_channels as usize);
    let mut frames = Vec::new();
    // 20 ms chunks, as the conference produces them.
    for chunk in pcm.chunks(960 * cfg.input_channels as usize) {
        frames.extend(enc.encode(chunk).unwrap());
    }
    frames.extend(enc.flush().unwrap());
    let expected = (2.0 * cfg.sample_rate as f64 / 1024.0).ceil() as usize;
    assert!(
        frames.len() >= expected && frames.len() <= expected + 3,
        "{} frames, expected about {expected}",
        frames.len()
    );
    // Timestamps advance by one frame each.
    for w in frames.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 1024);
    }
    assert!(
        frames
            .iter()
            .all(|f| !f.data.is_empty() && f.data.len() < 2000)
    );
    let (rate, channels, decoded) = decode(&frames, &cfg);
    assert_eq!(rate, cfg.sample_rate);
    assert_eq!(channels, u16::from(cfg.channels));
    let got = frequency(&decoded, rate);
    assert!(
        (got - freq).abs() < freq * 0.01,
        "decoded {got:.1} Hz, sent {freq} Hz"
    );
    let peak = decoded.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.3 && peak < 0.5, "peak {peak}");
}

#[test]
fn aac_44_1_khz_stereo_from_mono_48_khz() {
    let cfg = AacConfig {
        sample_rate: 44_100,
        channels: 2,
        bitrate: 128_000,
        input_channels: 1,
    };
    assert_eq!(
        AacEncoder::new(cfg).unwrap().audio_specific_config(),
        [0x12, 0x10]
    );
    check(cfg, 1000.0);
}

#[test]
fn aac_48_khz_mono_from_stereo() {
    let cfg = AacConfig {
        sample_rate: 48_000,
        channels: 1,
        bitrate: 64_000,
        input_channels: 2,
    };
    assert_eq!(
        AacEncoder::new(cfg).unwrap().audio_specific_config(),
        [0x11, 0x88]
    );
    check(cfg, 440.0);
}

#[test]
fn aac_48_khz_stereo() {
    let cfg = AacConfig::default();
    let cfg = AacConfig {
        input_channels: 2,
        ..cfg
    };
    assert_eq!(
        AacEncoder::new(cfg).unwrap().audio_specific_config(),
        [0x11, 0x90]
    );
    check(cfg, 2500.0);
}

#[test]
fn aac_rejects_bad_settings() {
    assert!(
        AacEncoder::new(AacConfig {
            sample_rate: 32_000,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        AacEncoder::new(AacConfig {
            channels: 3,
            ..Default::default()
        })
        .is_err()
    );
    let mut enc = AacEncoder::new(AacConfig {
        input_channels: 2,
        ..Default::default()
    })
    .unwrap();
    assert!(enc.encode(&[1, 2, 3]).is_err());
}
