//! Test tones and their detection: phase-continuous sine frames (20 ms, 48 kHz mono), the
//! RFC 6464 level of a tone, and a Hann-windowed Goertzel filter that measures how strong each
//! tone is in a stretch of decoded audio.

#![allow(dead_code)]

use std::fmt;

/// Sample rate of every frame, Hz.
pub const RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub const FRAME: usize = 960;

/// Frame `index` (0, 1, 2, ...) of a sine of `freq` Hz with peak `amplitude`; consecutive
/// frames join without a phase jump.
pub fn tone_frame(freq: f64, amplitude: f64, index: u64) -> Vec<i16> {
    let start = index * FRAME as u64;
    (0..FRAME as u64)
        .map(|i| {
            let t = (start + i) as f64 / f64::from(RATE);
            (amplitude * (std::f64::consts::TAU * freq * t).sin()).round() as i16
        })
        .collect()
}

/// The RFC 6464 level (0..=127, -dBov) of a sine with this peak amplitude.
pub fn rfc6464_level(amplitude: f64) -> u8 {
    let rms = amplitude / std::f64::consts::SQRT_2;
    let dbov = 20.0 * (rms / 32767.0).log10();
    (-dbov).round().clamp(0.0, 127.0) as u8
}

/// The peak amplitude of the component at `freq` in `samples` (Hann-windowed Goertzel): a pure
/// sine of peak `A` at exactly `freq` measures about `A`.
pub fn amplitude_at(samples: &[i16], freq: f64) -> f64 {
    let n = samples.len();
    if n < 2 {
        return 0.0;
    }
    let w = std::f64::consts::TAU * freq / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut wsum = 0.0;
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

/// Root mean square of the samples.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The measured amplitude of each tone of interest in one stretch of audio.
#[derive(Debug, Clone)]
pub struct Spectrum {
    pub samples: usize,
    pub rms: f64,
    pub tones: Vec<(f64, f64)>,
}

impl Spectrum {
    pub fn measure(samples: &[i16], freqs: &[f64]) -> Spectrum {
        Spectrum {
            samples: samples.len(),
            rms: rms(samples),
            tones: freqs
                .iter()
                .map(|&f| (f, amplitude_at(samples, f)))
                .collect(),
        }
    }

    /// Each tone's median amplitude over consecutive windows of `window` samples (a partial
    /// last window is left out). A steady tone measures the same in every window; a glitch (a
    /// concealed or dropped frame shifts the phase of everything after it) spoils only the
    /// windows it falls in, where one long coherent window could lose a tone to the phase jump.
    pub fn median_of_windows(samples: &[i16], freqs: &[f64], window: usize) -> Spectrum {
        let per: Vec<Spectrum> = samples
            .chunks_exact(window)
            .map(|c| Spectrum::measure(c, freqs))
            .collect();
        let median = |mut v: Vec<f64>| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        Spectrum {
            samples: per.len() * window,
            rms: median(per.iter().map(|s| s.rms).collect()),
            tones: freqs
                .iter()
                .enumerate()
                .map(|(i, &f)| (f, median(per.iter().map(|s| s.tones[i].1).collect())))
                .collect(),
        }
    }

    /// The measured amplitude at `freq` (which must be one of the measured tones).
    pub fn at(&self, freq: f64) -> f64 {
        self.tones
            .iter()
            .find(|(f, _)| *f == freq)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("{freq} Hz was not measured"))
    }

    /// Whether every tone of `present` is at least `min_amplitude`, and every tone of `absent`
    /// is at least `margin_db` below the weakest present tone (and below `min_amplitude`).
    pub fn matches(
        &self,
        present: &[f64],
        absent: &[f64],
        min_amplitude: f64,
        margin_db: f64,
    ) -> bool {
        let weakest = present
            .iter()
            .map(|&f| self.at(f))
            .fold(f64::INFINITY, f64::min);
        if present.iter().any(|&f| self.at(f) < min_amplitude) {
            return false;
        }
        let ceiling = if weakest.is_finite() {
            (weakest / 10f64.powf(margin_db / 20.0)).min(min_amplitude)
        } else {
            min_amplitude
        };
        absent.iter().all(|&f| self.at(f) < ceiling)
    }
}

fn db(amplitude: f64) -> f64 {
    20.0 * (amplitude.max(1e-3) / 32767.0).log10()
}

impl fmt::Display for Spectrum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} samples, rms {:.0} ({:.1} dBFS):",
            self.samples,
            self.rms,
            db(self.rms)
        )?;
        for (freq, a) in &self.tones {
            write!(f, " {freq:.0} Hz={a:.0} ({:.1} dBFS)", db(*a))?;
        }
        Ok(())
    }
}
