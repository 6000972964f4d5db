//! The JsSIP-like SIP-over-WebSocket client for tests: the library's
//! [`comet_server::sip::client`] (shared with `comet-loadgen`), re-exported, with a thin
//! [`SipClient`] whose exchanges panic with the SIP transcript instead of returning errors, as
//! a test wants. Everything the library client has (the `ua` field, `recv`, `send`,
//! `transcript`, ...) is reachable through `Deref`.

#![allow(dead_code)]

use std::ops::{Deref, DerefMut};

#[allow(unused_imports)]
pub use comet_server::sip::client::{
    ClientError, Msg, SIP_WAIT, Session, Ua, auth_param, jssip_accepts, param,
};
use tokio::time::Instant;

/// Panics unless JsSIP would accept `resp` (see [`jssip_accepts`]).
pub fn assert_jssip_accepts(resp: &Msg, ua: &Ua) {
    if let Err(e) = jssip_accepts(resp, ua) {
        panic!("JsSIP would drop this response: {e}\n{}", resp.raw);
    }
}

fn ok<T>(r: Result<T, ClientError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One SIP-over-WebSocket connection, as one JsSIP `UA` has it; panics on failures.
pub struct SipClient(comet_server::sip::client::SipClient);

impl Deref for SipClient {
    type Target = comet_server::sip::client::SipClient;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for SipClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl SipClient {
    /// Opens `ws://addr/` with the `sip` subprotocol.
    pub async fn connect(addr: std::net::SocketAddr, ua: Ua) -> SipClient {
        SipClient(ok(
            comet_server::sip::client::SipClient::connect(addr, ua).await
        ))
    }

    /// The next final response to a request `method`, checked to be `status`.
    pub async fn expect_final(&mut self, method: &str, status: u16) -> Msg {
        ok(self.0.expect_final(method, status).await)
    }

    /// Waits for a request `method` from the server (other requests are put aside).
    pub async fn expect_request(&mut self, method: &str, deadline: Instant) -> Msg {
        ok(self.0.expect_request(method, deadline).await)
    }

    /// REGISTER → 401 → REGISTER with credentials; the final answer.
    pub async fn register(&mut self) -> Msg {
        ok(self.0.register().await)
    }

    /// INVITE → 401 → ACK → INVITE with credentials; the session and the final answer.
    pub async fn invite(&mut self, number: &str, sdp: &str) -> (Session, Msg) {
        ok(self.0.invite(number, sdp).await)
    }

    /// An answered call: INVITE with credentials, 200 OK with an SDP answer, ACK.
    pub async fn call(&mut self, number: &str, sdp: &str) -> (Session, String) {
        ok(self.0.call(number, sdp).await)
    }

    /// Hangs up: BYE, 200 OK.
    pub async fn bye(&mut self, s: &mut Session) {
        ok(self.0.bye(s).await)
    }
}
