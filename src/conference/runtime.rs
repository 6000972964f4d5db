//! The conference runtime: the audio MCU between the SIP calls and the WebRTC endpoint.
//!
//! [`MediaRuntime`] is the [`CallHandler`] of the SIP layer. An answered INVITE becomes a
//! participant of the WebRTC endpoint (`comet-sfu`) and a member of its conference; the
//! conference exists while it has members. Two parts share the conferences:
//!
//! - the **event loop** (a tokio task) takes joins, leaves and the endpoint's events; a media
//!   packet only goes into its member's inbox, so the loop never waits for the mixing;
//! - the **mixing clock** (a thread) runs every conference every 20 ms, the conferences in
//!   parallel on rayon's thread pool (they share nothing on the media path), and within a
//!   conference of many members steps 1 and 4 in parallel too; each conference is locked
//!   only while its own tick runs. A tick:
//!
//! 1. each member's jitter buffer + decoder (`comet-media`: Opus, or G.711 for a caller that
//!    offered nothing better, resampled to 48 kHz) gives exactly one 20 ms frame (decoded,
//!    FEC-recovered, concealed or silence);
//! 2. the `comet-mixer` N-1 mixer mixes the loudest talkers; members who hear the same thing
//!    share one output;
//! 3. the shared mix is encoded once per codec in use for all who hear it, a talker's own N-1
//!    mix by its own encoder; every member's packets carry its own continuous RTP timestamps;
//! 4. the payloads go out through the endpoint (SRTP), one batch per tick.
//!
//! A `Conf` owns its members, so a conference's tick touches only its own state; the event
//! loop keeps which conference (and inbox) each participant has.
//!
//! Conferences whose profile has video also get a video thread ([`VideoWorker`] running a
//! [`super::video::VideoMixer`]): this task forwards it each member's video packets, keyframe
//! requests and bandwidth estimates, the dominant speaker of the audio mixer, the moderation
//! flags and each member's audio delay (for lip sync); the thread composes and encodes the
//! canvases and writes them to the endpoint itself.
//!
//! Talking members are reported to the [`ConferenceRegistry`] (`conference_members`
//! `last_talking`). A participant whose WebRTC connection dies is hung up through the registry,
//! so the browser gets a SIP BYE; a call that ends on the SIP side closes its participant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use comet_media::g711::Law;
use comet_media::{
    AudioCodec, AudioReceiver, AudioReceiverConfig, AudioSender, OpusEncoderConfig, RtpPacket,
};
use comet_mixer::{AudioMixer, MemberId, MemberInput, MixerConfig, OutputKind};
use comet_sfu::driver::{AudioWrite, Events, SfuHandle};
use comet_sfu::{
    Answer, AnswerOptions, AudioLevel, CloseReason, Codec, Direction, Event, MediaKind,
    ParticipantId,
};
use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::ConferenceRegistry;
use super::complexity::Governor;
use super::video::{MemberVideo, VideoSettings, layout_kind, offered_video_bandwidth};
use super::video_worker::{VideoCmd, VideoCounters, VideoWorker};
use crate::broadcast::{Broadcast, BroadcastPlan};
use crate::sip::{CallEvent, CallHandler, CallId, CallInfo, EndReason, MediaError};
use crate::store::{DevId, UserId};

/// Samples in one 20 ms, 48 kHz mono frame.
const FRAME: usize = 960;
/// The mixing period.
pub const TICK: Duration = Duration::from_millis(20);

/// Tuning of the audio MCU.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How many of the loudest talkers are mixed.
    pub max_talkers: usize,
    /// Opus bitrate of what we send (cometVideoApi.js asks for 32 kbit/s audio).
    pub opus_bitrate: u32,
    /// Opus encoder complexity (0..=10).
    pub opus_complexity: u8,
    /// RTMP broadcasts and recordings (`crate::broadcast`); `None`: never.
    pub broadcast: Option<Arc<BroadcastPlan>>,
    /// Conference profiles by name: the canvas of those with video, `None` for audio-only
    /// ones. A profile missing here is audio-only.
    pub profiles: HashMap<String, Option<VideoSettings>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_talkers: 3,
            opus_bitrate: 32_000,
            opus_complexity: 5,
            broadcast: None,
            profiles: [
                ("default", Some(VideoSettings::default())),
                ("video", Some(VideoSettings::default())),
                ("audio", None),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    pub participants: AtomicU64,
    pub conferences: AtomicU64,
    pub rtp_in: AtomicU64,
    pub rtp_out: AtomicU64,
    /// The receive counters of every member that has left (see [`MediaRuntime::audio_totals`]).
    departed: Mutex<AudioTotals>,
    pub ticks: AtomicU64,
    /// 20 ms periods skipped because the runtime fell more than 200 ms behind.
    pub ticks_skipped: AtomicU64,
    /// Time spent decoding + mixing + encoding, nanoseconds.
    pub mix_ns: AtomicU64,
    /// Mixes Opus-encoded (the shared mix once per codec, each talker's own N-1 mix).
    pub encodes: AtomicU64,
    /// Payloads sent as a talker's packet came (a listener who hears exactly that one
    /// talker's frame), without decoding and encoding it again.
    pub passthrough: AtomicU64,
    /// The Opus complexity the mixes are encoded with now (a gauge; see
    /// [`super::complexity`]).
    pub opus_complexity: AtomicU64,
    /// The video threads of every video conference.
    pub video: Arc<VideoCounters>,
}

/// What the members' receivers (jitter buffer + decoder) did with their audio, summed over
/// members: see [`MediaRuntime::audio_totals`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AudioTotals {
    /// RTP packets received.
    pub received: u64,
    /// Packets never received (RFC 3550 cumulative loss).
    pub lost: u64,
    /// Arrived after their time to play (too late for the jitter buffer).
    pub late: u64,
    pub duplicates: u64,
    /// Dropped to bring the delay back down to the jitter buffer's target.
    pub dropped_for_latency: u64,
    /// Dropped because the buffer held its maximum span.
    pub overflow_drops: u64,
    /// Stream restarts (huge sequence or timestamp jumps).
    pub resets: u64,
    /// Malformed payloads.
    pub malformed: u64,
    pub decode_errors: u64,
    /// 20 ms frames by what the mixer got: decoded, recovered from in-band FEC, concealed,
    /// silence (DTX, nothing buffered, or not worth decoding).
    pub decoded: u64,
    pub fec_recovered: u64,
    pub concealed: u64,
    pub silence: u64,
}

impl AudioTotals {
    fn add(&mut self, s: &comet_media::AudioReceiverStats) {
        let j = &s.jitter;
        self.received += j.received;
        self.lost += j.lost;
        self.late += j.late;
        self.duplicates += j.duplicates;
        self.dropped_for_latency += j.dropped_for_latency;
        self.overflow_drops += j.overflow_drops;
        self.resets += j.resets;
        self.malformed += s.malformed;
        self.decode_errors += s.decode_errors;
        self.decoded += s.decoded;
        self.fec_recovered += s.fec_recovered;
        self.concealed += s.concealed;
        self.silence += s.silence;
    }
}

/// One member as the admin endpoint `/debug/conferences` shows it: what its receiver did
/// with its audio and what the mixer made of it (the first place to look when a member is not
/// heard).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberDebug {
    pub user: UserId,
    pub participant: String,
    pub codec: String,
    /// We may send to it (connected, not on hold).
    pub connected: bool,
    pub talking: bool,
    /// Among the loudest mixed into the others' outputs.
    pub mixed: bool,
    pub energy: u8,
    pub level_dbov: f32,
    pub muted: bool,
    pub deaf: bool,
    /// What it hears: `shared`, `own` (its N-1 mix) or `silence`.
    pub output: &'static str,
    /// No concealment or decoding of silence: nobody hears it.
    pub quiet: bool,
    pub received: AudioTotals,
    pub jitter_ms: f64,
    pub target_delay_ms: f64,
    /// The target's parts: transit spread + a frame, and the raise after late packets.
    pub jitter_target_ms: f64,
    pub late_target_ms: f64,
    pub current_delay_ms: f64,
    pub buffered_packets: usize,
    /// Packets in its inbox, waiting for the next tick.
    pub inbox: usize,
}

/// One conference in `/debug/conferences`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConferenceDebug {
    pub dev: DevId,
    pub name: String,
    /// The dominant speaker's user id.
    pub dominant: Option<UserId>,
    pub members: Vec<MemberDebug>,
}

enum Cmd {
    Join {
        call: Box<CallInfo>,
        answer: Box<Answer>,
        /// The `b=AS` of the offer's video section, bit/s.
        video_bandwidth: Option<u32>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// A re-INVITE was answered: the video directions may have changed.
    Reoffer {
        participant: ParticipantId,
        answer: Box<Answer>,
        video_bandwidth: Option<u32>,
    },
    Leave {
        call: CallId,
    },
    /// SIP INFO asked for a keyframe of what we send the participant.
    FastUpdate {
        participant: ParticipantId,
    },
}

/// The audio MCU. Cheap to share: the work happens in its task.
pub struct MediaRuntime {
    sfu: SfuHandle,
    cmds: mpsc::UnboundedSender<Cmd>,
    /// Which participant carries which call (for re-INVITEs).
    calls: Mutex<HashMap<CallId, CallSlot>>,
    /// Which profiles have video.
    profiles: HashMap<String, Option<VideoSettings>>,
    pub stats: Arc<RuntimeStats>,
    /// The conferences (owned by the event loop).
    confs: std::sync::Weak<ConfTable>,
    /// Draining: no new conference starts here ([`crate::draining`]).
    draining: tokio::sync::watch::Sender<bool>,
    /// Notified whenever a call is forgotten (for [`MediaRuntime::idle`]).
    calls_changed: tokio::sync::Notify,
}

impl MediaRuntime {
    /// Starts the runtime on a running endpoint driver.
    pub fn start(
        sfu: SfuHandle,
        events: Events,
        registry: Arc<ConferenceRegistry>,
        cfg: RuntimeConfig,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(RuntimeStats::default());
        let governor = Governor::new(cfg.opus_complexity);
        stats
            .opus_complexity
            .store(u64::from(governor.complexity()), Ordering::Relaxed);
        let profiles = cfg.profiles.clone();
        let confs: Arc<ConfTable> = Arc::default();
        let weak_confs = Arc::downgrade(&confs);
        let clock = Clock {
            confs: weak_confs.clone(),
            sfu: sfu.clone(),
            registry: registry.clone(),
            stats: stats.clone(),
            enc_cfg: encoder_config(&cfg),
            governor,
            epoch: Instant::now(),
            flags_seen: 0,
        };
        if let Err(e) = std::thread::Builder::new()
            .name("comet-mix-clock".into())
            .spawn(move || clock.run())
        {
            tracing::error!("cannot start the mixing clock thread: {e}");
        }
        let task = Task {
            rt: tokio::runtime::Handle::current(),
            sfu: sfu.clone(),
            registry,
            stats: stats.clone(),
            cfg,
            where_is: HashMap::new(),
            by_call: HashMap::new(),
            entries: HashMap::new(),
            confs,
        };
        tokio::spawn(task.run(events, rx));
        Arc::new(MediaRuntime {
            sfu,
            cmds: tx,
            calls: Mutex::new(HashMap::new()),
            profiles,
            stats,
            confs: weak_confs,
            draining: tokio::sync::watch::Sender::new(false),
            calls_changed: tokio::sync::Notify::new(),
        })
    }

    /// From now on a call to a conference that has no member here is refused (SIP 503).
    /// Returns whether this call started it (false: it was draining already).
    pub fn start_draining(&self) -> bool {
        !self.draining.send_replace(true)
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once draining has started.
    pub async fn draining_started(&self) {
        let mut started = self.draining.subscribe();
        // The sender lives as long as `self`.
        let _ = started.wait_for(|d| *d).await;
    }

    /// Calls answered or being answered, not ended.
    pub fn calls_up(&self) -> usize {
        self.calls().len()
    }

    /// Resolves once no call is up.
    pub async fn idle(&self) {
        loop {
            let changed = self.calls_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.calls().is_empty() {
                return;
            }
            changed.await;
        }
    }

    /// Whether conference `name` of `dev` has members here.
    fn runs_here(&self, dev: DevId, name: &str) -> bool {
        self.confs
            .upgrade()
            .is_some_and(|c| lock(&c).contains_key(&(dev, name.to_string())))
    }

    /// The receive counters of every member, present and departed. Locks each conference in
    /// turn (waits for its tick): for metrics, not for the media path.
    pub fn audio_totals(&self) -> AudioTotals {
        let confs: Vec<ConfRef> = self
            .confs
            .upgrade()
            .map(|c| lock(&c).values().cloned().collect())
            .unwrap_or_default();
        // Leaves posted but not applied yet count as departed, once.
        for conf in &confs {
            drop(lock_conf(conf));
        }
        let mut t = *lock(&self.stats.departed);
        for conf in confs {
            for m in &lock(&conf).members {
                t.add(&m.rx.stats());
            }
        }
        t
    }

    /// Every conference and member with its receive counters and mixer state (see
    /// [`MemberDebug`]). Locks each conference in turn.
    pub fn debug_conferences(&self) -> Vec<ConferenceDebug> {
        let confs: Vec<ConfRef> = self
            .confs
            .upgrade()
            .map(|c| lock(&c).values().cloned().collect())
            .unwrap_or_default();
        let mut out: Vec<ConferenceDebug> = confs.iter().map(|c| lock_conf(c).debug()).collect();
        out.sort_by(|a, b| (a.dev, &a.name).cmp(&(b.dev, &b.name)));
        out
    }

    /// The WebRTC endpoint's counters.
    pub async fn endpoint_metrics(&self) -> Result<comet_sfu::Metrics, comet_sfu::Error> {
        self.sfu.metrics().await
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, CallSlot>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The participant of a call that is answered and not ended.
    fn live(&self, call: CallId) -> Option<ParticipantId> {
        match self.calls().get(&call) {
            Some(CallSlot::Live(pid)) => Some(*pid),
            _ => None,
        }
    }

    /// Whether the call ended while its offer was being answered (and forgets it if so).
    fn ended_meanwhile(&self, call: CallId) -> bool {
        let mut calls = self.calls();
        let ended = matches!(calls.get(&call), Some(CallSlot::EndedPending));
        if ended {
            calls.remove(&call);
            self.calls_changed.notify_waiters();
        }
        ended
    }

    /// What we answer, by conference profile: video both ways when the profile has video
    /// (members send their camera, receive the canvas), else none.
    fn answer_options(&self, profile: &str) -> AnswerOptions {
        let video = self.profiles.get(profile).is_some_and(|v| v.is_some());
        AnswerOptions {
            audio: Direction::SendRecv,
            video: if video {
                Direction::SendRecv
            } else {
                Direction::Inactive
            },
        }
    }
}

fn sfu_error(e: comet_sfu::Error) -> MediaError {
    use comet_sfu::Error as E;
    match e {
        E::NoCommonCodec(..) | E::InvalidOffer(..) => MediaError::NotAcceptable(e.to_string()),
        E::TooManyParticipants | E::DriverGone => MediaError::Unavailable(e.to_string()),
        other => MediaError::Failed(other.to_string()),
    }
}

/// What the runtime knows of a SIP call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallSlot {
    /// Its offer is being answered.
    Pending,
    /// It ended (CANCEL, closed connection) while its offer was being answered: the offer's
    /// task undoes what it did and forgets the call.
    EndedPending,
    Live(ParticipantId),
}

/// Forgets a call still pending when its offer returns, whatever the `?` or `return` (an
/// answered call is `Live` by then, or already forgotten).
struct PendingGuard<'a> {
    runtime: &'a MediaRuntime,
    call: CallId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut calls = self.runtime.calls();
        if matches!(
            calls.get(&self.call),
            Some(CallSlot::Pending | CallSlot::EndedPending)
        ) {
            calls.remove(&self.call);
            self.runtime.calls_changed.notify_waiters();
        }
    }
}

#[async_trait]
impl CallHandler for MediaRuntime {
    async fn offer(&self, call: CallInfo, sdp: &str) -> Result<String, MediaError> {
        if self.is_draining() && !self.runs_here(call.dev, &call.conference) {
            return Err(MediaError::Unavailable(
                "this server is draining: it starts no new conference".into(),
            ));
        }
        let video_bandwidth = offered_video_bandwidth(sdp);
        self.calls().insert(call.id, CallSlot::Pending);
        let _pending = PendingGuard {
            runtime: self,
            call: call.id,
        };
        let answer = self
            .sfu
            .accept_offer(sdp, self.answer_options(&call.profile))
            .await
            .map_err(sfu_error)?;
        let pid = answer.participant;
        if answer
            .audio
            .as_ref()
            .and_then(|a| audio_codec(a.codec))
            .is_none()
        {
            let _ = self.sfu.close(pid).await;
            return Err(MediaError::NotAcceptable(match &answer.audio {
                Some(a) => format!(
                    "audio codec {:?}: this server mixes Opus, PCMU or PCMA",
                    a.codec
                ),
                None => "the offer has no audio".into(),
            }));
        }
        let sdp = answer.sdp.clone();
        let id = call.id;
        if self.ended_meanwhile(id) {
            let _ = self.sfu.close(pid).await;
            return Err(MediaError::Failed(
                "the call ended while it was answered".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        if self
            .cmds
            .send(Cmd::Join {
                call: Box::new(call),
                answer: Box::new(answer),
                video_bandwidth,
                reply,
            })
            .is_err()
        {
            let _ = self.sfu.close(pid).await;
            return Err(MediaError::Unavailable("the media runtime stopped".into()));
        }
        match rx.await {
            Ok(Ok(())) => {
                let mut calls = self.calls();
                if calls.get(&id) == Some(&CallSlot::EndedPending) {
                    // Its Leave may have reached the runtime before the Join: leave again.
                    calls.remove(&id);
                    drop(calls);
                    self.calls_changed.notify_waiters();
                    let _ = self.cmds.send(Cmd::Leave { call: id });
                    return Err(MediaError::Failed(
                        "the call ended while it was answered".into(),
                    ));
                }
                calls.insert(id, CallSlot::Live(pid));
                Ok(sdp)
            }
            Ok(Err(e)) => {
                let _ = self.sfu.close(pid).await;
                Err(e)
            }
            Err(_) => {
                let _ = self.sfu.close(pid).await;
                Err(MediaError::Unavailable("the media runtime stopped".into()))
            }
        }
    }

    async fn reoffer(&self, call: &CallInfo, sdp: &str) -> Result<String, MediaError> {
        let pid = self
            .live(call.id)
            .ok_or_else(|| MediaError::Failed("no media for this call".into()))?;
        let answer = self
            .sfu
            .accept_reoffer(pid, sdp, self.answer_options(&call.profile))
            .await
            .map_err(sfu_error)?;
        let out = answer.sdp.clone();
        let _ = self.cmds.send(Cmd::Reoffer {
            participant: pid,
            answer: Box::new(answer),
            video_bandwidth: offered_video_bandwidth(sdp),
        });
        Ok(out)
    }

    fn event(&self, call: &CallInfo, ev: &CallEvent) {
        // SIP INFO `picture_fast_update` (what FreeSWITCH answered with a keyframe): the same
        // as an RTCP PLI from the member.
        if matches!(ev, CallEvent::VideoFastUpdate)
            && let Some(pid) = self.live(call.id)
        {
            let _ = self.cmds.send(Cmd::FastUpdate { participant: pid });
        }
    }

    fn ended(&self, call: &CallInfo, reason: &EndReason) {
        tracing::debug!(call = ?call.id, %reason, "call ended");
        {
            let mut calls = self.calls();
            match calls.get(&call.id) {
                Some(CallSlot::Pending) => {
                    calls.insert(call.id, CallSlot::EndedPending);
                }
                Some(_) => {
                    calls.remove(&call.id);
                    self.calls_changed.notify_waiters();
                }
                None => {}
            }
        }
        let _ = self.cmds.send(Cmd::Leave { call: call.id });
    }
}

/// The codec the media path uses for a negotiated one (`None`: not an audio codec we mix).
fn audio_codec(c: Codec) -> Option<AudioCodec> {
    match c {
        Codec::Opus => Some(AudioCodec::Opus),
        Codec::Pcmu => Some(AudioCodec::G711(Law::Mu)),
        Codec::Pcma => Some(AudioCodec::G711(Law::A)),
        _ => None,
    }
}

/// An encoder for `codec` (Opus with `opus`'s settings).
fn new_sender(codec: AudioCodec, opus: OpusEncoderConfig) -> comet_media::Result<AudioSender> {
    match codec {
        AudioCodec::Opus => AudioSender::new(opus, 0),
        AudioCodec::G711(law) => Ok(AudioSender::g711(law, 0)),
    }
}

type ConfKey = (DevId, String);

/// A conference with at least this many members decodes and encodes its members on the
/// thread pool too (below it, one thread per conference is cheaper than splitting it).
const PAR_MEMBERS: usize = 64;
/// Members per piece of work when a large conference is split.
const PAR_CHUNK: usize = 16;

/// Audio packets the event loop received for one member since its last tick: the event loop
/// never waits for a conference's tick, the tick moves them into the jitter buffer.
type Inbox = Arc<Mutex<Vec<RtpPacket>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section leaves the data valid; a poisoned lock still holds it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Member {
    pid: ParticipantId,
    inbox: Inbox,
    /// The inbox's previous buffer, swapped in to keep the tick free of allocations.
    spare: Vec<RtpPacket>,
    call: CallInfo,
    mixer_id: MemberId,
    /// What this member sends and receives: Opus, or G.711 when it offered nothing better.
    codec: AudioCodec,
    rx: AudioReceiver,
    /// Whether we may send audio to this participant (connected, not on hold).
    connected: bool,
    /// RTP timestamp of the next frame we send.
    out_ts: u32,
    /// Encoder for this member's own mix (a talker hearing N-1), made when first needed.
    own: Option<AudioSender>,
    /// This tick's decoded frame.
    pcm: Vec<i16>,
    level: Option<u8>,
    /// Voice activity as last reported to the registry, and when.
    reported: Option<(bool, u8, Instant)>,
    /// In its conference's video mixer.
    video: bool,
}

impl Member {
    /// Step 1 of a tick: this member's 20 ms frame (decoded, concealed or silence).
    fn pop(&mut self, now: Instant) {
        std::mem::swap(&mut *lock(&self.inbox), &mut self.spare);
        for packet in self.spare.drain(..) {
            let arrival = packet.arrival;
            // Malformed payloads are counted by the receiver and dropped.
            let _ = self.rx.push(packet, arrival);
        }
        self.level = self.rx.pop_into(now, &mut self.pcm).audio_level;
    }
}

/// One conference: its members, mixer and encoders. Conferences share nothing on the media
/// path, so a tick runs them in parallel (each on one pool thread at a time).
struct Conf {
    key: ConfKey,
    mixer: AudioMixer,
    /// Encode the mix that every non-talker hears, once per tick and codec in use.
    shared: Vec<(AudioCodec, AudioSender)>,
    members: Vec<Member>,
    /// Where each participant is in `members`.
    index: HashMap<ParticipantId, usize>,
    /// The RTMP output and/or recording of the conference (gets the shared mix every tick).
    broadcast: Option<Broadcast>,
    /// The video thread of a conference with video.
    video: Option<VideoWorker>,
    /// The dominant speaker the video thread was told.
    speaker: Option<ParticipantId>,
    /// When the members' audio delays were last sent to the video thread.
    delays_sent: Option<Instant>,
    /// Joins, leaves and connections the event loop has posted and not yet applied.
    changes: Changes,
    /// For the receive counters of members still here when the conference goes.
    stats: Arc<RuntimeStats>,
}

/// A change to a conference's membership, posted by the event loop and applied by whoever
/// holds the conference next (the clock at the start of its tick), so that the event loop
/// never waits for a tick.
enum Change {
    Join(Box<Joining>),
    Leave(ParticipantId),
    Connected(ParticipantId),
}

/// A member ready to join, with what the conference lacked when the event loop made it.
struct Joining {
    member: Member,
    /// The shared mix's encoder for the member's codec, if the conference had none.
    sender: Option<(AudioCodec, AudioSender)>,
    broadcast: Option<Broadcast>,
    video: Option<VideoWorker>,
}

type Changes = Arc<Mutex<Vec<Change>>>;

impl Drop for Conf {
    fn drop(&mut self) {
        // Members whose leave was posted but never applied (the conference ended first).
        let mut departed = lock(&self.stats.departed);
        for m in &self.members {
            departed.add(&m.rx.stats());
        }
    }
}

/// What every conference's tick shares.
struct TickCtx<'a> {
    stats: &'a RuntimeStats,
    now: Instant,
    /// Periods skipped just before this tick (the clock fell too far behind): every member's
    /// RTP timeline jumps over them, so receivers see the gap instead of a compressed stream.
    skipped: u32,
    now_ms: u64,
    enc_cfg: OpusEncoderConfig,
    registry: &'a ConferenceRegistry,
}

impl Conf {
    /// Applies the changes the event loop posted, in order (see [`lock_conf`]).
    fn apply_changes(&mut self) {
        let changes = std::mem::take(&mut *lock(&self.changes));
        for change in changes {
            match change {
                Change::Join(j) => {
                    let Joining {
                        mut member,
                        sender,
                        broadcast,
                        video,
                    } = *j;
                    if let Some((codec, enc)) = sender
                        && !self.shared.iter().any(|(c, _)| *c == codec)
                    {
                        self.shared.push((codec, enc));
                    }
                    if self.broadcast.is_none() {
                        self.broadcast = broadcast;
                    }
                    if self.video.is_none() {
                        self.video = video;
                    }
                    match self.mixer.add_member() {
                        Ok(id) => {
                            member.mixer_id = id;
                            self.insert(member);
                        }
                        // The event loop keeps the count under the mixer's limit.
                        Err(e) => tracing::error!(participant = %member.pid, "not mixed: {e}"),
                    }
                }
                Change::Leave(pid) => {
                    if let Some(m) = self.take(pid) {
                        lock(&self.stats.departed).add(&m.rx.stats());
                        let _ = self.mixer.remove_member(m.mixer_id);
                        if self.speaker == Some(pid) {
                            self.speaker = None;
                        }
                    }
                }
                Change::Connected(pid) => {
                    if let Some(m) = self.member_mut(pid) {
                        m.connected = true;
                    }
                }
            }
        }
    }

    fn member_mut(&mut self, pid: ParticipantId) -> Option<&mut Member> {
        let i = *self.index.get(&pid)?;
        self.members.get_mut(i)
    }

    fn insert(&mut self, m: Member) {
        self.index.insert(m.pid, self.members.len());
        self.members.push(m);
    }

    fn take(&mut self, pid: ParticipantId) -> Option<Member> {
        let i = self.index.remove(&pid)?;
        let m = self.members.swap_remove(i);
        if let Some(moved) = self.members.get(i) {
            self.index.insert(moved.pid, i);
        }
        Some(m)
    }

    fn debug(&self) -> ConferenceDebug {
        let dominant = self.mixer.dominant_speaker();
        let mut members: Vec<MemberDebug> = self
            .members
            .iter()
            .map(|m| {
                let st = self.mixer.status(m.mixer_id).ok();
                let rs = m.rx.stats();
                let mut received = AudioTotals::default();
                received.add(&rs);
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                MemberDebug {
                    user: m.call.user,
                    participant: m.pid.to_string(),
                    codec: format!("{:?}", m.codec),
                    connected: m.connected,
                    talking: st.is_some_and(|s| s.talking),
                    mixed: st.is_some_and(|s| s.mixed),
                    energy: st.map_or(0, |s| s.energy),
                    level_dbov: st.map_or(-127.0, |s| s.level_dbov),
                    muted: st.is_some_and(|s| s.muted),
                    deaf: st.is_some_and(|s| s.deaf),
                    output: match self.mixer.output(m.mixer_id).map(|o| o.kind) {
                        Ok(OutputKind::Shared) => "shared",
                        Ok(OutputKind::Own) => "own",
                        Ok(OutputKind::Silence) => "silence",
                        Err(_) => "none",
                    },
                    quiet: m.rx.is_quiet(),
                    received,
                    jitter_ms: rs.jitter.jitter_ms,
                    target_delay_ms: ms(rs.jitter.target_delay),
                    jitter_target_ms: ms(rs.jitter.jitter_target),
                    late_target_ms: ms(rs.jitter.late_target),
                    current_delay_ms: ms(rs.jitter.current_delay),
                    buffered_packets: rs.jitter.buffered_packets,
                    inbox: lock(&m.inbox).len(),
                }
            })
            .collect();
        members.sort_by_key(|m| m.user);
        ConferenceDebug {
            dev: self.key.0,
            name: self.key.1.clone(),
            dominant: dominant
                .and_then(|d| self.by_mixer_id(d))
                .map(|m| m.call.user),
            members,
        }
    }

    /// The member the mixer knows as `id`.
    fn by_mixer_id(&self, id: MemberId) -> Option<&Member> {
        self.members.iter().find(|m| m.mixer_id == id)
    }

    fn is_large(&self) -> bool {
        self.members.len() >= PAR_MEMBERS
    }

    /// One 20 ms period of this conference; returns what to send.
    fn tick(&mut self, ctx: &TickCtx<'_>) -> Vec<Write> {
        let now = ctx.now;
        if ctx.skipped > 0 {
            for m in &mut self.members {
                m.out_ts = m
                    .out_ts
                    .wrapping_add(m.codec.frame_ticks().wrapping_mul(ctx.skipped));
            }
        }
        // 1. One frame per member.
        if self.is_large() {
            self.members
                .par_iter_mut()
                .with_min_len(PAR_CHUNK)
                .for_each(|m| m.pop(now));
        } else {
            self.members.iter_mut().for_each(|m| m.pop(now));
        }
        // 2. Mix.
        let inputs: Vec<MemberInput<'_>> = self
            .members
            .iter()
            .map(|m| MemberInput {
                member: m.mixer_id,
                pcm: &m.pcm,
                audio_level: m.level,
            })
            .collect();
        if let Err(e) = self.mixer.mix(ctx.now_ms, &inputs) {
            tracing::warn!(conference = %self.key.1, "mix failed: {e}");
            return Vec::new();
        }
        drop(inputs);
        let mixed: Vec<MemberId> = self.mixer.mixed_members().collect();
        let lone: Vec<Lone> = mixed
            .iter()
            .filter_map(|&id| {
                let m = self.by_mixer_id(id)?;
                if m.codec != AudioCodec::Opus {
                    return None;
                }
                let packet = m.rx.frame_packet()?;
                Some(Lone {
                    id,
                    pcm: m.pcm.clone(),
                    packet: (Arc::from(packet), m.level),
                })
            })
            .collect();
        let shared_lone = lone_packet(&lone, &mixed, None, self.mixer.shared_mix());
        // What a listener who is not talking hears goes to the broadcast.
        if let Some(b) = &self.broadcast {
            b.push_audio(self.mixer.shared_mix());
        }
        self.feed_video(now);
        // 3. Voice activity for conference_members and the event pipe, and the shared mix
        // encoded once per codec that someone hearing it uses.
        let mut shared: Vec<(AudioCodec, Option<Encoded>)> = Vec::new();
        for m in &mut self.members {
            if let Ok(st) = self.mixer.status(m.mixer_id) {
                // Nobody hears a member who is neither talking nor mixed: until it talks, its
                // losses need no concealment and its silence no decoding.
                m.rx.set_quiet(!st.talking && !st.mixed);
                // On every change of talking, and at least once a second.
                let due = match m.reported {
                    None => true,
                    Some((talking, energy, at)) => {
                        talking != st.talking
                            || (st.talking && now.duration_since(at) >= Duration::from_secs(1))
                            || (energy != st.energy
                                && now.duration_since(at) >= Duration::from_secs(1))
                    }
                };
                if due {
                    ctx.registry.activity(
                        self.key.0,
                        &self.key.1,
                        m.call.user,
                        st.talking,
                        st.energy,
                        now,
                    );
                    m.reported = Some((st.talking, st.energy, now));
                }
            }
            if m.connected
                && !shared.iter().any(|(c, _)| *c == m.codec)
                && self
                    .mixer
                    .output(m.mixer_id)
                    .is_ok_and(|o| o.kind == OutputKind::Shared)
            {
                let pass = shared_lone.clone().filter(|_| m.codec == AudioCodec::Opus);
                let e = match pass {
                    Some(p) => Some(p),
                    None => {
                        ctx.stats.encodes.fetch_add(1, Ordering::Relaxed);
                        self.shared
                            .iter_mut()
                            .find(|(c, _)| *c == m.codec)
                            .and_then(|(_, enc)| {
                                // Follows the governor (nothing to do when unchanged).
                                let _ = enc.set_complexity(ctx.enc_cfg.complexity);
                                enc.encode(self.mixer.shared_mix()).ok()
                            })
                            .flatten()
                            .map(|p| (Arc::<[u8]>::from(p.payload), p.audio_level))
                    }
                };
                shared.push((m.codec, e));
            }
        }
        // 4. Each member's payload: the shared one, or its own N-1 mix encoded by its own
        // encoder (talkers).
        let heard = Heard {
            mixer: &self.mixer,
            shared: &shared,
            mixed: &mixed,
            lone: &lone,
            shared_is_lone: shared_lone.is_some(),
            stats: ctx.stats,
        };
        let enc_cfg = ctx.enc_cfg;
        let out = |m: &mut Member| member_output(m, &heard, enc_cfg);
        if self.is_large() {
            self.members
                .par_iter_mut()
                .with_min_len(PAR_CHUNK)
                .filter_map(out)
                .collect()
        } else {
            self.members.iter_mut().filter_map(out).collect()
        }
    }

    /// The video thread follows the dominant speaker and each member's audio delay.
    fn feed_video(&mut self, now: Instant) {
        let Some(w) = &self.video else {
            return;
        };
        let dominant = self
            .mixer
            .dominant_speaker()
            .and_then(|d| self.by_mixer_id(d).map(|m| m.pid));
        if dominant.is_some() && dominant != self.speaker {
            self.speaker = dominant;
            w.send(VideoCmd::Speaker(dominant));
        }
        if self
            .delays_sent
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.delays_sent = Some(now);
            for m in self.members.iter().filter(|m| m.video) {
                let delay = m.rx.stats().jitter.current_delay;
                w.send(VideoCmd::AudioDelay(m.pid, delay));
            }
        }
    }
}

/// What `m` gets this tick (after the mix): `None` when it is not connected, deaf, or its
/// encoder skipped the frame.
/// What the listeners of a tick can get: the mix, the shared mix's payloads per codec, and
/// the lone talkers' packets.
struct Heard<'a> {
    mixer: &'a AudioMixer,
    shared: &'a [(AudioCodec, Option<Encoded>)],
    mixed: &'a [MemberId],
    lone: &'a [Lone],
    /// The shared mix is exactly one lone talker's frame (its Opus payload is that packet).
    shared_is_lone: bool,
    stats: &'a RuntimeStats,
}

fn member_output(m: &mut Member, heard: &Heard<'_>, enc_cfg: OpusEncoderConfig) -> Option<Write> {
    let (mixer, shared) = (heard.mixer, heard.shared);
    if !m.connected {
        return None;
    }
    let out = mixer.output(m.mixer_id).ok()?;
    if tracing::enabled!(tracing::Level::TRACE) {
        let st = mixer.status(m.mixer_id).ok();
        tracing::trace!(
            participant = %m.pid, mixer_id = m.mixer_id.0, level = ?m.level,
            input_peak = m.pcm.iter().map(|s| s.unsigned_abs()).max(),
            talking = st.map(|s| s.talking), mixed = st.map(|s| s.mixed), output = ?out.kind,
            output_peak = out.pcm.iter().map(|s| s.unsigned_abs()).max(), "tick"
        );
    }
    let encoded = match out.kind {
        OutputKind::Shared => {
            if heard.shared_is_lone && m.codec == AudioCodec::Opus {
                heard.stats.passthrough.fetch_add(1, Ordering::Relaxed);
            }
            shared
                .iter()
                .find(|(c, _)| *c == m.codec)
                .and_then(|(_, e)| e.clone())
        }
        OutputKind::Own => {
            let pass = (m.codec == AudioCodec::Opus)
                .then(|| lone_packet(heard.lone, heard.mixed, Some(m.mixer_id), out.pcm))
                .flatten();
            if pass.is_some() {
                heard.stats.passthrough.fetch_add(1, Ordering::Relaxed);
                pass
            } else {
                heard.stats.encodes.fetch_add(1, Ordering::Relaxed);
                if m.own.is_none() {
                    m.own = new_sender(m.codec, enc_cfg).ok();
                }
                m.own
                    .as_mut()
                    .and_then(|enc| {
                        let _ = enc.set_complexity(enc_cfg.complexity);
                        enc.encode(out.pcm).ok().flatten()
                    })
                    .map(|p| (Arc::<[u8]>::from(p.payload), p.audio_level))
            }
        }
        // Deaf: nothing to hear; the browser treats the gap like DTX.
        OutputKind::Silence => None,
    };
    let ts = m.out_ts;
    // The timeline moves on even when nothing is sent (deaf, or an encoder skip).
    m.out_ts = m.out_ts.wrapping_add(m.codec.frame_ticks());
    let (payload, level) = encoded?;
    Some(Write {
        id: m.pid,
        payload,
        timestamp: ts,
        level: level.map(|l| AudioLevel {
            level: l,
            voice: l < 127,
        }),
    })
}

type ConfRef = Arc<Mutex<Conf>>;

/// Locks a conference with the changes the event loop posted applied: whoever holds it next
/// (the clock's tick, the moderation flags, the metrics) sees the members as they are.
fn lock_conf(conf: &ConfRef) -> std::sync::MutexGuard<'_, Conf> {
    let mut guard = lock(conf);
    guard.apply_changes();
    guard
}
/// Every conference by key.
type ConfTable = Mutex<HashMap<ConfKey, ConfRef>>;

/// Where the event loop finds a member.
struct MemberRef {
    key: ConfKey,
    call: CallId,
    user: UserId,
    inbox: Inbox,
    /// Its conference's video thread, when the member is in the video mixer: video packets,
    /// keyframe requests and estimates go there without locking the conference.
    video: Option<VideoWorker>,
}

/// What the event loop knows of a conference without locking it: only the event loop adds
/// and removes members, so it knows what the conference has (or has been sent) without
/// asking the conference, which the clock holds for its whole tick.
struct ConfEntry {
    changes: Changes,
    /// Members joined and not left.
    members: usize,
    /// Codecs whose shared-mix encoder has been sent.
    codecs: Vec<AudioCodec>,
    /// The broadcast's video input, once a broadcast has been sent.
    broadcast: Option<crate::broadcast::VideoSink>,
    /// The video thread, once one has been started.
    video: Option<VideoWorker>,
    /// Whether the video thread was told to feed the broadcast.
    broadcast_canvas: bool,
}

/// The event loop: joins, leaves, SIP and WebRTC events. It owns the conference table; the
/// [`Clock`] thread runs the conferences every 20 ms. Media packets go to the members'
/// inboxes and membership changes to the conference's [`Change`] list, without waiting for a
/// tick: the event loop never locks a conference.
struct Task {
    rt: tokio::runtime::Handle,
    sfu: SfuHandle,
    registry: Arc<ConferenceRegistry>,
    stats: Arc<RuntimeStats>,
    cfg: RuntimeConfig,
    where_is: HashMap<ParticipantId, MemberRef>,
    by_call: HashMap<CallId, ParticipantId>,
    entries: HashMap<ConfKey, ConfEntry>,
    /// The conferences, shared with the clock (which holds it weakly: it stops with the
    /// task); locked only to add or remove a conference, and by the clock once a tick.
    confs: Arc<ConfTable>,
}

/// An encoded payload and its RFC 6464 level.
type Encoded = (Arc<[u8]>, Option<u8>);

/// A mixed talker whose frame this tick is exactly one Opus packet: a listener whose output is
/// exactly that frame can get the packet itself (no decode-mix-encode generation loss, no
/// encoding cost). The usual case: a conversation of two, and each talker of a small
/// conference with two talkers.
struct Lone {
    id: MemberId,
    pcm: Vec<i16>,
    packet: Encoded,
}

/// The packet to forward to `listener` (`None`: the shared mix's listeners), whose output is
/// `pcm`: when exactly one of the `mixed` members other than itself is a [`Lone`] talker and
/// `pcm` is exactly its frame.
fn lone_packet(
    lone: &[Lone],
    mixed: &[MemberId],
    listener: Option<MemberId>,
    pcm: &[i16],
) -> Option<Encoded> {
    let mut others = mixed.iter().filter(|&&id| Some(id) != listener);
    let (Some(one), None) = (others.next(), others.next()) else {
        return None;
    };
    let l = lone.iter().find(|l| l.id == *one)?;
    (l.pcm.as_slice() == pcm).then(|| l.packet.clone())
}

/// One payload to send.
type Write = AudioWrite;

/// The Opus settings of what we send.
fn encoder_config(cfg: &RuntimeConfig) -> OpusEncoderConfig {
    OpusEncoderConfig {
        channels: 1,
        bitrate: cfg.opus_bitrate,
        complexity: cfg.opus_complexity,
        // No DTX: libopus decides DTX by its speech-activity analysis, which takes steady
        // tones and music for inactivity and then drops most frames of a loud mix (the
        // browsers did not ask for DTX either: no `usedtx=1` in their offers).
        dtx: false,
        fec: true,
        packet_loss_percent: 0,
    }
}

impl Task {
    async fn run(mut self, mut events: Events, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some((pid, ev)) => self.on_event(pid, ev),
                    None => {
                        tracing::error!("the WebRTC endpoint stopped; the media runtime stops");
                        return;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Join { call, answer, video_bandwidth, reply }) => {
                        let _ = reply.send(self.join(*call, *answer, video_bandwidth));
                    }
                    Some(Cmd::Reoffer { participant, answer, video_bandwidth }) => {
                        self.reoffered(participant, &answer, video_bandwidth);
                    }
                    Some(Cmd::FastUpdate { participant }) => {
                        self.to_video(participant, VideoCmd::KeyframeRequest(participant));
                    }
                    Some(Cmd::Leave { call }) => {
                        if let Some(pid) = self.by_call.get(&call).copied() {
                            self.remove(pid);
                            // Not awaited here: this loop also carries every member's media
                            // events, which must not wait for the endpoint's round trip.
                            let sfu = self.sfu.clone();
                            tokio::spawn(async move {
                                let _ = sfu.close(pid).await;
                            });
                        }
                    }
                    None => return,
                },
            }
        }
    }

    fn join(
        &mut self,
        call: CallInfo,
        answer: Answer,
        video_bandwidth: Option<u32>,
    ) -> Result<(), MediaError> {
        let failed = |e: &dyn std::fmt::Display| MediaError::Failed(e.to_string());
        let key: ConfKey = (call.dev, call.conference.clone());
        let pid = answer.participant;
        let mixer_cfg = MixerConfig {
            max_talkers: self.cfg.max_talkers,
            ..MixerConfig::default()
        };
        let entry = self.entries.get(&key);
        if entry.is_some_and(|e| e.members >= mixer_cfg.max_members) {
            return Err(MediaError::Failed(format!(
                "the conference has {} members, the most one mixer takes",
                mixer_cfg.max_members
            )));
        }
        let codec = answer
            .audio
            .as_ref()
            .and_then(|a| audio_codec(a.codec))
            .unwrap_or_default();
        // Video: the profile has it and the offer negotiated it.
        let settings = self.cfg.profiles.get(&call.profile).copied().flatten();
        let member_video = settings.zip(answer.video).and_then(|(settings, v)| {
            let codec = match v.codec {
                Codec::H264 => comet_media::VideoCodec::H264,
                Codec::Vp8 => comet_media::VideoCodec::Vp8,
                _ => return None,
            };
            Some((
                settings,
                MemberVideo {
                    number: u32::try_from(call.user).unwrap_or(u32::MAX),
                    sends: v.direction.receives().then_some(codec),
                    receives: v.direction.sends().then_some(codec),
                    max_bitrate: video_bandwidth,
                },
            ))
        });
        // Everything that can fail, before anything changes.
        let sender = if entry.is_none_or(|e| !e.codecs.contains(&codec)) {
            Some(new_sender(codec, encoder_config(&self.cfg)).map_err(|e| failed(&e))?)
        } else {
            None
        };
        let rx = AudioReceiver::new(AudioReceiverConfig {
            codec,
            ..AudioReceiverConfig::default()
        })
        .map_err(|e| failed(&e))?;
        let mixer = match entry {
            Some(_) => None,
            None => Some(AudioMixer::new(mixer_cfg).map_err(|e| failed(&e))?),
        };
        // The first member, or the first whose invitation names an RTMP URL, starts the
        // broadcast.
        let broadcast = match &self.cfg.broadcast {
            Some(plan)
                if entry.is_none_or(|e| {
                    e.broadcast.is_none()
                        && (e.members == 0 || call.invitation.stream.starts_with("rtmp://"))
                }) =>
            {
                plan.start(
                    call.dev,
                    &call.conference,
                    &call.profile,
                    &call.invitation.stream,
                )
            }
            _ => None,
        };
        let worker = match member_video {
            Some((settings, _)) if entry.is_none_or(|e| e.video.is_none()) => {
                match VideoWorker::start(
                    &call.conference,
                    settings,
                    self.sfu.clone(),
                    self.rt.clone(),
                    self.stats.video.clone(),
                ) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::error!("cannot start a video thread: {e}");
                        None
                    }
                }
            }
            _ => None,
        };

        if let Some(mixer) = mixer {
            let changes = Changes::default();
            let conf = Arc::new(Mutex::new(Conf {
                key: key.clone(),
                mixer,
                shared: Vec::new(),
                members: Vec::new(),
                index: HashMap::new(),
                broadcast: None,
                video: None,
                speaker: None,
                delays_sent: None,
                changes: changes.clone(),
                stats: self.stats.clone(),
            }));
            lock(&self.confs).insert(key.clone(), conf);
            self.entries.insert(
                key.clone(),
                ConfEntry {
                    changes,
                    members: 0,
                    codecs: Vec::new(),
                    broadcast: None,
                    video: None,
                    broadcast_canvas: false,
                },
            );
            self.stats.conferences.fetch_add(1, Ordering::Relaxed);
            tracing::info!(dev = call.dev, conference = %call.conference, "conference started");
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return Err(MediaError::Failed("the conference is gone".into()));
        };
        if sender.is_some() {
            entry.codecs.push(codec);
        }
        if let Some(b) = &broadcast {
            entry.broadcast = Some(b.video_sink());
        }
        if let Some(w) = &worker {
            entry.video = Some(w.clone());
        }
        // The video thread hears of the member before any of its packets or events.
        if let (Some((_, mv)), Some(w)) = (member_video, &entry.video) {
            w.send(VideoCmd::Member(pid, mv));
        }
        let video = member_video.is_some() && entry.video.is_some();
        // The broadcast shows the viewer canvas of the video thread (until a member with video
        // joins, the broadcast's own "no video" card).
        if !entry.broadcast_canvas
            && let (Some(w), Some(sink)) = (&entry.video, &entry.broadcast)
        {
            w.send(VideoCmd::Broadcast(sink.clone()));
            entry.broadcast_canvas = true;
        }
        entry.members += 1;
        tracing::info!(
            dev = call.dev, conference = %call.conference, user = call.user,
            participant = %pid, "member joined"
        );
        let inbox = Inbox::default();
        let member_ref = MemberRef {
            key,
            call: call.id,
            user: call.user,
            inbox: inbox.clone(),
            video: entry.video.clone().filter(|_| video),
        };
        lock(&entry.changes).push(Change::Join(Box::new(Joining {
            member: Member {
                pid,
                inbox,
                spare: Vec::new(),
                call,
                // Set when the conference applies the join.
                mixer_id: MemberId(u32::MAX),
                codec,
                rx,
                connected: false,
                out_ts: rand::random(),
                own: None,
                pcm: vec![0; FRAME],
                level: None,
                reported: None,
                video,
            },
            sender: sender.map(|s| (codec, s)),
            broadcast,
            video: worker,
        })));
        self.by_call.insert(member_ref.call, pid);
        self.where_is.insert(pid, member_ref);
        self.stats.participants.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a member; the conference ends with its last member.
    fn remove(&mut self, pid: ParticipantId) -> Option<MemberRef> {
        let r = self.where_is.remove(&pid)?;
        self.by_call.remove(&r.call);
        self.stats.participants.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = &r.video {
            w.send(VideoCmd::Leave(pid));
        }
        if let Some(entry) = self.entries.get_mut(&r.key) {
            lock(&entry.changes).push(Change::Leave(pid));
            entry.members = entry.members.saturating_sub(1);
            if entry.members == 0 {
                self.entries.remove(&r.key);
                lock(&self.confs).remove(&r.key);
                self.stats.conferences.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(dev = r.key.0, conference = %r.key.1, "conference ended");
            }
        }
        tracing::info!(
            dev = r.key.0, conference = %r.key.1, user = r.user,
            participant = %pid, "member left"
        );
        Some(r)
    }

    /// Sends `cmd` to the video thread of `pid`'s conference, if `pid` is in it.
    fn to_video(&self, pid: ParticipantId, cmd: VideoCmd) -> bool {
        match self.where_is.get(&pid).and_then(|r| r.video.as_ref()) {
            Some(w) => {
                w.send(cmd);
                true
            }
            None => false,
        }
    }

    /// A re-INVITE changed what the member negotiated (camera off: it no longer sends video).
    fn reoffered(&mut self, pid: ParticipantId, answer: &Answer, video_bandwidth: Option<u32>) {
        let (Some(r), Some(v)) = (self.where_is.get(&pid), answer.video) else {
            return;
        };
        let user = r.user;
        let codec = match v.codec {
            Codec::H264 => comet_media::VideoCodec::H264,
            Codec::Vp8 => comet_media::VideoCodec::Vp8,
            _ => return,
        };
        let mv = MemberVideo {
            number: u32::try_from(user).unwrap_or(u32::MAX),
            sends: v.direction.receives().then_some(codec),
            receives: v.direction.sends().then_some(codec),
            max_bitrate: video_bandwidth,
        };
        self.to_video(pid, VideoCmd::Member(pid, mv));
    }

    fn on_event(&mut self, pid: ParticipantId, ev: Event) {
        match ev {
            Event::Connected | Event::Reconnected => {
                if let Some(r) = self.where_is.get(&pid)
                    && let Some(entry) = self.entries.get(&r.key)
                {
                    lock(&entry.changes).push(Change::Connected(pid));
                }
                self.to_video(pid, VideoCmd::Connected(pid, true));
            }
            Event::Media(pkt) if pkt.kind == MediaKind::Video => {
                self.stats.video.packets_in.fetch_add(1, Ordering::Relaxed);
                self.to_video(
                    pid,
                    VideoCmd::Packet(
                        pid,
                        RtpPacket {
                            sequence_number: pkt.seq as u16,
                            timestamp: pkt.timestamp,
                            marker: pkt.marker,
                            payload: pkt.payload.to_vec(),
                            audio_level: None,
                            arrival: pkt.arrival,
                        },
                    ),
                );
            }
            Event::KeyframeRequest(_) => {
                self.to_video(pid, VideoCmd::KeyframeRequest(pid));
            }
            Event::BitrateEstimate { bps, .. }
                if self.to_video(pid, VideoCmd::Estimate(pid, bps)) =>
            {
                self.stats.video.estimates.fetch_add(1, Ordering::Relaxed);
            }
            Event::Media(pkt)
                if pkt.kind == MediaKind::Audio && audio_codec(pkt.codec).is_some() =>
            {
                self.stats.rtp_in.fetch_add(1, Ordering::Relaxed);
                if let Some(r) = self.where_is.get(&pid) {
                    lock(&r.inbox).push(RtpPacket {
                        sequence_number: pkt.seq as u16,
                        timestamp: pkt.timestamp,
                        marker: pkt.marker,
                        payload: pkt.payload.to_vec(),
                        audio_level: pkt.audio_level.map(|l| l.level),
                        arrival: pkt.arrival,
                    });
                }
            }
            Event::Closed(reason) => {
                if let Some(r) = self.remove(pid) {
                    // The media is gone: end the call so the browser gets a BYE.
                    let why = match reason {
                        CloseReason::Remote => "the browser closed the media connection",
                        CloseReason::ConnectTimeout => "the media connection never came up",
                        CloseReason::IceTimeout => "the media connection was lost",
                        _ => "the media connection failed",
                    };
                    self.registry.hangup(r.key.0, &r.key.1, Some(r.user), why);
                }
            }
            _ => {}
        }
    }
}

/// A tick that starts this late gives up catching up: the missed periods are skipped
/// (counted in [`RuntimeStats::ticks_skipped`]) instead of sent in a burst.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);

/// What the clock does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Sleep this long, then tick.
    Wait(Duration),
    /// Tick now (late), after skipping this many periods.
    Run { skipped: u32 },
}

/// The clock's schedule: `next` is when the previous tick was due; it becomes when the coming
/// one is. A tick less than [`MAX_CATCH_UP`] late runs at once (the clock catches up); later
/// than that, the periods missed are given up.
fn schedule(next: &mut Instant, now: Instant) -> Step {
    *next += TICK;
    if let Some(wait) = next.checked_duration_since(now) {
        return Step::Wait(wait);
    }
    let behind = now.duration_since(*next);
    if behind <= MAX_CATCH_UP {
        return Step::Run { skipped: 0 };
    }
    let skipped = (behind.as_micros() / TICK.as_micros()) as u32;
    *next += TICK * skipped;
    Step::Run { skipped }
}

/// The mixing clock: a thread that runs every conference every 20 ms (on the thread pool) and
/// hands the output to the endpoint in one batch.
struct Clock {
    confs: std::sync::Weak<ConfTable>,
    sfu: SfuHandle,
    registry: Arc<ConferenceRegistry>,
    stats: Arc<RuntimeStats>,
    /// The encoders' settings, but for the complexity: the governor's.
    enc_cfg: OpusEncoderConfig,
    governor: Governor,
    epoch: Instant,
    /// The registry generation whose moderation flags are applied.
    flags_seen: u64,
}

impl Clock {
    fn run(mut self) {
        let mut next = Instant::now();
        loop {
            let skipped = match schedule(&mut next, Instant::now()) {
                Step::Wait(wait) => {
                    std::thread::sleep(wait);
                    0
                }
                Step::Run { skipped } => skipped,
            };
            if skipped > 0 {
                self.stats
                    .ticks_skipped
                    .fetch_add(u64::from(skipped), Ordering::Relaxed);
                tracing::warn!(
                    skipped,
                    "the conference runtime fell behind; periods skipped"
                );
            }
            let Some(table) = self.confs.upgrade() else {
                return; // the runtime stopped
            };
            let confs: Vec<ConfRef> = lock(&table).values().cloned().collect();
            drop(table);
            let started = Instant::now();
            let writes = self.tick(&confs, started, skipped);
            let busy = started.elapsed().as_secs_f32() / TICK.as_secs_f32();
            if let Some(c) = self.governor.observe(busy, skipped) {
                tracing::info!(
                    complexity = c,
                    load = self.governor.load(),
                    "Opus complexity of the mixes changed with the mixing load"
                );
                self.stats
                    .opus_complexity
                    .store(u64::from(c), Ordering::Relaxed);
            }
            let n = writes.len() as u64;
            if self.sfu.write_audio_batch_blocking(writes).is_ok() {
                self.stats.rtp_out.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Applies the backend's moderation (`UPDATE conference_members`): muted members are not
    /// mixed, deaf members hear silence. Runs only when the registry changed.
    fn apply_flags(&mut self, confs: &[ConfRef]) {
        let generation = self.registry.generation();
        if generation == self.flags_seen {
            return;
        }
        self.flags_seen = generation;
        for conf in confs {
            let mut conf = lock_conf(conf);
            let Some(state) = self.registry.conference_state(conf.key.0, &conf.key.1) else {
                continue;
            };
            let conf = &mut *conf;
            let mut video_flags = Vec::new();
            for m in &conf.members {
                if let Some((_, f)) = state.flags.iter().find(|(u, _)| *u == m.call.user) {
                    let _ = conf.mixer.set_muted(m.mixer_id, !f.audio);
                    let _ = conf.mixer.set_deaf(m.mixer_id, f.deaf);
                    if m.video {
                        video_flags.push((m.pid, f.video, f.video_floor));
                    }
                }
            }
            if let Some(w) = &conf.video {
                let layout = state.layout.as_deref().and_then(layout_kind);
                w.send(VideoCmd::Moderation(layout, video_flags));
            }
        }
    }

    /// One 20 ms period of every conference; returns what to send. Conferences run in
    /// parallel on the thread pool (and the members of a large one too, see [`PAR_MEMBERS`]).
    fn tick(&mut self, confs: &[ConfRef], now: Instant, skipped: u32) -> Vec<Write> {
        self.apply_flags(confs);
        let started = Instant::now();
        let ctx = TickCtx {
            stats: &self.stats,
            now,
            skipped,
            now_ms: now.duration_since(self.epoch).as_millis() as u64,
            enc_cfg: OpusEncoderConfig {
                complexity: self.governor.complexity(),
                ..self.enc_cfg
            },
            registry: &self.registry,
        };
        let writes: Vec<Write> = if confs.len() > 1 {
            confs
                .par_iter()
                .flat_map_iter(|conf| lock_conf(conf).tick(&ctx))
                .collect()
        } else {
            confs
                .iter()
                .flat_map(|conf| lock_conf(conf).tick(&ctx))
                .collect()
        };
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        self.stats
            .mix_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime on a real endpoint on loopback (no peer ever connects), and a call of user 5
    /// to conference 101 of dev 0.
    fn runtime_on_loopback() -> (Arc<MediaRuntime>, CallInfo) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let endpoint = comet_sfu::Endpoint::new(comet_sfu::EndpointConfig {
            candidates: vec![addr],
            ..Default::default()
        })
        .unwrap();
        let (sfu, events, _driver) = comet_sfu::driver::spawn_dedicated(
            socket,
            endpoint,
            comet_sfu::driver::DriverOptions::default(),
        )
        .unwrap();
        let registry = Arc::new(ConferenceRegistry::new());
        let runtime = MediaRuntime::start(sfu, events, registry, RuntimeConfig::default());
        let call = CallInfo {
            id: CallId { conn: 1, n: 1 },
            dev: 0,
            user: 5,
            conference: "101".into(),
            profile: "audio".into(),
            invitation: crate::store::ConferenceRow {
                name: "101".into(),
                user_id: 5,
                caller_id: 5,
                message: String::new(),
                profile: "audio".into(),
                stream: String::new(),
                node: String::new(),
                time: 0,
            },
            sip_call_id: "c1".into(),
            user_agent: None,
            peer: "127.0.0.1:5000".parse().unwrap(),
        };
        (runtime, call)
    }

    const SDP: &str = include_str!("../../sfu/tests/data/chrome_audio_video.sdp");

    fn call_of(call: &CallInfo, n: u32, user: UserId, conference: &str) -> CallInfo {
        CallInfo {
            id: CallId { conn: 1, n },
            user,
            conference: conference.into(),
            ..call.clone()
        }
    }

    /// The event loop never waits for a conference's tick: while the conference is locked (as
    /// the mixing clock holds it for its whole tick, here for as long as the test likes),
    /// members join and leave, and their offers are answered. The conference applies the
    /// changes, in order, as soon as it is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joins_and_leaves_do_not_wait_for_the_conferences_tick() {
        let (runtime, call) = runtime_on_loopback();
        let deadline = Duration::from_secs(20);
        let first = call_of(&call, 1, 6, "101");
        runtime.offer(first.clone(), SDP).await.unwrap();
        let table = runtime.confs.upgrade().unwrap();
        let conf = lock(&table).get(&(0, "101".to_string())).cloned().unwrap();
        drop(table);
        let members = || -> Vec<UserId> {
            let mut users: Vec<UserId> = runtime
                .debug_conferences()
                .iter()
                .flat_map(|c| c.members.iter().map(|m| m.user))
                .collect();
            users.sort();
            users
        };
        // A thread holds the conference, as the clock's does during a tick.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held_tx, held) = oneshot::channel();
        let holder = std::thread::spawn(move || {
            let _tick = lock(&conf);
            let _ = held_tx.send(());
            let _ = released.recv();
        });
        held.await.unwrap();
        {
            // Joins are answered while the conference is held.
            let second = call_of(&call, 2, 7, "101");
            tokio::time::timeout(deadline, runtime.offer(second, SDP))
                .await
                .expect("a join waited for the conference")
                .unwrap();
            // A leave, then a join the event loop handles after it (commands run in order).
            runtime.ended(&first, &EndReason::ConnectionClosed);
            let third = call_of(&call, 3, 8, "101");
            tokio::time::timeout(deadline, runtime.offer(third, SDP))
                .await
                .expect("a join after a leave waited for the conference")
                .unwrap();
            // Another conference is not held up either.
            let elsewhere = call_of(&call, 4, 9, "102");
            tokio::time::timeout(deadline, runtime.offer(elsewhere, SDP))
                .await
                .expect("a join elsewhere waited")
                .unwrap();
        }
        drop(release);
        holder.join().unwrap();
        // Once free, the conference has applied every change in order.
        assert_eq!(members(), [7, 8, 9]);
        // Its last members leave: it ends, counted once.
        for (n, user) in [(2, 7), (3, 8)] {
            runtime.ended(
                &call_of(&call, n, user, "101"),
                &EndReason::ConnectionClosed,
            );
        }
        runtime
            .offer(call_of(&call, 5, 10, "102"), SDP)
            .await
            .unwrap();
        assert_eq!(members(), [9, 10]);
        assert_eq!(runtime.stats.conferences.load(Ordering::Relaxed), 1);
        assert_eq!(runtime.stats.participants.load(Ordering::Relaxed), 2);
    }

    /// A call that ends (CANCEL, connection closed) while its offer is being answered leaves
    /// nothing behind: the offer fails, no member joins, the call is forgotten.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_ended_while_its_offer_is_answered_leaves_nothing() {
        let (runtime, call) = runtime_on_loopback();
        let sdp = SDP;
        // Run the offer up to its first wait (the endpoint answering), then end the call. (The
        // endpoint's thread cannot answer within that one poll in practice; if it ever did,
        // the call is ended and another one tried.)
        let mut ended_in_flight = false;
        for n in 10..15 {
            let call = CallInfo {
                id: CallId { conn: 1, n },
                ..call.clone()
            };
            let offer = runtime.offer(call.clone(), sdp);
            tokio::pin!(offer);
            let at_once = tokio::select! {
                biased;
                _ = &mut offer => true,
                () = std::future::ready(()) => false,
            };
            if at_once {
                runtime.ended(&call, &EndReason::ConnectionClosed);
                continue;
            }
            assert_eq!(runtime.calls().get(&call.id), Some(&CallSlot::Pending));
            runtime.ended(&call, &EndReason::ConnectionClosed);
            assert!(offer.await.is_err(), "an ended call gets no answer");
            ended_in_flight = true;
            break;
        }
        assert!(
            ended_in_flight,
            "every offer finished within its first poll"
        );
        assert!(runtime.calls().is_empty());
        // A call that is not ended meanwhile (another user's) is answered and live; the
        // runtime handles commands in order, so by now any member of the first call would be
        // there too.
        let call2 = CallInfo {
            id: CallId { conn: 1, n: 2 },
            user: 6,
            ..call.clone()
        };
        runtime.offer(call2.clone(), sdp).await.unwrap();
        assert!(matches!(
            runtime.calls().get(&call2.id),
            Some(CallSlot::Live(_))
        ));
        let members: Vec<UserId> = runtime
            .debug_conferences()
            .iter()
            .flat_map(|c| c.members.iter().map(|m| m.user))
            .collect();
        assert_eq!(members, [6], "only the live call's member");
        runtime.ended(&call2, &EndReason::ConnectionClosed);
        assert!(runtime.calls().is_empty());
    }

    #[test]
    fn the_clock_ticks_every_20_ms_catches_up_a_little_and_skips_a_lot() {
        let t0 = Instant::now();
        let mut next = t0;
        // On time: wait for the next period.
        assert_eq!(
            schedule(&mut next, t0 + Duration::from_millis(5)),
            Step::Wait(Duration::from_millis(15))
        );
        assert_eq!(next, t0 + TICK);
        // 50 ms late: run at once, twice, without skipping (catch up).
        let late = t0 + Duration::from_millis(90);
        assert_eq!(schedule(&mut next, late), Step::Run { skipped: 0 });
        assert_eq!(schedule(&mut next, late), Step::Run { skipped: 0 });
        assert_eq!(next, t0 + 3 * TICK);
        // A second late (a stall): skip the missed periods; the next tick is on the grid again.
        let stalled = t0 + 3 * TICK + Duration::from_millis(1010);
        let Step::Run { skipped } = schedule(&mut next, stalled) else {
            panic!("a late tick must run");
        };
        assert_eq!(skipped, 49);
        assert_eq!(next, t0 + 53 * TICK);
        assert!(next <= stalled && stalled - next < TICK);
        assert_eq!(
            schedule(&mut next, stalled),
            Step::Wait(t0 + 54 * TICK - stalled)
        );
    }
}
