//! The seam between SIP and the media side: [`CallHandler`].

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;

use crate::store::{ConferenceRow, DevId, UserId};

/// A call's identity, unique in this process: the connection and the call's number on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId {
    pub conn: u64,
    pub n: u32,
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}", self.conn, self.n)
    }
}

/// Who called which conference. Only built after digest authentication, the dev_id check and
/// the invitation check succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub id: CallId,
    pub dev: DevId,
    pub user: UserId,
    /// The conference name (the middle part of `<dev>*<name>*<profile>`).
    pub conference: String,
    /// The profile the browser dialled (`audio`, `video`, `default`, ...).
    pub profile: String,
    /// The invitation that let this user in.
    pub invitation: ConferenceRow,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    pub user_agent: Option<String>,
    /// The browser's address as the WebSocket connection sees it.
    pub peer: SocketAddr,
}

/// Something the browser signalled during a call (SIP INFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A DTMF digit (`application/dtmf-relay` or `application/dtmf`).
    Dtmf {
        digit: char,
        duration_ms: Option<u32>,
    },
    /// A request for a key frame (`application/media_control+xml` with `picture_fast_update`).
    VideoFastUpdate,
    /// Any other INFO body.
    Info { content_type: String, body: String },
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The browser sent BYE.
    RemoteBye,
    /// The server hung up (registry hangup: kick, end of conference, user deleted, replaced by a
    /// newer call of the same user); the text went out in the BYE's Reason header.
    Hangup(String),
    /// The browser cancelled before the answer.
    Cancelled,
    /// The WebSocket connection closed.
    ConnectionClosed,
    /// No ACK came for the 200 OK.
    AckTimeout,
    /// The media side refused or failed the offer, or did not answer in time.
    MediaFailed(String),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::RemoteBye => f.write_str("remote BYE"),
            EndReason::Hangup(r) => write!(f, "hangup: {r}"),
            EndReason::Cancelled => f.write_str("cancelled"),
            EndReason::ConnectionClosed => f.write_str("connection closed"),
            EndReason::AckTimeout => f.write_str("no ACK"),
            EndReason::MediaFailed(r) => write!(f, "media failed: {r}"),
        }
    }
}

/// Why the media side could not answer an offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The offer cannot be served (no common codec, no ICE, ...): SIP 488.
    #[error("offer not acceptable: {0}")]
    NotAcceptable(String),
    /// No capacity now: SIP 503.
    #[error("media unavailable: {0}")]
    Unavailable(String),
    /// Anything else: SIP 500.
    #[error("media failure: {0}")]
    Failed(String),
}

impl MediaError {
    /// The SIP status that answers the INVITE.
    pub fn status(&self) -> u16 {
        match self {
            MediaError::NotAcceptable(_) => 488,
            MediaError::Unavailable(_) => 503,
            MediaError::Failed(_) => 500,
        }
    }
}

/// The media side of calls. SIP calls it; it never calls SIP (hangups go through the
/// [`ConferenceRegistry`](crate::conference::ConferenceRegistry)).
///
/// Contract:
/// - [`offer`](Self::offer) is called once per call, only for an authenticated, invited user.
/// - [`ended`](Self::ended) is called exactly once for every call whose `offer` was called,
///   whatever the outcome (also when `offer` failed), possibly while `offer` or `reoffer` is
///   still running: an answer that arrives after `ended` is discarded.
/// - `reoffer` and `event` come only between a successful `offer` and `ended`.
#[async_trait]
pub trait CallHandler: Send + Sync + 'static {
    /// A new call with the browser's SDP offer; returns the SDP answer.
    async fn offer(&self, call: CallInfo, sdp: &str) -> Result<String, MediaError>;

    /// A new offer within the call (re-INVITE or UPDATE: hold, unhold, ICE restart); returns the
    /// answer. A failure keeps the call with its previous session (SIP 488/500/503).
    async fn reoffer(&self, call: &CallInfo, sdp: &str) -> Result<String, MediaError>;

    /// An event from the browser (INFO). The default ignores it.
    fn event(&self, call: &CallInfo, event: &CallEvent) {
        let _ = (call, event);
    }

    /// The call is over.
    fn ended(&self, call: &CallInfo, reason: &EndReason);
}
