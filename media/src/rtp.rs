//! The RTP view this crate works with: the transport parses the RTP header (str0m in RTP mode
//! does) and hands over an [`RtpPacket`]; on the way out the crate produces [`RtpPayload`]s for
//! the transport to wrap in headers.

use std::time::Instant;

/// One received RTP packet, as far as media processing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// RTP sequence number (wraps at 2^16).
    pub sequence_number: u16,
    /// RTP timestamp in the codec clock (48 kHz for Opus, 90 kHz for video; wraps at 2^32).
    pub timestamp: u32,
    /// RTP marker bit (last packet of a video frame, first packet of an audio talkspurt).
    pub marker: bool,
    /// The RTP payload (after header, extensions and padding were stripped).
    pub payload: Vec<u8>,
    /// RFC 6464 client-to-mixer audio level, in -dBov (0 = loudest, 127 = silence), if present.
    pub audio_level: Option<u8>,
    /// When the transport received the packet.
    pub arrival: Instant,
}

impl RtpPacket {
    /// Convenience constructor without audio level.
    pub fn new(
        sequence_number: u16,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
        arrival: Instant,
    ) -> Self {
        RtpPacket {
            sequence_number,
            timestamp,
            marker,
            payload,
            audio_level: None,
            arrival,
        }
    }
}

/// One RTP payload produced by a sender, for the transport to put behind an RTP header.
///
/// The transport assigns the sequence number (str0m does it per SSRC); `timestamp` is in the
/// codec clock and already offset by the sender's random start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPayload {
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// RFC 6464 audio level (-dBov, 0..=127) for audio payloads; `None` for video.
    pub audio_level: Option<u8>,
    /// For video: true when this payload belongs to a keyframe.
    pub keyframe: bool,
}

/// Extends a wrapping counter (16-bit sequence numbers, 32-bit timestamps) into a monotonic
/// 64-bit one, choosing for each new value the extension closest to the highest value seen.
///
/// Values far in the past (more than half the range behind) are taken as ahead, as RFC 3550
/// does; callers detect huge jumps themselves.
#[derive(Debug, Clone, Default)]
pub struct Unwrapper<const BITS: u32> {
    highest: Option<u64>,
}

/// Sequence-number unwrapper.
pub type SeqUnwrapper = Unwrapper<16>;
/// RTP timestamp unwrapper.
pub type TimestampUnwrapper = Unwrapper<32>;

impl<const BITS: u32> Unwrapper<BITS> {
    const RANGE: u64 = 1 << BITS;
    // The first extended value is placed one full cycle up so that values slightly before it
    // (reordered packets) do not underflow.
    const START: u64 = 1 << BITS;

    /// New unwrapper with no history.
    pub fn new() -> Self {
        Unwrapper { highest: None }
    }

    /// Extended value for `value` without updating the history.
    pub fn peek(&self, value: u64) -> u64 {
        let value = value & (Self::RANGE - 1);
        let Some(highest) = self.highest else {
            return Self::START + value;
        };
        let base = highest & !(Self::RANGE - 1);
        let candidate = base + value;
        let half = Self::RANGE / 2;
        if candidate > highest && candidate - highest > half && candidate >= Self::RANGE {
            candidate - Self::RANGE
        } else if candidate < highest && highest - candidate >= half {
            candidate + Self::RANGE
        } else {
            candidate
        }
    }

    /// Extends `value` and remembers it if it is the highest so far.
    pub fn unwrap(&mut self, value: u64) -> u64 {
        let extended = self.peek(value);
        if self.highest.is_none_or(|h| extended > h) {
            self.highest = Some(extended);
        }
        extended
    }

    /// Highest extended value seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Forgets the history (after a stream reset).
    pub fn reset(&mut self) {
        self.highest = None;
    }
}

/// Signed distance `a - b` between two wrapping 16-bit sequence numbers.
pub fn seq_diff(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

/// Signed distance `a - b` between two wrapping 32-bit RTP timestamps.
pub fn ts_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_wraps_forward_and_back() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65534);
        let b = u.unwrap(65535);
        let c = u.unwrap(0);
        let d = u.unwrap(1);
        assert_eq!((b - a, c - b, d - c), (1, 1, 1));
        // A reordered packet from before the wrap still lands before it.
        let late = u.unwrap(65533);
        assert_eq!(a - late, 1);
        assert_eq!(u.highest(), Some(d));
    }

    #[test]
    fn sequence_before_first_packet_does_not_underflow() {
        let mut u = SeqUnwrapper::new();
        let first = u.unwrap(3);
        let earlier = u.unwrap(65530);
        assert_eq!(first - earlier, 9);
    }

    #[test]
    fn timestamp_wraps() {
        let mut u = TimestampUnwrapper::new();
        let a = u.unwrap(u32::MAX as u64 - 479);
        let b = u.unwrap(480);
        assert_eq!(b - a, 960);
        assert_eq!(ts_diff(480, u32::MAX - 479), 960);
        assert_eq!(seq_diff(2, 65535), 3);
        assert_eq!(seq_diff(65535, 2), -3);
    }
}
