//! A light WebRTC peer: a str0m client (full ICE, controlling; RTP mode) on its own UDP socket
//! on 127.0.0.1, driven by one small tokio task. It replays pre-encoded packets on a global
//! 20 ms grid (talkers: a tone with a marker burst; the others: DTX silence), reads the RTP
//! header of everything it receives without decrypting it (sequence gaps, timestamp jumps,
//! RFC 3550 jitter), and only probe peers let str0m decrypt the audio, decode it and analyse
//! it: which talkers' tones they hear, and when each marker burst arrives (mouth-to-ear delay).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use comet_media::OpusDecoder;
use rand::{Rng, SeedableRng};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::media::{self, AudioLoop, FRAME, OnsetDetector, VideoFrame};

/// The 20 ms grid every peer sends on.
pub const TICK: Duration = Duration::from_millis(20);
/// Video frame period (15 fps).
const VIDEO_TICK: Duration = Duration::from_nanos(1_000_000_000 / 15);

/// Run phases: counters only accumulate while measuring.
pub const WARMUP: u8 = 0;
pub const MEASURING: u8 = 1;
pub const DONE: u8 = 2;

/// What every peer of a run shares.
pub struct Shared {
    /// Frame `k` of every peer is due at `epoch + k * 20 ms`.
    pub epoch: Instant,
    pub phase: AtomicU8,
    /// Talker loops by talker index within a conference.
    pub talkers: Vec<AudioLoop>,
    pub silence: AudioLoop,
    pub video: Option<Vec<VideoFrame>>,
    /// Per conference, per talker: when its recent burst-start packets were sent.
    pub bursts: Vec<Vec<Mutex<VecDeque<Instant>>>>,
    pub crypto: Arc<CryptoProvider>,
    pub cert: DtlsCert,
}

impl Shared {
    pub fn new(
        conferences: usize,
        talkers: usize,
        video: bool,
        epoch: Instant,
    ) -> Result<Arc<Shared>> {
        let loops = (0..talkers)
            .map(|j| media::talker_loop(j, talkers))
            .collect::<Result<Vec<_>>>()?;
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .context("cannot generate a DTLS certificate")?;
        Ok(Arc::new(Shared {
            epoch,
            phase: AtomicU8::new(WARMUP),
            talkers: loops,
            silence: media::silence_loop()?,
            video: if video {
                Some(media::video_loop()?)
            } else {
                None
            },
            bursts: (0..conferences)
                .map(|_| (0..talkers).map(|_| Mutex::new(VecDeque::new())).collect())
                .collect(),
            crypto,
            cert,
        }))
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    /// The frame index due next at or after `now`.
    fn frame_at(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch);
        since.as_nanos().div_ceil(TICK.as_nanos()) as u64
    }

    fn frame_time(&self, k: u64) -> Instant {
        self.epoch + TICK * k as u32
    }
}

/// What a peer does in its conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Talker `j` of its conference.
    Talker(usize),
    Silent,
}

/// One peer of the load.
#[derive(Debug, Clone)]
pub struct Spec {
    pub index: usize,
    pub conf: usize,
    pub role: Role,
    /// Decodes and analyses what it hears.
    pub probe: bool,
    /// Share of its audio packets dropped before sending (0..1).
    pub loss: f64,
    /// Offers video (sendrecv H.264) and sends the test pattern if the answer lets it.
    pub video: bool,
    /// Talkers in its conference (their tones are what a probe listens for).
    pub talkers: usize,
    /// First RTP sequence number of its streams (`None`: random).
    pub first_seq: Option<u16>,
}

/// Counters of what a peer received, over the measuring window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub audio_packets: u64,
    /// Sequence numbers skipped (packets lost on the way to us).
    pub lost: u64,
    /// 20 ms frames the sender left out (RTP timestamp jumps beyond the sequence step).
    pub skipped_frames: u64,
    /// Highest RFC 3550 jitter estimate seen, ms.
    pub jitter_max_ms: f64,
    /// Longest time between two audio packets, ms.
    pub max_gap_ms: f64,
    pub video_packets: u64,
    pub sent_audio: u64,
    /// Audio packets sent 20 ms or more after their slot on the grid (this task was starved:
    /// the server sees it as jitter), and the latest, ms.
    pub sent_late: u64,
    pub send_late_max_ms: f64,
    /// Frames not sent at all: over 100 ms late.
    pub send_skipped: u64,
    pub dropped_audio: u64,
    pub sent_video: u64,
}

/// What a probe heard over the measuring window.
#[derive(Debug, Clone, Default)]
pub struct Hearing {
    /// Decoded 20 ms frames.
    pub frames: u64,
    /// Per talker of the conference: frames in which its tone was present.
    pub heard: Vec<u64>,
    /// Mouth-to-ear delays of marker bursts, ms.
    pub delays_ms: Vec<f64>,
    /// Bursts whose talker could not be matched to a recent send.
    pub unmatched: u64,
    /// Bursts of the probe's own tone (it must not hear itself).
    pub own_bursts: u64,
}

/// Everything known about one peer; the peer's task writes, the run reads.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub invite_at: Option<Instant>,
    pub connected_at: Option<Instant>,
    pub first_audio_at: Option<Instant>,
    /// Why the peer stopped, if it did.
    pub dead: Option<String>,
    /// Whether the answer lets us send video.
    pub video_sending: bool,
    pub window: Window,
    pub hearing: Option<Hearing>,
}

/// A peer whose offer is made, waiting for the answer.
pub struct Pending {
    spec: Spec,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio_mid: Mid,
    video_mid: Option<Mid>,
    pending: SdpPendingOffer,
    offer: String,
    pub stats: Arc<Mutex<Stats>>,
}

/// A running peer.
pub struct Running {
    pub spec: Spec,
    pub stats: Arc<Mutex<Stats>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Running {
    /// Waits (until `deadline`) for the peer's task to end after the run's stop signal; it
    /// hands over its last counters before it ends.
    pub async fn finish(&mut self, deadline: tokio::time::Instant) {
        if let Some(t) = self.task.as_mut() {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        self.task = None;
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }
}

/// What the loadgen reads from an SDP answer.
#[derive(Debug, Default)]
struct AnswerInfo {
    opus_pt: Option<u8>,
    h264_pt: Option<u8>,
    audio_pts: Vec<u8>,
    video_pts: Vec<u8>,
    /// Direction of the answer's video m-line, as the answerer says it.
    video_dir: Option<String>,
    video_port: u16,
}

/// Refuses an answer with a candidate (or connection address) that is not 127.0.0.1: the
/// load never leaves the machine.
pub fn check_loopback(answer: &str) -> Result<()> {
    for line in answer.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("a=candidate:") {
            let f: Vec<&str> = c.split_whitespace().collect();
            let addr = f.get(4).copied().unwrap_or("");
            if addr != "127.0.0.1" {
                bail!(
                    "the answer offers candidate address {addr:?}, not 127.0.0.1: refused ({line})"
                );
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let addr = c.split_whitespace().nth(2).unwrap_or("");
            if addr != "127.0.0.1" && addr != "0.0.0.0" {
                bail!("the answer's connection address is {addr:?}, not 127.0.0.1: refused");
            }
        }
    }
    Ok(())
}

fn read_answer(sdp: &str) -> AnswerInfo {
    let mut info = AnswerInfo::default();
    let mut kind = "";
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            let f: Vec<&str> = m.split_whitespace().collect();
            kind = f.first().copied().unwrap_or("");
            let pts: Vec<u8> = f.iter().skip(3).filter_map(|p| p.parse().ok()).collect();
            let port: u16 = f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            match kind {
                "audio" => info.audio_pts = pts,
                "video" => {
                    info.video_pts = pts;
                    info.video_port = port;
                    info.video_dir = Some("sendrecv".into());
                }
                _ => {}
            }
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let (pt, name) = map.split_once(' ').unwrap_or(("", ""));
            let pt: Option<u8> = pt.parse().ok();
            let name = name.to_ascii_lowercase();
            if kind == "audio" && name.starts_with("opus/") && info.opus_pt.is_none() {
                info.opus_pt = pt;
            }
            if kind == "video" && name.starts_with("h264/") && info.h264_pt.is_none() {
                info.h264_pt = pt;
            }
        } else if kind == "video"
            && matches!(
                line,
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
            )
        {
            info.video_dir = Some(line[2..].to_string());
        }
    }
    info
}

impl Pending {
    /// Binds a socket on 127.0.0.1 and makes the offer: audio sendrecv, and video (sendrecv
    /// when the spec sends video, else receive-only as JsSIP's `offerToReceiveVideo` does,
    /// unless `video_mline` is false).
    pub async fn new(spec: Spec, shared: &Shared, video_mline: bool) -> Result<Pending> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("bind a UDP socket on 127.0.0.1")?;
        let local = socket.local_addr()?;
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .set_crypto_provider(shared.crypto.clone())
            .set_dtls_cert(shared.cert.clone())
            .set_stats_interval(None)
            .build(Instant::now());
        rtc.add_local_candidate(
            Candidate::host(local, "udp").map_err(|e| anyhow::anyhow!("candidate: {e}"))?,
        );
        let mut api = rtc.sdp_api();
        let audio_mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video_mid = video_mline.then(|| {
            let dir = if spec.video {
                Direction::SendRecv
            } else {
                Direction::RecvOnly
            };
            api.add_media(MediaKind::Video, dir, None, None, None)
        });
        let (offer, pending) = api
            .apply()
            .context("str0m made no offer (no media added?)")?;
        Ok(Pending {
            spec,
            rtc,
            socket,
            local,
            audio_mid,
            video_mid,
            pending,
            offer: offer.to_sdp_string(),
            stats: Arc::new(Mutex::new(Stats::default())),
        })
    }

    pub fn offer(&self) -> &str {
        &self.offer
    }

    /// Records when the INVITE (or the Janus offer) went out.
    pub fn mark_invite(&self) {
        lock(&self.stats).invite_at = Some(Instant::now());
    }

    /// Applies the answer (refusing non-loopback candidates) and starts the peer's task.
    pub fn start(
        mut self,
        answer: &str,
        shared: Arc<Shared>,
        stop: watch::Receiver<bool>,
    ) -> Result<Running> {
        check_loopback(answer)?;
        let info = read_answer(answer);
        let opus_pt = info
            .opus_pt
            .context("the answer has no Opus payload type")?;
        let sdp = SdpAnswer::from_sdp_string(answer).context("str0m cannot read the answer")?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, sdp)
            .context("str0m refused the answer")?;
        // We send video if we offered it and the answerer receives it.
        let video_sending = self.spec.video
            && info.video_port != 0
            && info.h264_pt.is_some()
            && matches!(info.video_dir.as_deref(), Some("sendrecv" | "recvonly"));
        lock(&self.stats).video_sending = video_sending;
        let hearing = self.spec.probe.then(|| Hearing {
            heard: vec![0; self.spec.talkers],
            ..Default::default()
        });
        lock(&self.stats).hearing = hearing;
        let mut rng = rand::rng();
        let probe = if self.spec.probe {
            Some(Probe {
                decoder: OpusDecoder::new(1).context("Opus decoder")?,
                detector: OnsetDetector::default(),
                pcm: VecDeque::new(),
                pcm_start: 0,
                frames: VecDeque::new(),
                onsets: VecDeque::new(),
                last_seq: None,
                matched: vec![None; self.spec.talkers],
            })
        } else {
            None
        };
        let state = PeerTask {
            spec: self.spec.clone(),
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            audio_mid: self.audio_mid,
            video_mid: self.video_mid,
            opus_pt,
            h264_pt: info.h264_pt,
            audio_pts: info.audio_pts,
            video_pts: info.video_pts,
            video_sending,
            shared,
            stats: self.stats.clone(),
            seq: u64::from(self.spec.first_seq.unwrap_or_else(|| rng.random())),
            ts0: rng.random(),
            vseq: u64::from(self.spec.first_seq.unwrap_or_else(|| rng.random())),
            vts0: rng.random(),
            next_frame: None,
            next_video: None,
            connected: false,
            rx: RxState::default(),
            window_phase: WARMUP,
            window: Window::default(),
            probe,
            loss_rng: rand::rngs::SmallRng::from_rng(&mut rng),
            silence_phase: (self.spec.index * 7) % 40,
        };
        let task = tokio::spawn(state.run(stop));
        Ok(Running {
            spec: self.spec,
            stats: self.stats,
            task: Some(task),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sequence and timing state of the received audio stream (kept across windows).
#[derive(Debug, Default)]
struct RxState {
    last_seq: Option<u16>,
    last_ts: u32,
    last_arrival: Option<Instant>,
    /// RFC 3550 jitter in 48 kHz units, and the last transit time.
    jitter: f64,
    transit: Option<f64>,
}

/// The decoding side of a probe.
struct Probe {
    decoder: OpusDecoder,
    detector: OnsetDetector,
    /// Decoded audio not yet analysed (enough to look 10 ms past an onset).
    pcm: VecDeque<i16>,
    /// Sample index (since the first decoded sample) of `pcm[0]`.
    pcm_start: u64,
    /// (first sample index, arrival) of recent decoded frames.
    frames: VecDeque<(u64, Instant)>,
    /// Onsets (sample index) waiting for 10 ms of audio after them.
    onsets: VecDeque<u64>,
    last_seq: Option<u16>,
    /// Per talker, the send time of the last burst a delay was measured for: each burst gives
    /// one delay; a later onset matched to the same burst (an echo of the detector, a tone
    /// edge) is not a second sample.
    matched: Vec<Option<Instant>>,
}

struct PeerTask {
    spec: Spec,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio_mid: Mid,
    video_mid: Option<Mid>,
    opus_pt: u8,
    h264_pt: Option<u8>,
    audio_pts: Vec<u8>,
    video_pts: Vec<u8>,
    video_sending: bool,
    shared: Arc<Shared>,
    stats: Arc<Mutex<Stats>>,
    /// Extended RTP sequence numbers (RFC 3711: rollover count * 65536 + sequence number),
    /// as str0m takes them: its SRTP index comes from them, so after the 16-bit number wraps
    /// the rollover count must have moved on (starting in the first rollover, as RFC 3711
    /// expects without signalling).
    seq: u64,
    ts0: u32,
    vseq: u64,
    vts0: u32,
    /// The next audio frame index to consider sending.
    next_frame: Option<u64>,
    next_video: Option<u64>,
    connected: bool,
    rx: RxState,
    window_phase: u8,
    window: Window,
    probe: Option<Probe>,
    loss_rng: rand::rngs::SmallRng,
    /// Offset of this peer into the silence loop, so DTX updates spread over the ticks.
    silence_phase: usize,
}

impl PeerTask {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; 2048];
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let timeout = match self.drain() {
                Ok(t) => t,
                Err(why) => {
                    self.die(why);
                    return;
                }
            };
            let mut wake = timeout;
            if let Some(t) = self.next_send_time() {
                wake = wake.min(t);
            }
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(wake.max(Instant::now())));
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        self.datagram(&buf[..n], from, now);
                        for _ in 0..16 {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, from)) => self.datagram(&buf[..n], from, Instant::now()),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = &mut sleep => {
                    let now = Instant::now();
                    self.send_due(now);
                    if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                        self.die("str0m failed on a timeout".into());
                        return;
                    }
                }
                _ = stop.changed() => {
                    self.rtc.disconnect();
                    let _ = self.drain();
                    self.flush_window();
                    return;
                }
            }
            self.flush_window();
        }
    }

    fn die(&mut self, why: String) {
        self.flush_window();
        let mut s = lock(&self.stats);
        if s.dead.is_none() {
            s.dead = Some(why);
        }
    }

    /// Sends what str0m wants sent and handles its events; returns its next timeout.
    fn drain(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Event(e)) => self.event(e)?,
                Err(e) => return Err(format!("str0m: {e}")),
            }
        }
    }

    fn event(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::Connected => {
                self.connected = true;
                lock(&self.stats).connected_at = Some(Instant::now());
            }
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                return Err("ICE disconnected".into());
            }
            Event::RtpPacket(pkt) if *pkt.header.payload_type == self.opus_pt => {
                self.probe_audio(*pkt.seq_no as u16, &pkt.payload, pkt.timestamp);
            }
            _ => {}
        }
        if !self.rtc.is_alive() {
            return Err("the connection closed".into());
        }
        Ok(())
    }

    /// A datagram from the network: RTP is read from its (clear) header; probes also let
    /// str0m decrypt audio for decoding. Everything else (STUN, DTLS, RTCP) goes to str0m.
    fn datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        let is_rtp = data.len() >= 12
            && (128..192).contains(&data[0])
            && !(64..96).contains(&(data[1] & 0x7f));
        let mut to_str0m = !is_rtp;
        if is_rtp {
            let pt = data[1] & 0x7f;
            if self.audio_pts.contains(&pt) {
                let seq = u16::from_be_bytes([data[2], data[3]]);
                let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                self.audio_header(seq, ts, now);
                to_str0m = self.probe.is_some();
            } else if self.video_pts.contains(&pt) && self.window_phase == MEASURING {
                self.window.video_packets += 1;
            }
        }
        if !to_str0m {
            return;
        }
        let Ok(recv) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return;
        };
        let _ = self.rtc.handle_input(Input::Receive(now, recv));
    }

    fn audio_header(&mut self, seq: u16, ts: u32, now: Instant) {
        {
            let mut s = lock(&self.stats);
            if s.first_audio_at.is_none() {
                s.first_audio_at = Some(now);
            }
        }
        let measuring = self.window_phase == MEASURING;
        let rx = &mut self.rx;
        let secs = now.duration_since(self.shared.epoch).as_secs_f64();
        let transit = secs * 48_000.0 - f64::from(ts);
        if let Some(prev) = rx.transit {
            // RTP timestamps wrap at 2^32 (about 24.9 hours at 48 kHz): unwrap the difference.
            let mut d = transit - prev;
            let wrap = 4_294_967_296.0;
            if d > wrap / 2.0 {
                d -= wrap;
            } else if d < -wrap / 2.0 {
                d += wrap;
            }
            rx.jitter += (d.abs() - rx.jitter) / 16.0;
        }
        rx.transit = Some(transit);
        if let Some(last) = rx.last_seq {
            let step = seq.wrapping_sub(last);
            if step == 0 || step > 0x8000 {
                return; // duplicate or reordered: already counted as lost
            }
            let frames = ts.wrapping_sub(rx.last_ts) / FRAME as u32;
            if measuring {
                self.window.lost += u64::from(step - 1);
                if frames > u32::from(step) && frames < 50 * 60 {
                    self.window.skipped_frames += u64::from(frames - u32::from(step));
                }
                if let Some(prev) = rx.last_arrival {
                    let gap = now.duration_since(prev).as_secs_f64() * 1e3;
                    self.window.max_gap_ms = self.window.max_gap_ms.max(gap);
                }
            }
        }
        if measuring {
            self.window.audio_packets += 1;
            self.window.jitter_max_ms = self.window.jitter_max_ms.max(rx.jitter / 48.0);
        }
        rx.last_seq = Some(seq);
        rx.last_ts = ts;
        rx.last_arrival = Some(now);
    }

    /// Moves the window counters to the shared stats, and starts or ends the window when the
    /// run's phase changed.
    fn flush_window(&mut self) {
        let phase = self.shared.phase();
        if phase == self.window_phase {
            return;
        }
        if phase == MEASURING {
            self.window = Window::default();
            if let Some(h) = lock(&self.stats).hearing.as_mut() {
                *h = Hearing {
                    heard: vec![0; self.spec.talkers],
                    ..Default::default()
                };
            }
        } else if self.window_phase == MEASURING {
            lock(&self.stats).window = self.window.clone();
        }
        self.window_phase = phase;
    }

    fn next_send_time(&mut self) -> Option<Instant> {
        if !self.connected {
            return None;
        }
        let now = Instant::now();
        let k = *self
            .next_frame
            .get_or_insert_with(|| self.shared.frame_at(now));
        let mut t = self.shared.frame_time(k);
        if self.video_sending {
            let v = *self.next_video.get_or_insert_with(|| {
                let since = now.saturating_duration_since(self.shared.epoch);
                since.as_nanos().div_ceil(VIDEO_TICK.as_nanos()) as u64
            });
            t = t.min(self.shared.epoch + VIDEO_TICK * v as u32);
        }
        Some(t)
    }

    /// Sends every audio (and video) frame that is due.
    fn send_due(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        while let Some(k) = self.next_frame {
            if self.shared.frame_time(k) > now {
                break;
            }
            self.next_frame = Some(k + 1);
            // A frame more than 100 ms late is skipped (the task was starved): a browser's
            // capture would have lost it too.
            if now.duration_since(self.shared.frame_time(k)) > Duration::from_millis(100) {
                if self.window_phase == MEASURING {
                    self.window.send_skipped += 1;
                }
                continue;
            }
            self.send_audio(k, now);
        }
        if self.video_sending {
            while let Some(v) = self.next_video {
                if self.shared.epoch + VIDEO_TICK * v as u32 > now {
                    break;
                }
                self.next_video = Some(v + 1);
                self.send_video(v, now);
            }
        }
    }

    fn send_audio(&mut self, k: u64, now: Instant) {
        let shared = self.shared.clone();
        let (packet, burst) = match self.spec.role {
            Role::Talker(j) => {
                let lp = &shared.talkers[j];
                let i = (k % lp.frames.len() as u64) as usize;
                let burst = lp.burst.is_some_and(|(b, _)| b == i);
                (lp.frames[i].as_ref(), burst.then_some(j))
            }
            Role::Silent => {
                let lp = &shared.silence;
                let i = ((k as usize) + self.silence_phase) % lp.frames.len();
                (lp.frames[i].as_ref(), None)
            }
        };
        let Some(packet) = packet else { return };
        if let Some(j) = burst {
            let mut q = lock(&shared.bursts[self.spec.conf][j]);
            q.push_back(now);
            if q.len() > 8 {
                q.pop_front();
            }
        }
        let seq = self.seq;
        self.seq += 1;
        let measuring = self.window_phase == MEASURING;
        if self.spec.loss > 0.0 && self.loss_rng.random::<f64>() < self.spec.loss {
            if measuring {
                self.window.dropped_audio += 1;
            }
            return;
        }
        let ts = self.ts0.wrapping_add((k as u32).wrapping_mul(FRAME as u32));
        let ext = ExtensionValues {
            audio_level: Some(-(packet.level.min(127) as i8)),
            voice_activity: Some(packet.voice),
            ..Default::default()
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.audio_mid, None) else {
            return;
        };
        let w = RtpWrite::new(
            Pt::from(self.opus_pt),
            seq.into(),
            ts,
            now,
            packet.payload.clone(),
        )
        .ext_vals(ext);
        tx.write_rtp(w);
        if measuring {
            self.window.sent_audio += 1;
            let late = now.saturating_duration_since(self.shared.frame_time(k));
            if late >= TICK {
                self.window.sent_late += 1;
            }
            let late_ms = late.as_secs_f64() * 1e3;
            if late_ms > self.window.send_late_max_ms {
                self.window.send_late_max_ms = late_ms;
            }
        }
    }

    fn send_video(&mut self, v: u64, now: Instant) {
        let (Some(frames), Some(pt), Some(mid)) =
            (self.shared.video.as_ref(), self.h264_pt, self.video_mid)
        else {
            return;
        };
        let frame = &frames[(v % frames.len() as u64) as usize];
        let ts = self.vts0.wrapping_add((v as u32).wrapping_mul(6000));
        let n = frame.payloads.len();
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        for (i, p) in frame.payloads.iter().enumerate() {
            let seq = self.vseq;
            self.vseq += 1;
            let w = RtpWrite::new(Pt::from(pt), seq.into(), ts, now, p.clone()).marker(i + 1 == n);
            tx.write_rtp(w);
        }
        if self.window_phase == MEASURING {
            self.window.sent_video += n as u64;
        }
    }

    /// A decrypted audio packet of a probe: decode, look for bursts, measure the tones.
    fn probe_audio(&mut self, seq: u16, payload: &[u8], arrival: Instant) {
        let measuring = self.window_phase == MEASURING;
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let mut out = Vec::with_capacity(FRAME * 2);
        if let Some(last) = p.last_seq {
            let step = seq.wrapping_sub(last);
            if step == 0 || step > 0x8000 {
                return;
            }
            for _ in 1..step.min(10) {
                let _ = p.decoder.conceal(FRAME, &mut out);
            }
        }
        p.last_seq = Some(seq);
        if p.decoder.decode(payload, &mut out).is_err() {
            return;
        }
        let first = p.pcm_start + p.pcm.len() as u64;
        // Frames of 20 ms; concealed ones count as arriving with this packet.
        for (i, _) in out.chunks(FRAME).enumerate() {
            p.frames.push_back((first + (i * FRAME) as u64, arrival));
        }
        while p.frames.len() > 100 {
            p.frames.pop_front();
        }
        // Which tones this frame carries.
        let talkers = self.spec.talkers;
        let mut heard_now = vec![false; talkers];
        if let Some(last) = out.chunks_exact(FRAME).last() {
            for (j, h) in heard_now.iter_mut().enumerate() {
                *h = media::amplitude_at(last, media::talker_freq(j)) >= media::HEARD;
            }
        }
        // Burst onsets, block by block.
        for (b, block) in out.chunks_exact(media::BLOCK).enumerate() {
            if p.detector.push(block).is_some() {
                p.onsets.push_back(first + (b * media::BLOCK) as u64);
            }
        }
        p.pcm.extend(out.iter().copied());
        // Analyse onsets with 20 ms of audio after them.
        let mut results = Vec::new();
        while let Some(&at) = p.onsets.front() {
            let end = p.pcm_start + p.pcm.len() as u64;
            if at + FRAME as u64 > end {
                break;
            }
            p.onsets.pop_front();
            let from = (at - p.pcm_start) as usize;
            let window: Vec<i16> = p.pcm.range(from..from + FRAME).copied().collect();
            let before: Vec<i16> = p
                .pcm
                .range(from.saturating_sub(FRAME)..from)
                .copied()
                .collect();
            // Whose burst it is, if anybody's (a false onset matched to a talker's last
            // burst gave a false delay of up to 0.8 s).
            let j = media::burst_talker(&window, &before, talkers).unwrap_or(usize::MAX);
            // The arrival time of the onset: its frame's arrival plus its offset in the frame.
            let Some(&(start, t)) = p.frames.iter().rev().find(|(s, _)| *s <= at) else {
                continue;
            };
            let onset = t + Duration::from_secs_f64((at - start) as f64 / media::RATE);
            results.push((j, onset));
        }
        // Keep 200 ms of audio.
        while p.pcm.len() > 9600 {
            p.pcm.pop_front();
            p.pcm_start += 1;
        }
        if !measuring {
            return;
        }
        let own = match self.spec.role {
            Role::Talker(j) => Some(j),
            Role::Silent => None,
        };
        let mut delays = Vec::new();
        let (mut unmatched, mut own_bursts) = (0, 0);
        for (j, onset) in results {
            if j >= talkers {
                unmatched += 1;
                continue;
            }
            if Some(j) == own {
                own_bursts += 1;
                continue;
            }
            let offset = self.shared.talkers[j]
                .burst
                .map(|(_, o)| o as f64 / media::RATE)
                .unwrap_or(0.0);
            let sent = lock(&self.shared.bursts[self.spec.conf][j])
                .iter()
                .rev()
                .find(|&&s| s <= onset)
                .copied();
            match sent {
                Some(s) if p.matched.get(j).copied().flatten() == Some(s) => unmatched += 1,
                Some(s) => {
                    let d = onset.duration_since(s).as_secs_f64() - offset;
                    if (-0.010..0.8).contains(&d) {
                        delays.push(d * 1e3);
                        if let Some(m) = p.matched.get_mut(j) {
                            *m = Some(s);
                        }
                    } else {
                        unmatched += 1;
                    }
                }
                None => unmatched += 1,
            }
        }
        let mut s = lock(&self.stats);
        if let Some(h) = s.hearing.as_mut() {
            h.frames += 1;
            for (j, on) in heard_now.iter().enumerate() {
                if *on {
                    h.heard[j] += 1;
                }
            }
            h.delays_ms.extend(delays);
            h.unmatched += unmatched;
            h.own_bursts += own_bursts;
        }
    }
}
