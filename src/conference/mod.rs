//! Conferences: their names on the wire (SIP number, call pipe) and who is in them now.

pub mod callpipe;
pub mod registry;

pub use registry::{ConferenceRegistry, Hangup, MemberRow};
