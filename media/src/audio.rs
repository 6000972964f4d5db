//! Per-participant audio paths for a conference runtime that ticks every 20 ms.
//!
//! * [`AudioReceiver`]: RTP Opus packets in, exactly one 20 ms PCM frame out per
//!   [`AudioReceiver::pop`] (decoded, FEC-recovered, concealed, or silence).
//! * [`AudioSender`]: one 20 ms PCM frame in, an RTP payload (with timestamp, marker and
//!   RFC 6464 level) out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{MediaError, Result};
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};
use crate::opus::{
    FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusEncoderConfig, audio_level, parse_packet,
};
use crate::rtp::{RtpPacket, RtpPayload};

/// How a PCM frame came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFrameKind {
    /// Decoded from the packet for this period.
    Decoded,
    /// Recovered from the next packet's in-band FEC.
    FecRecovered,
    /// Synthesized by packet-loss concealment.
    Concealed,
    /// Silence: not started, sender in DTX, or concealment ran out.
    Silence,
}

/// One 20 ms frame of 48 kHz interleaved PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// `960 * channels` interleaved samples.
    pub samples: Vec<i16>,
    /// Channel count.
    pub channels: u8,
    /// Where the samples came from.
    pub kind: AudioFrameKind,
    /// RFC 6464 level of the packet, if the sender provided one.
    pub audio_level: Option<u8>,
    /// RTP timestamp (48 kHz) of the first sample, when the frame belongs to the stream's
    /// timeline (`None` before playout started).
    pub timestamp: Option<u32>,
}

impl AudioFrame {
    /// A silent frame.
    pub fn silence(channels: u8) -> Self {
        AudioFrame {
            samples: vec![0; FRAME_SAMPLES * channels as usize],
            channels,
            kind: AudioFrameKind::Silence,
            audio_level: None,
            timestamp: None,
        }
    }
}

/// Settings of an [`AudioReceiver`].
#[derive(Debug, Clone)]
pub struct AudioReceiverConfig {
    /// Output channels (1 or 2); Opus decodes either stream layout into this.
    pub channels: u8,
    /// Jitter buffer tuning.
    pub jitter: JitterConfig,
    /// Longest run of concealment before the output turns to silence.
    pub max_concealment: Duration,
}

impl Default for AudioReceiverConfig {
    fn default() -> Self {
        AudioReceiverConfig {
            channels: 1,
            jitter: JitterConfig::default(),
            max_concealment: Duration::from_millis(200),
        }
    }
}

/// Receiver counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioReceiverStats {
    /// Jitter buffer view (loss, jitter, delay).
    pub jitter: JitterStats,
    /// Frames decoded from their own packet.
    pub decoded: u64,
    /// Frames recovered by FEC.
    pub fec_recovered: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Silent frames.
    pub silence: u64,
    /// Packets rejected as malformed Opus.
    pub malformed: u64,
    /// Packets libopus failed to decode.
    pub decode_errors: u64,
}

/// Jitter buffer + Opus decoder for one remote audio stream.
#[derive(Debug)]
pub struct AudioReceiver {
    jb: JitterBuffer,
    decoder: OpusDecoder,
    channels: u8,
    pcm: VecDeque<i16>,
    pcm_kind: AudioFrameKind,
    pcm_level: Option<u8>,
    pcm_ts: Option<u32>,
    concealed_run: Duration,
    cfg: AudioReceiverConfig,
    stats: AudioReceiverStats,
}

impl AudioReceiver {
    /// New receiver.
    pub fn new(cfg: AudioReceiverConfig) -> Result<Self> {
        let decoder = OpusDecoder::new(cfg.channels)?;
        Ok(AudioReceiver {
            jb: JitterBuffer::new(cfg.jitter.clone()),
            decoder,
            channels: cfg.channels,
            pcm: VecDeque::new(),
            pcm_kind: AudioFrameKind::Silence,
            pcm_level: None,
            pcm_ts: None,
            concealed_run: Duration::ZERO,
            cfg,
            stats: AudioReceiverStats::default(),
        })
    }

    /// Feeds a received RTP packet. Malformed Opus payloads are counted and rejected.
    pub fn push(&mut self, packet: RtpPacket, now: Instant) -> Result<PushOutcome> {
        let info = match parse_packet(&packet.payload) {
            Ok(info) => info,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        let ticks = u64::from(self.cfg.jitter.clock_rate) * info.samples as u64 / 48_000;
        Ok(self.jb.push_with_duration(packet, ticks.max(1) as u32, now))
    }

    /// Exactly one 20 ms frame for this tick.
    pub fn pop(&mut self, now: Instant) -> AudioFrame {
        let want = FRAME_SAMPLES * self.channels as usize;
        // Packets shorter than 20 ms need several jitter buffer pops per tick.
        for _ in 0..8 {
            if self.pcm.len() >= want {
                break;
            }
            self.refill(now);
        }
        if self.pcm.len() < want {
            // Only on decoder trouble: pad with silence.
            self.pcm.resize(want, 0);
        }
        let samples: Vec<i16> = self.pcm.drain(..want).collect();
        let frame = AudioFrame {
            samples,
            channels: self.channels,
            kind: self.pcm_kind,
            audio_level: self.pcm_level,
            timestamp: self.pcm_ts,
        };
        self.pcm_ts = self.pcm_ts.map(|t| t.wrapping_add(FRAME_SAMPLES as u32));
        match frame.kind {
            AudioFrameKind::Decoded => self.stats.decoded += 1,
            AudioFrameKind::FecRecovered => self.stats.fec_recovered += 1,
            AudioFrameKind::Concealed => self.stats.concealed += 1,
            AudioFrameKind::Silence => self.stats.silence += 1,
        }
        frame
    }

    fn refill(&mut self, now: Instant) {
        let ch = self.channels as usize;
        let mut buf = Vec::with_capacity(FRAME_SAMPLES * ch * 3);
        let silence = |buf: &mut Vec<i16>| buf.resize(FRAME_SAMPLES * ch, 0);
        let playout = self.jb.pop(now);
        let ts = match &playout {
            Playout::Buffering => None,
            Playout::Packet { timestamp, .. }
            | Playout::Lost { timestamp, .. }
            | Playout::Silence { timestamp } => Some(*timestamp),
        };
        let (kind, level) = match playout {
            Playout::Buffering | Playout::Silence { .. } => {
                silence(&mut buf);
                (AudioFrameKind::Silence, None)
            }
            Playout::Packet {
                payload,
                audio_level,
                ..
            } => {
                self.concealed_run = Duration::ZERO;
                let dtx = parse_packet(&payload).is_ok_and(|i| i.dtx);
                match self.decoder.decode(&payload, &mut buf) {
                    Ok(_) if dtx => {
                        buf.iter_mut().for_each(|s| *s = 0);
                        (AudioFrameKind::Silence, audio_level)
                    }
                    Ok(_) => (AudioFrameKind::Decoded, audio_level),
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        buf.clear();
                        self.conceal(&mut buf)
                    }
                }
            }
            Playout::Lost {
                fec: Some(next), ..
            } => match self.decoder.decode_fec(&next, FRAME_SAMPLES, &mut buf) {
                Ok(_) => {
                    self.concealed_run = Duration::ZERO;
                    (AudioFrameKind::FecRecovered, None)
                }
                Err(_) => {
                    buf.clear();
                    self.conceal(&mut buf)
                }
            },
            Playout::Lost { fec: None, .. } => self.conceal(&mut buf),
        };
        if buf.len() < FRAME_SAMPLES * ch {
            buf.resize(FRAME_SAMPLES * ch, 0);
        }
        if self.pcm.is_empty() {
            self.pcm_ts = ts;
        }
        self.pcm.extend(buf);
        self.pcm_kind = kind;
        self.pcm_level = level;
    }

    fn conceal(&mut self, buf: &mut Vec<i16>) -> (AudioFrameKind, Option<u8>) {
        self.concealed_run += self.cfg.jitter.frame_duration;
        if self.concealed_run > self.cfg.max_concealment {
            buf.resize(FRAME_SAMPLES * self.channels as usize, 0);
            return (AudioFrameKind::Silence, None);
        }
        if self.decoder.conceal(FRAME_SAMPLES, buf).is_err() {
            buf.clear();
            buf.resize(FRAME_SAMPLES * self.channels as usize, 0);
        }
        (AudioFrameKind::Concealed, None)
    }

    /// Counters, including the jitter buffer's loss and jitter figures.
    pub fn stats(&self) -> AudioReceiverStats {
        let mut s = self.stats.clone();
        s.jitter = self.jb.stats();
        s
    }

    /// Fraction of packets lost since the previous call (for RTCP receiver reports).
    pub fn take_interval_loss(&mut self) -> f64 {
        self.jb.take_interval_loss()
    }

    /// The jitter buffer (read-only).
    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.jb
    }
}

/// Opus encoder + RTP timestamping for one outgoing audio stream.
#[derive(Debug)]
pub struct AudioSender {
    encoder: OpusEncoder,
    timestamp: u32,
    talkspurt_start: bool,
    in_dtx: bool,
}

impl AudioSender {
    /// New sender; `initial_timestamp` should be random (RFC 3550).
    pub fn new(cfg: OpusEncoderConfig, initial_timestamp: u32) -> Result<Self> {
        Ok(AudioSender {
            encoder: OpusEncoder::new(cfg)?,
            timestamp: initial_timestamp,
            talkspurt_start: true,
            in_dtx: false,
        })
    }

    /// Encodes one 20 ms frame (`960 * channels` interleaved samples at 48 kHz).
    ///
    /// Returns `None` for frames DTX lets us skip (after the first DTX packet of a silence,
    /// nothing is sent until speech resumes or libopus emits a comfort-noise update). The RTP
    /// timestamp advances by 960 either way; the marker bit flags the start of a talkspurt.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<RtpPayload>> {
        let payload = self.encoder.encode(pcm)?;
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        let dtx = payload.len() <= 2;
        if dtx {
            if self.in_dtx {
                self.talkspurt_start = true;
                return Ok(None);
            }
            self.in_dtx = true;
        } else {
            self.in_dtx = false;
        }
        let marker = std::mem::take(&mut self.talkspurt_start) && !dtx;
        Ok(Some(RtpPayload {
            timestamp,
            marker,
            payload,
            audio_level: Some(audio_level(pcm)),
            keyframe: false,
        }))
    }

    /// Applies a measured loss fraction (0.0..=1.0, from RTCP) as the encoder's loss hint.
    pub fn set_packet_loss(&mut self, fraction: f64) -> Result<()> {
        if !fraction.is_finite() {
            return Err(MediaError::InvalidArgument(
                "loss fraction not finite".into(),
            ));
        }
        let percent = (fraction.clamp(0.0, 1.0) * 100.0).round() as u8;
        self.encoder.set_packet_loss_percent(percent)
    }

    /// Changes the target bitrate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        self.encoder.set_bitrate(bps)
    }

    /// The encoder.
    pub fn encoder(&self) -> &OpusEncoder {
        &self.encoder
    }

    /// RTP timestamp the next frame will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }
}
