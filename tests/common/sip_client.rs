//! A JsSIP-like SIP-over-WebSocket test client (RFC 7118): the user agent writes what JsSIP
//! 2.0.6 / 3.x writes (Via `*.invalid`, Contact `sip:xxx@yyy.invalid;transport=ws`, digest with
//! qop=auth, ACK of a non-2xx in the INVITE's transaction; adapted from `tests/sip_support`), a
//! message reader independent of the server's parser, and [`SipClient`]: one WebSocket
//! connection with subprotocol `sip` that keeps a transcript of everything it sent and received
//! for failure messages. Every wait has a deadline.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A message read by the test side.
#[derive(Debug, Clone)]
pub struct Msg {
    pub first: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw: String,
}

fn expand(name: &str) -> String {
    let full = match name.to_ascii_lowercase().as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        other => return other.to_string(),
    };
    full.to_string()
}

impl Msg {
    pub fn parse(raw: &str) -> Msg {
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no blank line in {raw:?}"));
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap().to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad line {l:?}"));
                (expand(n.trim()), v.trim().to_string())
            })
            .collect();
        Msg {
            first,
            headers,
            body: body.to_string(),
            raw: raw.to_string(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        let rest = self.first.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    pub fn method(&self) -> Option<&str> {
        if self.first.starts_with("SIP/2.0 ") {
            None
        } else {
            self.first.split(' ').next()
        }
    }

    pub fn h(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn cseq(&self) -> (u32, String) {
        let v = self.h("cseq").expect("CSeq");
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, it.next().unwrap_or("").to_string())
    }

    pub fn to_tag(&self) -> Option<String> {
        param(self.h("to")?, "tag")
    }

    /// The value of `name="..."` or `name=...` in a header value.
    pub fn auth_param(&self, header: &str, name: &str) -> Option<String> {
        auth_param(self.h(header)?, name)
    }
}

/// `;name=value` in a header value.
pub fn param(value: &str, name: &str) -> Option<String> {
    let key = format!(";{name}=");
    let at = value.find(&key)? + key.len();
    let rest = &value[at..];
    let end = rest.find([';', ',', '>', ' ']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

pub fn auth_param(value: &str, name: &str) -> Option<String> {
    for part in value.trim_start_matches("Digest").split(',') {
        let (n, v) = part.trim().split_once('=')?;
        if n.trim() == name {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token(seed: &mut u64, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            CHARS[((*seed >> 33) % CHARS.len() as u64) as usize] as char
        })
        .collect()
}

/// One INVITE session on the client side.
#[derive(Debug, Clone)]
pub struct Session {
    pub target: String,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub cseq: u32,
    pub invite_branch: String,
    /// The last INVITE sent (for CANCEL and the ACK of a non-2xx).
    pub last_invite: String,
    /// The remote target (the Contact of the 200 OK).
    pub remote_target: Option<String>,
}

/// A JsSIP-like user agent.
pub struct Ua {
    pub user: String,
    pub password: String,
    pub host: String,
    pub transport: &'static str,
    pub via_host: String,
    pub contact_user: String,
    pub reg_call_id: String,
    pub reg_cseq: u32,
    pub reg_from_tag: String,
    seed: u64,
}

impl Ua {
    pub fn new(user: &str, password: &str, host: &str, seed: u64) -> Ua {
        let mut seed = seed.wrapping_add(0x9e3779b97f4a7c15);
        let via_host = format!("{}.invalid", token(&mut seed, 12));
        let contact_user = token(&mut seed, 8);
        let reg_call_id = token(&mut seed, 22);
        let reg_from_tag = token(&mut seed, 10);
        Ua {
            user: user.into(),
            password: password.into(),
            host: host.into(),
            transport: "WS",
            via_host,
            contact_user,
            reg_call_id,
            reg_cseq: 0,
            reg_from_tag,
            seed,
        }
    }

    pub fn token(&mut self, len: usize) -> String {
        token(&mut self.seed, len)
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token(7))
    }

    pub fn contact(&self) -> String {
        format!("<sip:{}@{};transport=ws>", self.contact_user, self.via_host)
    }

    /// The Authorization header JsSIP sends after `challenge` (a 401).
    pub fn authorization(&mut self, challenge: &Msg, method: &str, uri: &str) -> String {
        let realm = challenge.auth_param("www-authenticate", "realm").unwrap();
        let nonce = challenge.auth_param("www-authenticate", "nonce").unwrap();
        let cnonce = self.token(12);
        let ha1 = md5_hex(&format!("{}:{realm}:{}", self.user, self.password));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        format!(
            "Digest algorithm=MD5, username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", qop=auth, cnonce=\"{cnonce}\", nc=00000001",
            self.user
        )
    }

    pub fn register(&mut self, expires: u32, challenge: Option<&Msg>) -> String {
        self.reg_cseq += 1;
        let uri = format!("sip:{}", self.host);
        let auth = challenge
            .map(|c| {
                format!(
                    "Authorization: {}\r\n",
                    self.authorization(c, "REGISTER", &uri)
                )
            })
            .unwrap_or_default();
        let branch = self.branch();
        format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};branch={branch}\r\n\
             Max-Forwards: 69\r\n\
             To: <sip:{}@{}>\r\n\
             From: \"{}\" <sip:{}@{}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {} REGISTER\r\n\
             {auth}\
             Contact: {};+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:5b8e2a4c-0000-4000-8000-000000000001>\";expires={expires}\r\n\
             Expires: {expires}\r\n\
             Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO\r\n\
             Supported: path,gruu,outbound\r\n\
             User-Agent: JsSIP 3.10.0\r\n\
             Content-Length: 0\r\n\r\n",
            self.transport,
            self.via_host,
            self.user,
            self.host,
            self.user,
            self.user,
            self.host,
            self.reg_from_tag,
            self.reg_call_id,
            self.reg_cseq,
            self.contact(),
        )
    }

    pub fn new_session(&mut self, number: &str) -> Session {
        Session {
            target: format!("sip:{number}@{}", self.host),
            call_id: self.token(22),
            from_tag: self.token(10),
            to_tag: None,
            cseq: self.seed as u32 % 8000 + 1,
            invite_branch: String::new(),
            last_invite: String::new(),
            remote_target: None,
        }
    }

    /// An initial INVITE (or its authenticated retry when `challenge` is given: CSeq + 1, new
    /// branch, same Call-ID and From tag).
    pub fn invite(&mut self, s: &mut Session, challenge: Option<&Msg>, sdp: &str) -> String {
        if challenge.is_some() {
            s.cseq += 1;
        }
        let target = s.target.clone();
        let auth = challenge
            .map(|c| {
                format!(
                    "Authorization: {}\r\n",
                    self.authorization(c, "INVITE", &target)
                )
            })
            .unwrap_or_default();
        s.invite_branch = self.branch();
        let text = format!(
            "INVITE {target} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};branch={}\r\n\
             Max-Forwards: 69\r\n\
             To: <{target}>\r\n\
             From: \"{}\" <sip:{}@{}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {} INVITE\r\n\
             {auth}\
             Contact: {}\r\n\
             Content-Type: application/sdp\r\n\
             Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO\r\n\
             Supported: ice,replaces,outbound\r\n\
             User-Agent: JsSIP 3.10.0\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            self.transport,
            self.via_host,
            s.invite_branch,
            self.user,
            self.user,
            self.host,
            s.from_tag,
            s.call_id,
            s.cseq,
            self.contact(),
            sdp.len(),
        );
        s.last_invite = text.clone();
        text
    }

    /// The ACK of a non-2xx final response: same branch, the response's To.
    pub fn ack_failure(&self, s: &Session, resp: &Msg) -> String {
        format!(
            "ACK {} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};branch={}\r\n\
             Max-Forwards: 69\r\n\
             To: {}\r\n\
             From: \"{}\" <sip:{}@{}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            s.target,
            self.transport,
            self.via_host,
            s.invite_branch,
            resp.h("to").unwrap(),
            self.user,
            self.user,
            self.host,
            s.from_tag,
            s.call_id,
            s.cseq,
        )
    }

    /// Records a 2xx to the INVITE (dialog established).
    pub fn established(&self, s: &mut Session, ok: &Msg) {
        s.to_tag = ok.to_tag();
        let contact = ok.h("contact").expect("a 200 OK to INVITE has a Contact");
        let uri = contact
            .trim()
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string();
        s.remote_target = Some(uri);
    }

    /// An in-dialog request (ACK of a 2xx uses the INVITE's CSeq; others increment).
    pub fn in_dialog(&mut self, s: &mut Session, method: &str, extra: &str, body: &str) -> String {
        if method != "ACK" {
            s.cseq += 1;
        }
        let branch = self.branch();
        if method == "INVITE" {
            s.invite_branch = branch.clone();
        }
        let uri = s.remote_target.clone().unwrap_or(s.target.clone());
        let text = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};branch={branch}\r\n\
             Max-Forwards: 69\r\n\
             To: <{}>;tag={}\r\n\
             From: \"{}\" <sip:{}@{}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {} {method}\r\n\
             {extra}\
             Content-Length: {}\r\n\r\n{body}",
            self.transport,
            self.via_host,
            s.target,
            s.to_tag.clone().unwrap_or_default(),
            self.user,
            self.user,
            self.host,
            s.from_tag,
            s.call_id,
            s.cseq,
            body.len(),
        );
        if method == "INVITE" {
            s.last_invite = text.clone();
        }
        text
    }

    /// CANCEL of the last INVITE (same branch, same CSeq number).
    pub fn cancel(&self, s: &Session) -> String {
        let m = Msg::parse(&s.last_invite);
        format!(
            "CANCEL {} SIP/2.0\r\n\
             Via: {}\r\n\
             Max-Forwards: 69\r\n\
             To: {}\r\n\
             From: {}\r\n\
             Call-ID: {}\r\n\
             CSeq: {} CANCEL\r\n\
             Content-Length: 0\r\n\r\n",
            m.first.split(' ').nth(1).unwrap(),
            m.h("via").unwrap(),
            m.h("to").unwrap(),
            m.h("from").unwrap(),
            s.call_id,
            m.cseq().0,
        )
    }

    /// The response a UA sends to a request from the server (e.g. the server's BYE).
    pub fn respond(&self, req: &Msg, status: u16, reason: &str) -> String {
        let mut out = format!("SIP/2.0 {status} {reason}\r\n");
        for v in req.all("via") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            out.push_str(&format!("{name}: {}\r\n", req.h(name).unwrap()));
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out
    }

    pub fn options(&mut self) -> String {
        let branch = self.branch();
        let call_id = self.token(22);
        let tag = self.token(10);
        format!(
            "OPTIONS sip:{} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};branch={branch}\r\n\
             Max-Forwards: 69\r\n\
             To: <sip:{}>\r\n\
             From: <sip:{}@{}>;tag={tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            self.host, self.transport, self.via_host, self.host, self.user, self.host,
        )
    }
}

/// Checks what JsSIP requires of every response before it even looks at it: exactly one Via,
/// whose host is its own `*.invalid` and which has no port (SanityCheck rfc3261_18_1_2,
/// rfc3261_8_1_3_3), a CSeq, and a Content-Length not above the body length.
pub fn assert_jssip_accepts(resp: &Msg, ua: &Ua) {
    let vias = resp.all("via");
    assert_eq!(vias.len(), 1, "one Via in {}", resp.raw);
    let sent_by = vias[0].split(';').next().unwrap();
    assert_eq!(
        sent_by,
        format!("SIP/2.0/{} {}", ua.transport, ua.via_host),
        "Via host/port unchanged in {}",
        resp.raw
    );
    let cl: usize = resp.h("content-length").unwrap().parse().unwrap();
    assert_eq!(cl, resp.body.len());
    for h in ["from", "to", "call-id", "cseq"] {
        assert!(resp.h(h).is_some(), "{h} in {}", resp.raw);
    }
}

/// How long one SIP exchange may take.
pub const SIP_WAIT: Duration = Duration::from_secs(10);

/// One SIP-over-WebSocket connection, as one JsSIP `UA` has it.
pub struct SipClient {
    pub ua: Ua,
    out: mpsc::UnboundedSender<String>,
    inbox: mpsc::UnboundedReceiver<Msg>,
    /// Messages that arrived while waiting for something else (server requests, mostly).
    pending: std::collections::VecDeque<Msg>,
    transcript: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SipClient {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SipClient {
    /// Opens `ws://addr/` with the `sip` subprotocol.
    pub async fn connect(addr: std::net::SocketAddr, ua: Ua) -> SipClient {
        let mut req = format!("ws://{addr}/").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
        let (ws, resp) = tokio::time::timeout(SIP_WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("the SIP WebSocket handshake within the deadline")
            .expect("the SIP WebSocket handshake");
        assert_eq!(resp.headers().get("Sec-WebSocket-Protocol").unwrap(), "sip");
        let (mut sink, mut stream) = ws.split();
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, inbox) = mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(WsMessage::text(text)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let log = transcript.clone();
        let who = ua.user.clone();
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(WsMessage::Text(t))) => {
                        log.lock()
                            .unwrap()
                            .push(format!("<<< to {who}\n{}", t.as_str()));
                        if in_tx.send(Msg::parse(t.as_str())).is_err() {
                            break;
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | None => {
                        log.lock().unwrap().push("--- closed by the server".into());
                        break;
                    }
                    Some(Err(e)) => {
                        log.lock()
                            .unwrap()
                            .push(format!("--- WebSocket error: {e}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
        });
        SipClient {
            ua,
            out,
            inbox,
            pending: Default::default(),
            transcript,
            tasks: vec![writer, reader],
        }
    }

    /// Everything sent and received so far, for failure messages.
    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().join("\n")
    }

    pub fn send(&self, text: String) {
        self.transcript
            .lock()
            .unwrap()
            .push(format!(">>> from {}\n{text}", self.ua.user));
        let _ = self.out.send(text);
    }

    /// The next message (one put aside first), or `None` at the deadline or when the
    /// connection closed.
    pub async fn recv(&mut self, deadline: Instant) -> Option<Msg> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        timeout_at(deadline, self.inbox.recv()).await.ok().flatten()
    }

    /// The next response to our request with CSeq method `method`; provisional responses are
    /// skipped unless `final_only` is false, requests from the server are put aside.
    async fn response(&mut self, method: &str, final_only: bool) -> Msg {
        let deadline = Instant::now() + SIP_WAIT;
        let mut aside = Vec::new();
        let found = loop {
            let next = match self.pending.pop_front() {
                Some(m) => Some(m),
                None => timeout_at(deadline, self.inbox.recv()).await.ok().flatten(),
            };
            let Some(m) = next else { break None };
            match m.status() {
                Some(s) if m.cseq().1 == method && (s >= 200 || !final_only) => {
                    assert_jssip_accepts(&m, &self.ua);
                    break Some(m);
                }
                Some(_) => {}
                None => aside.push(m),
            }
        };
        self.pending.extend(aside);
        found.unwrap_or_else(|| {
            panic!(
                "{}: no response to {method} within {SIP_WAIT:?}\nSIP transcript:\n{}",
                self.ua.user,
                self.transcript()
            )
        })
    }

    /// The next final response to a request `method`, checked to be `status`.
    pub async fn expect_final(&mut self, method: &str, status: u16) -> Msg {
        let m = self.response(method, true).await;
        assert_eq!(
            m.status(),
            Some(status),
            "{}: {method} answered {}\nSIP transcript:\n{}",
            self.ua.user,
            m.first,
            self.transcript()
        );
        m
    }

    /// Waits for a request `method` from the server (other requests are put aside).
    pub async fn expect_request(&mut self, method: &str, deadline: Instant) -> Msg {
        let mut aside = Vec::new();
        let found = loop {
            let next = match self.pending.pop_front() {
                Some(m) => Some(m),
                None => timeout_at(deadline, self.inbox.recv()).await.ok().flatten(),
            };
            let Some(m) = next else { break None };
            if m.method() == Some(method) {
                break Some(m);
            }
            if m.method().is_some() {
                aside.push(m);
            }
        };
        self.pending.extend(aside);
        found.unwrap_or_else(|| {
            panic!(
                "{}: no {method} from the server\nSIP transcript:\n{}",
                self.ua.user,
                self.transcript()
            )
        })
    }

    /// REGISTER → 401 → REGISTER with credentials; the final answer.
    pub async fn register(&mut self) -> Msg {
        let text = self.ua.register(600, None);
        self.send(text);
        let ch = self.response("REGISTER", true).await;
        if ch.status() != Some(401) {
            return ch;
        }
        let text = self.ua.register(600, Some(&ch));
        self.send(text);
        self.response("REGISTER", true).await
    }

    /// INVITE → 401 → ACK → INVITE with credentials; the session and the final answer.
    pub async fn invite(&mut self, number: &str, sdp: &str) -> (Session, Msg) {
        let mut s = self.ua.new_session(number);
        let text = self.ua.invite(&mut s, None, sdp);
        self.send(text);
        let ch = self.expect_final("INVITE", 401).await;
        let ack = self.ua.ack_failure(&s, &ch);
        self.send(ack);
        let text = self.ua.invite(&mut s, Some(&ch), sdp);
        self.send(text);
        let fin = self.response("INVITE", true).await;
        if fin.status() != Some(200) {
            let ack = self.ua.ack_failure(&s, &fin);
            self.send(ack);
        }
        (s, fin)
    }

    /// An answered call: INVITE with credentials, 200 OK with an SDP answer, ACK. Returns the
    /// session and the answer.
    pub async fn call(&mut self, number: &str, sdp: &str) -> (Session, String) {
        let (mut s, ok) = self.invite(number, sdp).await;
        assert_eq!(
            ok.status(),
            Some(200),
            "{}: INVITE {number} answered {}\nSIP transcript:\n{}",
            self.ua.user,
            ok.first,
            self.transcript()
        );
        assert_eq!(ok.h("content-type"), Some("application/sdp"));
        self.ua.established(&mut s, &ok);
        let ack = self.ua.in_dialog(&mut s, "ACK", "", "");
        self.send(ack);
        (s, ok.body)
    }

    /// Hangs up: BYE, 200 OK.
    pub async fn bye(&mut self, s: &mut Session) {
        let text = self.ua.in_dialog(s, "BYE", "", "");
        self.send(text);
        self.expect_final("BYE", 200).await;
    }

    /// Answers a request from the server.
    pub fn respond(&self, req: &Msg, status: u16, reason: &str) {
        let text = self.ua.respond(req, status, reason);
        self.send(text);
    }
}
