//! SIP over WebSocket end to end on loopback: the listener from `comet_server::sip::serve`, a
//! JsSIP-like client over tokio-tungstenite, a memory store, the conference registry and a fake
//! media side that answers a fixed SDP. Every wait has a deadline.

mod sip_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use comet_server::conference::ConferenceRegistry;
use comet_server::sip::server::{WsLimits, tls_acceptor_from_pem};
use comet_server::sip::{
    CallEvent, CallHandler, CallInfo, EndReason, MediaError, SipContext, serve,
};
use comet_server::store::{ConferenceRow, MemoryStore, Store};
use futures_util::{SinkExt, StreamExt};
use sip_support::{Msg, SDP_OFFER, Session, Ua, assert_jssip_accepts};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const HOST: &str = "sip.test";
const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake media\r\nt=0 0\r\n";
const WAIT: Duration = Duration::from_secs(10);

/// The media side: records everything, answers a fixed SDP (or never, when `hold` is set).
struct Fake {
    offers: Mutex<Vec<CallInfo>>,
    reoffers: Mutex<Vec<String>>,
    events: Mutex<Vec<CallEvent>>,
    ended: Mutex<Vec<(CallInfo, EndReason)>>,
    hold: AtomicBool,
    changed: watch::Sender<u64>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            offers: Mutex::default(),
            reoffers: Mutex::default(),
            events: Mutex::default(),
            ended: Mutex::default(),
            hold: AtomicBool::new(false),
            changed: watch::channel(0).0,
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits (with a deadline) until `cond` holds.
    async fn wait(&self, what: &str, cond: impl Fn(&Fake) -> bool) {
        let mut rx = self.changed.subscribe();
        let r = tokio::time::timeout(WAIT, rx.wait_for(|_| cond(self))).await;
        assert!(r.is_ok(), "timed out waiting for: {what}");
    }

    fn ended(&self) -> Vec<EndReason> {
        self.ended
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }
}

#[async_trait]
impl CallHandler for Fake {
    async fn offer(&self, call: CallInfo, sdp: &str) -> Result<String, MediaError> {
        assert_eq!(sdp, SDP_OFFER);
        self.offers.lock().unwrap().push(call);
        self.bump();
        if self.hold.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(ANSWER.to_string())
    }

    async fn reoffer(&self, _call: &CallInfo, sdp: &str) -> Result<String, MediaError> {
        self.reoffers.lock().unwrap().push(sdp.to_string());
        self.bump();
        Ok(ANSWER.replace("fake media", "fake media again"))
    }

    fn event(&self, _call: &CallInfo, event: &CallEvent) {
        self.events.lock().unwrap().push(event.clone());
        self.bump();
    }

    fn ended(&self, call: &CallInfo, reason: &EndReason) {
        self.ended
            .lock()
            .unwrap()
            .push((call.clone(), reason.clone()));
        self.bump();
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

struct Env {
    addr: SocketAddr,
    ctx: SipContext,
    fake: Arc<Fake>,
    registry: Arc<ConferenceRegistry>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start_with(tls: bool, ws: WsLimits) -> Env {
    let store = Arc::new(MemoryStore::new());
    store.set_user_hash(0, 123, "hash-of-123").await.unwrap();
    store.set_user_hash(0, 124, "hash-of-124").await.unwrap();
    store.set_user_hash(7, 5, "hash-of-7-5").await.unwrap();
    store.put_conference_row(0, &row("101", 123)).await.unwrap();
    store.put_conference_row(7, &row("room", 5)).await.unwrap();
    let registry = Arc::new(ConferenceRegistry::new());
    let fake = Fake::new();
    let mut ctx = SipContext::new(store, HOST, registry.clone(), fake.clone()).with_ws_limits(ws);
    if tls {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.der"), ck.cert.der()).unwrap();
        let acceptor =
            tls_acceptor_from_pem(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
                .unwrap();
        ctx = ctx.with_tls(acceptor);
        *CA.lock().unwrap() = Some(ck.cert.der().to_vec());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, ctx.clone()));
    Env {
        addr,
        ctx,
        fake,
        registry,
        server,
    }
}

async fn start() -> Env {
    start_with(false, WsLimits::default()).await
}

static CA: Mutex<Option<Vec<u8>>> = Mutex::new(None);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Client {
    ws: WebSocketStream<Box<dyn Io>>,
    ua: Ua,
}

impl Client {
    async fn connect(env: &Env, ua: Ua) -> Client {
        Self::connect_io(
            Box::new(TcpStream::connect(env.addr).await.unwrap()),
            env,
            ua,
            "ws",
        )
        .await
    }

    async fn connect_tls(env: &Env, mut ua: Ua) -> Client {
        let ca = CA.lock().unwrap().clone().expect("a TLS server");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(env.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        ua.transport = "WSS";
        Self::connect_io(Box::new(tls), env, ua, "wss").await
    }

    async fn connect_io(io: Box<dyn Io>, env: &Env, ua: Ua, scheme: &str) -> Client {
        let mut req = format!("{scheme}://localhost:{}/", env.addr.port())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
        let (ws, resp) = tokio_tungstenite::client_async(req, io).await.unwrap();
        assert_eq!(resp.headers().get("Sec-WebSocket-Protocol").unwrap(), "sip");
        Client { ws, ua }
    }

    async fn send(&mut self, text: String) {
        self.ws.send(WsMessage::text(text)).await.unwrap();
    }

    /// The next SIP message, within the deadline.
    async fn recv(&mut self) -> Msg {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.ws.next())
                .await
                .expect("a SIP message within the deadline")
                .expect("the connection is open")
                .expect("no WebSocket error");
            if let WsMessage::Text(t) = frame {
                let m = Msg::parse(t.as_str());
                if m.status().is_some() {
                    assert_jssip_accepts(&m, &self.ua);
                }
                return m;
            }
        }
    }

    async fn expect(&mut self, status: u16) -> Msg {
        let m = self.recv().await;
        assert_eq!(m.status(), Some(status), "{}", m.raw);
        m
    }

    /// Waits until the server closes the connection.
    async fn closed(&mut self) {
        let r = tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "the server closes the connection");
    }

    async fn register(&mut self) -> Msg {
        let text = self.ua.register(600, None);
        self.send(text).await;
        let ch = self.expect(401).await;
        let text = self.ua.register(600, Some(&ch));
        self.send(text).await;
        self.recv().await
    }

    /// INVITE → 100 → 401 → ACK → INVITE with auth → 100; returns the session and the next
    /// response (the final one).
    async fn invite(&mut self, number: &str) -> (Session, Msg) {
        let mut s = self.ua.new_session(number);
        let text = self.ua.invite(&mut s, None, SDP_OFFER);
        self.send(text).await;
        self.expect(100).await;
        let ch = self.expect(401).await;
        let ack = self.ua.ack_failure(&s, &ch);
        self.send(ack).await;
        let text = self.ua.invite(&mut s, Some(&ch), SDP_OFFER);
        self.send(text).await;
        self.expect(100).await;
        let fin = self.recv().await;
        (s, fin)
    }

    /// A call to 0*101*video, answered and acknowledged.
    async fn call(&mut self) -> Session {
        let (mut s, ok) = self.invite("0*101*video").await;
        assert_eq!(ok.status(), Some(200), "{}", ok.raw);
        assert_eq!(ok.h("content-type"), Some("application/sdp"));
        assert_eq!(ok.body, ANSWER);
        self.ua.established(&mut s, &ok);
        let ack = self.ua.in_dialog(&mut s, "ACK", "", "");
        self.send(ack).await;
        s
    }
}

fn ua() -> Ua {
    Ua::new("000000123", "hash-of-123", HOST, 42)
}

#[tokio::test]
async fn connections_without_the_sip_subprotocol_are_refused_clearly() {
    let env = start().await;
    let mut tcp = TcpStream::connect(env.addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut resp))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("subprotocol"), "{resp}");
    assert_eq!(env.ctx.connections(), 0);
}

#[tokio::test]
async fn jssip_call_flow() {
    let env = start().await;
    let mut c = Client::connect(&env, ua()).await;

    let ok = c.register().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    assert!(ok.h("contact").unwrap().contains(&c.ua.contact_user));

    let mut s = c.call().await;
    let offers = env.fake.offers.lock().unwrap().clone();
    assert_eq!(offers.len(), 1);
    assert_eq!((offers[0].dev, offers[0].user), (0, 123));
    assert_eq!(offers[0].conference, "101");
    let members = env.registry.members(0, Some("101"), Instant::now());
    assert_eq!(members.len(), 1, "an answered call is a conference member");
    assert_eq!(members[0].user_id, 123);

    // Hold: a re-INVITE with a sendonly offer.
    let hold = SDP_OFFER.replace("a=sendrecv", "a=sendonly");
    let text =
        c.ua.in_dialog(&mut s, "INVITE", "Content-Type: application/sdp\r\n", &hold);
    c.send(text).await;
    c.expect(100).await;
    let ok = c.expect(200).await;
    assert!(ok.body.contains("fake media again"));
    let ack = c.ua.in_dialog(&mut s, "ACK", "", "");
    c.send(ack).await;
    assert_eq!(env.fake.reoffers.lock().unwrap().clone(), [hold]);

    // DTMF over INFO.
    let text = c.ua.in_dialog(
        &mut s,
        "INFO",
        "Content-Type: application/dtmf-relay\r\n",
        "Signal=#\r\nDuration=100\r\n",
    );
    c.send(text).await;
    c.expect(200).await;
    env.fake
        .wait("the DTMF event", |f| !f.events.lock().unwrap().is_empty())
        .await;
    assert_eq!(
        env.fake.events.lock().unwrap()[0],
        CallEvent::Dtmf {
            digit: '#',
            duration_ms: Some(100)
        }
    );

    // OPTIONS, in and out of the dialog.
    let text = c.ua.in_dialog(&mut s, "OPTIONS", "", "");
    c.send(text).await;
    assert!(c.expect(200).await.h("allow").unwrap().contains("BYE"));
    let text = c.ua.options();
    c.send(text).await;
    c.expect(200).await;

    let text = c.ua.in_dialog(&mut s, "BYE", "", "");
    c.send(text).await;
    c.expect(200).await;
    env.fake
        .wait("the call ends", |f| f.ended().len() == 1)
        .await;
    assert_eq!(env.fake.ended(), [EndReason::RemoteBye]);
    assert!(env.registry.members(0, None, Instant::now()).is_empty());
}

#[tokio::test]
async fn cancel_before_answer() {
    let env = start().await;
    env.fake.hold.store(true, Ordering::SeqCst);
    let mut c = Client::connect(&env, ua()).await;
    let mut s = c.ua.new_session("0*101*video");
    let text = c.ua.invite(&mut s, None, SDP_OFFER);
    c.send(text).await;
    c.expect(100).await;
    let ch = c.expect(401).await;
    let ack = c.ua.ack_failure(&s, &ch);
    c.send(ack).await;
    let text = c.ua.invite(&mut s, Some(&ch), SDP_OFFER);
    c.send(text).await;
    c.expect(100).await;
    env.fake
        .wait("the offer reaches the media side", |f| {
            f.offers.lock().unwrap().len() == 1
        })
        .await;
    let cancel = c.ua.cancel(&s);
    c.send(cancel).await;
    let ok = c.expect(200).await;
    assert_eq!(ok.cseq().1, "CANCEL");
    let terminated = c.expect(487).await;
    assert_eq!(terminated.cseq().1, "INVITE");
    let ack = c.ua.ack_failure(&s, &terminated);
    c.send(ack).await;
    env.fake
        .wait("the call ends", |f| f.ended().len() == 1)
        .await;
    assert_eq!(env.fake.ended(), [EndReason::Cancelled]);
    assert!(env.registry.members(0, None, Instant::now()).is_empty());
}

#[tokio::test]
async fn refusals_never_reach_the_media_side() {
    let env = start().await;

    // REGISTER with a wrong password.
    let mut bad = Client::connect(&env, Ua::new("000000123", "guess", HOST, 1)).await;
    assert_eq!(bad.register().await.status(), Some(403));
    // INVITE with a wrong password.
    let (_, fin) = bad.invite("0*101*video").await;
    assert_eq!(fin.status(), Some(403));

    let mut c = Client::connect(&env, ua()).await;
    // INVITE without credentials: challenged, and nothing more without an answer.
    let mut s = c.ua.new_session("0*101*video");
    let text = c.ua.invite(&mut s, None, SDP_OFFER);
    c.send(text).await;
    c.expect(100).await;
    let ch = c.expect(401).await;
    let ack = c.ua.ack_failure(&s, &ch);
    c.send(ack).await;
    // INVITE to a conference without an invitation.
    let (_, fin) = c.invite("0*999*video").await;
    assert_eq!(fin.status(), Some(403));
    // INVITE to another developer's conference (dev 7 invited its own user 5).
    let (_, fin) = c.invite("7*room*video").await;
    assert_eq!(fin.status(), Some(403));
    // Another user of dev 0 with their own correct password, not invited to 101.
    let mut other = Client::connect(&env, Ua::new("000000124", "hash-of-124", HOST, 9)).await;
    assert_eq!(other.register().await.status(), Some(200));
    let (_, fin) = other.invite("0*101*video").await;
    assert_eq!(fin.status(), Some(403));

    assert!(
        env.fake.offers.lock().unwrap().is_empty(),
        "no refused call reached the media side"
    );
    assert!(env.fake.ended().is_empty());
    assert!(env.registry.members(0, None, Instant::now()).is_empty());

    // The right user, invited: the only call that reaches the media side.
    c.call().await;
    let offers = env.fake.offers.lock().unwrap().clone();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].user, 123);
    assert!(env.ctx.stats().forbidden.load(Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn registry_hangup_sends_bye_with_reason() {
    let env = start().await;
    let mut c = Client::connect(&env, ua()).await;
    let s = c.call().await;
    assert_eq!(
        env.registry
            .hangup(0, "101", Some(123), "removed by the backend"),
        1
    );
    let bye = c.recv().await;
    assert_eq!(bye.method(), Some("BYE"), "{}", bye.raw);
    assert_eq!(bye.h("call-id"), Some(s.call_id.as_str()));
    let reason = bye.h("reason").expect("a Reason header");
    assert!(reason.contains("removed by the backend"), "{reason}");
    let ok = c.ua.respond(&bye, 200, "OK");
    c.send(ok).await;
    env.fake
        .wait("the call ends", |f| f.ended().len() == 1)
        .await;
    assert_eq!(
        env.fake.ended(),
        [EndReason::Hangup("removed by the backend".into())]
    );
    assert!(env.registry.members(0, None, Instant::now()).is_empty());
}

#[tokio::test]
async fn a_dropped_connection_ends_its_call() {
    let env = start().await;
    let mut c = Client::connect(&env, ua()).await;
    c.register().await;
    c.call().await;
    assert_eq!(env.registry.members(0, None, Instant::now()).len(), 1);
    drop(c); // no BYE, no WebSocket close: the TCP connection just goes
    env.fake
        .wait("the call ends", |f| f.ended().len() == 1)
        .await;
    assert_eq!(env.fake.ended(), [EndReason::ConnectionClosed]);
    assert!(env.registry.members(0, None, Instant::now()).is_empty());
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_the_idle_timeout() {
    let env = start_with(
        false,
        WsLimits {
            ping_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            ..WsLimits::default()
        },
    )
    .await;
    // A raw TCP client that completes the handshake and then never reads again (so it never
    // answers a ping).
    let mut tcp = TcpStream::connect(env.addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: sip\r\n\r\n",
    )
    .await
    .unwrap();
    // Read (pings included, never answered) until the server closes the connection.
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut seen))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 101"));
    assert_eq!(env.ctx.connections(), 0);
}

/// A client that keeps sending requests but never reads their responses: once a response has
/// waited for the socket longer than the write timeout, the connection is closed.
#[tokio::test]
async fn a_peer_that_does_not_read_is_closed_by_the_write_timeout() {
    let env = start_with(
        false,
        WsLimits {
            write_timeout: Duration::from_millis(300),
            ..WsLimits::default()
        },
    )
    .await;
    let mut c = Client::connect(&env, ua()).await;
    assert_eq!(env.ctx.connections(), 1);
    // OPTIONS with seven extra 7 KB Via headers, which every response copies: ~50 KB answers
    // fill the socket buffers after a few hundred requests.
    let vias: String = (0..7)
        .map(|i| {
            format!(
                "Via: SIP/2.0/WSS pad{i}.invalid;branch=z9hG4bK{}\r\n",
                "p".repeat(7000)
            )
        })
        .collect();
    let plain = c.ua.options();
    let at = plain.find("\r\nVia: ").unwrap() + 2;
    let at = at + plain[at..].find("\r\n").unwrap() + 2;
    let options = format!("{}{vias}{}", &plain[..at], &plain[at..]);
    // Writes until the server closes the connection (after forgetting it), never reads.
    tokio::time::timeout(WAIT, async {
        while c.ws.send(WsMessage::text(options.clone())).await.is_ok() {}
    })
    .await
    .expect("the non-reading peer was not closed");
    assert_eq!(env.ctx.connections(), 0);
}

#[tokio::test]
async fn a_newer_call_of_the_same_user_takes_the_seat() {
    let env = start().await;
    let mut first = Client::connect(&env, ua()).await;
    first.call().await;
    let mut second = Client::connect(&env, Ua::new("000000123", "hash-of-123", HOST, 77)).await;
    second.call().await;
    let bye = first.recv().await;
    assert_eq!(bye.method(), Some("BYE"));
    assert!(bye.h("reason").unwrap().contains("replaced"));
    let ok = first.ua.respond(&bye, 200, "OK");
    first.send(ok).await;
    env.fake
        .wait("the first call ends", |f| f.ended().len() == 1)
        .await;
    let members = env.registry.members(0, Some("101"), Instant::now());
    assert_eq!(members.len(), 1, "the newer call keeps the seat");
    drop(second);
    env.fake
        .wait("the second call ends", |f| f.ended().len() == 2)
        .await;
    assert!(env.registry.members(0, None, Instant::now()).is_empty());
}

#[tokio::test]
async fn disconnect_user_closes_their_connections() {
    let env = start().await;
    let mut c = Client::connect(&env, ua()).await;
    assert_eq!(c.register().await.status(), Some(200));
    let mut other = Client::connect(&env, Ua::new("000000124", "hash-of-124", HOST, 3)).await;
    assert_eq!(other.register().await.status(), Some(200));
    assert_eq!(env.ctx.disconnect_user(0, 123), 1);
    c.closed().await;
    // The other user's connection still works.
    let text = other.ua.options();
    other.send(text).await;
    other.expect(200).await;
}

#[tokio::test]
async fn wss_with_a_certificate() {
    let env = start_with(true, WsLimits::default()).await;
    let mut c = Client::connect_tls(&env, ua()).await;
    let ok = c.register().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    c.call().await;
    assert_eq!(env.fake.offers.lock().unwrap().len(), 1);
}

/// A connection that sends faster than `[sip] messages_per_second` is slowed, not cut off:
/// every message of a flood is answered, in order, and the pauses are counted.
#[tokio::test]
async fn a_flood_of_messages_is_throttled_and_nothing_is_lost() {
    let env = start_with(
        false,
        WsLimits {
            messages: comet_server::throttle::CommandRate {
                per_second: 100.0,
                burst: 5.0,
            },
            ..WsLimits::default()
        },
    )
    .await;
    let mut c = Client::connect(&env, ua()).await;
    let mut sent = Vec::new();
    for _ in 0..30 {
        let text = c.ua.options();
        sent.push(Msg::parse(&text).h("call-id").unwrap().to_string());
        c.send(text).await;
    }
    for id in &sent {
        let m = c.expect(200).await;
        assert_eq!(m.h("call-id"), Some(id.as_str()), "answers in order");
    }
    let paused = env.ctx.stats().throttled.load(Ordering::Relaxed);
    assert!(paused >= 1, "the flood was paused ({paused} times)");
}
