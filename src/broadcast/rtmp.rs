//! A sans-IO RTMP publisher over `rml_rtmp`: bytes from the server in, bytes to send out.
//!
//! [`Publisher::new`] gives the handshake's first bytes (C0+C1); every chunk the server sends
//! goes to [`Publisher::feed`], which answers with what to send (the rest of the handshake,
//! `connect`, `createStream`, `publish`, acknowledgements). Once [`Publisher::is_publishing`],
//! [`Publisher::metadata`], [`Publisher::video`] and [`Publisher::audio`] serialize FLV tags
//! into RTMP chunks. No sockets and no clock: timestamps are the caller's milliseconds.

use super::chunks::ChunkGuard;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Where to publish: `rtmp://host[:port]/app/stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    pub host: String,
    pub port: u16,
    /// The application (nginx-rtmp: the `application` block).
    pub app: String,
    /// The stream key (nginx-rtmp: the HLS/DASH file name).
    pub stream: String,
}

impl RtmpUrl {
    /// Parses `rtmp://host[:port]/app/stream` (the stream may contain further `/`).
    pub fn parse(url: &str) -> Result<RtmpUrl, String> {
        let rest = url
            .strip_prefix("rtmp://")
            .ok_or_else(|| format!("`{url}` is not an rtmp:// URL"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{url}` has no application"))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{url}`: bad port `{p}`"))?,
            ),
            _ => (authority, 1935),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (app, stream) = path
            .split_once('/')
            .ok_or_else(|| format!("`{url}` needs rtmp://host[:port]/application/stream"))?;
        if host.is_empty() || app.is_empty() || stream.is_empty() || port == 0 {
            return Err(format!(
                "`{url}` needs rtmp://host[:port]/application/stream"
            ));
        }
        Ok(RtmpUrl {
            host: host.to_string(),
            port,
            app: app.to_string(),
            stream: stream.to_string(),
        })
    }

    /// `rtmp://host:port/app`, the `tcUrl` of `connect`.
    pub fn tc_url(&self) -> String {
        format!("rtmp://{}:{}/{}", self.host, self.port, self.app)
    }
}

/// Why a publishing session failed.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("RTMP session: {0}")]
    Session(String),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Chunks(#[from] super::chunks::ChunkError),
}

enum State {
    Handshaking(Box<Handshake>),
    /// Handshake done, `connect` sent.
    Connecting,
    /// `createStream` + `publish` sent.
    PublishRequested,
    Publishing,
}

/// One publishing session (one TCP connection).
pub struct Publisher {
    url: RtmpUrl,
    state: State,
    session: ClientSession,
    /// Checks the server's bytes before `session` parses them (see `chunks`).
    guard: ChunkGuard,
    /// `session` panicked: it is not used again.
    broken: bool,
    /// Bytes received since the last acknowledgement (for metrics only).
    pub bytes_in: u64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &self.url)
            .field("publishing", &self.is_publishing())
            .finish()
    }
}

fn session_err(e: impl std::fmt::Display) -> RtmpError {
    RtmpError::Session(e.to_string())
}

impl Publisher {
    /// A new session and the first bytes to send (C0 + C1).
    pub fn new(url: RtmpUrl) -> Result<(Publisher, Vec<u8>), RtmpError> {
        let mut handshake = Handshake::new(PeerType::Client);
        let first = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| RtmpError::Handshake(format!("{e:?}")))?;
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(url.tc_url());
        config.flash_version = "FMLE/3.0 (compatible; comet-server)".into();
        let (session, _) = ClientSession::new(config).map_err(session_err)?;
        Ok((
            Publisher {
                url,
                state: State::Handshaking(Box::new(handshake)),
                session,
                guard: ChunkGuard::default(),
                broken: false,
                bytes_in: 0,
            },
            first,
        ))
    }

    /// Whether media may be sent.
    pub fn is_publishing(&self) -> bool {
        matches!(self.state, State::Publishing)
    }

    /// Takes bytes from the server; returns what to send back.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<u8>, RtmpError> {
        self.bytes_in += input.len() as u64;
        let mut out = Vec::new();
        if let State::Handshaking(hs) = &mut self.state {
            match hs
                .process_bytes(input)
                .map_err(|e| RtmpError::Handshake(format!("{e:?}")))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    out.extend_from_slice(&response_bytes);
                    return Ok(out);
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    out.extend_from_slice(&response_bytes);
                    self.state = State::Connecting;
                    let r = self
                        .session
                        .request_connection(self.url.app.clone())
                        .map_err(session_err)?;
                    self.collect(vec![r], &mut out)?;
                    if !remaining_bytes.is_empty() {
                        let results = self.handle_input(&remaining_bytes)?;
                        self.collect(results, &mut out)?;
                    }
                    return Ok(out);
                }
            }
        }
        let results = self.handle_input(input)?;
        self.collect(results, &mut out)?;
        Ok(out)
    }

    /// The server's bytes through the chunk check (see `chunks`) into the session. A panic
    /// in `rml_rtmp` (it indexes into messages it did not check, e.g. a command with fewer
    /// than three values) is this session's error; the session is not used again.
    fn handle_input(&mut self, input: &[u8]) -> Result<Vec<ClientSessionResult>, RtmpError> {
        if self.broken {
            return Err(RtmpError::Session("the session failed before".into()));
        }
        self.guard.check(input)?;
        let session = &mut self.session;
        match catch_unwind(AssertUnwindSafe(|| session.handle_input(input))) {
            Ok(results) => results.map_err(session_err),
            Err(_) => {
                self.broken = true;
                Err(RtmpError::Session(
                    "rml_rtmp panicked on the server's input".into(),
                ))
            }
        }
    }

    fn collect(
        &mut self,
        results: Vec<ClientSessionResult>,
        out: &mut Vec<u8>,
    ) -> Result<(), RtmpError> {
        let mut queue = std::collections::VecDeque::from(results);
        while let Some(r) = queue.pop_front() {
            match r {
                ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(ev) => match ev {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = self
                            .session
                            .request_publishing(self.url.stream.clone(), PublishRequestType::Live)
                            .map_err(session_err)?;
                        self.state = State::PublishRequested;
                        queue.push_back(r);
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(RtmpError::Refused(description));
                    }
                    ClientSessionEvent::PublishRequestAccepted => {
                        self.state = State::Publishing;
                    }
                    ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                        if code.contains("Failed")
                            || code.contains("BadName")
                            || code.contains("Rejected")
                        {
                            return Err(RtmpError::Refused(code));
                        }
                        tracing::debug!(%code, "RTMP status");
                    }
                    other => tracing::trace!(?other, "RTMP event"),
                },
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    /// `@setDataFrame onMetaData`.
    pub fn metadata(
        &mut self,
        video: Option<(u32, u32, f32)>,
        audio: (u32, u8),
    ) -> Result<Vec<u8>, RtmpError> {
        let mut m = StreamMetadata::new();
        if let Some((w, h, fps)) = video {
            m.video_width = Some(w);
            m.video_height = Some(h);
            m.video_frame_rate = Some(fps);
            m.video_codec_id = Some(7);
        }
        m.audio_codec_id = Some(10);
        m.audio_sample_rate = Some(audio.0);
        m.audio_channels = Some(u32::from(audio.1));
        m.audio_is_stereo = Some(audio.1 == 2);
        m.encoder = Some("comet-server".into());
        match self.session.publish_metadata(&m).map_err(session_err)? {
            ClientSessionResult::OutboundResponse(p) => Ok(p.bytes),
            _ => Ok(Vec::new()),
        }
    }

    /// A video tag body (see `flv`) at `ts_ms`.
    pub fn video(&mut self, tag: Vec<u8>, ts_ms: u32) -> Result<Vec<u8>, RtmpError> {
        match self
            .session
            .publish_video_data(Bytes::from(tag), RtmpTimestamp::new(ts_ms), false)
            .map_err(session_err)?
        {
            ClientSessionResult::OutboundResponse(p) => Ok(p.bytes),
            _ => Ok(Vec::new()),
        }
    }

    /// An audio tag body (see `flv`) at `ts_ms`.
    pub fn audio(&mut self, tag: Vec<u8>, ts_ms: u32) -> Result<Vec<u8>, RtmpError> {
        match self
            .session
            .publish_audio_data(Bytes::from(tag), RtmpTimestamp::new(ts_ms), false)
            .map_err(session_err)?
        {
            ClientSessionResult::OutboundResponse(p) => Ok(p.bytes),
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::chunks::tests::message;
    use rml_rtmp::sessions::ServerSessionResult as R;
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent};

    #[test]
    fn urls() {
        let u = RtmpUrl::parse("rtmp://127.0.0.1:1936/cam1/room-1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.app.as_str(), u.stream.as_str()),
            ("127.0.0.1", 1936, "cam1", "room-1")
        );
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1936/cam1");
        let u = RtmpUrl::parse("rtmp://localhost/live/a/b").unwrap();
        assert_eq!(
            (u.port, u.app.as_str(), u.stream.as_str()),
            (1935, "live", "a/b")
        );
        for bad in [
            "http://x/a/b",
            "rtmp://x/a",
            "rtmp://x",
            "rtmp://x:99999/a/b",
            "rtmp:///a/b",
            "rtmp://x/a/",
        ] {
            assert!(RtmpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// A publisher past the handshake with rml_rtmp's server side (which answers C0+C1 with
    /// S0+S1+S2 at once).
    fn handshaken() -> Publisher {
        let url = RtmpUrl::parse("rtmp://127.0.0.1/cam1/room").unwrap();
        let (mut publisher, c01) = Publisher::new(url).unwrap();
        let mut server_hs = Handshake::new(PeerType::Server);
        let s012 = match server_hs.process_bytes(&c01).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
            HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
        };
        publisher.feed(&s012).unwrap();
        publisher
    }

    /// After the handshake, a `_result` command holding `depth` nested one-element arrays
    /// (5 bytes a level), fed to a new publisher on a stack the size of a tokio worker's.
    fn feed_nested_command(depth: usize) -> Result<(), String> {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let mut publisher = handshaken();
                let mut cmd = vec![2, 0, 7];
                cmd.extend_from_slice(b"_result");
                cmd.extend([0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
                cmd.extend([0x0A, 0, 0, 0, 1].repeat(depth));
                cmd.push(5);
                message(3, 20, &cmd, 128)
                    .chunks(4096)
                    .try_for_each(|c| publisher.feed(c).map(drop))
                    .map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap()
    }

    /// A hostile server's command of 12 000 nested arrays (60 KB) is an error: `rml_rtmp`'s
    /// AMF0 decoder would recurse once per level and abort the process. 100 levels still
    /// reach the session (which answers the unexpected `_result` as it likes, no abort).
    #[test]
    fn a_deeply_nested_command_is_an_error_not_a_stack_overflow() {
        let e = feed_nested_command(12_000).unwrap_err();
        assert!(e.contains("nested"), "{e}");
        if let Err(e) = feed_nested_command(100) {
            assert!(!e.contains("chunk stream"), "{e}");
        }
    }

    /// A command with fewer than three AMF values makes `rml_rtmp` 0.8 index out of bounds:
    /// the publisher returns an error (and keeps returning one) instead of panicking.
    #[test]
    fn a_short_command_is_an_error_not_a_panic() {
        let mut publisher = handshaken();
        // `_result` and nothing else, on chunk stream 3.
        let e = publisher
            .feed(&message(3, 20, b"\x02\x00\x07_result", 128))
            .unwrap_err()
            .to_string();
        assert!(e.contains("panicked"), "{e}");
        assert!(publisher.feed(&[3]).is_err());
    }

    /// The publisher against rml_rtmp's own server session, byte for byte in memory: it
    /// connects, publishes on the right app and stream, and the media tags arrive with their
    /// timestamps.
    #[test]
    fn publishes_to_a_server_session() {
        let url = RtmpUrl::parse("rtmp://127.0.0.1/cam1/room").unwrap();
        let (mut publisher, c01) = Publisher::new(url).unwrap();
        let mut server_hs = Handshake::new(PeerType::Server);
        let (mut server, init) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let mut to_client: Vec<u8> = Vec::new();
        for r in init {
            if let R::OutboundResponse(p) = r {
                to_client.extend(p.bytes);
            }
        }
        let mut to_server = c01;
        let mut handshaken = false;
        let mut pending_client = Vec::new();
        let mut published = None;
        let mut media = Vec::new();
        for _ in 0..50 {
            // Server side.
            if !to_server.is_empty() {
                let input = std::mem::take(&mut to_server);
                let input = if handshaken {
                    input
                } else {
                    match server_hs.process_bytes(&input).unwrap() {
                        HandshakeProcessResult::InProgress { response_bytes } => {
                            pending_client.extend(response_bytes);
                            Vec::new()
                        }
                        HandshakeProcessResult::Completed {
                            response_bytes,
                            remaining_bytes,
                        } => {
                            handshaken = true;
                            pending_client.extend(response_bytes);
                            pending_client.append(&mut to_client);
                            remaining_bytes
                        }
                    }
                };
                if handshaken && !input.is_empty() {
                    let mut results: std::collections::VecDeque<_> =
                        server.handle_input(&input).unwrap().into();
                    while let Some(r) = results.pop_front() {
                        match r {
                            R::OutboundResponse(p) => pending_client.extend(p.bytes),
                            R::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                                request_id,
                                app_name,
                            }) => {
                                assert_eq!(app_name, "cam1");
                                results.extend(server.accept_request(request_id).unwrap());
                            }
                            R::RaisedEvent(ServerSessionEvent::PublishStreamRequested {
                                request_id,
                                app_name,
                                stream_key,
                                ..
                            }) => {
                                published = Some((app_name, stream_key));
                                results.extend(server.accept_request(request_id).unwrap());
                            }
                            R::RaisedEvent(ServerSessionEvent::AudioDataReceived {
                                timestamp,
                                data,
                                ..
                            }) => media.push(("audio", timestamp.value, data.to_vec())),
                            R::RaisedEvent(ServerSessionEvent::VideoDataReceived {
                                timestamp,
                                data,
                                ..
                            }) => media.push(("video", timestamp.value, data.to_vec())),
                            _ => {}
                        }
                    }
                }
            }
            // Client side.
            if !pending_client.is_empty() {
                let input = std::mem::take(&mut pending_client);
                to_server.extend(publisher.feed(&input).unwrap());
            }
            if publisher.is_publishing() && media.is_empty() && to_server.is_empty() {
                to_server.extend(
                    publisher
                        .video(
                            crate::broadcast::flv::avc_sequence_header(&[1, 66, 0, 30]),
                            0,
                        )
                        .unwrap(),
                );
                to_server.extend(
                    publisher
                        .audio(crate::broadcast::flv::aac_frame(&[1, 2, 3]), 40)
                        .unwrap(),
                );
            }
            if media.len() >= 2 {
                break;
            }
        }
        assert_eq!(published, Some(("cam1".to_string(), "room".to_string())));
        assert!(publisher.is_publishing());
        assert_eq!(media.len(), 2, "{media:?}");
        assert_eq!(media[0].0, "video");
        assert_eq!(media[0].2[..5], [0x17, 0, 0, 0, 0]);
        assert_eq!((media[1].0, media[1].1), ("audio", 40));
        assert_eq!(media[1].2, [0xAF, 1, 1, 2, 3]);
    }
}
