//! Voice activity detection: frame level (from samples or RFC 6464), an adaptive noise floor,
//! and attack/release hysteresis on top.

/// Lowest level reported, in dBov (RFC 6464 uses 0..=127 for 0..=-127 dBov).
pub const MIN_DBOV: f32 = -127.0;

/// Voice activity parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VadConfig {
    /// Voice must accumulate this long before a member counts as talking (default 100 ms).
    pub attack_ms: u32,
    /// A talking member becomes silent after this much continuous non-voice (default 800 ms).
    pub release_ms: u32,
    /// A frame quieter than this is never voice, whatever the noise floor (default -50 dBov).
    pub min_voice_dbov: f32,
    /// A frame is voice when it is at least this far above the tracked noise floor
    /// (default 10 dB).
    pub noise_margin_db: f32,
    /// The noise floor is never assumed above this level, so a steady loud source keeps
    /// counting as voice (default -35 dBov).
    pub max_noise_floor_dbov: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            attack_ms: 100,
            release_ms: 800,
            min_voice_dbov: -50.0,
            noise_margin_db: 10.0,
            max_noise_floor_dbov: -35.0,
        }
    }
}

impl VadConfig {
    pub(crate) fn validate(&self) -> Result<(), crate::MixerError> {
        let ok = self.min_voice_dbov.is_finite()
            && self.noise_margin_db.is_finite()
            && self.noise_margin_db >= 0.0
            && self.max_noise_floor_dbov.is_finite();
        if ok {
            Ok(())
        } else {
            Err(crate::MixerError::InvalidConfig(
                "VAD levels must be finite",
            ))
        }
    }
}

/// dBov of a PCM block given its sum of squares (0 dBov = a full-scale square wave, so a
/// full-scale sine is about -3 dBov), clamped to `-127..=0`.
pub fn dbov_from_energy(sum_squares: u64, samples: usize) -> f32 {
    if samples == 0 || sum_squares == 0 {
        return MIN_DBOV;
    }
    let mean = sum_squares as f64 / samples as f64;
    let db = 10.0 * (mean / (32768.0 * 32768.0)).log10();
    (db as f32).clamp(MIN_DBOV, 0.0)
}

/// dBov of an RFC 6464 audio level (0..=127 meaning 0..=-127 dBov; larger values clamp).
pub fn dbov_from_rfc6464(level: u8) -> f32 {
    -(level.min(127) as f32)
}

/// The RFC 6464 level (0..=127, -dBov) for a dBov value.
pub fn rfc6464_from_dbov(dbov: f32) -> u8 {
    if dbov.is_nan() {
        return 127;
    }
    (-dbov).round().clamp(0.0, 127.0) as u8
}

/// Maps dBov to the 0..=100 energy scale (-60 dBov or quieter = 0, 0 dBov = 100).
pub fn energy_from_dbov(dbov: f32) -> u8 {
    if dbov.is_nan() {
        return 0;
    }
    ((dbov + 60.0) * (100.0 / 60.0)).round().clamp(0.0, 100.0) as u8
}

/// Per-member voice activity state.
#[derive(Clone, Debug)]
pub(crate) struct Vad {
    noise_floor: f32,
    voice_ms: u32,
    silence_ms: u32,
    pub talking: bool,
    /// This frame was above the voice threshold.
    pub voiced: bool,
    /// Last frame's level.
    pub dbov: f32,
    /// Displayed energy, 0..=100: instant attack, decays by 20% per frame.
    pub energy: f32,
}

impl Vad {
    pub fn new() -> Self {
        Vad {
            noise_floor: -70.0,
            voice_ms: 0,
            silence_ms: 0,
            talking: false,
            voiced: false,
            dbov: MIN_DBOV,
            energy: 0.0,
        }
    }

    /// How long the member has been below the voice threshold (0 while voiced).
    pub fn silent_ms(&self) -> u32 {
        self.silence_ms
    }

    /// Feeds one frame of `frame_ms` at level `dbov`.
    pub fn update(&mut self, dbov: f32, frame_ms: u32, cfg: &VadConfig) {
        let dbov = if dbov.is_nan() {
            MIN_DBOV
        } else {
            dbov.clamp(MIN_DBOV, 0.0)
        };
        self.dbov = dbov;
        let threshold = cfg
            .min_voice_dbov
            .max(self.noise_floor + cfg.noise_margin_db);
        self.voiced = dbov > threshold;
        // Noise floor: falls quickly towards quieter frames, rises slowly (2.5 dB/s at 20 ms).
        if dbov < self.noise_floor {
            self.noise_floor += (dbov - self.noise_floor) * 0.5;
        } else {
            self.noise_floor += 0.05 * frame_ms as f32 / 20.0;
        }
        self.noise_floor = self.noise_floor.clamp(-100.0, cfg.max_noise_floor_dbov);

        if self.voiced {
            self.silence_ms = 0;
            self.voice_ms = self.voice_ms.saturating_add(frame_ms);
            if self.voice_ms >= cfg.attack_ms {
                self.talking = true;
            }
        } else {
            self.silence_ms = self.silence_ms.saturating_add(frame_ms);
            if self.talking {
                if self.silence_ms >= cfg.release_ms {
                    self.talking = false;
                    self.voice_ms = 0;
                }
            } else {
                // Leaky: a short gap during onset slows the attack instead of resetting it.
                self.voice_ms = self.voice_ms.saturating_sub(frame_ms);
            }
        }
        let e = energy_from_dbov(dbov) as f32;
        self.energy = if e >= self.energy {
            e
        } else {
            self.energy * 0.8 + e * 0.2
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_conversions() {
        assert_eq!(dbov_from_energy(0, 960), MIN_DBOV);
        // full-scale square wave
        let sq = 32768u64 * 32768 * 960;
        assert!(dbov_from_energy(sq, 960).abs() < 1e-3);
        assert_eq!(dbov_from_rfc6464(30), -30.0);
        assert_eq!(dbov_from_rfc6464(200), -127.0);
        assert_eq!(rfc6464_from_dbov(-3.2), 3);
        assert_eq!(energy_from_dbov(-127.0), 0);
        assert_eq!(energy_from_dbov(0.0), 100);
        assert_eq!(energy_from_dbov(-30.0), 50);
    }

    #[test]
    fn attack_and_release_timing() {
        let cfg = VadConfig::default();
        let mut v = Vad::new();
        for _ in 0..50 {
            v.update(-80.0, 20, &cfg);
        }
        let mut frames = 0;
        while !v.talking {
            v.update(-20.0, 20, &cfg);
            frames += 1;
            assert!(frames < 100);
        }
        assert_eq!(frames * 20, 100, "talking after 100 ms of voice");
        let mut frames = 0;
        while v.talking {
            v.update(-80.0, 20, &cfg);
            frames += 1;
            assert!(frames < 100);
        }
        assert_eq!(frames * 20, 800, "silent after 800 ms of silence");
    }
}
