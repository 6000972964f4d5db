//! # comet-server
//!
//! A native media server that speaks the APIs CppComet + FreeSWITCH users already call.
//!
//! Contract (see `../shared/spec/comet-compat.md` and `ARCHITECTURE.md`):
//! - [`cometql`]: CometQL, SQL over the MySQL wire protocol, for customers' backends. Errors use
//!   CometQL's codes; every acknowledged write is durable in the [`store`].
//! - [`store`]: state that survives restarts, scoped per developer (dev_id).
//! - [`realtime`]: the seam between CometQL and live browser connections.
//! - [`ws`]: the comet WebSocket protocol: browser events, pipes, call invitations.
//! - [`conference`]: conference naming (SIP number, call pipe) and live membership.
//! - [`sip`]: SIP over WebSocket for JsSIP (REGISTER/INVITE with digest, dialogs), sans-IO core
//!   plus its WebSocket driver.
//! - [`config`]: embedded defaults < `comet.ini` < command-line flags.
//! - [`http`]: health, Prometheus metrics, the JS API and the demo on `[http]`.
//! - [`web`]: the embedded browser files (`cometVideoApi.js`, the demo page).
//! - [`demo`]: the demo page's backend endpoint (CometQL statements as a customer's backend).
//! - [`tls`]: the `--tls-self-signed` certificate.
//! - [`admission`]: connection caps of the TCP listeners (in all and per client address).
//! - [`cluster`]: a head and its media nodes: the head places each conference on a node,
//!   browsers call that node, and the head lists, moderates and hangs up its members.
//! - [`secret`]: constant-time comparison of what clients present.
//! - [`draining`]: taking no new conference, letting the running ones end, then exiting.
//! - [`logging`]: the log output on stderr, text lines or one JSON object per line.
//! - [`app`]: wiring and start-up.
//!
//! Media lives in the workspace crates `comet-sfu` (WebRTC transport), `comet-media` (codecs,
//! RTP, jitter buffer) and `comet-mixer` (mixing and compositing).

pub mod admission;
pub mod app;
pub mod broadcast;
pub mod cluster;
pub mod cometql;
pub mod conference;
pub mod config;
pub mod demo;
pub mod draining;
pub mod http;
pub mod logging;
pub mod names;
pub mod realtime;
pub mod secret;
pub mod sip;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod web;
pub mod ws;
