//! Any bytes as a UDP datagram on the media port, from anyone: the endpoint's demultiplexer
//! and str0m's STUN/DTLS/RTP parsing drop and count it, never panic. The endpoint holds one
//! participant (a Chrome offer; a new one when its connect timeout has closed it) whose STUN
//! requests would come in through the same code; the input's first byte picks the sender's
//! port.

#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use comet_sfu::{AnswerOptions, Endpoint, EndpointConfig};
use libfuzzer_sys::fuzz_target;

const OFFER: &str = include_str!("../../sfu/tests/data/chrome_audio_video.sdp");

struct State {
    ep: Endpoint,
    now: Instant,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let mut ep = Endpoint::new(EndpointConfig {
            candidates: vec!["127.0.0.1:40000".parse().unwrap()],
            ..Default::default()
        })
        .unwrap();
        let now = Instant::now();
        ep.accept_offer(OFFER, AnswerOptions::default(), now).unwrap();
        State { ep, now }
    });
}

fuzz_target!(|data: &[u8]| {
    STATE.with_borrow_mut(|s| {
        // Sent to the media port: the endpoint's own candidate.
        let to = s.ep.config().candidates[0];
        let port = 1024 + data.first().copied().unwrap_or(0) as u16;
        let from = SocketAddr::from(([127, 0, 0, 1], port));
        let before = s.ep.metrics();
        s.ep.handle_datagram(from, to, data, s.now);
        let after = s.ep.metrics();
        assert_eq!(after.datagrams_in, before.datagrams_in + 1);
        assert_eq!(after.panics, 0);
        // A millisecond passes per input; the participant's timers run.
        s.now += Duration::from_millis(1);
        s.ep.handle_timeout(s.now);
        while !matches!(s.ep.poll_output(s.now), comet_sfu::Output::Timeout(_)) {}
        if s.ep.metrics().participants == 0 {
            s.ep.accept_offer(OFFER, AnswerOptions::default(), s.now)
                .unwrap();
        }
    });
});
