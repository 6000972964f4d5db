//! Conferences: their names on the wire (SIP number, call pipe), who is in them now, and the
//! runtime that mixes them (audio in `runtime`, video in `video` on `video_worker` threads).

pub mod callpipe;
pub mod complexity;
pub mod registry;
pub mod runtime;
pub mod video;
pub mod video_worker;

/// Whether conferences send members the composed video canvas (the video MCU, [`video`]).
/// `/api/features` reports it as `video`; the demo then invites with the `video` profile, the
/// page asks for the camera, and the browser test checks inbound video frames.
pub const VIDEO_COMPOSITION: bool = true;

pub use registry::{ConferenceRegistry, Hangup, MemberRow};
pub use runtime::{AudioTotals, MediaRuntime, RuntimeConfig, RuntimeStats};
