//! Per-participant audio paths for a conference runtime that ticks every 20 ms.
//!
//! * [`AudioReceiver`]: RTP Opus (or G.711) packets in, exactly one 20 ms 48 kHz PCM frame
//!   out per [`AudioReceiver::pop`] (decoded, FEC-recovered, concealed, or silence).
//! * [`AudioSender`]: one 20 ms 48 kHz PCM frame in, an RTP payload (with timestamp, marker
//!   and RFC 6464 level) out, Opus or G.711.
//!
//! G.711 (PCMU/PCMA, 8 kHz) is resampled to and from 48 kHz here, so the mixer only ever sees
//! 48 kHz; its RTP timestamps stay in its own 8 kHz clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{MediaError, Result};
use crate::g711::{self, Downsampler, Law, Upsampler};
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
    /// RTP timestamp (in the stream's clock: 48 kHz for Opus, 8 kHz for G.711) of the first
    /// sample, when the frame belongs to the stream's timeline (`None` before playout started).
    pub timestamp: Option<u32>,
}

/// What [`AudioReceiver::pop_into`] tells about the samples it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFrameInfo {
    /// Where the samples came from.
    pub kind: AudioFrameKind,
    /// RFC 6464 level of the packet, if the sender provided one.
    pub audio_level: Option<u8>,
    /// RTP timestamp of the first sample (see [`AudioFrame::timestamp`]).
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

/// The codec of an audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioCodec {
    /// Opus, 48 kHz RTP clock.
    #[default]
    Opus,
    /// G.711, 8 kHz RTP clock, one byte per sample.
    G711(Law),
}

impl AudioCodec {
    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48_000,
            AudioCodec::G711(_) => 8_000,
        }
    }

    /// RTP timestamp ticks of one 20 ms frame.
    pub fn frame_ticks(self) -> u32 {
        self.clock_rate() / 50
    }
}

/// Settings of an [`AudioReceiver`].
#[derive(Debug, Clone)]
pub struct AudioReceiverConfig {
    /// The stream's codec (the jitter buffer's clock rate follows it).
    pub codec: AudioCodec,
    /// Output channels (1 or 2); Opus decodes either stream layout into this, G.711 (mono)
    /// is duplicated.
    pub channels: u8,
    /// Jitter buffer tuning.
    pub jitter: JitterConfig,
    /// Longest run of concealment before the output turns to silence.
    pub max_concealment: Duration,
}

impl Default for AudioReceiverConfig {
    fn default() -> Self {
        AudioReceiverConfig {
            codec: AudioCodec::Opus,
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
    /// Packets rejected as malformed (bad Opus, empty G.711).
    pub malformed: u64,
    /// Packets libopus failed to decode.
    pub decode_errors: u64,
}

/// The decoding half of an [`AudioReceiver`].
#[derive(Debug)]
enum Decoder {
    Opus(OpusDecoder),
    G711 {
        law: Law,
        up: Box<Upsampler>,
        /// 8 kHz scratch.
        narrow: Vec<i16>,
        /// The last 20 ms decoded at 48 kHz (mono), repeated with a fade to conceal a loss.
        last: Vec<i16>,
        /// Gain of the next concealed frame.
        fade: f32,
    },
}

impl Decoder {
    /// Decodes one packet into `out` (48 kHz, `channels` interleaved).
    fn decode(&mut self, payload: &[u8], channels: u8, out: &mut Vec<i16>) -> Result<usize> {
        match self {
            Decoder::Opus(d) => d.decode(payload, out),
            Decoder::G711 {
                law,
                up,
                narrow,
                last,
                fade,
            } => {
                narrow.clear();
                g711::decode(*law, payload, narrow);
                let start = out.len();
                up.process(narrow, out);
                last.clear();
                last.extend_from_slice(&out[start..]);
                *fade = 1.0;
                if channels == 2 {
                    let mono: Vec<i16> = out.drain(start..).collect();
                    out.extend(mono.iter().flat_map(|&s| [s, s]));
                }
                Ok(narrow.len() * g711::RATIO)
            }
        }
    }

    /// Conceals one 20 ms frame into `out`.
    fn conceal(&mut self, channels: u8, out: &mut Vec<i16>) -> Result<()> {
        match self {
            Decoder::Opus(d) => d.conceal(FRAME_SAMPLES, out).map(|_| ()),
            Decoder::G711 { last, fade, up, .. } => {
                // Repeat the last frame, fading out (-6 dB a frame), as G.711 Appendix I's
                // simplest form does; the resampler restarts after the gap.
                *fade *= 0.5;
                let g = *fade;
                let frame: Vec<i16> = (0..FRAME_SAMPLES)
                    .map(|i| (f32::from(last.get(i).copied().unwrap_or(0)) * g) as i16)
                    .collect();
                up.reset();
                if channels == 2 {
                    out.extend(frame.iter().flat_map(|&s| [s, s]));
                } else {
                    out.extend(frame);
                }
                Ok(())
            }
        }
    }
}

/// Jitter buffer + decoder (Opus or G.711) for one remote audio stream.
#[derive(Debug)]
pub struct AudioReceiver {
    jb: JitterBuffer,
    decoder: Decoder,
    channels: u8,
    pcm: VecDeque<i16>,
    pcm_kind: AudioFrameKind,
    pcm_level: Option<u8>,
    pcm_ts: Option<u32>,
    concealed_run: Duration,
    /// See [`AudioReceiver::set_quiet`].
    quiet: bool,
    /// Decoder output buffer, reused from tick to tick.
    scratch: Vec<i16>,
    /// The Opus packet `pcm` holds exactly (one 20 ms frame, decoded from it alone).
    pcm_packet: Option<Vec<u8>>,
    /// The packet of the frame last popped, if it was exactly one (see [`Self::frame_packet`]).
    popped_packet: Option<Vec<u8>>,
    cfg: AudioReceiverConfig,
    stats: AudioReceiverStats,
}

impl AudioReceiver {
    /// New receiver.
    pub fn new(mut cfg: AudioReceiverConfig) -> Result<Self> {
        cfg.jitter.clock_rate = cfg.codec.clock_rate();
        let decoder = match cfg.codec {
            AudioCodec::Opus => Decoder::Opus(OpusDecoder::new(cfg.channels)?),
            AudioCodec::G711(law) => {
                if !(1..=2).contains(&cfg.channels) {
                    return Err(MediaError::InvalidArgument(
                        "channels must be 1 or 2".into(),
                    ));
                }
                Decoder::G711 {
                    law,
                    up: Box::new(Upsampler::new()),
                    narrow: Vec::with_capacity(FRAME_SAMPLES / g711::RATIO * 3),
                    last: Vec::with_capacity(FRAME_SAMPLES),
                    fade: 1.0,
                }
            }
        };
        Ok(AudioReceiver {
            jb: JitterBuffer::new(cfg.jitter.clone()),
            decoder,
            channels: cfg.channels,
            pcm: VecDeque::new(),
            pcm_kind: AudioFrameKind::Silence,
            pcm_level: None,
            pcm_ts: None,
            concealed_run: Duration::ZERO,
            quiet: false,
            scratch: Vec::new(),
            pcm_packet: None,
            popped_packet: None,
            cfg,
            stats: AudioReceiverStats::default(),
        })
    }

    /// Feeds a received RTP packet. Malformed payloads are counted and rejected.
    pub fn push(&mut self, packet: RtpPacket, now: Instant) -> Result<PushOutcome> {
        if let Decoder::G711 { .. } = self.decoder {
            // One byte per 8 kHz sample; at most 120 ms in one packet.
            let n = packet.payload.len();
            if n == 0 || n > 960 {
                self.stats.malformed += 1;
                return Err(MediaError::malformed(
                    "G.711",
                    "empty, or longer than 120 ms",
                ));
            }
            return Ok(self.jb.push_with_duration(packet, n as u32, now));
        }
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
        let mut samples = vec![0; FRAME_SAMPLES * self.channels as usize];
        let info = self.pop_into(now, &mut samples);
        AudioFrame {
            samples,
            channels: self.channels,
            kind: info.kind,
            audio_level: info.audio_level,
            timestamp: info.timestamp,
        }
    }

    /// [`AudioReceiver::pop`] into `out` (`960 * channels` samples; a shorter `out` gets the
    /// first samples, a longer one is zero-padded), without allocating: for a mixer that pops
    /// every member every 20 ms.
    pub fn pop_into(&mut self, now: Instant, out: &mut [i16]) -> AudioFrameInfo {
        let want = FRAME_SAMPLES * self.channels as usize;
        let fresh = self.pcm.is_empty();
        let mut refills = 0;
        // Packets shorter than 20 ms need several jitter buffer pops per tick.
        for _ in 0..8 {
            if self.pcm.len() >= want {
                break;
            }
            self.refill(now);
            refills += 1;
        }
        // The frame is exactly one packet when one refill from empty made exactly a frame.
        self.popped_packet = if fresh && refills == 1 && self.pcm.len() == want {
            self.pcm_packet.take()
        } else {
            None
        };
        if self.pcm.len() < want {
            // Only on decoder trouble: pad with silence.
            self.pcm.resize(want, 0);
        }
        let n = out.len().min(want);
        for (o, s) in out.iter_mut().zip(self.pcm.drain(..want)) {
            *o = s;
        }
        out[n..].fill(0);
        let info = AudioFrameInfo {
            kind: self.pcm_kind,
            audio_level: self.pcm_level,
            timestamp: self.pcm_ts,
        };
        let ticks = self.cfg.codec.frame_ticks();
        self.pcm_ts = self.pcm_ts.map(|t| t.wrapping_add(ticks));
        match info.kind {
            AudioFrameKind::Decoded => self.stats.decoded += 1,
            AudioFrameKind::FecRecovered => self.stats.fec_recovered += 1,
            AudioFrameKind::Concealed => self.stats.concealed += 1,
            AudioFrameKind::Silence => self.stats.silence += 1,
        }
        info
    }

    fn refill(&mut self, now: Instant) {
        self.pcm_packet = None;
        let ch = self.channels as usize;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
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
                duration,
                ..
            } => {
                self.concealed_run = Duration::ZERO;
                let dtx = matches!(self.decoder, Decoder::Opus(_))
                    && parse_packet(&payload).is_ok_and(|i| i.dtx);
                if dtx || (self.quiet && audio_level == Some(127)) {
                    // A DTX frame decodes to comfort noise (libopus runs its concealment
                    // and noise generator for it): not worth it for a mixer, which mixes
                    // talkers only. Most members of a large conference send nothing else.
                    silence(&mut buf);
                    (AudioFrameKind::Silence, audio_level)
                } else {
                    match self.decoder.decode(&payload, self.channels, &mut buf) {
                        Ok(_) => {
                            if matches!(self.decoder, Decoder::Opus(_))
                                && duration == self.cfg.codec.frame_ticks()
                                && self.pcm.is_empty()
                            {
                                self.pcm_packet = Some(payload);
                            }
                            (AudioFrameKind::Decoded, audio_level)
                        }
                        Err(_) => {
                            self.stats.decode_errors += 1;
                            buf.clear();
                            self.conceal(&mut buf)
                        }
                    }
                }
            }
            Playout::Lost {
                fec: Some(next), ..
            } if !self.quiet => match &mut self.decoder {
                Decoder::Opus(d) => match d.decode_fec(&next, FRAME_SAMPLES, &mut buf) {
                    Ok(_) => {
                        self.concealed_run = Duration::ZERO;
                        (AudioFrameKind::FecRecovered, None)
                    }
                    Err(_) => {
                        buf.clear();
                        self.conceal(&mut buf)
                    }
                },
                // No in-band FEC in G.711.
                Decoder::G711 { .. } => self.conceal(&mut buf),
            },
            Playout::Lost { .. } => self.conceal(&mut buf),
        };
        if buf.len() < FRAME_SAMPLES * ch {
            buf.resize(FRAME_SAMPLES * ch, 0);
        }
        if self.pcm.is_empty() {
            self.pcm_ts = ts;
        }
        self.pcm.extend(buf.drain(..));
        self.scratch = buf;
        self.pcm_kind = kind;
        self.pcm_level = level;
    }

    fn conceal(&mut self, buf: &mut Vec<i16>) -> (AudioFrameKind, Option<u8>) {
        self.concealed_run += self.cfg.jitter.frame_duration;
        if self.quiet || self.concealed_run > self.cfg.max_concealment {
            buf.resize(FRAME_SAMPLES * self.channels as usize, 0);
            return (AudioFrameKind::Silence, None);
        }
        if self.decoder.conceal(self.channels, buf).is_err() {
            buf.clear();
            buf.resize(FRAME_SAMPLES * self.channels as usize, 0);
        }
        (AudioFrameKind::Concealed, None)
    }

    /// Quiet mode, for a mixer that knows this sender is not being heard (not talking, not
    /// among the mixed): lost frames become silence instead of being concealed, and packets
    /// whose RFC 6464 level says digital silence (127) are not decoded. A browser in DTX
    /// sends a comfort-noise packet every 400 ms; without this each gap costs up to
    /// `max_concealment` of packet-loss concealment. Off by default.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// The Opus packet the frame last popped was decoded from, when that frame is exactly
    /// that one packet (20 ms, decoded, neither concealed, FEC nor silence). A mixer whose
    /// output for some listener is exactly this member's frame can send the packet as it came
    /// instead of decoding and encoding it again.
    pub fn frame_packet(&self) -> Option<&[u8]> {
        self.popped_packet.as_deref()
    }

    /// Whether quiet mode is on.
    pub fn is_quiet(&self) -> bool {
        self.quiet
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

/// The encoding half of an [`AudioSender`].
#[derive(Debug)]
enum Encoder {
    Opus(OpusEncoder),
    G711 {
        law: Law,
        down: Box<Downsampler>,
        /// 8 kHz scratch.
        narrow: Vec<i16>,
    },
}

/// Encoder (Opus or G.711) + RTP timestamping for one outgoing audio stream.
#[derive(Debug)]
pub struct AudioSender {
    encoder: Encoder,
    /// RTP ticks per 20 ms frame (960 for Opus, 160 for G.711).
    frame_ticks: u32,
    timestamp: u32,
    talkspurt_start: bool,
    in_dtx: bool,
}

impl AudioSender {
    /// New sender; `initial_timestamp` should be random (RFC 3550).
    pub fn new(cfg: OpusEncoderConfig, initial_timestamp: u32) -> Result<Self> {
        Ok(AudioSender {
            encoder: Encoder::Opus(OpusEncoder::new(cfg)?),
            frame_ticks: FRAME_SAMPLES as u32,
            timestamp: initial_timestamp,
            talkspurt_start: true,
            in_dtx: false,
        })
    }

    /// New G.711 sender (mono 48 kHz frames in, 8 kHz PCMU/PCMA out, no DTX).
    pub fn g711(law: Law, initial_timestamp: u32) -> Self {
        AudioSender {
            encoder: Encoder::G711 {
                law,
                down: Box::new(Downsampler::new()),
                narrow: Vec::with_capacity(FRAME_SAMPLES / g711::RATIO + 1),
            },
            frame_ticks: FRAME_SAMPLES as u32 / g711::RATIO as u32,
            timestamp: initial_timestamp,
            talkspurt_start: true,
            in_dtx: false,
        }
    }

    /// Encodes one 20 ms frame (`960 * channels` interleaved samples at 48 kHz; G.711 takes
    /// mono).
    ///
    /// Returns `None` for frames DTX lets us skip (after the first DTX packet of a silence,
    /// nothing is sent until speech resumes or libopus emits a comfort-noise update). The RTP
    /// timestamp advances by one frame (960 for Opus, 160 for G.711) either way; the marker
    /// bit flags the start of a talkspurt.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<RtpPayload>> {
        let (payload, dtx) = match &mut self.encoder {
            Encoder::Opus(e) => {
                let p = e.encode(pcm)?;
                let dtx = p.len() <= 2;
                (p, dtx)
            }
            Encoder::G711 { law, down, narrow } => {
                if pcm.len() != FRAME_SAMPLES {
                    return Err(MediaError::InvalidArgument(format!(
                        "G.711 encodes mono 20 ms frames of {FRAME_SAMPLES} samples, got {}",
                        pcm.len()
                    )));
                }
                narrow.clear();
                down.process(pcm, narrow);
                (g711::encode(*law, narrow), false)
            }
        };
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(self.frame_ticks);
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
        match &mut self.encoder {
            Encoder::Opus(e) => e.set_packet_loss_percent(percent),
            Encoder::G711 { .. } => Ok(()),
        }
    }

    /// Changes the Opus complexity (0..=10; G.711 has none). Cheap when unchanged.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<()> {
        match &mut self.encoder {
            Encoder::Opus(e) => e.set_complexity(complexity),
            Encoder::G711 { .. } => Ok(()),
        }
    }

    /// Changes the target bitrate (Opus; G.711 is always 64 kbit/s).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        match &mut self.encoder {
            Encoder::Opus(e) => e.set_bitrate(bps),
            Encoder::G711 { .. } => Ok(()),
        }
    }

    /// The Opus encoder (`None` for G.711).
    pub fn encoder(&self) -> Option<&OpusEncoder> {
        match &self.encoder {
            Encoder::Opus(e) => Some(e),
            Encoder::G711 { .. } => None,
        }
    }

    /// RTP timestamp the next frame will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }
}
