//! Fuzz-style property tests (proptest, part of the normal test suite): random bytes and mutated
//! real messages never panic the parser, whatever parses serializes to something that parses the
//! same, and the whole core survives random conversations with mutated messages while keeping its
//! promises (every response parses; `Ended` exactly once per offered call).

mod sip_support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use comet_server::sip::auth::DigestAuth;
use comet_server::sip::core::{Action, Connection, CoreConfig, Limits, LookupResult, Now};
use comet_server::sip::message::{Message, parse};
use comet_server::sip::{CallId, MediaError};
use comet_server::store::ConferenceRow;
use proptest::prelude::*;
use sip_support::{Msg, SDP_OFFER, Session, Ua};

const HOST: &str = "sip.test";

fn corpus() -> Vec<String> {
    let mut ua = Ua::new("000000123", "hash-of-123", HOST, 5);
    let mut s = ua.new_session("0*101*video");
    let invite = ua.invite(&mut s, None, SDP_OFFER);
    let response =
        "SIP/2.0 200 OK\r\nv: SIP/2.0/WS a.invalid;branch=z9hG4bK1;rport=5;received=1.2.3.4\r\n\
        f: <sip:a@b>;tag=1\r\nt: \"Bob \\\"B\\\"\" <sip:b@c>;tag=2\r\ni: x@y\r\nCSeq: 9 BYE\r\n\
        m: <sip:[::1]:5060;transport=ws>;expires=60, <sip:q@r>\r\nl: 0\r\n\r\n"
            .to_string();
    let folded = "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/WSS a.invalid\r\n ;branch=z9hG4bK2\r\n\
        From: sip:a@h;tag=3\r\nTo: sip:h\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\
        Authorization: Digest username=\"a\", realm=\"h\", nonce=\"n\", uri=\"sip:h\",\r\n\
        \tresponse=\"00000000000000000000000000000000\", qop=auth, nc=00000001, cnonce=\"c\"\r\n\r\n"
        .to_string();
    vec![ua.register(600, None), invite, response, folded]
}

/// Bytes that tend to matter to a SIP parser.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b':'),
        Just(b';'),
        Just(b','),
        Just(b'"'),
        Just(b'<'),
        Just(b'>'),
        Just(b'%'),
        Just(b' '),
        Just(b'\t'),
        Just(b'='),
        Just(b'@'),
        Just(b'['),
        Just(0),
        Just(0xff),
        any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    DuplicateLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), interesting_byte()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), interesting_byte()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..40).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    if data.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip(p, b) => {
            let i = p % data.len();
            data[i] = b;
        }
        Mutation::Insert(p, b) => {
            let i = p % (data.len() + 1);
            data.insert(i, b);
        }
        Mutation::Delete(p, n) => {
            let i = p % data.len();
            let end = (i + n).min(data.len());
            data.drain(i..end);
        }
        Mutation::Truncate(p) => data.truncate(p % data.len()),
        Mutation::DuplicateLine(p) => {
            let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            let line = lines[p % lines.len()].to_vec();
            let at = data
                .iter()
                .position(|&b| b == b'\n')
                .map_or(data.len(), |i| i + 1);
            let mut ins = line;
            ins.push(b'\n');
            data.splice(at..at, ins);
        }
    }
}

/// Serialization is stable: what parses re-parses to the same message.
fn check_roundtrip(data: &[u8]) {
    if let Ok(m) = parse(data) {
        let text = m.to_string();
        let again =
            parse(text.as_bytes()).unwrap_or_else(|e| panic!("re-parse failed ({e}) for {text:?}"));
        assert_eq!(again.to_string(), text);
        match (&m, &again) {
            (Message::Request(a), Message::Request(b)) => {
                assert_eq!((&a.method, &a.uri, &a.body), (&b.method, &b.uri, &b.body))
            }
            (Message::Response(a), Message::Response(b)) => {
                assert_eq!((a.status, &a.body), (b.status, &b.body))
            }
            _ => panic!("kind changed"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_roundtrip(&data);
    }

    #[test]
    fn random_text_never_panics(text in "[ -~\r\n\t]{0,600}") {
        check_roundtrip(text.as_bytes());
        let with_start = format!("INVITE sip:a@b SIP/2.0\r\n{text}");
        check_roundtrip(with_start.as_bytes());
    }

    #[test]
    fn mutated_messages_never_panic(
        which in 0usize..4,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut data = corpus()[which].clone().into_bytes();
        for m in &mutations {
            apply(&mut data, m);
        }
        check_roundtrip(&data);
    }
}

// ----- the whole core ------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Register,
    Invite,
    Ack,
    Bye,
    Cancel,
    Reinvite,
    Info,
    Options,
    Answer(bool),
    Hangup,
    Timer(u64),
    Garbage(Vec<u8>),
}

fn step() -> impl Strategy<Value = (Step, Option<Mutation>)> {
    let s = prop_oneof![
        3 => Just(Step::Register),
        4 => Just(Step::Invite),
        2 => Just(Step::Ack),
        2 => Just(Step::Bye),
        1 => Just(Step::Cancel),
        2 => Just(Step::Reinvite),
        2 => Just(Step::Info),
        1 => Just(Step::Options),
        4 => any::<bool>().prop_map(Step::Answer),
        1 => Just(Step::Hangup),
        1 => (0u64..40).prop_map(Step::Timer),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Step::Garbage),
    ];
    (s, proptest::option::weighted(0.3, mutation()))
}

struct World {
    conn: Connection,
    now: Now,
    ua: Ua,
    session: Option<Session>,
    last_challenge: Option<Msg>,
    pending: Vec<(CallId, u64)>,
    offered: HashSet<CallId>,
    ended: HashMap<CallId, usize>,
}

impl World {
    fn new() -> World {
        let cfg = CoreConfig {
            host: HOST.into(),
            auth: Arc::new(DigestAuth::new(HOST, [9; 32])),
            limits: Limits::default(),
            stats: Default::default(),
            gate: None,
            node: None,
        };
        World {
            conn: Connection::new(Arc::new(cfg), 1, "127.0.0.1:4000".parse().unwrap(), false),
            now: Now {
                mono: std::time::Instant::now(),
                unix: 1_800_000_000,
            },
            ua: Ua::new("000000123", "hash-of-123", HOST, 11),
            session: None,
            last_challenge: None,
            pending: Vec::new(),
            offered: HashSet::new(),
            ended: HashMap::new(),
        }
    }

    fn take(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(text) => {
                    if text == "\r\n" {
                        continue;
                    }
                    let parsed = parse(text.as_bytes());
                    assert!(parsed.is_ok(), "we sent something unparseable: {text:?}");
                    let m = Msg::parse(&text);
                    match m.status() {
                        Some(401) => self.last_challenge = Some(m),
                        Some(200) if m.cseq().1 == "INVITE" => {
                            if let Some(s) = self.session.as_mut() {
                                self.ua.established(s, &m);
                            }
                        }
                        _ => {}
                    }
                }
                Action::Lookup(l) => {
                    let invited = l.conference.as_deref() == Some("101");
                    let result = LookupResult::Found {
                        hash: (l.dev, l.user)
                            .eq(&(0, 123))
                            .then(|| "hash-of-123".to_string()),
                        invitation: invited.then(|| ConferenceRow {
                            name: "101".into(),
                            user_id: 123,
                            caller_id: 0,
                            message: String::new(),
                            profile: "video".into(),
                            stream: String::new(),
                            node: String::new(),
                            time: 0,
                        }),
                    };
                    let more = self.conn.on_lookup(l.id, result, self.now);
                    self.take(more);
                }
                Action::Offer { call, token, .. } => {
                    assert!(self.offered.insert(call.id), "one offer per call");
                    self.pending.push((call.id, token));
                }
                Action::Reoffer { call, token, .. } => {
                    assert!(self.offered.contains(&call.id));
                    assert!(!self.ended.contains_key(&call.id), "reoffer after the end");
                    self.pending.push((call.id, token));
                }
                Action::Ended { call, .. } => {
                    assert!(self.offered.contains(&call.id), "ended without an offer");
                    *self.ended.entry(call.id).or_default() += 1;
                    assert_eq!(self.ended[&call.id], 1, "ended exactly once");
                }
                Action::Answered { call } | Action::Event { call, .. } => {
                    assert!(!self.ended.contains_key(&call.id));
                }
                Action::Registered { .. } | Action::Unregistered { .. } => {}
            }
        }
    }

    fn message(&mut self, step: &Step) -> Option<Vec<u8>> {
        let ch = self.last_challenge.clone();
        let text = match step {
            Step::Register => self.ua.register(600, ch.as_ref()),
            Step::Invite => {
                let mut s = match (&self.session, &ch) {
                    (Some(s), Some(_)) if s.to_tag.is_none() => s.clone(),
                    _ => self.ua.new_session("0*101*video"),
                };
                let t = self.ua.invite(&mut s, ch.as_ref(), SDP_OFFER);
                self.session = Some(s);
                t
            }
            Step::Ack => {
                let mut s = self.session.clone()?;
                let t = match &ch {
                    Some(c) if s.to_tag.is_none() => self.ua.ack_failure(&s, c),
                    _ => self.ua.in_dialog(&mut s, "ACK", "", ""),
                };
                self.session = Some(s);
                t
            }
            Step::Bye | Step::Reinvite | Step::Info | Step::Options => {
                let mut s = self.session.clone()?;
                let t = match step {
                    Step::Bye => self.ua.in_dialog(&mut s, "BYE", "", ""),
                    Step::Reinvite => self.ua.in_dialog(
                        &mut s,
                        "INVITE",
                        "Content-Type: application/sdp\r\n",
                        SDP_OFFER,
                    ),
                    Step::Info => self.ua.in_dialog(
                        &mut s,
                        "INFO",
                        "Content-Type: application/dtmf-relay\r\n",
                        "Signal=1\r\nDuration=100\r\n",
                    ),
                    _ => self.ua.in_dialog(&mut s, "OPTIONS", "", ""),
                };
                self.session = Some(s);
                t
            }
            Step::Cancel => self.ua.cancel(self.session.as_ref()?),
            Step::Garbage(g) => return Some(g.clone()),
            Step::Answer(_) | Step::Hangup | Step::Timer(_) => return None,
        };
        Some(text.into_bytes())
    }

    fn run(&mut self, step: &Step, mutation: &Option<Mutation>) {
        match step {
            Step::Answer(ok) => {
                if self.pending.is_empty() {
                    return;
                }
                let (call, token) = self.pending.remove(0);
                let r = if *ok {
                    Ok("v=0\r\n".to_string())
                } else {
                    Err(MediaError::Failed("x".into()))
                };
                let a = self.conn.on_answer(call, token, r, self.now);
                self.take(a);
            }
            Step::Hangup => {
                if let Some(id) = self.conn.calls().first().copied() {
                    let a = self.conn.hangup(id, "fuzz", self.now);
                    self.take(a);
                }
            }
            Step::Timer(secs) => {
                self.now = self.now.after(Duration::from_secs(*secs));
                let a = self.conn.on_timer(self.now);
                self.take(a);
            }
            _ => {
                let Some(mut data) = self.message(step) else {
                    return;
                };
                if let Some(m) = mutation {
                    apply(&mut data, m);
                }
                let a = self.conn.on_message(&data, self.now);
                self.take(a);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_core_survives_random_conversations(steps in proptest::collection::vec(step(), 1..40)) {
        let mut w = World::new();
        for (s, m) in &steps {
            w.run(s, m);
        }
        let a = w.conn.close();
        w.take(a);
        // Every offered call ended exactly once.
        for id in &w.offered {
            prop_assert_eq!(w.ended.get(id).copied(), Some(1));
        }
        prop_assert!(w.conn.calls().is_empty());
    }
}

/// Cases the properties above once found.
#[test]
fn regressions() {
    // A multi-byte character across byte 4 of the start line.
    check_roundtrip(&[128, 0, 10, 11, 14, 1, 194, 128]);
    check_roundtrip("NWī'sI\r\n\r\n".as_bytes());
    // A request with its From twice is answered with a 400 that has it once (and parses).
    let mut w = World::new();
    w.run(&Step::Invite, &None);
    let mut ua = Ua::new("000000123", "hash-of-123", HOST, 1);
    let mut s = ua.new_session("0*101*video");
    let text = ua.invite(&mut s, None, SDP_OFFER);
    let from = text.lines().find(|l| l.starts_with("From:")).unwrap();
    let twice = text.replacen(from, &format!("{from}\r\n{from}"), 1);
    let out = w.conn.on_message(twice.as_bytes(), w.now);
    w.take(out);
    // A broken Via cannot be answered: dropped, not echoed.
    let broken = text.replace(";branch=", ";branch=\"");
    let out = w.conn.on_message(broken.as_bytes(), w.now);
    assert!(out.is_empty(), "{out:?}");
}
