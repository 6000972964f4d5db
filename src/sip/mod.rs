//! SIP over WebSocket (RFC 7118) for JsSIP in `cometVideoApi.js` (contract section 4).
//!
//! # Contract
//!
//! Sans-IO (no sockets, no tasks, no clock of their own; time comes in as [`core::Now`]):
//! - [`message`]: parse and serialize SIP messages. Malformed input is an error value with the
//!   status to answer (400/505/513) when an answer is possible; never a panic.
//! - [`auth`]: digest authentication (MD5, `qop=auth`) with stateless HMAC-signed nonces that
//!   expire after 5 minutes (`stale=true`) and per-nonce nonce-count replay protection.
//! - [`ident`]: the SIP user of a comet user (`<dev_id as 6 digits><user_id>`) and the conference
//!   number `<dev_id>*<name>*<profile>`.
//! - [`core`]: [`core::Connection`], the state machine of one WebSocket connection: transactions
//!   (100 Trying, CANCEL → 487, ACK of non-2xx answers), dialogs (ACK, BYE either way with a
//!   `Reason` from us, re-INVITE/UPDATE, INFO, OPTIONS), registrations and deadlines. Input:
//!   messages, lookup results, SDP answers, hangups, timer ticks, close. Output: [`core::Action`]s
//!   (send this text, read the store, ask the media side, the call was answered/ended, ...).
//!
//! Who may call: REGISTER and INVITE are digest-challenged (realm = `[sip] host`, password = the
//! users_auth hash). A wrong password and an unknown user look the same (403). An INVITE is taken
//! only if the user's dev_id equals the number's and a `conference` row invites that user to that
//! conference (else 403); only then is [`CallHandler::offer`] called.
//!
//! The driver, [`server`], owns the IO: a TCP (optionally TLS) listener, the WebSocket handshake
//! (subprotocol `sip` required, else HTTP 400 with a reason), one task per connection that feeds
//! frames to its [`core::Connection`] and carries out the actions: store lookups, calls into the
//! [`CallHandler`], conference membership in the
//! [`ConferenceRegistry`](crate::conference::ConferenceRegistry) (an answered call joins; the
//! registry's hangup makes the connection send BYE with a `Reason` header). When the connection
//! closes, its calls end (the handler hears `ended`) and its registrations go.

pub mod auth;
pub mod client;
pub mod core;
pub mod handler;
pub mod ident;
pub mod message;
pub mod server;

pub use handler::{CallEvent, CallHandler, CallId, CallInfo, EndReason, MediaError};
pub use server::{Directory, SipContext, serve};
