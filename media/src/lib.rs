//! # comet-media: codecs, RTP payloads, jitter buffer
//!
//! Contract: turns RTP payloads into decoded frames and back, with no IO of its own. Every
//! stateful piece is sans-IO: it takes bytes and a time `now` (a [`std::time::Instant`]
//! handed in by the caller, never read from a clock) and returns frames, bytes and requests
//! (such as "need a keyframe"). Malformed input never panics: it is rejected with a
//! [`MediaError`] and counted.
//!
//! The transport (str0m in RTP mode) parses RTP headers and feeds [`RtpPacket`]s; this crate
//! knows nothing of WebRTC, sockets or threads.
//!
//! What is where:
//! * [`audio`] - [`AudioReceiver`] (jitter buffer + Opus decoder, one 20 ms PCM frame per
//!   `pop`) and [`AudioSender`] (Opus encoder + RTP timestamps, DTX, loss hint).
//! * [`video`] - [`VideoReceiver`] (depacketize + assemble + decode to [`I420Frame`], with
//!   throttled [`VideoEvent::NeedKeyframe`]) and [`VideoSender`] (H.264 or VP8 encode +
//!   packetize).
//! * [`jitter`] - the adaptive audio [`JitterBuffer`].
//! * [`assembler`] - video [`FrameAssembler`] with loss detection.
//! * [`h264`] - Annex-B/AVCC, `AVCDecoderConfigurationRecord`, RFC 6184 (mode 1) packetizer
//!   and depacketizer.
//! * [`vp8`] - RFC 7741 descriptor, depacketizer, packetizer.
//! * [`g711`] - G.711 mu-law/A-law and the 8 <-> 48 kHz resamplers.
//! * [`opus`] - Opus packet validation (RFC 6716 section 3), encoder, decoder with FEC/PLC.
//! * [`video_codec`] - OpenH264 encoder/decoder, FFmpeg VP8 decoder, libvpx VP8 encoder.
//! * [`aac`] - AAC-LC encoder for RTMP (48 kHz PCM in, 48 or 44.1 kHz AAC out).
//! * [`frame`] - the [`I420Frame`] picture type.
//!
//! Feature `codecs` (default) brings in the native codecs (libopus, OpenH264, FFmpeg) and the
//! modules that need them (`audio`, `video`, `video_codec`, `aac`, the Opus encoder and
//! decoder). Without it the crate is pure Rust: RTP types, payload formats, jitter buffer and
//! frame assembly (what an SFU or a fuzzer needs).

#[cfg(feature = "codecs")]
pub mod aac;
pub mod assembler;
#[cfg(feature = "codecs")]
pub mod audio;
pub mod error;
pub mod frame;
pub mod g711;
pub mod h264;
pub mod jitter;
pub mod opus;
pub mod rtp;
#[cfg(feature = "codecs")]
pub mod video;
#[cfg(feature = "codecs")]
pub mod video_codec;
pub mod vp8;

#[cfg(feature = "codecs")]
pub use aac::{AacConfig, AacEncoder, AacFrame};
pub use assembler::{AssembledFrame, AssemblerConfig, FrameAssembler};
#[cfg(feature = "codecs")]
pub use audio::{
    AudioCodec, AudioFrame, AudioFrameInfo, AudioFrameKind, AudioReceiver, AudioReceiverConfig,
    AudioReceiverStats, AudioSender,
};
pub use error::{MediaError, Result};
pub use frame::I420Frame;
pub use h264::{Depacketizer, H264Depacketizer, H264Packetizer};
pub use jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};
#[cfg(feature = "codecs")]
pub use opus::{OpusDecoder, OpusEncoder, OpusEncoderConfig};
pub use rtp::{RtpPacket, RtpPayload};
#[cfg(feature = "codecs")]
pub use video::{
    VideoCodec, VideoEvent, VideoReceiver, VideoReceiverConfig, VideoReceiverStats, VideoSender,
    VideoSenderConfig,
};
#[cfg(feature = "codecs")]
pub use video_codec::{
    EncodedVideoFrame, H264Decoder, H264Encoder, H264EncoderConfig, VideoDecoder, VideoEncoder,
    VideoEncoderConfig, Vp8Decoder, Vp8Encoder,
};
pub use vp8::{Vp8Depacketizer, Vp8Packetizer};
