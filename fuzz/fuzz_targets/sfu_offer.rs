//! Any text as an SDP offer (a SIP INVITE's body) to the WebRTC endpoint: `accept_offer`
//! answers or refuses with an error, never panics (not even inside str0m, where the endpoint
//! would catch it and refuse), and a refused offer leaves no participant behind. Text after a
//! NUL byte is a re-offer for the participant the first offer created (as a SIP re-INVITE).
//! Seeds: `sfu/tests/data/*.sdp`; dictionary: `fuzz/sdp.dict`.

#![no_main]

use std::cell::RefCell;
use std::time::Instant;

use comet_sfu::{AnswerOptions, Direction, Endpoint, EndpointConfig, Output};
use libfuzzer_sys::fuzz_target;

thread_local! {
    // One endpoint for the whole run: a new one generates a DTLS certificate.
    static EP: RefCell<Endpoint> = RefCell::new(
        Endpoint::new(EndpointConfig {
            candidates: vec!["127.0.0.1:40000".parse().unwrap()],
            ..Default::default()
        })
        .unwrap(),
    );
}

fn options(byte: u8) -> AnswerOptions {
    let dir = |b: u8| match b & 3 {
        0 => Direction::SendRecv,
        1 => Direction::SendOnly,
        2 => Direction::RecvOnly,
        _ => Direction::Inactive,
    };
    AnswerOptions {
        audio: dir(byte),
        video: dir(byte >> 2),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&opt, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (offer, reoffer) = match text.split_once('\0') {
        Some((o, r)) => (o, Some(r)),
        None => (&*text, None),
    };
    EP.with_borrow_mut(|ep| {
        let now = Instant::now();
        let before = ep.metrics().participants;
        match ep.accept_offer(offer, options(opt), now) {
            Ok(answer) => {
                assert!(answer.sdp.starts_with("v=0"));
                if let Some(r) = reoffer {
                    let _ = ep.accept_reoffer(answer.participant, r, options(opt >> 4), now);
                }
                ep.close(answer.participant, now).unwrap();
                while !matches!(ep.poll_output(now), Output::Timeout(_)) {}
            }
            Err(_) => assert_eq!(ep.metrics().participants, before),
        }
        assert_eq!(ep.metrics().participants, before);
        assert_eq!(ep.metrics().panics, 0);
    });
});
