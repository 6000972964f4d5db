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

/// Power (mean square relative to a full-scale square wave) of the quietest level, -127 dBov.
const MIN_POWER: f32 = 1.995_262_3e-13;

/// Mantissa bits in an `energy_of` bucket: a bucket spans at most a factor of 1 + 2^-3 =
/// 1.125 in power, less than the 0.6 dB (x1.148) between energy steps, so at most one step
/// falls inside a bucket.
const BUCKET_MANTISSA_BITS: u32 = 3;
const BUCKET_SHIFT: u32 = 23 - BUCKET_MANTISSA_BITS;
const FIRST_BUCKET: u32 = MIN_POWER.to_bits() >> BUCKET_SHIFT;
/// Buckets from `MIN_POWER` to 1.0 inclusive.
const BUCKETS: usize = ((1f32.to_bits() >> BUCKET_SHIFT) - FIRST_BUCKET + 1) as usize;

fn power_from_dbov(dbov: f64) -> f32 {
    10f64.powf(dbov / 10.0) as f32
}

/// A frame's measured level, kept as measured so that [`Level::dbov`] is exact; the per-frame
/// decisions use the linear power instead (no logarithm per member and frame).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Level {
    /// No input this frame.
    Silent,
    /// Sum of squares of a frame of `samples` samples.
    Energy { sum: u64, samples: u32 },
    /// RFC 6464 audio level.
    Rfc6464(u8),
}

impl Level {
    /// The level in dBov, `-127..=0`.
    pub fn dbov(self) -> f32 {
        match self {
            Level::Silent => MIN_DBOV,
            Level::Energy { sum, samples } => dbov_from_energy(sum, samples as usize),
            Level::Rfc6464(l) => dbov_from_rfc6464(l),
        }
    }
}

/// [`VadConfig`] and the level scales converted once to the linear power domain, so that a
/// frame's decision is a few comparisons and multiplications.
#[derive(Clone, Debug)]
pub(crate) struct VadLinear {
    /// `1 / (samples * 32768^2)`: a frame's sum of squares times this is its power.
    inv_full_scale: f32,
    min_voice: f32,
    margin: f32,
    floor_min: f32,
    floor_max: f32,
    /// Noise floor rise per frame (0.05 dB).
    floor_rise: f32,
    attack_ms: u32,
    release_ms: u32,
    /// `energy_steps[k]` is the lowest power whose 0..=100 energy is `k + 1`
    /// (the thresholds of [`energy_from_dbov`], in power).
    energy_steps: [f32; 100],
    /// `energy_of` without a search: for each bucket of powers sharing exponent and top
    /// [`BUCKET_MANTISSA_BITS`] mantissa bits (from [`MIN_POWER`] up to 1.0), the number of
    /// steps below the bucket and the bits of the one step inside it (`u32::MAX` if none).
    bucket_base: [u8; BUCKETS],
    bucket_step: [u32; BUCKETS],
    rfc_power: [f32; 128],
    rfc_energy: [u8; 128],
}

impl VadLinear {
    pub fn new(cfg: &VadConfig, frame_samples: usize) -> Self {
        let full = frame_samples.max(1) as f64 * 32768.0 * 32768.0;
        let mut energy_steps = [0f32; 100];
        for (k, t) in energy_steps.iter_mut().enumerate() {
            // round((dbov + 60) * 5 / 3) >= k + 1  <=>  dbov >= 0.6 (k + 1) - 60.3
            *t = power_from_dbov(0.6 * (k + 1) as f64 - 60.3);
        }
        // Positive floats order like their bits, so steps can be compared as bits.
        let mut bucket_base = [0u8; BUCKETS];
        let mut bucket_step = [u32::MAX; BUCKETS];
        for b in 0..BUCKETS {
            let lo = (FIRST_BUCKET + b as u32) << BUCKET_SHIFT;
            let hi = lo + (1 << BUCKET_SHIFT);
            bucket_base[b] = energy_steps.iter().filter(|t| t.to_bits() < lo).count() as u8;
            let mut inside = energy_steps
                .iter()
                .map(|t| t.to_bits())
                .filter(|&t| (lo..hi).contains(&t));
            if let Some(t) = inside.next() {
                bucket_step[b] = t;
            }
            assert!(inside.next().is_none(), "two energy steps in one bucket");
        }
        let mut rfc_power = [0f32; 128];
        let mut rfc_energy = [0u8; 128];
        for l in 0..128u8 {
            rfc_power[l as usize] = power_from_dbov(-(l as f64)).max(MIN_POWER);
            rfc_energy[l as usize] = energy_from_dbov(dbov_from_rfc6464(l));
        }
        VadLinear {
            inv_full_scale: (1.0 / full) as f32,
            min_voice: power_from_dbov(cfg.min_voice_dbov as f64),
            margin: power_from_dbov(cfg.noise_margin_db as f64),
            floor_min: power_from_dbov(-100.0),
            floor_max: power_from_dbov(cfg.max_noise_floor_dbov as f64),
            floor_rise: power_from_dbov(0.05 * crate::audio::FRAME_MS as f64 / 20.0),
            attack_ms: cfg.attack_ms,
            release_ms: cfg.release_ms,
            energy_steps,
            bucket_base,
            bucket_step,
            rfc_power,
            rfc_energy,
        }
    }

    /// How many of `energy_steps` are `<= p` (the 0..=100 energy of power `p`), for `p` in
    /// `MIN_POWER..=1`: the steps below `p`'s bucket plus the one inside it if it is `<= p`.
    /// Two table loads and a compare, no search (a short dependency chain per member).
    fn energy_of(&self, p: f32) -> u8 {
        let bits = p.to_bits();
        let b = ((bits >> BUCKET_SHIFT).saturating_sub(FIRST_BUCKET) as usize).min(BUCKETS - 1);
        let k = self.bucket_base[b] + (bits >= self.bucket_step[b]) as u8;
        debug_assert_eq!(k as usize, self.energy_steps.partition_point(|&t| t <= p));
        k
    }

    /// Power (`MIN_POWER..=1`) and the 0..=100 energy of a frame.
    pub fn measure(&self, level: Level) -> (f32, u8) {
        match level {
            Level::Silent => (MIN_POWER, 0),
            Level::Energy { sum, .. } => {
                let p = (sum as f32 * self.inv_full_scale).clamp(MIN_POWER, 1.0);
                (p, self.energy_of(p))
            }
            Level::Rfc6464(l) => {
                let l = l.min(127) as usize;
                (self.rfc_power[l], self.rfc_energy[l])
            }
        }
    }
}

/// Per-member voice activity state.
#[derive(Clone, Debug)]
pub(crate) struct Vad {
    /// Tracked noise floor, as power.
    noise_floor: f32,
    voice_ms: u32,
    silence_ms: u32,
    pub talking: bool,
    /// This frame was above the voice threshold.
    pub voiced: bool,
    /// Last frame's level.
    pub level: Level,
    /// Displayed energy, 0..=100: instant attack, decays by 20% per frame.
    pub energy: f32,
}

impl Vad {
    pub fn new() -> Self {
        Vad {
            noise_floor: power_from_dbov(-70.0),
            voice_ms: 0,
            silence_ms: 0,
            talking: false,
            voiced: false,
            level: Level::Silent,
            energy: 0.0,
        }
    }

    /// How long the member has been below the voice threshold (0 while voiced).
    pub fn silent_ms(&self) -> u32 {
        self.silence_ms
    }

    /// Feeds one 20 ms frame whose level was measured as `power` and `energy` by
    /// [`VadLinear::measure`]. All comparisons are in the power domain: the threshold is
    /// `max(min_voice, noise_floor * margin)`, the noise floor falls half-way (in dB, i.e. to
    /// the geometric mean) towards a quieter frame and otherwise rises by 0.05 dB per frame.
    pub fn update(&mut self, level: Level, power: f32, energy: u8, lin: &VadLinear) {
        self.level = level;
        let threshold = lin.min_voice.max(self.noise_floor * lin.margin);
        self.voiced = power > threshold;
        if power < self.noise_floor {
            self.noise_floor = (self.noise_floor * power).sqrt();
        } else {
            self.noise_floor *= lin.floor_rise;
        }
        self.noise_floor = self.noise_floor.max(lin.floor_min).min(lin.floor_max);

        let frame_ms = crate::audio::FRAME_MS;
        if self.voiced {
            self.silence_ms = 0;
            self.voice_ms = self.voice_ms.saturating_add(frame_ms);
            if self.voice_ms >= lin.attack_ms {
                self.talking = true;
            }
        } else {
            self.silence_ms = self.silence_ms.saturating_add(frame_ms);
            if self.talking {
                if self.silence_ms >= lin.release_ms {
                    self.talking = false;
                    self.voice_ms = 0;
                }
            } else {
                // Leaky: a short gap during onset slows the attack instead of resetting it.
                self.voice_ms = self.voice_ms.saturating_sub(frame_ms);
            }
        }
        let e = energy as f32;
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
    fn linear_measure_matches_the_db_scale() {
        let lin = VadLinear::new(&VadConfig::default(), 960);
        let full = 960.0 * 32768.0 * 32768.0;
        let mut mismatches = 0;
        for i in 0..20_000u32 {
            let dbov = -70.0 + i as f64 * 0.0035;
            let sum = (10f64.powf(dbov / 10.0) * full) as u64;
            let (p, e) = lin.measure(Level::Energy { sum, samples: 960 });
            let exact = dbov_from_energy(sum, 960);
            assert!((10.0 * (p as f64).log10() - exact as f64).abs() < 1e-3);
            let want = energy_from_dbov(exact);
            if e != want {
                // Only where the level sits on a rounding boundary of the 0..=100 scale.
                let x = (exact as f64 + 60.0) * 5.0 / 3.0;
                assert!((x - x.floor() - 0.5).abs() < 1e-3, "{dbov}: {e} vs {want}");
                mismatches += 1;
            }
        }
        assert!(mismatches < 20);
        for i in 0..200_000u32 {
            let p = MIN_POWER * 1.000_15f32.powi(i as i32);
            let want = lin.energy_steps.partition_point(|&t| t <= p.min(1.0)) as u8;
            assert_eq!(lin.energy_of(p.min(1.0)), want, "{p}");
        }
        for &t in &lin.energy_steps {
            for p in [
                f32::from_bits(t.to_bits() - 1),
                t,
                f32::from_bits(t.to_bits() + 1),
            ] {
                let want = lin.energy_steps.partition_point(|&s| s <= p) as u8;
                assert_eq!(lin.energy_of(p), want, "{p}");
            }
        }
        for l in 0..=127 {
            let (p, e) = lin.measure(Level::Rfc6464(l));
            assert_eq!(e, energy_from_dbov(-(l as f32)));
            assert!((10.0 * (p as f64).log10() + l as f64).abs() < 1e-3);
        }
        assert_eq!(lin.measure(Level::Silent), (MIN_POWER, 0));
        assert_eq!(
            lin.measure(Level::Energy {
                sum: 0,
                samples: 960
            }),
            (MIN_POWER, 0)
        );
    }

    #[test]
    fn attack_and_release_timing() {
        let lin = VadLinear::new(&VadConfig::default(), 960);
        let mut v = Vad::new();
        let feed = |v: &mut Vad, dbov: f64| {
            // A sum of squares at `dbov` for 960 samples.
            let sum = (10f64.powf(dbov / 10.0) * 960.0 * 32768.0 * 32768.0) as u64;
            let level = Level::Energy { sum, samples: 960 };
            let (p, e) = lin.measure(level);
            v.update(level, p, e, &lin);
        };
        for _ in 0..50 {
            feed(&mut v, -80.0);
        }
        let mut frames = 0;
        while !v.talking {
            feed(&mut v, -20.0);
            frames += 1;
            assert!(frames < 100);
        }
        assert_eq!(frames * 20, 100, "talking after 100 ms of voice");
        let mut frames = 0;
        while v.talking {
            feed(&mut v, -80.0);
            frames += 1;
            assert!(frames < 100);
        }
        assert_eq!(frames * 20, 800, "silent after 800 ms of silence");
    }
}
