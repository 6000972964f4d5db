//! Conferences: their names on the wire (SIP number, call pipe), who is in them now, and the
//! runtime that mixes them (audio in `runtime`, video in `video` on `video_worker` threads).

pub mod callpipe;
pub mod registry;
pub mod runtime;
pub mod video;
pub mod video_worker;

pub use registry::{ConferenceRegistry, Hangup, MemberRow};
pub use runtime::{MediaRuntime, RuntimeConfig, RuntimeStats};
