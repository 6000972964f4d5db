//! Opus round trips through a lossy, jittery, duplicating network into the AudioReceiver.

use std::time::{Duration, Instant};

use comet_media::audio::{AudioFrameKind, AudioReceiver, AudioReceiverConfig, AudioSender};
use comet_media::opus::{FRAME_SAMPLES, OpusEncoderConfig};
use comet_media::rtp::RtpPacket;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MS20: Duration = Duration::from_millis(20);

/// Two tones with a slow amplitude modulation, so that concealment cannot simply repeat.
fn signal(frames: usize, channels: usize) -> Vec<i16> {
    let n = frames * FRAME_SAMPLES;
    let mut out = Vec::with_capacity(n * channels);
    for i in 0..n {
        let t = i as f64 / 48_000.0;
        let am = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 1.3 * t).sin();
        let s = am
            * (0.25 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 0.12 * (2.0 * std::f64::consts::PI * 1250.0 * t).sin());
        for c in 0..channels {
            let v = if c == 0 { s } else { -s * 0.8 };
            out.push((v * 32767.0) as i16);
        }
    }
    out
}

struct Outcome {
    correlation: f64,
    fec: u64,
    concealed: u64,
    lost: u64,
    decoded: u64,
}

/// Sends `frames` frames; `loss` is the drop probability. Returns the correlation between the
/// input and the output placed on the stream timeline (RTP timestamps of the output frames),
/// after compensating the codec delay.
fn round_trip(loss: f64, channels: u8, seed: u64) -> Outcome {
    round_trip_with(loss, channels, seed, |_| 5)
}

/// [`round_trip`] with the encoder's complexity set before frame `i` to `complexity(i)`.
fn round_trip_with(
    loss: f64,
    channels: u8,
    seed: u64,
    complexity: impl Fn(usize) -> u8,
) -> Outcome {
    let bitrate = 48_000 * channels as u32;
    let ch = channels as usize;
    let frames = 500; // 10 s
    let input = signal(frames, ch);
    let ts0: u32 = u32::MAX - 100 * 960; // wraps during the test
    let seq0: u16 = 65_000; // wraps too
    let mut sender = AudioSender::new(
        OpusEncoderConfig {
            channels,
            bitrate,
            complexity: 5,
            dtx: false,
            fec: true,
            packet_loss_percent: 0,
        },
        ts0,
    )
    .unwrap();
    sender.set_packet_loss(loss).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let base = Instant::now();
    let mut arrivals: Vec<RtpPacket> = Vec::new();
    let mut seq = seq0;
    for (i, pcm) in input.chunks(FRAME_SAMPLES * ch).enumerate() {
        sender.set_complexity(complexity(i)).unwrap();
        assert_eq!(
            sender.encoder().unwrap().config().complexity,
            complexity(i).min(10)
        );
        let payload = sender.encode(pcm).unwrap().expect("no DTX configured");
        let sent = base + MS20 * i as u32;
        let s = seq;
        seq = seq.wrapping_add(1);
        if rng.random_bool(loss) {
            continue;
        }
        let copies = if rng.random_bool(0.03) { 2 } else { 1 };
        for _ in 0..copies {
            let at = sent + Duration::from_millis(rng.random_range(5..35));
            let mut p = RtpPacket::new(
                s,
                payload.timestamp,
                payload.marker,
                payload.payload.clone(),
                at,
            );
            p.audio_level = payload.audio_level;
            arrivals.push(p);
        }
    }
    arrivals.sort_by_key(|p| p.arrival);

    let mut rx = AudioReceiver::new(AudioReceiverConfig {
        channels,
        ..Default::default()
    })
    .unwrap();
    let mut out = vec![0i16; input.len() + 20 * FRAME_SAMPLES * ch];
    let mut covered = vec![false; frames + 20];
    let mut next = 0;
    for k in 0..(frames as u32 + 30) {
        let now = base + Duration::from_millis(3) + MS20 * k;
        while next < arrivals.len() && arrivals[next].arrival <= now {
            let p = arrivals[next].clone();
            rx.push(p.clone(), p.arrival).unwrap();
            next += 1;
        }
        let f = rx.pop(now);
        assert_eq!(f.samples.len(), FRAME_SAMPLES * ch);
        if let Some(ts) = f.timestamp {
            let frame_idx = ts.wrapping_sub(ts0) as usize / FRAME_SAMPLES;
            if frame_idx < frames {
                let at = frame_idx * FRAME_SAMPLES * ch;
                out[at..at + f.samples.len()].copy_from_slice(&f.samples);
                covered[frame_idx] = true;
            }
        }
    }
    // Opus delays the signal by its lookahead: find it (in samples) on the first frames.
    let corr_at = |delay: usize, from: usize, to: usize| -> f64 {
        let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for (f, _) in covered
            .iter()
            .enumerate()
            .take(to)
            .skip(from.max(1))
            .filter(|(_, c)| **c)
        {
            for s in 0..FRAME_SAMPLES {
                let pos = f * FRAME_SAMPLES + s;
                if pos < delay {
                    continue;
                }
                for c in 0..ch {
                    let x = input[(pos - delay) * ch + c] as f64;
                    let y = out[pos * ch + c] as f64;
                    xy += x * y;
                    xx += x * x;
                    yy += y * y;
                }
            }
        }
        xy / (xx.sqrt() * yy.sqrt()).max(1.0)
    };
    let delay = (0..600)
        .step_by(4)
        .max_by(|&a, &b| corr_at(a, 20, 40).partial_cmp(&corr_at(b, 20, 40)).unwrap());
    let delay = delay.unwrap();
    let delay = (delay.saturating_sub(4)..delay + 4)
        .max_by(|&a, &b| corr_at(a, 20, 40).partial_cmp(&corr_at(b, 20, 40)).unwrap())
        .unwrap();
    // Everything after the start-up must be on the timeline.
    let missing = covered[5..frames].iter().filter(|c| !**c).count();
    assert!(missing <= frames / 50, "{missing} frames never played");
    let s = rx.stats();
    Outcome {
        correlation: corr_at(delay, 5, frames),
        fec: s.fec_recovered,
        concealed: s.concealed,
        lost: s.jitter.lost,
        decoded: s.decoded,
    }
}

#[test]
fn opus_round_trip_without_loss_is_clean() {
    let o = round_trip(0.0, 1, 1);
    eprintln!("0% loss: correlation {:.3}", o.correlation);
    assert!(o.correlation > 0.95, "correlation {}", o.correlation);
    assert_eq!((o.lost, o.fec), (0, 0));
    assert!(o.decoded >= 490);
}

/// The runtime lowers and raises the complexity of live encoders under load: the stream
/// stays clean through the changes (every second frame at another level, 0 to 10 and an
/// out-of-range 11, which is 10).
#[test]
fn opus_complexity_changes_mid_stream_stay_clean() {
    let o = round_trip_with(0.0, 1, 3, |i| [5, 0, 10, 3, 11, 1][(i / 2) % 6]);
    eprintln!("complexity changes: correlation {:.3}", o.correlation);
    assert!(o.correlation > 0.95, "correlation {}", o.correlation);
    assert_eq!((o.lost, o.fec), (0, 0));
    assert!(o.decoded >= 490);
}

#[test]
fn opus_round_trip_with_5_percent_loss_uses_fec() {
    let o = round_trip(0.05, 1, 2);
    eprintln!(
        "5% loss: correlation {:.3}, fec {}, concealed {}, lost {}",
        o.correlation, o.fec, o.concealed, o.lost
    );
    assert!(o.lost >= 10);
    assert!(
        o.fec >= o.lost / 2,
        "FEC recovered only {} of {}",
        o.fec,
        o.lost
    );
    assert!(o.correlation > 0.9, "correlation {}", o.correlation);
}

#[test]
fn opus_round_trip_with_20_percent_loss_degrades_gracefully() {
    let o = round_trip(0.20, 1, 3);
    eprintln!(
        "20% loss: correlation {:.3}, fec {}, concealed {}, lost {}",
        o.correlation, o.fec, o.concealed, o.lost
    );
    assert!(o.lost >= 70);
    assert!(o.fec + o.concealed >= o.lost * 8 / 10);
    assert!(o.correlation > 0.8, "correlation {}", o.correlation);
}

#[test]
fn opus_stereo_round_trip() {
    let clean = round_trip(0.0, 2, 4);
    eprintln!("stereo 0% loss: correlation {:.3}", clean.correlation);
    let o = round_trip(0.05, 2, 4);
    eprintln!("stereo 5% loss: correlation {:.3}", o.correlation);
    assert!(
        clean.correlation > 0.95,
        "correlation {}",
        clean.correlation
    );
    assert!(o.correlation > 0.9, "correlation {}", o.correlation);
}

#[test]
fn dtx_silence_is_not_loss() {
    // 1 s of tone, 2 s of silence, 1 s of tone, with DTX on.
    let tone = signal(50, 1);
    let mut input = tone.clone();
    input.extend(std::iter::repeat_n(0i16, 100 * FRAME_SAMPLES));
    input.extend(&tone);
    let mut sender = AudioSender::new(
        OpusEncoderConfig {
            dtx: true,
            ..Default::default()
        },
        1234,
    )
    .unwrap();
    let mut rx = AudioReceiver::new(AudioReceiverConfig::default()).unwrap();
    let base = Instant::now();
    let mut seq = 0u16;
    let mut sent = 0;
    let mut kinds = Vec::new();
    for (i, pcm) in input.chunks(FRAME_SAMPLES).enumerate() {
        let now = base + MS20 * i as u32;
        if let Some(p) = sender.encode(pcm).unwrap() {
            let at = now + Duration::from_millis(10);
            rx.push(
                RtpPacket::new(seq, p.timestamp, p.marker, p.payload, at),
                at,
            )
            .unwrap();
            seq = seq.wrapping_add(1);
            sent += 1;
        }
        kinds.push(rx.pop(now + Duration::from_millis(15)).kind);
    }
    assert!(sent < 150, "DTX did not suppress packets ({sent} sent)");
    let s = rx.stats();
    assert_eq!(s.jitter.lost, 0);
    assert_eq!(s.fec_recovered, 0);
    // Concealment only at the edges of silence at most, never for the silent stretch.
    assert!(s.concealed <= 6, "{s:?}");
    let silent_mid = kinds[70..130]
        .iter()
        .filter(|k| **k == AudioFrameKind::Silence)
        .count();
    assert!(silent_mid >= 50, "{silent_mid}");
    // Speech after the silence is decoded again.
    let decoded_end = kinds[160..]
        .iter()
        .filter(|k| **k == AudioFrameKind::Decoded)
        .count();
    assert!(decoded_end >= 35, "{decoded_end}");
}

#[test]
fn malformed_opus_is_rejected_and_counted() {
    let mut rx = AudioReceiver::new(AudioReceiverConfig::default()).unwrap();
    let now = Instant::now();
    assert!(
        rx.push(RtpPacket::new(1, 0, false, vec![], now), now)
            .is_err()
    );
    assert!(
        rx.push(RtpPacket::new(2, 960, false, vec![0x4b, 0], now), now)
            .is_err()
    );
    assert_eq!(rx.stats().malformed, 2);
    // The receiver keeps producing frames.
    assert_eq!(rx.pop(now).samples.len(), FRAME_SAMPLES);
}

/// G.711 (PCMU and PCMA) through the same kind of network: 48 kHz frames -> 8 kHz companded
/// packets (160 bytes, 8 kHz timestamps) -> jitter buffer -> 48 kHz frames. The speech-band
/// signal comes back (correlation after the filters' delay), losses are concealed, and
/// malformed payloads are refused and counted.
#[test]
fn g711_round_trips_through_a_lossy_network() {
    use comet_media::audio::AudioCodec;
    use comet_media::g711::Law;
    for law in [Law::Mu, Law::A] {
        for (loss, min_corr) in [(0.0, 0.99), (0.05, 0.9)] {
            let frames = 250;
            let input = signal(frames, 1);
            let mut sender = AudioSender::g711(law, 1000);
            let mut rng = StdRng::seed_from_u64(7);
            let base = Instant::now();
            let mut arrivals = Vec::new();
            for (i, pcm) in input.chunks(FRAME_SAMPLES).enumerate() {
                let p = sender.encode(pcm).unwrap().expect("G.711 has no DTX");
                assert_eq!(p.payload.len(), 160, "20 ms at 8 kHz");
                assert_eq!(p.timestamp, 1000 + 160 * i as u32);
                if rng.random_bool(loss) {
                    continue;
                }
                let at = base + MS20 * i as u32 + Duration::from_millis(rng.random_range(5..30));
                arrivals.push(RtpPacket::new(
                    i as u16,
                    p.timestamp,
                    p.marker,
                    p.payload.clone(),
                    at,
                ));
            }
            arrivals.sort_by_key(|p| p.arrival);
            let mut rx = AudioReceiver::new(AudioReceiverConfig {
                codec: AudioCodec::G711(law),
                ..Default::default()
            })
            .unwrap();
            // Each output frame goes where its RTP timestamp (8 kHz) says on the timeline.
            let mut out = vec![0i16; (frames + 20) * FRAME_SAMPLES];
            let mut covered = vec![false; frames + 20];
            let mut next = 0;
            for k in 0..(frames as u32 + 20) {
                let now = base + Duration::from_millis(3) + MS20 * k;
                while next < arrivals.len() && arrivals[next].arrival <= now {
                    let p = arrivals[next].clone();
                    rx.push(p.clone(), p.arrival).unwrap();
                    next += 1;
                }
                let f = rx.pop(now);
                assert_eq!(f.samples.len(), FRAME_SAMPLES);
                if let Some(ts) = f.timestamp {
                    let idx = ts.wrapping_sub(1000) as usize / 160;
                    if idx < frames {
                        out[idx * FRAME_SAMPLES..(idx + 1) * FRAME_SAMPLES]
                            .copy_from_slice(&f.samples);
                        covered[idx] = true;
                    }
                }
            }
            // The two filters delay the signal by about 1 ms each: find the exact lag.
            let corr = |lag: usize| -> f64 {
                let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
                for f in (1..frames - 1).filter(|&f| covered[f]) {
                    for i in f * FRAME_SAMPLES..(f + 1) * FRAME_SAMPLES {
                        let x = input[i] as f64;
                        let y = out[i + lag] as f64;
                        xy += x * y;
                        xx += x * x;
                        yy += y * y;
                    }
                }
                xy / (xx.sqrt() * yy.sqrt()).max(1.0)
            };
            let (lag, best) = (0..240)
                .map(|l| (l, corr(l)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            let s = rx.stats();
            println!(
                "{law:?} loss {loss}: correlation {best:.3} at lag {lag}, concealed {}, lost {}",
                s.concealed, s.jitter.lost
            );
            assert!(
                best >= min_corr,
                "{law:?} at {loss} loss: correlation {best:.3}"
            );
            if loss > 0.0 {
                assert!(s.concealed > 0, "losses were concealed");
            }
            let bad = RtpPacket::new(9999, 0, false, Vec::new(), base);
            assert!(rx.push(bad, base).is_err());
            assert_eq!(rx.stats().malformed, 1);
        }
    }
}

/// Decodes `input` (20 ms frames, DTX on, RFC 6464 levels as the sender computed them) through
/// a receiver in quiet mode or not; returns the frame kinds and the receiver's stats.
fn dtx_through(
    input: &[i16],
    quiet: bool,
) -> (Vec<AudioFrameKind>, comet_media::audio::AudioReceiverStats) {
    let mut sender = AudioSender::new(
        OpusEncoderConfig {
            dtx: true,
            ..Default::default()
        },
        99,
    )
    .unwrap();
    let mut rx = AudioReceiver::new(AudioReceiverConfig::default()).unwrap();
    rx.set_quiet(quiet);
    let base = Instant::now();
    let mut seq = 0u16;
    let mut kinds = Vec::new();
    for (i, pcm) in input.chunks(FRAME_SAMPLES).enumerate() {
        let now = base + MS20 * i as u32;
        if let Some(p) = sender.encode(pcm).unwrap() {
            let at = now + Duration::from_millis(10);
            let mut packet = RtpPacket::new(seq, p.timestamp, p.marker, p.payload, at);
            packet.audio_level = p.audio_level;
            rx.push(packet, at).unwrap();
            seq = seq.wrapping_add(1);
        }
        kinds.push(rx.pop(now + Duration::from_millis(15)).kind);
    }
    (kinds, rx.stats())
}

#[test]
fn quiet_mode_spends_nothing_on_a_silent_dtx_sender() {
    // 1 s of tone, 3 s of digital silence (DTX: a comfort-noise packet now and then), 1 s of
    // tone.
    let tone = signal(50, 1);
    let mut input = tone.clone();
    input.extend(std::iter::repeat_n(0i16, 150 * FRAME_SAMPLES));
    input.extend(&tone);
    let (normal, _) = dtx_through(&input, false);
    let (quiet, stats) = dtx_through(&input, true);
    let silent = 70..190;
    let decoded = |k: &[AudioFrameKind]| {
        k[silent.clone()]
            .iter()
            .filter(|k| **k != AudioFrameKind::Silence)
            .count()
    };
    // Without quiet mode the comfort-noise packets are decoded (and the gaps after them may
    // be concealed); in quiet mode the whole silent stretch is silence, nothing decoded.
    assert!(decoded(&normal) > 0, "{normal:?}");
    assert_eq!(decoded(&quiet), 0, "{quiet:?}");
    assert_eq!(stats.concealed, 0, "{stats:?}");
    // The tone after the silence (levels under 127) is decoded as usual.
    let decoded_end = quiet[210..]
        .iter()
        .filter(|k| **k == AudioFrameKind::Decoded)
        .count();
    assert!(decoded_end >= 35, "{decoded_end}");
}

#[test]
fn pop_into_gives_what_pop_gives_without_allocating_a_frame() {
    let input = signal(30, 1);
    let mut sender = AudioSender::new(OpusEncoderConfig::default(), 7).unwrap();
    let mut a = AudioReceiver::new(AudioReceiverConfig::default()).unwrap();
    let mut b = AudioReceiver::new(AudioReceiverConfig::default()).unwrap();
    let base = Instant::now();
    let mut out = vec![1i16; FRAME_SAMPLES];
    for (i, pcm) in input.chunks(FRAME_SAMPLES).enumerate() {
        let now = base + MS20 * i as u32;
        // Every fifth packet lost: concealment and FEC take the same path too.
        if i % 5 != 3
            && let Some(p) = sender.encode(pcm).unwrap()
        {
            let at = now + Duration::from_millis(5);
            let packet = RtpPacket::new(i as u16, p.timestamp, p.marker, p.payload, at);
            a.push(packet.clone(), at).unwrap();
            b.push(packet, at).unwrap();
        }
        let frame = a.pop(now + Duration::from_millis(10));
        let info = b.pop_into(now + Duration::from_millis(10), &mut out);
        assert_eq!(frame.samples, out, "frame {i}");
        assert_eq!(
            (frame.kind, frame.audio_level, frame.timestamp),
            (info.kind, info.audio_level, info.timestamp),
            "frame {i}"
        );
    }
    assert_eq!(a.stats(), b.stats());
}

/// `frame_packet` is the packet a popped frame was decoded from when the frame is exactly that
/// packet, and nothing for concealed, FEC-recovered or silent frames, so a mixer can forward it
/// instead of encoding the same audio again.
#[test]
fn a_frame_decoded_from_one_packet_names_that_packet() {
    let input = signal(40, 1);
    let mut sender = AudioSender::new(OpusEncoderConfig::default(), 11).unwrap();
    let mut rx = AudioReceiver::new(AudioReceiverConfig::default()).unwrap();
    let base = Instant::now();
    let mut sent: Vec<Option<Vec<u8>>> = Vec::new();
    let mut out = vec![0i16; FRAME_SAMPLES];
    let (mut named, mut unnamed) = (0, 0);
    for (i, pcm) in input.chunks(FRAME_SAMPLES).enumerate() {
        let now = base + MS20 * i as u32;
        let p = sender
            .encode(pcm)
            .unwrap()
            .expect("no DTX: every frame has a packet");
        // Packets 20 and 21 are lost: their frames are concealed or rebuilt from the next
        // packet's in-band FEC, and name no packet.
        if i == 20 || i == 21 {
            sent.push(None);
        } else {
            sent.push(Some(p.payload.clone()));
            let at = now + Duration::from_millis(5);
            rx.push(
                RtpPacket::new(i as u16, p.timestamp, p.marker, p.payload, at),
                at,
            )
            .unwrap();
        }
        let info = rx.pop_into(now + Duration::from_millis(10), &mut out);
        match info.kind {
            AudioFrameKind::Decoded => {
                // The frame's RTP timestamp says which packet it came from.
                let k = (info.timestamp.unwrap().wrapping_sub(11) / 960) as usize;
                let packet = rx.frame_packet().expect("a decoded frame names its packet");
                assert_eq!(Some(packet), sent[k].as_deref(), "frame {i} (packet {k})");
                named += 1;
            }
            kind => {
                assert_eq!(rx.frame_packet(), None, "frame {i}: {kind:?}");
                unnamed += 1;
            }
        }
    }
    assert!(named >= 30, "{named} named");
    assert!(
        unnamed >= 2,
        "the lost frames and the start are not named: {unnamed}"
    );
}
