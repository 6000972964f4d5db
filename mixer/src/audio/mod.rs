//! N-1 audio mixing with loudest-K talker selection, voice activity and dominant speaker.

mod aligned;
pub(crate) mod kernels;
pub mod vad;

use crate::MixerError;
use crate::simd::SimdLevel;
use aligned::Aligned;
use kernels::{KNEE, Ramp, UNITY_Q12};
pub use vad::VadConfig;
use vad::{Level, Vad, VadLinear};

/// Sample rate of every frame, in Hz.
pub const SAMPLE_RATE: u32 = 48_000;
/// Frame duration in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Samples per channel in one frame (20 ms at 48 kHz).
pub const SAMPLES_PER_CHANNEL: usize = 960;
/// Largest accepted `max_talkers`.
pub const MAX_TALKERS_LIMIT: usize = 1024;
/// Largest input gain (the Q12 fixed-point gain must fit in an i16).
pub const MAX_INPUT_GAIN: f32 = 32767.0 / 4096.0;
/// Largest output or master gain.
pub const MAX_OUTPUT_GAIN: f32 = 16.0;

/// The limiter aims the loudest sample of a stream at this level (just under the knee).
const LIMIT_TARGET: f32 = KNEE * 0.95;
/// The loudest-K rank decays by 1.5 dB per frame (as a power ratio).
const RANK_DECAY: f32 = 0.707_945_8;
/// Limiter release: gain recovers by 1 dB per frame.
const LIMIT_RELEASE: f32 = 1.122_018_5;

/// Channel layout of a conference. Stereo frames are interleaved L, R.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channels {
    Mono = 1,
    Stereo = 2,
}

impl Channels {
    /// Samples in one 20 ms frame (all channels).
    pub fn frame_len(self) -> usize {
        SAMPLES_PER_CHANNEL * self as usize
    }
}

/// Dominant speaker parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DominantConfig {
    /// A new dominant speaker is held at least this long (default 1500 ms).
    pub min_hold_ms: u64,
    /// A challenger must lead continuously this long before it takes over (default 300 ms).
    pub switch_after_ms: u64,
    /// A challenger must lead the current speaker's score by this much (energy units,
    /// 0..=100 scale; default 8).
    pub margin: f32,
    /// Smoothing of the per-member score per 20 ms frame (default 0.05, about 400 ms).
    pub smoothing: f32,
    /// A clear hand-over: once the speaker has been silent this long (default 200 ms) and
    /// the minimum hold is over, the member talking now (voice activity on, voiced this
    /// frame) takes over at once, without waiting for its smoothed score to lead by
    /// `margin` for `switch_after_ms`. While the speaker keeps talking only the score
    /// rule applies, so two people talking at once do not flap.
    pub handover_silence_ms: u64,
}

impl Default for DominantConfig {
    fn default() -> Self {
        DominantConfig {
            min_hold_ms: 1500,
            switch_after_ms: 300,
            margin: 8.0,
            smoothing: 0.05,
            handover_silence_ms: 200,
        }
    }
}

/// Mixer configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixerConfig {
    pub channels: Channels,
    /// How many of the loudest talkers are mixed (K, default 3, 1..=1024).
    pub max_talkers: usize,
    /// A non-mixed talker must be this much louder (dB) than the quietest mixed one to
    /// replace it (default 6 dB).
    pub switch_margin_db: f32,
    /// Upper bound on members (default 4096).
    pub max_members: usize,
    pub vad: VadConfig,
    pub dominant: DominantConfig,
    /// Kernel instruction set; default [`SimdLevel::detect`]. An unsupported level falls back.
    pub simd: SimdLevel,
}

impl Default for MixerConfig {
    fn default() -> Self {
        MixerConfig {
            channels: Channels::Mono,
            max_talkers: 3,
            switch_margin_db: 6.0,
            max_members: 4096,
            vad: VadConfig::default(),
            dominant: DominantConfig::default(),
            simd: SimdLevel::detect(),
        }
    }
}

/// A member's handle. Ids are slot numbers and are reused after [`AudioMixer::remove_member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u32);

/// One member's decoded frame for [`AudioMixer::mix`].
#[derive(Clone, Copy, Debug)]
pub struct MemberInput<'a> {
    pub member: MemberId,
    /// Exactly [`Channels::frame_len`] samples, interleaved if stereo.
    pub pcm: &'a [i16],
    /// RFC 6464 audio level (0..=127, -dBov) from the RTP header extension. When present it
    /// is used for voice activity instead of measuring the samples.
    pub audio_level: Option<u8>,
}

/// What a member hears this frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// The shared mix ([`AudioMixer::shared_mix`]): identical for every member of this
    /// kind, so encode it once.
    Shared,
    /// A mix of its own (it is a mixed talker and hears N-1, or has a non-unity output gain).
    Own,
    /// Silence (deaf).
    Silence,
}

/// A member's output for the last frame.
#[derive(Clone, Copy, Debug)]
pub struct MemberOutput<'a> {
    pub kind: OutputKind,
    pub pcm: &'a [i16],
}

/// A member's observable state after the last frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemberStatus {
    /// Voice activity with attack/release hysteresis.
    pub talking: bool,
    /// 0..=100, for `conference_members.energy`.
    pub energy: u8,
    /// Level of the last frame, dBov (-127..=0).
    pub level_dbov: f32,
    /// Mixed into others' outputs this frame (one of the loudest K).
    pub mixed: bool,
    pub muted: bool,
    pub deaf: bool,
}

#[derive(Clone, Copy, Debug)]
struct Limiter {
    /// Gain reduction, <= 1.
    reduction: f32,
    /// Total gain applied at the end of the last frame.
    applied: f32,
    /// Pre-gain peak of the last frame.
    peak: u32,
}

impl Limiter {
    fn new() -> Self {
        Limiter {
            reduction: 1.0,
            applied: 1.0,
            peak: 0,
        }
    }

    /// The ramp for this frame. Gain reduction reacts to the previous frame's peak (the soft
    /// knee handles the onset frame) and recovers by `LIMIT_RELEASE` per frame.
    fn ramp(&mut self, static_gain: f32, len: usize) -> Ramp {
        let loud = self.peak as f32 * static_gain;
        let needed = if loud > LIMIT_TARGET {
            LIMIT_TARGET / loud
        } else {
            1.0
        };
        self.reduction = needed.min(self.reduction * LIMIT_RELEASE).min(1.0);
        let target = static_gain * self.reduction;
        // (A steady gain, the common case, needs no division: 0 / len is 0.)
        let step = if target == self.applied {
            0.0
        } else {
            (target - self.applied) / len.max(1) as f32
        };
        let ramp = Ramp {
            g0: self.applied,
            step,
        };
        self.applied = target;
        ramp
    }
}

#[derive(Clone, Debug)]
struct Member {
    active: bool,
    muted: bool,
    deaf: bool,
    in_gain_q12: i32,
    out_gain: f32,
    vad: Vad,
    /// Loudness for the loudest-K ranking, as power: the frame's power, or the previous rank
    /// decayed by 1.5 dB if that is louder.
    rank: f32,
    /// Sum of squares of this frame's input (when measured from samples).
    frame_sum: u64,
    score: f32,
    in_mix: bool,
    candidate: bool,
    input_stamp: u64,
    input_idx: usize,
    out_kind: OutputKind,
    /// Frame number in which `limiter` was last used for an own output.
    own_frame: u64,
    limiter: Limiter,
    /// This frame's gain ramp of the own output, and whether it is rendered yet.
    ramp: Ramp,
    rendered: bool,
    out: Aligned<i16>,
}

impl Member {
    fn new(frame_len: usize) -> Self {
        Member {
            active: true,
            muted: false,
            deaf: false,
            in_gain_q12: UNITY_Q12,
            out_gain: 1.0,
            vad: Vad::new(),
            rank: 0.0,
            frame_sum: 0,
            score: 0.0,
            in_mix: false,
            candidate: false,
            input_stamp: 0,
            input_idx: 0,
            out_kind: OutputKind::Shared,
            own_frame: 0,
            limiter: Limiter::new(),
            ramp: Ramp::UNITY,
            rendered: false,
            out: Aligned::zeroed(frame_len),
        }
    }
}

/// What the one pass over the members in `update_activity` found, so that no later step
/// has to scan every member again.
#[derive(Clone, Copy, Debug, Default)]
struct Activity {
    /// The loudest candidate not mixed (first by slot among equals).
    loudest_outside: Option<usize>,
    /// The best-scored talking member other than the dominant speaker, and the best-scored
    /// one that is also voiced this frame (first by slot among equals; muted excluded).
    best_talking: Option<usize>,
    best_voiced: Option<usize>,
    /// Members that hear an own mix whatever the selection (output gain not unity).
    custom_out: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Dominant {
    current: Option<usize>,
    since_ms: u64,
    challenger: Option<(usize, u64)>,
}

/// The N-1 audio mixer of one conference. See the crate documentation for the contract.
#[derive(Debug)]
pub struct AudioMixer {
    cfg: MixerConfig,
    simd: SimdLevel,
    frame_len: usize,
    master_gain: f32,
    members: Vec<Member>,
    free: Vec<usize>,
    mixed: Vec<usize>,
    acc: Aligned<i32>,
    shared: Aligned<i16>,
    silence: Aligned<i16>,
    shared_limiter: Limiter,
    frame: u64,
    dominant: Dominant,
    vad: VadLinear,
    /// `switch_margin_db` as a power ratio.
    switch_ratio: f32,
}

impl AudioMixer {
    /// A mixer with no members.
    pub fn new(cfg: MixerConfig) -> Result<Self, MixerError> {
        if cfg.max_talkers == 0 || cfg.max_talkers > MAX_TALKERS_LIMIT {
            return Err(MixerError::InvalidConfig("max_talkers must be 1..=1024"));
        }
        if !(cfg.switch_margin_db.is_finite() && cfg.switch_margin_db >= 0.0) {
            return Err(MixerError::InvalidConfig("switch_margin_db must be >= 0"));
        }
        if cfg.max_members == 0 || cfg.max_members > u32::MAX as usize {
            return Err(MixerError::InvalidConfig("max_members must be >= 1"));
        }
        let d = &cfg.dominant;
        if !(d.margin.is_finite() && d.smoothing > 0.0 && d.smoothing <= 1.0) {
            return Err(MixerError::InvalidConfig(
                "dominant margin must be finite and smoothing in (0, 1]",
            ));
        }
        cfg.vad.validate()?;
        let frame_len = cfg.channels.frame_len();
        Ok(AudioMixer {
            simd: cfg.simd.effective(),
            cfg,
            frame_len,
            master_gain: 1.0,
            members: Vec::new(),
            free: Vec::new(),
            mixed: Vec::with_capacity(cfg.max_talkers),
            acc: Aligned::zeroed(frame_len),
            shared: Aligned::zeroed(frame_len),
            silence: Aligned::zeroed(frame_len),
            shared_limiter: Limiter::new(),
            frame: 0,
            dominant: Dominant::default(),
            vad: VadLinear::new(&cfg.vad, frame_len),
            switch_ratio: 10f64.powf(cfg.switch_margin_db as f64 / 10.0) as f32,
        })
    }

    pub fn config(&self) -> &MixerConfig {
        &self.cfg
    }

    /// The instruction set actually used.
    pub fn simd_level(&self) -> SimdLevel {
        self.simd
    }

    /// Samples per frame (all channels).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Adds a member (allocates its output buffer; not a per-frame operation).
    pub fn add_member(&mut self) -> Result<MemberId, MixerError> {
        if let Some(slot) = self.free.pop() {
            self.members[slot] = Member::new(self.frame_len);
            return Ok(MemberId(slot as u32));
        }
        if self.members.len() >= self.cfg.max_members {
            return Err(MixerError::CapacityReached(self.cfg.max_members));
        }
        self.members.push(Member::new(self.frame_len));
        Ok(MemberId((self.members.len() - 1) as u32))
    }

    /// Removes a member; its id may be handed out again by a later `add_member`.
    pub fn remove_member(&mut self, id: MemberId) -> Result<(), MixerError> {
        let slot = self.slot(id)?;
        self.members[slot].active = false;
        self.members[slot].in_mix = false;
        self.mixed.retain(|&m| m != slot);
        if self.dominant.current == Some(slot) {
            self.dominant = Dominant::default();
        }
        self.free.push(slot);
        Ok(())
    }

    /// Ids of the current members, in slot order.
    pub fn members(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.active)
            .map(|(i, _)| MemberId(i as u32))
    }

    fn slot(&self, id: MemberId) -> Result<usize, MixerError> {
        match self.members.get(id.0 as usize) {
            Some(m) if m.active => Ok(id.0 as usize),
            _ => Err(MixerError::UnknownMember(id.0)),
        }
    }

    fn member_mut(&mut self, id: MemberId) -> Result<&mut Member, MixerError> {
        let slot = self.slot(id)?;
        Ok(&mut self.members[slot])
    }

    /// A muted member is never mixed (its voice activity is still measured and reported).
    pub fn set_muted(&mut self, id: MemberId, muted: bool) -> Result<(), MixerError> {
        self.member_mut(id)?.muted = muted;
        Ok(())
    }

    /// A deaf member receives silence.
    pub fn set_deaf(&mut self, id: MemberId, deaf: bool) -> Result<(), MixerError> {
        self.member_mut(id)?.deaf = deaf;
        Ok(())
    }

    /// Linear gain applied to what the member says, `0..=MAX_INPUT_GAIN` (about 8.0, +18 dB).
    pub fn set_input_gain(&mut self, id: MemberId, gain: f32) -> Result<(), MixerError> {
        if !(gain.is_finite() && (0.0..=MAX_INPUT_GAIN).contains(&gain)) {
            return Err(MixerError::InvalidConfig("input gain must be in 0..=7.99"));
        }
        self.member_mut(id)?.in_gain_q12 = ((gain * 4096.0).round() as i32).min(i16::MAX as i32);
        Ok(())
    }

    /// Linear gain applied to what the member hears, `0..=16`. A non-unity value gives the
    /// member an own output instead of the shared mix.
    pub fn set_output_gain(&mut self, id: MemberId, gain: f32) -> Result<(), MixerError> {
        if !(gain.is_finite() && (0.0..=MAX_OUTPUT_GAIN).contains(&gain)) {
            return Err(MixerError::InvalidConfig("output gain must be in 0..=16"));
        }
        self.member_mut(id)?.out_gain = gain;
        Ok(())
    }

    /// Conference-wide linear gain on every output, `0..=16`.
    pub fn set_master_gain(&mut self, gain: f32) -> Result<(), MixerError> {
        if !(gain.is_finite() && (0.0..=MAX_OUTPUT_GAIN).contains(&gain)) {
            return Err(MixerError::InvalidConfig("master gain must be in 0..=16"));
        }
        self.master_gain = gain;
        Ok(())
    }

    /// Mixes one 20 ms frame. `inputs` holds the decoded frames of the members that sent
    /// audio; absent members count as silent. `now_ms` is the caller's monotonic clock (used
    /// for the dominant speaker's hold times). Nothing is allocated. On error nothing changes.
    pub fn mix(&mut self, now_ms: u64, inputs: &[MemberInput<'_>]) -> Result<(), MixerError> {
        let stamp = self.frame + 1;
        // One pass over the inputs: check, mark, and measure the energy (in a tight loop over
        // the frames; measuring inside the member pass instead measured slower). On an error
        // the marks of this call are undone (a `frame_sum` without a current mark is unused).
        for (idx, input) in inputs.iter().enumerate() {
            let error = match self.members.get(input.member.0 as usize) {
                Some(m) if m.active => {
                    if input.pcm.len() != self.frame_len {
                        Some(MixerError::FrameLength {
                            expected: self.frame_len,
                            got: input.pcm.len(),
                        })
                    } else if m.input_stamp == stamp {
                        Some(MixerError::DuplicateInput(input.member.0))
                    } else {
                        None
                    }
                }
                _ => Some(MixerError::UnknownMember(input.member.0)),
            };
            if let Some(e) = error {
                for earlier in &inputs[..idx] {
                    self.members[earlier.member.0 as usize].input_stamp = 0;
                }
                return Err(e);
            }
            let m = &mut self.members[input.member.0 as usize];
            m.input_stamp = stamp;
            m.input_idx = idx;
            if input.audio_level.is_none() {
                m.frame_sum = kernels::energy(self.simd, input.pcm);
            }
        }
        self.frame = stamp;

        let activity = self.update_activity(inputs);
        self.select_talkers(activity.loudest_outside);
        for &slot in &self.mixed {
            let m = &mut self.members[slot];
            if !m.deaf {
                m.out_kind = OutputKind::Own;
            }
        }

        let len = self.frame_len;
        // A member that starts hearing an own mix continues from the shared stream's limiter
        // as it was up to the last frame (the gain it was hearing at the end of that frame).
        let shared_before = self.shared_limiter;
        let shared_ramp = self.shared_limiter.ramp(self.master_gain, len);

        // Own outputs: the mixed talkers, plus (only if there are any) members with a custom
        // output gain; `out_kind` was set by `update_activity` and the fix-up above. Many
        // outputs are rendered in slot order (memory order of the members and, usually, of
        // their frames), a few straight from the mix list.
        let all = activity.custom_out > 0 || self.mixed.len() > 2 * kernels::ONEPASS_MAX;
        let n_own = if all {
            self.members.len()
        } else {
            self.mixed.len()
        };
        for j in 0..n_own {
            let slot = if all { j } else { self.mixed[j] };
            let m = &mut self.members[slot];
            if !m.active || m.out_kind != OutputKind::Own {
                continue;
            }
            if m.own_frame + 1 != stamp {
                m.limiter = shared_before;
            }
            m.own_frame = stamp;
            m.ramp = m.limiter.ramp(self.master_gain * m.out_gain, len);
            m.rendered = false;
        }

        // The common case, nothing to limit: a few talkers at unity gains, every output in
        // one pass over their frames (vector levels; the scalar twin keeps the two steps
        // below, the reference the one pass is tested against). Whatever it leaves undone
        // (an output beyond the knee, one with a gain) is rendered from the i32 sum below.
        let mut shared_done = false;
        let k = self.mixed.len();
        if self.simd != SimdLevel::Scalar
            && k <= kernels::ONEPASS_MAX
            && shared_ramp.is_unity()
            && self
                .mixed
                .iter()
                .all(|&s| self.members[s].in_gain_q12 == UNITY_Q12)
        {
            let mut srcs: [&[i16]; kernels::ONEPASS_MAX] = [&[]; kernels::ONEPASS_MAX];
            // The own buffers are moved out while the kernel writes them (no allocation).
            let mut bufs: [Aligned<i16>; kernels::ONEPASS_MAX] = Default::default();
            for (j, &slot) in self.mixed.iter().enumerate() {
                let m = &mut self.members[slot];
                srcs[j] = inputs[m.input_idx].pcm;
                if m.out_kind == OutputKind::Own && m.ramp.is_unity() {
                    bufs[j] = std::mem::take(&mut m.out);
                }
            }
            let mut peaks = [0u32; kernels::ONEPASS_MAX];
            let shared_peak = {
                let mut owns = bufs.each_mut().map(|b| &mut b[..]);
                kernels::onepass(
                    self.simd,
                    &srcs[..k],
                    &mut self.shared,
                    &mut owns[..k],
                    &mut peaks[..k],
                )
            };
            for (j, buf) in bufs.iter_mut().enumerate().take(k) {
                if buf.is_empty() {
                    continue;
                }
                let m = &mut self.members[self.mixed[j]];
                m.out = std::mem::take(buf);
                if shared_peak.is_some() && peaks[j] <= KNEE as u32 {
                    m.limiter.peak = peaks[j];
                    m.rendered = true;
                }
            }
            if let Some(peak) = shared_peak {
                self.shared_limiter.peak = peak;
                shared_done = true;
            }
        }

        let mut summed = false;
        if !shared_done {
            self.sum_talkers(inputs);
            summed = true;
            self.shared_limiter.peak =
                kernels::render(self.simd, &self.acc, None, shared_ramp, &mut self.shared);
        }
        for j in 0..n_own {
            let slot = if all { j } else { self.mixed[j] };
            let m = &self.members[slot];
            if !m.active || m.out_kind != OutputKind::Own || m.rendered {
                continue;
            }
            if !summed {
                self.sum_talkers(inputs);
                summed = true;
            }
            let m = &mut self.members[slot];
            let own = if m.in_mix {
                Some((inputs[m.input_idx].pcm, m.in_gain_q12))
            } else {
                None
            };
            m.limiter.peak = kernels::render(self.simd, &self.acc, own, m.ramp, &mut m.out);
            m.rendered = true;
        }

        self.update_dominant(now_ms, &activity);
        Ok(())
    }

    /// Sums the selected talkers into `acc` (a group of them per pass, nothing allocated).
    fn sum_talkers(&mut self, inputs: &[MemberInput<'_>]) {
        let mut first = true;
        for chunk in self.mixed.chunks(kernels::SUM_GROUP) {
            let mut group: [(&[i16], i32); kernels::SUM_GROUP] = [(&[], 0); kernels::SUM_GROUP];
            for (g, &slot) in group.iter_mut().zip(chunk) {
                let m = &self.members[slot];
                *g = (inputs[m.input_idx].pcm, m.in_gain_q12);
            }
            kernels::sum(self.simd, &mut self.acc, &group[..chunk.len()], first);
            first = false;
        }
        if first {
            self.acc.fill(0);
        }
    }

    /// Updates every member's level, voice activity, rank, score and (before the mix
    /// selection) output kind, and collects what later steps would otherwise scan for.
    fn update_activity(&mut self, inputs: &[MemberInput<'_>]) -> Activity {
        let stamp = self.frame;
        let alpha = self.cfg.dominant.smoothing;
        let current = self.dominant.current;
        let mut act = Activity::default();
        let mut loudest = f32::NEG_INFINITY;
        let (mut best_score, mut voiced_score) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for (i, m) in self.members.iter_mut().enumerate() {
            if !m.active {
                continue;
            }
            let has_input = m.input_stamp == stamp;
            let level = if has_input {
                let input = &inputs[m.input_idx];
                match input.audio_level {
                    Some(level) => Level::Rfc6464(level),
                    None => Level::Energy {
                        sum: m.frame_sum,
                        samples: input.pcm.len() as u32,
                    },
                }
            } else {
                Level::Silent
            };
            let (power, energy) = self.vad.measure(level);
            m.vad.update(level, power, energy, &self.vad);
            m.rank = power.max(m.rank * RANK_DECAY);
            m.candidate = has_input && !m.muted && (m.vad.voiced || m.vad.talking);
            let talking = m.vad.talking && !m.muted;
            let activity = if talking { m.vad.energy } else { 0.0 };
            m.score += (activity - m.score) * alpha;
            // The kind before the selection; mixed talkers become `Own` after it.
            m.out_kind = if m.deaf {
                OutputKind::Silence
            } else if m.out_gain != 1.0 {
                act.custom_out += 1;
                OutputKind::Own
            } else {
                OutputKind::Shared
            };
            // Strictly greater: the first by slot wins among equals.
            if m.candidate && !m.in_mix && (act.loudest_outside.is_none() || m.rank > loudest) {
                act.loudest_outside = Some(i);
                loudest = m.rank;
            }
            if talking && Some(i) != current {
                if act.best_talking.is_none() || m.score > best_score {
                    act.best_talking = Some(i);
                    best_score = m.score;
                }
                if m.vad.voiced && (act.best_voiced.is_none() || m.score > voiced_score) {
                    act.best_voiced = Some(i);
                    voiced_score = m.score;
                }
            }
        }
        act
    }

    /// Loudest-K selection with hysteresis: incumbents keep their slot while they are still
    /// talking; free slots go to the loudest candidates; a candidate replaces the quietest
    /// incumbent only when louder by `switch_margin_db`.
    ///
    /// `loudest_outside` is what the first search for the loudest candidate outside the mix
    /// finds (computed by `update_activity`: dropping incumbents that stopped being
    /// candidates does not change it); later searches scan.
    fn select_talkers(&mut self, loudest_outside: Option<usize>) {
        let members = &mut self.members;
        self.mixed.retain(|&s| {
            let keep = members[s].candidate;
            members[s].in_mix = keep;
            keep
        });
        let scan = |members: &[Member]| -> Option<usize> {
            let mut best: Option<usize> = None;
            for (i, m) in members.iter().enumerate() {
                if m.active && m.candidate && !m.in_mix {
                    match best {
                        Some(b) if members[b].rank >= m.rank => {}
                        _ => best = Some(i),
                    }
                }
            }
            best
        };
        debug_assert_eq!(loudest_outside, scan(members));
        // The loudest candidate outside the mix; looked for again only after the mix changed.
        let mut best = loudest_outside;
        while self.mixed.len() < self.cfg.max_talkers {
            let Some(b) = best else {
                return;
            };
            members[b].in_mix = true;
            self.mixed.push(b);
            best = scan(members);
        }
        for _ in 0..self.cfg.max_talkers {
            let Some(b) = best else {
                break;
            };
            let Some((wi, &w)) = self
                .mixed
                .iter()
                .enumerate()
                .min_by(|a, b| members[*a.1].rank.total_cmp(&members[*b.1].rank))
            else {
                break;
            };
            if members[b].rank > members[w].rank * self.switch_ratio {
                members[w].in_mix = false;
                members[b].in_mix = true;
                self.mixed[wi] = b;
                best = scan(members);
            } else {
                break;
            }
        }
    }

    /// `act` holds the best-scored talking (and talking and voiced) members other than the
    /// current speaker, found by `update_activity`'s pass (a current speaker that is no longer
    /// eligible is not talking-and-unmuted either, so it is excluded from both anyway).
    fn update_dominant(&mut self, now_ms: u64, act: &Activity) {
        let cfg = self.cfg.dominant;
        let members = &self.members;
        let eligible = |i: usize| members[i].active && !members[i].muted;
        let d = &mut self.dominant;
        if let Some(c) = d.current
            && !eligible(c)
        {
            *d = Dominant::default();
        }
        debug_assert_eq!(act.best_talking, {
            let mut best: Option<usize> = None;
            for (i, m) in members.iter().enumerate() {
                if Some(i) == d.current || !eligible(i) || !m.vad.talking {
                    continue;
                }
                match best {
                    Some(b) if members[b].score >= m.score => {}
                    _ => best = Some(i),
                }
            }
            best
        });
        let best = act.best_talking;
        let Some(cur) = d.current else {
            if let Some(b) = best {
                *d = Dominant {
                    current: Some(b),
                    since_ms: now_ms,
                    challenger: None,
                };
            }
            return;
        };
        let held = now_ms.saturating_sub(d.since_ms) >= cfg.min_hold_ms;
        if held && members[cur].vad.silent_ms() as u64 >= cfg.handover_silence_ms {
            // The speaker stopped: the best-scored member talking right now takes over.
            if let Some(n) = act.best_voiced {
                *d = Dominant {
                    current: Some(n),
                    since_ms: now_ms,
                    challenger: None,
                };
                return;
            }
        }
        match best {
            Some(b) if members[b].score > members[cur].score + cfg.margin => {
                let since = match d.challenger {
                    Some((c, since)) if c == b => since,
                    _ => now_ms,
                };
                d.challenger = Some((b, since));
                let led = now_ms.saturating_sub(since) >= cfg.switch_after_ms;
                if held && led {
                    *d = Dominant {
                        current: Some(b),
                        since_ms: now_ms,
                        challenger: None,
                    };
                }
            }
            _ => d.challenger = None,
        }
    }

    /// What `id` hears for the last mixed frame.
    pub fn output(&self, id: MemberId) -> Result<MemberOutput<'_>, MixerError> {
        let m = &self.members[self.slot(id)?];
        let pcm = match m.out_kind {
            OutputKind::Shared => &self.shared[..],
            OutputKind::Own => &m.out[..],
            OutputKind::Silence => &self.silence[..],
        };
        Ok(MemberOutput {
            kind: m.out_kind,
            pcm,
        })
    }

    /// The mix heard by every member whose output kind is [`OutputKind::Shared`]: all
    /// mixed talkers, master gain applied, limited.
    pub fn shared_mix(&self) -> &[i16] {
        &self.shared
    }

    /// The members mixed in the last frame (at most `max_talkers`).
    pub fn mixed_members(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.mixed.iter().map(|&s| MemberId(s as u32))
    }

    /// Voice activity and mixing state of `id` after the last frame.
    pub fn status(&self, id: MemberId) -> Result<MemberStatus, MixerError> {
        let m = &self.members[self.slot(id)?];
        Ok(MemberStatus {
            talking: m.vad.talking,
            energy: m.vad.energy.round().clamp(0.0, 100.0) as u8,
            level_dbov: m.vad.level.dbov(),
            mixed: m.in_mix,
            muted: m.muted,
            deaf: m.deaf,
        })
    }

    /// The dominant (active) speaker, if anyone has spoken.
    pub fn dominant_speaker(&self) -> Option<MemberId> {
        self.dominant.current.map(|s| MemberId(s as u32))
    }
}

/// Interleaves a mono frame into stereo (`stereo.len() == 2 * mono.len()`).
pub fn upmix_mono_to_stereo(mono: &[i16], stereo: &mut [i16]) -> Result<(), MixerError> {
    if stereo.len() != mono.len() * 2 {
        return Err(MixerError::BufferLength(
            "stereo must be twice as long as mono",
        ));
    }
    for (pair, &s) in stereo.chunks_exact_mut(2).zip(mono) {
        pair[0] = s;
        pair[1] = s;
    }
    Ok(())
}

/// Averages an interleaved stereo frame to mono (`stereo.len() == 2 * mono.len()`).
pub fn downmix_stereo_to_mono(stereo: &[i16], mono: &mut [i16]) -> Result<(), MixerError> {
    if stereo.len() != mono.len() * 2 {
        return Err(MixerError::BufferLength(
            "stereo must be twice as long as mono",
        ));
    }
    for (pair, m) in stereo.chunks_exact(2).zip(mono.iter_mut()) {
        *m = ((pair[0] as i32 + pair[1] as i32) >> 1) as i16;
    }
    Ok(())
}
