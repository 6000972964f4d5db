//! The SIP state machine of one WebSocket connection, without IO.
//!
//! [`Connection`] takes what happened (a message arrived, a lookup or an SDP answer finished,
//! a hangup was asked, time passed, the connection closed) and returns [`Action`]s for the
//! driver to carry out. It owns the server transactions (INVITE with 100 Trying, CANCEL → 487,
//! the ACK of a non-2xx answer; non-INVITE), the dialogs (ACK, BYE both ways, re-INVITE, UPDATE,
//! INFO, OPTIONS), the registrations of the connection and its timers. The transport is
//! reliable (RFC 7118), so nothing is retransmitted; the timers are only deadlines (no ACK, a
//! lookup or the media side too slow, a registration expired).
//!
//! Who may do what is decided here: REGISTER and INVITE are digest-challenged; an INVITE to
//! `<dev>*<name>*<profile>` is taken only from a user of that dev_id with a `conference` row
//! inviting them to that conference. Only then is the media side asked ([`Action::Offer`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::auth::{Credentials, DigestAuth, Verdict};
use super::handler::{CallEvent, CallId, CallInfo, EndReason, MediaError};
use super::ident::{ConferenceNumber, parse_conference_number, parse_sip_user};
use super::message::{
    AuthParams, Headers, Message, Method, NameAddr, Request, Response, Uri, Via, parse, split_list,
};
use crate::store::{ConferenceRow, DevId, UserId};

/// What we accept (`Allow`).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER";
const SERVER: &str = concat!("comet-server/", env!("CARGO_PKG_VERSION"));
/// Store reads in flight per connection at most.
const MAX_LOOKUPS: usize = 16;
/// Registered contacts per connection at most (a browser registers one); a REGISTER that
/// would go beyond gets 403.
const MAX_BINDINGS: usize = 16;
/// Finished INVITE transactions remembered (for their ACK) per connection at most.
const MAX_TRACKED_TX: usize = 1024;
/// Methods we know but do not take.
const NOT_ALLOWED: &[Method] = &[
    Method::Subscribe,
    Method::Notify,
    Method::Refer,
    Method::Message,
    Method::Publish,
];

/// Both clocks: monotonic for deadlines, Unix seconds for nonces.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// `d` later on both clocks.
    pub fn after(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            unix: self.unix + d.as_secs(),
        }
    }
}

/// Deadlines and bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long to wait for the ACK of a 200 OK before hanging up (64 × T1).
    pub ack_timeout: Duration,
    /// How long a store lookup may take before the request gets 503.
    pub lookup_timeout: Duration,
    /// How long the media side may take to answer an offer.
    pub offer_timeout: Duration,
    /// Calls at once on one connection.
    pub max_calls: usize,
    /// Registration lifetimes (seconds): shortest accepted, longest granted, default.
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ack_timeout: Duration::from_secs(32),
            lookup_timeout: Duration::from_secs(10),
            offer_timeout: Duration::from_secs(30),
            max_calls: 4,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
        }
    }
}

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub struct SipStats {
    /// Malformed messages that could not be answered.
    pub malformed_dropped: AtomicU64,
    /// Malformed requests answered with 400/505/513.
    pub malformed_answered: AtomicU64,
    /// Responses and ACKs that matched nothing.
    pub stray: AtomicU64,
    /// REGISTER/INVITE refused with 403 (wrong password, unknown user, not invited, ...).
    pub forbidden: AtomicU64,
    pub calls_started: AtomicU64,
    pub calls_ended: AtomicU64,
    /// Times a connection's reading paused because it sent faster than `[sip]
    /// messages_per_second` allows.
    pub throttled: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The Warning of a 403 to an address that failed too often.
const BLOCKED: &str = "too many failed logins from this address; retry later";

/// What every connection shares.
#[derive(Debug)]
pub struct CoreConfig {
    /// `[sip] host`: the digest realm and the host of our Contact and Via.
    pub host: String,
    pub auth: Arc<DigestAuth>,
    pub limits: Limits,
    pub stats: Arc<SipStats>,
    /// The listener's gate, which limits failed digests per client address (`[sip]
    /// max_auth_failures`); `None`: no limit.
    pub gate: Option<Arc<crate::admission::Gate>>,
    /// In a cluster, this server's `<sip host>:<sip port>`: an invitation that names another
    /// media node (its `node` column) does not let the user in here (403 with a Warning
    /// naming that node), so that a conference never runs on two nodes. `None`: any node.
    pub node: Option<String>,
}

impl CoreConfig {
    pub fn new(host: impl Into<String>) -> CoreConfig {
        let host = host.into();
        CoreConfig {
            auth: Arc::new(DigestAuth::with_random_secret(host.clone())),
            host,
            limits: Limits::default(),
            stats: Arc::new(SipStats::default()),
            gate: None,
            node: None,
        }
    }
}

/// A store read the driver must do: the users_auth hash of (dev, user) and, for an INVITE, that
/// user's invitation to `conference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub id: u64,
    pub dev: DevId,
    pub user: UserId,
    pub conference: Option<String>,
}

/// The answer to a [`Lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupResult {
    Found {
        hash: Option<String>,
        invitation: Option<ConferenceRow>,
    },
    /// The store failed.
    Failed,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send one SIP message (one WebSocket text frame).
    Send(String),
    /// Read the store, then call [`Connection::on_lookup`].
    Lookup(Lookup),
    /// Ask the media side for an answer, then call [`Connection::on_answer`] with `token`.
    Offer {
        call: CallInfo,
        sdp: String,
        token: u64,
    },
    /// A new offer in an established call; then [`Connection::on_answer`] with `token`.
    Reoffer {
        call: CallInfo,
        sdp: String,
        token: u64,
    },
    /// The 200 OK went out: the user is a member of the conference now.
    Answered { call: CallInfo },
    /// The browser signalled something (INFO).
    Event { call: CallInfo, event: CallEvent },
    /// The call is over (emitted exactly once per [`Action::Offer`]). `answered` tells whether
    /// [`Action::Answered`] was emitted for it.
    Ended {
        call: CallInfo,
        answered: bool,
        reason: EndReason,
    },
    /// A binding was added or refreshed.
    Registered {
        dev: DevId,
        user: UserId,
        expires: u32,
    },
    /// The last binding of (dev, user) on this connection is gone.
    Unregistered { dev: DevId, user: UserId },
}

enum LookupFor {
    Register(Box<RegisterLookup>),
    /// The pending INVITE with this transaction key.
    Invite(String),
}

struct RegisterLookup {
    req: Request,
    creds: Credentials,
    dev: DevId,
    user: UserId,
}

struct InviteLookup {
    creds: Credentials,
    dev: DevId,
    user: UserId,
    number: ConferenceNumber,
}

enum Stage {
    Lookup(u64, Box<InviteLookup>),
    Offer {
        call: CallId,
        token: u64,
        deadline: Instant,
    },
}

/// An initial INVITE without its final response yet.
struct Pending {
    req: Request,
    to_tag: String,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// The media side is working on the offer.
    Offering,
    /// 200 OK sent for the INVITE with this CSeq; waiting for the ACK.
    AwaitingAck {
        cseq: u32,
        deadline: Instant,
    },
    Confirmed,
}

/// A re-INVITE or UPDATE waiting for the media side.
struct Reoffer {
    req: Request,
    key: String,
    token: u64,
    deadline: Instant,
}

struct Call {
    info: CallInfo,
    local_tag: String,
    /// The INVITE's From (our requests' To).
    remote_party: String,
    /// The INVITE's To with our tag (our requests' From).
    local_party: String,
    remote_tag: String,
    remote_target: String,
    route_set: Vec<String>,
    remote_cseq: u32,
    local_cseq: u32,
    state: CallState,
    answered: bool,
    reoffer: Option<Reoffer>,
    /// Our Contact URI (the dialled number at our host).
    contact: String,
}

struct Binding {
    dev: DevId,
    user: UserId,
    uri: Uri,
    uri_text: String,
    expires_at: Instant,
}

/// Why credentials were not usable.
enum CredCheck {
    /// None for our realm: challenge.
    Missing,
    /// Malformed: 400.
    Bad(&'static str),
    /// Not a comet user name: 403.
    Forbidden,
    Usable(Credentials, DevId, UserId),
}

/// One connection's SIP state.
pub struct Connection {
    cfg: Arc<CoreConfig>,
    conn_id: u64,
    peer: SocketAddr,
    secure: bool,
    next_id: u64,
    next_call: u32,
    lookups: HashMap<u64, (Instant, LookupFor)>,
    pending: HashMap<String, Pending>,
    calls: HashMap<CallId, Call>,
    bindings: Vec<Binding>,
    /// Transactions whose non-2xx final response went out: their ACK is absorbed.
    completed: HashMap<String, Instant>,
    /// Our BYEs: their responses are absorbed.
    our_requests: HashMap<String, Instant>,
    /// The time of the input being handled (every entry point sets it).
    clock: Instant,
}

fn random_token(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The server transaction key: the RFC 3261 branch, or (Call-ID, From tag, CSeq number) for
/// RFC 2543 clients. CANCEL and ACK of a non-2xx share their INVITE's key.
fn tx_key(req: &Request) -> String {
    if let Some(b) = req
        .top_via()
        .and_then(|v| v.branch().map(str::to_string))
        .filter(|b| b.starts_with("z9hG4bK"))
    {
        return b;
    }
    let from_tag = req
        .from()
        .and_then(|f| f.tag().map(str::to_string))
        .unwrap_or_default();
    let seq = req.cseq().map_or(0, |c| c.seq);
    format!("{}|{from_tag}|{seq}", req.call_id())
}

/// Quoted-string content: no CR/LF, quotes and backslashes escaped, at most 200 characters.
fn quoted(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn content_type_is(req: &Request, ty: &str) -> bool {
    req.headers.get("Content-Type").is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case(ty)
    })
}

/// The event an INFO body carries, if any.
pub fn info_event(content_type: Option<&str>, body: &str) -> Option<CallEvent> {
    if body.trim().is_empty() {
        return None;
    }
    let ct = content_type.unwrap_or("");
    let main = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let digit = |s: &str| -> Option<char> {
        let s = s.trim();
        match s {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => {
                let mut chars = s.chars();
                let c = chars.next()?.to_ascii_uppercase();
                (chars.next().is_none() && (c.is_ascii_digit() || "*#ABCD".contains(c)))
                    .then_some(c)
            }
        }
    };
    let event = match main.as_str() {
        "application/dtmf-relay" => {
            let mut sig = None;
            let mut duration_ms = None;
            for line in body.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "signal" => sig = digit(v),
                        "duration" => duration_ms = v.trim().parse().ok(),
                        _ => {}
                    }
                }
            }
            sig.map(|digit| CallEvent::Dtmf { digit, duration_ms })
        }
        "application/dtmf" => digit(body).map(|digit| CallEvent::Dtmf {
            digit,
            duration_ms: None,
        }),
        "application/media_control+xml" if body.contains("picture_fast_update") => {
            Some(CallEvent::VideoFastUpdate)
        }
        _ => None,
    };
    Some(event.unwrap_or_else(|| CallEvent::Info {
        content_type: ct.to_string(),
        body: body.to_string(),
    }))
}

impl Connection {
    /// `secure`: whether the WebSocket runs over TLS (our Via says WSS then).
    pub fn new(cfg: Arc<CoreConfig>, conn_id: u64, peer: SocketAddr, secure: bool) -> Self {
        Connection {
            cfg,
            conn_id,
            peer,
            secure,
            next_id: 1,
            next_call: 1,
            lookups: HashMap::new(),
            pending: HashMap::new(),
            calls: HashMap::new(),
            bindings: Vec::new(),
            completed: HashMap::new(),
            our_requests: HashMap::new(),
            clock: Instant::now(),
        }
    }

    /// Calls that exist (offering or answered).
    pub fn calls(&self) -> Vec<CallId> {
        let mut v: Vec<_> = self.calls.keys().copied().collect();
        v.sort();
        v
    }

    /// (dev, user) pairs with a live binding on this connection.
    pub fn registered(&self) -> Vec<(DevId, UserId)> {
        let mut v: Vec<_> = self.bindings.iter().map(|b| (b.dev, b.user)).collect();
        v.sort();
        v.dedup();
        v
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ----- responses -------------------------------------------------------------------------

    /// A response to a request: Via (with received/rport on the top one), From, To (with a tag
    /// for anything above 100), Call-ID, CSeq.
    fn response(&self, req: &Headers, status: u16, to_tag: Option<&str>) -> Response {
        let mut r = Response::to_headers(req, status);
        self.stamp_via(&mut r.headers);
        if status > 100
            && let Some(to) = r.headers.get("To").map(str::to_string)
            && NameAddr::parse(&to).is_some_and(|t| t.tag().is_none())
        {
            let tag = to_tag.map_or_else(|| random_token(10), str::to_string);
            r.headers.set("To", format!("{to};tag={tag}"));
            // Keep the header order: To after From.
            reorder_after(&mut r.headers, "To", "From");
        }
        r.headers.push("Server", SERVER);
        r
    }

    /// RFC 3261 18.2.1 and RFC 3581: record where the request really came from.
    fn stamp_via(&self, h: &mut Headers) {
        let vias: Vec<String> = h.get_all("Via").map(str::to_string).collect();
        let Some(first) = vias.first() else { return };
        let elems = split_list(first);
        let Some(mut top) = elems.first().and_then(|v| Via::parse(v)) else {
            return;
        };
        let ip = self.peer.ip().to_string();
        if top.host != ip && top.param("received").is_none() {
            top.params.push(("received".into(), Some(ip)));
        }
        if let Some(slot) = top
            .params
            .iter_mut()
            .find(|(n, v)| n.eq_ignore_ascii_case("rport") && v.is_none())
        {
            slot.1 = Some(self.peer.port().to_string());
        }
        let mut new_first = top.to_string();
        for e in &elems[1..] {
            new_first.push_str(", ");
            new_first.push_str(e);
        }
        h.remove("Via");
        let mut rebuilt = Headers::new();
        rebuilt.push("Via", new_first);
        for v in &vias[1..] {
            rebuilt.push("Via", v.clone());
        }
        for (n, v) in h.iter() {
            rebuilt.push(n, v);
        }
        *h = rebuilt;
    }

    fn send(out: &mut Vec<Action>, r: Response) {
        out.push(Action::Send(r.to_string()));
    }

    /// A final response without extra headers, recording the transaction for its ACK.
    fn reply(&mut self, out: &mut Vec<Action>, req: &Request, status: u16, to_tag: Option<&str>) {
        let r = self.response(&req.headers, status, to_tag);
        self.finish(out, req, r);
    }

    /// Sends a final response; a non-2xx answer to an INVITE waits for its ACK.
    fn finish(&mut self, out: &mut Vec<Action>, req: &Request, r: Response) {
        if req.method == Method::Invite && r.status >= 300 {
            // Only for absorbing the ACK: bounded, so a client that never ACKs cannot grow it.
            let t = self.clock;
            if self.completed.len() >= MAX_TRACKED_TX {
                self.completed.retain(|_, d| *d > t);
                if self.completed.len() >= MAX_TRACKED_TX {
                    self.completed.clear();
                }
            }
            self.completed
                .insert(tx_key(req), t + Duration::from_secs(32));
        }
        if r.status == 403 {
            bump(&self.cfg.stats.forbidden);
            tracing::debug!(
                peer = %self.peer,
                method = %req.method,
                from = req.from().and_then(|f| f.uri.user).as_deref().unwrap_or(""),
                to = %req.uri,
                "SIP: refused (403)"
            );
        }
        Self::send(out, r);
    }

    fn reply_with(
        &mut self,
        out: &mut Vec<Action>,
        req: &Request,
        status: u16,
        to_tag: Option<&str>,
        extra: &[(&str, String)],
    ) {
        let mut r = self.response(&req.headers, status, to_tag);
        for (n, v) in extra {
            r.headers.push(n, v.clone());
        }
        self.finish(out, req, r);
    }

    fn warning(&self, text: &str) -> (&'static str, String) {
        (
            "Warning",
            format!("399 {} \"{}\"", self.cfg.host, quoted(text)),
        )
    }

    fn challenge(
        &mut self,
        out: &mut Vec<Action>,
        req: &Request,
        now: Now,
        stale: bool,
        to_tag: Option<&str>,
    ) {
        let ch = self.cfg.auth.challenge(now.unix, stale);
        self.reply_with(out, req, 401, to_tag, &[("WWW-Authenticate", ch)]);
    }

    // ----- input -----------------------------------------------------------------------------

    /// One message from the connection.
    pub fn on_message(&mut self, data: &[u8], now: Now) -> Vec<Action> {
        self.clock = now.mono;
        let mut out = Vec::new();
        if data
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        {
            // RFC 5626 keep-alive: a double CRLF ping gets a CRLF pong.
            if data == b"\r\n\r\n" {
                out.push(Action::Send("\r\n".into()));
            }
            return out;
        }
        match parse(data) {
            Err(e) => match e.reply {
                Some(reply) => {
                    bump(&self.cfg.stats.malformed_answered);
                    let mut r = self.response(&reply.headers, e.status, None);
                    r.headers
                        .push("Warning", format!("399 {} \"{}\"", self.cfg.host, e.reason));
                    Self::send(&mut out, r);
                }
                None => bump(&self.cfg.stats.malformed_dropped),
            },
            Ok(Message::Response(r)) => {
                let key = r.top_via().and_then(|v| v.branch().map(str::to_string));
                match key {
                    Some(k) if r.status >= 200 && self.our_requests.remove(&k).is_some() => {}
                    Some(k) if self.our_requests.contains_key(&k) => {}
                    _ => bump(&self.cfg.stats.stray),
                }
            }
            Ok(Message::Request(req)) => self.on_request(req, now, &mut out),
        }
        out
    }

    fn on_request(&mut self, req: Request, now: Now, out: &mut Vec<Action>) {
        if req.method == Method::Ack {
            return self.on_ack(&req, now);
        }
        if Uri::parse(&req.uri).is_none() {
            let sip = req.uri.to_ascii_lowercase();
            let status = if sip.starts_with("sip:") || sip.starts_with("sips:") {
                400
            } else {
                416
            };
            return self.reply(out, &req, status, None);
        }
        if req.method == Method::Cancel {
            return self.on_cancel(&req, out);
        }
        let required: Vec<&str> = req
            .headers
            .get_all("Require")
            .flat_map(split_list)
            .collect();
        if !required.is_empty() {
            let unsupported = required.join(", ");
            return self.reply_with(out, &req, 420, None, &[("Unsupported", unsupported)]);
        }
        let to_tag = req.to().and_then(|t| t.tag().map(str::to_string));
        if let Some(to_tag) = to_tag {
            let from_tag = req
                .from()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default();
            let call_id = req.call_id().to_string();
            let found = self.calls.iter().find_map(|(id, c)| {
                (c.answered
                    && c.info.sip_call_id == call_id
                    && c.local_tag == to_tag
                    && c.remote_tag == from_tag)
                    .then_some(*id)
            });
            return match found {
                Some(id) => self.in_dialog(id, req, now, out),
                None => self.reply(out, &req, 481, None),
            };
        }
        match &req.method {
            Method::Register => self.on_register(req, now, out),
            Method::Invite => self.on_invite(req, now, out),
            Method::Options => self.options(&req, None, out),
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.reply(out, &req, 481, None)
            }
            m if NOT_ALLOWED.contains(m) => {
                self.reply_with(out, &req, 405, None, &[("Allow", ALLOW.to_string())])
            }
            _ => self.reply(out, &req, 501, None),
        }
    }

    fn options(&mut self, req: &Request, to_tag: Option<&str>, out: &mut Vec<Action>) {
        self.reply_with(
            out,
            req,
            200,
            to_tag,
            &[
                ("Allow", ALLOW.to_string()),
                ("Accept", "application/sdp".to_string()),
            ],
        );
    }

    fn on_ack(&mut self, req: &Request, now: Now) {
        if self.completed.remove(&tx_key(req)).is_some() {
            return;
        }
        let to_tag = req.to().and_then(|t| t.tag().map(str::to_string));
        let seq = req.cseq().map_or(0, |c| c.seq);
        let call_id = req.call_id();
        for c in self.calls.values_mut() {
            if c.info.sip_call_id == call_id
                && Some(&c.local_tag) == to_tag.as_ref()
                && let CallState::AwaitingAck { cseq, .. } = c.state
                && cseq == seq
            {
                c.state = CallState::Confirmed;
                return;
            }
        }
        let _ = now;
        bump(&self.cfg.stats.stray);
    }

    fn on_cancel(&mut self, req: &Request, out: &mut Vec<Action>) {
        let key = tx_key(req);
        if let Some(p) = self.pending.remove(&key) {
            self.reply(out, req, 200, Some(&p.to_tag));
            self.reply(out, &p.req, 487, Some(&p.to_tag));
            match p.stage {
                Stage::Lookup(id, _) => {
                    self.lookups.remove(&id);
                }
                Stage::Offer { call, .. } => self.end_call(call, EndReason::Cancelled, out),
            }
            return;
        }
        let found = self.calls.iter_mut().find_map(|(_, c)| {
            let r = c.reoffer.as_ref()?;
            (r.key == key && r.req.method == Method::Invite).then_some(c)
        });
        if let Some(c) = found {
            let r = c.reoffer.take().expect("matched above");
            let tag = c.local_tag.clone();
            self.reply(out, req, 200, Some(&tag));
            self.reply(out, &r.req, 487, Some(&tag));
            return;
        }
        self.reply(out, req, 481, None);
    }

    /// Reads our realm's credentials from a request.
    fn credentials(&self, req: &Request) -> CredCheck {
        let values = req
            .headers
            .get_all("Authorization")
            .chain(req.headers.get_all("Proxy-Authorization"));
        for v in values {
            let Some(p) = AuthParams::parse(v) else {
                return CredCheck::Bad("unreadable Authorization");
            };
            if !p.scheme.eq_ignore_ascii_case("Digest")
                || p.get("realm") != Some(self.cfg.auth.realm())
            {
                continue;
            }
            let creds = match Credentials::parse(v) {
                Ok(c) => c,
                Err(why) => return CredCheck::Bad(why),
            };
            let same_uri = match (Uri::parse(&creds.uri), Uri::parse(&req.uri)) {
                (Some(a), Some(b)) => a.same_address(&b),
                _ => creds.uri == req.uri,
            };
            if !same_uri {
                return CredCheck::Bad("digest uri differs from the Request-URI");
            }
            return match parse_sip_user(&creds.username) {
                Some((dev, user)) => CredCheck::Usable(creds, dev, user),
                None => CredCheck::Forbidden,
            };
        }
        CredCheck::Missing
    }

    fn start_lookup(&mut self, now: Now, for_: LookupFor, lookup: Lookup, out: &mut Vec<Action>) {
        if self.lookups.len() >= MAX_LOOKUPS {
            // A client flooding credentials does not get more store reads in flight.
            let retry = [("Retry-After", "5".to_string())];
            match for_ {
                LookupFor::Register(reg) => self.reply_with(out, &reg.req, 503, None, &retry),
                LookupFor::Invite(key) => {
                    if let Some(p) = self.pending.remove(&key) {
                        self.reply_with(out, &p.req, 503, Some(&p.to_tag), &retry);
                    }
                }
            }
            return;
        }
        self.lookups
            .insert(lookup.id, (now.mono + self.cfg.limits.lookup_timeout, for_));
        out.push(Action::Lookup(lookup));
    }

    // ----- REGISTER ----------------------------------------------------------------------------

    fn on_register(&mut self, req: Request, now: Now, out: &mut Vec<Action>) {
        let (creds, dev, user) = match self.credentials(&req) {
            CredCheck::Missing => return self.challenge(out, &req, now, false, None),
            CredCheck::Bad(why) => {
                let w = self.warning(why);
                return self.reply_with(out, &req, 400, None, &[w]);
            }
            CredCheck::Forbidden => return self.reply(out, &req, 403, None),
            CredCheck::Usable(c, d, u) => (c, d, u),
        };
        // The user proves who they are; they may only bind their own address of record.
        let aor_user = req.to().and_then(|t| t.uri.user);
        if aor_user.as_deref() != Some(creds.username.as_str()) {
            return self.reply(out, &req, 403, None);
        }
        let id = self.id();
        let lookup = Lookup {
            id,
            dev,
            user,
            conference: None,
        };
        self.start_lookup(
            now,
            LookupFor::Register(Box::new(RegisterLookup {
                req,
                creds,
                dev,
                user,
            })),
            lookup,
            out,
        );
    }

    fn apply_register(
        &mut self,
        req: &Request,
        dev: DevId,
        user: UserId,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let limits = self.cfg.limits.clone();
        let header_expires = req.headers.get("Expires").map(|v| v.trim().parse::<u32>());
        if let Some(Err(_)) = header_expires {
            return self.reply(out, req, 400, None);
        }
        let header_expires = header_expires.and_then(Result::ok);
        let contacts: Vec<&str> = req
            .headers
            .get_all("Contact")
            .flat_map(split_list)
            .collect();
        let had = self.bindings.iter().any(|b| (b.dev, b.user) == (dev, user));
        if contacts.len() > MAX_BINDINGS {
            return self.reply(out, req, 403, None);
        }
        if contacts == ["*"] {
            if header_expires != Some(0) {
                return self.reply(out, req, 400, None);
            }
            self.bindings.retain(|b| (b.dev, b.user) != (dev, user));
        } else {
            let mut changes = Vec::new();
            for c in &contacts {
                let Some(na) = NameAddr::parse(c) else {
                    return self.reply(out, req, 400, None);
                };
                let expires = match na.param("expires") {
                    Some(Some(v)) => match v.parse::<u32>() {
                        Ok(e) => e,
                        Err(_) => return self.reply(out, req, 400, None),
                    },
                    _ => header_expires.unwrap_or(limits.default_expires),
                };
                if expires != 0 && expires < limits.min_expires {
                    return self.reply_with(
                        out,
                        req,
                        423,
                        None,
                        &[("Min-Expires", limits.min_expires.to_string())],
                    );
                }
                changes.push((na, expires.min(limits.max_expires)));
            }
            let replaced = |b: &Binding| {
                (b.dev, b.user) == (dev, user)
                    && changes.iter().any(|(na, _)| b.uri.same_address(&na.uri))
            };
            let kept = self.bindings.iter().filter(|b| !replaced(b)).count();
            let added = changes.iter().filter(|(_, e)| *e > 0).count();
            if kept + added > MAX_BINDINGS {
                return self.reply(out, req, 403, None);
            }
            for (na, expires) in changes {
                self.bindings
                    .retain(|b| !((b.dev, b.user) == (dev, user) && b.uri.same_address(&na.uri)));
                if expires > 0 {
                    self.bindings.push(Binding {
                        dev,
                        user,
                        uri: na.uri,
                        uri_text: na.uri_text,
                        expires_at: now.mono + Duration::from_secs(expires.into()),
                    });
                    out.push(Action::Registered { dev, user, expires });
                }
            }
        }
        let mut r = self.response(&req.headers, 200, None);
        for b in self
            .bindings
            .iter()
            .filter(|b| (b.dev, b.user) == (dev, user))
        {
            let left = b.expires_at.saturating_duration_since(now.mono).as_secs();
            r.headers
                .push("Contact", format!("<{}>;expires={left}", b.uri_text));
        }
        Self::send(out, r);
        let has = self.bindings.iter().any(|b| (b.dev, b.user) == (dev, user));
        if had && !has {
            out.push(Action::Unregistered { dev, user });
        }
    }

    // ----- INVITE ------------------------------------------------------------------------------

    fn on_invite(&mut self, req: Request, now: Now, out: &mut Vec<Action>) {
        let key = tx_key(&req);
        if self.pending.contains_key(&key) {
            return; // the same transaction again: it is being handled
        }
        Self::send(out, self.response(&req.headers, 100, None));
        let number = Uri::parse(&req.uri)
            .and_then(|u| u.user)
            .and_then(|u| parse_conference_number(&u));
        let Some(number) = number else {
            return self.reply(out, &req, 404, None);
        };
        let contact = req
            .headers
            .get("Contact")
            .and_then(|c| split_list(c).first().and_then(|c| NameAddr::parse(c)));
        if contact.is_none() {
            let w = self.warning("Contact missing");
            return self.reply_with(out, &req, 400, None, &[w]);
        }
        if req.body.trim().is_empty() {
            let w = self.warning("an SDP offer is required");
            return self.reply_with(out, &req, 488, None, &[w]);
        }
        if !content_type_is(&req, "application/sdp")
            || req.headers.get("Content-Encoding").is_some()
        {
            return self.reply_with(
                out,
                &req,
                415,
                None,
                &[("Accept", "application/sdp".into())],
            );
        }
        let authorizing = self
            .pending
            .values()
            .filter(|p| matches!(p.stage, Stage::Lookup(..)))
            .count();
        if self.calls.len() + authorizing >= self.cfg.limits.max_calls {
            return self.reply(out, &req, 486, None);
        }
        let to_tag = random_token(10);
        let (creds, dev, user) = match self.credentials(&req) {
            CredCheck::Missing => return self.challenge(out, &req, now, false, Some(&to_tag)),
            CredCheck::Bad(why) => {
                let w = self.warning(why);
                return self.reply_with(out, &req, 400, Some(&to_tag), &[w]);
            }
            CredCheck::Forbidden => return self.reply(out, &req, 403, Some(&to_tag)),
            CredCheck::Usable(c, d, u) => (c, d, u),
        };
        if dev != number.dev {
            return self.reply(out, &req, 403, Some(&to_tag));
        }
        let id = self.id();
        let lookup = Lookup {
            id,
            dev,
            user,
            conference: Some(number.name.clone()),
        };
        self.pending.insert(
            key.clone(),
            Pending {
                req,
                to_tag,
                stage: Stage::Lookup(
                    id,
                    Box::new(InviteLookup {
                        creds,
                        dev,
                        user,
                        number,
                    }),
                ),
            },
        );
        self.start_lookup(now, LookupFor::Invite(key), lookup, out);
    }

    /// A store lookup finished.
    pub fn on_lookup(&mut self, id: u64, result: LookupResult, now: Now) -> Vec<Action> {
        self.clock = now.mono;
        let mut out = Vec::new();
        let Some((_, for_)) = self.lookups.remove(&id) else {
            return out; // timed out or cancelled meanwhile
        };
        match for_ {
            LookupFor::Register(reg) => {
                let RegisterLookup {
                    req,
                    creds,
                    dev,
                    user,
                } = *reg;
                let hash = match result {
                    LookupResult::Failed => {
                        self.reply(&mut out, &req, 500, None);
                        return out;
                    }
                    LookupResult::Found { hash, .. } => hash,
                };
                match self.verdict(&req, &creds, hash.as_deref(), now) {
                    Some(Verdict::Ok) => self.apply_register(&req, dev, user, now, &mut out),
                    Some(Verdict::Stale) => self.challenge(&mut out, &req, now, true, None),
                    Some(Verdict::Wrong) => self.reply(&mut out, &req, 403, None),
                    None => {
                        let w = self.warning(BLOCKED);
                        self.reply_with(&mut out, &req, 403, None, &[w]);
                    }
                }
            }
            LookupFor::Invite(key) => {
                let Some(p) = self.pending.remove(&key) else {
                    return out;
                };
                let Stage::Lookup(_, inv) = p.stage else {
                    return out;
                };
                let InviteLookup {
                    creds,
                    dev,
                    user,
                    number,
                } = *inv;
                let (hash, invitation) = match result {
                    LookupResult::Failed => {
                        self.reply(&mut out, &p.req, 500, Some(&p.to_tag));
                        return out;
                    }
                    LookupResult::Found { hash, invitation } => (hash, invitation),
                };
                match self.verdict(&p.req, &creds, hash.as_deref(), now) {
                    Some(Verdict::Ok) => {}
                    Some(Verdict::Stale) => {
                        self.challenge(&mut out, &p.req, now, true, Some(&p.to_tag));
                        return out;
                    }
                    Some(Verdict::Wrong) => {
                        self.reply(&mut out, &p.req, 403, Some(&p.to_tag));
                        return out;
                    }
                    None => {
                        let w = self.warning(BLOCKED);
                        self.reply_with(&mut out, &p.req, 403, Some(&p.to_tag), &[w]);
                        return out;
                    }
                }
                let Some(invitation) = invitation else {
                    let w = self.warning("not invited to this conference");
                    self.reply_with(&mut out, &p.req, 403, Some(&p.to_tag), &[w]);
                    return out;
                };
                if let Some(me) = &self.cfg.node
                    && invitation.node != *me
                {
                    let w = self.warning(&format!(
                        "this conference runs on the media node {}",
                        invitation.node
                    ));
                    self.reply_with(&mut out, &p.req, 403, Some(&p.to_tag), &[w]);
                    return out;
                }
                self.start_call(
                    key, p.req, p.to_tag, dev, user, number, invitation, now, &mut out,
                );
            }
        }
        out
    }

    /// The digest's verdict; `None` when the peer's address has failed too often and the
    /// digest is not checked (a wrong one counts against the address).
    fn verdict(
        &self,
        req: &Request,
        creds: &Credentials,
        hash: Option<&str>,
        now: Now,
    ) -> Option<Verdict> {
        let gate = self.cfg.gate.as_deref();
        if gate.is_some_and(|g| g.may_authenticate(self.peer.ip(), now.mono).is_err()) {
            return None;
        }
        let v = match hash {
            // An unknown user looks exactly like a wrong password.
            None => Verdict::Wrong,
            Some(h) => self
                .cfg
                .auth
                .verify(creds, req.method.as_str(), h, now.unix),
        };
        if v == Verdict::Wrong
            && let Some(g) = gate
        {
            g.auth_failed(self.peer.ip(), now.mono);
        }
        Some(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        key: String,
        req: Request,
        to_tag: String,
        dev: DevId,
        user: UserId,
        number: ConferenceNumber,
        invitation: ConferenceRow,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let n = self.next_call;
        self.next_call += 1;
        let id = CallId {
            conn: self.conn_id,
            n,
        };
        let from = req.from();
        let contact = req
            .headers
            .get("Contact")
            .and_then(|c| split_list(c).first().and_then(|c| NameAddr::parse(c)))
            .map(|c| c.uri_text)
            .unwrap_or_default();
        let host = if self.cfg.host.contains(':') && !self.cfg.host.starts_with('[') {
            format!("[{}]", self.cfg.host)
        } else {
            self.cfg.host.clone()
        };
        let info = CallInfo {
            id,
            dev,
            user,
            conference: number.name.clone(),
            profile: number.profile.clone(),
            invitation,
            sip_call_id: req.call_id().to_string(),
            user_agent: req.headers.get("User-Agent").map(str::to_string),
            peer: self.peer,
        };
        let call = Call {
            info: info.clone(),
            local_tag: to_tag.clone(),
            remote_party: req.headers.get("From").unwrap_or("").to_string(),
            local_party: format!("{};tag={to_tag}", req.headers.get("To").unwrap_or("")),
            remote_tag: from
                .as_ref()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default(),
            remote_target: contact,
            route_set: req
                .headers
                .get_all("Record-Route")
                .flat_map(split_list)
                .map(str::to_string)
                .collect(),
            remote_cseq: req.cseq().map_or(0, |c| c.seq),
            local_cseq: 0,
            state: CallState::Offering,
            answered: false,
            reoffer: None,
            // RFC 7118 5.2: `transport=ws` for both WS and WSS.
            contact: format!(
                "<sip:{}*{}*{}@{host};transport=ws>",
                number.dev, number.name, number.profile
            ),
        };
        let token = self.id();
        let sdp = req.body.clone();
        self.calls.insert(id, call);
        self.pending.insert(
            key,
            Pending {
                req,
                to_tag,
                stage: Stage::Offer {
                    call: id,
                    token,
                    deadline: now.mono + self.cfg.limits.offer_timeout,
                },
            },
        );
        bump(&self.cfg.stats.calls_started);
        out.push(Action::Offer {
            call: info,
            sdp,
            token,
        });
    }

    /// The media side answered an [`Action::Offer`] or [`Action::Reoffer`].
    pub fn on_answer(
        &mut self,
        call: CallId,
        token: u64,
        result: Result<String, MediaError>,
        now: Now,
    ) -> Vec<Action> {
        self.clock = now.mono;
        let mut out = Vec::new();
        let result = result.and_then(|sdp| {
            if sdp.trim().is_empty() {
                Err(MediaError::Failed("empty SDP answer".into()))
            } else {
                Ok(sdp)
            }
        });
        let key = self.pending.iter().find_map(|(k, p)| match p.stage {
            Stage::Offer {
                call: c, token: t, ..
            } if c == call && t == token => Some(k.clone()),
            _ => None,
        });
        if let Some(key) = key {
            let p = self.pending.remove(&key).expect("found above");
            match result {
                Ok(sdp) => self.answer_invite(call, &p.req, &p.to_tag, sdp, now, &mut out),
                Err(e) => {
                    let w = self.warning(&e.to_string());
                    self.reply_with(&mut out, &p.req, e.status(), Some(&p.to_tag), &[w]);
                    self.end_call(call, EndReason::MediaFailed(e.to_string()), &mut out);
                }
            }
            return out;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return out;
        };
        if c.reoffer.as_ref().is_none_or(|r| r.token != token) {
            return out;
        }
        let r = c.reoffer.take().expect("checked above");
        match result {
            Ok(sdp) => {
                self.answer_invite(call, &r.req, &c_tag(&self.calls, call), sdp, now, &mut out)
            }
            Err(e) => {
                let w = self.warning(&e.to_string());
                let tag = c_tag(&self.calls, call);
                self.reply_with(&mut out, &r.req, e.status(), Some(&tag), &[w]);
            }
        }
        out
    }

    /// 200 OK with our SDP to an INVITE (initial or re-) or an UPDATE.
    fn answer_invite(
        &mut self,
        id: CallId,
        req: &Request,
        to_tag: &str,
        sdp: String,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.calls.get(&id) else { return };
        let mut r = self.response(&req.headers, 200, Some(to_tag));
        for rr in req.headers.get_all("Record-Route") {
            r.headers.push("Record-Route", rr);
        }
        r.headers.push("Contact", c.contact.clone());
        r.headers.push("Allow", ALLOW);
        r.headers.push("Content-Type", "application/sdp");
        r.body = sdp;
        Self::send(out, r);
        let c = self.calls.get_mut(&id).expect("checked above");
        if req.method == Method::Invite {
            c.state = CallState::AwaitingAck {
                cseq: req.cseq().map_or(0, |s| s.seq),
                deadline: now.mono + self.cfg.limits.ack_timeout,
            };
        }
        if !c.answered {
            c.answered = true;
            out.push(Action::Answered {
                call: c.info.clone(),
            });
        }
    }

    // ----- in-dialog ---------------------------------------------------------------------------

    fn in_dialog(&mut self, id: CallId, req: Request, now: Now, out: &mut Vec<Action>) {
        let seq = req.cseq().map_or(0, |c| c.seq);
        let (tag, remote_cseq) = {
            let c = &self.calls[&id];
            (c.local_tag.clone(), c.remote_cseq)
        };
        if seq <= remote_cseq {
            let w = self.warning("CSeq out of order");
            return self.reply_with(out, &req, 500, Some(&tag), &[w]);
        }
        if let Some(c) = self.calls.get_mut(&id) {
            c.remote_cseq = seq;
        }
        match &req.method {
            Method::Bye => {
                self.reply(out, &req, 200, Some(&tag));
                if let Some(r) = self.calls.get_mut(&id).and_then(|c| c.reoffer.take()) {
                    self.reply(out, &r.req, 487, Some(&tag));
                }
                self.end_call(id, EndReason::RemoteBye, out);
            }
            Method::Invite | Method::Update => self.on_reoffer(id, req, &tag, now, out),
            Method::Info => {
                self.reply(out, &req, 200, Some(&tag));
                if let Some(event) = info_event(req.headers.get("Content-Type"), &req.body) {
                    let call = self.calls[&id].info.clone();
                    out.push(Action::Event { call, event });
                }
            }
            Method::Options => self.options(&req, Some(&tag), out),
            Method::Prack => self.reply(out, &req, 481, Some(&tag)),
            m if NOT_ALLOWED.contains(m) || *m == Method::Register => {
                self.reply_with(out, &req, 405, Some(&tag), &[("Allow", ALLOW.to_string())])
            }
            _ => self.reply(out, &req, 501, Some(&tag)),
        }
    }

    fn on_reoffer(&mut self, id: CallId, req: Request, tag: &str, now: Now, out: &mut Vec<Action>) {
        let is_invite = req.method == Method::Invite;
        if is_invite {
            Self::send(out, self.response(&req.headers, 100, None));
        }
        let c = &self.calls[&id];
        let busy = c.reoffer.is_some() || (is_invite && c.state != CallState::Confirmed);
        if busy {
            return self.reply_with(out, &req, 491, Some(tag), &[("Retry-After", "1".into())]);
        }
        if req.body.trim().is_empty() {
            if is_invite {
                let w = self.warning("a re-INVITE needs an SDP offer");
                return self.reply_with(out, &req, 488, Some(tag), &[w]);
            }
            // An UPDATE without SDP only refreshes the dialog.
            let contact = c.contact.clone();
            return self.reply_with(out, &req, 200, Some(tag), &[("Contact", contact)]);
        }
        if !content_type_is(&req, "application/sdp") {
            return self.reply_with(
                out,
                &req,
                415,
                Some(tag),
                &[("Accept", "application/sdp".into())],
            );
        }
        let token = self.id();
        let c = self.calls.get_mut(&id).expect("checked by the caller");
        if let Some(target) = req
            .headers
            .get("Contact")
            .and_then(|v| split_list(v).first().and_then(|v| NameAddr::parse(v)))
        {
            c.remote_target = target.uri_text;
        }
        let sdp = req.body.clone();
        c.reoffer = Some(Reoffer {
            key: tx_key(&req),
            req,
            token,
            deadline: now.mono + self.cfg.limits.offer_timeout,
        });
        out.push(Action::Reoffer {
            call: c.info.clone(),
            sdp,
            token,
        });
    }

    /// Removes a call and says so.
    fn end_call(&mut self, id: CallId, reason: EndReason, out: &mut Vec<Action>) {
        let Some(c) = self.calls.remove(&id) else {
            return;
        };
        self.pending
            .retain(|_, p| !matches!(p.stage, Stage::Offer { call, .. } if call == id));
        bump(&self.cfg.stats.calls_ended);
        out.push(Action::Ended {
            call: c.info,
            answered: c.answered,
            reason,
        });
    }

    /// A BYE for an answered call, with a Reason header (RFC 3326).
    fn bye(&mut self, id: CallId, reason: &str, out: &mut Vec<Action>) {
        let host = self.cfg.host.clone();
        let transport = if self.secure { "WSS" } else { "WS" };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.local_cseq += 1;
        let branch = format!("z9hG4bK{}", random_token(16));
        let mut h = Headers::new();
        h.push("Via", format!("SIP/2.0/{transport} {host};branch={branch}"));
        h.push("Max-Forwards", "70");
        for r in &c.route_set {
            h.push("Route", r.clone());
        }
        h.push("From", c.local_party.clone());
        h.push("To", c.remote_party.clone());
        h.push("Call-ID", c.info.sip_call_id.clone());
        h.push("CSeq", format!("{} BYE", c.local_cseq));
        h.push(
            "Reason",
            format!("Q.850;cause=16;text=\"{}\"", quoted(reason)),
        );
        h.push("User-Agent", SERVER);
        let uri = if c.remote_target.is_empty() {
            format!("sip:{}", self.peer)
        } else {
            c.remote_target.clone()
        };
        let bye = Request {
            method: Method::Bye,
            uri,
            headers: h,
            body: String::new(),
        };
        let t = self.clock;
        if self.our_requests.len() >= MAX_TRACKED_TX {
            self.our_requests.retain(|_, d| *d > t);
        }
        self.our_requests
            .insert(branch, t + Duration::from_secs(32));
        out.push(Action::Send(bye.to_string()));
    }

    /// Ends a call from our side: BYE (with `reason` in its Reason header) if it was answered,
    /// else a 480 to its INVITE.
    pub fn hangup(&mut self, id: CallId, reason: &str, now: Now) -> Vec<Action> {
        self.clock = now.mono;
        let mut out = Vec::new();
        let Some(c) = self.calls.get_mut(&id) else {
            return out;
        };
        let tag = c.local_tag.clone();
        let reoffer = c.reoffer.take();
        if c.answered {
            if let Some(r) = reoffer {
                self.reply(&mut out, &r.req, 487, Some(&tag));
            }
            self.bye(id, reason, &mut out);
        } else if let Some(key) = self.pending.iter().find_map(|(k, p)| {
            matches!(p.stage, Stage::Offer { call, .. } if call == id).then(|| k.clone())
        }) {
            let p = self.pending.remove(&key).expect("found above");
            let reason_header = format!("Q.850;cause=16;text=\"{}\"", quoted(reason));
            self.reply_with(
                &mut out,
                &p.req,
                480,
                Some(&p.to_tag),
                &[("Reason", reason_header)],
            );
        }
        self.end_call(id, EndReason::Hangup(reason.to_string()), &mut out);
        out
    }

    /// [`Self::hangup`] for every call of the connection (the server is shutting down).
    pub fn hangup_all(&mut self, reason: &str, now: Now) -> Vec<Action> {
        let mut ids: Vec<CallId> = self.calls.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .flat_map(|id| self.hangup(id, reason, now))
            .collect()
    }

    // ----- time and closing --------------------------------------------------------------------

    /// The earliest deadline, if any: call [`Self::on_timer`] then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let lookups = self.lookups.values().map(|(d, _)| *d);
        let offers = self.pending.values().filter_map(|p| match p.stage {
            Stage::Offer { deadline, .. } => Some(deadline),
            Stage::Lookup(..) => None,
        });
        let acks = self.calls.values().filter_map(|c| match c.state {
            CallState::AwaitingAck { deadline, .. } => Some(deadline),
            _ => None,
        });
        let reoffers = self
            .calls
            .values()
            .filter_map(|c| c.reoffer.as_ref().map(|r| r.deadline));
        let bindings = self.bindings.iter().map(|b| b.expires_at);
        lookups
            .chain(offers)
            .chain(acks)
            .chain(reoffers)
            .chain(bindings)
            .min()
    }

    /// Handles every deadline that has passed.
    pub fn on_timer(&mut self, now: Now) -> Vec<Action> {
        self.clock = now.mono;
        let mut out = Vec::new();
        let t = now.mono;
        self.completed.retain(|_, d| *d > t);
        self.our_requests.retain(|_, d| *d > t);

        let late: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, (d, _))| *d <= t)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some((_, for_)) = self.lookups.remove(&id) else {
                continue;
            };
            let retry = [("Retry-After", "5".to_string())];
            match for_ {
                LookupFor::Register(reg) => self.reply_with(&mut out, &reg.req, 503, None, &retry),
                LookupFor::Invite(key) => {
                    if let Some(p) = self.pending.remove(&key) {
                        self.reply_with(&mut out, &p.req, 503, Some(&p.to_tag), &retry);
                    }
                }
            }
        }

        let late: Vec<CallId> = self
            .pending
            .values()
            .filter_map(|p| match p.stage {
                Stage::Offer { call, deadline, .. } if deadline <= t => Some(call),
                _ => None,
            })
            .collect();
        for id in late {
            self.fail_offer(id, &mut out);
        }

        let late: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.state, CallState::AwaitingAck { deadline, .. } if deadline <= t))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.bye(id, "no ACK", &mut out);
            self.end_call(id, EndReason::AckTimeout, &mut out);
        }

        let late: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.reoffer.as_ref().is_some_and(|r| r.deadline <= t))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let c = self.calls.get_mut(&id).expect("listed above");
            let r = c.reoffer.take().expect("listed above");
            let tag = c.local_tag.clone();
            let w = self.warning("media timeout");
            self.reply_with(&mut out, &r.req, 500, Some(&tag), &[w]);
        }

        let before = self.registered();
        self.bindings.retain(|b| b.expires_at > t);
        let after = self.registered();
        for (dev, user) in before {
            if !after.contains(&(dev, user)) {
                out.push(Action::Unregistered { dev, user });
            }
        }
        out
    }

    fn fail_offer(&mut self, id: CallId, out: &mut Vec<Action>) {
        let key = self.pending.iter().find_map(|(k, p)| {
            matches!(p.stage, Stage::Offer { call, .. } if call == id).then(|| k.clone())
        });
        if let Some(p) = key.and_then(|k| self.pending.remove(&k)) {
            let w = self.warning("media timeout");
            self.reply_with(out, &p.req, 504, Some(&p.to_tag), &[w]);
        }
        self.end_call(id, EndReason::MediaFailed("timeout".into()), out);
    }

    /// The connection is gone: every call ends, every binding goes. Nothing can be sent.
    pub fn close(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let ids = self.calls();
        for id in ids {
            self.end_call(id, EndReason::ConnectionClosed, &mut out);
        }
        for (dev, user) in self.registered() {
            out.push(Action::Unregistered { dev, user });
        }
        self.bindings.clear();
        self.pending.clear();
        self.lookups.clear();
        out
    }
}

fn c_tag(calls: &HashMap<CallId, Call>, id: CallId) -> String {
    calls
        .get(&id)
        .map(|c| c.local_tag.clone())
        .unwrap_or_default()
}

/// Moves the (single) `name` header right after the last `after` header.
fn reorder_after(h: &mut Headers, name: &str, after: &str) {
    let Some(value) = h.get(name).map(str::to_string) else {
        return;
    };
    let mut out = Headers::new();
    let items: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let last_after = items
        .iter()
        .rposition(|(n, _)| n.eq_ignore_ascii_case(after));
    let mut placed = false;
    for (i, (n, v)) in items.iter().enumerate() {
        out.push(n, v.clone());
        if Some(i) == last_after {
            out.push(name, value.clone());
            placed = true;
        }
    }
    if !placed {
        out.push(name, value);
    }
    *h = out;
}
