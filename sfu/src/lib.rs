//! # comet-sfu: the WebRTC transport of comet-server
//!
//! Browsers (JsSIP over SIP-over-WebSocket) send an SDP offer; the conference runtime hands it
//! to this crate and gets the answer back. From then on every participant's WebRTC traffic
//! (ICE-lite, DTLS-SRTP, RTP/RTCP, rtcp-mux, BUNDLE) flows through **one UDP port**. The MCU
//! decodes and re-encodes itself, so this crate hands out raw RTP-level packets (for the MCU's
//! own jitter buffer) and sends the RTP payloads the MCU produces. Built on str0m (RTP mode).
//!
//! ## Contract
//!
//! * [`Endpoint`] is **sans-IO**: it owns no socket, no clock, no thread. Input is
//!   [`Endpoint::handle_datagram`] (bytes plus addresses), [`Endpoint::handle_timeout`] and the
//!   API calls below, each with a `now: Instant`; output is [`Endpoint::poll_output`]:
//!   [`Output::Transmit`] (datagram to send from the one socket), [`Output::Event`]
//!   (per participant) and [`Output::Timeout`] (when to call `handle_timeout`). Tests drive
//!   it on a virtual clock.
//! * [`driver`] (cargo feature `tokio`, on by default) is the **only IO**: one tokio
//!   `UdpSocket`, the wall clock, and channels to the rest of the server.
//! * **Shards.** One endpoint runs on one thread. [`driver::spawn_sharded`] runs N endpoints
//!   configured as shards ([`EndpointConfig::shard`]) on one socket, each on its own
//!   thread:
//!   - a shard's participant ids are its index modulo N ([`Shard::of`]), and its ufrags
//!     start with its index;
//!   - it reports the ufrags and verified peer addresses it starts and stops answering to
//!     ([`Endpoint::take_route_changes`]);
//!   - a reader thread routes every datagram by those keys, as the endpoint itself
//!     demultiplexes;
//!   - the [`driver::SfuHandle`] sends each call to the shard of its participant, and a new
//!     offer to the least loaded shard.
//!
//!   A participant's events keep their order; events of different participants may
//!   interleave differently.
//! * Offers: [`Endpoint::accept_offer`] answers one audio and one video m-line (others are
//!   rejected with port 0), with our ICE-lite credentials, host candidate(s) from
//!   [`EndpointConfig::candidates`] and the endpoint's DTLS fingerprint. One codec per m-line:
//!   Opus, or PCMU/PCMA only when no Opus is offered (plus telephone-event at that clock rate);
//!   video by [`EndpointConfig::video_codecs`] (default H.264 packetization-mode=1, 42e01f
//!   preferred, then VP8). An audio m-line without a codec we speak is an error
//!   ([`Error::NoCommonCodec`], SIP 488); a video m-line without one is rejected. Directions
//!   are the offer's intersected with [`AnswerOptions`]: an audio-only call that offers video
//!   `recvonly` is answered video `sendonly` (it receives the composed canvas).
//!   [`Endpoint::accept_reoffer`] handles re-INVITEs (hold/unhold, ICE restart) keeping the
//!   m-lines and codecs.
//! * Demultiplexing: STUN binding requests by the local ICE ufrag in `USERNAME` (verified by
//!   MESSAGE-INTEGRITY), which teaches the endpoint the peer's source address; everything
//!   else by source address.
//! * Media in: [`Event::Media`] per RTP packet (decrypted, RTX unwrapped, duplicates dropped,
//!   not reordered): extended sequence number, timestamp, marker, payload type and codec,
//!   RFC 6464 audio level, arrival time. Media out: [`Endpoint::write_audio`] /
//!   [`Endpoint::write_video`] take RTP payloads (already packetized); the endpoint numbers
//!   the packets, adds the audio-level extension, keeps video for NACK retransmission, and
//!   sends RTCP sender/receiver reports. Keyframes: [`Endpoint::request_keyframe`] sends PLI,
//!   [`Endpoint::request_keyframe_kind`] PLI or FIR;
//!   [`Event::KeyframeRequest`] reports the peer's PLI/FIR. REMB (and TWCC estimates when
//!   [`EndpointConfig::bwe_initial_bitrate`] is set) arrive as [`Event::BitrateEstimate`].
//!   Writes are refused with an error (and counted) before [`Event::Connected`], on an
//!   m-line we do not send on (hold: the peer answered `sendonly`/`inactive`), or for an
//!   unknown participant; the runtime can check [`Endpoint::media`] first.
//! * Lifecycle: [`Event::Connected`] once ICE and DTLS are up; [`Event::Disconnected`] /
//!   [`Event::Reconnected`] while ICE consent comes and goes; exactly one terminal
//!   [`Event::Closed`] per participant, with a [`CloseReason`] (local close, remote
//!   close_notify, connect timeout, ICE timeout, protocol failure). Ordering per participant:
//!   nothing but `Closed` comes before `Connected` (no media, stats or keyframe requests),
//!   nothing comes after `Closed`, and the id is never reused.
//! * Network input never panics the process and never errors the API: datagrams that are
//!   garbled, truncated, or not for any participant are dropped and counted in [`Metrics`]
//!   (`malformed_dropped`, `unknown_dropped`). Forged or replayed SRTP/DTLS records from a
//!   participant's own address look well-formed here and are discarded by str0m's
//!   authentication and replay checks (counted only in `datagrams_in`). As a last line of
//!   defence every call into str0m runs under `catch_unwind`; a panic discards only that
//!   participant ([`CloseReason::Internal`], [`Metrics::panics`]).
//!   The same holds for offers: any text gets an answer or [`Error::InvalidOffer`]. Both are
//!   fuzzed (libFuzzer targets `sfu_datagram` and `sfu_offer` in `fuzz/`, which also fail on
//!   a panic the endpoint would have caught) besides the property tests in `tests/malformed.rs`.
//! * Limits: UDP host candidates only (no TURN, no ICE-TCP), one IP family per socket (a
//!   dual-stack `[::]` socket would see IPv4 peers as mapped addresses), no data channels
//!   (an offered `m=application` is rejected), no simulcast.
//!
//! ```no_run
//! # use std::time::Instant;
//! # use comet_sfu::*;
//! let mut ep = Endpoint::new(EndpointConfig {
//!     candidates: vec!["203.0.113.7:20000".parse().unwrap()],
//!     ..Default::default()
//! })?;
//! # let offer = "";
//! let answer = ep.accept_offer(offer, AnswerOptions::default(), Instant::now())?;
//! // send answer.sdp in the SIP 200 OK; then loop:
//! loop {
//!     match ep.poll_output(Instant::now()) {
//!         Output::Transmit(t) => { /* socket.send_to(&t.bytes, t.to) */ }
//!         Output::Event(id, ev) => { /* to the conference runtime */ }
//!         Output::Timeout(t) => break, // wait for a datagram or t, then handle_* again
//!     }
//! }
//! # Ok::<(), Error>(())
//! ```

mod demux;
mod endpoint;
mod sdp;
mod types;

#[cfg(feature = "tokio")]
pub mod driver;

pub use endpoint::Endpoint;
pub use types::{
    Answer, AnswerOptions, AudioLevel, BitrateSource, CloseReason, Codec, Direction,
    EndpointConfig, Error, Event, KeyframeKind, MediaKind, MediaPacket, Metrics, NegotiatedMedia,
    Output, ParticipantId, ParticipantStats, RouteChange, Shard, Transmit, VideoCodec,
};
