//! Interop with an independent WebRTC implementation (webrtc-rs 0.17, the Pion port) over
//! real UDP on 127.0.0.1, through the tokio driver: offer/answer, ICE + DTLS, real Opus both
//! ways with RFC 6464 levels, video in (VP8 or H.264), PLI to the peer, close, and several
//! peers on the one port at once. Every wait has a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use comet_sfu::driver::{self, DriverOptions, Events, SfuHandle};
use comet_sfu::{
    AnswerOptions, AudioLevel, CloseReason, Codec, EndpointConfig, Event, MediaKind, MediaPacket,
    ParticipantId, VideoCodec,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout_at};
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
const DEADLINE: Duration = Duration::from_secs(15);

fn deadline() -> Instant {
    Instant::now() + DEADLINE
}

/// What a peer received from us.
#[derive(Debug)]
struct Got {
    kind: RTPCodecType,
    packet: webrtc::rtp::packet::Packet,
}

struct Peer {
    pc: Arc<RTCPeerConnection>,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticSample>,
    received: mpsc::UnboundedReceiver<Got>,
    plis: mpsc::UnboundedReceiver<()>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

#[derive(Clone, Copy, PartialEq)]
enum PeerVideo {
    Vp8,
    H264,
}

impl Peer {
    /// A peer with the default codec set (Opus, G722, PCMU, PCMA, VP8, VP9, H.264 x n, AV1),
    /// loopback only: interface `lo`, loopback candidates, no mDNS, no STUN servers.
    async fn new(video: PeerVideo) -> Peer {
        let mut m = MediaEngine::default();
        m.register_default_codecs().unwrap();
        m.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RTPCodecType::Audio,
            None,
        )
        .unwrap();
        let registry = register_default_interceptors(Registry::new(), &mut m).unwrap();
        let mut s = SettingEngine::default();
        s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        s.set_include_loopback_candidate(true);
        s.set_interface_filter(Box::new(|name: &str| name == "lo"));
        s.set_network_types(vec![NetworkType::Udp4]);
        s.set_ice_timeouts(
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(4)),
            Some(Duration::from_millis(500)),
        );
        let api = APIBuilder::new()
            .with_media_engine(m)
            .with_interceptor_registry(registry)
            .with_setting_engine(s)
            .build();
        let pc = Arc::new(
            api.new_peer_connection(RTCConfiguration {
                ice_servers: vec![],
                ..Default::default()
            })
            .await
            .unwrap(),
        );

        let audio = Arc::new(TrackLocalStaticRTP::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            "audio".to_owned(),
            "peer".to_owned(),
        ));
        let video_cap = match video {
            PeerVideo::Vp8 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90000,
                ..Default::default()
            },
            PeerVideo::H264 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90000,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                        .to_owned(),
                ..Default::default()
            },
        };
        let video = Arc::new(TrackLocalStaticSample::new(
            video_cap,
            "video".to_owned(),
            "peer".to_owned(),
        ));
        let audio_sender = pc
            .add_track(Arc::clone(&audio) as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .unwrap();
        let video_sender = pc
            .add_track(Arc::clone(&video) as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .unwrap();

        // RTCP for our senders: interceptors need it read; PLIs go to the test.
        let (pli_tx, plis) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((pkts, _)) = video_sender.read_rtcp().await {
                for p in pkts {
                    if p.as_any().downcast_ref::<PictureLossIndication>().is_some() {
                        let _ = pli_tx.send(());
                    }
                }
            }
        });
        tokio::spawn(async move { while audio_sender.read_rtcp().await.is_ok() {} });

        let (got_tx, received) = mpsc::unbounded_channel();
        pc.on_track(Box::new(move |track, _receiver, _transceiver| {
            let tx = got_tx.clone();
            Box::pin(async move {
                let kind = track.kind();
                while let Ok((packet, _)) = track.read_rtp().await {
                    if tx.send(Got { kind, packet }).is_err() {
                        break;
                    }
                }
            })
        }));

        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));

        Peer {
            pc,
            audio,
            video,
            received,
            plis,
            state,
        }
    }

    /// Offer with all candidates gathered (as JsSIP sends it), then apply the answer.
    async fn call(&self, sfu: &SfuHandle) -> comet_sfu::Answer {
        let offer = self.pc.create_offer(None).await.unwrap();
        let mut gathered = self.pc.gathering_complete_promise().await;
        self.pc.set_local_description(offer).await.unwrap();
        let _ = timeout_at(deadline(), gathered.recv()).await;
        let offer = self.pc.local_description().await.unwrap().sdp;
        assert!(
            offer.contains("127.0.0.1"),
            "no loopback candidate: {offer}"
        );
        let answer = sfu
            .accept_offer(offer, AnswerOptions::default())
            .await
            .unwrap();
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.sdp.clone()).unwrap())
            .await
            .unwrap();
        answer
    }

    async fn wait_state(&mut self, pred: impl Fn(RTCPeerConnectionState) -> bool) -> bool {
        let end = deadline();
        loop {
            if pred(*self.state.borrow()) {
                return true;
            }
            if timeout_at(end, self.state.changed()).await.is_err() {
                return false;
            }
        }
    }

    /// Send `n` real Opus frames (20 ms of a 440 Hz tone each) with RFC 6464 level `level`,
    /// sequence numbers from `seq0`.
    async fn send_opus(&self, n: u16, seq0: u16, level: u8) -> Vec<Vec<u8>> {
        let mut enc =
            opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut frames = Vec::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for k in 0..n {
            ticker.tick().await;
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (u32::from(k) * 960 + i) as f32 / 48000.0;
                    ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let frame = enc.encode_vec(&pcm, 1500).unwrap();
            let packet = webrtc::rtp::packet::Packet {
                header: webrtc::rtp::header::Header {
                    version: 2,
                    sequence_number: seq0.wrapping_add(k),
                    timestamp: 5000 + u32::from(k) * 960,
                    ..Default::default()
                },
                payload: frame.clone().into(),
            };
            self.audio
                .write_rtp_with_extensions(
                    &packet,
                    &[HeaderExtension::AudioLevel(AudioLevelExtension {
                        level,
                        voice: true,
                    })],
                )
                .await
                .unwrap();
            frames.push(frame);
        }
        frames
    }

    /// Send `n` video frames at 25 fps: VP8 or H.264 (SPS, PPS, IDR) bytes, packetized by the
    /// peer's own payloader.
    async fn send_video(&self, n: u32, video: PeerVideo) {
        let mut ticker = tokio::time::interval(Duration::from_millis(40));
        for k in 0..n {
            ticker.tick().await;
            let data: Vec<u8> = match video {
                PeerVideo::Vp8 => {
                    // A keyframe tag (P bit clear), start code, 64x48, then filler.
                    let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 64, 0, 48, 0];
                    f.extend(std::iter::repeat_n(k as u8, 2500));
                    f
                }
                PeerVideo::H264 => {
                    let mut f = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0xda, 0x02];
                    f.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
                    f.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
                    f.extend(std::iter::repeat_n(k as u8 | 1, 2500));
                    f
                }
            };
            self.video
                .write_sample(&webrtc::media::Sample {
                    data: data.into(),
                    duration: Duration::from_millis(40),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }

    async fn next_received(&mut self, kind: RTPCodecType) -> Option<webrtc::rtp::packet::Packet> {
        let end = deadline();
        loop {
            match timeout_at(end, self.received.recv()).await {
                Ok(Some(g)) if g.kind == kind => return Some(g.packet),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }
}

/// Events from the driver, kept for inspection.
struct Collector {
    events: Events,
    seen: Vec<(ParticipantId, Event)>,
}

impl Collector {
    /// Wait until `pred` holds for some event of `id` (already seen ones included).
    async fn wait(&mut self, id: ParticipantId, pred: impl Fn(&Event) -> bool) -> bool {
        if self.seen.iter().any(|(i, e)| *i == id && pred(e)) {
            return true;
        }
        let end = deadline();
        loop {
            match timeout_at(end, self.events.recv()).await {
                Ok(Some((i, e))) => {
                    let hit = i == id && pred(&e);
                    self.seen.push((i, e));
                    if hit {
                        return true;
                    }
                }
                _ => return false,
            }
        }
    }

    /// Wait until the media of `id` of `kind` satisfies `done`; returns it.
    async fn wait_media(
        &mut self,
        id: ParticipantId,
        kind: MediaKind,
        done: impl Fn(&[MediaPacket]) -> bool,
    ) -> Vec<MediaPacket> {
        let end = deadline();
        loop {
            let media = self.media(id, kind);
            if done(&media) {
                return media;
            }
            match timeout_at(end, self.events.recv()).await {
                Ok(Some(x)) => self.seen.push(x),
                _ => return media,
            }
        }
    }

    async fn wait_count(
        &mut self,
        id: ParticipantId,
        n: usize,
        kind: MediaKind,
    ) -> Vec<MediaPacket> {
        self.wait_media(id, kind, |m| m.len() >= n).await
    }

    /// Wait for `frames` complete video frames (marker bits).
    async fn wait_frames(&mut self, id: ParticipantId, frames: usize) -> Vec<MediaPacket> {
        self.wait_media(id, MediaKind::Video, |m| {
            m.iter().filter(|p| p.marker).count() >= frames
        })
        .await
    }

    fn media(&self, id: ParticipantId, kind: MediaKind) -> Vec<MediaPacket> {
        self.seen
            .iter()
            .filter_map(|(i, e)| match e {
                Event::Media(m) if *i == id && m.kind == kind => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

async fn start(video_codecs: Vec<VideoCodec>) -> (SfuHandle, Collector) {
    let config = EndpointConfig {
        video_codecs,
        ..Default::default()
    };
    let (sfu, events, _task) = driver::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        DriverOptions::default(),
    )
    .await
    .unwrap();
    (
        sfu,
        Collector {
            events,
            seen: Vec::new(),
        },
    )
}

fn audio_level_id(answer_sdp: &str) -> u8 {
    answer_sdp
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("a=extmap:")?;
            let (id, uri) = rest.split_once(' ')?;
            (uri.trim() == AUDIO_LEVEL_URI).then(|| id.parse().ok())?
        })
        .expect("audio level extension negotiated")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_audio_both_ways_video_pli_close() {
    let (sfu, mut ev) = start(vec![VideoCodec::Vp8, VideoCodec::H264]).await;
    let mut peer = Peer::new(PeerVideo::Vp8).await;
    let answer = peer.call(&sfu).await;
    let id = answer.participant;
    assert_eq!(answer.audio.unwrap().codec, Codec::Opus);
    assert_eq!(answer.video.unwrap().codec, Codec::Vp8);

    assert!(
        ev.wait(id, |e| matches!(e, Event::Connected)).await,
        "no Connected"
    );
    assert!(
        peer.wait_state(|s| s == RTCPeerConnectionState::Connected)
            .await,
        "peer not connected"
    );

    // Peer -> endpoint: real Opus, every sequence number, the audio level.
    let sent = peer.send_opus(50, 60_000, 33).await; // crosses the 16-bit wrap
    let got = ev.wait_count(id, 50, MediaKind::Audio).await;
    assert_eq!(got.len(), 50, "audio packets at the endpoint");
    let mut dec = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
    for (k, (p, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(p.codec, Codec::Opus);
        assert_eq!(p.seq as u16, 60_000u16.wrapping_add(k as u16));
        assert_eq!(p.timestamp, 5000 + k as u32 * 960);
        assert_eq!(&p.payload[..], &s[..]);
        assert_eq!(
            p.audio_level,
            Some(AudioLevel {
                level: 33,
                voice: true
            })
        );
        let mut pcm = [0i16; 960];
        assert_eq!(dec.decode(&p.payload, &mut pcm, false).unwrap(), 960);
    }
    // Extended numbering across the wrap: strictly consecutive.
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }

    // Endpoint -> peer: real Opus with our audio level.
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut ours = Vec::new();
    for k in 0..25u32 {
        let pcm: Vec<i16> = (0..960)
            .map(|i| ((i * 37 + k) % 2000) as i16 - 1000)
            .collect();
        let frame: Arc<[u8]> = enc.encode_vec(&pcm, 1500).unwrap().into();
        ours.push(frame.clone());
        let level = Some(AudioLevel {
            level: 44,
            voice: true,
        });
        sfu.write_audio(id, frame, 7777 + k * 960, level)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let level_id = audio_level_id(&answer.sdp);
    let first = peer
        .next_received(RTPCodecType::Audio)
        .await
        .expect("peer got no audio");
    let mut received = vec![first];
    while received.len() < 25 {
        match peer.next_received(RTPCodecType::Audio).await {
            Some(p) => received.push(p),
            None => break,
        }
    }
    assert!(received.len() >= 24, "peer got {} of 25", received.len());
    for w in received.windows(2) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1)
        );
        assert_eq!(
            w[1].header.timestamp.wrapping_sub(w[0].header.timestamp),
            960
        );
    }
    let mut dec = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
    for p in &received {
        assert!(
            ours.iter().any(|o| o[..] == p.payload[..]),
            "unknown payload"
        );
        let mut pcm = [0i16; 960];
        assert_eq!(dec.decode(&p.payload, &mut pcm, false).unwrap(), 960);
        let ext = p.header.get_extension(level_id).expect("audio level");
        assert_eq!(ext[0], 0x80 | 44);
    }

    // Peer -> endpoint video (VP8 via the peer's payloader), then our PLI reaches the peer.
    peer.send_video(10, PeerVideo::Vp8).await;
    let video = ev.wait_frames(id, 10).await;
    assert!(video.len() >= 20, "video packets: {}", video.len());
    assert!(video.iter().all(|p| p.codec == Codec::Vp8));
    assert_eq!(video.iter().filter(|p| p.marker).count(), 10);
    for w in video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    sfu.request_keyframe(id).await.unwrap();
    assert!(
        timeout_at(deadline(), peer.plis.recv()).await.is_ok(),
        "PLI did not reach the peer"
    );

    // Close: Closed(Local) here; the peer sees the connection end (webrtc-rs ignores DTLS
    // close_notify at the connection level; it notices ICE consent stop, 2 s as configured).
    sfu.close(id).await.unwrap();
    assert!(
        ev.wait(id, |e| matches!(e, Event::Closed(CloseReason::Local)))
            .await
    );
    assert!(
        peer.wait_state(|s| matches!(
            s,
            RTCPeerConnectionState::Closed
                | RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Disconnected
        ))
        .await,
        "peer still {:?}",
        *peer.state.borrow()
    );
    let m = sfu.metrics().await.unwrap();
    assert_eq!(m.participants, 0);
    assert!(m.rtp_in >= 60 && m.rtp_out == 25, "{m:?}");
    assert_eq!(m.panics, 0);
    let _ = peer.pc.close().await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_video_in() {
    let (sfu, mut ev) = start(vec![VideoCodec::H264, VideoCodec::Vp8]).await;
    let mut peer = Peer::new(PeerVideo::H264).await;
    let answer = peer.call(&sfu).await;
    let id = answer.participant;
    let v = answer.video.unwrap();
    assert_eq!(v.codec, Codec::H264);
    assert!(answer.sdp.contains("profile-level-id=42e01f"));
    assert!(ev.wait(id, |e| matches!(e, Event::Connected)).await);
    assert!(
        peer.wait_state(|s| s == RTCPeerConnectionState::Connected)
            .await
    );
    peer.send_video(5, PeerVideo::H264).await;
    let video = ev.wait_frames(id, 5).await;
    assert!(video.len() >= 10, "{}", video.len());
    assert!(
        video
            .iter()
            .all(|p| p.codec == Codec::H264 && p.payload_type == v.payload_type)
    );
    // FU-A (type 28) fragments of the big IDR, and a marker per frame.
    assert!(video.iter().any(|p| p.payload[0] & 0x1f == 28));
    assert_eq!(video.iter().filter(|p| p.marker).count(), 5);
    let _ = peer.pc.close().await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_peers_on_one_port() {
    let (sfu, ev) = start(vec![VideoCodec::Vp8]).await;
    several_peers(sfu, ev, 3).await;
}

/// The same over three shards (three endpoint threads and the socket's reader): four peers
/// are spread over the shards, each peer's media reaches its shard and nobody else's, and the
/// metrics add up over the shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_peers_on_a_sharded_endpoint() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let endpoints = (0..3)
        .map(|index| {
            comet_sfu::Endpoint::new(EndpointConfig {
                candidates: vec![addr],
                video_codecs: vec![VideoCodec::Vp8],
                shard: comet_sfu::Shard { index, count: 3 },
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    let (sfu, events, _task) =
        driver::spawn_sharded(socket, endpoints, DriverOptions::default()).unwrap();
    assert_eq!(sfu.shards(), 3);
    let ids = several_peers(
        sfu.clone(),
        Collector {
            events,
            seen: Vec::new(),
        },
        4,
    )
    .await;
    let mut shards: Vec<u32> = ids.iter().map(|id| comet_sfu::Shard::of(*id, 3)).collect();
    shards.sort_unstable();
    assert_eq!(
        shards,
        [0, 0, 1, 2],
        "offers go to the least loaded shard: {ids:?}"
    );
}

/// Polls every future to completion, concurrently.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<_> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// `n` peers call, connect, talk at once (each with its own level), each gets only what is
/// written for it, and each one's close ends its participant. Returns their ids.
async fn several_peers(sfu: SfuHandle, mut ev: Collector, n: usize) -> Vec<ParticipantId> {
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..n {
        let p = Peer::new(PeerVideo::Vp8).await;
        let a = p.call(&sfu).await;
        ids.push(a.participant);
        peers.push(p);
    }
    for id in &ids {
        assert!(ev.wait(*id, |e| matches!(e, Event::Connected)).await);
    }
    // The peers' senders are bound once they are connected too (writes before are dropped).
    for p in &mut peers {
        assert!(
            p.wait_state(|s| s == RTCPeerConnectionState::Connected)
                .await
        );
    }
    // All talk at once, each with its own level.
    join_all(
        peers
            .iter()
            .enumerate()
            .map(|(i, p)| p.send_opus(20, 100, 10 + i as u8))
            .collect(),
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        let got = ev.wait_count(*id, 20, MediaKind::Audio).await;
        assert_eq!(got.len(), 20, "peer {i}");
        assert!(
            got.iter()
                .all(|p| p.audio_level.map(|l| l.level) == Some(10 + i as u8)),
            "peer {i} packets mixed up"
        );
    }
    // Each peer gets only what is written for it.
    for k in 0..10u32 {
        for (i, id) in ids.iter().enumerate() {
            let payload: Arc<[u8]> = vec![0xfc, i as u8, k as u8].into();
            sfu.write_audio(*id, payload, k * 960, None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut per_peer: HashMap<usize, usize> = HashMap::new();
    for (i, p) in peers.iter_mut().enumerate() {
        while per_peer.get(&i).copied().unwrap_or(0) < 10 {
            let Some(pkt) = p.next_received(RTPCodecType::Audio).await else {
                break;
            };
            assert_eq!(pkt.payload[1], i as u8, "peer {i} got another's audio");
            *per_peer.entry(i).or_default() += 1;
        }
        assert!(per_peer[&i] >= 9, "peer {i}: {:?}", per_peer.get(&i));
    }
    let m = sfu.metrics().await.unwrap();
    assert_eq!(m.participants, n as u64);
    assert_eq!(m.participants_accepted, n as u64);
    assert_eq!(m.panics, 0);
    assert_eq!(m.unknown_dropped, 0, "{m:?}");
    assert_eq!(m.inbox_dropped, 0, "{m:?}");
    assert!(m.rtp_in >= 20 * n as u64, "{m:?}");
    assert!(m.rtp_out >= 10 * n as u64, "{m:?}");
    for p in &peers {
        let _ = p.pc.close().await;
    }
    // The peers' DTLS close_notify ends their participants.
    for id in &ids {
        assert!(
            ev.wait(*id, |e| matches!(e, Event::Closed(CloseReason::Remote)))
                .await,
            "participant {id} not closed after the peer closed"
        );
    }
    sfu.shutdown().await;
    tokio::time::timeout(DEADLINE, sfu.closed())
        .await
        .expect("the driver stops on shutdown");
    ids
}
