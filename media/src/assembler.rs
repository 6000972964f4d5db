//! Video frame assembly: RTP packets (in any order) -> complete frames, with loss detection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::h264::Depacketizer;
use crate::rtp::{RtpPacket, SeqUnwrapper, TimestampUnwrapper};

/// Tuning of a [`FrameAssembler`].
#[derive(Debug, Clone)]
pub struct AssemblerConfig {
    /// How long a hole in the sequence numbers is waited for (reordering, retransmission)
    /// before the frame is declared lost.
    pub reorder_window: Duration,
    /// Hard cap on buffered packets.
    pub max_packets: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            reorder_window: Duration::from_millis(100),
            max_packets: 1024,
        }
    }
}

/// A complete frame, ready for the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    /// RTP timestamp.
    pub timestamp: u32,
    /// Frame data (Annex-B for H.264, the VP8 frame for VP8).
    pub data: Vec<u8>,
    /// The frame is a keyframe.
    pub keyframe: bool,
    /// Packets were lost (or frames dropped) since the previous emitted frame, so a delta
    /// frame cannot be decoded correctly.
    pub after_loss: bool,
}

/// Assembler counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Packets pushed.
    pub packets: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Packets that came after their frame was emitted or given up.
    pub late: u64,
    /// Sequence numbers given up on as lost.
    pub lost: u64,
    /// Buffered packets discarded because their frame was incomplete.
    pub discarded: u64,
    /// Frames emitted.
    pub frames: u64,
    /// Frames whose payloads were malformed.
    pub malformed_frames: u64,
}

#[derive(Debug)]
struct Pkt {
    ts: u64,
    marker: bool,
    payload: Vec<u8>,
    arrival: Instant,
}

enum Walk {
    Complete { end: u64 },
    Gap { missing: u64 },
    Pending,
}

/// Collects RTP packets into frames. Sans-IO: feed [`FrameAssembler::push`], and call
/// [`FrameAssembler::poll`] now and then so holes time out even when no packet arrives.
pub struct FrameAssembler {
    depacketizer: Box<dyn Depacketizer + Send>,
    cfg: AssemblerConfig,
    packets: BTreeMap<u64, Pkt>,
    seq: SeqUnwrapper,
    ts: TimestampUnwrapper,
    /// Every sequence number below this was consumed or given up.
    floor: Option<u64>,
    /// `floor` is the first packet of the next frame.
    synced: bool,
    pending_loss: bool,
    stats: AssemblerStats,
}

impl std::fmt::Debug for FrameAssembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameAssembler")
            .field("buffered", &self.packets.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl FrameAssembler {
    /// New assembler around a depacketizer.
    pub fn new(depacketizer: Box<dyn Depacketizer + Send>, cfg: AssemblerConfig) -> Self {
        FrameAssembler {
            depacketizer,
            cfg,
            packets: BTreeMap::new(),
            seq: SeqUnwrapper::new(),
            ts: TimestampUnwrapper::new(),
            floor: None,
            synced: false,
            pending_loss: false,
            stats: AssemblerStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &AssemblerStats {
        &self.stats
    }

    /// Packets currently buffered.
    pub fn buffered(&self) -> usize {
        self.packets.len()
    }

    /// Adds a packet; returns the frames it completed.
    pub fn push(&mut self, packet: RtpPacket, now: Instant) -> Vec<AssembledFrame> {
        self.stats.packets += 1;
        let seq = self.seq.unwrap(u64::from(packet.sequence_number));
        let ts = self.ts.unwrap(u64::from(packet.timestamp));
        if self.floor.is_some_and(|f| seq < f) {
            self.stats.late += 1;
        } else {
            match self.packets.entry(seq) {
                std::collections::btree_map::Entry::Occupied(_) => self.stats.duplicates += 1,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Pkt {
                        ts,
                        marker: packet.marker,
                        payload: packet.payload,
                        arrival: packet.arrival,
                    });
                }
            }
        }
        let mut out = Vec::new();
        self.drain(now, &mut out);
        out
    }

    /// Times out holes; returns frames that became ready because of it.
    pub fn poll(&mut self, now: Instant) -> Vec<AssembledFrame> {
        let mut out = Vec::new();
        self.drain(now, &mut out);
        out
    }

    fn drop_below(&mut self, seq: u64) -> u64 {
        let keep = self.packets.split_off(&seq);
        let dropped = self.packets.len() as u64;
        self.packets = keep;
        self.stats.discarded += dropped;
        dropped
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<AssembledFrame>) {
        loop {
            if self.packets.is_empty() {
                return;
            }
            if !self.synced {
                let start = self
                    .packets
                    .iter()
                    .find(|(_, p)| self.depacketizer.is_frame_start(&p.payload))
                    .map(|(&k, _)| k);
                let Some(start) = start else {
                    if self.packets.len() > self.cfg.max_packets {
                        let all = self.packets.len() as u64;
                        self.packets.clear();
                        self.stats.discarded += all;
                        self.pending_loss = true;
                    }
                    return;
                };
                // Packets before the resync point belong to broken frames.
                if self.drop_below(start) > 0 {
                    self.pending_loss = true;
                }
                self.floor = Some(start);
                self.synced = true;
            }
            let floor = self.floor.unwrap_or_default();
            match self.walk(floor) {
                Walk::Complete { end } => {
                    self.emit(floor, end, out);
                    self.floor = Some(end + 1);
                }
                Walk::Gap { missing } => {
                    let next_arrival = self.packets.range(missing..).next().map(|(_, p)| p.arrival);
                    let waited =
                        next_arrival.map_or(Duration::ZERO, |a| now.saturating_duration_since(a));
                    if waited < self.cfg.reorder_window
                        && self.packets.len() <= self.cfg.max_packets
                    {
                        return;
                    }
                    // Give up on the hole: drop the broken frame and resync on the next start.
                    let next_present = self
                        .packets
                        .range(missing..)
                        .next()
                        .map_or(missing + 1, |(&k, _)| k);
                    self.stats.lost += next_present - missing;
                    self.drop_below(next_present);
                    self.floor = Some(next_present);
                    self.synced = false;
                    self.pending_loss = true;
                }
                Walk::Pending => {
                    if self.packets.len() > self.cfg.max_packets {
                        let all = self.packets.len() as u64;
                        self.packets.clear();
                        self.stats.discarded += all;
                        self.synced = false;
                        self.pending_loss = true;
                    }
                    return;
                }
            }
        }
    }

    fn walk(&self, floor: u64) -> Walk {
        let Some(first) = self.packets.get(&floor) else {
            return if self.packets.range(floor..).next().is_some() {
                Walk::Gap { missing: floor }
            } else {
                Walk::Pending
            };
        };
        let frame_ts = first.ts;
        let mut k = floor;
        loop {
            let Some(p) = self.packets.get(&k) else {
                return if self.packets.range(k..).next().is_some() {
                    Walk::Gap { missing: k }
                } else {
                    Walk::Pending
                };
            };
            if p.ts != frame_ts {
                // The previous packet ended the frame even though its marker was not set.
                return Walk::Complete { end: k - 1 };
            }
            if p.marker {
                return Walk::Complete { end: k };
            }
            k += 1;
        }
    }

    fn emit(&mut self, first: u64, last: u64, out: &mut Vec<AssembledFrame>) {
        let rest = self.packets.split_off(&(last + 1));
        let frame_packets = std::mem::replace(&mut self.packets, rest);
        debug_assert!(frame_packets.keys().all(|&k| k >= first));
        self.depacketizer.reset();
        let mut data = Vec::new();
        let mut keyframe = false;
        let mut ok = true;
        let mut ts = 0u64;
        for p in frame_packets.values() {
            ts = p.ts;
            match self.depacketizer.push(&p.payload, &mut data) {
                Ok(info) => keyframe |= info.keyframe,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if self.depacketizer.is_pending() {
            ok = false;
        }
        self.depacketizer.reset();
        if !ok || data.is_empty() {
            self.stats.malformed_frames += 1;
            self.pending_loss = true;
            return;
        }
        self.stats.frames += 1;
        out.push(AssembledFrame {
            timestamp: ts as u32,
            data,
            keyframe,
            after_loss: std::mem::take(&mut self.pending_loss),
        });
    }
}
