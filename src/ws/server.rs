//! The comet WebSocket listener (axum): HTTP routing, the upgrade, and one task per connection
//! that moves frames between the socket, the [`Hub`] and the command handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use super::hub::{ConnInfo, Hub, Outgoing};
use super::protocol::{self, Command};
use super::{jwt, url};
use crate::cometql::Engine;
use crate::cometql::engine::{QUEUE_TTL_SECS, unix_now};
use crate::names;
use crate::realtime::{self, Realtime};
use crate::throttle::{CommandRate, Throttle};

/// Largest frame a browser may send.
pub const MAX_FRAME: usize = 65535;

/// What every connection shares.
pub struct WsContext {
    pub hub: Arc<Hub>,
    pub engine: Arc<Engine>,
    /// `server` in the serverInfo frame and `node` in `/info`.
    pub server_name: String,
    pub timeouts: WsTimeouts,
    /// Connection admission of the listener (`[ws] max_connections`).
    pub gate: Arc<crate::admission::Gate>,
    /// How fast one connection may send (`[ws] commands_per_second`, `command_burst`).
    pub commands: CommandRate,
}

/// How long a connection may stall. A peer that stops reading (a full TCP window) would
/// otherwise block its connection's task forever, with up to `hub::QUEUE_FRAMES` frames
/// queued for it; one that vanished without closing would stay "online" in presence.
#[derive(Debug, Clone, Copy)]
pub struct WsTimeouts {
    /// One frame must be taken by the socket within this (default 10 s).
    pub write: Duration,
    /// A WebSocket ping goes out after this long without a frame from the peer (default
    /// 25 s; browsers answer pings by themselves).
    pub ping_after: Duration,
    /// Nothing from the peer this long, not even a pong: the connection is closed
    /// (default 65 s).
    pub idle: Duration,
}

impl Default for WsTimeouts {
    fn default() -> Self {
        WsTimeouts {
            write: Duration::from_secs(10),
            ping_after: Duration::from_secs(25),
            idle: Duration::from_secs(65),
        }
    }
}

/// The HTTP routes: the WebSocket paths, `/info`, CORS preflight; everything else is 404.
pub fn router(ctx: Arc<WsContext>) -> Router {
    Router::new().fallback(handle).with_state(ctx)
}

/// Serves plain `ws://` on a bound listener until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<WsContext>) {
    let gate = ctx.gate.clone();
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    let server = match crate::http::plain_server(listener, gate) {
        Ok(s) => s,
        Err(e) => return tracing::error!("comet WebSocket listener: {e}"),
    };
    if let Err(e) = server.serve(app).await {
        tracing::error!("comet WebSocket listener stopped: {e}");
    }
}

/// Serves `wss://` with rustls on a bound listener until the task is dropped.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    ctx: Arc<WsContext>,
) {
    let gate = ctx.gate.clone();
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    let server = crate::http::tls_server(listener, tls, gate);
    if let Err(e) = server.serve(app).await {
        tracing::error!("comet WebSocket (TLS) listener stopped: {e}");
    }
}

fn header_text(h: &HeaderMap, name: header::HeaderName, max: usize) -> String {
    let mut s = h
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    super::truncate_to_char(&mut s, max);
    s
}

async fn handle(
    State(ctx): State<Arc<WsContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if req.method() == Method::OPTIONS {
        return (
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"),
            ],
            "+OK",
        )
            .into_response();
    }
    let path = req.uri().path().to_string();
    let bare = path.trim_start_matches('/');
    if bare == "info" || bare == "comet-server/info" {
        return axum::Json(json!({"status": "ok", "node": ctx.server_name})).into_response();
    }
    let Some(tail) = url::ws_tail(&path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let params = url::parse(tail);
    let h = req.headers();
    let info = ConnInfo {
        dev: 0,
        user_id: 0,
        uuid: String::new(),
        user_agent: header_text(h, header::USER_AGENT, 250),
        ip: peer.ip().to_string(),
        origin: header_text(h, header::ORIGIN, 250),
        language: header_text(h, header::ACCEPT_LANGUAGE, 64),
    };
    let offered = h
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &ctx).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // Echo the subprotocol the client offered, as the JS API expects.
    let ws = match offered {
        Some(p) => ws.protocols([p]),
        None => ws,
    };
    // Small buffers: 10 000 idle browsers must not cost 256 KiB each (tungstenite's defaults).
    ws.max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| connection(socket, ctx, params, info, peer.ip()))
}

/// The write timeout of every send (set once per connection from `WsTimeouts::write`).
struct Sink {
    inner: futures_util::stream::SplitSink<WebSocket, Message>,
    timeout: Duration,
}

impl Sink {
    /// Sends one message; false if the socket failed or did not take it in time.
    async fn put(&mut self, m: Message) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.inner.send(m)).await,
            Ok(Ok(()))
        )
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(self.timeout, self.inner.close()).await;
    }
}

async fn send(sink: &mut Sink, text: &str) -> bool {
    sink.put(Message::Text(text.into())).await
}

async fn send_and_close(sink: &mut Sink, text: &str) {
    if send(sink, text).await {
        sink.put(Message::Close(None)).await;
    }
    sink.close().await;
}

fn new_hash() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The users_auth hash that authorizes this connection, if it is authorized. A valid JWT
/// authorizes too; a user who has no hash yet gets one (it becomes their SIP password). A key
/// that fails counts against the client's address (`[ws] max_auth_failures`); an address that
/// failed too often connects anonymously, its key unchecked, until its allowance refills.
async fn authenticate(
    ctx: &WsContext,
    p: &url::ConnectParams,
    now: i64,
    peer: std::net::IpAddr,
) -> Result<Option<String>, crate::store::StoreError> {
    if p.user_id <= 0 || p.session.is_empty() {
        return Ok(None);
    }
    if ctx
        .gate
        .may_authenticate(peer, std::time::Instant::now())
        .is_err()
    {
        return Ok(None);
    }
    let hash = check_key(ctx, p, now).await?;
    if hash.is_none() {
        ctx.gate.auth_failed(peer, std::time::Instant::now());
    }
    Ok(hash)
}

/// [`authenticate`]'s check of the user's key (the stored hash, or a JWT).
async fn check_key(
    ctx: &WsContext,
    p: &url::ConnectParams,
    now: i64,
) -> Result<Option<String>, crate::store::StoreError> {
    let store = &ctx.engine.store;
    let stored = store.user_hash(p.dev_id, p.user_id).await?;
    if let Some(h) = &stored
        && crate::secret::eq(h.as_bytes(), p.session.as_bytes())
    {
        return Ok(stored);
    }
    if !jwt::verify(
        &p.session,
        &ctx.engine.settings.password,
        p.dev_id,
        p.user_id,
        now,
    ) {
        return Ok(None);
    }
    match stored {
        Some(h) => Ok(Some(h)),
        None => {
            let h = new_hash();
            store.set_user_hash(p.dev_id, p.user_id, &h).await?;
            Ok(Some(h))
        }
    }
}

/// The identity a connection acts with.
struct Me {
    id: super::hub::ConnId,
    dev: i64,
    /// 0 when anonymous.
    user: i64,
}

async fn connection(
    socket: WebSocket,
    ctx: Arc<WsContext>,
    params: Result<url::ConnectParams, url::UrlError>,
    mut info: ConnInfo,
    peer: std::net::IpAddr,
) {
    let (sink, mut stream) = socket.split();
    let mut sink = Sink {
        inner: sink,
        timeout: ctx.timeouts.write,
    };
    let now = unix_now();
    let p = match params {
        Ok(p) => p,
        Err(e) => {
            send_and_close(&mut sink, &protocol::url_error(e.text(), e.code(), now)).await;
            return;
        }
    };
    let hash = match authenticate(&ctx, &p, now, peer).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("comet auth failed on the store: {e}");
            send_and_close(
                &mut sink,
                &protocol::simple_error("internal server error", now),
            )
            .await;
            return;
        }
    };
    let authorized = hash.is_some();
    info.dev = p.dev_id;
    info.user_id = if authorized { p.user_id } else { 0 };
    info.uuid = p.uuid.clone();
    // Register before the first frame: once the browser has serverInfo, anything sent to it
    // (a personal message, a pipe broadcast) must reach this connection.
    let registered = ctx.hub.register(info.clone());
    let first = protocol::server_info(
        authorized,
        hash.as_deref().unwrap_or(""),
        &ctx.server_name,
        now,
    );
    let (mut handle, presence) = match registered {
        Ok(x) => x,
        Err(_) => {
            let text = format!(
                "Too many connections for this user (at most {})",
                super::hub::MAX_CONNECTIONS_PER_USER
            );
            let _ = send(&mut sink, &first).await;
            send_and_close(&mut sink, &protocol::simple_error(&text, now)).await;
            return;
        }
    };
    if !send(&mut sink, &first).await {
        ctx.hub.unregister(handle.id, now);
        return;
    }
    let me = Me {
        id: handle.id,
        dev: info.dev,
        user: info.user_id,
    };
    if presence.changed {
        ctx.hub.send_to_pipe(
            me.dev,
            &format!("user_status_{}", me.user),
            &protocol::presence_frame(me.user, true),
        );
    }
    if authorized {
        match ctx
            .engine
            .store
            .take_user_messages(me.dev, me.user, now - QUEUE_TTL_SECS)
            .await
        {
            Ok(queued) => {
                for m in queued.iter().take(crate::cometql::engine::QUEUE_PER_USER) {
                    if !send(&mut sink, &realtime::queued_message_frame(m)).await {
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read queued messages: {e}"),
        }
    }

    let timeouts = ctx.timeouts;
    let mut heard = tokio::time::Instant::now();
    let mut pinged = false;
    let mut throttle = Throttle::new(ctx.commands, heard.into_std());
    // While the peer has sent more than its rate allows, nothing is read until then.
    let mut paused: Option<tokio::time::Instant> = None;
    loop {
        // Ping once after `ping_after` of silence; give up after `idle`.
        let wake = if pinged {
            heard + timeouts.idle
        } else {
            heard + timeouts.ping_after.min(timeouts.idle)
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if pinged || timeouts.ping_after >= timeouts.idle {
                    tracing::debug!(conn = ?me.id, "comet WebSocket idle: closed");
                    sink.put(Message::Close(None)).await;
                    break;
                }
                pinged = true;
                if !sink.put(Message::Ping(Default::default())).await {
                    break;
                }
            }
            () = tokio::time::sleep_until(paused.unwrap_or(wake)), if paused.is_some() => {
                paused = None;
            }
            incoming = stream.next(), if paused.is_none() => {
                heard = tokio::time::Instant::now();
                pinged = false;
                if let Some(until) = throttle.charge(heard.into_std()) {
                    ctx.hub.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    paused = Some(until.into());
                }
                let now = unix_now();
                match incoming {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(t))) => {
                        let (replies, close) = command(&ctx, &me, t.as_str(), now).await;
                        let mut ok = true;
                        for r in &replies {
                            ok &= send(&mut sink, r).await;
                        }
                        if close {
                            sink.put(Message::Close(None)).await;
                            break;
                        }
                        if !ok {
                            break;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        send_and_close(&mut sink, &protocol::simple_error("Binary frames are not supported", now)).await;
                        break;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => {
                        // Oversized or malformed frames: tell the peer why, then close.
                        let text = format!("Invalid frame: {e}");
                        send_and_close(&mut sink, &protocol::simple_error(&text, now)).await;
                        break;
                    }
                }
            }
            out = handle.rx.recv() => match out {
                Some(Outgoing::Frame(f)) => {
                    handle.took(&f);
                    if !send(&mut sink, &f).await {
                        break;
                    }
                }
                Some(Outgoing::GoingAway) => {
                    sink.put(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: "server shutting down".into(),
                    })))
                    .await;
                    break;
                }
                Some(Outgoing::Close(frame)) => {
                    match frame {
                        Some(f) => send_and_close(&mut sink, &f).await,
                        None => {
                            sink.put(Message::Close(None)).await;
                        }
                    }
                    break;
                }
                None => break,
            },
            _ = handle.kill.notified() => {
                sink.put(Message::Close(None)).await;
                break;
            }
        }
    }

    let now = unix_now();
    if let Some((info, presence)) = ctx.hub.unregister(me.id, now)
        && presence.changed
        && info.user_id > 0
    {
        if let Err(e) = ctx
            .engine
            .store
            .set_last_seen(info.dev, info.user_id, now)
            .await
        {
            tracing::warn!("cannot record last-seen time: {e}");
        }
        ctx.hub.send_to_pipe(
            info.dev,
            &format!("user_status_{}", info.user_id),
            &protocol::presence_frame(info.user_id, false),
        );
    }
}

/// Runs one command; returns frames for this connection and whether to close it.
async fn command(ctx: &WsContext, me: &Me, text: &str, now: i64) -> (Vec<String>, bool) {
    match protocol::parse(text) {
        Command::Subscription(args) => {
            let s = protocol::subscriptions(args);
            let mut out = Vec::new();
            if !s.close {
                ctx.hub.set_subscriptions(me.id, &s.pipes, now);
            }
            if let Some(e) = s.error {
                out.push(protocol::error_frame(
                    json!({"code": "403", "error": e}),
                    now,
                ));
            }
            (out, s.close)
        }
        Command::WebPipe2 {
            pipe,
            event,
            auth,
            message,
        } => (
            vec![web_pipe2(ctx, me, pipe, event, auth, message, now).await],
            false,
        ),
        Command::PipeLog { pipe, marker } => {
            if names::check_pipe(pipe).is_err() {
                return (
                    vec![protocol::pipe_error("Invalid channel name.", now)],
                    false,
                );
            }
            if !protocol::valid_marker(marker) {
                return (
                    vec![protocol::pipe_error("Invalid marker value.", now)],
                    false,
                );
            }
            match ctx.engine.pipe_history(me.dev, pipe, now).await {
                Ok(h) => (
                    h.iter()
                        .map(|m| {
                            protocol::history_frame(pipe, &m.event, &m.message, m.user_id, m.time)
                        })
                        .collect(),
                    false,
                ),
                Err(e) => (vec![protocol::pipe_error(&e.message, now)], false),
            }
        }
        Command::PipeCount { pipe, marker } => {
            if !(pipe.starts_with("web_") || pipe.starts_with("track_")) {
                return (
                    vec![protocol::pipe_error(
                        "[pipe_count] Invalid channel name. The channel should start with web_",
                        now,
                    )],
                    false,
                );
            }
            if names::check_pipe(pipe).is_err() || !protocol::valid_marker(marker) {
                return (vec![protocol::pipe_error("Invalid pipe name.", now)], false);
            }
            let n = ctx.hub.pipe_subscriber_count(me.dev, pipe);
            (vec![protocol::pipe_count_answer(marker, n, now)], false)
        }
        Command::TrackPipeUsers { pipe, marker } => {
            if !pipe.starts_with("track_") || names::check_pipe(pipe).is_err() {
                return (
                    vec![protocol::error_frame(
                        json!({"error": "[track_pipe_users] Invalid channel name. The channel should start with track_", "user_id": -1}),
                        now,
                    )],
                    false,
                );
            }
            if !protocol::valid_marker(marker) {
                return (
                    vec![protocol::pipe_error("Invalid marker value.", now)],
                    false,
                );
            }
            let users = ctx.hub.pipe_users(me.dev, pipe);
            (
                vec![protocol::track_users_answer(marker, &users, now)],
                false,
            )
        }
        Command::UserData { marker, user_id } => {
            if !protocol::valid_marker(marker) {
                return (
                    vec![protocol::simple_error("Invalid marker name.", now)],
                    false,
                );
            }
            match user_id.trim().parse::<i64>() {
                Ok(u) if u >= 0 => (vec![protocol::user_data_answer(marker, u, "", now)], false),
                _ => (
                    vec![protocol::error_frame(
                        json!({"error": "Invalid user id", "user_data": "", "user_id": -1}),
                        now,
                    )],
                    false,
                ),
            }
        }
        Command::UserStatus { user_id } => {
            let Ok(u) = user_id.trim().parse::<i64>() else {
                return (vec![protocol::simple_error("Invalid user id", now)], false);
            };
            let ago = if ctx.hub.is_online(me.dev, u) {
                0
            } else {
                match ctx.engine.store.last_seen(me.dev, u).await {
                    Ok(Some(t)) => now - t,
                    Ok(None) => -1,
                    Err(e) => return (vec![protocol::simple_error(&e.to_string(), now)], false),
                }
            };
            (vec![protocol::user_status_answer(u, ago, now)], false)
        }
        Command::Ignored => (Vec::new(), false),
        Command::Unknown(name) => {
            let text = format!(
                "Unknown command `{}`",
                name.chars().take(32).collect::<String>()
            );
            (vec![protocol::simple_error(&text, now)], true)
        }
    }
}

/// Relays a web_pipe2 message to the pipe's other subscribers and logs it when the pipe keeps
/// history. Returns the answer (or error) frame for the sender.
async fn web_pipe2(
    ctx: &WsContext,
    me: &Me,
    pipe: &str,
    event: &str,
    auth: &str,
    message: &str,
    now: i64,
) -> String {
    let (pipe, sender) = match pipe.strip_prefix('@') {
        Some(p) if p.starts_with("web_") => (p, 0),
        _ if pipe.starts_with("web_") => (pipe, me.user),
        _ if pipe.starts_with("webauth_") => {
            if me.user <= 0 {
                return protocol::pipe_error(
                    "[webauth_pipe_msg2] Invalid user auth. In to channel with name like webauth_* can not send messages anonim users",
                    now,
                );
            }
            (pipe, me.user)
        }
        _ => {
            return protocol::pipe_error(
                "[pipe_msg2] Invalid channel name. The channel should begin with web_",
                now,
            );
        }
    };
    match names::check_pipe(pipe) {
        Ok(()) => {}
        Err(names::PipeNameError::BadChars) => {
            return protocol::pipe_error(
                "The channel name can only contain characters A-Za-z0-9_-",
                now,
            );
        }
        Err(_) => return protocol::pipe_error("Invalid pipe name length", now),
    }
    match names::check_event(event) {
        Ok(()) => {}
        Err(names::PipeNameError::BadChars) => {
            return protocol::simple_error(
                "The event name can only contain characters A-Za-z0-9_-",
                now,
            );
        }
        Err(_) => return protocol::simple_error("Invalid event name length", now),
    }
    if auth.chars().count() != 1 {
        return protocol::simple_error("Invalid value auth_type", now);
    }
    let escaped = protocol::escape(message);
    let frame = protocol::relay_frame(pipe, event, &escaped, sender, now);
    let n = ctx
        .hub
        .send_to_pipe_except(me.dev, pipe, &frame, Some(me.id));
    if let Err(e) = ctx
        .engine
        .log_pipe_message(me.dev, pipe, event, message, sender, now)
        .await
    {
        tracing::warn!("cannot log a pipe message: {e}");
    }
    protocol::relay_answer(pipe, &escaped, n, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cometql::engine::Settings;
    use crate::conference::ConferenceRegistry;
    use tokio_tungstenite::tungstenite::Message as M;

    /// The comet WebSocket listener in this process on 127.0.0.1 with short timeouts.
    async fn start(timeouts: WsTimeouts) -> (SocketAddr, Arc<Hub>) {
        let hub = Arc::new(Hub::new());
        let defaults = crate::config::Config::default();
        let engine = Arc::new(Engine::new(
            Arc::new(crate::store::MemoryStore::new()),
            Arc::new(crate::realtime::Offline),
            Arc::new(ConferenceRegistry::new()),
            Settings::from_config(&defaults),
        ));
        let ctx = Arc::new(WsContext {
            hub: hub.clone(),
            engine,
            server_name: "test".into(),
            timeouts,
            gate: crate::admission::Gate::new("ws", defaults.ws_conns),
            commands: defaults.ws_commands,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, ctx));
        (addr, hub)
    }

    async fn open(
        addr: SocketAddr,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        let url = format!("ws://{addr}/ws/sesion=&myid=0&devid=0&v=4.08&uuid=u&api=js");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        // serverInfo.
        match ws.next().await {
            Some(Ok(M::Text(_))) => ws,
            other => panic!("expected serverInfo, got {other:?}"),
        }
    }

    /// A peer on a bare TCP socket after the upgrade: it never answers a ping.
    async fn open_raw(addr: SocketAddr) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            b"GET /ws/sesion=&myid=0&devid=0&v=4.08&uuid=u&api=js HTTP/1.1\r\nHost: x\r\n\
              Upgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        tcp
    }

    /// A silent peer gets a ping and, not answering, is closed after the idle timeout; a
    /// peer that reads (and so answers pings, as browsers do) stays connected meanwhile.
    #[tokio::test]
    async fn silent_peers_are_pinged_then_closed() {
        use tokio::io::AsyncReadExt;
        let (addr, hub) = start(WsTimeouts {
            write: Duration::from_secs(5),
            ping_after: Duration::from_millis(100),
            idle: Duration::from_millis(1000),
        })
        .await;
        let mut alive = open(addr).await;
        let mut silent = open_raw(addr).await;
        // `alive` reads: tungstenite answers each ping with a pong on the next read.
        let reader = tokio::spawn(async move {
            let mut pings = 0;
            while let Some(Ok(m)) = alive.next().await {
                if matches!(m, M::Ping(_)) {
                    pings += 1;
                }
                if pings == 10 {
                    break;
                }
            }
            (pings, alive)
        });
        // The silent peer reads everything (the upgrade, serverInfo, a ping) until the server
        // closes, which it does after leaving the hub.
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut seen))
            .await
            .expect("the silent peer is closed")
            .unwrap();
        let seen = String::from_utf8_lossy(&seen);
        assert!(seen.starts_with("HTTP/1.1 101"), "{seen}");
        assert!(seen.contains("serverInfo"), "{seen}");
        let (pings, mut alive) = reader.await.unwrap();
        assert_eq!(pings, 10, "the reading peer kept being pinged");
        // It is still served: a command gets its answer.
        alive.send(M::Text("user_status\n1".into())).await.unwrap();
        loop {
            match alive.next().await {
                Some(Ok(M::Text(t))) => {
                    assert!(t.as_str().contains("user_status"), "{t}");
                    break;
                }
                Some(Ok(M::Ping(_) | M::Pong(_))) => continue,
                other => panic!("the reading peer was closed: {other:?}"),
            }
        }
        assert_eq!(hub.connections(), 1);
    }

    /// An upgraded connection is not subject to the HTTP header timeout: a peer that answers
    /// pings stays connected well past it.
    #[tokio::test]
    async fn an_answering_peer_outlives_the_header_timeout() {
        let (addr, hub) = start(WsTimeouts {
            write: Duration::from_secs(5),
            ping_after: Duration::from_secs(1),
            idle: Duration::from_secs(5),
        })
        .await;
        let mut ws = open(addr).await;
        let until = tokio::time::Instant::now() + crate::http::HEADER_READ_TIMEOUT * 3 / 2;
        let mut pings = 0;
        while let Ok(m) = tokio::time::timeout_at(until, ws.next()).await {
            match m {
                Some(Ok(M::Ping(_))) => pings += 1,
                other => panic!("the connection ended: {other:?}"),
            }
        }
        assert!(pings >= 10, "{pings} pings");
        assert_eq!(hub.connections(), 1);
    }

    /// A peer that stops reading while frames keep coming is closed once a frame has waited
    /// for the socket longer than the write timeout.
    #[tokio::test]
    async fn a_peer_that_stops_reading_is_closed() {
        let (addr, hub) = start(WsTimeouts {
            write: Duration::from_millis(300),
            ping_after: Duration::from_secs(60),
            idle: Duration::from_secs(120),
        })
        .await;
        let mut stuck = open(addr).await;
        stuck
            .send(M::Text("subscription\nweb_flood".into()))
            .await
            .unwrap();
        // Commands are handled in order: once this is answered, the subscription is in.
        stuck
            .send(M::Text("pipe_count\nweb_flood\nm1".into()))
            .await
            .unwrap();
        loop {
            match stuck.next().await {
                Some(Ok(M::Text(t))) if t.as_str().contains("\"m1\"") => break,
                Some(Ok(_)) => continue,
                other => panic!("no answer to pipe_count: {other:?}"),
            }
        }
        // From now on the peer only writes. 60 KB frames go out until its task cannot hand
        // them to the socket and its queue fills (the hub then refuses them).
        let frame = "x".repeat(60_000);
        while hub.send_to_pipe(0, "web_flood", &frame) == 1 {
            tokio::task::yield_now().await;
        }
        // The server closes the connection (after leaving the hub) once the blocked frame
        // times out; the peer's writes then fail.
        let (mut tx, _rx) = stuck.split();
        tokio::time::timeout(Duration::from_secs(10), async {
            while tx.send(M::Text("statistics".into())).await.is_ok() {}
        })
        .await
        .expect("the peer that stopped reading is closed");
        assert_eq!(hub.connections(), 0);
    }
}
