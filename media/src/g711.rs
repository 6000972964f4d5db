//! G.711 (PCMU, PCMA) for callers that offer nothing better than 8 kHz telephony audio, and
//! the 8 kHz <-> 48 kHz resamplers that put it on the mixer's 48 kHz timeline.
//!
//! The companding follows ITU-T G.711: mu-law with the 0x84 bias and 14-bit magnitude, A-law
//! with 13-bit segments; both invert each other exactly on every encoded byte. The resamplers
//! are one windowed-sinc low-pass (cut-off 3.6 kHz at 48 kHz) used polyphase: [`Upsampler`]
//! interpolates by 6, [`Downsampler`] filters and decimates by 6. Both keep their history
//! between calls, so consecutive 20 ms frames join without clicks. Pure Rust, no allocation
//! per frame.

use std::f32::consts::PI;

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU, RTP payload type 0 (North America, Japan).
    Mu,
    /// PCMA, RTP payload type 8 (elsewhere).
    A,
}

impl Law {
    /// Compands one 16-bit linear sample.
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Law::Mu => ulaw_encode(s),
            Law::A => alaw_encode(s),
        }
    }

    /// Expands one byte to 16-bit linear.
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Law::Mu => ulaw_decode(b),
            Law::A => alaw_decode(b),
        }
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// mu-law compression of one sample.
pub fn ulaw_encode(s: i16) -> u8 {
    let s = i32::from(s);
    let sign = if s < 0 { 0x80 } else { 0 };
    let magnitude = s.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // Segment: position of the highest set bit above bit 7 (0..=7).
    let exponent = (31 - (magnitude as u32).leading_zeros())
        .saturating_sub(7)
        .min(7) as i32;
    let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// mu-law expansion of one byte.
pub fn ulaw_decode(b: u8) -> i16 {
    let b = !b;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// A-law compression of one sample.
pub fn alaw_encode(s: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let s = i32::from(s) >> 3;
    let (sign, magnitude) = if s >= 0 { (0x80, s) } else { (0, -s - 1) };
    let magnitude = magnitude.min(0x0fff);
    let byte = if magnitude < 32 {
        (magnitude >> 1) as u8
    } else {
        // Segment 1..=7: position of the highest set bit, from bit 5 on.
        let seg = (31 - (magnitude as u32).leading_zeros()) as i32 - 4;
        ((seg << 4) | ((magnitude >> seg) & 0x0f)) as u8
    };
    (byte | sign) ^ 0x55
}

/// A-law expansion of one byte.
pub fn alaw_decode(b: u8) -> i16 {
    let b = b ^ 0x55;
    let seg = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if seg == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (seg - 1)
    };
    (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// The resampling ratio between the mixer (48 kHz) and G.711 (8 kHz).
pub const RATIO: usize = 6;
/// Taps of the low-pass at 48 kHz (a multiple of [`RATIO`]): 2 ms, 1 ms of delay.
const TAPS: usize = 96;
/// Taps per polyphase branch.
const BRANCH: usize = TAPS / RATIO;

/// The low-pass: windowed sinc (Blackman), cut-off 3.6 kHz at 48 kHz, unity DC gain.
fn lowpass() -> [f32; TAPS] {
    let fc = 3600.0 / 48_000.0;
    let mid = (TAPS - 1) as f32 / 2.0;
    let mut h = [0f32; TAPS];
    for (i, v) in h.iter_mut().enumerate() {
        let x = i as f32 - mid;
        let sinc = if x == 0.0 {
            2.0 * fc
        } else {
            (2.0 * PI * fc * x).sin() / (PI * x)
        };
        let w = 0.42 - 0.5 * (2.0 * PI * i as f32 / (TAPS - 1) as f32).cos()
            + 0.08 * (4.0 * PI * i as f32 / (TAPS - 1) as f32).cos();
        *v = sinc * w;
    }
    let sum: f32 = h.iter().sum();
    h.iter_mut().for_each(|v| *v /= sum);
    h
}

fn clamp16(v: f32) -> i16 {
    v.round().clamp(-32768.0, 32767.0) as i16
}

/// 8 kHz -> 48 kHz.
#[derive(Debug, Clone)]
pub struct Upsampler {
    /// `phases[p][k]` = `6 * h[6k + p]`.
    phases: [[f32; BRANCH]; RATIO],
    /// The last `BRANCH` input samples, oldest first.
    history: [f32; BRANCH],
}

impl Default for Upsampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler {
    pub fn new() -> Self {
        let h = lowpass();
        let mut phases = [[0f32; BRANCH]; RATIO];
        for (p, phase) in phases.iter_mut().enumerate() {
            for (k, v) in phase.iter_mut().enumerate() {
                *v = h[RATIO * k + p] * RATIO as f32;
            }
        }
        Upsampler {
            phases,
            history: [0.0; BRANCH],
        }
    }

    /// Appends `input.len() * 6` samples at 48 kHz to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        out.reserve(input.len() * RATIO);
        for &s in input {
            self.history.copy_within(1.., 0);
            self.history[BRANCH - 1] = f32::from(s);
            for phase in &self.phases {
                // y[6n + p] = sum_k 6 h[6k + p] x[n - k]
                let acc: f32 = phase
                    .iter()
                    .zip(self.history.iter().rev())
                    .map(|(c, x)| c * x)
                    .sum();
                out.push(clamp16(acc));
            }
        }
    }

    /// Forgets the history (after a gap).
    pub fn reset(&mut self) {
        self.history = [0.0; BRANCH];
    }
}

/// 48 kHz -> 8 kHz.
#[derive(Debug, Clone)]
pub struct Downsampler {
    h: [f32; TAPS],
    /// The last `TAPS` input samples, oldest first.
    history: [f32; TAPS],
    /// Input samples since the last output (0..6).
    phase: usize,
}

impl Default for Downsampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Downsampler {
    pub fn new() -> Self {
        Downsampler {
            h: lowpass(),
            history: [0.0; TAPS],
            phase: 0,
        }
    }

    /// Appends one 8 kHz sample per 6 input samples to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        out.reserve(input.len() / RATIO + 1);
        for &s in input {
            self.history.copy_within(1.., 0);
            self.history[TAPS - 1] = f32::from(s);
            self.phase += 1;
            if self.phase == RATIO {
                self.phase = 0;
                let acc: f32 = self
                    .h
                    .iter()
                    .zip(self.history.iter().rev())
                    .map(|(c, x)| c * x)
                    .sum();
                out.push(clamp16(acc));
            }
        }
    }
}

/// Decodes a G.711 payload to 8 kHz samples (one byte each), appended to `out`.
pub fn decode(law: Law, payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&b| law.decode(b)));
}

/// Encodes 8 kHz samples to a G.711 payload.
pub fn encode(law: Law, pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| law.encode(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_survives_a_round_trip() {
        for law in [Law::Mu, Law::A] {
            for b in 0..=255u8 {
                let s = law.decode(b);
                let again = law.encode(s);
                // mu-law has two codes for zero (0x7f and 0xff); both decode to 0.
                assert!(
                    again == b || law.decode(again) == s,
                    "{law:?}: {b:#04x} -> {s} -> {again:#04x}"
                );
            }
        }
    }

    #[test]
    fn companding_error_is_proportional() {
        for law in [Law::Mu, Law::A] {
            for s in (-32768..=32767i32).step_by(7) {
                let s = s as i16;
                let back = law.decode(law.encode(s));
                let err = (i32::from(back) - i32::from(s)).abs();
                // Segment steps are at most 1/16 of the magnitude (plus the smallest step).
                let bound = i32::from(s).abs() / 16 + 40;
                assert!(err <= bound, "{law:?}: {s} -> {back} (error {err})");
            }
        }
        // Known values of the standard tables.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
    }

    fn tone(freq: f32, rate: f32, n: usize, amp: f32) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f32 / rate).sin()) as i16)
            .collect()
    }

    fn rms(x: &[i16]) -> f32 {
        (x.iter().map(|&v| f32::from(v).powi(2)).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn resamplers_keep_speech_band_tones_and_remove_the_rest() {
        // 1 kHz at 48 kHz -> 8 kHz -> 48 kHz, frame by frame: the tone survives at level.
        let input = tone(1000.0, 48_000.0, 48_000, 10_000.0);
        let mut down = Downsampler::new();
        let mut up = Upsampler::new();
        let mut narrow = Vec::new();
        let mut back = Vec::new();
        for frame in input.chunks(960) {
            let start = narrow.len();
            down.process(frame, &mut narrow);
            up.process(&narrow[start..], &mut back);
        }
        assert_eq!(narrow.len(), 8000);
        assert_eq!(back.len(), 48_000);
        let r = rms(&back[4800..]);
        let want = 10_000.0 / 2f32.sqrt();
        assert!((r - want).abs() < want * 0.05, "1 kHz rms {r}, want {want}");
        // 10 kHz cannot be carried at 8 kHz: it is filtered out, not aliased.
        let high = tone(10_000.0, 48_000.0, 9600, 10_000.0);
        let mut down = Downsampler::new();
        let mut narrow = Vec::new();
        down.process(&high, &mut narrow);
        let r = rms(&narrow[100..]);
        assert!(r < 100.0, "10 kHz leaked through: rms {r}");
    }
}
