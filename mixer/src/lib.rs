//! # comet-mixer: the IO-free heart of the MCU
//!
//! Contract: pure functions and plain data. No sockets, no threads, no clock (time is an
//! argument), no allocation on the per-frame path. Audio mixing (N-1 with loudest-K), voice
//! activity, active-speaker selection, video layout geometry and I420 compositing live here.
//! Filled in by the mixer issue; this crate depends on nothing else in the workspace.
