//! Per-participant video paths.
//!
//! * [`VideoReceiver`]: RTP packets in; decoded I420 frames and throttled
//!   [`VideoEvent::NeedKeyframe`] requests (for the transport to turn into PLI/FIR) out.
//! * [`VideoSender`]: I420 frames in; H.264 (RFC 6184) or VP8 (RFC 7741) RTP payloads no
//!   bigger than the MTU out.

use std::time::{Duration, Instant};

use crate::assembler::{AssembledFrame, AssemblerConfig, AssemblerStats, FrameAssembler};
use crate::error::Result;
use crate::frame::I420Frame;
use crate::h264::{Depacketizer, H264Depacketizer, H264Packetizer};
use crate::rtp::{RtpPacket, RtpPayload};
use crate::video_codec::{
    EncodedVideoFrame, H264Decoder, H264Encoder, H264EncoderConfig, VideoDecoder, VideoEncoder,
    Vp8Decoder, Vp8Encoder,
};
use crate::vp8::{Vp8Depacketizer, Vp8Packetizer};

/// RTP clock rate of video.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// Video codec (of what a member sends, or of what we send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264, RFC 6184 packetization-mode 1.
    H264,
    /// VP8, RFC 7741.
    Vp8,
}

/// What a [`VideoReceiver`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoEvent {
    /// A decoded picture.
    Frame {
        /// The picture.
        frame: I420Frame,
        /// Its RTP timestamp (90 kHz).
        timestamp: u32,
    },
    /// Ask the sender for a keyframe (PLI or FIR). Already throttled.
    NeedKeyframe,
}

/// Settings of a [`VideoReceiver`].
#[derive(Debug, Clone)]
pub struct VideoReceiverConfig {
    /// Codec of the stream.
    pub codec: VideoCodec,
    /// Frame assembly tuning.
    pub assembler: AssemblerConfig,
    /// Minimum time between two keyframe requests.
    pub keyframe_request_interval: Duration,
}

impl VideoReceiverConfig {
    /// Defaults for a codec.
    pub fn new(codec: VideoCodec) -> Self {
        VideoReceiverConfig {
            codec,
            assembler: AssemblerConfig::default(),
            keyframe_request_interval: Duration::from_millis(500),
        }
    }
}

/// Receiver counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoReceiverStats {
    /// Frame assembly counters.
    pub assembler: AssemblerStats,
    /// Frames decoded.
    pub decoded: u64,
    /// Frames the decoder rejected.
    pub decode_errors: u64,
    /// Delta frames dropped while waiting for a keyframe.
    pub dropped_waiting_for_keyframe: u64,
    /// Keyframe requests emitted.
    pub keyframe_requests: u64,
}

/// Depacketizer + frame assembly + decoder for one remote video stream.
#[derive(Debug)]
pub struct VideoReceiver {
    assembler: FrameAssembler,
    decoder: VideoDecoder,
    cfg: VideoReceiverConfig,
    waiting_for_keyframe: bool,
    want_keyframe: bool,
    last_request: Option<Instant>,
    stats: VideoReceiverStats,
}

impl VideoReceiver {
    /// New receiver.
    pub fn new(cfg: VideoReceiverConfig) -> Result<Self> {
        let (depacketizer, decoder): (Box<dyn Depacketizer + Send>, VideoDecoder) = match cfg.codec
        {
            VideoCodec::H264 => (
                Box::new(H264Depacketizer::new()),
                VideoDecoder::H264(H264Decoder::new()?),
            ),
            VideoCodec::Vp8 => (
                Box::new(Vp8Depacketizer::new()),
                VideoDecoder::Vp8(Vp8Decoder::new()?),
            ),
        };
        Ok(VideoReceiver {
            assembler: FrameAssembler::new(depacketizer, cfg.assembler.clone()),
            decoder,
            cfg,
            waiting_for_keyframe: true,
            want_keyframe: false,
            last_request: None,
            stats: VideoReceiverStats::default(),
        })
    }

    /// Feeds a packet; returns decoded frames and keyframe requests.
    pub fn push(&mut self, packet: RtpPacket, now: Instant) -> Vec<VideoEvent> {
        let frames = self.assembler.push(packet, now);
        self.process(frames, now)
    }

    /// Call periodically (e.g. every tick): times out holes and repeats keyframe requests.
    pub fn poll(&mut self, now: Instant) -> Vec<VideoEvent> {
        let frames = self.assembler.poll(now);
        self.process(frames, now)
    }

    /// Asks for a keyframe at the next opportunity (e.g. a new consumer joined).
    pub fn request_keyframe(&mut self) {
        self.want_keyframe = true;
    }

    fn process(&mut self, frames: Vec<AssembledFrame>, now: Instant) -> Vec<VideoEvent> {
        let mut events = Vec::new();
        for f in frames {
            if f.after_loss && !f.keyframe {
                self.waiting_for_keyframe = true;
                self.want_keyframe = true;
            }
            if self.waiting_for_keyframe && !f.keyframe {
                self.stats.dropped_waiting_for_keyframe += 1;
                self.want_keyframe = true;
                continue;
            }
            match self.decoder.decode(&f.data) {
                Ok(Some(frame)) => {
                    self.stats.decoded += 1;
                    if f.keyframe {
                        self.waiting_for_keyframe = false;
                        self.want_keyframe = false;
                    }
                    events.push(VideoEvent::Frame {
                        frame,
                        timestamp: f.timestamp,
                    });
                }
                Ok(None) => {}
                Err(_) => {
                    self.stats.decode_errors += 1;
                    self.waiting_for_keyframe = true;
                    self.want_keyframe = true;
                }
            }
        }
        if self.want_keyframe
            && self.last_request.is_none_or(|t| {
                now.saturating_duration_since(t) >= self.cfg.keyframe_request_interval
            })
        {
            self.last_request = Some(now);
            self.stats.keyframe_requests += 1;
            events.push(VideoEvent::NeedKeyframe);
        }
        events
    }

    /// Counters.
    pub fn stats(&self) -> VideoReceiverStats {
        let mut s = self.stats.clone();
        s.assembler = self.assembler.stats().clone();
        s
    }
}

/// Settings of a [`VideoSender`].
#[derive(Debug, Clone)]
pub struct VideoSenderConfig {
    /// The codec (default H.264).
    pub codec: VideoCodec,
    /// Encoder settings.
    pub encoder: H264EncoderConfig,
    /// Maximum RTP payload size.
    pub mtu: usize,
    /// RTP timestamp of the first frame (random per RFC 3550).
    pub initial_timestamp: u32,
}

impl Default for VideoSenderConfig {
    fn default() -> Self {
        VideoSenderConfig {
            codec: VideoCodec::H264,
            encoder: H264EncoderConfig::default(),
            mtu: 1200,
            initial_timestamp: 0,
        }
    }
}

#[derive(Debug)]
enum Packetizer {
    H264(H264Packetizer),
    Vp8(Vp8Packetizer),
}

/// Encoder + packetizer for one outgoing video stream: H.264 (OpenH264, RFC 6184 mode 1) or
/// VP8 (libvpx, RFC 7741 with a 15-bit PictureID).
#[derive(Debug)]
pub struct VideoSender {
    encoder: VideoEncoder,
    packetizer: Packetizer,
    initial_timestamp: u32,
    start: Option<Instant>,
}

impl VideoSender {
    /// New sender.
    pub fn new(cfg: VideoSenderConfig) -> Result<Self> {
        let (encoder, packetizer) = match cfg.codec {
            VideoCodec::H264 => (
                VideoEncoder::H264(Box::new(H264Encoder::new(cfg.encoder)?)),
                Packetizer::H264(H264Packetizer::new(cfg.mtu)?),
            ),
            VideoCodec::Vp8 => (
                VideoEncoder::Vp8(Vp8Encoder::new(cfg.encoder)?),
                Packetizer::Vp8(Vp8Packetizer::new(cfg.mtu, rand_picture_id())?),
            ),
        };
        Ok(VideoSender {
            encoder,
            packetizer,
            initial_timestamp: cfg.initial_timestamp,
            start: None,
        })
    }

    /// The codec it sends.
    pub fn codec(&self) -> VideoCodec {
        match self.packetizer {
            Packetizer::H264(_) => VideoCodec::H264,
            Packetizer::Vp8(_) => VideoCodec::Vp8,
        }
    }

    /// Encodes a frame captured at `now` and packetizes it; the RTP timestamp follows `now`
    /// on the 90 kHz clock.
    pub fn encode(&mut self, frame: &I420Frame, now: Instant) -> Result<Vec<RtpPayload>> {
        let start = *self.start.get_or_insert(now);
        let ticks = now.saturating_duration_since(start).as_micros() * u128::from(VIDEO_CLOCK_RATE)
            / 1_000_000;
        let ts = self.initial_timestamp.wrapping_add(ticks as u32);
        self.encode_at(frame, ts)
    }

    /// Encodes a frame with an explicit RTP timestamp.
    pub fn encode_at(&mut self, frame: &I420Frame, timestamp: u32) -> Result<Vec<RtpPayload>> {
        let encoded = self.encoder.encode(frame)?;
        Ok(self.packetize(&encoded, timestamp))
    }

    /// Packetizes an already encoded frame (of this sender's codec). Nothing for an empty
    /// frame (a picture rate control skipped).
    pub fn packetize(&mut self, encoded: &EncodedVideoFrame, timestamp: u32) -> Vec<RtpPayload> {
        if encoded.data.is_empty() {
            return Vec::new();
        }
        let payloads = match &mut self.packetizer {
            Packetizer::H264(p) => p.packetize(&encoded.nals()),
            Packetizer::Vp8(p) => p.packetize(&encoded.data),
        };
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| RtpPayload {
                timestamp,
                marker: i + 1 == n,
                payload,
                audio_level: None,
                keyframe: encoded.keyframe,
            })
            .collect()
    }

    /// The next frame will be a keyframe (on PLI/FIR).
    pub fn request_keyframe(&mut self) {
        self.encoder.request_keyframe();
    }

    /// Changes the target bitrate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        self.encoder.set_bitrate(bps)
    }

    /// The encoder.
    pub fn encoder_mut(&mut self) -> &mut VideoEncoder {
        &mut self.encoder
    }
}

/// A PictureID to start from: random, so that a restarted stream does not look like a
/// continuation.
fn rand_picture_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 15)) as u16 & 0x7fff
}
