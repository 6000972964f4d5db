//! Conferences: their names on the wire (SIP number, call pipe), who is in them now, and the
//! runtime that mixes them.

pub mod callpipe;
pub mod registry;
pub mod runtime;

pub use registry::{ConferenceRegistry, Hangup, MemberRow};
pub use runtime::{MediaRuntime, RuntimeConfig, RuntimeStats};
