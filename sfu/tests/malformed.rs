//! Hostile and broken network input: random bytes, truncated and tampered STUN/DTLS/SRTP
//! datagrams, datagrams from unknown addresses. Dropped and counted, never a panic, and a live
//! session next to it keeps working.

mod common;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use comet_sfu::{AnswerOptions, Endpoint, Event, MediaKind};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use str0m::format::Codec as SCodec;
use str0m::media::{Frequency, MediaTime};

fn unknown() -> SocketAddr {
    "127.0.0.1:49999".parse().unwrap()
}

fn audio_in(net: &Net, i: usize) -> usize {
    let id = net.clients[i].id;
    net.events_of(id)
        .filter(|e| matches!(e, Event::Media(m) if m.kind == MediaKind::Audio))
        .count()
}

fn client_sends_audio(net: &mut Net, i: usize, n: u64) {
    for k in 0..n {
        let now = net.now;
        let c = &mut net.clients[i];
        let w = c.rtc.writer(c.audio).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == SCodec::Opus)
            .unwrap()
            .pt();
        let t = MediaTime::new(k * 960, Frequency::FORTY_EIGHT_KHZ);
        w.write(pt, now, t, vec![0xfc, 1, 2]).unwrap();
        net.advance(Duration::from_millis(20));
    }
}

/// A connected participant that has exchanged some media, and what its client sent.
fn live_session() -> Net {
    let mut net = Net::new(config());
    net.add_client(AnswerOptions::default());
    net.connect_all();
    client_sends_audio(&mut net, 0, 10);
    assert_eq!(audio_in(&net, 0), 10);
    net
}

fn still_alive(net: &mut Net) {
    let before = audio_in(net, 0);
    client_sends_audio(net, 0, 10);
    assert_eq!(audio_in(net, 0), before + 10, "session broken");
    let id = net.clients[0].id;
    assert!(net.ep.is_connected(id));
    assert!(!net.events_of(id).any(|e| matches!(e, Event::Closed(_))));
}

#[test]
fn random_bytes_from_anyone() {
    let net = RefCell::new(live_session());
    let client = net.borrow().clients[0].addr;
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        any::<bool>(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1400),
            // Bias towards each protocol's first-byte range.
            (0u8..4, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(b, mut v)| {
                v.insert(0, b);
                v
            }),
            (20u8..64, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(b, mut v)| {
                v.insert(0, b);
                v
            }),
            (128u8..192, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(b, mut v)| {
                v.insert(0, b);
                v
            }),
        ],
    );
    runner
        .run(&strategy, |(known, bytes)| {
            let mut n = net.borrow_mut();
            let from = if known { client } else { unknown() };
            let now = n.now;
            n.ep.handle_datagram(from, server_addr(), &bytes, now);
            // Whatever it produced is well-formed output.
            while let comet_sfu::Output::Transmit(_) | comet_sfu::Output::Event(..) =
                n.ep.poll_output(now)
            {}
            Ok(())
        })
        .unwrap();
    let mut net = net.into_inner();
    let m = net.ep.metrics();
    assert!(m.datagrams_in >= 3000);
    assert!(m.malformed_dropped > 500, "{m:?}");
    assert!(m.unknown_dropped > 500, "{m:?}");
    assert_eq!(m.panics, 0);
    still_alive(&mut net);
}

#[test]
fn truncated_and_tampered_real_datagrams() {
    let mut net = live_session();
    // Long enough for RTCP reports too.
    net.advance(Duration::from_secs(6));
    let client = net.clients[0].addr;
    let sent = net.clients[0].sent.clone();
    // One sample of each protocol the client spoke: STUN, DTLS, SRTP, SRTCP.
    let pick = |f: &dyn Fn(&[u8]) -> bool| sent.iter().find(|d| f(d)).cloned();
    let samples: Vec<Vec<u8>> = [
        pick(&|d| d[0] < 4),
        pick(&|d| (20..64).contains(&d[0])),
        pick(&|d| (128..192).contains(&d[0]) && !(64..96).contains(&(d[1] & 0x7f))),
        pick(&|d| (128..192).contains(&d[0]) && (64..96).contains(&(d[1] & 0x7f))),
    ]
    .into_iter()
    .map(|d| d.expect("client sent every kind"))
    .collect();

    let now = net.now;
    for d in &samples {
        for from in [client, unknown()] {
            for n in 0..d.len() {
                net.ep.handle_datagram(from, server_addr(), &d[..n], now);
            }
            // Each byte flipped in turn.
            for k in 0..d.len() {
                let mut t = d.clone();
                t[k] ^= 0x5a;
                net.ep.handle_datagram(from, server_addr(), &t, now);
            }
            // Replayed as is.
            net.ep.handle_datagram(from, server_addr(), d, now);
        }
    }
    net.settle();
    let m = net.ep.metrics();
    assert_eq!(m.panics, 0);
    assert!(m.malformed_dropped > 0 && m.unknown_dropped > 0, "{m:?}");
    still_alive(&mut net);
}

#[test]
fn stun_with_wrong_integrity_or_unknown_ufrag() {
    let mut net = live_session();
    let stun = net.clients[0]
        .sent
        .iter()
        .find(|d| d[0] < 4 && d[1] == 1)
        .cloned()
        .expect("a binding request");
    let before = net.ep.metrics().unknown_dropped;
    // Tampered transaction id: integrity fails, from a new address: not learned.
    let mut t = stun.clone();
    t[10] ^= 1;
    let spoofer: SocketAddr = "127.0.0.1:45555".parse().unwrap();
    net.ep.handle_datagram(spoofer, server_addr(), &t, net.now);
    assert_eq!(net.ep.metrics().unknown_dropped, before + 1);
    // The spoofer's address was not learned: its "RTP" goes nowhere.
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
    rtp.extend_from_slice(&[0; 40]);
    net.ep
        .handle_datagram(spoofer, server_addr(), &rtp, net.now);
    assert_eq!(net.ep.metrics().unknown_dropped, before + 2);
    still_alive(&mut net);
}

#[test]
fn datagrams_with_no_participants() {
    let mut ep = Endpoint::new(config()).unwrap();
    let now = Instant::now();
    ep.handle_datagram(unknown(), server_addr(), &[0x80; 64], now);
    ep.handle_datagram(unknown(), server_addr(), &[22; 64], now);
    ep.handle_datagram(unknown(), server_addr(), &[7; 3], now);
    ep.handle_datagram(unknown(), server_addr(), &[], now);
    let m = ep.metrics();
    assert_eq!(
        (m.datagrams_in, m.unknown_dropped, m.malformed_dropped),
        (4, 2, 2)
    );
    assert!(matches!(ep.poll_output(now), comet_sfu::Output::Timeout(_)));
}

proptest! {
    #![proptest_config(Config { cases: 300, failure_persistence: None, ..Config::default() })]

    /// Arbitrary offers never panic and never leave a participant behind on error.
    #[test]
    fn arbitrary_offers(junk in "[a-z=0-9 :/;\\-\r\n]{0,400}", cut in 0usize..2000) {
        let mut ep = Endpoint::new(config()).unwrap();
        let now = Instant::now();
        let _ = ep.accept_offer(&junk, AnswerOptions::default(), now);
        let cut = cut.min(CHROME.len());
        let r = ep.accept_offer(&CHROME[..cut], AnswerOptions::default(), now);
        prop_assert_eq!(ep.metrics().participants, u64::from(r.is_ok()));
        prop_assert_eq!(ep.metrics().panics, 0);
    }
}

/// A STUN binding request with the given attributes (type, value), no integrity unless given.
fn stun_request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    }
    let mut d = vec![0x00, 0x01];
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    d.extend_from_slice(&[9; 12]);
    d.extend_from_slice(&body);
    d
}

#[test]
fn crafted_stun_requests() {
    let mut net = live_session();
    let client = net.clients[0].addr;
    // Our ufrag for this participant, as the client's binding requests carry it.
    let real = net.clients[0]
        .sent
        .iter()
        .find(|d| d[0] < 4 && d[1] == 1)
        .cloned()
        .unwrap();
    let ufrag = {
        let mut rest = &real[20..];
        let mut found = None;
        while rest.len() >= 4 {
            let t = u16::from_be_bytes([rest[0], rest[1]]);
            let l = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            if t == 6 {
                let u = std::str::from_utf8(&rest[4..4 + l]).unwrap();
                found = Some(u.split(':').next().unwrap().to_string());
                break;
            }
            rest = &rest[4 + l.div_ceil(4) * 4..];
        }
        found.unwrap()
    };
    let username = format!("{ufrag}:someone");
    let bogus_integrity = [0u8; 20];
    let cases: Vec<Vec<u8>> = vec![
        stun_request(&[]),
        stun_request(&[(0x0006, username.as_bytes())]),
        stun_request(&[(0x0006, username.as_bytes()), (0x0008, &bogus_integrity)]),
        stun_request(&[(0x0006, b":"), (0x0008, &bogus_integrity)]),
        stun_request(&[(0x0006, &[0xff, 0xfe, b':', 0x80])]),
        stun_request(&[(0x0008, &bogus_integrity), (0x0006, username.as_bytes())]),
        stun_request(&[(0x8028, &[1, 2, 3, 4])]), // FINGERPRINT only
    ];
    let now = net.now;
    for d in &cases {
        for from in [client, unknown()] {
            net.ep.handle_datagram(from, server_addr(), d, now);
        }
    }
    net.settle();
    assert_eq!(net.ep.metrics().panics, 0);
    still_alive(&mut net);
}
