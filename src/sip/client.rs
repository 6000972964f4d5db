//! A JsSIP-like SIP-over-WebSocket client (RFC 7118), shared by the test suite and
//! `comet-loadgen`: [`Ua`] writes what JsSIP 2.0.6 / 3.x writes (Via `*.invalid`, Contact
//! `sip:xxx@yyy.invalid;transport=ws`, digest with qop=auth, the ACK of a non-2xx in the INVITE's
//! transaction), [`Msg`] reads messages independently of the server's parser, and [`SipClient`]
//! is one WebSocket connection with subprotocol `sip` that keeps a transcript of everything it
//! sent and received. Every wait has a deadline; failures are [`ClientError`]s carrying the
//! transcript.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A SIP message as the client reads it (independent of the server's parser).
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
    /// Reads a message; `None` when it has no header/body separator or a header line without
    /// a colon.
    pub fn try_parse(raw: &str) -> Option<Msg> {
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let first = lines.next()?.to_string();
        let mut headers = Vec::new();
        for l in lines {
            let (n, v) = l.split_once(':')?;
            headers.push((expand(n.trim()), v.trim().to_string()));
        }
        Some(Msg {
            first,
            headers,
            body: body.to_string(),
            raw: raw.to_string(),
        })
    }

    /// Reads a message the caller built itself; panics on a malformed one.
    pub fn parse(raw: &str) -> Msg {
        Msg::try_parse(raw).unwrap_or_else(|| panic!("not a SIP message: {raw:?}"))
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
        let v = self.h("cseq").unwrap_or("");
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
        let realm = challenge
            .auth_param("www-authenticate", "realm")
            .unwrap_or_default();
        let nonce = challenge
            .auth_param("www-authenticate", "nonce")
            .unwrap_or_default();
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
            resp.h("to").unwrap_or_default(),
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
        s.remote_target = ok.h("contact").and_then(|contact| {
            let uri = contact.trim().trim_start_matches('<').split('>').next()?;
            Some(uri.to_string())
        });
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
            m.first.split(' ').nth(1).unwrap_or_default(),
            m.h("via").unwrap_or_default(),
            m.h("to").unwrap_or_default(),
            m.h("from").unwrap_or_default(),
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
            out.push_str(&format!("{name}: {}\r\n", req.h(name).unwrap_or_default()));
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
pub fn jssip_accepts(resp: &Msg, ua: &Ua) -> Result<(), String> {
    let vias = resp.all("via");
    if vias.len() != 1 {
        return Err(format!("{} Vias (JsSIP wants one)", vias.len()));
    }
    let sent_by = vias[0].split(';').next().unwrap_or_default();
    let mine = format!("SIP/2.0/{} {}", ua.transport, ua.via_host);
    if sent_by != mine {
        return Err(format!("Via {sent_by:?} is not ours ({mine:?})"));
    }
    let cl: Option<usize> = resp.h("content-length").and_then(|v| v.parse().ok());
    if cl != Some(resp.body.len()) {
        return Err(format!(
            "Content-Length {cl:?} for a body of {} bytes",
            resp.body.len()
        ));
    }
    for h in ["from", "to", "call-id", "cseq"] {
        if resp.h(h).is_none() {
            return Err(format!("no {h} header"));
        }
    }
    Ok(())
}

/// How long one SIP exchange may take.
pub const SIP_WAIT: Duration = Duration::from_secs(10);

/// Why a SIP exchange failed; `transcript` is everything sent and received on the connection.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub what: String,
    pub transcript: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nSIP transcript:\n{}", self.what, self.transcript)
    }
}

impl std::error::Error for ClientError {}

/// One SIP-over-WebSocket connection, as one JsSIP `UA` has it.
pub struct SipClient {
    pub ua: Ua,
    out: mpsc::UnboundedSender<String>,
    inbox: mpsc::UnboundedReceiver<Msg>,
    /// Messages that arrived while waiting for something else (server requests, mostly).
    pending: VecDeque<Msg>,
    transcript: Arc<Mutex<Vec<String>>>,
    /// Whether to keep the transcript (a load generator with a thousand clients does not).
    keep_transcript: bool,
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
    pub async fn connect(addr: std::net::SocketAddr, ua: Ua) -> Result<SipClient, ClientError> {
        Self::connect_with(addr, ua, true).await
    }

    /// [`SipClient::connect`], optionally without keeping a transcript.
    pub async fn connect_with(
        addr: std::net::SocketAddr,
        ua: Ua,
        keep_transcript: bool,
    ) -> Result<SipClient, ClientError> {
        let fail = |what: String| ClientError {
            what,
            transcript: String::new(),
        };
        let mut req = format!("ws://{addr}/")
            .into_client_request()
            .map_err(|e| fail(format!("bad SIP address {addr}: {e}")))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static("sip"),
        );
        let (ws, resp) = tokio::time::timeout(SIP_WAIT, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| {
                fail(format!(
                    "no SIP WebSocket handshake with {addr} within {SIP_WAIT:?}"
                ))
            })?
            .map_err(|e| fail(format!("SIP WebSocket handshake with {addr}: {e}")))?;
        let proto = resp.headers().get("Sec-WebSocket-Protocol");
        if proto.is_none_or(|p| p != "sip") {
            return Err(fail(format!(
                "the server answered subprotocol {proto:?}, not \"sip\""
            )));
        }
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
            let note = |line: String| {
                if keep_transcript {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            };
            loop {
                match stream.next().await {
                    Some(Ok(WsMessage::Text(t))) => {
                        note(format!("<<< to {who}\n{}", t.as_str()));
                        match Msg::try_parse(t.as_str()) {
                            Some(m) => {
                                if in_tx.send(m).is_err() {
                                    break;
                                }
                            }
                            None => note("--- (not a SIP message: ignored)".into()),
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | None => {
                        note("--- closed by the server".into());
                        break;
                    }
                    Some(Err(e)) => {
                        note(format!("--- WebSocket error: {e}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
        });
        Ok(SipClient {
            ua,
            out,
            inbox,
            pending: Default::default(),
            transcript,
            keep_transcript,
            tasks: vec![writer, reader],
        })
    }

    /// Everything sent and received so far.
    pub fn transcript(&self) -> String {
        self.transcript
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    fn error(&self, what: String) -> ClientError {
        ClientError {
            what: format!("{}: {what}", self.ua.user),
            transcript: self.transcript(),
        }
    }

    pub fn send(&self, text: String) {
        if self.keep_transcript {
            self.transcript
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(">>> from {}\n{text}", self.ua.user));
        }
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
    async fn response(&mut self, method: &str, final_only: bool) -> Result<Msg, ClientError> {
        let deadline = Instant::now() + SIP_WAIT;
        let mut aside = Vec::new();
        let found = loop {
            let next = match self.pending.pop_front() {
                Some(m) => Some(m),
                None => timeout_at(deadline, self.inbox.recv()).await.ok().flatten(),
            };
            let Some(m) = next else { break None };
            match m.status() {
                Some(s) if m.cseq().1 == method && (s >= 200 || !final_only) => break Some(m),
                Some(_) => {}
                None => aside.push(m),
            }
        };
        self.pending.extend(aside);
        let m = found
            .ok_or_else(|| self.error(format!("no response to {method} within {SIP_WAIT:?}")))?;
        jssip_accepts(&m, &self.ua)
            .map_err(|e| self.error(format!("JsSIP would drop this {method} response: {e}")))?;
        Ok(m)
    }

    /// The next final response to a request `method`, checked to be `status`.
    pub async fn expect_final(&mut self, method: &str, status: u16) -> Result<Msg, ClientError> {
        let m = self.response(method, true).await?;
        if m.status() != Some(status) {
            return Err(self.error(format!("{method} answered {}", m.first)));
        }
        Ok(m)
    }

    /// Waits for a request `method` from the server (other requests are put aside).
    pub async fn expect_request(
        &mut self,
        method: &str,
        deadline: Instant,
    ) -> Result<Msg, ClientError> {
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
        found.ok_or_else(|| self.error(format!("no {method} from the server")))
    }

    /// REGISTER → 401 → REGISTER with credentials; the final answer.
    pub async fn register(&mut self) -> Result<Msg, ClientError> {
        let text = self.ua.register(600, None);
        self.send(text);
        let ch = self.response("REGISTER", true).await?;
        if ch.status() != Some(401) {
            return Ok(ch);
        }
        let text = self.ua.register(600, Some(&ch));
        self.send(text);
        self.response("REGISTER", true).await
    }

    /// INVITE → 401 → ACK → INVITE with credentials; the session and the final answer.
    pub async fn invite(&mut self, number: &str, sdp: &str) -> Result<(Session, Msg), ClientError> {
        let mut s = self.ua.new_session(number);
        let text = self.ua.invite(&mut s, None, sdp);
        self.send(text);
        let ch = self.expect_final("INVITE", 401).await?;
        let ack = self.ua.ack_failure(&s, &ch);
        self.send(ack);
        let text = self.ua.invite(&mut s, Some(&ch), sdp);
        self.send(text);
        let fin = self.response("INVITE", true).await?;
        if fin.status() != Some(200) {
            let ack = self.ua.ack_failure(&s, &fin);
            self.send(ack);
        }
        Ok((s, fin))
    }

    /// An answered call: INVITE with credentials, 200 OK with an SDP answer, ACK. Returns the
    /// session and the answer.
    pub async fn call(
        &mut self,
        number: &str,
        sdp: &str,
    ) -> Result<(Session, String), ClientError> {
        let (mut s, ok) = self.invite(number, sdp).await?;
        if ok.status() != Some(200) {
            return Err(self.error(format!("INVITE {number} answered {}", ok.first)));
        }
        if ok.h("content-type") != Some("application/sdp") {
            return Err(self.error(format!(
                "the 200 OK to INVITE has Content-Type {:?}",
                ok.h("content-type")
            )));
        }
        self.ua.established(&mut s, &ok);
        let ack = self.ua.in_dialog(&mut s, "ACK", "", "");
        self.send(ack);
        Ok((s, ok.body))
    }

    /// Hangs up: BYE, 200 OK.
    pub async fn bye(&mut self, s: &mut Session) -> Result<(), ClientError> {
        let text = self.ua.in_dialog(s, "BYE", "", "");
        self.send(text);
        self.expect_final("BYE", 200).await.map(|_| ())
    }

    /// Answers a request from the server.
    pub fn respond(&self, req: &Msg, status: u16, reason: &str) {
        let text = self.ua.respond(req, status, reason);
        self.send(text);
    }
}
