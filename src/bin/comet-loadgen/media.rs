//! What the peers send, encoded once at start-up and replayed by every peer: Opus talker
//! loops (a steady tone with a loud marker burst at a known frame), an Opus DTX silence loop,
//! an H.264 test-pattern loop; and the signal analysis the probes run on what they hear (tone
//! amplitude by Goertzel, burst onsets).

use std::sync::Arc;

use anyhow::{Context, Result};
use comet_media::opus::audio_level;
use comet_media::{
    H264Encoder, H264EncoderConfig, H264Packetizer, I420Frame, OpusDecoder, OpusEncoder,
    OpusEncoderConfig,
};

/// 48 kHz.
pub const RATE: f64 = 48_000.0;
/// Samples in one 20 ms frame.
pub const FRAME: usize = 960;
/// Frames in one talker loop (1 s): every talker bursts once per loop.
pub const LOOP_FRAMES: usize = 50;
/// Frames of one marker burst (100 ms).
pub const BURST_FRAMES: usize = 5;
/// Peak amplitude of a talker's steady tone (about -21 dBov RMS: well above the highest noise
/// floor the mixer's VAD assumes, so a steady talker stays a talker).
pub const CARRIER: f64 = 4000.0;
/// Peak amplitude of the marker burst (11 dB above the carrier; three talkers' sum stays
/// below full scale).
pub const BURST: f64 = 14000.0;
/// Samples per envelope block of the onset detector (1 ms).
pub const BLOCK: usize = 48;
/// A talker's tone counts as heard in a 20 ms frame at this Goertzel amplitude (the carrier
/// arrives at about 4000; a talker's own tone leaking back would too).
pub const HEARD: f64 = 800.0;
/// A burst onset: its tone is at least this much louder in the 20 ms after the onset than
/// in the 20 ms before it (a burst is 3.5x its carrier, and the detector may fire a few ms
/// before it, on the codec's pre-echo; firing on the carriers alone, or again inside a burst,
/// measured 0.9x-1.2x).
pub const ONSET_RISE: f64 = 1.6;

/// The tone of talker `j` (0-based within its conference): 500, 800, 1100, ... Hz.
pub fn talker_freq(j: usize) -> f64 {
    500.0 + 300.0 * j as f64
}

/// The frame (within the loop) where talker `j` of `talkers` starts its burst: the bursts of
/// one conference's talkers never overlap.
pub fn burst_frame(j: usize, talkers: usize) -> usize {
    j * LOOP_FRAMES / talkers.max(1)
}

/// One pre-encoded packet: payload, RFC 6464 level, voice flag.
#[derive(Clone, Debug)]
pub struct Packet {
    pub payload: Arc<[u8]>,
    pub level: u8,
    pub voice: bool,
}

/// A loop of 20 ms frames; `None` frames are not sent (DTX).
#[derive(Clone, Debug)]
pub struct AudioLoop {
    pub frames: Vec<Option<Packet>>,
    /// Talker loops: the burst's first frame, and the onset's offset (samples) into that
    /// frame's decoded audio, measured by the same detector the probes run.
    pub burst: Option<(usize, usize)>,
}

/// A talker's PCM frame `k` (global frame counter) of tone `freq` with a burst at `burst`.
fn talker_pcm(freq: f64, burst: usize, k: usize) -> Vec<i16> {
    let in_loop = k % LOOP_FRAMES;
    let amp = if (burst..burst + BURST_FRAMES).contains(&in_loop) {
        BURST
    } else {
        CARRIER
    };
    (0..FRAME)
        .map(|i| {
            let t = (k * FRAME + i) as f64 / RATE;
            (amp * (std::f64::consts::TAU * freq * t).sin()).round() as i16
        })
        .collect()
}

fn encoder() -> Result<OpusEncoder> {
    // What Chrome sends for cometVideoApi.js: 32 kbit/s (b=AS:32), in-band FEC, DTX on.
    OpusEncoder::new(OpusEncoderConfig {
        channels: 1,
        bitrate: 32_000,
        complexity: 9,
        dtx: true,
        fec: true,
        packet_loss_percent: 5,
    })
    .context("Opus encoder")
}

/// The loop of talker `j` of `talkers`: three loops are encoded and the third is kept, so the
/// encoder state at its start is what it is at its end and replaying it has no seam.
pub fn talker_loop(j: usize, talkers: usize) -> Result<AudioLoop> {
    let freq = talker_freq(j);
    let burst = burst_frame(j, talkers);
    let mut enc = encoder()?;
    let mut dec = OpusDecoder::new(1).context("Opus decoder")?;
    let mut frames = Vec::new();
    let mut detector = OnsetDetector::default();
    let mut onset = None;
    for k in 0..3 * LOOP_FRAMES {
        let pcm = talker_pcm(freq, burst, k);
        let payload = enc.encode(&pcm).context("Opus encode")?;
        let mut out = Vec::new();
        dec.decode(&payload, &mut out).context("Opus decode")?;
        let base = k * FRAME;
        for (b, block) in out.chunks_exact(BLOCK).enumerate() {
            if let Some(_at) = detector.push(block) {
                // The last loop's onset: its offset from the burst frame's first sample.
                if k >= 2 * LOOP_FRAMES {
                    let at = base + b * BLOCK;
                    let burst_start = (2 * LOOP_FRAMES + burst) * FRAME;
                    onset = Some(at.saturating_sub(burst_start));
                }
            }
        }
        if k >= 2 * LOOP_FRAMES {
            frames.push((payload.len() > 2).then(|| Packet {
                level: audio_level(&pcm),
                voice: true,
                payload: payload.into(),
            }));
        }
    }
    let onset = onset.context("the burst onset is not detectable in the talker's own stream")?;
    Ok(AudioLoop {
        frames,
        burst: Some((burst, onset)),
    })
}

/// Silence with DTX as a browser sends it: libopus emits a comfort-noise frame every 400 ms
/// and 1-2 byte DTX frames between, which WebRTC does not send.
pub fn silence_loop() -> Result<AudioLoop> {
    let mut enc = encoder()?;
    let pcm = vec![0i16; FRAME];
    let mut all = Vec::new();
    for _ in 0..4 * LOOP_FRAMES {
        all.push(enc.encode(&pcm).context("Opus encode")?);
    }
    // The steady state: the last 40 frames (two DTX periods).
    let frames: Vec<Option<Packet>> = all[all.len() - 40..]
        .iter()
        .map(|p| {
            (p.len() > 2).then(|| Packet {
                payload: p.clone().into(),
                level: 127,
                voice: false,
            })
        })
        .collect();
    anyhow::ensure!(
        frames.iter().any(|f| f.is_some()),
        "libopus sent no comfort-noise frame in 800 ms of DTX"
    );
    Ok(AudioLoop {
        frames,
        burst: None,
    })
}

/// One pre-packetized H.264 access unit: RTP payloads (the last ends the frame).
#[derive(Clone, Debug)]
pub struct VideoFrame {
    pub payloads: Vec<Arc<[u8]>>,
}

/// A 2 s loop of a moving test pattern, 320x180 at 15 fps, 250 kbit/s, a keyframe per loop.
pub fn video_loop() -> Result<Vec<VideoFrame>> {
    const W: u32 = 320;
    const H: u32 = 180;
    const FPS: usize = 15;
    let mut enc = H264Encoder::new(H264EncoderConfig {
        bitrate: 250_000,
        fps: FPS as f32,
        keyframe_interval: (2 * FPS) as u32,
        threads: 1,
    })
    .context("H.264 encoder")?;
    let pack = H264Packetizer::new(1200).context("H.264 packetizer")?;
    let mut out = Vec::new();
    for k in 0..2 * FPS {
        let mut frame = I420Frame::filled(W, H, 16, 128, 128);
        // A bright bar sweeping across a gradient.
        let stride = frame.stride_y;
        for y in 0..H as usize {
            for x in 0..W as usize {
                let bar = (x + 320 - (k * 320 / (2 * FPS))) % 320 < 40;
                frame.y[y * stride + x] = if bar { 235 } else { (16 + (x + y) / 3) as u8 };
            }
        }
        let encoded = enc.encode(&frame).context("H.264 encode")?;
        let nals = encoded.nals();
        let payloads: Vec<Arc<[u8]>> = pack.packetize(&nals).into_iter().map(Arc::from).collect();
        out.push(VideoFrame { payloads });
    }
    Ok(out)
}

/// The amplitude of the component at `freq` in `samples` (Hann-windowed Goertzel): a pure sine
/// of peak `A` at `freq` measures about `A`.
pub fn amplitude_at(samples: &[i16], freq: f64) -> f64 {
    let n = samples.len();
    if n < 2 {
        return 0.0;
    }
    let w = std::f64::consts::TAU * freq / RATE;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2, mut wsum) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &x) in samples.iter().enumerate() {
        let hann = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / (n - 1) as f64).cos();
        wsum += hann;
        let s0 = f64::from(x) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / wsum
}

/// Finds marker bursts in a stream of 1 ms blocks: a block whose RMS is 1.8x the level of the
/// 100 ms before it (and above an absolute floor), after at least 150 ms without an onset.
#[derive(Debug, Default)]
pub struct OnsetDetector {
    /// RMS of the recent blocks (a ring of 100).
    history: std::collections::VecDeque<f64>,
    /// Blocks since the last onset.
    since: usize,
    /// Blocks seen.
    blocks: usize,
}

impl OnsetDetector {
    /// Feeds one block; `Some(index of the block)` when it starts a burst.
    pub fn push(&mut self, block: &[i16]) -> Option<usize> {
        let rms = (block.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
            / block.len().max(1) as f64)
            .sqrt();
        let idx = self.blocks;
        self.blocks += 1;
        self.since += 1;
        let mut hit = None;
        if self.history.len() == 100 && self.since > 150 {
            let base = self.history.iter().sum::<f64>() / self.history.len() as f64;
            if rms > 1.8 * base && rms > 1500.0 {
                hit = Some(idx);
                self.since = 0;
            }
        }
        self.history.push_back(rms);
        if self.history.len() > 100 {
            self.history.pop_front();
        }
        hit
    }
}

/// Whose burst an onset is: the talker (of `talkers`) whose tone dominates `after` (the
/// 20 ms from the onset), if that tone is at least at the heard level and rose there by
/// [`ONSET_RISE`] over `before` (the 20 ms up to it). `None`: a click, a concealment glitch,
/// the detector firing on the carriers' beat, or again inside a burst.
pub fn burst_talker(after: &[i16], before: &[i16], talkers: usize) -> Option<usize> {
    let (j, amp) = (0..talkers)
        .map(|j| (j, amplitude_at(after, talker_freq(j))))
        .fold(
            (usize::MAX, HEARD),
            |best, x| if x.1 > best.1 { x } else { best },
        );
    (j < talkers && amp >= ONSET_RISE * amplitude_at(before, talker_freq(j))).then_some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` samples from global sample `start` of three carriers, talker `b` (if any) at
    /// burst amplitude from sample `burst_at` on.
    fn mix(start: usize, n: usize, b: Option<(usize, usize)>) -> Vec<i16> {
        (start..start + n)
            .map(|i| {
                let t = i as f64 / RATE;
                (0..3)
                    .map(|j| {
                        let amp = match b {
                            Some((bj, at)) if bj == j && i >= at => BURST,
                            _ => CARRIER,
                        };
                        amp * (std::f64::consts::TAU * talker_freq(j) * t).sin()
                    })
                    .sum::<f64>()
                    .round() as i16
            })
            .collect()
    }

    #[test]
    fn an_onset_is_a_burst_only_where_a_tone_rises() {
        let at = 10 * FRAME;
        let window = |onset: usize, b| (mix(onset, FRAME, b), mix(onset - FRAME, FRAME, b));
        // Talker 1's burst starts at the onset, or 5 ms after it (the codec's pre-echo).
        for lead in [0, 240] {
            let (after, before) = window(at - lead, Some((1, at)));
            assert_eq!(burst_talker(&after, &before, 3), Some(1), "lead {lead}");
        }
        // Carriers only (the detector firing on their beat): the loudest tone did not rise.
        let (after, before) = window(at, None);
        assert_eq!(burst_talker(&after, &before, 3), None);
        // Again 40 ms into talker 2's burst: it was as loud before.
        let (after, before) = window(at + 2 * FRAME, Some((2, at)));
        assert_eq!(burst_talker(&after, &before, 3), None);
        // Nothing at the heard level.
        assert_eq!(burst_talker(&[0; FRAME], &[0; FRAME], 3), None);
    }

    #[test]
    fn talker_loops_have_a_detectable_burst_and_silence_is_mostly_dtx() {
        let t = talker_loop(1, 3).unwrap();
        assert_eq!(t.frames.len(), LOOP_FRAMES);
        assert!(t.frames.iter().all(|f| f.is_some()));
        let (frame, onset) = t.burst.unwrap();
        assert_eq!(frame, 16);
        assert!(onset < 2 * FRAME, "onset {onset}");
        let s = silence_loop().unwrap();
        let sent = s.frames.iter().filter(|f| f.is_some()).count();
        assert!(sent <= 4, "{sent} of 40 silent frames sent");
    }
}
