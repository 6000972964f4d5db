//! Conferences: their names on the wire (SIP number, call pipe), who is in them now, and the
//! runtime that mixes them.

pub mod callpipe;
pub mod registry;
pub mod runtime;

/// Whether conferences send members the composed video canvas (the video MCU). Until it does,
/// the runtime answers video `inactive`. `/api/features` reports it as `video`; the demo page
/// asks for the camera and the browser test checks inbound video frames only when it is true.
/// The video MCU's merge flips it.
pub const VIDEO_COMPOSITION: bool = false;

pub use registry::{ConferenceRegistry, Hangup, MemberRow};
pub use runtime::{MediaRuntime, RuntimeConfig, RuntimeStats};
