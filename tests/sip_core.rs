//! The sans-IO SIP core driven directly: every flow JsSIP uses, the refusals, and the deadlines,
//! with a fake store and a fake media side, on a simulated clock.

mod sip_support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use comet_server::admission::{AUTH_REFILL, ConnLimits, Gate};
use comet_server::sip::auth::DigestAuth;
use comet_server::sip::core::{
    Action, Connection, CoreConfig, Limits, LookupResult, Now, SipStats,
};
use comet_server::sip::{CallEvent, CallInfo, EndReason, MediaError};
use comet_server::store::ConferenceRow;
use sip_support::{Msg, SDP_OFFER, Session, Ua, assert_jssip_accepts};

const HOST: &str = "sip.test";
const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=comet\r\nt=0 0\r\n";

struct H {
    conn: Connection,
    now: Now,
    users: HashMap<(i64, i64), String>,
    invites: HashSet<(i64, String, i64)>,
    stats: Arc<SipStats>,
    /// Resolve lookups at once.
    auto_lookup: bool,
    held_lookups: Vec<u64>,
}

#[derive(Default, Debug)]
struct Out {
    sent: Vec<Msg>,
    actions: Vec<Action>,
}

impl Out {
    fn statuses(&self) -> Vec<u16> {
        self.sent.iter().filter_map(Msg::status).collect()
    }
    fn last(&self) -> &Msg {
        self.sent.last().expect("something was sent")
    }
    fn offer(&self) -> Option<(CallInfo, String, u64)> {
        self.actions.iter().find_map(|a| match a {
            Action::Offer { call, sdp, token } => Some((call.clone(), sdp.clone(), *token)),
            _ => None,
        })
    }
    fn reoffer(&self) -> Option<(CallInfo, String, u64)> {
        self.actions.iter().find_map(|a| match a {
            Action::Reoffer { call, sdp, token } => Some((call.clone(), sdp.clone(), *token)),
            _ => None,
        })
    }
    fn ended(&self) -> Vec<(EndReason, bool)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Ended {
                    reason, answered, ..
                } => Some((reason.clone(), *answered)),
                _ => None,
            })
            .collect()
    }
}

fn row(name: &str, user: i64) -> ConferenceRow {
    ConferenceRow {
        name: name.into(),
        user_id: user,
        caller_id: 0,
        message: String::new(),
        profile: "video".into(),
        stream: String::new(),
        node: format!("{HOST}:7443"),
        time: 0,
    }
}

impl H {
    fn new() -> H {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> H {
        Self::with_config(limits, None, "127.0.0.1:50000")
    }

    /// A connection from `peer`, whose listener's gate is `gate`.
    fn with_config(limits: Limits, gate: Option<Arc<Gate>>, peer: &str) -> H {
        let stats = Arc::new(SipStats::default());
        let cfg = CoreConfig {
            host: HOST.into(),
            auth: Arc::new(DigestAuth::new(HOST, [3; 32])),
            limits,
            stats: stats.clone(),
            gate,
            node: None,
        };
        let peer: SocketAddr = peer.parse().unwrap();
        let mut users = HashMap::new();
        users.insert((0, 123), "hash-of-123".to_string());
        users.insert((7, 5), "hash-of-7-5".to_string());
        let mut invites = HashSet::new();
        invites.insert((0, "101".to_string(), 123));
        invites.insert((7, "room".to_string(), 5));
        H {
            conn: Connection::new(Arc::new(cfg), 1, peer, false),
            now: Now {
                mono: std::time::Instant::now(),
                unix: 1_700_000_000,
            },
            users,
            invites,
            stats,
            auto_lookup: true,
            held_lookups: Vec::new(),
        }
    }

    fn take(&mut self, actions: Vec<Action>, out: &mut Out) {
        for a in actions {
            match a {
                Action::Send(text) => out.sent.push(Msg::parse(&text)),
                Action::Lookup(l) if self.auto_lookup => {
                    let result = self.lookup_result(l.dev, l.user, l.conference.as_deref());
                    let more = self.conn.on_lookup(l.id, result, self.now);
                    self.take(more, out);
                }
                Action::Lookup(l) => self.held_lookups.push(l.id),
                other => out.actions.push(other),
            }
        }
    }

    fn lookup_result(&self, dev: i64, user: i64, conf: Option<&str>) -> LookupResult {
        LookupResult::Found {
            hash: self.users.get(&(dev, user)).cloned(),
            invitation: conf
                .filter(|c| self.invites.contains(&(dev, c.to_string(), user)))
                .map(|c| row(c, user)),
        }
    }

    fn feed(&mut self, text: &str) -> Out {
        let actions = self.conn.on_message(text.as_bytes(), self.now);
        let mut out = Out::default();
        self.take(actions, &mut out);
        out
    }

    fn answer(&mut self, call: &CallInfo, token: u64, r: Result<String, MediaError>) -> Out {
        let actions = self.conn.on_answer(call.id, token, r, self.now);
        let mut out = Out::default();
        self.take(actions, &mut out);
        out
    }

    fn advance(&mut self, d: Duration) -> Out {
        self.now = self.now.after(d);
        let actions = self.conn.on_timer(self.now);
        let mut out = Out::default();
        self.take(actions, &mut out);
        out
    }

    /// REGISTER → 401 → REGISTER with credentials → 200.
    fn register(&mut self, ua: &mut Ua) -> Msg {
        let r = self.feed(&ua.register(600, None));
        assert_eq!(r.statuses(), [401]);
        let ch = r.last().clone();
        let r = self.feed(&ua.register(600, Some(&ch)));
        r.last().clone()
    }

    /// INVITE → 100, 401 → ACK → INVITE with credentials → 100 (→ offer).
    fn invite(&mut self, ua: &mut Ua, number: &str) -> (Session, Out) {
        let mut s = ua.new_session(number);
        let r = self.feed(&ua.invite(&mut s, None, SDP_OFFER));
        assert_eq!(r.statuses(), [100, 401], "{:?}", r.sent);
        for m in &r.sent {
            assert_jssip_accepts(m, ua);
        }
        let ch = r.last().clone();
        assert!(
            self.feed(&ua.ack_failure(&s, &ch)).sent.is_empty(),
            "ACK absorbed"
        );
        let r = self.feed(&ua.invite(&mut s, Some(&ch), SDP_OFFER));
        (s, r)
    }

    /// A whole answered and acknowledged call.
    fn call(&mut self, ua: &mut Ua) -> (Session, CallInfo) {
        let (mut s, r) = self.invite(ua, "0*101*video");
        assert_eq!(r.statuses(), [100]);
        let (call, sdp, token) = r.offer().expect("offer after auth and invitation");
        assert_eq!(sdp, SDP_OFFER);
        let r = self.answer(&call, token, Ok(ANSWER.into()));
        assert_eq!(r.statuses(), [200]);
        let ok = r.last().clone();
        assert_jssip_accepts(&ok, ua);
        assert_eq!(ok.h("content-type"), Some("application/sdp"));
        assert_eq!(ok.body, ANSWER);
        assert!(matches!(r.actions[..], [Action::Answered { .. }]));
        ua.established(&mut s, &ok);
        assert!(
            self.feed(&ua.in_dialog(&mut s, "ACK", "", ""))
                .sent
                .is_empty()
        );
        (s, call)
    }
}

fn ua() -> Ua {
    Ua::new("000000123", "hash-of-123", HOST, 1)
}

#[test]
fn register_digest_flow_as_jssip_does_it() {
    let mut h = H::new();
    let mut ua = ua();
    let r = h.feed(&ua.register(600, None));
    let ch = r.last();
    assert_eq!(ch.status(), Some(401));
    assert_jssip_accepts(ch, &ua);
    let www = ch.h("www-authenticate").unwrap();
    assert!(www.starts_with("Digest "), "{www}");
    assert!(
        www.contains("algorithm=MD5"),
        "JsSIP compares it case-sensitively: {www}"
    );
    assert!(www.contains("qop=\"auth\""), "{www}");
    assert_eq!(
        ch.auth_param("www-authenticate", "realm").as_deref(),
        Some(HOST)
    );
    assert!(ch.to_tag().is_some());
    assert!(ch.h("via").unwrap().contains("received=127.0.0.1"));

    let ok = h.register(&mut ua);
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    assert_jssip_accepts(&ok, &ua);
    // JsSIP looks for a Contact with its own user and reads its expires.
    let contact = ok.h("contact").expect("Contact in the 200");
    assert!(
        contact.contains(&format!("sip:{}@", ua.contact_user)),
        "{contact}"
    );
    assert_eq!(
        sip_support::param(contact, "expires").as_deref(),
        Some("600")
    );
    assert_eq!(h.conn.registered(), [(0, 123)]);

    // Un-REGISTER (Expires 0).
    let r = h.feed(&ua.register(0, None));
    let ch = r.last().clone();
    let r = h.feed(&ua.register(0, Some(&ch)));
    assert_eq!(r.statuses(), [200]);
    assert!(r.last().h("contact").is_none());
    assert!(h.conn.registered().is_empty());
    assert!(matches!(
        r.actions[..],
        [Action::Unregistered { dev: 0, user: 123 }]
    ));
}

#[test]
fn register_refusals() {
    let mut h = H::new();
    let mut bad = Ua::new("000000123", "not-the-hash", HOST, 2);
    assert_eq!(h.register(&mut bad).status(), Some(403));
    let mut unknown = Ua::new("000000999", "anything", HOST, 3);
    assert_eq!(h.register(&mut unknown).status(), Some(403));
    let mut not_a_user = Ua::new("alice", "x", HOST, 4);
    assert_eq!(h.register(&mut not_a_user).status(), Some(403));
    assert!(h.conn.registered().is_empty());
    assert_eq!(h.stats.forbidden.load(Ordering::Relaxed), 3);

    // Someone else's address of record: the To user differs from the authenticated user.
    let mut ua = ua();
    let r = h.feed(&ua.register(600, None));
    let ch = r.last().clone();
    let text = ua
        .register(600, Some(&ch))
        .replace("To: <sip:000000123@", "To: <sip:000000124@");
    assert_eq!(h.feed(&text).statuses(), [403]);

    // Too short an interval.
    let r = h.feed(&ua.register(10, None));
    let ch = r.last().clone();
    let r = h.feed(&ua.register(10, Some(&ch)));
    assert_eq!(r.statuses(), [423]);
    assert_eq!(r.last().h("min-expires"), Some("60"));

    // At most 16 contacts per connection: 15 more than the UA's own fit, one more does not,
    // in one REGISTER or over several.
    let more = |from: usize, n: usize| -> String {
        (from..from + n)
            .map(|i| format!("<sip:c{i}@x.invalid;transport=ws>, "))
            .collect()
    };
    // REGISTER (challenged, then with credentials) with `extra` contacts before the UA's own.
    let mut register_with = |extra: &str| {
        let r = h.feed(&ua.register(600, None));
        let ch = r.last().clone();
        let text = ua.register(600, Some(&ch));
        h.feed(&text.replacen("Contact: ", &format!("Contact: {extra}"), 1))
    };
    assert_eq!(register_with(&more(0, 16)).statuses(), [403]);
    let r = register_with(&more(0, 15));
    assert_eq!(r.statuses(), [200]);
    let listed: usize = r
        .last()
        .all("contact")
        .iter()
        .map(|v| v.matches("<sip:").count())
        .sum();
    assert_eq!(listed, 16, "{:?}", r.last());
    assert_eq!(register_with(&more(15, 1)).statuses(), [403]);
    // Re-registering the same contacts is not growth.
    assert_eq!(register_with(&more(0, 15)).statuses(), [200]);
}

#[test]
fn replayed_and_stale_credentials_are_challenged_again() {
    let mut h = H::new();
    let mut ua = ua();
    let r = h.feed(&ua.register(600, None));
    let ch = r.last().clone();
    let signed = ua.register(600, Some(&ch));
    assert_eq!(h.feed(&signed).statuses(), [200]);
    // The very same request again (same nonce, same nc): a replay.
    let r = h.feed(&signed);
    assert_eq!(r.statuses(), [401]);
    assert_eq!(
        r.last().auth_param("www-authenticate", "stale").as_deref(),
        Some("true")
    );

    // A nonce older than five minutes.
    let r = h.feed(&ua.register(600, None));
    let ch = r.last().clone();
    h.now = h.now.after(Duration::from_secs(301));
    let r = h.feed(&ua.register(600, Some(&ch)));
    assert_eq!(r.statuses(), [401]);
    assert_eq!(
        r.last().auth_param("www-authenticate", "stale").as_deref(),
        Some("true")
    );
    // JsSIP retries once with the fresh nonce.
    let ch = r.last().clone();
    assert_eq!(h.feed(&ua.register(600, Some(&ch))).statuses(), [200]);
}

#[test]
fn invite_answer_ack_bye() {
    let mut h = H::new();
    let mut ua = ua();
    let (mut s, call) = h.call(&mut ua);
    assert_eq!((call.dev, call.user), (0, 123));
    assert_eq!(call.conference, "101");
    assert_eq!(call.profile, "video");
    assert_eq!(call.invitation.user_id, 123);
    assert_eq!(call.user_agent.as_deref(), Some("JsSIP 3.10.0"));
    assert_eq!(h.conn.calls(), [call.id]);

    let r = h.feed(&ua.in_dialog(&mut s, "BYE", "", ""));
    assert_eq!(r.statuses(), [200]);
    assert_jssip_accepts(r.last(), &ua);
    assert_eq!(r.ended(), [(EndReason::RemoteBye, true)]);
    assert!(h.conn.calls().is_empty());
    // A second BYE finds no dialog.
    assert_eq!(
        h.feed(&ua.in_dialog(&mut s, "BYE", "", "")).statuses(),
        [481]
    );
}

#[test]
fn invite_refusals_never_reach_the_media_side() {
    let mut h = H::new();

    // Wrong password.
    let mut bad = Ua::new("000000123", "wrong", HOST, 5);
    let (_, r) = h.invite(&mut bad, "0*101*video");
    assert_eq!(r.statuses(), [100, 403]);
    assert!(r.offer().is_none());

    // Right password, no invitation to that conference.
    let mut ua = ua();
    let (s, r) = h.invite(&mut ua, "0*102*video");
    assert_eq!(r.statuses(), [100, 403]);
    assert!(r.offer().is_none());
    assert!(r.last().h("warning").unwrap().contains("not invited"));
    // Its ACK is absorbed.
    assert!(h.feed(&ua.ack_failure(&s, r.last())).sent.is_empty());

    // Another developer's conference (dev 7 has a room where user 5 of dev 7 is invited).
    let (_, r) = h.invite(&mut ua, "7*room*video");
    assert_eq!(r.statuses(), [100, 403]);
    assert!(r.offer().is_none());

    // Not a conference number.
    let mut s = ua.new_session("alice");
    let r = h.feed(&ua.invite(&mut s, None, SDP_OFFER));
    assert_eq!(r.statuses(), [100, 404]);

    // No SDP offer.
    let mut s = ua.new_session("0*101*video");
    let r = h.feed(&ua.invite(&mut s, None, ""));
    assert_eq!(r.statuses(), [100, 488]);

    // Unknown user.
    let mut nobody = Ua::new("000000777", "x", HOST, 6);
    let (_, r) = h.invite(&mut nobody, "0*101*video");
    assert_eq!(r.statuses(), [100, 403]);
    assert!(r.offer().is_none());
    assert!(h.conn.calls().is_empty());
}

#[test]
fn the_invited_user_of_another_dev_gets_in_to_their_own_room_only() {
    let mut h = H::new();
    let mut ua7 = Ua::new("0000075", "hash-of-7-5", HOST, 7);
    let (_, r) = h.invite(&mut ua7, "7*room*audio");
    let (call, _, _) = r.offer().expect("invited");
    assert_eq!(
        (call.dev, call.user, call.profile.as_str()),
        (7, 5, "audio")
    );
    let (_, r) = h.invite(&mut ua7, "0*101*video");
    assert_eq!(r.statuses(), [100, 403]);
}

#[test]
fn cancel_before_answer() {
    let mut h = H::new();
    let mut ua = ua();
    let (s, r) = h.invite(&mut ua, "0*101*video");
    let (call, _, token) = r.offer().unwrap();
    let r = h.feed(&ua.cancel(&s));
    assert_eq!(r.statuses(), [200, 487], "{:?}", r.sent);
    assert_eq!(r.sent[0].cseq().1, "CANCEL");
    assert_eq!(r.sent[1].cseq().1, "INVITE");
    assert_eq!(r.sent[0].to_tag(), r.sent[1].to_tag());
    assert_eq!(r.ended(), [(EndReason::Cancelled, false)]);
    assert!(h.feed(&ua.ack_failure(&s, &r.sent[1])).sent.is_empty());
    // The media side's late answer is dropped.
    let r = h.answer(&call, token, Ok(ANSWER.into()));
    assert!(r.sent.is_empty() && r.actions.is_empty());

    // CANCEL while the store is still being read: no offer ever.
    h.auto_lookup = false;
    let (s, r) = h.invite(&mut ua, "0*101*video");
    assert_eq!(r.statuses(), [100]);
    assert_eq!(h.held_lookups.len(), 1);
    let r = h.feed(&ua.cancel(&s));
    assert_eq!(r.statuses(), [200, 487]);
    let id = h.held_lookups.pop().unwrap();
    let late = h.lookup_result(0, 123, Some("101"));
    assert!(h.conn.on_lookup(id, late, h.now).is_empty());

    // CANCEL of nothing.
    assert_eq!(h.feed(&ua.cancel(&s)).statuses(), [481]);
}

#[test]
fn reinvite_hold_info_options_and_unknown_methods() {
    let mut h = H::new();
    let mut ua = ua();
    let (mut s, _) = h.call(&mut ua);

    let hold = SDP_OFFER.replace("a=sendrecv", "a=sendonly");
    let r = h.feed(&ua.in_dialog(&mut s, "INVITE", "Content-Type: application/sdp\r\n", &hold));
    assert_eq!(r.statuses(), [100]);
    let (call, sdp, token) = r.reoffer().expect("the new offer goes to the media side");
    assert_eq!(sdp, hold);
    let answer = ANSWER.replace("s=comet", "s=held");
    let r = h.answer(&call, token, Ok(answer.clone()));
    assert_eq!(r.statuses(), [200]);
    assert_eq!(r.last().body, answer);
    assert!(r.last().h("contact").is_some());
    assert!(h.feed(&ua.in_dialog(&mut s, "ACK", "", "")).sent.is_empty());

    // A re-INVITE the media side refuses keeps the call.
    let r = h.feed(&ua.in_dialog(
        &mut s,
        "INVITE",
        "Content-Type: application/sdp\r\n",
        SDP_OFFER,
    ));
    let (call, _, token) = r.reoffer().unwrap();
    let r = h.answer(
        &call,
        token,
        Err(MediaError::NotAcceptable("no codec".into())),
    );
    assert_eq!(r.statuses(), [488]);
    assert!(r.ended().is_empty());
    assert_eq!(h.conn.calls().len(), 1);

    let dtmf = "Signal=5\r\nDuration=160\r\n";
    let r = h.feed(&ua.in_dialog(
        &mut s,
        "INFO",
        "Content-Type: application/dtmf-relay\r\n",
        dtmf,
    ));
    assert_eq!(r.statuses(), [200]);
    assert!(matches!(
        r.actions[..],
        [Action::Event {
            event: CallEvent::Dtmf {
                digit: '5',
                duration_ms: Some(160)
            },
            ..
        }]
    ));
    let fir = "<?xml version=\"1.0\" encoding=\"utf-8\" ?><media_control><vc_primitive><to_encoder>\
               <picture_fast_update/></to_encoder></vc_primitive></media_control>";
    let r = h.feed(&ua.in_dialog(
        &mut s,
        "INFO",
        "Content-Type: application/media_control+xml\r\n",
        fir,
    ));
    assert_eq!(r.statuses(), [200]);
    assert!(matches!(
        r.actions[..],
        [Action::Event {
            event: CallEvent::VideoFastUpdate,
            ..
        }]
    ));

    let r = h.feed(&ua.in_dialog(&mut s, "OPTIONS", "", ""));
    assert_eq!(r.statuses(), [200]);
    assert!(r.last().h("allow").unwrap().contains("INVITE"));
    let r = h.feed(&ua.options());
    assert_eq!(r.statuses(), [200]);

    assert_eq!(
        h.feed(&ua.in_dialog(&mut s, "MESSAGE", "", "hi"))
            .statuses(),
        [405]
    );
    assert_eq!(
        h.feed(&ua.in_dialog(&mut s, "FROBNICATE", "", ""))
            .statuses(),
        [501]
    );
    let out_of_dialog = ua.options().replace("OPTIONS", "FROBNICATE");
    assert_eq!(h.feed(&out_of_dialog).statuses(), [501]);
    let msg = ua.options().replace("OPTIONS", "MESSAGE");
    let r = h.feed(&msg);
    assert_eq!(r.statuses(), [405]);
    assert!(r.last().h("allow").is_some());

    // A request in a dialog that does not exist.
    let mut ghost = s.clone();
    ghost.to_tag = Some("nope".into());
    assert_eq!(
        h.feed(&ua.in_dialog(&mut ghost, "INFO", "", "")).statuses(),
        [481]
    );

    // Out-of-order CSeq.
    s.cseq -= 5;
    assert_eq!(
        h.feed(&ua.in_dialog(&mut s, "INFO", "", "")).statuses(),
        [500]
    );
}

#[test]
fn server_hangup_sends_bye_with_reason() {
    let mut h = H::new();
    let mut ua = ua();
    let (s, call) = h.call(&mut ua);
    let actions = h.conn.hangup(call.id, "kicked by \"the\" backend", h.now);
    let mut out = Out::default();
    h.take(actions, &mut out);
    assert_eq!(out.sent.len(), 1);
    let bye = &out.sent[0];
    assert_eq!(bye.method(), Some("BYE"));
    assert_eq!(
        bye.first,
        format!(
            "BYE sip:{}@{};transport=ws SIP/2.0",
            ua.contact_user, ua.via_host
        )
    );
    assert_eq!(
        bye.h("reason"),
        Some("Q.850;cause=16;text=\"kicked by \\\"the\\\" backend\"")
    );
    assert_eq!(bye.h("call-id"), Some(s.call_id.as_str()));
    assert_eq!(
        sip_support::param(bye.h("to").unwrap(), "tag"),
        Some(s.from_tag.clone())
    );
    assert_eq!(
        sip_support::param(bye.h("from").unwrap(), "tag"),
        s.to_tag.clone()
    );
    assert_eq!(
        out.ended(),
        [(EndReason::Hangup("kicked by \"the\" backend".into()), true)]
    );
    // The browser's 200 is absorbed, not counted as stray.
    let before = h.stats.stray.load(Ordering::Relaxed);
    assert!(h.feed(&ua.respond(bye, 200, "OK")).sent.is_empty());
    assert_eq!(h.stats.stray.load(Ordering::Relaxed), before);
}

/// Shutting down: every call of the connection ends, the answered one with a BYE and the one
/// still waiting for its media answer with a 480, both with the Reason.
#[test]
fn hangup_all_ends_answered_and_unanswered_calls() {
    let mut h = H::new();
    let mut ua = ua();
    let (answered, _) = h.call(&mut ua);
    let (waiting, r) = h.invite(&mut ua, "0*101*video");
    assert!(r.offer().is_some(), "the second call waits for its answer");
    let actions = h.conn.hangup_all("server shutting down", h.now);
    let mut out = Out::default();
    h.take(actions, &mut out);
    let reason = Some("Q.850;cause=16;text=\"server shutting down\"");
    let bye = out
        .sent
        .iter()
        .find(|m| m.method() == Some("BYE"))
        .expect("a BYE");
    assert_eq!(bye.h("call-id"), Some(answered.call_id.as_str()));
    assert_eq!(bye.h("reason"), reason);
    let refused = out
        .sent
        .iter()
        .find(|m| m.status() == Some(480))
        .expect("a 480");
    assert_eq!(refused.h("call-id"), Some(waiting.call_id.as_str()));
    assert_eq!(refused.h("reason"), reason);
    assert_eq!(out.sent.len(), 2, "{:?}", out.sent);
    let ended = out.ended();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(
        ended
            .iter()
            .all(|(r, _)| *r == EndReason::Hangup("server shutting down".into())),
        "{ended:?}"
    );
    // Nothing is left to hang up.
    assert!(h.conn.hangup_all("again", h.now).is_empty());
}

/// `[sip] max_auth_failures`: an address that gave wrong digests that many times gets 403
/// with a Warning, its digests unchecked (a right one too), until its allowance refills;
/// another address is not affected.
#[test]
fn an_address_that_fails_too_often_is_refused_unchecked_for_a_while() {
    let gate = Gate::new(
        "sip",
        ConnLimits {
            max: 10,
            per_ip: 0,
            auth_failures: 3,
        },
    );
    let mut h = H::with_config(Limits::default(), Some(gate.clone()), "192.0.2.7:5000");
    let mut wrong = Ua::new("000000123", "not-the-hash", HOST, 7);
    for k in 0..3 {
        let r = h.register(&mut wrong);
        assert_eq!(r.status(), Some(403), "wrong digest {k}");
        assert_eq!(r.h("warning"), None, "checked and wrong: {}", r.raw);
    }
    // Now even the right password is refused, without being checked.
    let mut right = ua();
    let r = h.register(&mut right);
    assert_eq!(r.status(), Some(403), "{}", r.raw);
    assert!(
        r.h("warning")
            .is_some_and(|w| w.contains("too many failed logins")),
        "{}",
        r.raw
    );
    assert_eq!(gate.auth_counts(), (3, 1));
    // Another address logs in.
    let mut other = H::with_config(Limits::default(), Some(gate.clone()), "192.0.2.8:5000");
    assert_eq!(other.register(&mut ua()).status(), Some(200));
    // A third of the refill period gives one attempt back.
    h.advance(AUTH_REFILL / 3 + Duration::from_secs(1));
    let r = h.register(&mut right);
    assert_eq!(r.status(), Some(200), "{}", r.raw);
}

#[test]
fn deadlines() {
    let limits = Limits {
        ack_timeout: Duration::from_secs(5),
        offer_timeout: Duration::from_secs(7),
        lookup_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let mut h = H::with_limits(limits);
    let mut ua = ua();

    // No ACK for the 200 OK: BYE and the call ends.
    let (_, r) = h.invite(&mut ua, "0*101*video");
    let (call, _, token) = r.offer().unwrap();
    h.answer(&call, token, Ok(ANSWER.into()));
    assert!(h.conn.next_deadline().is_some());
    assert!(h.advance(Duration::from_secs(4)).sent.is_empty());
    let r = h.advance(Duration::from_secs(2));
    assert_eq!(r.sent[0].method(), Some("BYE"));
    assert_eq!(r.ended(), [(EndReason::AckTimeout, true)]);

    // The media side never answers: 504 and the call ends.
    let (_, r) = h.invite(&mut ua, "0*101*video");
    assert!(r.offer().is_some());
    let r = h.advance(Duration::from_secs(8));
    assert_eq!(r.statuses(), [504]);
    assert!(matches!(
        r.ended()[..],
        [(EndReason::MediaFailed(_), false)]
    ));

    // The store never answers: 503.
    h.auto_lookup = false;
    let r = h.feed(&ua.register(600, None));
    let ch = r.last().clone();
    h.feed(&ua.register(600, Some(&ch)));
    let r = h.advance(Duration::from_secs(4));
    assert_eq!(r.statuses(), [503]);
    h.auto_lookup = true;

    // Registrations expire.
    h.register(&mut ua);
    assert_eq!(h.conn.registered(), [(0, 123)]);
    let r = h.advance(Duration::from_secs(601));
    assert!(matches!(
        r.actions[..],
        [Action::Unregistered { dev: 0, user: 123 }]
    ));
    assert!(h.conn.next_deadline().is_none());
}

#[test]
fn media_failure_and_close() {
    let mut h = H::new();
    let mut ua = ua();
    let (_, r) = h.invite(&mut ua, "0*101*video");
    let (call, _, token) = r.offer().unwrap();
    let r = h.answer(&call, token, Err(MediaError::Unavailable("full".into())));
    assert_eq!(r.statuses(), [503]);
    assert!(matches!(
        r.ended()[..],
        [(EndReason::MediaFailed(_), false)]
    ));

    h.register(&mut ua);
    let (_, c1) = h.call(&mut ua);
    let (_, r) = h.invite(&mut ua, "0*101*video");
    let (c2, _, _) = r.offer().unwrap();
    let out = h.conn.close();
    let ended: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Ended {
                call,
                reason,
                answered,
            } => Some((call.id, reason.clone(), *answered)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        [
            (c1.id, EndReason::ConnectionClosed, true),
            (c2.id, EndReason::ConnectionClosed, false)
        ]
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Unregistered { dev: 0, user: 123 }))
    );
    assert!(out.iter().all(|a| !matches!(a, Action::Send(_))));
}

#[test]
fn malformed_input() {
    let mut h = H::new();
    let mut ua = ua();
    assert!(h.feed("garbage\r\n\r\n").sent.is_empty());
    assert!(h.feed("\u{0}\u{1}").sent.is_empty());
    assert_eq!(h.stats.malformed_dropped.load(Ordering::Relaxed), 2);
    let bad = ua
        .register(600, None)
        .replace("Max-Forwards: 69", "Max-Forwards: lots");
    let r = h.feed(&bad);
    assert_eq!(r.statuses(), [400]);
    assert_jssip_accepts(r.last(), &ua);
    assert_eq!(h.stats.malformed_answered.load(Ordering::Relaxed), 1);
    // RFC 5626 keep-alive.
    assert!(matches!(&h.conn.on_message(b"\r\n\r\n", h.now)[..], [Action::Send(s)] if s == "\r\n"));
    // A tel: URI.
    let tel = ua
        .options()
        .replacen(&format!("OPTIONS sip:{HOST}"), "OPTIONS tel:+12345", 1);
    assert_eq!(h.feed(&tel).statuses(), [416]);
    // Require: an extension we do not have.
    let req = ua
        .options()
        .replace("Max-Forwards", "Require: 100rel\r\nMax-Forwards");
    let r = h.feed(&req);
    assert_eq!(r.statuses(), [420]);
    assert_eq!(r.last().h("unsupported"), Some("100rel"));
}

#[test]
fn work_in_flight_is_bounded() {
    let mut h = H::new();
    h.auto_lookup = false;
    let mut ua = ua();
    let r = h.feed(&ua.register(600, None));
    let ch = r.last().clone();
    for _ in 0..16 {
        let r = h.feed(&ua.register(600, Some(&ch)));
        assert!(r.sent.is_empty(), "waits for the store");
    }
    let r = h.feed(&ua.register(600, Some(&ch)));
    assert_eq!(r.statuses(), [503]);
    assert_eq!(r.last().h("retry-after"), Some("5"));

    // Calls being authorized count against the per-connection call limit (4).
    let mut h = H::new();
    h.auto_lookup = false;
    for _ in 0..4 {
        let (_, r) = h.invite(&mut ua, "0*101*video");
        assert_eq!(r.statuses(), [100]);
    }
    let mut s = ua.new_session("0*101*video");
    let r = h.feed(&ua.invite(&mut s, None, SDP_OFFER));
    assert_eq!(r.statuses(), [100, 486]);
}

#[test]
fn update_with_and_without_sdp() {
    let mut h = H::new();
    let mut ua = ua();
    let (mut s, _) = h.call(&mut ua);
    let r = h.feed(&ua.in_dialog(
        &mut s,
        "UPDATE",
        "Content-Type: application/sdp\r\n",
        SDP_OFFER,
    ));
    assert!(r.sent.is_empty(), "no 100 for UPDATE: {:?}", r.sent);
    let (call, _, token) = r
        .reoffer()
        .expect("the UPDATE's offer goes to the media side");
    let r = h.answer(&call, token, Ok(ANSWER.into()));
    assert_eq!(r.statuses(), [200]);
    assert_eq!(r.last().cseq().1, "UPDATE");
    assert_eq!(r.last().body, ANSWER);
    // No ACK follows an UPDATE: a re-INVITE right after is not refused as pending.
    let r = h.feed(&ua.in_dialog(&mut s, "UPDATE", "", ""));
    assert_eq!(r.statuses(), [200]);
    let r = h.feed(&ua.in_dialog(
        &mut s,
        "INVITE",
        "Content-Type: application/sdp\r\n",
        SDP_OFFER,
    ));
    assert!(r.reoffer().is_some());
    // A second offer while one is pending: 491.
    let r = h.feed(&ua.in_dialog(
        &mut s,
        "UPDATE",
        "Content-Type: application/sdp\r\n",
        SDP_OFFER,
    ));
    assert_eq!(r.statuses(), [491]);
}
