//! Jitter buffer behaviour on a simulated clock.

use std::time::{Duration, Instant};

use comet_media::jitter::{JitterBuffer, JitterConfig, Playout, PushOutcome};
use comet_media::rtp::RtpPacket;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FRAME: u32 = 960;
const MS20: Duration = Duration::from_millis(20);

fn pkt(seq: u16, ts: u32, at: Instant) -> RtpPacket {
    // A payload that says which frame it is (longer than a DTX packet).
    let mut payload = seq.to_be_bytes().to_vec();
    payload.resize(40, 0xaa);
    RtpPacket::new(seq, ts, false, payload, at)
}

fn seq_of(p: &Playout) -> Option<u16> {
    match p {
        Playout::Packet { payload, .. } if payload.len() >= 2 => {
            Some(u16::from_be_bytes([payload[0], payload[1]]))
        }
        Playout::Packet { .. } => Some(u16::MAX),
        _ => None,
    }
}

/// Runs a stream of `n` packets through the buffer. `delay(i)` is the network delay of packet
/// `i` (None = lost). Pops every 20 ms, starting 5 ms after the first send, and returns
/// (playouts, buffer).
fn run(
    n: u32,
    seq0: u16,
    ts0: u32,
    mut delay: impl FnMut(u32) -> Option<Duration>,
    extra_pops: u32,
) -> (Vec<Playout>, JitterBuffer) {
    let base = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut arrivals: Vec<(Instant, RtpPacket)> = Vec::new();
    for i in 0..n {
        let sent = base + MS20 * i;
        if let Some(d) = delay(i) {
            let at = sent + d;
            arrivals.push((
                at,
                pkt(seq0.wrapping_add(i as u16), ts0.wrapping_add(i * FRAME), at),
            ));
        }
    }
    arrivals.sort_by_key(|(at, _)| *at);
    let mut out = Vec::new();
    let mut next = 0;
    for k in 0..(n + extra_pops) {
        let now = base + Duration::from_millis(5) + MS20 * k;
        while next < arrivals.len() && arrivals[next].0 <= now {
            let (at, p) = arrivals[next].clone();
            jb.push(p, at);
            next += 1;
        }
        out.push(jb.pop(now));
    }
    (out, jb)
}

/// Concealed periods before the last played packet (the trailing ones after the stream ended
/// are not losses).
fn concealed_in_stream(out: &[Playout]) -> usize {
    let last = out.iter().rposition(|p| seq_of(p).is_some()).unwrap_or(0);
    out[..last]
        .iter()
        .filter(|p| matches!(p, Playout::Lost { .. }))
        .count()
}

fn played(out: &[Playout]) -> Vec<u16> {
    out.iter().filter_map(seq_of).collect()
}

#[test]
fn in_order_stream_plays_everything_with_low_delay() {
    let (out, jb) = run(200, 100, 5000, |_| Some(Duration::from_millis(30)), 10);
    let seqs = played(&out);
    assert_eq!(seqs, (100..300).collect::<Vec<u16>>());
    let s = jb.stats();
    assert_eq!((s.lost, s.late, s.duplicates), (0, 0, 0));
    assert_eq!(concealed_in_stream(&out), 0);
    assert!(
        s.target_delay <= Duration::from_millis(40),
        "{:?}",
        s.target_delay
    );
    // Playout starts within 40 ms of the first arrival.
    let first_play = out.iter().position(|p| seq_of(p).is_some()).unwrap();
    assert!(first_play <= 3, "started after {first_play} ticks");
}

#[test]
fn reordered_packets_play_in_order() {
    // Odd packets overtake even ones by 15 ms.
    let (out, jb) = run(
        100,
        0,
        0,
        |i| Some(Duration::from_millis(if i % 2 == 0 { 50 } else { 25 })),
        10,
    );
    assert_eq!(played(&out), (0..100).collect::<Vec<u16>>());
    let s = jb.stats();
    assert!(s.reordered >= 40);
    assert_eq!((s.lost, s.late), (0, 0));
    assert_eq!(concealed_in_stream(&out), 0);
}

#[test]
fn duplicates_are_dropped() {
    let base = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    assert_eq!(jb.push(pkt(1, 960, base), base), PushOutcome::Accepted);
    assert_eq!(jb.push(pkt(1, 960, base), base), PushOutcome::Duplicate);
    assert_eq!(jb.push(pkt(2, 1920, base), base), PushOutcome::Accepted);
    let mut seqs = Vec::new();
    for k in 1..6 {
        let now = base + MS20 * k;
        if k == 3 {
            // Duplicate of a packet that was already played.
            assert_eq!(jb.push(pkt(1, 960, now), now), PushOutcome::Duplicate);
        }
        seqs.extend(seq_of(&jb.pop(now)));
    }
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(jb.stats().duplicates, 2);
    assert_eq!(jb.stats().lost, 0);
}

#[test]
fn sequence_and_timestamp_wrap_around() {
    let (out, jb) = run(
        100,
        65_500,
        u32::MAX - 20 * FRAME,
        |_| Some(Duration::from_millis(10)),
        10,
    );
    let expected: Vec<u16> = (0..100u32)
        .map(|i| 65_500u16.wrapping_add(i as u16))
        .collect();
    assert_eq!(played(&out), expected);
    let s = jb.stats();
    assert_eq!((s.lost, s.resets, s.expected), (0, 0, 100));
    assert_eq!(concealed_in_stream(&out), 0);
}

#[test]
fn lost_packet_is_concealed_with_fec_from_the_next() {
    let (out, jb) = run(
        50,
        0,
        0,
        |i| (i != 20).then_some(Duration::from_millis(10)),
        5,
    );
    let pos = out
        .iter()
        .position(|p| matches!(p, Playout::Lost { .. }))
        .expect("a loss");
    match &out[pos] {
        Playout::Lost { timestamp, fec } => {
            assert_eq!(*timestamp, 20 * FRAME);
            assert_eq!(&fec.as_deref().unwrap()[..2], &21u16.to_be_bytes()[..]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seq_of(&out[pos - 1]), Some(19));
    assert_eq!(seq_of(&out[pos + 1]), Some(21));
    assert_eq!(jb.stats().lost, 1);
    assert_eq!(concealed_in_stream(&out), 1);
}

#[test]
fn dtx_gap_plays_silence_not_loss() {
    // 50 packets, then the sender stays silent for 1 s (DTX: sequence numbers continue,
    // timestamps jump), then 50 more.
    let base = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut kinds = Vec::new();
    let mut packets = Vec::new();
    for i in 0..100u32 {
        let t = if i < 50 { i } else { i + 50 };
        packets.push((
            base + MS20 * t + Duration::from_millis(10),
            i as u16,
            t * FRAME,
        ));
    }
    let mut next = 0;
    for k in 0..170u32 {
        let now = base + MS20 * k + Duration::from_millis(15);
        while next < packets.len() && packets[next].0 <= now {
            let (at, seq, ts) = packets[next];
            let mut p = pkt(seq, ts, at);
            if seq == 49 {
                // The first DTX packet of the silence: a lone TOC byte.
                p.payload = vec![0x08];
            }
            jb.push(p, at);
            next += 1;
        }
        kinds.push(jb.pop(now));
    }
    let s = jb.stats();
    assert_eq!(s.lost, 0, "{s:?}");
    assert_eq!(concealed_in_stream(&kinds), 0, "{s:?}");
    let mut expected: Vec<u16> = (0..100).collect();
    expected[49] = u16::MAX; // the DTX packet's payload does not carry its number
    assert_eq!(played(&kinds).len(), 100);
    assert_eq!(played(&kinds)[..49], expected[..49]);
    assert_eq!(played(&kinds)[50..], expected[50..]);
    let silent = kinds
        .iter()
        .filter(|p| matches!(p, Playout::Silence { .. }))
        .count();
    assert!(silent >= 45, "only {silent} silent periods");
    assert!(s.target_delay <= Duration::from_millis(60));
}

#[test]
fn delay_adapts_up_on_jitter_and_slowly_back_down() {
    let mut rng = StdRng::seed_from_u64(7);
    // 30 s of up to 120 ms of jitter, then 120 s of a clean network.
    let (_out, jb_noisy) = run(
        1500,
        0,
        0,
        |_| Some(Duration::from_millis(rng.random_range(10..130))),
        0,
    );
    let noisy = jb_noisy.stats();
    assert!(
        noisy.target_delay >= Duration::from_millis(100),
        "target {:?}",
        noisy.target_delay
    );
    // Late packets are a small fraction once adapted.
    assert!(noisy.late < 150, "late {}", noisy.late);

    let mut rng = StdRng::seed_from_u64(8);
    let (_out, jb) = run(
        1500 + 6000,
        0,
        0,
        |i| {
            Some(Duration::from_millis(if i < 1500 {
                rng.random_range(10..130)
            } else {
                10
            }))
        },
        0,
    );
    let s = jb.stats();
    assert!(
        s.target_delay <= Duration::from_millis(40),
        "target after calm {:?}",
        s.target_delay
    );
    assert!(s.current_delay <= Duration::from_millis(80), "{s:?}");
}

#[test]
fn late_packet_raises_target_which_then_shrinks_slowly() {
    let base = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut late_seen = false;
    let mut target_after_late = Duration::ZERO;
    for k in 0..3000u32 {
        let now = base + MS20 * k;
        // Packet 100 arrives 200 ms late.
        if k != 100 {
            jb.push(pkt(k as u16, k * FRAME, now), now);
        }
        if k == 110 {
            let at = now;
            assert_eq!(jb.push(pkt(100, 100 * FRAME, at), at), PushOutcome::Late);
            late_seen = true;
            target_after_late = jb.target_delay();
        }
        jb.pop(now + Duration::from_millis(1));
        if k == 200 {
            // Still high 2 s later: it shrinks slowly.
            assert!(jb.target_delay() >= target_after_late - Duration::from_millis(20));
        }
    }
    assert!(late_seen);
    assert!(
        target_after_late >= Duration::from_millis(200),
        "{target_after_late:?}"
    );
    // One minute later it is back near the floor.
    assert!(
        jb.target_delay() <= Duration::from_millis(40),
        "{:?}",
        jb.target_delay()
    );
}

/// Simulates an hour: the sender's clock runs fast (or slow) and every 30 s the network
/// holds packets for 300 ms and releases them in a burst. The buffered audio must stay
/// under its cap the whole time.
fn drift_hour(drift_ppm: i64) {
    let cfg = JitterConfig::default();
    let cap = cfg.max_buffered;
    let max_delay = cfg.max_delay;
    let base = Instant::now();
    let mut jb = JitterBuffer::new(cfg);
    let frames = 3600 * 50u32;
    let period_us = 20_000 * (1_000_000 - drift_ppm) / 1_000_000;
    let mut next_pop = base + Duration::from_millis(7);
    let mut max_buffered = Duration::ZERO;
    let mut played = 0u64;
    for i in 0..frames {
        let sent = base + Duration::from_micros(period_us as u64 * i as u64);
        let in_burst = (i % 1500) < 15;
        let arrival = if in_burst {
            // Held until the end of the 300 ms hold.
            base + Duration::from_micros(period_us as u64 * (i - i % 1500 + 15) as u64)
        } else {
            sent + Duration::from_millis(20)
        };
        while next_pop <= arrival {
            if matches!(jb.pop(next_pop), Playout::Packet { .. }) {
                played += 1;
            }
            next_pop += MS20;
        }
        jb.push(pkt(i as u16, i.wrapping_mul(FRAME), arrival), arrival);
        max_buffered = max_buffered.max(jb.buffered());
    }
    let s = jb.stats();
    assert!(max_buffered <= cap, "buffered {max_buffered:?} over cap");
    assert!(s.current_delay <= max_delay, "{s:?}");
    assert!(s.buffered_packets <= 60, "{s:?}");
    // Almost everything was played.
    assert!(
        played as f64 >= frames as f64 * 0.97,
        "played {played} of {frames}: {s:?}"
    );
}

#[test]
fn bounded_over_a_simulated_hour_with_fast_sender_and_bursts() {
    drift_hour(5000);
}

#[test]
fn bounded_over_a_simulated_hour_with_slow_sender_and_bursts() {
    drift_hour(-5000);
}

#[test]
fn huge_jump_resets_instead_of_buffering() {
    let base = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    for k in 0..20u32 {
        let now = base + MS20 * k;
        jb.push(pkt(k as u16, k * FRAME, now), now);
        jb.pop(now);
    }
    let now = base + MS20 * 20;
    assert_eq!(
        jb.push(pkt(30_000, 2_000_000_000, now), now),
        PushOutcome::Reset
    );
    assert!(jb.buffered() <= Duration::from_millis(20));
    assert_eq!(jb.stats().resets, 1);
}

/// Found by fuzzing: after a DTX packet the playout runs on in silence; a packet from far
/// behind must not rewind it (it is late), and the buffered span stays under the cap.
#[test]
fn stale_packet_after_long_silence_is_late_and_cap_holds() {
    let cfg = JitterConfig::default();
    let cap = cfg.max_buffered;
    let base = Instant::now();
    let mut jb = JitterBuffer::new(cfg);
    let mut dtx = pkt(0, 0, base);
    dtx.payload = vec![0x08];
    jb.push(dtx, base);
    for k in 0..150u32 {
        jb.pop(base + MS20 * k);
    }
    let now = base + MS20 * 150;
    assert_eq!(jb.push(pkt(1, FRAME, now), now), PushOutcome::Late);
    assert!(jb.buffered() <= cap);
    // A packet from the present plays normally.
    let p = pkt(2, 152 * FRAME, now);
    assert_eq!(jb.push(p, now), PushOutcome::Accepted);
    assert!(jb.buffered() <= cap);
    let mut seqs = Vec::new();
    for k in 0..10u32 {
        seqs.extend(seq_of(&jb.pop(now + MS20 * k)));
    }
    assert_eq!(seqs, vec![2]);
}

/// A sender of packets one clock tick apart (48 000 fit in the one-second span cap) cannot
/// make the buffer hold more than `max_packets`: the oldest are dropped and counted.
#[test]
fn packets_one_tick_apart_are_capped_by_count() {
    let cfg = JitterConfig::default();
    let max = cfg.max_packets;
    let base = Instant::now();
    let mut jb = JitterBuffer::new(cfg);
    for i in 0..5000u32 {
        jb.push_with_duration(pkt(i as u16, 1000 + i, base), 1, base);
        assert!(jb.stats().buffered_packets <= max, "{:?}", jb.stats());
    }
    assert!(jb.stats().overflow_drops >= 5000 - max as u64);
}
