//! The conference's canvas and mix, encoded once for every output (RTMP and the recording):
//! H.264 (OpenH264, constrained baseline, a keyframe every `[broadcast] keyframe_interval`, 2 s by default) at a steady
//! frame rate from the latest canvas, and AAC-LC from the 20 ms mix frames. Sans-IO: the caller
//! gives the time (milliseconds since the broadcast started).

use std::sync::Arc;

use comet_media::h264::{AvcDecoderConfig, annexb_to_avcc};
use comet_media::{AacConfig, AacEncoder, H264Encoder, H264EncoderConfig, I420Frame};

/// Default milliseconds between keyframes (`[broadcast] keyframe_interval`): HLS/DASH
/// fragments can only start on one, so 2 s fragments need a keyframe every 2 s.
pub const KEYFRAME_INTERVAL_MS: u32 = 2000;
/// A late encoder catches up at most this many frames at once; beyond it, frames are skipped.
const MAX_CATCH_UP: u64 = 3;

/// What the broadcast carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodeSettings {
    /// Canvas size and frame rate; `None`: audio only.
    pub video: Option<VideoFormat>,
    /// Video bitrate, bit/s.
    pub video_bitrate: u32,
    /// AAC bitrate, bit/s.
    pub audio_bitrate: u32,
    /// AAC channels (the mix is mono; 2 duplicates it, which some players prefer).
    pub audio_channels: u8,
    /// Milliseconds between keyframes (rounded to whole frames, at least one frame).
    pub keyframe_interval_ms: u32,
}

/// Canvas size and frame rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// One encoded access unit, shared by the outputs.
#[derive(Debug, Clone)]
pub enum Packet {
    /// Raw AAC.
    Audio { ts_ms: u64, data: Arc<[u8]> },
    /// H.264 in AVCC form (4-byte lengths).
    Video {
        ts_ms: u64,
        data: Arc<[u8]>,
        keyframe: bool,
    },
}

impl Packet {
    pub fn ts_ms(&self) -> u64 {
        match self {
            Packet::Audio { ts_ms, .. } | Packet::Video { ts_ms, .. } => *ts_ms,
        }
    }
}

/// The codec configurations outputs need before the first packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// AAC AudioSpecificConfig.
    pub asc: Vec<u8>,
    pub sample_rate: u32,
    pub channels: u8,
    /// `AVCDecoderConfigurationRecord`, known after the first keyframe (video only).
    pub avc: Option<Vec<u8>>,
    pub video: Option<VideoFormat>,
}

/// Counters of the encoder.
#[derive(Debug, Default, Clone, Copy)]
pub struct EncodeStats {
    pub video_frames: u64,
    pub keyframes: u64,
    /// Frames skipped because the encoder was late (the machine stalled).
    pub video_late: u64,
    /// Frames OpenH264's rate control skipped.
    pub video_rate_skipped: u64,
    /// Frames encoded before the first keyframe with SPS/PPS (not decodable, not sent).
    pub video_before_key: u64,
    pub audio_frames: u64,
    /// Canvases of the wrong size, dropped.
    pub bad_canvas: u64,
}

/// Encodes the canvas and the mix.
pub struct AvEncoder {
    settings: EncodeSettings,
    aac: AacEncoder,
    h264: Option<H264Encoder>,
    /// The picture encoded at each frame time (the latest canvas, or the "no video" card).
    canvas: Option<I420Frame>,
    /// Milliseconds of the first mix frame.
    audio_base: Option<u64>,
    /// Video frames produced so far (frame `n` is at `n * 1000 / fps` ms).
    frame_index: u64,
    avc: Option<Vec<u8>>,
    pub stats: EncodeStats,
}

impl std::fmt::Debug for AvEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvEncoder")
            .field("settings", &self.settings)
            .finish()
    }
}

/// The picture broadcast while no canvas has been given: dark grey with a lighter band, at
/// the canvas size.
pub fn no_video_card(width: u32, height: u32) -> I420Frame {
    let mut f = I420Frame::filled(width, height, 40, 128, 128);
    let (w, h) = (width as usize, height as usize);
    for row in h * 2 / 5..h * 3 / 5 {
        f.y[row * w..(row + 1) * w].fill(90);
    }
    f
}

impl AvEncoder {
    pub fn new(settings: EncodeSettings) -> Result<AvEncoder, comet_media::MediaError> {
        let aac = AacEncoder::new(AacConfig {
            sample_rate: 48_000,
            channels: settings.audio_channels,
            bitrate: settings.audio_bitrate,
            input_channels: 1,
        })?;
        let (h264, canvas) = match settings.video {
            Some(v) => (
                Some(H264Encoder::new(H264EncoderConfig {
                    bitrate: settings.video_bitrate,
                    fps: v.fps as f32,
                    keyframe_interval: (v.fps * settings.keyframe_interval_ms)
                        .div_ceil(1000)
                        .max(1),
                    threads: 1,
                })?),
                Some(no_video_card(v.width, v.height)),
            ),
            None => (None, None),
        };
        Ok(AvEncoder {
            settings,
            aac,
            h264,
            canvas,
            audio_base: None,
            frame_index: 0,
            avc: None,
            stats: EncodeStats::default(),
        })
    }

    pub fn settings(&self) -> &EncodeSettings {
        &self.settings
    }

    /// What outputs need before the first packets.
    pub fn headers(&self) -> Headers {
        let c = self.aac.config();
        Headers {
            asc: self.aac.audio_specific_config().to_vec(),
            sample_rate: c.sample_rate,
            channels: c.channels,
            avc: self.avc.clone(),
            video: self.settings.video,
        }
    }

    /// The next video frame is a keyframe (a new RTMP connection).
    pub fn request_keyframe(&mut self) {
        if let Some(h) = &mut self.h264 {
            h.request_keyframe();
        }
    }

    /// The latest composed canvas; it is encoded at the next frame times.
    pub fn set_canvas(&mut self, frame: I420Frame) {
        match self.settings.video {
            Some(v) if frame.width == v.width && frame.height == v.height => {
                self.canvas = Some(frame)
            }
            _ => self.stats.bad_canvas += 1,
        }
    }

    /// One 20 ms frame of the mix (48 kHz mono), received at `now_ms`.
    pub fn push_audio(
        &mut self,
        pcm: &[i16],
        now_ms: u64,
    ) -> Result<Vec<Packet>, comet_media::MediaError> {
        let base = *self.audio_base.get_or_insert(now_ms);
        let rate = i64::from(self.aac.config().sample_rate);
        let frames = self.aac.encode(pcm)?;
        self.stats.audio_frames += frames.len() as u64;
        Ok(frames
            .into_iter()
            .map(|f| Packet::Audio {
                ts_ms: (base as i64 + f.pts * 1000 / rate).max(0) as u64,
                data: f.data.into(),
            })
            .collect())
    }

    /// When the next video frame is due, in ms (None: audio only).
    pub fn next_frame_ms(&self) -> Option<u64> {
        let v = self.settings.video?;
        Some(self.frame_index * 1000 / u64::from(v.fps.max(1)))
    }

    /// Encodes the frames due by `now_ms`.
    pub fn poll_video(&mut self, now_ms: u64) -> Result<Vec<Packet>, comet_media::MediaError> {
        let mut out = Vec::new();
        let Some(v) = self.settings.video else {
            return Ok(out);
        };
        let fps = u64::from(v.fps.max(1));
        // Far behind (the machine stalled): skip to the present.
        let due_index = now_ms * fps / 1000;
        if due_index > self.frame_index + MAX_CATCH_UP {
            self.stats.video_late += due_index - self.frame_index - 1;
            self.frame_index = due_index - 1;
        }
        while self.frame_index * 1000 / fps <= now_ms {
            let ts_ms = self.frame_index * 1000 / fps;
            self.frame_index += 1;
            let (Some(enc), Some(canvas)) = (&mut self.h264, &self.canvas) else {
                break;
            };
            let frame = enc.encode(canvas)?;
            if frame.data.is_empty() {
                self.stats.video_rate_skipped += 1;
                continue;
            }
            if frame.keyframe {
                self.stats.keyframes += 1;
                if let Ok(cfg) = AvcDecoderConfig::from_annexb(&frame.data) {
                    self.avc = Some(cfg.to_bytes());
                }
            }
            if self.avc.is_none() {
                // Nothing decodable before the first keyframe with SPS/PPS.
                self.stats.video_before_key += 1;
                continue;
            }
            self.stats.video_frames += 1;
            out.push(Packet::Video {
                ts_ms,
                data: annexb_to_avcc(&frame.data).into(),
                keyframe: frame.keyframe,
            });
        }
        Ok(out)
    }

    /// The AAC frames still in the encoder (the end of the broadcast).
    pub fn finish(&mut self) -> Vec<Packet> {
        let base = self.audio_base.unwrap_or(0) as i64;
        let rate = i64::from(self.aac.config().sample_rate);
        self.aac
            .flush()
            .unwrap_or_default()
            .into_iter()
            .map(|f| Packet::Audio {
                ts_ms: (base + f.pts * 1000 / rate).max(0) as u64,
                data: f.data.into(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyframes come every `keyframe_interval_ms` (whole frames): what lets nginx-rtmp cut
    /// fragments of that length.
    #[test]
    fn keyframe_interval_is_honoured() {
        for (interval_ms, fps, every) in [(2000u32, 10u32, 20u64), (1000, 10, 10), (500, 30, 15)] {
            let mut enc = AvEncoder::new(EncodeSettings {
                video: Some(VideoFormat {
                    width: 160,
                    height: 96,
                    fps,
                }),
                video_bitrate: 300_000,
                audio_bitrate: 64_000,
                audio_channels: 2,
                keyframe_interval_ms: interval_ms,
            })
            .unwrap();
            let frames = every * 3 + 1;
            let mut keys = Vec::new();
            for n in 0..frames {
                let now = n * 1000 / u64::from(fps);
                for p in enc.poll_video(now).unwrap() {
                    if let Packet::Video {
                        ts_ms,
                        keyframe: true,
                        ..
                    } = p
                    {
                        keys.push(ts_ms);
                    }
                }
            }
            let step = u64::from(interval_ms);
            assert_eq!(
                keys,
                vec![0, step, 2 * step, 3 * step],
                "keyframe_interval {interval_ms} ms at {fps} fps"
            );
        }
    }
}
