//! # comet-sfu: the WebRTC transport
//!
//! Contract: sans-IO per-participant WebRTC sessions (ICE-lite, DTLS-SRTP, RTP/RTCP) built on
//! str0m, demultiplexed from one UDP port. A thin driver owns the socket and the clock; these
//! types only take datagrams and `now` and return datagrams, media and timeouts. Filled in by the
//! audio-conference issue.
