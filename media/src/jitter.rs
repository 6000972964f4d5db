//! Sans-IO adaptive jitter buffer for audio.
//!
//! The buffer is fed with [`JitterBuffer::push`] as packets arrive and drained with
//! [`JitterBuffer::pop`] once per frame period (every 20 ms for Opus in a conference tick).
//! Each `pop` yields exactly one [`Playout`] decision: a packet to decode, a loss to conceal
//! (with the next packet handed along for in-band FEC), or silence (sender in DTX, or not
//! started yet).
//!
//! How it behaves:
//! * Reorders by RTP timestamp, drops duplicates, unwraps 16-bit sequence numbers and 32-bit
//!   timestamps.
//! * Target delay starts low ([`JitterConfig::initial_delay`]), follows the 95th percentile of
//!   measured transit-time variation, jumps up when a packet arrives too late to be played,
//!   and comes back down slowly ([`JitterConfig::shrink_per_second`]).
//! * Keeps the buffered audio near the target by dropping frames (quiet ones first, silence
//!   gaps for free) and by holding playout on underrun, so clock drift in either direction is
//!   absorbed.
//! * A DTX gap (consecutive sequence numbers with a timestamp jump) plays as silence and is
//!   never counted as loss.
//! * Never grows without bound: the buffered span is capped by [`JitterConfig::max_buffered`];
//!   a jump far beyond it resets the stream.
//!
//! Time is passed in as [`Instant`]s; the buffer never reads a clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::rtp::{RtpPacket, SeqUnwrapper, TimestampUnwrapper};

/// Tuning of a [`JitterBuffer`].
#[derive(Debug, Clone)]
pub struct JitterConfig {
    /// RTP clock rate (48 000 for Opus).
    pub clock_rate: u32,
    /// Duration of one `pop` (the caller's tick) and of a packet unless told otherwise.
    pub frame_duration: Duration,
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Target delay before anything was measured.
    pub initial_delay: Duration,
    /// Highest target delay.
    pub max_delay: Duration,
    /// Hard cap on the span of buffered audio; older packets are dropped beyond it.
    pub max_buffered: Duration,
    /// Hard cap on the number of buffered packets, whatever their timestamps (a sender of
    /// packets one clock tick apart would otherwise fit 48 000 in `max_buffered`).
    pub max_packets: usize,
    /// How fast a target raised by late packets comes back down.
    pub shrink_per_second: Duration,
    /// Number of recent packets the jitter percentile is computed over.
    pub jitter_window: usize,
    /// Frames quieter than this RFC 6464 level (-dBov, higher is quieter) may be dropped
    /// when the buffer is only slightly above target.
    pub quiet_level: u8,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            clock_rate: 48_000,
            frame_duration: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            initial_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(400),
            max_buffered: Duration::from_millis(1000),
            // A second of 2.5 ms Opus frames (the shortest there are).
            max_packets: 400,
            shrink_per_second: Duration::from_millis(4),
            jitter_window: 100,
            quiet_level: 50,
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Accepted,
    /// Same timestamp already buffered or already played.
    Duplicate,
    /// Arrived after its playout time; dropped (and the target delay raised).
    Late,
    /// Far outside the current stream (a restart): the buffer was reset around it.
    Reset,
}

/// The decision for one frame period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Not playing yet (filling up to the target delay). Play silence; nothing was lost.
    Buffering,
    /// Decode this packet.
    Packet {
        /// RTP timestamp.
        timestamp: u32,
        /// Opus (or other) payload.
        payload: Vec<u8>,
        /// RFC 6464 level if the packet had one.
        audio_level: Option<u8>,
        /// Duration of the packet in clock ticks.
        duration: u32,
    },
    /// The packet for this period is missing: conceal it. `fec` is the payload of the packet
    /// that follows it, if buffered, for Opus in-band FEC.
    Lost {
        /// Timestamp of the missing frame.
        timestamp: u32,
        /// Next packet's payload, carrying FEC data for the missing one.
        fec: Option<Vec<u8>>,
    },
    /// The sender sent nothing for this period on purpose (DTX) or paused: play silence.
    Silence {
        /// Timestamp of the silent period.
        timestamp: u32,
    },
}

/// Counters and current state, for RTCP reports and monitoring.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JitterStats {
    /// Packets pushed (including duplicates and late ones).
    pub received: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Packets that came after their playout time.
    pub late: u64,
    /// Packets that arrived with a sequence number below the highest seen.
    pub reordered: u64,
    /// Packets expected from the sequence number range (RFC 3550).
    pub expected: u64,
    /// Packets never received (RFC 3550 cumulative loss, never negative).
    pub lost: u64,
    /// Packets handed out for decoding.
    pub played: u64,
    /// Periods concealed because a packet was missing (loss or late).
    pub concealed: u64,
    /// Periods played as silence (DTX, pauses, start-up).
    pub silence: u64,
    /// Packets dropped to bring the delay back to target.
    pub dropped_for_latency: u64,
    /// Packets dropped because the hard cap was hit.
    pub overflow_drops: u64,
    /// Stream resets (huge sequence/timestamp jumps).
    pub resets: u64,
    /// RFC 3550 interarrival jitter, in milliseconds.
    pub jitter_ms: f64,
    /// Current target delay.
    pub target_delay: Duration,
    /// What the target is made of: one frame plus the spread of recent transit times (95th
    /// percentile minus minimum) ...
    pub jitter_target: Duration,
    /// ... and the raise after packets came too late to play (decays slowly).
    pub late_target: Duration,
    /// Audio currently buffered ahead of the playout point.
    pub current_delay: Duration,
    /// Packets currently buffered.
    pub buffered_packets: usize,
}

impl JitterStats {
    /// Fraction of expected packets that were lost, 0.0..=1.0.
    pub fn loss_fraction(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

#[derive(Debug)]
struct Stored {
    seq: u64,
    payload: Vec<u8>,
    audio_level: Option<u8>,
    duration: u64,
}

/// The adaptive jitter buffer. See the module documentation.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    packets: BTreeMap<u64, Stored>,
    seq: SeqUnwrapper,
    ts: TimestampUnwrapper,
    first_seq: Option<u64>,
    unique_received: u64,
    /// Next timestamp to play, once started.
    playout: Option<u64>,
    first_arrival: Option<Instant>,
    newest_end: u64,
    last_played_seq: Option<u64>,
    last_was_silence: bool,
    last_payload_dtx: bool,
    played_seqs: VecDeque<u64>,
    transits: VecDeque<i64>,
    base: Option<Instant>,
    jitter_target: Duration,
    late_target: Duration,
    last_pop: Option<Instant>,
    pops_since_drop: u32,
    last_transit: Option<i64>,
    interval_expected_base: u64,
    interval_received_base: u64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// New buffer with the given tuning.
    pub fn new(cfg: JitterConfig) -> Self {
        let initial = cfg.initial_delay.clamp(cfg.min_delay, cfg.max_delay);
        JitterBuffer {
            packets: BTreeMap::new(),
            seq: SeqUnwrapper::new(),
            ts: TimestampUnwrapper::new(),
            first_seq: None,
            unique_received: 0,
            playout: None,
            first_arrival: None,
            newest_end: 0,
            last_played_seq: None,
            last_was_silence: false,
            last_payload_dtx: false,
            played_seqs: VecDeque::new(),
            transits: VecDeque::new(),
            base: None,
            jitter_target: initial,
            late_target: Duration::ZERO,
            last_pop: None,
            pops_since_drop: 0,
            last_transit: None,
            interval_expected_base: 0,
            interval_received_base: 0,
            stats: JitterStats {
                target_delay: initial,
                ..Default::default()
            },
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    fn frame_ticks(&self) -> u64 {
        self.to_ticks(self.cfg.frame_duration).max(1)
    }

    fn to_ticks(&self, d: Duration) -> u64 {
        (d.as_micros() as u64 * self.cfg.clock_rate as u64) / 1_000_000
    }

    fn to_duration(&self, ticks: u64) -> Duration {
        Duration::from_micros(ticks * 1_000_000 / self.cfg.clock_rate.max(1) as u64)
    }

    /// Current target delay.
    pub fn target_delay(&self) -> Duration {
        self.jitter_target
            .max(self.late_target)
            .clamp(self.cfg.min_delay, self.cfg.max_delay)
    }

    /// Audio buffered ahead of the playout point (or since the first packet, before start).
    pub fn buffered(&self) -> Duration {
        let start = match self.playout {
            Some(p) => p,
            None => match self.packets.keys().next() {
                Some(&first) => first,
                None => return Duration::ZERO,
            },
        };
        self.to_duration(self.newest_end.saturating_sub(start))
    }

    /// Statistics snapshot.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats.clone();
        s.target_delay = self.target_delay();
        s.jitter_target = self.jitter_target;
        s.late_target = self.late_target;
        s.current_delay = self.buffered();
        s.buffered_packets = self.packets.len();
        if let (Some(first), Some(high)) = (self.first_seq, self.seq.highest()) {
            s.expected = high + 1 - first;
            s.lost = s.expected.saturating_sub(self.unique_received);
        }
        s
    }

    /// RTCP "fraction lost" since the previous call, as a fraction 0.0..=1.0 (RFC 3550 6.4.1).
    pub fn take_interval_loss(&mut self) -> f64 {
        let s = self.stats();
        let expected = s.expected - self.interval_expected_base;
        let received = self.unique_received - self.interval_received_base;
        self.interval_expected_base = s.expected;
        self.interval_received_base = self.unique_received;
        if expected == 0 || received >= expected {
            0.0
        } else {
            (expected - received) as f64 / expected as f64
        }
    }

    /// Feeds a packet whose duration is one frame.
    pub fn push(&mut self, packet: RtpPacket, now: Instant) -> PushOutcome {
        let ticks = self.frame_ticks() as u32;
        self.push_with_duration(packet, ticks, now)
    }

    /// Feeds a packet of `duration` clock ticks (e.g. 2880 for a 60 ms Opus packet).
    pub fn push_with_duration(
        &mut self,
        packet: RtpPacket,
        duration: u32,
        now: Instant,
    ) -> PushOutcome {
        self.stats.received += 1;
        let duration = u64::from(duration.max(1));
        let max_span = self.to_ticks(self.cfg.max_buffered);

        // Huge jumps (a new stream behind the same SSRC, or garbage) reset everything.
        if let Some(high_ts) = self.ts.highest() {
            let ext = self.ts.peek(u64::from(packet.timestamp));
            let reference = self.playout.unwrap_or(high_ts);
            let far_ahead = ext > high_ts + 4 * max_span.max(self.frame_ticks());
            let far_behind = ext + 4 * max_span < reference;
            if far_ahead || far_behind {
                self.reset_stream();
                self.stats.resets += 1;
                self.insert(packet, duration, now);
                return PushOutcome::Reset;
            }
        }
        self.insert(packet, duration, now)
    }

    fn reset_stream(&mut self) {
        self.packets.clear();
        self.seq.reset();
        self.ts.reset();
        self.first_seq = None;
        self.unique_received = 0;
        self.playout = None;
        self.first_arrival = None;
        self.newest_end = 0;
        self.last_played_seq = None;
        self.played_seqs.clear();
        self.transits.clear();
        self.base = None;
        self.last_transit = None;
        self.interval_expected_base = 0;
        self.interval_received_base = 0;
    }

    fn insert(&mut self, packet: RtpPacket, duration: u64, now: Instant) -> PushOutcome {
        let prev_high_seq = self.seq.highest();
        let seq = self.seq.unwrap(u64::from(packet.sequence_number));
        let ts = self.ts.unwrap(u64::from(packet.timestamp));
        if prev_high_seq.is_some_and(|h| seq < h) {
            self.stats.reordered += 1;
        }

        let resumes_after_gap =
            self.packets.is_empty() && self.last_played_seq.is_some_and(|s| seq == s + 1);
        // First packet after silence (DTX) or a pause: re-anchor playout so that the delay is
        // back at target, instead of carrying the gap along as buffered audio or calling the
        // packet late because the sender's clock is a bit slow.
        if resumes_after_gap && let Some(playout) = self.playout {
            let target = self.to_ticks(self.target_delay());
            let anchored = (ts + duration).saturating_sub(target).min(ts);
            if ts >= playout {
                self.playout = Some(playout.max(anchored));
            } else if self.last_was_silence && playout - ts <= self.to_ticks(self.cfg.max_delay) {
                // Silence ran ahead of a slightly slow sender: play the packet anyway.
                self.playout = Some(ts);
            }
        }
        // Already played (or skipped) timestamps.
        if let Some(playout) = self.playout
            && ts < playout
        {
            if self.played_seqs.contains(&seq) {
                self.stats.duplicates += 1;
                return PushOutcome::Duplicate;
            }
            self.note_received(seq);
            self.stats.late += 1;
            let lateness = self.to_duration(playout - ts);
            let raised = self.target_delay() + lateness.max(self.cfg.frame_duration);
            self.late_target = self.late_target.max(raised).min(self.cfg.max_delay);
            return PushOutcome::Late;
        }
        if self.packets.contains_key(&ts) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        self.note_received(seq);
        self.measure(packet.arrival, ts);
        self.first_arrival.get_or_insert(now);
        self.newest_end = self.newest_end.max(ts + duration);
        self.packets.insert(
            ts,
            Stored {
                seq,
                payload: packet.payload,
                audio_level: packet.audio_level,
                duration,
            },
        );
        self.enforce_cap();
        PushOutcome::Accepted
    }

    fn note_received(&mut self, seq: u64) {
        if self.first_seq.is_none_or(|f| seq < f) {
            self.first_seq = Some(seq);
        }
        self.unique_received += 1;
    }

    /// Transit-time bookkeeping: RFC 3550 jitter and the percentile window.
    fn measure(&mut self, arrival: Instant, ts: u64) {
        let base = *self.base.get_or_insert(arrival);
        let arrival_us = arrival
            .checked_duration_since(base)
            .map_or(0, |d| d.as_micros() as i64);
        let ts_us = (ts as i128 * 1_000_000 / self.cfg.clock_rate.max(1) as i128) as i64;
        let transit = arrival_us - ts_us;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs() as f64 / 1000.0;
            self.stats.jitter_ms += (d - self.stats.jitter_ms) / 16.0;
        }
        self.last_transit = Some(transit);
        self.transits.push_back(transit);
        while self.transits.len() > self.cfg.jitter_window.max(2) {
            self.transits.pop_front();
        }
        if self.transits.len() >= 5 {
            let mut sorted: Vec<i64> = self.transits.iter().copied().collect();
            sorted.sort_unstable();
            let min = sorted[0];
            let p95 = sorted[(sorted.len() - 1) * 95 / 100];
            let spread = Duration::from_micros((p95 - min).max(0) as u64);
            self.jitter_target =
                (self.cfg.frame_duration + spread).clamp(self.cfg.min_delay, self.cfg.max_delay);
        }
    }

    fn enforce_cap(&mut self) {
        let max_span = self.to_ticks(self.cfg.max_buffered);
        let max_packets = self.cfg.max_packets.max(1);
        while let Some((&first, _)) = self.packets.first_key_value() {
            let start = self.playout.map_or(first, |p| p.min(first));
            if self.newest_end.saturating_sub(start) <= max_span
                && self.packets.len() <= max_packets
            {
                break;
            }
            if let Some(p) = self.playout
                && p < first
            {
                // Nothing is buffered before the first packet: skip the empty stretch rather
                // than dropping audio.
                self.playout = Some(first);
                continue;
            }
            let Some((ts, stored)) = self.packets.pop_first() else {
                break;
            };
            self.stats.overflow_drops += 1;
            self.remember_played(stored.seq);
            self.last_played_seq = Some(stored.seq);
            if let Some(p) = self.playout.as_mut() {
                *p = (*p).max(ts + stored.duration);
            }
        }
        if let Some(p) = self.playout
            && self.newest_end.saturating_sub(p) > max_span
        {
            self.playout = Some(self.newest_end - max_span);
        }
    }

    fn remember_played(&mut self, seq: u64) {
        self.played_seqs.push_back(seq);
        if self.played_seqs.len() > 256 {
            self.played_seqs.pop_front();
        }
    }

    /// Decides what to play for the next frame period. Call once per period.
    pub fn pop(&mut self, now: Instant) -> Playout {
        // Let a target raised by late packets decay slowly.
        if let Some(last) = self.last_pop {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            let shrink = self.cfg.shrink_per_second.mul_f64(elapsed.min(10.0));
            self.late_target = self.late_target.saturating_sub(shrink);
        }
        self.last_pop = Some(now);
        self.pops_since_drop = self.pops_since_drop.saturating_add(1);
        let frame = self.frame_ticks();

        let playout = match self.playout {
            Some(p) => p,
            None => {
                let Some((&first, _)) = self.packets.first_key_value() else {
                    self.stats.silence += 1;
                    return Playout::Buffering;
                };
                let waited = self
                    .first_arrival
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                let target = self.target_delay();
                let span = self.to_duration(self.newest_end - first);
                if span < target && waited + self.cfg.frame_duration < target {
                    self.stats.silence += 1;
                    return Playout::Buffering;
                }
                self.playout = Some(first);
                first
            }
        };

        self.control_latency(playout);
        let playout = self.playout.unwrap_or(playout);

        if let Some(stored) = self.packets.remove(&playout) {
            return self.play(playout, stored);
        }

        match self.packets.first_key_value() {
            Some((&next_ts, next)) => {
                let contiguous = self.last_played_seq.is_none_or(|s| next.seq == s + 1);
                if contiguous {
                    // Nothing was sent for this period: a DTX gap. Skip silence quickly when
                    // we are above target.
                    let target = self.to_ticks(self.target_delay());
                    let mut new_playout = playout + frame;
                    if self.newest_end.saturating_sub(new_playout) > target + frame {
                        new_playout = new_playout.max(self.newest_end.saturating_sub(target));
                    }
                    self.playout = Some(new_playout.min(next_ts));
                    self.last_was_silence = true;
                    self.stats.silence += 1;
                    Playout::Silence {
                        timestamp: playout as u32,
                    }
                } else {
                    let fec = (next_ts == playout + frame).then(|| next.payload.clone());
                    self.playout = Some((playout + frame).min(next_ts));
                    self.last_was_silence = false;
                    self.stats.concealed += 1;
                    Playout::Lost {
                        timestamp: playout as u32,
                        fec,
                    }
                }
            }
            None => {
                if self.last_was_silence || self.last_payload_dtx {
                    // The sender is in DTX: time moves on in silence.
                    self.playout = Some(playout + frame);
                    self.newest_end = self.newest_end.max(playout + frame);
                    self.last_was_silence = true;
                    self.stats.silence += 1;
                    Playout::Silence {
                        timestamp: playout as u32,
                    }
                } else {
                    // Underrun: the next packet is late. Conceal and hold the playout point,
                    // which raises the effective delay by one frame.
                    self.stats.concealed += 1;
                    Playout::Lost {
                        timestamp: playout as u32,
                        fec: None,
                    }
                }
            }
        }
    }

    fn play(&mut self, ts: u64, stored: Stored) -> Playout {
        self.playout = Some(ts + stored.duration);
        self.last_played_seq = Some(stored.seq);
        self.remember_played(stored.seq);
        self.last_was_silence = false;
        self.last_payload_dtx = stored.payload.len() <= 2;
        self.stats.played += 1;
        Playout::Packet {
            timestamp: ts as u32,
            payload: stored.payload,
            audio_level: stored.audio_level,
            duration: stored.duration as u32,
        }
    }

    /// Drops frames at the playout point while the buffer is well above target.
    fn control_latency(&mut self, mut playout: u64) {
        let frame = self.frame_ticks();
        let target = self.to_ticks(self.target_delay());
        loop {
            let level = self.newest_end.saturating_sub(playout);
            if level <= target + frame {
                return;
            }
            let Some(stored) = self.packets.get(&playout) else {
                return;
            };
            let far_above = level > target + 3 * frame;
            let quiet = stored
                .audio_level
                .is_some_and(|l| l >= self.cfg.quiet_level)
                || stored.payload.len() <= 2;
            // Far above target: drop right away. Slightly above: drop a quiet frame at most
            // every fifth period, any frame at most once a second.
            let allowed =
                far_above || (quiet && self.pops_since_drop >= 5) || self.pops_since_drop >= 50;
            if !allowed {
                return;
            }
            let Some(stored) = self.packets.remove(&playout) else {
                return;
            };
            self.stats.dropped_for_latency += 1;
            self.pops_since_drop = 0;
            self.last_played_seq = Some(stored.seq);
            self.remember_played(stored.seq);
            playout += stored.duration.max(1);
            self.playout = Some(playout);
        }
    }
}
