//! Any bytes as the comet WebSocket protocol sees them (request path, frame text, token): the
//! URL, command, subscription and JWT parsers answer and never panic; a parsed session keeps
//! at most 600 bytes, cut at a character boundary.

#![no_main]

use comet_server::ws::{jwt, protocol, url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(tail) = url::ws_tail(&text) {
        if let Ok(p) = url::parse(tail) {
            assert!(p.session.len() <= 600);
        }
    }
    let _ = url::parse(&text);
    let _ = protocol::parse(&text);
    let subs = protocol::subscriptions(&text);
    assert!(subs.pipes.len() <= protocol::MAX_SUBSCRIPTIONS);
    let _ = protocol::escape(&text);
    let _ = protocol::valid_marker(&text);
    let _ = jwt::verify(&text, "password", 0, 1, 0);
});
