//! Any bytes from the RTMP server after the handshake: the publisher (our chunk check, then
//! `rml_rtmp`'s session) answers or returns an error, never panics out or overflows the stack.
//! The first byte, if any, says how the rest is split into reads.
//!
//! `rml_rtmp` itself panics on some malformed messages; the publisher catches those around
//! the session and makes them its error. libFuzzer's panic hook would abort even on a caught
//! panic, so this target puts back a silent hook: a panic that escapes the publisher still
//! aborts (libfuzzer-sys aborts on any panic out of the target) and is reported.

#![no_main]

use comet_server::broadcast::rtmp::{Publisher, RtmpUrl};
use libfuzzer_sys::fuzz_target;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

fuzz_target!(|data: &[u8]| {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let url = RtmpUrl::parse("rtmp://127.0.0.1/app/stream").unwrap();
    let (mut publisher, c01) = Publisher::new(url).unwrap();
    let mut server = Handshake::new(PeerType::Server);
    let s012 = match server.process_bytes(&c01).unwrap() {
        HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
        HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
    };
    publisher.feed(&s012).unwrap();
    for part in data.chunks(split.max(1) as usize) {
        if publisher.feed(part).is_err() {
            break;
        }
    }
});
