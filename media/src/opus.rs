//! Opus: RTP payload validation (RFC 7587 / RFC 6716 section 3) and the codec, through the
//! `opus` crate (libopus).
//!
//! An Opus RTP payload is exactly one Opus packet, so "depacketizing" means validating the
//! packet structure (TOC byte, frame count, frame lengths) before libopus sees it and learning
//! its duration for the jitter buffer.

use crate::error::{MediaError, Result};

const FMT: &str = "Opus";

/// Sample rate used throughout the crate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Largest Opus packet libopus will produce or accept here.
pub const MAX_PACKET: usize = 1500;

/// What the structure of an Opus packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusPacketInfo {
    /// TOC configuration number (0..=31): mode and bandwidth.
    pub config: u8,
    /// Stereo flag of the TOC byte.
    pub stereo: bool,
    /// Number of frames in the packet.
    pub frames: usize,
    /// Samples per frame at 48 kHz.
    pub samples_per_frame: usize,
    /// Total samples per channel at 48 kHz (`frames * samples_per_frame`).
    pub samples: usize,
    /// All frames are empty: a DTX / "nothing to decode" packet.
    pub dtx: bool,
}

fn samples_per_frame(config: u8) -> usize {
    // RFC 6716 table 2, durations in 48 kHz samples.
    match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    }
}

/// Reads a frame length (one or two bytes, RFC 6716 section 3.2.1).
fn frame_length(data: &[u8], pos: &mut usize) -> Result<usize> {
    let b0 = *data
        .get(*pos)
        .ok_or_else(|| MediaError::malformed(FMT, "truncated frame length"))?;
    *pos += 1;
    if b0 < 252 {
        return Ok(b0 as usize);
    }
    let b1 = *data
        .get(*pos)
        .ok_or_else(|| MediaError::malformed(FMT, "truncated frame length"))?;
    *pos += 1;
    Ok(b1 as usize * 4 + b0 as usize)
}

/// Validates an Opus packet (RFC 6716 section 3.4 requirements R1-R7) and describes it.
pub fn parse_packet(data: &[u8]) -> Result<OpusPacketInfo> {
    let toc = *data
        .first()
        .ok_or_else(|| MediaError::malformed(FMT, "empty packet"))?;
    let config = toc >> 3;
    let stereo = toc & 0x04 != 0;
    let spf = samples_per_frame(config);
    let rest = data.len() - 1;
    let (frames, data_bytes) = match toc & 0x03 {
        0 => {
            if rest > 1275 {
                return Err(MediaError::malformed(FMT, "frame longer than 1275 bytes"));
            }
            (1, rest)
        }
        1 => {
            if !rest.is_multiple_of(2) {
                return Err(MediaError::malformed(FMT, "code 1 with odd length"));
            }
            if rest / 2 > 1275 {
                return Err(MediaError::malformed(FMT, "frame longer than 1275 bytes"));
            }
            (2, rest)
        }
        2 => {
            let mut pos = 1;
            let first = frame_length(data, &mut pos)?;
            let remaining = data.len() - pos;
            if first > remaining {
                return Err(MediaError::malformed(
                    FMT,
                    "code 2 first frame beyond packet",
                ));
            }
            if remaining - first > 1275 || first > 1275 {
                return Err(MediaError::malformed(FMT, "frame longer than 1275 bytes"));
            }
            (2, remaining)
        }
        _ => {
            let count_byte = *data
                .get(1)
                .ok_or_else(|| MediaError::malformed(FMT, "code 3 without frame count"))?;
            let vbr = count_byte & 0x80 != 0;
            let padded = count_byte & 0x40 != 0;
            let count = (count_byte & 0x3f) as usize;
            if count == 0 {
                return Err(MediaError::malformed(FMT, "code 3 with zero frames"));
            }
            if count * spf > 5760 {
                return Err(MediaError::malformed(FMT, "packet longer than 120 ms"));
            }
            let mut pos = 2;
            let mut padding = 0usize;
            if padded {
                loop {
                    let b = *data
                        .get(pos)
                        .ok_or_else(|| MediaError::malformed(FMT, "truncated padding length"))?;
                    pos += 1;
                    if b == 255 {
                        padding += 254;
                    } else {
                        padding += b as usize;
                        break;
                    }
                }
            }
            if pos + padding > data.len() {
                return Err(MediaError::malformed(FMT, "padding beyond packet"));
            }
            let end = data.len() - padding;
            let total = if vbr {
                let mut sum = 0usize;
                for _ in 0..count - 1 {
                    let len = frame_length(&data[..end], &mut pos)?;
                    if len > 1275 {
                        return Err(MediaError::malformed(FMT, "frame longer than 1275 bytes"));
                    }
                    sum += len;
                }
                if pos + sum > end {
                    return Err(MediaError::malformed(FMT, "VBR frames beyond packet"));
                }
                let last = end - pos - sum;
                if last > 1275 {
                    return Err(MediaError::malformed(FMT, "frame longer than 1275 bytes"));
                }
                sum + last
            } else {
                let bytes = end - pos;
                if !bytes.is_multiple_of(count) {
                    return Err(MediaError::malformed(FMT, "CBR frames of unequal size"));
                }
                if bytes / count > 1275 {
                    return Err(MediaError::malformed(FMT, "frame longer than 1275 bytes"));
                }
                bytes
            };
            (count, total)
        }
    };
    Ok(OpusPacketInfo {
        config,
        stereo,
        frames,
        samples_per_frame: spf,
        samples: frames * spf,
        dtx: data_bytes == 0 || data.len() <= 2,
    })
}

/// The libopus encoder and decoder (feature `codecs`).
#[cfg(feature = "codecs")]
mod codec {
    use super::*;

    /// Encoder settings.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct OpusEncoderConfig {
        /// 1 (mono) or 2 (stereo).
        pub channels: u8,
        /// Target bitrate in bits per second.
        pub bitrate: u32,
        /// 0 (fastest) ..= 10 (best).
        pub complexity: u8,
        /// Discontinuous transmission: tiny packets during silence.
        pub dtx: bool,
        /// In-band forward error correction (LBRR), effective once a loss hint is set.
        pub fec: bool,
        /// Initial expected packet loss in percent (the encoder's loss hint).
        pub packet_loss_percent: u8,
    }

    impl Default for OpusEncoderConfig {
        fn default() -> Self {
            OpusEncoderConfig {
                channels: 1,
                bitrate: 32_000,
                complexity: 5,
                dtx: false,
                fec: true,
                packet_loss_percent: 0,
            }
        }
    }

    fn channels(n: u8) -> Result<opus::Channels> {
        match n {
            1 => Ok(opus::Channels::Mono),
            2 => Ok(opus::Channels::Stereo),
            _ => Err(MediaError::InvalidArgument(format!(
                "Opus channels must be 1 or 2, not {n}"
            ))),
        }
    }

    fn opus_err(e: opus::Error) -> MediaError {
        MediaError::codec("Opus", e)
    }

    /// A 48 kHz Opus encoder in VOIP mode producing 20 ms packets.
    pub struct OpusEncoder {
        inner: opus::Encoder,
        cfg: OpusEncoderConfig,
        out: Vec<u8>,
    }

    impl std::fmt::Debug for OpusEncoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OpusEncoder")
                .field("cfg", &self.cfg)
                .finish()
        }
    }

    impl OpusEncoder {
        /// New encoder.
        pub fn new(cfg: OpusEncoderConfig) -> Result<Self> {
            let mut inner = opus::Encoder::new(
                SAMPLE_RATE,
                channels(cfg.channels)?,
                opus::Application::Voip,
            )
            .map_err(opus_err)?;
            inner
                .set_complexity(i32::from(cfg.complexity.min(10)))
                .map_err(opus_err)?;
            inner.set_dtx(cfg.dtx).map_err(opus_err)?;
            inner.set_inband_fec(cfg.fec).map_err(opus_err)?;
            let mut enc = OpusEncoder {
                inner,
                cfg: OpusEncoderConfig {
                    complexity: cfg.complexity.min(10),
                    ..cfg
                },
                out: vec![0; MAX_PACKET],
            };
            enc.set_bitrate(cfg.bitrate)?;
            enc.set_packet_loss_percent(cfg.packet_loss_percent)?;
            Ok(enc)
        }

        /// Current settings.
        pub fn config(&self) -> &OpusEncoderConfig {
            &self.cfg
        }

        /// Changes the target bitrate (clamped to 6..=510 kb/s).
        pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
            let bps = bps.clamp(6_000, 510_000);
            self.inner
                .set_bitrate(opus::Bitrate::Bits(bps as i32))
                .map_err(opus_err)?;
            self.cfg.bitrate = bps;
            Ok(())
        }

        /// Changes the complexity (0..=10, clamped); nothing to do if it is already that.
        pub fn set_complexity(&mut self, complexity: u8) -> Result<()> {
            let c = complexity.min(10);
            if c != self.cfg.complexity {
                self.inner.set_complexity(i32::from(c)).map_err(opus_err)?;
                self.cfg.complexity = c;
            }
            Ok(())
        }

        /// Sets the loss hint (from RTCP receiver reports); with FEC on, the encoder spends bits on
        /// redundancy accordingly.
        pub fn set_packet_loss_percent(&mut self, percent: u8) -> Result<()> {
            let p = percent.min(100);
            self.inner
                .set_packet_loss_perc(i32::from(p))
                .map_err(opus_err)?;
            self.cfg.packet_loss_percent = p;
            Ok(())
        }

        /// Encodes exactly one 20 ms frame of interleaved 48 kHz PCM (`960 * channels` samples).
        pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
            let want = FRAME_SAMPLES * self.cfg.channels as usize;
            if pcm.len() != want {
                return Err(MediaError::InvalidArgument(format!(
                    "Opus encoder wants {want} samples per frame, got {}",
                    pcm.len()
                )));
            }
            let n = self.inner.encode(pcm, &mut self.out).map_err(opus_err)?;
            Ok(self.out[..n].to_vec())
        }
    }

    /// A 48 kHz Opus decoder with FEC and packet-loss concealment.
    pub struct OpusDecoder {
        inner: opus::Decoder,
        channels: usize,
    }

    impl std::fmt::Debug for OpusDecoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OpusDecoder")
                .field("channels", &self.channels)
                .finish()
        }
    }

    impl OpusDecoder {
        /// New decoder producing `channels` (1 or 2) interleaved channels.
        pub fn new(channels_count: u8) -> Result<Self> {
            let inner =
                opus::Decoder::new(SAMPLE_RATE, channels(channels_count)?).map_err(opus_err)?;
            Ok(OpusDecoder {
                inner,
                channels: channels_count as usize,
            })
        }

        /// Output channels.
        pub fn channels(&self) -> usize {
            self.channels
        }

        /// Decodes a packet, appending interleaved PCM to `out`. Returns samples per channel.
        /// The packet is validated first, so malformed data is an error, never a crash.
        pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<usize> {
            let info = parse_packet(packet)?;
            let start = out.len();
            out.resize(start + info.samples.max(FRAME_SAMPLES) * self.channels, 0);
            match self.inner.decode(packet, &mut out[start..], false) {
                Ok(n) => {
                    out.truncate(start + n * self.channels);
                    Ok(n)
                }
                Err(e) => {
                    out.truncate(start);
                    Err(opus_err(e))
                }
            }
        }

        /// Recovers the frame *before* `next_packet` from its in-band FEC data, appending
        /// `samples` samples per channel. Falls back to concealment when the packet has no FEC
        /// data (libopus does that itself).
        pub fn decode_fec(
            &mut self,
            next_packet: &[u8],
            samples: usize,
            out: &mut Vec<i16>,
        ) -> Result<usize> {
            parse_packet(next_packet)?;
            self.run_missing(Some(next_packet), samples, out)
        }

        /// Packet-loss concealment for `samples` samples per channel.
        pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<usize> {
            self.run_missing(None, samples, out)
        }

        fn run_missing(
            &mut self,
            packet: Option<&[u8]>,
            samples: usize,
            out: &mut Vec<i16>,
        ) -> Result<usize> {
            // libopus wants a multiple of 2.5 ms.
            let samples = (samples / 120).max(1) * 120;
            let start = out.len();
            out.resize(start + samples * self.channels, 0);
            let res = match packet {
                Some(p) => self.inner.decode(p, &mut out[start..], true),
                None => self.inner.decode(&[], &mut out[start..], false),
            };
            match res {
                Ok(n) => {
                    out.truncate(start + n * self.channels);
                    Ok(n)
                }
                Err(e) => {
                    out.truncate(start);
                    Err(opus_err(e))
                }
            }
        }
    }
}

#[cfg(feature = "codecs")]
pub use codec::{OpusDecoder, OpusEncoder, OpusEncoderConfig};

/// RFC 6464 audio level of interleaved PCM: -dBov, 0 (loudest) ..= 127 (silence).
pub fn audio_level(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let sum: f64 = pcm.iter().map(|&s| (s as f64 / 32768.0).powi(2)).sum();
    let rms = (sum / pcm.len() as f64).sqrt();
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_codes() {
        // Code 0, SILK WB 20 ms.
        let p = parse_packet(&[0x48, 1, 2, 3]).unwrap();
        assert_eq!((p.frames, p.samples, p.stereo), (1, 960, false));
        // Code 1: two equal frames of CELT FB 10 ms.
        let p = parse_packet(&[0xf1, 1, 2]).unwrap();
        assert_eq!((p.frames, p.samples), (2, 960));
        assert!(parse_packet(&[0xf1, 1]).is_err());
        // Code 2.
        assert!(parse_packet(&[0x4a, 2, 1, 2, 3]).is_ok());
        assert!(parse_packet(&[0x4a, 9, 1]).is_err());
        // Code 3 CBR with 3 frames of 20 ms.
        let p = parse_packet(&[0x4b, 3, 1, 2, 3]).unwrap();
        assert_eq!(p.samples, 2880);
        assert!(parse_packet(&[0x4b, 3, 1, 2]).is_err());
        // Code 3 VBR with padding.
        assert!(parse_packet(&[0x4b, 0xc2, 1, 1, 7, 8, 0]).is_ok());
        assert!(parse_packet(&[0x4b, 0xc2, 9, 1, 7]).is_err());
        // Longer than 120 ms.
        assert!(parse_packet(&[0x1b, 7, 0]).is_err());
        assert!(parse_packet(&[]).is_err());
        assert!(parse_packet(&[0x48]).unwrap().dtx);
    }

    #[test]
    fn levels() {
        assert_eq!(audio_level(&[0; 960]), 127);
        assert_eq!(audio_level(&[i16::MAX; 960]), 0);
        let half: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { 3277 } else { -3277 })
            .collect();
        assert_eq!(audio_level(&half), 20);
    }
}
