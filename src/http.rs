//! The `[http]` listener: health, Prometheus metrics, the browser JS API, what this server
//! supports, and (when `[http] demo` allows it) the demo page and its backend ([`crate::demo`]).
//!
//! - `/healthz` (open, for load balancers): `200 ok` when the store answers a read, its
//!   writer is not stuck and the WebRTC endpoint answers; else `503` naming what is wrong.
//! - `/metrics` and `/debug/conferences` (admin endpoints: they answer requests from
//!   loopback, and from elsewhere only with `Authorization: Bearer <[http] metrics_token>`
//!   when a token is set).
//! - `/api/cometVideoApi.js`: the drop-in video API (JsSIP bundled in).
//! - `/api/features`: JSON saying what this server does (video composition, the demo, ...).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::admission::{Admitted, Gate};
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::cometql::Engine;
use crate::conference::MediaRuntime;
use crate::ws::Hub;

/// What the HTTP handlers read.
pub struct HttpContext {
    pub engine: Arc<Engine>,
    pub hub: Arc<Hub>,
    pub runtime: Arc<MediaRuntime>,
    /// Counters of the RTMP broadcasts and recordings.
    pub broadcast: Arc<crate::broadcast::BroadcastStats>,
    /// Bearer token that opens `/metrics` to non-loopback clients.
    pub metrics_token: Option<String>,
    /// What `/api/features` answers.
    pub features: Features,
    /// The demo, when `[http] demo` allows it here.
    pub demo: Option<Arc<crate::demo::Demo>>,
    /// Connection admission of every TCP listener (this one's, and the others' for /metrics).
    pub gates: crate::admission::Gates,
    /// What the SIP connections count.
    pub sip: Arc<crate::sip::core::SipStats>,
    /// On a cluster's media node: its link to the head.
    pub cluster_node: Option<Arc<crate::cluster::node::NodeLink>>,
    /// Draining (`POST /admin/drain`).
    pub draining: Arc<crate::draining::Draining>,
}

/// A listener as pages reach it.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub port: u16,
    pub tls: bool,
}

/// A conference profile as pages see it.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileFeatures {
    pub video: bool,
    pub layout: String,
}

/// `/api/features`: what this server does, for pages and tests to adapt to.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    pub server: String,
    pub version: &'static str,
    /// Conferences send the composed video canvas ([`crate::conference::VIDEO_COMPOSITION`]).
    pub video: bool,
    /// The demo page is served at `/`.
    pub demo: bool,
    /// The profile the demo invites with: `video` when the server composes video, else `audio`.
    pub demo_profile: String,
    pub profiles: std::collections::BTreeMap<String, ProfileFeatures>,
    /// Conferences can be broadcast (RTMP out, HLS for viewers).
    pub broadcast: bool,
    /// HLS playlist URL of a broadcast conference, `{room}` standing for its name (null while
    /// broadcasting is not available).
    pub hls: Option<String>,
    /// The comet WebSocket listener (the page connects to its own host name on this port).
    pub ws: Endpoint,
    /// The SIP-over-WebSocket listener (browsers are told its host in `sys_sipCall`).
    pub sip: Endpoint,
}

pub fn router(ctx: Arc<HttpContext>) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .route("/debug/conferences", get(debug_conferences))
        .route("/admin/drain", axum::routing::post(admin_drain))
        .route("/api/features", get(features))
        .route("/api/cometVideoApi.js", get(video_api))
        .with_state(ctx.clone());
    r = match &ctx.demo {
        Some(demo) => r.merge(crate::demo::router(demo.clone())),
        None => r.route(
            "/",
            get(|| async {
                "comet-server: the demo page is off here ([http] demo); the JS API is at \
                 /api/cometVideoApi.js\n"
            }),
        ),
    };
    r
}

/// How long `/healthz` waits for the store and the WebRTC endpoint to answer.
const HEALTH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// A write transaction open this long means the store is stuck (a disk that does not answer).
const STORE_STUCK: std::time::Duration = std::time::Duration::from_secs(10);

/// `200 ok` when the store answers a read, its writer is not stuck and the WebRTC endpoint
/// answers; otherwise `503` with one line per problem (for load balancers and supervisors).
async fn healthz(State(ctx): State<Arc<HttpContext>>) -> Response {
    let mut problems = process_problems(&ctx).await;
    // A media node without its head lets nobody in (SIP answers 503).
    if let Some(link) = &ctx.cluster_node
        && !link.stats.up.load(Ordering::Relaxed)
    {
        problems.push(format!("cluster: not connected to the head {}", link.url()));
    }
    if !problems.is_empty() {
        tracing::warn!(problems = %problems.join("; "), "health check failed");
    }
    // A draining server takes no new work: load balancers should send it none (it asked for
    // this itself: nothing to warn about).
    if ctx.draining.is_draining() {
        problems.push("draining: no new conference starts here".into());
    }
    if problems.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("unhealthy\n{}\n", problems.join("\n")),
    )
        .into_response()
}

/// `/livez`: the process itself works (the store and the WebRTC endpoint answer), whatever
/// it is asked to do: unlike `/healthz` it stays 200 while the server drains or a media node
/// waits for its head, so a liveness probe does not restart a server that is finishing its
/// calls.
async fn livez(State(ctx): State<Arc<HttpContext>>) -> Response {
    let problems = process_problems(&ctx).await;
    if problems.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    tracing::warn!(problems = %problems.join("; "), "liveness check failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("unhealthy\n{}\n", problems.join("\n")),
    )
        .into_response()
}

/// What is wrong with the process: the store's read and write side, the WebRTC endpoint.
async fn process_problems(ctx: &HttpContext) -> Vec<String> {
    let stuck = ctx.engine.store.stats().and_then(|st| st.busy_for());
    health_problems(
        HEALTH_WAIT,
        ctx.engine.store.setting(0, "healthz"),
        stuck,
        ctx.runtime.endpoint_metrics(),
    )
    .await
}

/// What is wrong, given a store read, how long the store's write transaction has been open
/// (if one is) and a round trip to the WebRTC endpoint; each waited for at most `wait`.
async fn health_problems<R, M, E: std::fmt::Display>(
    wait: std::time::Duration,
    store_read: impl std::future::Future<Output = crate::store::StoreResult<R>>,
    store_busy_for: Option<std::time::Duration>,
    endpoint: impl std::future::Future<Output = Result<M, E>>,
) -> Vec<String> {
    let (read, media) = tokio::join!(
        tokio::time::timeout(wait, store_read),
        tokio::time::timeout(wait, endpoint)
    );
    let mut problems = Vec::new();
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("store: {e}")),
        Err(_) => problems.push(format!(
            "store: a read did not answer within {} ms",
            wait.as_millis()
        )),
    }
    if let Some(d) = store_busy_for.filter(|d| *d >= STORE_STUCK) {
        problems.push(format!(
            "store: a write transaction has been open for {} s",
            d.as_secs()
        ));
    }
    match media {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("media: the WebRTC endpoint: {e}")),
        Err(_) => problems.push(format!(
            "media: the WebRTC endpoint did not answer within {} ms",
            wait.as_millis()
        )),
    }
    problems
}

async fn features(State(ctx): State<Arc<HttpContext>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        axum::Json(ctx.features.clone()),
    )
        .into_response()
}

async fn video_api() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        crate::web::COMET_VIDEO_API,
    )
        .into_response()
}

/// A client must send a request's headers within this, also to start the next request on a
/// kept-alive connection: a silent or trickling client (slowloris) is disconnected.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The HTTP/1 settings every listener of ours uses (HTTP, the comet WebSocket): hyper
/// enforces no header timeout without a timer, which `axum::serve` does not set.
pub fn hardened<A>(mut server: axum_server::Server<A>) -> axum_server::Server<A> {
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    server
}

/// The acceptor of our axum-server listeners (HTTP, the comet WebSocket): admits the
/// connection through the listener's [`Gate`] (a refused one gets a 503 on a plain listener
/// and is closed on a TLS one, where it is the inner acceptor and no TLS is spoken yet), sets
/// TCP_NODELAY, and on a plain listener hands the connection to hyper only once its first
/// byte arrived, within [`HEADER_READ_TIMEOUT`]: hyper's header timeout starts after it has
/// sniffed the HTTP version, which waits for that byte forever. (TLS listeners have the TLS
/// handshake's timeout instead.)
#[derive(Clone, Debug)]
pub struct Admit {
    gate: Arc<Gate>,
    tls: bool,
}

impl Admit {
    /// For a plain listener.
    pub fn plain(gate: Arc<Gate>) -> Self {
        Admit { gate, tls: false }
    }

    /// As the inner acceptor of a TLS listener.
    pub fn tls(gate: Arc<Gate>) -> Self {
        Admit { gate, tls: true }
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<tokio::net::TcpStream, S> for Admit {
    type Stream = Admitted<tokio::net::TcpStream>;
    type Service = S;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<(Self::Stream, S)>> + Send>,
    >;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let admitted = self.gate.admit(crate::admission::peer_ip(&stream));
        let gate = self.gate.clone();
        let tls = self.tls;
        Box::pin(async move {
            let permit = match admitted {
                Ok(p) => p,
                Err(why) => {
                    if !tls {
                        gate.refuse_http(stream, why);
                    }
                    return Err(std::io::Error::other(
                        "connection refused by the listener's caps",
                    ));
                }
            };
            // Small frames (comet events) go out at once rather than waiting for the peer's
            // acknowledgement of the last one (Nagle), as on the CometQL listener.
            let _ = stream.set_nodelay(true);
            if !tls {
                // `peek` waits for a byte without taking it (`readable` may be ready at once
                // for a new socket).
                let mut byte = [0u8; 1];
                match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut byte)).await {
                    Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no request within the header timeout",
                        ));
                    }
                }
            }
            Ok((Admitted::new(stream, permit), service))
        })
    }
}

/// A plain (no TLS) listener with [`hardened`] settings, admitting through `gate`.
pub fn plain_server(
    listener: tokio::net::TcpListener,
    gate: Arc<Gate>,
) -> std::io::Result<axum_server::Server<Admit>> {
    Ok(hardened(
        axum_server::from_tcp(listener.into_std()?).acceptor(Admit::plain(gate)),
    ))
}

/// A TLS listener with [`hardened`] settings, admitting through `gate` before the handshake.
pub fn tls_server(
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    gate: Arc<Gate>,
) -> axum_server::Server<axum_server::tls_rustls::RustlsAcceptor<Admit>> {
    hardened(
        axum_server::from_tcp(listener)
            .acceptor(axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(Admit::tls(gate))),
    )
}

/// Serves until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<HttpContext>) {
    let gate = ctx.gates.http.clone();
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    let server = match plain_server(listener, gate) {
        Ok(s) => s,
        Err(e) => return tracing::error!("HTTP listener: {e}"),
    };
    if let Err(e) = server.serve(app).await {
        tracing::error!("HTTP listener stopped: {e}");
    }
}

/// Serves https until the task is dropped.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    ctx: Arc<HttpContext>,
) {
    let gate = ctx.gates.http.clone();
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = tls_server(listener, tls, gate).serve(app).await {
        tracing::error!("HTTPS listener stopped: {e}");
    }
}

/// The 403 to send when `peer` may not see the admin page `what` (metrics, debug pages, admin
/// endpoints); `None` when it may.
fn admin_refusal(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
    what: &str,
) -> Option<Response> {
    if admin_allowed(ctx.metrics_token.as_deref(), peer, headers) {
        return None;
    }
    Some(
        (
            StatusCode::FORBIDDEN,
            format!("{what} are served to loopback or with the token\n"),
        )
            .into_response(),
    )
}

/// Admin pages (`/metrics`, `/debug/conferences`): loopback, or the bearer token (compared in
/// constant time) when one is configured.
fn admin_allowed(token: Option<&str>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    let Some(token) = token else {
        return false;
    };
    crate::secret::bearer_matches(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        token,
    )
}

async fn metrics(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admin_refusal(&ctx, peer, &headers, "metrics") {
        return refused;
    }
    let mut body = render(&ctx);
    // Summing the members' receive counters waits for each conference's tick: off the
    // async workers.
    let runtime = ctx.runtime.clone();
    if let Ok(t) = tokio::task::spawn_blocking(move || runtime.audio_totals()).await {
        body.push_str(&render_audio(&t));
    }
    // The WebRTC endpoint's counters come from its driver task (skipped if it does not answer
    // within a second, e.g. while it is shutting down).
    if let Ok(Ok(m)) = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        ctx.runtime.endpoint_metrics(),
    )
    .await
    {
        body.push_str(&render_endpoint(&m));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `POST /admin/drain` (admin, like `/metrics`): starts draining (see [`crate::draining`]);
/// answers 202 with the calls still up.
async fn admin_drain(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admin_refusal(&ctx, peer, &headers, "admin endpoints") {
        return refused;
    }
    // Operators' tools send no Origin; a browser does, and a page from anywhere may make the
    // browser of someone on this machine POST here (a form needs no preflight).
    if headers.contains_key(header::ORIGIN) {
        return (
            StatusCode::FORBIDDEN,
            "admin endpoints do not take requests from web pages\n",
        )
            .into_response();
    }
    let calls = ctx.draining.start("POST /admin/drain");
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "draining": true, "calls": calls })),
    )
        .into_response()
}

/// `/debug/conferences` (admin, like `/metrics`): every media conference and member as JSON,
/// with what each member's jitter buffer and decoder did and what the mixer made of it.
async fn debug_conferences(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admin_refusal(&ctx, peer, &headers, "debug pages") {
        return refused;
    }
    let runtime = ctx.runtime.clone();
    match tokio::task::spawn_blocking(move || runtime.debug_conferences()).await {
        Ok(confs) => axum::Json(confs).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The WebRTC endpoint's counters (`comet_sfu_*`) in the Prometheus text format.
pub fn render_endpoint(m: &comet_sfu::Metrics) -> String {
    let metrics: [(&str, &str, &str, u64); 18] = [
        (
            "comet_sfu_participants",
            "gauge",
            "WebRTC participants held by the endpoint.",
            m.participants,
        ),
        (
            "comet_sfu_datagrams_in_total",
            "counter",
            "UDP datagrams received on the media port.",
            m.datagrams_in,
        ),
        (
            "comet_sfu_datagrams_out_total",
            "counter",
            "UDP datagrams sent from the media port.",
            m.datagrams_out,
        ),
        (
            "comet_sfu_bytes_in_total",
            "counter",
            "Bytes received on the media port.",
            m.bytes_in,
        ),
        (
            "comet_sfu_bytes_out_total",
            "counter",
            "Bytes sent from the media port.",
            m.bytes_out,
        ),
        (
            "comet_sfu_malformed_dropped_total",
            "counter",
            "Datagrams dropped as none of STUN/DTLS/RTP/RTCP or garbled.",
            m.malformed_dropped,
        ),
        (
            "comet_sfu_unknown_dropped_total",
            "counter",
            "Datagrams dropped because no participant claims them.",
            m.unknown_dropped,
        ),
        (
            "comet_sfu_rtp_in_total",
            "counter",
            "RTP packets received from participants.",
            m.rtp_in,
        ),
        (
            "comet_sfu_rtp_out_total",
            "counter",
            "RTP packets sent to participants (retransmissions excluded).",
            m.rtp_out,
        ),
        (
            "comet_sfu_nacks_received_total",
            "counter",
            "NACKs received from participants.",
            m.nacks_received,
        ),
        (
            "comet_sfu_writes_refused_total",
            "counter",
            "Media writes refused (participant not connected or not receiving).",
            m.writes_refused,
        ),
        (
            "comet_sfu_events_dropped_total",
            "counter",
            "Media events dropped because the conference runtime was behind.",
            m.events_dropped,
        ),
        (
            "comet_sfu_send_errors_total",
            "counter",
            "Failed UDP sends.",
            m.send_errors,
        ),
        (
            "comet_sfu_shards",
            "gauge",
            "Threads (shards) that carry the WebRTC endpoint ([media] threads).",
            m.shards,
        ),
        (
            "comet_sfu_inbox_dropped_total",
            "counter",
            "Datagrams dropped because the endpoint thread they were for was behind.",
            m.inbox_dropped,
        ),
        (
            "comet_sfu_socket_drops_total",
            "counter",
            "Datagrams the kernel dropped on the media socket (receive buffer full).",
            m.socket_drops,
        ),
        (
            "comet_sfu_socket_recv_buffer_bytes",
            "gauge",
            "The media socket's receive buffer as granted by the kernel.",
            m.socket_recv_buffer,
        ),
        (
            "comet_sfu_panics_total",
            "counter",
            "Panics caught inside the WebRTC stack (bugs).",
            m.panics,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in metrics {
        family(&mut out, name, kind, help, &[("", value as f64)]);
    }
    out
}

/// What the members' jitter buffers and decoders did with their audio, summed over every
/// member present and departed.
pub fn render_audio(t: &crate::conference::AudioTotals) -> String {
    let mut out = String::new();
    let c = |v: u64| v as f64;
    family(
        &mut out,
        "comet_rtp_packets_lost_total",
        "counter",
        "Audio RTP packets never received (RFC 3550 cumulative loss).",
        &[("", c(t.lost))],
    );
    family(
        &mut out,
        "comet_audio_packets_discarded_total",
        "counter",
        "Received audio packets not played, by reason.",
        &[
            ("reason=\"late\"", c(t.late)),
            ("reason=\"duplicate\"", c(t.duplicates)),
            ("reason=\"latency\"", c(t.dropped_for_latency)),
            ("reason=\"overflow\"", c(t.overflow_drops)),
            ("reason=\"malformed\"", c(t.malformed)),
        ],
    );
    family(
        &mut out,
        "comet_audio_stream_resets_total",
        "counter",
        "Audio streams restarted after a huge sequence or timestamp jump.",
        &[("", c(t.resets))],
    );
    family(
        &mut out,
        "comet_audio_frames_total",
        "counter",
        "20 ms frames the mixer got from members, by how they were made.",
        &[
            ("kind=\"decoded\"", c(t.decoded)),
            ("kind=\"fec\"", c(t.fec_recovered)),
            ("kind=\"concealed\"", c(t.concealed)),
            ("kind=\"silence\"", c(t.silence)),
        ],
    );
    family(
        &mut out,
        "comet_audio_decode_errors_total",
        "counter",
        "Audio payloads the decoder rejected (concealed instead).",
        &[("", c(t.decode_errors))],
    );
    out
}

/// The metrics text (Prometheus text format, version 0.0.4).
pub fn render(ctx: &HttpContext) -> String {
    let s = &ctx.engine.stats;
    let h = &ctx.hub.stats;
    let r = &ctx.runtime.stats;
    let v = &r.video;
    let metrics: [(&str, &str, &str, f64); 32] = [
        (
            "comet_cometql_connections",
            "gauge",
            "Open CometQL connections.",
            load(&s.connections),
        ),
        (
            "comet_cometql_queries_total",
            "counter",
            "CometQL statements executed.",
            load(&s.queries),
        ),
        (
            "comet_cometql_errors_total",
            "counter",
            "CometQL statements answered with an error.",
            load(&s.errors),
        ),
        (
            "comet_cometql_logins_failed_total",
            "counter",
            "Refused CometQL logins.",
            load(&s.logins_failed),
        ),
        (
            "comet_ws_connections",
            "gauge",
            "Open comet WebSocket connections.",
            ctx.hub.connections() as f64,
        ),
        (
            "comet_ws_frames_sent_total",
            "counter",
            "Frames queued to comet WebSocket connections.",
            load(&h.frames_sent),
        ),
        (
            "comet_ws_slow_closed_total",
            "counter",
            "Connections closed for not keeping up.",
            load(&h.slow_closed),
        ),
        (
            "comet_ws_throttled_total",
            "counter",
            "Times a connection's reading paused: it sent faster than [ws] commands_per_second.",
            load(&h.throttled),
        ),
        (
            "comet_participants",
            "gauge",
            "Members in media conferences.",
            load(&r.participants),
        ),
        (
            "comet_draining",
            "gauge",
            "1 while the server drains (no new conference starts here; SIGUSR1 or POST /admin/drain).",
            f64::from(u8::from(ctx.draining.is_draining())),
        ),
        (
            "comet_conferences",
            "gauge",
            "Media conferences with members.",
            load(&r.conferences),
        ),
        (
            "comet_rtp_packets_in_total",
            "counter",
            "Audio RTP packets received from participants.",
            load(&r.rtp_in),
        ),
        (
            "comet_rtp_packets_out_total",
            "counter",
            "Audio RTP packets sent to participants.",
            load(&r.rtp_out),
        ),
        (
            "comet_mix_ticks_total",
            "counter",
            "20 ms mixing periods run.",
            load(&r.ticks),
        ),
        (
            "comet_mix_ticks_skipped_total",
            "counter",
            "20 ms mixing periods skipped because the runtime fell over 200 ms behind.",
            load(&r.ticks_skipped),
        ),
        (
            "comet_mix_seconds_total",
            "counter",
            "Time spent decoding, mixing and encoding.",
            load(&r.mix_ns) / 1e9,
        ),
        (
            "comet_audio_encodes_total",
            "counter",
            "Mixes Opus-encoded (the shared mix once per codec, each talker's own mix).",
            load(&r.encodes),
        ),
        (
            "comet_audio_opus_complexity",
            "gauge",
            "Opus complexity the mixes are encoded with now ([media] opus_complexity, lowered while the mixing clock is short of time).",
            load(&r.opus_complexity),
        ),
        (
            "comet_audio_passthrough_total",
            "counter",
            "Audio payloads forwarded as the one talker a listener hears sent them (not re-encoded).",
            load(&r.passthrough),
        ),
        (
            "comet_video_packets_in_total",
            "counter",
            "Video RTP packets received from participants.",
            load(&v.packets_in),
        ),
        (
            "comet_video_packets_hidden_total",
            "counter",
            "Video RTP packets not decoded: no canvas showed their sender.",
            load(&v.dropped_hidden),
        ),
        (
            "comet_video_packets_dropped_backlog_total",
            "counter",
            "Video RTP packets dropped: a conference's video thread had too many waiting.",
            load(&v.dropped_backlog),
        ),
        (
            "comet_video_frames_decoded_total",
            "counter",
            "Participants' pictures decoded.",
            load(&v.decoded),
        ),
        (
            "comet_video_canvases_encoded_total",
            "counter",
            "Canvas pictures H.264-encoded (each once for all who see it).",
            load(&v.encoded),
        ),
        (
            "comet_video_keyframes_total",
            "counter",
            "Canvas keyframes encoded.",
            load(&v.keyframes),
        ),
        (
            "comet_video_keyframes_forced_total",
            "counter",
            "Canvas keyframes forced by a subscriber's request (PLI, FIR, SIP INFO) or for a new subscriber.",
            load(&v.forced_keyframes),
        ),
        (
            "comet_video_keyframe_requests_total",
            "counter",
            "PLI/FIR sent to participants.",
            load(&v.keyframe_requests),
        ),
        (
            "comet_video_payloads_out_total",
            "counter",
            "Canvas RTP payloads sent to participants.",
            load(&v.payloads_out),
        ),
        (
            "comet_video_bitrate_estimates_total",
            "counter",
            "REMB/TWCC bandwidth estimates received for the canvases we send.",
            load(&v.estimates),
        ),
        (
            "comet_video_encoders",
            "gauge",
            "Canvas encoders: distinct canvases being encoded.",
            load(&v.encoders),
        ),
        (
            "comet_video_subscribers",
            "gauge",
            "Participants receiving a canvas.",
            load(&v.subscribers),
        ),
        (
            "comet_video_seconds_total",
            "counter",
            "Time the video threads spent decoding, composing and encoding.",
            load(&v.busy_ns) / 1e9,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in metrics {
        family(&mut out, name, kind, help, &[("", value)]);
    }
    render_connections(&mut out, &ctx.gates);
    render_sip(&mut out, &ctx.sip);
    if let Some(st) = ctx.engine.store.stats() {
        render_store(&mut out, st);
    }
    render_broadcast(&mut out, &ctx.broadcast);
    render_cluster(
        &mut out,
        ctx.engine.settings.cluster.as_deref(),
        ctx.cluster_node.as_deref(),
    );
    out
}

/// A cluster's head (its media nodes) or media node (its link to the head).
fn render_cluster(
    out: &mut String,
    head: Option<&crate::cluster::head::ClusterHead>,
    node: Option<&crate::cluster::node::NodeLink>,
) {
    if let Some(h) = head {
        let st = &h.stats;
        // Node names are the operator's (`[cluster] name`): quoted as label values must be.
        let per_node: Vec<(String, f64)> = h
            .members_per_node()
            .into_iter()
            .map(|(node, n)| {
                let node = node.replace('\\', "\\\\").replace('"', "\\\"");
                (format!("node=\"{node}\""), n as f64)
            })
            .collect();
        let per_node: Vec<(&str, f64)> = per_node.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        families_out(
            out,
            &[(
                "comet_cluster_node_members",
                "gauge",
                "Conference members on each media node, as the node reported them.",
                &per_node,
            )],
        );
        families_out(
            out,
            &[
                (
                    "comet_cluster_nodes",
                    "gauge",
                    "Media nodes connected to this head.",
                    &[("", h.nodes().len() as f64)],
                ),
                (
                    "comet_cluster_nodes_draining",
                    "gauge",
                    "Connected media nodes that are draining (no new conference goes there).",
                    &[("", h.draining_nodes().len() as f64)],
                ),
                (
                    "comet_cluster_links_total",
                    "counter",
                    "Media node links accepted (a node's reconnection counts again).",
                    &[("", load(&st.links))],
                ),
                (
                    "comet_cluster_refused_total",
                    "counter",
                    "Connections to the cluster listener refused: wrong secret or path, no hello, another protocol version.",
                    &[("", load(&st.refused))],
                ),
                (
                    "comet_cluster_malformed_total",
                    "counter",
                    "Frames from media nodes that did not parse (dropped).",
                    &[("", load(&st.malformed))],
                ),
            ],
        );
    }
    if let Some(n) = node {
        let st = &n.stats;
        let up = if st.up.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        };
        families_out(
            out,
            &[
                (
                    "comet_cluster_head_up",
                    "gauge",
                    "1 while this media node's link to its head is up (else its SIP answers REGISTER and INVITE with 500).",
                    &[("", up)],
                ),
                (
                    "comet_cluster_head_connects_total",
                    "counter",
                    "Links to the head established.",
                    &[("", load(&st.connects))],
                ),
                (
                    "comet_cluster_lookups_total",
                    "counter",
                    "Users and invitations asked of the head.",
                    &[("", load(&st.lookups))],
                ),
                (
                    "comet_cluster_lookup_failures_total",
                    "counter",
                    "Of those, failed: the link down, no answer in time, or the head's store failed.",
                    &[("", load(&st.lookup_failures))],
                ),
            ],
        );
    }
}

/// SIP over WebSocket: calls, refusals, malformed input, throttling.
fn render_sip(out: &mut String, st: &crate::sip::core::SipStats) {
    let families: [Family; 6] = [
        (
            "comet_sip_calls_started_total",
            "counter",
            "SIP calls started: INVITEs authenticated, invited and handed to the media side.",
            &[("", load(&st.calls_started))],
        ),
        (
            "comet_sip_calls_ended_total",
            "counter",
            "SIP calls ended, answered or not (BYE either way, hangups, failures, closed connections).",
            &[("", load(&st.calls_ended))],
        ),
        (
            "comet_sip_forbidden_total",
            "counter",
            "REGISTERs and INVITEs refused with 403 (wrong key, unknown user, not invited).",
            &[("", load(&st.forbidden))],
        ),
        (
            "comet_sip_malformed_total",
            "counter",
            "Malformed SIP messages: answered with 400/505/513, or dropped when they could not be answered.",
            &[
                ("handling=\"answered\"", load(&st.malformed_answered)),
                ("handling=\"dropped\"", load(&st.malformed_dropped)),
            ],
        ),
        (
            "comet_sip_stray_total",
            "counter",
            "SIP responses and ACKs that matched no transaction.",
            &[("", load(&st.stray))],
        ),
        (
            "comet_sip_throttled_total",
            "counter",
            "Times a SIP connection's reading paused because it sent faster than [sip] messages_per_second.",
            &[("", load(&st.throttled))],
        ),
    ];
    families_out(out, &families);
}

/// The store's requests and transactions (the SQLite store; the memory store keeps none).
fn render_store(out: &mut String, st: &crate::store::StoreStats) {
    let kinds = |read: &std::sync::atomic::AtomicU64, write: &std::sync::atomic::AtomicU64| {
        [
            ("kind=\"read\"", load(read)),
            ("kind=\"write\"", load(write)),
        ]
    };
    let families: [Family; 5] = [
        (
            "comet_store_requests_total",
            "counter",
            "Store requests answered: reads (on the reader connections) and writes (in the writer's transactions).",
            &kinds(&st.reads, &st.writes),
        ),
        (
            "comet_store_requests_waiting",
            "gauge",
            "Store requests queued and not yet started.",
            &kinds(&st.reads_waiting, &st.writes_waiting),
        ),
        (
            "comet_store_commits_total",
            "counter",
            "Write transactions committed (each holds every write that was waiting, up to 256).",
            &[("", load(&st.commits))],
        ),
        (
            "comet_store_commit_failures_total",
            "counter",
            "Write transactions that failed to begin or commit (their writes were answered with an error).",
            &[("", load(&st.commit_failures))],
        ),
        (
            "comet_store_write_seconds_total",
            "counter",
            "Time spent in write transactions, fsync included.",
            &[("", load(&st.write_ns) / 1e9)],
        ),
    ];
    families_out(out, &families);
}

/// Open and refused connections of each TCP listener (`[<listener>] max_connections`).
fn render_connections(out: &mut String, gates: &crate::admission::Gates) {
    let open: Vec<(String, f64)> = gates
        .all()
        .iter()
        .map(|g| (format!("listener=\"{}\"", g.listener()), g.open() as f64))
        .collect();
    let refused: Vec<(String, f64)> = gates
        .all()
        .iter()
        .flat_map(|g| {
            let (full, per_ip) = g.refused();
            [
                ("max_connections", full),
                ("max_connections_per_ip", per_ip),
            ]
            .map(|(cap, n)| {
                (
                    format!("listener=\"{}\",cap=\"{cap}\"", g.listener()),
                    n as f64,
                )
            })
        })
        .collect();
    family(
        out,
        "comet_connections_open",
        "gauge",
        "Connections open on each TCP listener.",
        &open,
    );
    family(
        out,
        "comet_connections_refused_total",
        "counter",
        "Connections refused because a listener, or a client address on it, was at its cap.",
        &refused,
    );
    let (failed, blocked): (Vec<_>, Vec<_>) = gates
        .all()
        .iter()
        .map(|g| {
            let label = format!("listener=\"{}\"", g.listener());
            let (failed, blocked) = g.auth_counts();
            ((label.clone(), failed as f64), (label, blocked as f64))
        })
        .unzip();
    family(
        out,
        "comet_auth_failures_total",
        "counter",
        "Failed logins (CometQL password, SIP digest, comet WebSocket user key).",
        &failed,
    );
    family(
        out,
        "comet_auth_blocked_total",
        "counter",
        "Login attempts refused unchecked because their address had failed too often ([<listener>] max_auth_failures).",
        &blocked,
    );
}

/// One metric family: its HELP and TYPE lines and one sample per label set (`""`: none).
fn family<L: AsRef<str>>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(L, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let labels = labels.as_ref();
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A metric family: name, type, help, samples by label set.
type Family<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, f64)]);

/// Every family of `families`, in order.
fn families_out(out: &mut String, families: &[Family]) {
    for (name, kind, help, samples) in families {
        family(out, name, kind, help, samples);
    }
}

/// A counter or gauge's value.
fn load(a: &std::sync::atomic::AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

/// The broadcast families: RTMP outputs, recordings, encoding.
fn render_broadcast(out: &mut String, b: &crate::broadcast::BroadcastStats) {
    let one = |v: f64| [("", v)];
    let families: [Family; 16] = [
        (
            "comet_broadcasts",
            "gauge",
            "Conferences being broadcast or recorded.",
            &one(load(&b.active)),
        ),
        (
            "comet_broadcast_rtmp_outputs",
            "gauge",
            "RTMP outputs running (publishing or reconnecting).",
            &one(load(&b.rtmp_outputs)),
        ),
        (
            "comet_broadcast_rtmp_publishing",
            "gauge",
            "RTMP outputs connected and publishing now.",
            &one(load(&b.rtmp_publishing)),
        ),
        (
            "comet_broadcast_rtmp_attempts_total",
            "counter",
            "RTMP connection attempts (TCP connect).",
            &one(load(&b.rtmp_attempts)),
        ),
        (
            "comet_broadcast_rtmp_connects_total",
            "counter",
            "RTMP sessions that started publishing (NetStream.Publish.Start).",
            &one(load(&b.rtmp_connects)),
        ),
        (
            "comet_broadcast_rtmp_reconnects_total",
            "counter",
            "RTMP sessions that started publishing again after their output lost a connection.",
            &one(load(&b.rtmp_reconnects)),
        ),
        (
            "comet_broadcast_rtmp_failures_total",
            "counter",
            "RTMP connection attempts that failed and sessions that were lost.",
            &one(load(&b.rtmp_failures)),
        ),
        (
            "comet_broadcast_rtmp_bytes_total",
            "counter",
            "Bytes written to RTMP connections.",
            &one(load(&b.rtmp_bytes)),
        ),
        (
            "comet_broadcast_rtmp_tags_total",
            "counter",
            "FLV tags sent over RTMP (sequence headers included).",
            &[
                ("kind=\"audio\"", load(&b.rtmp_audio_tags)),
                ("kind=\"video\"", load(&b.rtmp_video_tags)),
            ],
        ),
        (
            "comet_broadcast_rtmp_dropped_total",
            "counter",
            "Encoded packets not sent because the RTMP connection was down or too slow.",
            &one(load(&b.rtmp_dropped)),
        ),
        (
            "comet_broadcast_recordings",
            "gauge",
            "Recordings open now.",
            &one(load(&b.recordings)),
        ),
        (
            "comet_broadcast_recordings_finalized_total",
            "counter",
            "Recordings finalized (the MP4 trailer written).",
            &one(load(&b.recordings_finalized)),
        ),
        (
            "comet_broadcast_recording_failures_total",
            "counter",
            "Recordings that could not be created, written or finalized.",
            &one(load(&b.recording_failures)),
        ),
        (
            "comet_broadcast_recording_bytes_total",
            "counter",
            "Bytes written to recording files (FFmpeg writes in chunks of up to 256 KB; exact \
             once a recording is finalized).",
            &one(load(&b.recording_bytes)),
        ),
        (
            "comet_broadcast_frames_encoded_total",
            "counter",
            "Frames encoded for broadcasts (video: H.264 pictures, audio: AAC frames).",
            &[
                ("kind=\"audio\"", load(&b.audio_frames)),
                ("kind=\"video\"", load(&b.video_frames)),
            ],
        ),
        (
            "comet_broadcast_frames_dropped_total",
            "counter",
            "Broadcast inputs and frames dropped: queue_full (the broadcast thread fell behind), \
             late (video frames skipped to catch up), rate_control (skipped by the H.264 rate \
             control).",
            &[
                ("reason=\"queue_full\"", load(&b.input_dropped)),
                ("reason=\"late\"", load(&b.video_late)),
                ("reason=\"rate_control\"", load(&b.video_rate_skipped)),
            ],
        ),
    ];
    families_out(out, &families);
    family(
        out,
        "comet_broadcast_encode_seconds_total",
        "counter",
        "Time the broadcast threads spent encoding (audio: AAC, video: H.264) and handing \
         packets to the outputs (output: RTMP queue and the recording's muxer).",
        &[
            ("kind=\"audio\"", load(&b.audio_encode_ns) / 1e9),
            ("kind=\"video\"", load(&b.video_encode_ns) / 1e9),
            ("kind=\"output\"", load(&b.output_ns) / 1e9),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_pages_need_loopback_or_the_token() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let none = HeaderMap::new();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(admin_allowed(None, local, &none));
        assert!(admin_allowed(Some("s3cret"), local, &none));
        assert!(!admin_allowed(None, remote, &none));
        assert!(!admin_allowed(None, remote, &with("Bearer s3cret")));
        assert!(!admin_allowed(Some("s3cret"), remote, &none));
        assert!(!admin_allowed(
            Some("s3cret"),
            remote,
            &with("Bearer s3cre")
        ));
        assert!(!admin_allowed(
            Some("s3cret"),
            remote,
            &with("Bearer s3cret2")
        ));
        assert!(!admin_allowed(
            Some("s3cret"),
            remote,
            &with("Basic s3cret")
        ));
        assert!(admin_allowed(
            Some("s3cret"),
            remote,
            &with("Bearer s3cret")
        ));
    }

    use crate::store::StoreError;
    use std::time::Duration;

    async fn ok_read() -> crate::store::StoreResult<Option<String>> {
        Ok(None)
    }

    async fn ok_endpoint() -> Result<(), String> {
        Ok(())
    }

    #[tokio::test]
    async fn health_names_each_problem() {
        let wait = Duration::from_millis(50);
        assert!(
            health_problems(wait, ok_read(), None, ok_endpoint())
                .await
                .is_empty()
        );
        // A transaction open a while is normal (a slow fsync); stuck only from 10 s.
        assert!(
            health_problems(wait, ok_read(), Some(Duration::from_secs(3)), ok_endpoint())
                .await
                .is_empty()
        );
        let p = health_problems(
            wait,
            std::future::pending::<crate::store::StoreResult<()>>(),
            Some(Duration::from_secs(12)),
            std::future::pending::<Result<(), String>>(),
        )
        .await;
        assert_eq!(
            p,
            [
                "store: a read did not answer within 50 ms",
                "store: a write transaction has been open for 12 s",
                "media: the WebRTC endpoint did not answer within 50 ms",
            ]
        );
        let p = health_problems(
            wait,
            async { Err::<(), _>(StoreError::Backend("disk I/O error".into())) },
            None,
            async { Err::<(), _>("the driver is gone") },
        )
        .await;
        assert_eq!(
            p,
            [
                "store: storage error: disk I/O error",
                "media: the WebRTC endpoint: the driver is gone",
            ]
        );
    }
}
