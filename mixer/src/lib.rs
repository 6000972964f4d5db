//! # comet-mixer: the IO-free heart of the MCU
//!
//! ## Contract
//! Pure functions and plain data. No sockets, no threads, no clock: time is an argument
//! (`now_ms`, the caller's monotonic milliseconds). Nothing panics on bad input: wrong sizes,
//! unknown ids and out-of-range settings return [`MixerError`]. The per-frame audio path
//! ([`AudioMixer::mix`]) and the compositor ([`Compositor::compose`], after its scratch
//! buffers have grown to the largest tile) allocate nothing.
//!
//! ## Audio ([`audio`])
//! 48 kHz, 20 ms frames ([`SAMPLES_PER_CHANNEL`] = 960 samples per channel), mono or
//! interleaved stereo, i16 in and out.
//! - [`AudioMixer::add_member`] / [`AudioMixer::remove_member`] manage [`MemberId`]s;
//!   [`AudioMixer::set_muted`], [`AudioMixer::set_deaf`], [`AudioMixer::set_input_gain`],
//!   [`AudioMixer::set_output_gain`], [`AudioMixer::set_master_gain`] set per-member and
//!   conference state.
//! - [`AudioMixer::mix`] takes one frame per sending member ([`MemberInput`], with the
//!   optional RFC 6464 level) and:
//!   1. measures each member's level (the RFC 6464 value when given, else the frame's energy)
//!      and runs voice activity (talking after ~100 ms of voice, silent after ~800 ms);
//!   2. picks at most K (`max_talkers`) of the loudest talkers, with hysteresis (an
//!      incumbent keeps its slot while it talks; a newcomer must be `switch_margin_db`
//!      louder than the quietest incumbent), muted members never qualify;
//!   3. sums them once into i32, then renders each output with the gains, a gain-riding
//!      limiter and a soft knee (transparent below -2.5 dBFS, asymptotic to full scale; no
//!      wrap-around can occur). The common case (up to 4 talkers, unity gains, nothing near
//!      the knee) is one pass over the talkers' frames that writes the shared mix and every
//!      talker's N-1 mix in saturating i16 arithmetic, exactly what the two steps give;
//!      anything beyond the knee is rendered from the i32 sum;
//!   4. updates the dominant speaker (smoothed score, a lead margin held for 300 ms and a
//!      1.5 s minimum hold, so it does not flap).
//! - [`AudioMixer::output`] tells what each member hears: [`OutputKind::Shared`] (everyone
//!   not mixed, not deaf, unity output gain: one buffer, [`AudioMixer::shared_mix`], encode
//!   it once), [`OutputKind::Own`] (a mixed talker's N-1 mix, never containing itself, or a
//!   custom output gain) or [`OutputKind::Silence`] (deaf).
//! - [`AudioMixer::status`] gives `talking`, `energy` (0..=100) and `mixed`;
//!   [`AudioMixer::dominant_speaker`] the active speaker.
//!
//! Kernels run on AVX2 or SSE2 (x86_64, detected at run time) or portable scalar code; every
//! level produces bit-identical output ([`SimdLevel`], forced through
//! [`MixerConfig::simd`]); on aarch64 the audio kernels use NEON (the video scaler the scalar
//! code, which the compiler vectorises).
//!
//! ## Video ([`video`])
//! I420 images ([`I420Image`] owned, [`I420View`] borrowed with strides).
//! - [`LayoutConfig::tiles`] is pure geometry: active speaker (big tile + thumbnail strip),
//!   best-fit grid of 1..=25, presenter only. Rectangles are even-aligned, inside the canvas
//!   and disjoint; [`fit_rect`] fits a picture with its aspect ratio (letterbox).
//! - [`plan_canvases`] turns members, the active speaker, an optional pinned member (video
//!   floor) and per-member flags (`has_video`, `video_off`) into the distinct
//!   [`CanvasDesc`]s and the subscriber -> canvas mapping ([`CanvasPlan`]); nobody sees
//!   themselves in the big tile, so an active-speaker conference has at most two canvases.
//! - [`Compositor::compose`] draws a canvas: bilinear scaling (SIMD vertical pass) into each
//!   tile with black letterbox bars, a dark numbered tile for members without video, and an
//!   amber border on the active speaker.

pub mod audio;
mod error;
pub mod simd;
pub mod video;

pub use audio::vad::{dbov_from_energy, dbov_from_rfc6464, energy_from_dbov, rfc6464_from_dbov};
pub use audio::{
    AudioMixer, Channels, DominantConfig, FRAME_MS, MemberId, MemberInput, MemberOutput,
    MemberStatus, MixerConfig, OutputKind, SAMPLE_RATE, SAMPLES_PER_CHANNEL, VadConfig,
    downmix_stereo_to_mono, upmix_mono_to_stereo,
};
pub use error::MixerError;
pub use simd::SimdLevel;
pub use video::compose::{BORDER, Compositor, NO_VIDEO, border_width};
pub use video::image::{BLACK, I420Image, I420View, Yuv};
pub use video::layout::{LayoutConfig, LayoutKind, MAX_GRID_TILES, Rect, fit_rect, grid};
pub use video::plan::{
    CanvasDesc, CanvasPlan, SceneInput, TileContent, TileDesc, VideoMember, plan_canvases,
    viewer_canvas,
};

/// Low-level kernels, exposed for the SIMD-equivalence tests and the benchmarks.
#[doc(hidden)]
pub mod kernels {
    use crate::SimdLevel;

    /// Sum of squares.
    pub fn energy(level: SimdLevel, x: &[i16]) -> u64 {
        crate::audio::kernels::energy(level, x)
    }
    /// `acc += (x * gain_q12) >> 12`.
    pub fn accumulate(level: SimdLevel, acc: &mut [i32], x: &[i16], gain_q12: i32) {
        crate::audio::kernels::accumulate(level, acc, x, gain_q12)
    }
    /// `acc = (assign ? 0 : acc) + sum of (x * g) >> 12` over `srcs`.
    pub fn sum(level: SimdLevel, acc: &mut [i32], srcs: &[(&[i16], i32)], assign: bool) {
        crate::audio::kernels::sum(level, acc, srcs, assign)
    }
    /// Output stage with a gain ramp `g0 + step * n`; returns the pre-gain peak.
    pub fn render(
        level: SimdLevel,
        acc: &[i32],
        own: Option<(&[i16], i32)>,
        g0: f32,
        step: f32,
        out: &mut [i16],
    ) -> u32 {
        crate::audio::kernels::render(
            level,
            acc,
            own,
            crate::audio::kernels::Ramp { g0, step },
            out,
        )
    }
    /// Most sources [`onepass`] takes.
    pub const ONEPASS_MAX: usize = crate::audio::kernels::ONEPASS_MAX;
    /// One-pass unity render of up to [`ONEPASS_MAX`] sources: the shared mix and each
    /// non-empty `owns[k]` (all sources but `k`); `None` if the shared mix or a partial sum
    /// is beyond the knee, and an own output whose peak is beyond it is not valid.
    pub fn onepass(
        level: SimdLevel,
        srcs: &[&[i16]],
        shared: &mut [i16],
        owns: &mut [&mut [i16]],
        peaks: &mut [u32],
    ) -> Option<u32> {
        crate::audio::kernels::onepass(level, srcs, shared, owns, peaks)
    }
    /// Start of the limiter's soft knee.
    pub const KNEE: f32 = crate::audio::kernels::KNEE;
    /// Row blend used by the scaler.
    pub fn blend_rows(level: SimdLevel, a: &[u8], b: &[u8], f: u16, out: &mut [u8]) {
        crate::video::scale::blend_rows(level, a, b, f.min(256), out)
    }
}
