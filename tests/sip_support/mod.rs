//! The JsSIP-like user agent of the SIP tests: the library's [`comet_server::sip::client`]
//! (shared with `tests/common/sip_client.rs` and `comet-loadgen`), whose message reader is
//! independent of the server's parser, so the tests do not check the server against itself;
//! plus a stock SDP offer and an asserting [`assert_jssip_accepts`].

#![allow(dead_code)]

#[allow(unused_imports)]
pub use comet_server::sip::client::{Msg, Session, Ua, auth_param, jssip_accepts, param};

pub const SDP_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=sendrecv\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
a=mid:1\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n";

/// Panics unless JsSIP would accept `resp` (see [`jssip_accepts`]).
pub fn assert_jssip_accepts(resp: &Msg, ua: &Ua) {
    if let Err(e) = jssip_accepts(resp, ua) {
        panic!("JsSIP would drop this response: {e}\n{}", resp.raw);
    }
}
