//! An independent WebRTC peer (webrtc-rs 0.17, the Pion port) that behaves like the browser
//! side of a conference call: it offers audio (send and receive) and asks to receive video, as
//! JsSIP's `offerToReceiveVideo` does; it sends a sine tone as real Opus 20 ms frames with the
//! RFC 6464 audio level, optionally dropping a share of its packets before they leave (network
//! loss), and decodes everything it receives into one PCM timeline for spectrum checks.
//!
//! [`Peer::with_video`] makes a camera-sending peer instead: it also offers H.264 video both
//! ways, sends a synthetic picture (a solid colour with a moving bar, encoded by OpenH264 through
//! `comet-media`) and answers PLI/FIR with a keyframe; every picture it receives is decoded and
//! handed to an inspection function whose verdicts (one per decoded picture) the test reads.
//!
//! Loopback only: interface `lo`, loopback candidates, no mDNS, no STUN servers (as in
//! `sfu/tests/webrtc_peer.rs`). Every wait has a deadline.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_media::g711::{self, Law};
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_VP8, MediaEngine,
};
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
use webrtc::track::track_remote::TrackRemote;

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

/// Looks at one decoded picture and says what it shows (e.g. which colour each tile has).
pub type Inspect = Arc<dyn Fn(&comet_media::I420Frame) -> Vec<Option<u8>> + Send + Sync>;

/// One picture the peer received and decoded.
#[derive(Debug, Clone)]
pub struct VideoSeen {
    /// When it was decoded.
    pub at: Instant,
    pub width: u32,
    pub height: u32,
    /// The inspection's verdict.
    pub verdict: Vec<Option<u8>>,
}

/// An RTCP sender report the server sent this peer.
#[derive(Debug, Clone, Copy)]
pub struct SenderReportSeen {
    /// Of the video stream (else the audio).
    pub video: bool,
    /// NTP timestamp (RFC 3550: seconds since 1900 in the upper 32 bits) and the RTP
    /// timestamp it maps to.
    pub ntp: u64,
    pub rtp: u32,
    /// When it arrived.
    pub at: std::time::SystemTime,
}

impl SenderReportSeen {
    /// The report's NTP time as Unix time.
    pub fn wallclock(&self) -> std::time::SystemTime {
        let secs = (self.ntp >> 32).saturating_sub(2_208_988_800);
        let frac = (self.ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
        std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_secs_f64(frac)
    }
}

/// What a video peer received.
#[derive(Default)]
struct Watched {
    seen: Vec<VideoSeen>,
    last: Option<comet_media::I420Frame>,
    packets: u64,
    plis_sent: u64,
    /// H.264 keyframes received (pictures with an IDR slice), and the RTP timestamp of the
    /// last one.
    keyframes: u64,
    last_key_ts: Option<u32>,
    /// SSRC of the received video (for PLIs the test sends).
    ssrc: Option<u32>,
    /// MIME type of the received video track (lower case), e.g. `video/vp8`.
    mime: Option<String>,
}

/// Whether a VP8 RTP payload (RFC 7741) starts a key frame.
fn vp8_key(payload: &[u8]) -> bool {
    comet_media::vp8::Vp8Descriptor::parse(payload).is_ok_and(|d| {
        d.starts_frame() && payload.get(d.header_len).is_some_and(|tag| tag & 1 == 0)
    })
}

/// Whether an H.264 RTP payload (RFC 6184) carries (the start of) an IDR slice.
fn h264_idr(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        5 => true,
        // STAP-A: 16-bit sizes, each followed by a NAL unit.
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if n == 0 || rest.len() < 2 + n {
                    break;
                }
                if rest[2] & 0x1f == 5 {
                    return true;
                }
                rest = &rest[2 + n..];
            }
            false
        }
        // FU-A: the start fragment names the NAL type.
        28 => payload
            .get(1)
            .is_some_and(|h| h & 0x80 != 0 && h & 0x1f == 5),
        _ => false,
    }
}

/// The camera side of a video peer.
#[derive(Debug, Default)]
pub struct CameraStats {
    pub frames: AtomicU64,
    pub keyframes: AtomicU64,
    /// PLI/FIR received from the server.
    pub keyframe_requests: AtomicU64,
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
    /// The sender sends its tone (else digital silence, keeping the RTP stream going).
    tone_on: Arc<AtomicBool>,
    /// When the first tone frame after [`Peer::set_tone`]`(true)` was sent (wall clock).
    tone_onset: Arc<Mutex<Option<std::time::SystemTime>>>,
    pub send_stats: Arc<SendStats>,
    sender_task: Option<tokio::task::JoinHandle<()>>,
    /// Video peers: the camera track, what was received.
    camera: Option<Arc<TrackLocalStaticRTP>>,
    camera_on: Arc<AtomicBool>,
    camera_task: Option<tokio::task::JoinHandle<()>>,
    keyframe_asked: Arc<AtomicBool>,
    pub camera_stats: Arc<CameraStats>,
    watched: Arc<Mutex<Watched>>,
    watched_tx: Arc<watch::Sender<u64>>,
    sender_reports: Arc<Mutex<Vec<SenderReportSeen>>>,
    /// A telephony peer: G.711 only, no video.
    g711: Option<Law>,
    /// The video codec it offers (alone) and sends.
    video_codec: comet_media::VideoCodec,
}

/// What a peer decodes what it receives with.
enum AudioDecoder {
    Opus(opus::Decoder),
    /// G.711 resampled to 48 kHz, so everything heard is on one 48 kHz timeline.
    G711(Law, Box<g711::Upsampler>),
}

impl AudioDecoder {
    /// RTP ticks per 20 ms.
    fn frame_ticks(&self) -> u32 {
        match self {
            AudioDecoder::Opus(_) => 960,
            AudioDecoder::G711(..) => 160,
        }
    }

    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> bool {
        match self {
            AudioDecoder::Opus(d) => {
                let mut pcm = [0i16; 5760];
                match d.decode(payload, &mut pcm, false) {
                    Ok(n) => {
                        out.extend_from_slice(&pcm[..n]);
                        true
                    }
                    Err(_) => false,
                }
            }
            AudioDecoder::G711(law, up) => {
                let mut narrow = Vec::with_capacity(payload.len());
                g711::decode(*law, payload, &mut narrow);
                up.process(&narrow, out);
                !payload.is_empty()
            }
        }
    }

    /// One concealed 20 ms frame.
    fn conceal(&mut self, out: &mut Vec<i16>) {
        match self {
            AudioDecoder::Opus(d) => {
                let mut pcm = [0i16; 960];
                if let Ok(n) = d.decode(&[], &mut pcm, false) {
                    out.extend_from_slice(&pcm[..n]);
                }
            }
            AudioDecoder::G711(..) => out.extend_from_slice(&[0; 960]),
        }
    }
}

/// Opus as browsers offer it (stereo-capable, in-band FEC).
fn opus() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// G.711 (`law`) and its static payload type.
fn g711_codec(law: Law) -> (RTCRtpCodecCapability, u8) {
    let (mime, pt) = match law {
        Law::Mu => (MIME_TYPE_PCMU, 0),
        Law::A => (MIME_TYPE_PCMA, 8),
    };
    let capability = RTCRtpCodecCapability {
        mime_type: mime.to_owned(),
        clock_rate: 8000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    };
    (capability, pt)
}

/// VP8 with the given RTCP feedback.
fn vp8(rtcp_feedback: Vec<webrtc::rtp_transceiver::RTCPFeedback>) -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback,
    }
}

/// Offers `capability` as `payload_type` for `kind`.
fn register(
    m: &mut MediaEngine,
    capability: RTCRtpCodecCapability,
    payload_type: u8,
    kind: RTPCodecType,
) {
    use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecParameters;
    let params = RTCRtpCodecParameters {
        capability,
        payload_type,
        ..Default::default()
    };
    m.register_codec(params, kind).unwrap();
}

impl Peer {
    /// An audio peer that asks to receive video (and discards it).
    pub async fn new(name: &str) -> Peer {
        Self::build(name, None, None, comet_media::VideoCodec::H264).await
    }

    /// A telephony peer (a SIP phone behind a gateway): it offers only G.711 (`law`) audio
    /// and no video; it sends its tone as 8 kHz G.711.
    pub async fn g711(name: &str, law: Law) -> Peer {
        Self::build(name, None, Some(law), comet_media::VideoCodec::H264).await
    }

    /// A peer with a camera: it offers H.264 video both ways (sending nothing until
    /// [`Peer::start_camera`]) and runs `inspect` on every picture it decodes.
    pub async fn with_video(name: &str, inspect: Inspect) -> Peer {
        Self::build(name, Some(inspect), None, comet_media::VideoCodec::H264).await
    }

    /// A peer with a camera that knows only VP8 for video (as a browser configured to prefer
    /// VP8, or one without H.264): it offers Opus and VP8 alone, sends VP8 (libvpx), and
    /// decodes the VP8 it receives.
    pub async fn with_vp8_video(name: &str, inspect: Inspect) -> Peer {
        Self::build(name, Some(inspect), None, comet_media::VideoCodec::Vp8).await
    }

    async fn build(
        name: &str,
        inspect: Option<Inspect>,
        g711: Option<Law>,
        video_codec: comet_media::VideoCodec,
    ) -> Peer {
        let mut m = MediaEngine::default();
        match g711 {
            None if video_codec == comet_media::VideoCodec::Vp8 => {
                use webrtc::rtp_transceiver::RTCPFeedback;
                register(&mut m, opus(), 111, RTPCodecType::Audio);
                let feedback = [
                    ("goog-remb", ""),
                    ("ccm", "fir"),
                    ("nack", ""),
                    ("nack", "pli"),
                ]
                .into_iter()
                .map(|(typ, parameter)| RTCPFeedback {
                    typ: typ.to_owned(),
                    parameter: parameter.to_owned(),
                })
                .collect();
                register(&mut m, vp8(feedback), 96, RTPCodecType::Video);
            }
            None => m.register_default_codecs().unwrap(),
            Some(law) => {
                let (capability, pt) = g711_codec(law);
                register(&mut m, capability, pt, RTPCodecType::Audio);
            }
        }
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
            match g711 {
                None => opus(),
                Some(law) => g711_codec(law).0,
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
        let keyframe_asked = Arc::new(AtomicBool::new(false));
        let camera_stats = Arc::new(CameraStats::default());
        let camera = if inspect.is_some() {
            // A camera: H.264 both ways, as Chrome offers it next to VP8; or VP8 alone.
            let camera = Arc::new(TrackLocalStaticRTP::new(
                match video_codec {
                    comet_media::VideoCodec::H264 => RTCRtpCodecCapability {
                        mime_type: MIME_TYPE_H264.to_owned(),
                        clock_rate: 90000,
                        channels: 0,
                        sdp_fmtp_line:
                            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                                .to_owned(),
                        rtcp_feedback: vec![],
                    },
                    comet_media::VideoCodec::Vp8 => vp8(vec![]),
                },
                "video".to_owned(),
                name.to_owned(),
            ));
            let sender = pc
                .add_track(Arc::clone(&camera) as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .unwrap();
            let asked = keyframe_asked.clone();
            let stats = camera_stats.clone();
            tokio::spawn(async move {
                use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
                use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
                while let Ok((packets, _)) = sender.read_rtcp().await {
                    for p in packets {
                        let any = p.as_any();
                        if any.downcast_ref::<PictureLossIndication>().is_some()
                            || any.downcast_ref::<FullIntraRequest>().is_some()
                        {
                            stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            asked.store(true, Ordering::SeqCst);
                        }
                    }
                }
            });
            Some(camera)
        } else if g711.is_some() {
            // A telephone: audio only.
            None
        } else {
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
            None
        };
        let watched = Arc::new(Mutex::new(Watched::default()));
        let sender_reports = Arc::new(Mutex::new(Vec::new()));
        let watched_tx = Arc::new(watch::channel(0u64).0);

        let heard = Arc::new(Mutex::new(Heard::default()));
        let heard_tx = Arc::new(watch::channel(0u64).0);
        let level_id = Arc::new(AtomicU8::new(0));
        {
            let heard = heard.clone();
            let heard_tx = heard_tx.clone();
            let level_id = level_id.clone();
            let watched = watched.clone();
            let watched_tx = watched_tx.clone();
            let pc_weak = Arc::downgrade(&pc);
            let reports = sender_reports.clone();
            pc.on_track(Box::new(move |track, receiver, _transceiver| {
                // RTCP sender reports of what the server sends on this track.
                let reports = reports.clone();
                let kind = track.kind();
                tokio::spawn(async move {
                    use webrtc::rtcp::sender_report::SenderReport;
                    while let Ok((packets, _)) = receiver.read_rtcp().await {
                        for p in packets {
                            if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                                reports.lock().unwrap().push(SenderReportSeen {
                                    video: kind == RTPCodecType::Video,
                                    ntp: sr.ntp_time,
                                    rtp: sr.rtp_time,
                                    at: std::time::SystemTime::now(),
                                });
                            }
                        }
                    }
                });
                let heard = heard.clone();
                let heard_tx = heard_tx.clone();
                let level_id = level_id.clone();
                let watched = watched.clone();
                let watched_tx = watched_tx.clone();
                let inspect = inspect.clone();
                let pc_weak = pc_weak.clone();
                // webrtc-rs awaits each on_track handler before the next track's: run the
                // readers on their own tasks.
                tokio::spawn(async move {
                    if track.kind() != RTPCodecType::Audio {
                        match inspect {
                            Some(inspect) => {
                                watch_video(
                                    track,
                                    video_codec,
                                    inspect,
                                    watched,
                                    watched_tx,
                                    pc_weak,
                                )
                                .await
                            }
                            None => {
                                while track.read_rtp().await.is_ok() {
                                    watched.lock().unwrap().packets += 1;
                                }
                            }
                        }
                        return;
                    }
                    let mut dec = match g711 {
                        None => AudioDecoder::Opus(
                            opus::Decoder::new(48000, opus::Channels::Mono).unwrap(),
                        ),
                        Some(law) => AudioDecoder::G711(law, Box::new(g711::Upsampler::new())),
                    };
                    let ticks = dec.frame_ticks();
                    let mut last: Option<(u16, u32)> = None;
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
                            let frames = ts.wrapping_sub(prev_ts) / ticks;
                            if frames > u32::from(gap) && frames < 50 * 60 {
                                h.skips += 1;
                                h.skipped_frames += u64::from(frames - u32::from(gap));
                            }
                            // Conceal what is missing (up to 1 s), as a browser's jitter buffer
                            // does, so the timeline stays continuous.
                            let missing = frames.max(u32::from(gap)).saturating_sub(1);
                            for _ in 0..missing.min(50) {
                                dec.conceal(&mut h.pcm);
                            }
                        }
                        last = Some((seq, ts));
                        h.packets += 1;
                        let id = level_id.load(Ordering::Relaxed);
                        if let Some(ext) = packet.header.get_extension(id).filter(|_| id != 0) {
                            h.with_level += 1;
                            h.last_level = ext.first().map(|b| b & 0x7f);
                        }
                        if !dec.decode(&packet.payload, &mut h.pcm) {
                            h.decode_errors += 1;
                        }
                        let n = h.pcm.len() as u64;
                        drop(h);
                        heard_tx.send_replace(n);
                    }
                });
                Box::pin(async {})
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
            tone_on: Arc::new(AtomicBool::new(true)),
            tone_onset: Arc::new(Mutex::new(None)),
            send_stats: Arc::new(SendStats::default()),
            sender_task: None,
            camera,
            camera_on: Arc::new(AtomicBool::new(false)),
            camera_task: None,
            keyframe_asked,
            camera_stats,
            watched,
            watched_tx,
            sender_reports,
            g711,
            video_codec,
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
        let tone_on = self.tone_on.clone();
        let tone_onset = self.tone_onset.clone();
        let g711 = self.g711;
        self.sender_task = Some(tokio::spawn(async move {
            let mut down = g711::Downsampler::new();
            let ticks: u64 = if g711.is_some() { 160 } else { 960 };
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
            let mut was_on = true;
            while sending.load(Ordering::SeqCst) {
                ticker.tick().await;
                let on = tone_on.load(Ordering::SeqCst);
                let pcm = if on {
                    tones::tone_frame(freq, amplitude, k)
                } else {
                    vec![0i16; 960]
                };
                let frame = match g711 {
                    None => enc.encode_vec(&pcm, 1500).unwrap(),
                    Some(law) => {
                        let mut narrow = Vec::with_capacity(160);
                        down.process(&pcm, &mut narrow);
                        g711::encode(law, &narrow)
                    }
                };
                let packet = webrtc::rtp::packet::Packet {
                    header: webrtc::rtp::header::Header {
                        version: 2,
                        marker: k == 0,
                        sequence_number: seq0.wrapping_add(k as u16),
                        timestamp: ts0.wrapping_add((k * ticks) as u32),
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
                    level: if on { level } else { 127 },
                    voice: on,
                })];
                if on && !was_on {
                    *tone_onset.lock().unwrap() = Some(std::time::SystemTime::now());
                }
                was_on = on;
                // Fails only while the track is not bound yet (before the connection is up).
                if audio.write_rtp_with_extensions(&packet, &ext).await.is_ok() {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    /// Switches the tone on or off without stopping the RTP stream (off: digital silence with
    /// the RFC 6464 level of silence), as a microphone that stays open does.
    pub fn set_tone(&self, on: bool) {
        if on {
            *self.tone_onset.lock().unwrap() = None;
        }
        self.tone_on.store(on, Ordering::SeqCst);
    }

    /// The wall-clock time the first tone frame after the last `set_tone(true)` was sent.
    pub fn tone_onset(&self) -> Option<std::time::SystemTime> {
        *self.tone_onset.lock().unwrap()
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
        self.stop_camera().await;
        let _ = self.pc.close().await;
    }

    /// Starts the camera: `width x height` pictures of one colour (Y, U, V) with a white bar
    /// moving along the top edge, `fps` per second, H.264 (or VP8, for a peer made with
    /// [`Peer::with_vp8_video`]) at about 300 kbit/s. A PLI or FIR
    /// from the server makes the next picture a keyframe.
    pub fn start_camera(&mut self, colour: (u8, u8, u8), width: u32, height: u32, fps: u32) {
        let track = self
            .camera
            .clone()
            .expect("a peer made with Peer::with_video");
        assert!(self.camera_task.is_none(), "{}: the camera runs", self.name);
        self.camera_on.store(true, Ordering::SeqCst);
        let on = self.camera_on.clone();
        let asked = self.keyframe_asked.clone();
        let stats = self.camera_stats.clone();
        let codec = self.video_codec;
        self.camera_task = Some(tokio::spawn(async move {
            let mut sender = comet_media::VideoSender::new(comet_media::VideoSenderConfig {
                codec,
                encoder: comet_media::H264EncoderConfig {
                    bitrate: 300_000,
                    fps: fps as f32,
                    keyframe_interval: fps * 10,
                    threads: 1,
                },
                mtu: 1100,
                initial_timestamp: rand::random(),
            })
            .unwrap();
            let mut ticker =
                tokio::time::interval(Duration::from_micros(1_000_000 / u64::from(fps)));
            let mut seq: u16 = rand::random();
            let mut k: u32 = 0;
            while on.load(Ordering::SeqCst) {
                ticker.tick().await;
                let mut frame =
                    comet_media::I420Frame::filled(width, height, colour.0, colour.1, colour.2);
                // A moving white bar in the top eighth: the picture changes every frame.
                let bar_w = (width / 8).max(2);
                let x0 = (k * 4) % (width - bar_w);
                for y in 0..(height / 8).max(2) {
                    let row = (y * width) as usize;
                    frame.y[row + x0 as usize..row + (x0 + bar_w) as usize].fill(235);
                }
                k += 1;
                if asked.swap(false, Ordering::SeqCst) {
                    sender.request_keyframe();
                }
                let Ok(payloads) = sender.encode(&frame, std::time::Instant::now()) else {
                    continue;
                };
                stats.frames.fetch_add(1, Ordering::Relaxed);
                if payloads.first().is_some_and(|p| p.keyframe) {
                    stats.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                for p in payloads {
                    let packet = webrtc::rtp::packet::Packet {
                        header: webrtc::rtp::header::Header {
                            version: 2,
                            marker: p.marker,
                            sequence_number: seq,
                            timestamp: p.timestamp,
                            ..Default::default()
                        },
                        payload: p.payload.into(),
                    };
                    seq = seq.wrapping_add(1);
                    use webrtc::track::track_local::TrackLocalWriter;
                    let _ = track.write_rtp(&packet).await;
                }
            }
        }));
    }

    /// Stops the camera (as a stalled network would: nothing more arrives).
    pub async fn stop_camera(&mut self) {
        self.camera_on.store(false, Ordering::SeqCst);
        if let Some(t) = self.camera_task.take() {
            let _ = t.await;
        }
    }

    /// Every picture received so far, with the inspection's verdict.
    pub fn seen(&self) -> Vec<VideoSeen> {
        self.watched.lock().unwrap().seen.clone()
    }

    /// How many pictures have been decoded.
    pub fn seen_count(&self) -> usize {
        self.watched.lock().unwrap().seen.len()
    }

    /// The last picture decoded.
    pub fn last_picture(&self) -> Option<comet_media::I420Frame> {
        self.watched.lock().unwrap().last.clone()
    }

    /// Waits until a picture decoded after the first `from` satisfies `pred`; returns it, or
    /// `None` at the deadline.
    pub async fn wait_seen(
        &self,
        from: usize,
        deadline: Instant,
        pred: impl Fn(&VideoSeen) -> bool,
    ) -> Option<VideoSeen> {
        let mut rx = self.watched_tx.subscribe();
        let mut checked = from;
        loop {
            {
                let w = self.watched.lock().unwrap();
                if let Some(s) = w.seen.iter().skip(checked).find(|s| pred(s)) {
                    return Some(s.clone());
                }
                checked = w.seen.len().max(checked);
            }
            if timeout_at(deadline, rx.changed()).await.is_err() {
                return None;
            }
        }
    }

    /// The RTCP sender reports received so far.
    pub fn sender_reports(&self) -> Vec<SenderReportSeen> {
        self.sender_reports.lock().unwrap().clone()
    }

    /// Video RTP packets received so far.
    pub fn video_packets(&self) -> u64 {
        self.watched.lock().unwrap().packets
    }

    /// The MIME type of the video track received (lower case: `video/h264`, `video/vp8`).
    pub fn received_video_mime(&self) -> Option<String> {
        self.watched.lock().unwrap().mime.clone()
    }

    /// Keyframes received so far.
    pub fn keyframes_received(&self) -> u64 {
        self.watched.lock().unwrap().keyframes
    }

    /// Sends the server a PLI for the video it sends us (as a browser does after loss).
    pub async fn send_pli(&self) {
        use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        let ssrc = self
            .watched
            .lock()
            .unwrap()
            .ssrc
            .expect("video received before a PLI");
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        self.pc.write_rtcp(&[Box::new(pli)]).await.unwrap();
    }

    /// Waits until more than `n` keyframes were received; false at the deadline.
    pub async fn wait_keyframes(&self, n: u64, deadline: Instant) -> bool {
        let mut rx = self.watched_tx.subscribe();
        loop {
            if self.keyframes_received() > n {
                return true;
            }
            if timeout_at(deadline, rx.changed()).await.is_err() {
                return self.keyframes_received() > n;
            }
        }
    }

    /// One line about the video this peer sent and received, for failure messages.
    pub fn video_report(&self) -> String {
        let w = self.watched.lock().unwrap();
        format!(
            "{}: camera {} frames ({} keyframes, {} PLI/FIR received); received {} video \
             packets ({} keyframes), decoded {} pictures (last {:?}), sent {} PLIs",
            self.name,
            self.camera_stats.frames.load(Ordering::Relaxed),
            self.camera_stats.keyframes.load(Ordering::Relaxed),
            self.camera_stats.keyframe_requests.load(Ordering::Relaxed),
            w.packets,
            w.keyframes,
            w.seen.len(),
            w.seen.last().map(|s| (s.width, s.height, &s.verdict)),
            w.plis_sent,
        )
    }
}

/// Decodes what the server sends (H.264 or VP8, `codec`) with `comet-media`, asks for
/// keyframes with PLI, and records the inspection of every picture.
async fn watch_video(
    track: Arc<TrackRemote>,
    codec: comet_media::VideoCodec,
    inspect: Inspect,
    watched: Arc<Mutex<Watched>>,
    watched_tx: Arc<watch::Sender<u64>>,
    pc: std::sync::Weak<RTCPeerConnection>,
) {
    use comet_media::{VideoEvent, VideoReceiver, VideoReceiverConfig};
    use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    watched.lock().unwrap().mime = Some(track.codec().capability.mime_type.to_ascii_lowercase());
    let mut rx = VideoReceiver::new(VideoReceiverConfig::new(codec)).unwrap();
    while let Ok((packet, _)) = track.read_rtp().await {
        let now = std::time::Instant::now();
        let events = rx.push(
            comet_media::RtpPacket {
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                payload: packet.payload.to_vec(),
                audio_level: None,
                arrival: now,
            },
            now,
        );
        {
            let mut w = watched.lock().unwrap();
            w.packets += 1;
            w.ssrc = Some(track.ssrc());
            let key = match codec {
                comet_media::VideoCodec::H264 => h264_idr(&packet.payload),
                comet_media::VideoCodec::Vp8 => vp8_key(&packet.payload),
            };
            if key && w.last_key_ts != Some(packet.header.timestamp) {
                w.last_key_ts = Some(packet.header.timestamp);
                w.keyframes += 1;
            }
        }
        for e in events {
            match e {
                VideoEvent::Frame { frame, .. } => {
                    let verdict = inspect(&frame);
                    let n = {
                        let mut w = watched.lock().unwrap();
                        w.seen.push(VideoSeen {
                            at: Instant::now(),
                            width: frame.width,
                            height: frame.height,
                            verdict,
                        });
                        w.last = Some(frame);
                        w.seen.len() as u64
                    };
                    watched_tx.send_replace(n);
                }
                VideoEvent::NeedKeyframe => {
                    let Some(pc) = pc.upgrade() else { return };
                    let pli = PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: track.ssrc(),
                    };
                    if pc.write_rtcp(&[Box::new(pli)]).await.is_ok() {
                        watched.lock().unwrap().plis_sent += 1;
                    }
                }
            }
        }
    }
}
