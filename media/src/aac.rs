//! AAC-LC encoding for RTMP (FLV) output, through FFmpeg's native `aac` encoder.
//!
//! Input is the conference's 48 kHz interleaved i16 PCM (mono or stereo) in chunks of any
//! size; FFmpeg's resampler converts it to the encoder's planar float format, the output
//! rate (48 000 or 44 100 Hz) and channel count, and a FIFO cuts it into the 1024-sample
//! frames AAC wants. Output frames are raw AAC access units, as FLV carries them; the
//! [`AacEncoder::audio_specific_config`] goes in the FLV "AAC sequence header", and
//! [`adts_header`] helps where ADTS is wanted (files, HLS, tests).

use ffmpeg_next::format::Sample;
use ffmpeg_next::format::sample::Type as SampleType;
use ffmpeg_next::software::resampling;
use ffmpeg_next::{ChannelLayout, codec, encoder, frame};

use crate::error::{MediaError, Result};
use crate::video_codec::{ff_err, ffmpeg_init};

/// Input sample rate (the conference rate).
pub const INPUT_RATE: u32 = 48_000;

/// AAC encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Output sample rate: 48 000 or 44 100.
    pub sample_rate: u32,
    /// Output channels: 1 or 2.
    pub channels: u8,
    /// Bitrate in bits per second.
    pub bitrate: u32,
    /// Channels of the PCM handed to [`AacEncoder::encode`] (1 or 2).
    pub input_channels: u8,
}

impl Default for AacConfig {
    fn default() -> Self {
        AacConfig {
            sample_rate: 48_000,
            channels: 2,
            bitrate: 128_000,
            input_channels: 1,
        }
    }
}

/// One encoded AAC access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    /// Raw AAC (no ADTS header).
    pub data: Vec<u8>,
    /// Presentation time in output samples (may start negative: encoder priming).
    pub pts: i64,
    /// Duration in output samples (1024).
    pub duration: u32,
}

impl AacFrame {
    /// Presentation time in milliseconds, for FLV tags.
    pub fn pts_ms(&self, sample_rate: u32) -> i64 {
        self.pts * 1000 / i64::from(sample_rate.max(1))
    }
}

fn layout(channels: u8) -> Result<ChannelLayout> {
    match channels {
        1 => Ok(ChannelLayout::MONO),
        2 => Ok(ChannelLayout::STEREO),
        n => Err(MediaError::InvalidArgument(format!(
            "AAC channels must be 1 or 2, not {n}"
        ))),
    }
}

fn sampling_index(rate: u32) -> Result<u8> {
    match rate {
        48_000 => Ok(3),
        44_100 => Ok(4),
        r => Err(MediaError::InvalidArgument(format!(
            "AAC output rate must be 48000 or 44100, not {r}"
        ))),
    }
}

/// 48 kHz PCM -> AAC-LC encoder.
pub struct AacEncoder {
    cfg: AacConfig,
    encoder: encoder::audio::Encoder,
    resampler: resampling::Context,
    fifo: Vec<Vec<f32>>,
    frame_size: usize,
    next_pts: i64,
    flushed: bool,
}

impl std::fmt::Debug for AacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacEncoder")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl AacEncoder {
    /// New encoder.
    pub fn new(cfg: AacConfig) -> Result<Self> {
        ffmpeg_init();
        sampling_index(cfg.sample_rate)?;
        let out_layout = layout(cfg.channels)?;
        layout(cfg.input_channels)?;
        let aac = encoder::find(codec::Id::AAC)
            .ok_or_else(|| MediaError::codec("FFmpeg", "no AAC encoder"))?;
        let mut ctx = codec::context::Context::new_with_codec(aac)
            .encoder()
            .audio()
            .map_err(ff_err)?;
        ctx.set_rate(cfg.sample_rate as i32);
        ctx.set_channel_layout(out_layout);
        ctx.set_channels(i32::from(cfg.channels));
        ctx.set_format(Sample::F32(SampleType::Planar));
        ctx.set_bit_rate(cfg.bitrate as usize);
        ctx.set_time_base((1, cfg.sample_rate as i32));
        let encoder = ctx.open_as(aac).map_err(ff_err)?;
        let frame_size = match encoder.frame_size() {
            0 => 1024,
            n => n as usize,
        };
        // Channel conversion is done here (duplicate / average) so levels are kept; the
        // resampler only changes rate and sample format.
        let resampler = resampling::Context::get(
            Sample::I16(SampleType::Packed),
            out_layout,
            INPUT_RATE,
            Sample::F32(SampleType::Planar),
            out_layout,
            cfg.sample_rate,
        )
        .map_err(ff_err)?;
        Ok(AacEncoder {
            cfg,
            encoder,
            resampler,
            fifo: vec![Vec::new(); cfg.channels as usize],
            frame_size,
            next_pts: 0,
            flushed: false,
        })
    }

    /// Settings.
    pub fn config(&self) -> &AacConfig {
        &self.cfg
    }

    /// Samples per channel in each AAC frame (1024).
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// The 2-byte AudioSpecificConfig (AAC-LC) for the FLV AAC sequence header.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        let idx = sampling_index(self.cfg.sample_rate).unwrap_or(3);
        let object_type = 2u8; // AAC-LC
        [
            (object_type << 3) | (idx >> 1),
            ((idx & 1) << 7) | (self.cfg.channels << 3),
        ]
    }

    /// Feeds interleaved 48 kHz PCM (`input_channels` channels, any length) and returns the
    /// AAC frames that became ready.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<AacFrame>> {
        if self.flushed {
            return Err(MediaError::InvalidArgument(
                "encoder already flushed".into(),
            ));
        }
        let in_ch = self.cfg.input_channels as usize;
        if !pcm.len().is_multiple_of(in_ch) {
            return Err(MediaError::InvalidArgument(
                "PCM length not a multiple of the channel count".into(),
            ));
        }
        let samples = pcm.len() / in_ch;
        if samples == 0 {
            return Ok(Vec::new());
        }
        let converted: Vec<i16> = match (in_ch, self.cfg.channels) {
            (1, 2) => pcm.iter().flat_map(|&s| [s, s]).collect(),
            (2, 1) => pcm
                .chunks_exact(2)
                .map(|lr| ((i32::from(lr[0]) + i32::from(lr[1])) / 2) as i16)
                .collect(),
            _ => pcm.to_vec(),
        };
        let mut input = frame::Audio::new(
            Sample::I16(SampleType::Packed),
            samples,
            layout(self.cfg.channels)?,
        );
        input.set_rate(INPUT_RATE);
        {
            let data = input.data_mut(0);
            for (dst, s) in data.chunks_exact_mut(2).zip(&converted) {
                dst.copy_from_slice(&s.to_ne_bytes());
            }
        }
        let mut output = frame::Audio::empty();
        self.resampler.run(&input, &mut output).map_err(ff_err)?;
        self.take_resampled(&output);
        self.encode_ready(false)
    }

    fn take_resampled(&mut self, output: &frame::Audio) {
        let n = output.samples();
        if n == 0 {
            return;
        }
        for (ch, fifo) in self.fifo.iter_mut().enumerate() {
            let plane: &[f32] = output.plane(ch);
            fifo.extend_from_slice(&plane[..n.min(plane.len())]);
        }
    }

    fn encode_ready(&mut self, final_partial: bool) -> Result<Vec<AacFrame>> {
        let mut out = Vec::new();
        loop {
            let available = self.fifo[0].len();
            if available == 0 || (available < self.frame_size && !final_partial) {
                break;
            }
            let take = available.min(self.frame_size);
            let mut f = frame::Audio::new(
                Sample::F32(SampleType::Planar),
                self.frame_size,
                layout(self.cfg.channels)?,
            );
            f.set_rate(self.cfg.sample_rate);
            f.set_pts(Some(self.next_pts));
            for (ch, fifo) in self.fifo.iter_mut().enumerate() {
                let plane: &mut [f32] = f.plane_mut(ch);
                plane[..take].copy_from_slice(&fifo[..take]);
                plane[take..].iter_mut().for_each(|s| *s = 0.0);
                fifo.drain(..take);
            }
            if take < self.frame_size {
                f.set_samples(take);
            }
            self.next_pts += take as i64;
            self.encoder.send_frame(&f).map_err(ff_err)?;
            self.receive(&mut out)?;
        }
        Ok(out)
    }

    fn receive(&mut self, out: &mut Vec<AacFrame>) -> Result<()> {
        let mut packet = ffmpeg_next::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            if let Some(data) = packet.data() {
                out.push(AacFrame {
                    data: data.to_vec(),
                    pts: packet.pts().unwrap_or(0),
                    duration: match packet.duration() {
                        d if d > 0 => d as u32,
                        _ => self.frame_size as u32,
                    },
                });
            }
        }
        Ok(())
    }

    /// Encodes what is left (padding the last frame) and drains the encoder.
    pub fn flush(&mut self) -> Result<Vec<AacFrame>> {
        if self.flushed {
            return Ok(Vec::new());
        }
        let mut output = frame::Audio::empty();
        if self.resampler.flush(&mut output).is_ok() {
            self.take_resampled(&output);
        }
        let mut out = self.encode_ready(true)?;
        self.flushed = true;
        self.encoder.send_eof().map_err(ff_err)?;
        self.receive(&mut out)?;
        Ok(out)
    }
}

/// The 7-byte ADTS header (no CRC) for an AAC-LC frame of `payload_len` bytes.
pub fn adts_header(payload_len: usize, sample_rate: u32, channels: u8) -> Result<[u8; 7]> {
    let idx = sampling_index(sample_rate)?;
    let len = payload_len + 7;
    if len > 0x1fff {
        return Err(MediaError::InvalidArgument(
            "AAC frame too big for ADTS".into(),
        ));
    }
    let profile = 1u8; // AAC-LC (object type 2, minus one)
    Ok([
        0xff,
        0xf1,
        (profile << 6) | (idx << 2) | ((channels >> 2) & 1),
        ((channels & 3) << 6) | ((len >> 11) as u8 & 0x03),
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1f,
        0xfc,
    ])
}
