//! # comet-media: codecs, RTP payloads, jitter buffer
//!
//! Contract: turns RTP payloads into decoded frames and back, with no IO of its own. Every
//! stateful piece is sans-IO: it takes bytes and a time `now` and returns frames, bytes and
//! requests (such as "need a keyframe"). Filled in by the media issue.
