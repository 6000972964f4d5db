//! The thin tokio driver of one RTMP output: TCP connection, the sans-IO [`Publisher`], and
//! reconnection with back-off (0.5 s doubling to 10 s) while the conference lasts. After every
//! (re)connection it sends the metadata and both sequence headers again, asks the encoder for
//! a keyframe and sends no video until that keyframe, so nginx-rtmp can cut HLS/DASH fragments
//! from the first video tag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::BroadcastStats;
use super::encode::{Headers, Packet};
use super::flv;
use super::rtmp::{Publisher, RtmpError, RtmpUrl};

/// What the encoder thread sends the driver.
#[derive(Debug)]
pub enum ToRtmp {
    /// The codec configurations changed (the first keyframe's, usually once).
    Headers(Headers),
    Packet(Packet),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// From TCP connect to `NetStream.Publish.Start`.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A session that published this long resets the back-off.
const STABLE: Duration = Duration::from_secs(10);

enum End {
    /// The conference ended: nothing more to send.
    Finished,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Rtmp(#[from] RtmpError),
    #[error("timed out")]
    Timeout,
    #[error("the server closed the connection")]
    Closed,
}

/// Runs until `rx` closes (the conference ended and everything queued was sent).
pub async fn run(
    url: RtmpUrl,
    mut rx: mpsc::Receiver<ToRtmp>,
    want_keyframe: Arc<AtomicBool>,
    stats: Arc<BroadcastStats>,
) {
    stats.rtmp_outputs.fetch_add(1, Ordering::Relaxed);
    let _output = Gauge(&stats.rtmp_outputs);
    let mut headers: Option<Headers> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut published = false;
    let target = format!("{}:{}/{}/{}", url.host, url.port, url.app, url.stream);
    loop {
        let started = tokio::time::Instant::now();
        stats.rtmp_attempts.fetch_add(1, Ordering::Relaxed);
        let s = session(
            &url,
            &mut rx,
            &mut headers,
            &want_keyframe,
            &stats,
            &mut published,
        );
        match s.await {
            Ok(End::Finished) => {
                tracing::info!(rtmp = %target, "broadcast ended");
                return;
            }
            Err(e) => {
                stats.rtmp_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rtmp = %target, "RTMP output: {e}; retrying in {backoff:?}");
            }
        }
        if started.elapsed() >= STABLE {
            backoff = FIRST_BACKOFF;
        }
        // Wait, keeping up with the encoder (latest headers; packets are dropped).
        let until = tokio::time::Instant::now() + backoff;
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Err(_) => break,
                Ok(None) => return,
                Ok(Some(ToRtmp::Headers(h))) => headers = Some(h),
                Ok(Some(ToRtmp::Packet(_))) => {}
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    url: &RtmpUrl,
    rx: &mut mpsc::Receiver<ToRtmp>,
    headers: &mut Option<Headers>,
    want_keyframe: &AtomicBool,
    stats: &BroadcastStats,
    published: &mut bool,
) -> Result<End, SessionError> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| SessionError::Timeout)??;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let (mut publisher, first) = Publisher::new(url.clone())?;
    wr.write_all(&first).await?;
    let mut buf = vec![0u8; 16 * 1024];
    // Handshake, connect, createStream, publish.
    let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
    while !publisher.is_publishing() {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rd.read(&mut buf)) => {
                let n = r.map_err(|_| SessionError::Timeout)??;
                if n == 0 {
                    return Err(SessionError::Closed);
                }
                let out = publisher.feed(&buf[..n])?;
                wr.write_all(&out).await?;
            }
            m = rx.recv() => match m {
                None => return Ok(End::Finished),
                Some(ToRtmp::Headers(h)) => *headers = Some(h),
                Some(ToRtmp::Packet(_)) => {}
            }
        }
    }
    tracing::info!(
        rtmp = %format!("{}:{}/{}/{}", url.host, url.port, url.app, url.stream),
        "publishing"
    );
    stats.rtmp_connects.fetch_add(1, Ordering::Relaxed);
    if *published {
        stats.rtmp_reconnects.fetch_add(1, Ordering::Relaxed);
    }
    *published = true;
    stats.rtmp_publishing.fetch_add(1, Ordering::Relaxed);
    let _guard = Gauge(&stats.rtmp_publishing);
    let mut sent_headers: Option<Headers> = None;
    let mut waiting_key = true;
    want_keyframe.store(true, Ordering::Relaxed);
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(SessionError::Closed);
                }
                let out = publisher.feed(&buf[..n])?;
                if !out.is_empty() {
                    wr.write_all(&out).await?;
                }
            }
            m = rx.recv() => match m {
                None => {
                    wr.flush().await?;
                    let _ = wr.shutdown().await;
                    return Ok(End::Finished);
                }
                Some(ToRtmp::Headers(h)) => *headers = Some(h),
                Some(ToRtmp::Packet(p)) => {
                    // The sequence headers go first, at the time of the first media, and
                    // again when they change.
                    if let Some(h) = headers.as_ref()
                        && sent_headers.as_ref() != Some(h)
                    {
                        send_headers(&mut publisher, &mut wr, h, p.ts_ms() as u32, stats).await?;
                        sent_headers = Some(h.clone());
                    }
                    if sent_headers.is_none() {
                        continue;
                    }
                    let (out, tags) = match p {
                        Packet::Audio { ts_ms, data } => (
                            publisher.audio(flv::aac_frame(&data), ts_ms as u32)?,
                            &stats.rtmp_audio_tags,
                        ),
                        Packet::Video { ts_ms, data, keyframe } => {
                            if waiting_key && !keyframe {
                                continue;
                            }
                            if sent_headers.as_ref().is_none_or(|h| h.avc.is_none()) {
                                // No AVC configuration sent yet: wait for it.
                                continue;
                            }
                            waiting_key = false;
                            (
                                publisher.video(flv::avc_frame(&data, keyframe), ts_ms as u32)?,
                                &stats.rtmp_video_tags,
                            )
                        }
                    };
                    wr.write_all(&out).await?;
                    tags.fetch_add(1, Ordering::Relaxed);
                    stats.rtmp_bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Decrements a gauge when dropped.
struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn send_headers(
    publisher: &mut Publisher,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    h: &Headers,
    ts_ms: u32,
    stats: &BroadcastStats,
) -> Result<(), SessionError> {
    let mut out = publisher.metadata(
        h.video.map(|v| (v.width, v.height, v.fps as f32)),
        (h.sample_rate, h.channels),
    )?;
    if let Some(avc) = &h.avc {
        out.extend(publisher.video(flv::avc_sequence_header(avc), ts_ms)?);
    }
    out.extend(publisher.audio(flv::aac_sequence_header(&h.asc), ts_ms)?);
    wr.write_all(&out).await?;
    if h.avc.is_some() {
        stats.rtmp_video_tags.fetch_add(1, Ordering::Relaxed);
    }
    stats.rtmp_audio_tags.fetch_add(1, Ordering::Relaxed);
    stats
        .rtmp_bytes
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    Ok(())
}
