//! An independent WebRTC peer (webrtc-rs 0.17, the Pion port) that behaves like the browser
//! side of a conference call: it offers audio (send and receive) and asks to receive video, as
//! JsSIP's `offerToReceiveVideo` does; it sends a sine tone as real Opus 20 ms frames with the
//! RFC 6464 audio level, optionally dropping a share of its packets before they leave (network
//! loss), and decodes everything it receives into one PCM timeline for spectrum checks.
//!
//! Loopback only: interface `lo`, loopback candidates, no mDNS, no STUN servers (as in
//! `sfu/tests/webrtc_peer.rs`). Every wait has a deadline.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

use super::tones;

pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// What the peer has received and decoded.
#[derive(Default)]
struct Heard {
    /// Every decoded sample, in RTP order (gaps concealed by the decoder).
    pcm: Vec<i16>,
    packets: u64,
    /// Packets that carried the RFC 6464 audio-level extension, and the last level.
    with_level: u64,
    last_level: Option<u8>,
    /// Sequence gaps seen (packets missing on the way from the server).
    lost: u64,
    /// 20 ms frames the server did not send although the sequence went on (RTP timestamp
    /// jumps: DTX, or writes the server skipped), and how many such jumps.
    skipped_frames: u64,
    skips: u64,
    decode_errors: u64,
}

/// Counters of the sending side.
#[derive(Debug, Default)]
pub struct SendStats {
    pub frames: AtomicU64,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
}

/// A WebRTC peer.
pub struct Peer {
    pub name: String,
    pub pc: Arc<RTCPeerConnection>,
    audio: Arc<TrackLocalStaticRTP>,
    heard: Arc<Mutex<Heard>>,
    heard_tx: Arc<watch::Sender<u64>>,
    /// The audio-level extension id the answer negotiated (0: none yet).
    level_id: Arc<AtomicU8>,
    state: watch::Receiver<RTCPeerConnectionState>,
    sending: Arc<AtomicBool>,
    /// Share of outgoing packets dropped before sending, in per mille.
    loss_permille: Arc<AtomicU32>,
    pub send_stats: Arc<SendStats>,
    sender_task: Option<tokio::task::JoinHandle<()>>,
}

impl Peer {
    pub async fn new(name: &str) -> Peer {
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

        // Audio both ways, as a browser with a microphone offers it.
        let audio = Arc::new(TrackLocalStaticRTP::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            "audio".to_owned(),
            name.to_owned(),
        ));
        let audio_sender = pc
            .add_track(Arc::clone(&audio) as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .unwrap();
        // Interceptors need the sender's RTCP read.
        tokio::spawn(async move { while audio_sender.read_rtcp().await.is_ok() {} });
        // Video: receive only (JsSIP's offerToReceiveVideo on an audio-only call).
        pc.add_transceiver_from_kind(
            RTPCodecType::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();

        let heard = Arc::new(Mutex::new(Heard::default()));
        let heard_tx = Arc::new(watch::channel(0u64).0);
        let level_id = Arc::new(AtomicU8::new(0));
        {
            let heard = heard.clone();
            let heard_tx = heard_tx.clone();
            let level_id = level_id.clone();
            pc.on_track(Box::new(move |track, _receiver, _transceiver| {
                let heard = heard.clone();
                let heard_tx = heard_tx.clone();
                let level_id = level_id.clone();
                Box::pin(async move {
                    if track.kind() != RTPCodecType::Audio {
                        while track.read_rtp().await.is_ok() {}
                        return;
                    }
                    let mut dec = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
                    let mut last: Option<(u16, u32)> = None;
                    let mut pcm = vec![0i16; 5760];
                    while let Ok((packet, _)) = track.read_rtp().await {
                        let seq = packet.header.sequence_number;
                        let mut h = heard.lock().unwrap();
                        let ts = packet.header.timestamp;
                        if let Some((prev_seq, prev_ts)) = last {
                            let gap = seq.wrapping_sub(prev_seq);
                            if gap == 0 || gap > 0x8000 {
                                continue; // duplicate or late: already concealed
                            }
                            h.lost += u64::from(gap - 1);
                            let frames = ts.wrapping_sub(prev_ts) / 960;
                            if frames > u32::from(gap) && frames < 50 * 60 {
                                h.skips += 1;
                                h.skipped_frames += u64::from(frames - u32::from(gap));
                            }
                            // Conceal what is missing (up to 1 s), as a browser's jitter buffer
                            // does, so the timeline stays continuous.
                            let missing = frames.max(u32::from(gap)).saturating_sub(1);
                            for _ in 0..missing.min(50) {
                                if let Ok(n) = dec.decode(&[], &mut pcm[..960], false) {
                                    h.pcm.extend_from_slice(&pcm[..n]);
                                }
                            }
                        }
                        last = Some((seq, ts));
                        h.packets += 1;
                        let id = level_id.load(Ordering::Relaxed);
                        if let Some(ext) = packet.header.get_extension(id).filter(|_| id != 0) {
                            h.with_level += 1;
                            h.last_level = ext.first().map(|b| b & 0x7f);
                        }
                        match dec.decode(&packet.payload, &mut pcm, false) {
                            Ok(n) => h.pcm.extend_from_slice(&pcm[..n]),
                            Err(_) => h.decode_errors += 1,
                        }
                        let n = h.pcm.len() as u64;
                        drop(h);
                        heard_tx.send_replace(n);
                    }
                })
            }));
        }

        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));

        Peer {
            name: name.to_owned(),
            pc,
            audio,
            heard,
            heard_tx,
            level_id,
            state,
            sending: Arc::new(AtomicBool::new(false)),
            loss_permille: Arc::new(AtomicU32::new(0)),
            send_stats: Arc::new(SendStats::default()),
            sender_task: None,
        }
    }

    /// The SDP offer with every candidate gathered (as JsSIP sends it).
    pub async fn offer(&self, deadline: Instant) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        let mut gathered = self.pc.gathering_complete_promise().await;
        self.pc.set_local_description(offer).await.unwrap();
        let _ = timeout_at(deadline, gathered.recv()).await;
        let sdp = self.pc.local_description().await.unwrap().sdp;
        assert!(
            sdp.contains("127.0.0.1"),
            "{}: no loopback candidate in the offer:\n{sdp}",
            self.name
        );
        sdp
    }

    /// Applies the server's SDP answer.
    pub async fn answer(&self, sdp: &str) {
        let id = sdp
            .lines()
            .find_map(|l| {
                let (id, uri) = l.strip_prefix("a=extmap:")?.split_once(' ')?;
                (uri.trim() == AUDIO_LEVEL_URI).then(|| id.split('/').next()?.parse().ok())?
            })
            .unwrap_or(0);
        self.level_id.store(id, Ordering::Relaxed);
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp.to_owned()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{}: the answer is refused: {e}\n{sdp}", self.name));
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Waits until `pred` holds for the connection state; false at the deadline.
    pub async fn wait_state(
        &mut self,
        deadline: Instant,
        pred: impl Fn(RTCPeerConnectionState) -> bool,
    ) -> bool {
        loop {
            if pred(*self.state.borrow()) {
                return true;
            }
            if timeout_at(deadline, self.state.changed()).await.is_err() {
                return false;
            }
        }
    }

    /// Starts sending a sine of `freq` Hz with peak `amplitude`: one Opus frame every 20 ms,
    /// each with the RFC 6464 level of the tone. Dropped packets (see [`set_loss`]) still use
    /// up their sequence number and timestamp, as packets lost on the network do.
    pub fn start_tone(&mut self, freq: f64, amplitude: f64, seed: u64) {
        assert!(self.sender_task.is_none(), "{} already sends", self.name);
        self.sending.store(true, Ordering::SeqCst);
        let audio = self.audio.clone();
        let sending = self.sending.clone();
        let loss = self.loss_permille.clone();
        let stats = self.send_stats.clone();
        let level = tones::rfc6464_level(amplitude);
        self.sender_task = Some(tokio::spawn(async move {
            let mut enc =
                opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
            // What Chrome does: in-band FEC, 32 kbit/s (cometVideoApi.js's b=AS:32).
            enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
            enc.set_inband_fec(true).unwrap();
            enc.set_packet_loss_perc(10).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            let seq0: u16 = rng.random();
            let ts0: u32 = rng.random();
            let mut k: u64 = 0;
            while sending.load(Ordering::SeqCst) {
                ticker.tick().await;
                let pcm = tones::tone_frame(freq, amplitude, k);
                let frame = enc.encode_vec(&pcm, 1500).unwrap();
                let packet = webrtc::rtp::packet::Packet {
                    header: webrtc::rtp::header::Header {
                        version: 2,
                        marker: k == 0,
                        sequence_number: seq0.wrapping_add(k as u16),
                        timestamp: ts0.wrapping_add((k * 960) as u32),
                        ..Default::default()
                    },
                    payload: frame.into(),
                };
                k += 1;
                stats.frames.fetch_add(1, Ordering::Relaxed);
                let p = loss.load(Ordering::Relaxed);
                if p > 0 && rng.random_range(0..1000) < p {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let ext = [HeaderExtension::AudioLevel(AudioLevelExtension {
                    level,
                    voice: true,
                })];
                // Fails only while the track is not bound yet (before the connection is up).
                if audio.write_rtp_with_extensions(&packet, &ext).await.is_ok() {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    /// Drops this share (0.0..=1.0) of the packets the peer sends, at random.
    pub fn set_loss(&self, share: f64) {
        self.loss_permille
            .store((share * 1000.0).round() as u32, Ordering::SeqCst);
    }

    /// Stops sending (the sender task ends after its current frame).
    pub async fn stop_tone(&mut self) {
        self.sending.store(false, Ordering::SeqCst);
        if let Some(t) = self.sender_task.take() {
            let _ = t.await;
        }
    }

    /// 20 ms frames the server skipped so far (RTP timestamp jumps without sequence gaps).
    pub fn skipped_frames(&self) -> u64 {
        self.heard.lock().unwrap().skipped_frames
    }

    /// (packets received, packets with the RFC 6464 audio level, the last level).
    pub fn received_levels(&self) -> (u64, u64, Option<u8>) {
        let h = self.heard.lock().unwrap();
        (h.packets, h.with_level, h.last_level)
    }

    /// How many samples have been decoded so far.
    pub fn heard_len(&self) -> usize {
        self.heard.lock().unwrap().pcm.len()
    }

    /// Samples decoded from position `from` on.
    pub fn heard_since(&self, from: usize) -> Vec<i16> {
        let h = self.heard.lock().unwrap();
        h.pcm[from.min(h.pcm.len())..].to_vec()
    }

    /// The last `n` decoded samples (fewer if not that many yet).
    pub fn heard_last(&self, n: usize) -> Vec<i16> {
        let h = self.heard.lock().unwrap();
        h.pcm[h.pcm.len().saturating_sub(n)..].to_vec()
    }

    /// Waits until at least `n` samples have been decoded after position `from`; false at the
    /// deadline.
    pub async fn wait_heard(&self, from: usize, n: usize, deadline: Instant) -> bool {
        let mut rx = self.heard_tx.subscribe();
        timeout_at(deadline, rx.wait_for(|&len| len as usize >= from + n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A one-line summary of what this peer sent and received, for failure messages.
    pub fn report(&self) -> String {
        let h = self.heard.lock().unwrap();
        format!(
            "{}: state {:?}; sent {} of {} frames ({} dropped on purpose); received {} packets \
             ({} with an audio level (last {:?}), {} missing, {} undecodable; {} frames not sent by the \
             server in {} gaps), {} samples ({:.2} s)",
            self.name,
            self.state(),
            self.send_stats.sent.load(Ordering::Relaxed),
            self.send_stats.frames.load(Ordering::Relaxed),
            self.send_stats.dropped.load(Ordering::Relaxed),
            h.packets,
            h.with_level,
            h.last_level,
            h.lost,
            h.decode_errors,
            h.skipped_frames,
            h.skips,
            h.pcm.len(),
            h.pcm.len() as f64 / f64::from(tones::RATE),
        )
    }

    /// Stops sending and closes the connection.
    pub async fn close(&mut self) {
        self.stop_tone().await;
        let _ = self.pc.close().await;
    }
}
