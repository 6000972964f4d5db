//! The `[http]` listener: health and Prometheus metrics (later: the demo page and the JS API).
//!
//! `/metrics` is an admin endpoint: it answers requests from loopback, and from elsewhere only
//! with `Authorization: Bearer <[http] metrics_token>` when a token is configured.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::cometql::Engine;
use crate::conference::MediaRuntime;
use crate::ws::Hub;

/// What the HTTP handlers read.
pub struct HttpContext {
    pub engine: Arc<Engine>,
    pub hub: Arc<Hub>,
    pub runtime: Arc<MediaRuntime>,
    /// Bearer token that opens `/metrics` to non-loopback clients.
    pub metrics_token: Option<String>,
}

pub fn router(ctx: Arc<HttpContext>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

/// Serves until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<HttpContext>) {
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("HTTP listener stopped: {e}");
    }
}

fn authorized(ctx: &HttpContext, peer: SocketAddr, headers: &HeaderMap) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    let Some(token) = &ctx.metrics_token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            t.len() == token.len()
                && t.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        })
}

async fn metrics(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&ctx, peer, &headers) {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to loopback or with the token\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&ctx),
    )
        .into_response()
}

/// The metrics text (Prometheus text format, version 0.0.4).
pub fn render(ctx: &HttpContext) -> String {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let s = &ctx.engine.stats;
    let h = &ctx.hub.stats;
    let r = &ctx.runtime.stats;
    let v = &r.video;
    let metrics: [(&str, &str, &str, f64); 25] = [
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
            "comet_participants",
            "gauge",
            "Members in media conferences.",
            load(&r.participants),
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
            "comet_rtp_packets_lost_total",
            "counter",
            "Audio RTP packets never received, of members that left.",
            load(&r.rtp_lost),
        ),
        (
            "comet_mix_ticks_total",
            "counter",
            "20 ms mixing periods run.",
            load(&r.ticks),
        ),
        (
            "comet_mix_seconds_total",
            "counter",
            "Time spent decoding, mixing and encoding.",
            load(&r.mix_ns) / 1e9,
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
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}
