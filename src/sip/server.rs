//! The SIP-over-WebSocket listener (RFC 7118): sockets, TLS, tasks and the clock around the
//! sans-IO [`Connection`].
//!
//! One task per connection: it reads frames (one SIP message each, text or binary), feeds them
//! to its [`Connection`] and carries out the [`Action`]s: writes frames, reads the [`Store`],
//! calls the [`CallHandler`], keeps conference membership in the [`ConferenceRegistry`]. A
//! registry hangup reaches the task through a channel and becomes a BYE with a `Reason` header.
//! When the connection closes (or its task is dropped, for example when [`serve`] is dropped),
//! its calls end — the handler hears `ended`, the registry loses the members — and its
//! registrations go.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::admission::{Admitted, Gate};
use crate::throttle::{CommandRate, Throttle};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::{debug, warn};

use super::core::{Action, Connection, CoreConfig, Limits, LookupResult, Now, SipStats};
use super::handler::{CallHandler, CallId, CallInfo, MediaError};
use super::message::MAX_MESSAGE_BYTES;
use crate::conference::ConferenceRegistry;
use crate::store::{ConferenceRow, DevId, Store, StoreResult, UserId};

/// WebSocket-level timing.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// How often we ping an idle connection.
    pub ping_interval: Duration,
    /// A connection silent this long (no frame, no pong) is closed, ending its calls.
    pub idle_timeout: Duration,
    /// TLS plus WebSocket handshake.
    pub handshake_timeout: Duration,
    /// One frame must be taken by the socket within this; a peer that stops reading would
    /// otherwise block its connection (and the idle check) forever.
    pub write_timeout: Duration,
    /// How fast one connection may send (`[sip] messages_per_second`, `message_burst`).
    pub messages: CommandRate,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(65),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            messages: crate::config::Config::default().sip_messages,
        }
    }
}

enum Cmd {
    Lookup(u64, LookupResult),
    Answer(CallId, u64, Result<String, MediaError>),
    Hangup(CallId, String),
    Close,
    /// Hang up every call (BYE, or 480 to an unanswered INVITE) with this reason, then close.
    Shutdown(String),
}

struct ConnEntry {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Users this connection authenticated as (registrations and calls).
    users: HashSet<(DevId, UserId)>,
}

#[derive(Default)]
struct Shared {
    next_conn: AtomicU64,
    /// (dev, conference, user) → the call that holds that seat in the registry.
    seats: Mutex<HashMap<(DevId, String, UserId), CallId>>,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    /// Set (with `conns` locked) when the server shuts down: the Reason for every call's BYE.
    /// A connection that registers afterwards hangs up at once.
    closing: std::sync::OnceLock<String>,
    /// Wakes the accept loop to stop accepting.
    stop_accepting: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a map update: a poisoned lock still holds valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the SIP listener reads who may register and call: this process's store, or a
/// cluster's head when this process is one of its media nodes ([`crate::cluster`]).
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// The users_auth hash (the SIP password) of a user.
    async fn user_hash(&self, dev: DevId, user: UserId) -> StoreResult<Option<String>>;
    /// The invitation of `user` to conference `name`.
    async fn invitation(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
    ) -> StoreResult<Option<ConferenceRow>>;
}

/// The directory of a process that runs on its own store.
struct StoreDirectory(Arc<dyn Store>);

#[async_trait::async_trait]
impl Directory for StoreDirectory {
    async fn user_hash(&self, dev: DevId, user: UserId) -> StoreResult<Option<String>> {
        self.0.user_hash(dev, user).await
    }
    async fn invitation(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
    ) -> StoreResult<Option<ConferenceRow>> {
        self.0.conference_row(dev, name, user).await
    }
}

/// Everything the listener needs. Cheap to clone.
#[derive(Clone)]
pub struct SipContext {
    pub directory: Arc<dyn Directory>,
    pub registry: Arc<ConferenceRegistry>,
    pub handler: Arc<dyn CallHandler>,
    /// `Some`: `wss` (TLS on the listener; the certificate can be replaced while running,
    /// [`SipContext::replace_tls`]); `None`: plain `ws`.
    pub tls: Option<Arc<std::sync::RwLock<TlsAcceptor>>>,
    pub core: Arc<CoreConfig>,
    pub ws: WsLimits,
    /// Connection admission of the listener (`[sip] max_connections`).
    pub gate: Arc<Gate>,
    shared: Arc<Shared>,
}

impl SipContext {
    /// A plain-`ws` context for `host` (`[sip] host`: digest realm, Contact host) with default
    /// limits and a random nonce secret.
    pub fn new(
        store: Arc<dyn Store>,
        host: impl Into<String>,
        registry: Arc<ConferenceRegistry>,
        handler: Arc<dyn CallHandler>,
    ) -> SipContext {
        SipContext {
            directory: Arc::new(StoreDirectory(store)),
            registry,
            handler,
            tls: None,
            core: Arc::new(CoreConfig::new(host)),
            ws: WsLimits::default(),
            gate: Gate::new("sip", crate::config::Config::default().sip_conns),
            shared: Arc::default(),
        }
    }

    /// Reads users and invitations from `directory` instead of the store (a media node).
    pub fn with_directory(mut self, directory: Arc<dyn Directory>) -> SipContext {
        self.directory = directory;
        self
    }

    /// Admits connections through `gate` instead of the default caps.
    pub fn with_gate(mut self, gate: Arc<Gate>) -> SipContext {
        self.gate = gate;
        self.core = Arc::new(CoreConfig {
            gate: Some(self.gate.clone()),
            ..self.core_copy()
        });
        self
    }

    /// In a cluster: lets in only the users whose invitation names this media node
    /// (`<sip host>:<sip port>`, see [`CoreConfig::node`]).
    pub fn with_node(mut self, node: String) -> SipContext {
        self.core = Arc::new(CoreConfig {
            node: Some(node),
            ..self.core_copy()
        });
        self
    }

    /// The core configuration as it is, to change one part of it.
    fn core_copy(&self) -> CoreConfig {
        CoreConfig {
            host: self.core.host.clone(),
            auth: self.core.auth.clone(),
            limits: self.core.limits.clone(),
            stats: self.core.stats.clone(),
            gate: self.core.gate.clone(),
            node: self.core.node.clone(),
        }
    }

    /// Serve `wss` with this TLS configuration.
    pub fn with_tls(mut self, tls: TlsAcceptor) -> SipContext {
        self.tls = Some(Arc::new(std::sync::RwLock::new(tls)));
        self
    }

    /// New connections use this TLS configuration (a renewed certificate); open ones keep
    /// theirs. Nothing happens on a plain `ws` listener.
    pub fn replace_tls(&self, tls: TlsAcceptor) {
        if let Some(t) = &self.tls {
            *t.write().unwrap_or_else(|p| p.into_inner()) = tls;
        }
    }

    /// Replaces the core configuration (limits, nonce secret).
    pub fn with_core(mut self, core: CoreConfig) -> SipContext {
        self.core = Arc::new(core);
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> SipContext {
        self.core = Arc::new(CoreConfig {
            limits,
            ..self.core_copy()
        });
        self
    }

    pub fn with_ws_limits(mut self, ws: WsLimits) -> SipContext {
        self.ws = ws;
        self
    }

    pub fn host(&self) -> &str {
        &self.core.host
    }

    pub fn stats(&self) -> &SipStats {
        &self.core.stats
    }

    /// Open SIP connections.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Closes every SIP connection that authenticated as this user (for `DELETE FROM
    /// users_auth`): their calls end and their registrations go. Returns how many.
    pub fn disconnect_user(&self, dev: DevId, user: UserId) -> usize {
        let conns = lock(&self.shared.conns);
        conns
            .values()
            .filter(|c| c.users.contains(&(dev, user)))
            .filter(|c| c.tx.send(Cmd::Close).is_ok())
            .count()
    }

    /// The server is shutting down: every SIP connection hangs up all its calls with `reason`
    /// (BYE with a Reason header, or 480 to an INVITE not answered yet) and closes. Returns how
    /// many connections were told.
    pub fn shut_down(&self, reason: &str) -> usize {
        let told = {
            let conns = lock(&self.shared.conns);
            let _ = self.shared.closing.set(reason.to_string());
            conns
                .values()
                .filter(|c| c.tx.send(Cmd::Shutdown(reason.to_string())).is_ok())
                .count()
        };
        self.shared.stop_accepting.notify_one();
        told
    }

    /// An answered call takes its seat in the conference. A seat held by an older call of the
    /// same user (another tab, a reload) is taken over and the older call hung up.
    fn join(&self, call: &CallInfo, tx: &mpsc::UnboundedSender<Cmd>) {
        let key = (call.dev, call.conference.clone(), call.user);
        let mut seats = lock(&self.shared.seats);
        if let Some(old) = seats.insert(key, call.id)
            && old != call.id
        {
            self.registry.hangup(
                call.dev,
                &call.conference,
                Some(call.user),
                "replaced by a newer call of the same user",
            );
        }
        let tx = tx.clone();
        let id = call.id;
        self.registry.join(
            call.dev,
            &call.conference,
            call.user,
            &call.profile,
            Instant::now(),
            Arc::new(move |reason: &str| {
                let _ = tx.send(Cmd::Hangup(id, reason.to_string()));
            }),
        );
    }

    /// A call leaves its seat, unless a newer call took it.
    fn leave(&self, call: &CallInfo) {
        let key = (call.dev, call.conference.clone(), call.user);
        let mut seats = lock(&self.shared.seats);
        if seats.get(&key) == Some(&call.id) {
            seats.remove(&key);
            self.registry.leave(call.dev, &call.conference, call.user);
        }
    }
}

/// Reads a PEM certificate chain and private key into a TLS acceptor (ring provider, TLS 1.2 and
/// 1.3, ALPN `http/1.1`).
pub fn tls_acceptor_from_pem(cert_chain: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_chain)
        .with_context(|| format!("reading {}", cert_chain.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_chain.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    tls_acceptor(certs, key)
}

/// A TLS acceptor from DER certificates and key.
pub fn tls_acceptor(
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts SIP-over-WebSocket connections until [`SipContext::shut_down`] (then it stops
/// accepting and returns once every connection has ended) or until this future is dropped
/// (which ends every connection it started, and their calls).
pub async fn serve(listener: TcpListener, ctx: SipContext) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if ctx.tls.is_none() && !addr.ip().is_loopback() {
        // Browsers on https pages only open wss; plain ws off loopback is for a TLS proxy in
        // front, and carries digests and SDP in clear otherwise.
        warn!(%addr, "SIP: plain ws (no TLS) on a non-loopback address");
    }
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            a = crate::admission::accept(&listener, "SIP") => a,
            _ = ctx.shared.stop_accepting.notified() => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = match ctx.gate.admit(peer.ip()) {
            Ok(permit) => Admitted::new(stream, permit),
            Err(why) => {
                // A TLS client would not understand a plain answer: it is just closed.
                if ctx.tls.is_none() {
                    ctx.gate.refuse_http(stream, why);
                }
                continue;
            }
        };
        let ctx = ctx.clone();
        tasks.spawn(accept(stream, peer, ctx));
    }
    // Shutting down: no new connections; the open ones hang up and close.
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn accept(stream: Admitted<TcpStream>, peer: SocketAddr, ctx: SipContext) {
    let limit = ctx.ws.handshake_timeout;
    let tls = ctx
        .tls
        .as_ref()
        .map(|t| t.read().unwrap_or_else(|p| p.into_inner()).clone());
    match tls {
        Some(tls) => {
            let tls_stream = match tokio::time::timeout(limit, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "SIP: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "SIP: TLS handshake timed out");
                    return;
                }
            };
            if let Some(ws) = handshake(tls_stream, peer, limit).await {
                run(ws, peer, true, ctx).await;
            }
        }
        None => {
            if let Some(ws) = handshake(stream, peer, limit).await {
                run(ws, peer, false, ctx).await;
            }
        }
    }
}

/// Whether the client offered the `sip` subprotocol.
fn offers_sip(req: &Request) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"))
}

// `ErrorResponse` is tungstenite's callback error type, large or not.
#[allow(clippy::result_large_err)]
async fn handshake<S>(stream: S, peer: SocketAddr, limit: Duration) -> Option<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if !offers_sip(req) {
            let text = "This is a SIP over WebSocket endpoint (RFC 7118): offer the subprotocol \
                        `sip` (Sec-WebSocket-Protocol: sip).\n";
            let mut e = ErrorResponse::new(Some(text.to_string()));
            *e.status_mut() = StatusCode::BAD_REQUEST;
            let h = e.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(e);
        }
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("sip"),
        );
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES + 1024))
        .max_frame_size(Some(MAX_MESSAGE_BYTES + 1024));
    let accepted = tokio::time::timeout(
        limit,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
    )
    .await;
    match accepted {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "SIP: WebSocket handshake refused");
            None
        }
        Err(_) => {
            debug!(%peer, "SIP: WebSocket handshake timed out");
            None
        }
    }
}

/// One connection's state on the driver side. Dropping it ends the connection's calls.
struct ConnState {
    ctx: SipContext,
    core: Connection,
    conn_id: u64,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl ConnState {
    /// Carries out the actions that need no socket; returns the frames to send.
    fn execute(&mut self, actions: Vec<Action>) -> Vec<String> {
        let mut frames = Vec::new();
        for a in actions {
            match a {
                Action::Send(text) => frames.push(text),
                Action::Lookup(l) => {
                    let store = self.ctx.directory.clone();
                    let tx = self.tx.clone();
                    // The core gives up on a lookup after this; the task ends then too, so
                    // a stalled store cannot pile up tasks (16 in flight per connection).
                    let limit = self.ctx.core.limits.lookup_timeout;
                    tokio::spawn(async move {
                        if let Ok(result) = tokio::time::timeout(limit, lookup(&*store, &l)).await {
                            let _ = tx.send(Cmd::Lookup(l.id, result));
                        }
                    });
                }
                Action::Offer { call, sdp, token } => {
                    let handler = self.ctx.handler.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let id = call.id;
                        let answer = handler.offer(call, &sdp).await;
                        let _ = tx.send(Cmd::Answer(id, token, answer));
                    });
                }
                Action::Reoffer { call, sdp, token } => {
                    let handler = self.ctx.handler.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let answer = handler.reoffer(&call, &sdp).await;
                        let _ = tx.send(Cmd::Answer(call.id, token, answer));
                    });
                }
                Action::Answered { call } => {
                    self.note_user(call.dev, call.user);
                    self.ctx.join(&call, &self.tx);
                    debug!(call = %call.id, dev = call.dev, user = call.user,
                           conference = %call.conference, "SIP: call answered");
                }
                Action::Event { call, event } => self.ctx.handler.event(&call, &event),
                Action::Ended {
                    call,
                    answered,
                    reason,
                } => {
                    if answered {
                        self.ctx.leave(&call);
                    }
                    debug!(call = %call.id, %reason, "SIP: call ended");
                    self.ctx.handler.ended(&call, &reason);
                }
                Action::Registered { dev, user, .. } => self.note_user(dev, user),
                Action::Unregistered { .. } => {}
            }
        }
        frames
    }

    fn note_user(&self, dev: DevId, user: UserId) {
        if let Some(c) = lock(&self.ctx.shared.conns).get_mut(&self.conn_id) {
            c.users.insert((dev, user));
        }
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        let actions = self.core.close();
        let _ = self.execute(actions);
        lock(&self.ctx.shared.conns).remove(&self.conn_id);
    }
}

async fn lookup(store: &dyn Directory, l: &super::core::Lookup) -> LookupResult {
    let hash = match store.user_hash(l.dev, l.user).await {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "SIP: reading users_auth failed");
            return LookupResult::Failed;
        }
    };
    let invitation = match (&l.conference, &hash) {
        (Some(name), Some(_)) => match store.invitation(l.dev, name, l.user).await {
            Ok(row) => row,
            Err(e) => {
                warn!(error = %e, "SIP: reading the conference invitation failed");
                return LookupResult::Failed;
            }
        },
        _ => None,
    };
    LookupResult::Found { hash, invitation }
}

enum Event {
    Frame(Vec<u8>),
    Other,
    Closed,
    Cmd(Cmd),
    Timer,
    Ping,
}

async fn run<S>(mut ws: WebSocketStream<S>, peer: SocketAddr, secure: bool, ctx: SipContext)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn_id = ctx.shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut conns = lock(&ctx.shared.conns);
        conns.insert(
            conn_id,
            ConnEntry {
                tx: tx.clone(),
                users: HashSet::new(),
            },
        );
        // Opened while the server shuts down: told like the others.
        if let Some(reason) = ctx.shared.closing.get() {
            let _ = tx.send(Cmd::Shutdown(reason.clone()));
        }
    }
    debug!(%peer, conn = conn_id, "SIP: connection open");
    let core = Connection::new(ctx.core.clone(), conn_id, peer, secure);
    let ping_every = ctx.ws.ping_interval;
    let idle_timeout = ctx.ws.idle_timeout;
    let write_timeout = ctx.ws.write_timeout;
    let mut state = ConnState {
        ctx,
        core,
        conn_id,
        tx,
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    let mut closing = false;
    let mut throttle = Throttle::new(state.ctx.ws.messages, last_heard);
    // While the peer has sent more than its rate allows, nothing is read until then.
    let mut paused: Option<tokio::time::Instant> = None;
    'conn: loop {
        let deadline = state.core.next_deadline();
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            () = tokio::time::sleep_until(paused.unwrap_or_else(tokio::time::Instant::now)),
                if paused.is_some() =>
            {
                paused = None;
                continue;
            }
            frame = ws.next(), if paused.is_none() => match frame {
                Some(Ok(WsMessage::Text(t))) => Event::Frame(t.as_bytes().to_vec()),
                Some(Ok(WsMessage::Binary(b))) => Event::Frame(b.to_vec()),
                Some(Ok(WsMessage::Close(_))) | None => Event::Closed,
                Some(Ok(_)) => Event::Other,
                Some(Err(e)) => {
                    debug!(%peer, error = %e, "SIP: connection error");
                    Event::Closed
                }
            },
            Some(cmd) = rx.recv() => Event::Cmd(cmd),
            _ = timer => Event::Timer,
            _ = ping.tick() => Event::Ping,
        };
        let now = Now::system();
        let actions = match event {
            Event::Frame(data) => {
                last_heard = Instant::now();
                if let Some(until) = throttle.charge(last_heard) {
                    state
                        .ctx
                        .core
                        .stats
                        .throttled
                        .fetch_add(1, Ordering::Relaxed);
                    paused = Some(until.into());
                }
                state.core.on_message(&data, now)
            }
            Event::Other => {
                last_heard = Instant::now();
                Vec::new()
            }
            Event::Closed => break 'conn,
            Event::Cmd(Cmd::Lookup(id, result)) => state.core.on_lookup(id, result, now),
            Event::Cmd(Cmd::Answer(call, token, result)) => {
                state.core.on_answer(call, token, result, now)
            }
            Event::Cmd(Cmd::Hangup(call, reason)) => state.core.hangup(call, &reason, now),
            Event::Cmd(Cmd::Close) => break 'conn,
            Event::Cmd(Cmd::Shutdown(reason)) => {
                closing = true;
                state.core.hangup_all(&reason, now)
            }
            Event::Timer => state.core.on_timer(now),
            Event::Ping => {
                if last_heard.elapsed() > idle_timeout {
                    debug!(%peer, "SIP: connection idle, closing");
                    break 'conn;
                }
                let ping = ws.send(WsMessage::Ping(Default::default()));
                if !matches!(tokio::time::timeout(write_timeout, ping).await, Ok(Ok(()))) {
                    break 'conn;
                }
                continue;
            }
        };
        for frame in state.execute(actions) {
            match tokio::time::timeout(write_timeout, ws.send(WsMessage::text(frame))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if !matches!(e, tungstenite::Error::ConnectionClosed) {
                        debug!(%peer, error = %e, "SIP: write failed");
                    }
                    break 'conn;
                }
                Err(_) => {
                    debug!(%peer, "SIP: the peer does not read; closing");
                    break 'conn;
                }
            }
        }
        if closing {
            break 'conn;
        }
    }
    // The calls end (BYE to the handler side) when `state` drops; tell the peer we are done.
    drop(state);
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    debug!(%peer, conn = conn_id, "SIP: connection closed");
}
