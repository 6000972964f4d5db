//! The video MCU of one conference, sans-IO: RTP packets, keyframe requests, bitrate estimates,
//! the active speaker and the moderation flags in; RTP payloads per subscriber and keyframe
//! requests per sender out. No clock, no thread, no socket: `now` is an argument (the worker in
//! `video_worker.rs` runs it on a thread at the canvas frame rate).
//!
//! Per frame ([`VideoMixer::tick`]):
//!
//! 1. [`plan_canvases`] (`comet-mixer`) turns the members (join order), the active speaker, the
//!    previous speaker, the pinned member (`video_floor`) and the layout into the distinct
//!    canvases and which subscriber sees which: nobody sees itself in the big tile, so an
//!    active-speaker conference has at most two canvases whatever its size.
//! 2. Only members some canvas shows are decoded: a member that appears gets a fresh
//!    [`VideoReceiver`] and a keyframe request; one that disappears loses its decoder (its
//!    packets are dropped and counted).
//! 3. Each canvas is matched, per codec its subscribers receive (H.264 or VP8), to an encoder
//!    of that codec (the one whose subscribers overlap most, so a speaker change keeps most
//!    subscribers on the same stream); a subscriber that moves to another encoder, or joins,
//!    gets nothing from it until that encoder's next keyframe, which is forced at once.
//! 4. A canvas is composed ([`Compositor`]) and encoded once per codec (OpenH264 or libvpx),
//!    when one of its tiles has a new picture (or its layout changed, a keyframe is due, or a
//!    second passed), and the same payloads go to every subscriber of that (canvas, codec),
//!    each on its own RTP timeline.
//!
//! Keyframes: a receiver that starts or loses packets asks for one ([`VideoEvent::NeedKeyframe`],
//! throttled to one per 500 ms and repeated until a keyframe decodes): the first two requests
//! are PLIs, later ones FIRs. Subscribers' PLI/FIR force a keyframe of their encoder, at most
//! one per [`KEYFRAME_MIN_INTERVAL`] unless a subscriber is waiting for one.
//!
//! Bitrate: each encoder runs at the lowest limit among its subscribers: the `b=AS` of their
//! offer and their latest REMB/TWCC estimate, within `[MIN_BITRATE, max_bitrate]`.
//!
//! Lip sync: a member's decoded pictures wait as long as its audio waits in its jitter buffer
//! ([`VideoMixer::set_audio_delay`], at most [`MAX_SYNC_DELAY`]) before the canvas shows them,
//! so its face and its voice leave the mixer together.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_media::{
    H264EncoderConfig, I420Frame, RtpPacket, VideoCodec, VideoEvent, VideoReceiver,
    VideoReceiverConfig, VideoSender, VideoSenderConfig,
};
use comet_mixer::{
    CanvasDesc, CanvasPlan, Compositor, I420Image, I420View, LayoutConfig, LayoutKind, SceneInput,
    TileContent, VideoMember, plan_canvases, viewer_canvas,
};
use comet_sfu::{KeyframeKind, ParticipantId};

/// Lowest encoder bitrate we go down to, whatever the estimates say.
pub const MIN_BITRATE: u32 = 64_000;
/// Forced keyframes of one encoder are at least this far apart (unless a subscriber waits).
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(300);
/// A canvas whose tiles did not change is still encoded this often.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// An encoder nobody watches is kept this long (a speaker who comes back reuses it).
pub const IDLE_ENCODER_TTL: Duration = Duration::from_secs(5);
/// Most a member's video is held back to match its audio.
pub const MAX_SYNC_DELAY: Duration = Duration::from_millis(300);
/// Pictures waiting for their time on the canvas, per member.
const MAX_PENDING: usize = 12;
/// PLIs sent before escalating to FIR.
const PLIS_BEFORE_FIR: u32 = 2;

/// Canvas settings of a conference (from its profile).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoSettings {
    pub layout: LayoutKind,
    /// Canvas size (even).
    pub width: u32,
    pub height: u32,
    /// Canvas frames per second.
    pub fps: u32,
    /// Upper bound of each canvas encoding, bit/s.
    pub max_bitrate: u32,
    /// Bitrate of a subscriber that stated no `b=AS` and sent no estimate yet, bit/s.
    pub start_bitrate: u32,
    /// Most thumbnails in the active-speaker strip.
    pub max_thumbnails: usize,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            layout: LayoutKind::ActiveSpeaker,
            width: 640,
            height: 360,
            fps: 30,
            max_bitrate: 1_500_000,
            start_bitrate: 600_000,
            max_thumbnails: 6,
        }
    }
}

/// Parses a layout name of `comet.ini` / `UPDATE conference_members SET layout`.
pub fn layout_kind(name: &str) -> Option<LayoutKind> {
    match name {
        "active-speaker" => Some(LayoutKind::ActiveSpeaker),
        "grid" => Some(LayoutKind::Grid),
        "presenter" => Some(LayoutKind::Presenter),
        _ => None,
    }
}

/// What one member negotiated for video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberVideo {
    /// Drawn on its no-video tile (the user id).
    pub number: u32,
    /// The codec it sends us, if it sends video at all.
    pub sends: Option<VideoCodec>,
    /// The codec we send it the canvas in (negotiated in our sending direction), if any.
    pub receives: Option<VideoCodec>,
    /// The `b=AS` of its offer's video section, bit/s.
    pub max_bitrate: Option<u32>,
}

/// What the mixer wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoOutput {
    /// Send one RTP payload of the canvas to a subscriber.
    Rtp {
        to: ParticipantId,
        payload: Arc<[u8]>,
        timestamp: u32,
        marker: bool,
    },
    /// Ask a member for a keyframe of the video it sends.
    RequestKeyframe {
        from: ParticipantId,
        kind: KeyframeKind,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoStats {
    /// Pictures decoded.
    pub decoded: u64,
    /// Video packets of members no canvas shows (not decoded).
    pub dropped_hidden: u64,
    /// Canvases composed.
    pub composed: u64,
    /// Canvases encoded (non-empty output).
    pub encoded: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Of which forced: asked for by a subscriber (PLI, FIR, SIP INFO) or for one waiting
    /// for its first picture, rather than the encoder's periodic ones.
    pub forced_keyframes: u64,
    /// Keyframe requests sent to members (PLI, FIR).
    pub plis: u64,
    pub firs: u64,
    /// Payloads handed out (summed over subscribers).
    pub payloads_out: u64,
    /// Encoders alive (a gauge).
    pub encoders: u64,
    /// Decoders alive (a gauge).
    pub decoders: u64,
    /// Subscribers (a gauge).
    pub subscribers: u64,
}

struct Member {
    pid: ParticipantId,
    /// Key in the canvas plan.
    id: u32,
    video: MemberVideo,
    connected: bool,
    /// Moderation: seen by the others.
    video_on: bool,
    /// Moderation: pinned to the big tile.
    floor: bool,
    rx: Option<VideoReceiver>,
    /// Decoded pictures waiting for the member's audio delay, with their decode time.
    pending: VecDeque<(Instant, I420Frame)>,
    /// The picture its tiles show.
    frame: Option<I420Frame>,
    /// Bumped whenever `frame` changes.
    frame_seq: u64,
    /// How long its audio waits in the jitter buffer.
    audio_delay: Duration,
    /// Keyframe requests since its last decoded picture.
    unanswered: u32,
    /// Latest REMB/TWCC estimate for what we send it, bit/s.
    estimate: Option<u32>,
    /// Its RTP timestamp at the mixer's epoch.
    ts_base: u32,
    /// The encoder (slot) whose stream it receives.
    encoder: Option<u64>,
    /// It gets nothing until its encoder's next keyframe.
    waiting_key: bool,
}

impl Member {
    /// Its video may appear on a canvas.
    fn visible(&self) -> bool {
        self.video_on && self.video.sends.is_some()
    }

    fn subscribed(&self) -> bool {
        self.connected && self.video.receives.is_some()
    }

    /// The bitrate it can take.
    fn limit(&self, settings: &VideoSettings) -> u32 {
        let cap = self.video.max_bitrate.unwrap_or(settings.max_bitrate);
        self.estimate
            .unwrap_or(settings.start_bitrate)
            .min(cap)
            .min(settings.max_bitrate)
            .max(MIN_BITRATE)
    }
}

struct Encoder {
    slot: u64,
    /// What it encodes to (its subscribers all receive this codec).
    codec: VideoCodec,
    sender: VideoSender,
    image: I420Image,
    frame: I420Frame,
    /// The canvas it draws now (`None`: idle).
    desc: Option<CanvasDesc>,
    subscribers: Vec<u32>,
    /// (member id, frame_seq) of the video tiles of the last composition.
    composed: Vec<(u32, u64)>,
    composed_desc: Option<CanvasDesc>,
    last_encode: Option<Instant>,
    last_key: Option<Instant>,
    key_wanted: bool,
    bitrate: u32,
    idle_since: Option<Instant>,
}

/// The video MCU of one conference. See the module documentation.
pub struct VideoMixer {
    settings: VideoSettings,
    layout: LayoutKind,
    epoch: Instant,
    members: Vec<Member>,
    next_id: u32,
    encoders: Vec<Encoder>,
    next_slot: u64,
    compositor: Compositor,
    plan: CanvasPlan,
    scene: Vec<VideoMember>,
    speaker: Option<ParticipantId>,
    previous_speaker: Option<ParticipantId>,
    out: Vec<VideoOutput>,
    stats: VideoStats,
    /// The canvas a viewer who is not a member sees (the broadcast), when enabled.
    viewer: Option<Viewer>,
}

/// The broadcast canvas: the speaker big, every member as a thumbnail (`viewer_canvas`).
struct Viewer {
    /// This tick's canvas description.
    desc: Option<CanvasDesc>,
    image: I420Image,
    composed_desc: Option<CanvasDesc>,
    composed: Vec<(u32, u64)>,
    /// A newly composed canvas not yet taken.
    ready: Option<I420Frame>,
}

impl std::fmt::Debug for VideoMixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoMixer")
            .field("settings", &self.settings)
            .field("members", &self.members.len())
            .field("encoders", &self.encoders.len())
            .finish()
    }
}

fn view(f: &I420Frame) -> Option<I420View<'_>> {
    if f.stride_u != f.stride_v {
        return None;
    }
    I420View::new(f.width, f.height, &f.y, f.stride_y, &f.u, &f.v, f.stride_u).ok()
}

/// 90 kHz ticks of `d`.
fn rtp90(d: Duration) -> u32 {
    (d.as_micros() * 9 / 100) as u32
}

impl VideoMixer {
    pub fn new(settings: VideoSettings, now: Instant) -> VideoMixer {
        let mut settings = settings;
        settings.width = (settings.width & !1).clamp(64, 4096);
        settings.height = (settings.height & !1).clamp(64, 4096);
        settings.fps = settings.fps.clamp(1, 60);
        settings.max_bitrate = settings.max_bitrate.max(MIN_BITRATE);
        VideoMixer {
            layout: settings.layout,
            settings,
            epoch: now,
            members: Vec::new(),
            next_id: 1,
            encoders: Vec::new(),
            next_slot: 1,
            compositor: Compositor::default(),
            plan: CanvasPlan::default(),
            scene: Vec::new(),
            speaker: None,
            previous_speaker: None,
            out: Vec::new(),
            stats: VideoStats::default(),
            viewer: None,
        }
    }

    /// Composes, every tick where it changes, the canvas a viewer who is not a member sees
    /// (the broadcast and the recording): see [`VideoMixer::take_viewer_canvas`].
    pub fn set_viewer_canvas(&mut self, on: bool) {
        if !on {
            self.viewer = None;
        } else if self.viewer.is_none() {
            match I420Image::new(self.settings.width, self.settings.height) {
                Ok(image) => {
                    self.viewer = Some(Viewer {
                        desc: None,
                        image,
                        composed_desc: None,
                        composed: Vec::new(),
                        ready: None,
                    })
                }
                Err(e) => tracing::warn!("video: no broadcast canvas: {e}"),
            }
        }
    }

    /// The viewer canvas composed since the last call, if it changed.
    pub fn take_viewer_canvas(&mut self) -> Option<I420Frame> {
        self.viewer.as_mut().and_then(|v| v.ready.take())
    }

    pub fn settings(&self) -> &VideoSettings {
        &self.settings
    }

    /// The time between two canvas frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_micros(1_000_000 / u64::from(self.settings.fps))
    }

    pub fn stats(&self) -> VideoStats {
        VideoStats {
            encoders: self.encoders.len() as u64,
            decoders: self.members.iter().filter(|m| m.rx.is_some()).count() as u64,
            subscribers: self.members.iter().filter(|m| m.subscribed()).count() as u64,
            ..self.stats
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The canvases of the last tick and which subscriber sees which (by participant).
    pub fn canvases(&self) -> Vec<(Option<ParticipantId>, Vec<ParticipantId>)> {
        self.plan
            .canvases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let big = c.big.and_then(|b| self.pid_of(b));
                let subs = self
                    .plan
                    .assignment
                    .iter()
                    .filter(|(_, ci)| *ci == i)
                    .filter_map(|(s, _)| self.pid_of(*s))
                    .collect();
                (big, subs)
            })
            .collect()
    }

    /// The bitrate each live encoder runs at, by the member in its big tile.
    pub fn encoder_bitrates(&self) -> Vec<(Option<ParticipantId>, u32)> {
        self.encoders
            .iter()
            .filter(|e| !e.subscribers.is_empty())
            .map(|e| {
                (
                    e.desc
                        .as_ref()
                        .and_then(|d| d.big)
                        .and_then(|b| self.pid_of(b)),
                    e.bitrate,
                )
            })
            .collect()
    }

    fn pid_of(&self, id: u32) -> Option<ParticipantId> {
        self.members.iter().find(|m| m.id == id).map(|m| m.pid)
    }

    fn member_mut(&mut self, pid: ParticipantId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.pid == pid)
    }

    /// What to do now: RTP to send, keyframes to request.
    pub fn take_outputs(&mut self) -> Vec<VideoOutput> {
        std::mem::take(&mut self.out)
    }

    /// A member joins (or re-negotiates: the same participant again updates its media).
    pub fn add_member(&mut self, pid: ParticipantId, video: MemberVideo) {
        if let Some(m) = self.member_mut(pid) {
            let codec_changed = m.video.sends != video.sends;
            m.video = video;
            if codec_changed {
                m.rx = None;
                m.pending.clear();
            }
            return;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.members.push(Member {
            pid,
            id,
            video,
            connected: false,
            video_on: true,
            floor: false,
            rx: None,
            pending: VecDeque::new(),
            frame: None,
            frame_seq: 0,
            audio_delay: Duration::ZERO,
            unanswered: 0,
            estimate: None,
            ts_base: rand::random(),
            encoder: None,
            waiting_key: false,
        });
    }

    /// A member leaves.
    pub fn remove_member(&mut self, pid: ParticipantId) {
        let Some(i) = self.members.iter().position(|m| m.pid == pid) else {
            return;
        };
        let m = self.members.remove(i);
        for e in &mut self.encoders {
            e.subscribers.retain(|s| *s != m.id);
        }
        if self.speaker == Some(pid) {
            self.speaker = None;
        }
        if self.previous_speaker == Some(pid) {
            self.previous_speaker = None;
        }
    }

    /// A member's WebRTC connection is up (or back): it may receive the canvas.
    pub fn set_connected(&mut self, pid: ParticipantId, connected: bool) {
        if let Some(m) = self.member_mut(pid) {
            m.connected = connected;
            if !connected {
                m.encoder = None;
            }
        }
    }

    /// The backend's moderation: `video = 0` shows the member's no-video tile, `video_floor`
    /// pins it to the big tile; `layout` overrides the profile's (`None`: the profile's).
    pub fn set_moderation(
        &mut self,
        layout: Option<LayoutKind>,
        flags: &[(ParticipantId, bool, bool)],
    ) {
        self.layout = layout.unwrap_or(self.settings.layout);
        for &(pid, video_on, floor) in flags {
            if let Some(m) = self.member_mut(pid) {
                m.video_on = video_on;
                m.floor = floor;
            }
        }
    }

    /// The dominant speaker of the audio mixer.
    pub fn set_speaker(&mut self, pid: Option<ParticipantId>) {
        if pid == self.speaker {
            return;
        }
        if self.speaker.is_some() {
            self.previous_speaker = self.speaker;
        }
        self.speaker = pid;
    }

    /// How long the member's audio currently waits in its jitter buffer.
    pub fn set_audio_delay(&mut self, pid: ParticipantId, delay: Duration) {
        if let Some(m) = self.member_mut(pid) {
            m.audio_delay = delay.min(MAX_SYNC_DELAY);
        }
    }

    /// An estimate of the bitrate we may send to the member (REMB or TWCC).
    pub fn set_estimate(&mut self, pid: ParticipantId, bps: u64) {
        if let Some(m) = self.member_mut(pid) {
            m.estimate = Some(bps.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// The member asks for a keyframe of what we send it (PLI or FIR).
    pub fn keyframe_requested(&mut self, pid: ParticipantId) {
        let Some(slot) = self
            .members
            .iter()
            .find(|m| m.pid == pid)
            .and_then(|m| m.encoder)
        else {
            return;
        };
        if let Some(e) = self.encoders.iter_mut().find(|e| e.slot == slot) {
            e.key_wanted = true;
        }
    }

    /// An RTP packet of a member's video.
    pub fn push_packet(&mut self, pid: ParticipantId, packet: RtpPacket, now: Instant) {
        let Some(i) = self.members.iter().position(|m| m.pid == pid) else {
            return;
        };
        let m = &mut self.members[i];
        let Some(rx) = m.rx.as_mut() else {
            self.stats.dropped_hidden += 1;
            return;
        };
        let events = rx.push(packet, now);
        Self::on_events(m, events, now, &mut self.out, &mut self.stats);
    }

    fn on_events(
        m: &mut Member,
        events: Vec<VideoEvent>,
        now: Instant,
        out: &mut Vec<VideoOutput>,
        stats: &mut VideoStats,
    ) {
        for e in events {
            match e {
                VideoEvent::Frame { frame, .. } => {
                    stats.decoded += 1;
                    m.unanswered = 0;
                    m.pending.push_back((now, frame));
                    if m.pending.len() > MAX_PENDING
                        && let Some((_, f)) = m.pending.pop_front()
                    {
                        m.frame = Some(f);
                        m.frame_seq += 1;
                    }
                }
                VideoEvent::NeedKeyframe => {
                    if !m.connected {
                        continue;
                    }
                    m.unanswered += 1;
                    let kind = if m.unanswered <= PLIS_BEFORE_FIR {
                        stats.plis += 1;
                        KeyframeKind::Pli
                    } else {
                        stats.firs += 1;
                        KeyframeKind::Fir
                    };
                    out.push(VideoOutput::RequestKeyframe { from: m.pid, kind });
                }
            }
        }
    }

    /// One canvas frame: plan, decode bookkeeping, compose and encode what changed. Outputs
    /// are collected for [`VideoMixer::take_outputs`].
    pub fn tick(&mut self, now: Instant) {
        // 0. Pictures whose time has come.
        for m in &mut self.members {
            while let Some((at, _)) = m.pending.front() {
                if now.saturating_duration_since(*at) < m.audio_delay {
                    break;
                }
                if let Some((_, f)) = m.pending.pop_front() {
                    m.frame = Some(f);
                    m.frame_seq += 1;
                }
            }
        }

        // 1. Plan.
        self.scene.clear();
        self.scene.extend(self.members.iter().map(|m| VideoMember {
            id: m.id,
            number: m.video.number,
            has_video: m.visible() && m.frame.is_some(),
            video_off: !m.visible(),
            subscribed: m.subscribed(),
        }));
        let id_of = |pid: Option<ParticipantId>| {
            pid.and_then(|p| self.members.iter().find(|m| m.pid == p))
                .map(|m| m.id)
        };
        let mut layout = LayoutConfig::new(self.layout, self.settings.width, self.settings.height);
        layout.max_thumbnails = self.settings.max_thumbnails;
        let input = SceneInput {
            members: &self.scene,
            active_speaker: id_of(self.speaker),
            previous_speaker: id_of(self.previous_speaker),
            floor: self.members.iter().find(|m| m.floor).map(|m| m.id),
            layout,
        };
        if let Err(e) = plan_canvases(&input, &mut self.plan) {
            tracing::warn!("video: cannot plan the canvases: {e}");
            self.plan.canvases.clear();
            self.plan.assignment.clear();
        }
        if let Some(v) = self.viewer.as_mut() {
            v.desc = viewer_canvas(&input).ok();
        }

        // 2. Decoders for what is shown, none for the rest.
        for m in &mut self.members {
            let shown = m.visible()
                && self
                    .plan
                    .canvases
                    .iter()
                    .chain(self.viewer.as_ref().and_then(|v| v.desc.as_ref()))
                    .any(|c| c.tiles.iter().any(|t| t.member == m.id));
            match (shown, m.rx.is_some()) {
                (true, false) => {
                    let Some(codec) = m.video.sends else { continue };
                    match VideoReceiver::new(VideoReceiverConfig::new(codec)) {
                        Ok(mut rx) => {
                            rx.request_keyframe();
                            m.rx = Some(rx);
                        }
                        Err(e) => tracing::warn!(participant = %m.pid, "video decoder: {e}"),
                    }
                }
                (false, true) => {
                    m.rx = None;
                    m.pending.clear();
                }
                _ => {}
            }
            if let Some(rx) = m.rx.as_mut() {
                let events = rx.poll(now);
                Self::on_events(m, events, now, &mut self.out, &mut self.stats);
            }
        }

        // 3. Canvases to encoders.
        self.assign_encoders(now);

        // 4. Compose and encode.
        self.compose_viewer();
        let Self {
            members,
            encoders,
            compositor,
            plan,
            out,
            stats,
            settings,
            epoch,
            ..
        } = self;
        for e in encoders.iter_mut() {
            let Some(desc) = e.desc.as_ref() else {
                continue;
            };
            if e.subscribers.is_empty() {
                continue;
            }
            // Bitrate: the weakest subscriber's.
            let want = e
                .subscribers
                .iter()
                .filter_map(|s| members.iter().find(|m| m.id == *s))
                .map(|m| m.limit(settings))
                .min()
                .unwrap_or(settings.start_bitrate);
            // OpenH264 changes its bitrate on the fly: follow changes of 5%. libvpx is
            // reopened (a keyframe): only for changes of a quarter.
            let step = match e.codec {
                VideoCodec::H264 => 20,
                VideoCodec::Vp8 => 4,
            };
            if want.abs_diff(e.bitrate) * step > e.bitrate {
                if let Err(err) = e.sender.set_bitrate(want) {
                    tracing::warn!("video encoder bitrate: {err}");
                }
                e.bitrate = want;
            }
            let waiting = e
                .subscribers
                .iter()
                .any(|s| members.iter().any(|m| m.id == *s && m.waiting_key));
            let force_key = e.key_wanted
                && (waiting
                    || e.last_key
                        .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_MIN_INTERVAL));
            let tiles: Vec<(u32, u64)> = desc
                .tiles
                .iter()
                .filter(|t| t.content == TileContent::Video)
                .filter_map(|t| members.iter().find(|m| m.id == t.member))
                .map(|m| (m.id, m.frame_seq))
                .collect();
            let changed = e.composed_desc.as_ref() != Some(desc) || e.composed != tiles;
            let stale = e
                .last_encode
                .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH_INTERVAL);
            if !(changed || force_key || stale) {
                continue;
            }
            let source = |id: u32| {
                members
                    .iter()
                    .find(|m| m.id == id)
                    .and_then(|m| m.frame.as_ref())
                    .and_then(view)
            };
            if let Err(err) = compositor.compose(desc, source, &mut e.image) {
                tracing::warn!("video: cannot compose a canvas: {err}");
                continue;
            }
            stats.composed += 1;
            e.composed = tiles;
            e.composed_desc = Some(desc.clone());
            {
                let (y, u, v) = e.image.planes();
                e.frame.y.copy_from_slice(y);
                e.frame.u.copy_from_slice(u);
                e.frame.v.copy_from_slice(v);
            }
            if force_key {
                e.sender.request_keyframe();
            }
            let payloads = match e.sender.encode_at(&e.frame, 0) {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!("video: cannot encode a canvas: {err}");
                    continue;
                }
            };
            e.last_encode = Some(now);
            if payloads.is_empty() {
                continue; // rate control skipped the picture
            }
            let keyframe = payloads.iter().any(|p| p.keyframe);
            stats.encoded += 1;
            if keyframe {
                stats.keyframes += 1;
                stats.forced_keyframes += u64::from(force_key);
                e.last_key = Some(now);
                e.key_wanted = false;
            }
            let shared: Vec<(Arc<[u8]>, bool)> = payloads
                .into_iter()
                .map(|p| (Arc::<[u8]>::from(p.payload), p.marker))
                .collect();
            let ticks = rtp90(now.saturating_duration_since(*epoch));
            for s in &e.subscribers {
                let Some(m) = members.iter_mut().find(|m| m.id == *s) else {
                    continue;
                };
                if m.waiting_key {
                    if !keyframe {
                        continue;
                    }
                    m.waiting_key = false;
                }
                let ts = m.ts_base.wrapping_add(ticks);
                for (payload, marker) in &shared {
                    out.push(VideoOutput::Rtp {
                        to: m.pid,
                        payload: payload.clone(),
                        timestamp: ts,
                        marker: *marker,
                    });
                    stats.payloads_out += 1;
                }
            }
        }
        let _ = plan;
    }

    /// Composes the viewer canvas when its layout or one of its pictures changed.
    fn compose_viewer(&mut self) {
        let Some(v) = self.viewer.as_mut() else {
            return;
        };
        let Some(desc) = v.desc.as_ref() else {
            return;
        };
        let members = &self.members;
        let tiles: Vec<(u32, u64)> = desc
            .tiles
            .iter()
            .filter(|t| t.content == TileContent::Video)
            .filter_map(|t| members.iter().find(|m| m.id == t.member))
            .map(|m| (m.id, m.frame_seq))
            .collect();
        if v.composed_desc.as_ref() == Some(desc) && v.composed == tiles {
            return;
        }
        let source = |id: u32| {
            members
                .iter()
                .find(|m| m.id == id)
                .and_then(|m| m.frame.as_ref())
                .and_then(view)
        };
        if let Err(err) = self.compositor.compose(desc, source, &mut v.image) {
            tracing::warn!("video: cannot compose the broadcast canvas: {err}");
            return;
        }
        v.composed = tiles;
        v.composed_desc = Some(desc.clone());
        let (y, u, vv) = v.image.planes();
        let (w, h) = (self.settings.width, self.settings.height);
        let mut frame = I420Frame::black(w, h);
        frame.y.copy_from_slice(y);
        frame.u.copy_from_slice(u);
        frame.v.copy_from_slice(vv);
        v.ready = Some(frame);
    }

    /// Matches this tick's (canvas, codec) streams to encoders of that codec, greedily by
    /// subscriber overlap; moves subscribers; makes and drops encoders.
    fn assign_encoders(&mut self, now: Instant) {
        // One stream per canvas and codec its subscribers receive.
        let mut streams: Vec<(usize, VideoCodec, Vec<u32>)> = Vec::new();
        for ci in 0..self.plan.canvases.len() {
            for codec in [VideoCodec::H264, VideoCodec::Vp8] {
                let set: Vec<u32> = self
                    .plan
                    .assignment
                    .iter()
                    .filter(|(s, c)| {
                        *c == ci
                            && self
                                .members
                                .iter()
                                .any(|m| m.id == *s && m.video.receives == Some(codec))
                    })
                    .map(|(s, _)| *s)
                    .collect();
                if !set.is_empty() {
                    streams.push((ci, codec, set));
                }
            }
        }
        let n = streams.len();
        let mut pairs: Vec<(usize, usize, usize)> = Vec::new(); // (overlap, stream, encoder)
        for (si, (_, codec, set)) in streams.iter().enumerate() {
            for (ei, e) in self.encoders.iter().enumerate() {
                if e.codec != *codec {
                    continue;
                }
                let overlap = set.iter().filter(|s| e.subscribers.contains(s)).count();
                if overlap > 0 {
                    pairs.push((overlap, si, ei));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut stream_enc: Vec<Option<usize>> = vec![None; n];
        let mut used = vec![false; self.encoders.len()];
        for (_, si, ei) in pairs {
            if stream_enc[si].is_none() && !used[ei] {
                stream_enc[si] = Some(ei);
                used[ei] = true;
            }
        }
        for si in 0..n {
            if stream_enc[si].is_some() {
                continue;
            }
            // An unused encoder of the codec (the idle one that drew this canvas last, if
            // any), or a new one.
            let (ci, codec) = (streams[si].0, streams[si].1);
            let big = self.plan.canvases[ci].big;
            let reuse = (0..self.encoders.len())
                .filter(|ei| !used[*ei] && self.encoders[*ei].codec == codec)
                .max_by_key(|ei| {
                    let e = &self.encoders[*ei];
                    (
                        e.desc.as_ref().is_some_and(|d| d.big == big),
                        e.idle_since.is_some(),
                    )
                });
            let ei = match reuse {
                Some(ei) => ei,
                None => match self.new_encoder(codec) {
                    Some(e) => {
                        self.encoders.push(e);
                        used.push(false);
                        self.encoders.len() - 1
                    }
                    None => continue,
                },
            };
            stream_enc[si] = Some(ei);
            used[ei] = true;
        }
        for (ei, e) in self.encoders.iter_mut().enumerate() {
            match stream_enc.iter().position(|x| *x == Some(ei)) {
                Some(si) => {
                    e.desc = Some(self.plan.canvases[streams[si].0].clone());
                    e.subscribers.clone_from(&streams[si].2);
                    e.idle_since = None;
                }
                None => {
                    e.subscribers.clear();
                    e.idle_since.get_or_insert(now);
                }
            }
        }
        // Subscribers that changed stream wait for a keyframe of their new one.
        for m in &mut self.members {
            let slot = self
                .encoders
                .iter()
                .find(|e| e.subscribers.contains(&m.id))
                .map(|e| e.slot);
            if slot != m.encoder {
                m.encoder = slot;
                m.waiting_key = slot.is_some();
                if let Some(e) = self.encoders.iter_mut().find(|e| Some(e.slot) == slot) {
                    e.key_wanted = true;
                }
            }
        }
        self.encoders.retain(|e| {
            e.idle_since
                .is_none_or(|t| now.saturating_duration_since(t) < IDLE_ENCODER_TTL)
        });
    }

    fn new_encoder(&mut self, codec: VideoCodec) -> Option<Encoder> {
        let s = &self.settings;
        let sender = VideoSender::new(VideoSenderConfig {
            codec,
            encoder: H264EncoderConfig {
                bitrate: s.start_bitrate.min(s.max_bitrate),
                fps: s.fps as f32,
                // A keyframe at least every 10 s even if nobody asks (late joiners of other
                // kinds, lost requests).
                keyframe_interval: s.fps * 10,
                threads: 1,
            },
            mtu: 1200,
            initial_timestamp: 0,
        });
        let sender = match sender {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("video: cannot create a {codec:?} encoder: {e}");
                return None;
            }
        };
        let image = I420Image::new(s.width, s.height).ok()?;
        let frame = I420Frame::black(s.width, s.height);
        let slot = self.next_slot;
        self.next_slot += 1;
        Some(Encoder {
            slot,
            codec,
            sender,
            image,
            frame,
            desc: None,
            subscribers: Vec::new(),
            composed: Vec::new(),
            composed_desc: None,
            last_encode: None,
            last_key: None,
            key_wanted: true,
            bitrate: s.start_bitrate.min(s.max_bitrate),
            idle_since: None,
        })
    }
}

/// The `b=AS` (kbit/s) or `b=TIAS` (bit/s) of the first video section of an SDP offer, in
/// bit/s: the bandwidth the offerer wants to receive there. cometVideoApi.js writes
/// `b=AS:256`.
pub fn offered_video_bandwidth(sdp: &str) -> Option<u32> {
    let mut in_video = false;
    let mut seen_video = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if seen_video {
                break;
            }
            in_video = m.starts_with("video ");
            seen_video = in_video;
            continue;
        }
        if !in_video {
            continue;
        }
        if let Some(v) = line.strip_prefix("b=AS:") {
            return v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|k| *k > 0)
                .map(|k| k.saturating_mul(1000));
        }
        if let Some(v) = line.strip_prefix("b=TIAS:") {
            return v.trim().parse::<u32>().ok().filter(|b| *b > 0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: u32 = 30;

    fn interval() -> Duration {
        Duration::from_micros(1_000_000 / u64::from(FPS))
    }

    /// A small camera: H.264 pictures of one colour, as RTP packets.
    struct Camera {
        sender: VideoSender,
        seq: u16,
        colour: (u8, u8, u8),
        frames: u32,
    }

    impl Camera {
        fn new(colour: (u8, u8, u8)) -> Camera {
            let sender = VideoSender::new(VideoSenderConfig {
                codec: VideoCodec::H264,
                encoder: H264EncoderConfig {
                    bitrate: 200_000,
                    fps: FPS as f32,
                    keyframe_interval: 1000,
                    threads: 1,
                },
                mtu: 1200,
                initial_timestamp: 0,
            })
            .unwrap();
            Camera {
                sender,
                seq: 0,
                colour,
                frames: 0,
            }
        }

        fn packets(&mut self, now: Instant) -> Vec<RtpPacket> {
            let (y, u, v) = self.colour;
            let mut f = I420Frame::filled(160, 90, y, u, v);
            let x = (self.frames * 3 % 140) as usize;
            f.y[x..x + 20].fill(235);
            self.frames += 1;
            let payloads = self
                .sender
                .encode_at(&f, self.frames * (90_000 / FPS))
                .unwrap();
            payloads
                .into_iter()
                .map(|p| {
                    self.seq = self.seq.wrapping_add(1);
                    RtpPacket {
                        sequence_number: self.seq,
                        timestamp: p.timestamp,
                        marker: p.marker,
                        payload: p.payload,
                        audio_level: None,
                        arrival: now,
                    }
                })
                .collect()
        }
    }

    fn member(number: u32) -> MemberVideo {
        MemberVideo {
            number,
            sends: Some(VideoCodec::H264),
            receives: Some(VideoCodec::H264),
            max_bitrate: Some(256_000),
        }
    }

    fn mixer_with(n: u64, settings: VideoSettings, t0: Instant) -> VideoMixer {
        let mut mixer = VideoMixer::new(settings, t0);
        for i in 1..=n {
            mixer.add_member(ParticipantId(i), member(i as u32));
            mixer.set_connected(ParticipantId(i), true);
        }
        mixer
    }

    /// VP8 pictures from libvpx (FFmpeg), packetized per RFC 7741, as Chrome sends when it
    /// negotiated VP8.
    fn vp8_camera(colour: (u8, u8, u8), frames: usize) -> Vec<Vec<RtpPacket>> {
        use ffmpeg_next as ff;
        ff::init().unwrap();
        let codec = ff::encoder::find_by_name("libvpx").expect("FFmpeg with libvpx");
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .unwrap();
        enc.set_width(160);
        enc.set_height(90);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base((1, 30));
        enc.set_bit_rate(300_000);
        let mut opts = ff::Dictionary::new();
        opts.set("deadline", "realtime");
        opts.set("lag-in-frames", "0");
        let mut enc = enc.open_as_with(codec, opts).unwrap();
        let mut packetizer = comet_media::Vp8Packetizer::new(1200, 0).unwrap();
        let mut seq = 0u16;
        let now = Instant::now();
        (0..frames)
            .map(|i| {
                let mut f = ff::frame::Video::new(ff::format::Pixel::YUV420P, 160, 90);
                for (plane, value) in [colour.0, colour.1, colour.2].into_iter().enumerate() {
                    f.data_mut(plane).fill(value);
                }
                let stride = f.stride(0);
                let x = i * 3 % 140;
                for row in 0..10 {
                    f.data_mut(0)[row * stride + x..row * stride + x + 20].fill(235);
                }
                f.set_pts(Some(i as i64));
                enc.send_frame(&f).unwrap();
                let mut out = Vec::new();
                let mut packet = ff::Packet::empty();
                while enc.receive_packet(&mut packet).is_ok() {
                    let payloads = packetizer.packetize(packet.data().unwrap_or_default());
                    let n = payloads.len();
                    for (k, payload) in payloads.into_iter().enumerate() {
                        seq = seq.wrapping_add(1);
                        out.push(RtpPacket {
                            sequence_number: seq,
                            timestamp: i as u32 * 3000,
                            marker: k + 1 == n,
                            payload,
                            audio_level: None,
                            arrival: now,
                        });
                    }
                }
                out
            })
            .collect()
    }

    /// A member that sends VP8 is decoded and shown like an H.264 one: the H.264 canvas the
    /// other member receives has its colour in the big tile.
    #[test]
    fn a_vp8_camera_is_shown_on_the_h264_canvas() {
        let t0 = Instant::now();
        let settings = VideoSettings {
            width: 320,
            height: 180,
            ..VideoSettings::default()
        };
        let mut mixer = VideoMixer::new(settings, t0);
        mixer.add_member(
            ParticipantId(1),
            MemberVideo {
                sends: Some(VideoCodec::Vp8),
                receives: None,
                ..member(1)
            },
        );
        mixer.add_member(ParticipantId(2), member(2));
        for p in [1, 2] {
            mixer.set_connected(ParticipantId(p), true);
        }
        mixer.set_speaker(Some(ParticipantId(1)));
        // Red in BT.601 limited range.
        let red = (82u8, 90u8, 240u8);
        let camera = vp8_camera(red, 2 * FPS as usize);
        let mut viewer = VideoReceiver::new(VideoReceiverConfig::new(VideoCodec::H264)).unwrap();
        let mut seq = 0u16;
        let mut last: Option<I420Frame> = None;
        let mut now = t0;
        // Each tick before the camera's packets: the first one shows member 1 and starts its
        // decoder (our camera here ignores keyframe requests: its first picture is its only
        // keyframe).
        for packets in camera {
            now += interval();
            mixer.tick(now);
            for mut p in packets {
                p.arrival = now;
                mixer.push_packet(ParticipantId(1), p, now);
            }
            for o in mixer.take_outputs() {
                let VideoOutput::Rtp {
                    to,
                    payload,
                    timestamp,
                    marker,
                } = o
                else {
                    continue;
                };
                assert_eq!(to, ParticipantId(2), "member 1 negotiated no canvas");
                seq = seq.wrapping_add(1);
                let p = RtpPacket {
                    sequence_number: seq,
                    timestamp,
                    marker,
                    payload: payload.to_vec(),
                    audio_level: None,
                    arrival: now,
                };
                for e in viewer.push(p, now) {
                    if let VideoEvent::Frame { frame, .. } = e {
                        last = Some(frame);
                    }
                }
            }
        }
        let f = last.expect("member 2 decoded its canvas");
        assert_eq!((f.width, f.height), (320, 180));
        // The middle of the big tile.
        let (x, y) = (160usize, 80usize);
        let got = (
            f.y[y * f.stride_y + x],
            f.u[(y / 2) * f.stride_u + x / 2],
            f.v[(y / 2) * f.stride_v + x / 2],
        );
        let near = |a: u8, b: u8| a.abs_diff(b) < 25;
        assert!(
            near(got.0, red.0) && near(got.1, red.1) && near(got.2, red.2),
            "the big tile is {got:?}, not member 1's red {red:?}"
        );
        assert!(mixer.stats().decoded > 30, "{:?}", mixer.stats());
    }

    /// Each encoding runs at the lowest limit of its subscribers: their b=AS (256 kbit/s
    /// here), lowered by a REMB/TWCC estimate.
    #[test]
    fn encoder_bitrate_follows_b_as_and_estimates() {
        let t0 = Instant::now();
        let mut mixer = mixer_with(3, VideoSettings::default(), t0);
        mixer.set_speaker(Some(ParticipantId(1)));
        let mut now = t0;
        let mut run = |mixer: &mut VideoMixer, frames: u32| {
            for _ in 0..frames {
                now += interval();
                mixer.tick(now);
                let _ = mixer.take_outputs();
            }
        };
        run(&mut mixer, 5);
        let mut rates = mixer.encoder_bitrates();
        rates.sort();
        // Member 1 (the speaker) sees member 2 big; members 2 and 3 see member 1.
        assert_eq!(
            rates,
            [
                (Some(ParticipantId(1)), 256_000),
                (Some(ParticipantId(2)), 256_000)
            ]
        );
        mixer.set_estimate(ParticipantId(3), 150_000);
        mixer.set_estimate(ParticipantId(1), 5_000_000);
        run(&mut mixer, 2);
        let mut rates = mixer.encoder_bitrates();
        rates.sort();
        assert_eq!(
            rates,
            [
                (Some(ParticipantId(1)), 150_000),
                (Some(ParticipantId(2)), 256_000)
            ]
        );
        // Never below the floor.
        mixer.set_estimate(ParticipantId(3), 1_000);
        run(&mut mixer, 2);
        assert!(
            mixer
                .encoder_bitrates()
                .iter()
                .all(|(_, b)| *b >= MIN_BITRATE)
        );
    }

    /// A shown member that sends nothing is asked for a keyframe: PLI, PLI, then FIR, at most
    /// every 500 ms, until a keyframe decodes; then the requests stop.
    #[test]
    fn keyframe_requests_pli_then_fir_throttled_until_one_arrives() {
        let t0 = Instant::now();
        let mut mixer = mixer_with(2, VideoSettings::default(), t0);
        mixer.set_speaker(Some(ParticipantId(1)));
        let mut asked: Vec<(Duration, KeyframeKind)> = Vec::new();
        let mut now = t0;
        for _ in 0..(3 * FPS) {
            now += interval();
            mixer.tick(now);
            for o in mixer.take_outputs() {
                if let VideoOutput::RequestKeyframe { from, kind } = o
                    && from == ParticipantId(2)
                {
                    asked.push((now - t0, kind));
                }
            }
        }
        let kinds: Vec<KeyframeKind> = asked.iter().map(|a| a.1).collect();
        assert!(asked.len() >= 4 && asked.len() <= 7, "{asked:?}");
        assert_eq!(
            kinds[..3],
            [KeyframeKind::Pli, KeyframeKind::Pli, KeyframeKind::Fir]
        );
        for w in asked.windows(2) {
            assert!(w[1].0 - w[0].0 >= Duration::from_millis(500), "{asked:?}");
        }
        // Member 2's camera starts (its first picture is a keyframe): the requests stop.
        let mut cam = Camera::new((82, 90, 240));
        for _ in 0..FPS {
            now += interval();
            for p in cam.packets(now) {
                mixer.push_packet(ParticipantId(2), p, now);
            }
            mixer.tick(now);
            let _ = mixer.take_outputs();
        }
        assert!(mixer.stats().decoded > 20, "{:?}", mixer.stats());
        for _ in 0..FPS {
            now += interval();
            for p in cam.packets(now) {
                mixer.push_packet(ParticipantId(2), p, now);
            }
            mixer.tick(now);
            assert!(
                !mixer
                    .take_outputs()
                    .iter()
                    .any(|o| matches!(o, VideoOutput::RequestKeyframe { from, .. }
                        if *from == ParticipantId(2))),
                "requests after the keyframe"
            );
        }
    }

    /// Eight members in an active-speaker conference: two distinct canvases (the speaker's and
    /// everyone else's), each encoded once and the same payloads sent to all its subscribers;
    /// members that no canvas shows are not decoded.
    #[test]
    fn each_distinct_canvas_is_encoded_once_for_all_its_subscribers() {
        let t0 = Instant::now();
        let settings = VideoSettings {
            width: 320,
            height: 180,
            max_thumbnails: 4,
            ..VideoSettings::default()
        };
        let mut mixer = mixer_with(8, settings, t0);
        mixer.set_speaker(Some(ParticipantId(3)));
        let mut cams: Vec<Camera> = (0..8)
            .map(|i| Camera::new((40 + i * 20, 128, 128)))
            .collect();
        let mut now = t0;
        let mut shared_ok = false;
        for _ in 0..FPS {
            now += interval();
            for (i, cam) in cams.iter_mut().enumerate() {
                for p in cam.packets(now) {
                    mixer.push_packet(ParticipantId(i as u64 + 1), p, now);
                }
            }
            mixer.tick(now);
            // Every subscriber of one canvas gets the very same payload buffers.
            let mut by_sub: std::collections::HashMap<ParticipantId, Vec<Arc<[u8]>>> =
                Default::default();
            for o in mixer.take_outputs() {
                if let VideoOutput::Rtp { to, payload, .. } = o {
                    by_sub.entry(to).or_default().push(payload);
                }
            }
            let others: Vec<&Vec<Arc<[u8]>>> = by_sub
                .iter()
                .filter(|(p, _)| **p != ParticipantId(3))
                .map(|(_, v)| v)
                .collect();
            if others.len() == 7 {
                shared_ok = others.iter().all(|v| {
                    v.len() == others[0].len()
                        && v.iter()
                            .zip(others[0].iter())
                            .all(|(a, b)| Arc::ptr_eq(a, b))
                });
                if let Some(own) = by_sub.get(&ParticipantId(3)) {
                    assert!(
                        !Arc::ptr_eq(&own[0], &others[0][0]),
                        "the speaker's canvas differs"
                    );
                }
            }
        }
        let st = mixer.stats();
        assert_eq!(st.encoders, 2, "{st:?}");
        assert_eq!(st.subscribers, 8, "{st:?}");
        assert!(
            shared_ok,
            "the seven non-speakers did not share one encoding"
        );
        let canvases = mixer.canvases();
        assert_eq!(canvases.len(), 2, "{canvases:?}");
        for (big, subs) in &canvases {
            assert!(
                !subs.contains(&big.unwrap()),
                "someone sees itself big: {canvases:?}"
            );
        }
        // The speaker, four thumbnails, and the speaker's own big tile (the previous speaker
        // or the first other member) are decoded; the others are not.
        assert!(st.decoders < 8, "{st:?}");
        assert!(st.dropped_hidden > 0, "{st:?}");
        // Encodes per canvas frame: at most one per distinct canvas.
        assert!(st.encoded <= 2 * u64::from(FPS), "{st:?}");
    }

    /// Subscribers of one canvas that receive different codecs: the canvas is encoded once
    /// per codec; the VP8 subscribers share one VP8 encoding (decodable, the speaker big),
    /// the H.264 one gets H.264; a PLI of a VP8 subscriber makes its encoder send a keyframe.
    #[test]
    fn a_canvas_is_encoded_once_per_codec_its_subscribers_receive() {
        let t0 = Instant::now();
        let settings = VideoSettings {
            width: 320,
            height: 180,
            ..VideoSettings::default()
        };
        let mut mixer = VideoMixer::new(settings, t0);
        // 1: H.264 both ways (the speaker); 2 and 3: VP8 only; 4: H.264.
        for (i, codec) in [
            (1, VideoCodec::H264),
            (2, VideoCodec::Vp8),
            (3, VideoCodec::Vp8),
            (4, VideoCodec::H264),
        ] {
            mixer.add_member(
                ParticipantId(i),
                MemberVideo {
                    number: i as u32,
                    sends: Some(VideoCodec::H264),
                    receives: Some(codec),
                    max_bitrate: Some(256_000),
                },
            );
            mixer.set_connected(ParticipantId(i), true);
        }
        mixer.set_speaker(Some(ParticipantId(1)));
        let colours = [(82, 90, 240), (145, 54, 34), (41, 240, 110), (210, 16, 146)];
        let mut cams: Vec<Camera> = colours.iter().map(|c| Camera::new(*c)).collect();
        let mut viewers: Vec<VideoReceiver> = [
            VideoCodec::H264,
            VideoCodec::Vp8,
            VideoCodec::Vp8,
            VideoCodec::H264,
        ]
        .into_iter()
        .map(|c| VideoReceiver::new(VideoReceiverConfig::new(c)).unwrap())
        .collect();
        let mut last: Vec<Option<I420Frame>> = vec![None; 4];
        let mut shared_vp8 = 0;
        let mut now = t0;
        let mut seqs = [0u16; 4];
        let mut pli_sent = false;
        let mut keys_after_pli = 0;
        let mut forced_before = 0;
        for frame in 0..2 * FPS {
            now += interval();
            for (i, cam) in cams.iter_mut().enumerate() {
                for p in cam.packets(now) {
                    mixer.push_packet(ParticipantId(i as u64 + 1), p, now);
                }
            }
            if frame == FPS {
                forced_before = mixer.stats().forced_keyframes;
                mixer.keyframe_requested(ParticipantId(2));
                pli_sent = true;
            }
            mixer.tick(now);
            let mut by_sub: std::collections::HashMap<u64, Vec<Arc<[u8]>>> = Default::default();
            for o in mixer.take_outputs() {
                let (to, payload, timestamp, marker) = match o {
                    VideoOutput::Rtp {
                        to,
                        payload,
                        timestamp,
                        marker,
                    } => (to, payload, timestamp, marker),
                    VideoOutput::RequestKeyframe { from, .. } => {
                        cams[from.0 as usize - 1].sender.request_keyframe();
                        continue;
                    }
                };
                let k = to.0 as usize - 1;
                by_sub.entry(to.0).or_default().push(payload.clone());
                if pli_sent
                    && k == 1
                    && comet_media::vp8::Vp8Descriptor::parse(&payload)
                        .is_ok_and(|d| d.starts_frame() && payload[d.header_len] & 1 == 0)
                {
                    keys_after_pli += 1;
                }
                seqs[k] = seqs[k].wrapping_add(1);
                let events = viewers[k].push(
                    RtpPacket {
                        sequence_number: seqs[k],
                        timestamp,
                        marker,
                        payload: payload.to_vec(),
                        audio_level: None,
                        arrival: now,
                    },
                    now,
                );
                for e in events {
                    if let VideoEvent::Frame { frame, .. } = e {
                        last[k] = Some(frame);
                    }
                }
            }
            if let (Some(a), Some(b)) = (by_sub.get(&2), by_sub.get(&3)) {
                if a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y)) {
                    shared_vp8 += 1;
                }
                if let Some(c) = by_sub.get(&4) {
                    assert!(!Arc::ptr_eq(&a[0], &c[0]), "H.264 and VP8 differ");
                }
            }
        }
        // Three encoders: (speaker's canvas, VP8) for 2 and 3, (speaker's canvas, H.264) for
        // 4, and the speaker's own canvas (H.264) for 1.
        let st = mixer.stats();
        assert_eq!(st.encoders, 3, "{st:?}");
        assert!(shared_vp8 > 0, "2 and 3 never shared one VP8 encoding");
        assert!(keys_after_pli > 0, "no VP8 keyframe after the PLI");
        assert!(
            st.forced_keyframes > forced_before,
            "the keyframe after the PLI is not counted as forced: {st:?}"
        );
        let big = |f: &I420Frame| {
            // The middle of the big tile.
            let (x, y) = (160usize, 80usize);
            (
                f.y[y * f.stride_y + x],
                f.u[(y / 2) * f.stride_u + x / 2],
                f.v[(y / 2) * f.stride_v + x / 2],
            )
        };
        let near = |a: (u8, u8, u8), b: (u8, u8, u8)| {
            a.0.abs_diff(b.0) < 25 && a.1.abs_diff(b.1) < 25 && a.2.abs_diff(b.2) < 25
        };
        for (k, f) in last.iter().enumerate().skip(1) {
            let f = f
                .as_ref()
                .unwrap_or_else(|| panic!("{} decoded nothing", k + 1));
            assert_eq!((f.width, f.height), (320, 180));
            assert!(
                near(big(f), colours[0]),
                "member {} sees {:?} big, not the speaker",
                k + 1,
                big(f)
            );
        }
        let own = last[0].as_ref().expect("the speaker decoded nothing");
        assert!(!near(big(own), colours[0]), "the speaker sees itself big");
    }

    #[test]
    fn video_bandwidth_of_offers() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nb=AS:32\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:256\r\n";
        assert_eq!(offered_video_bandwidth(sdp), Some(256_000));
        let tias = "m=video 9 RTP/SAVPF 96\nb=TIAS:300000\n";
        assert_eq!(offered_video_bandwidth(tias), Some(300_000));
        assert_eq!(offered_video_bandwidth("m=audio 9 RTP 0\nb=AS:64\n"), None);
        assert_eq!(offered_video_bandwidth("m=video 9 RTP 96\nb=AS:x\n"), None);
        assert_eq!(
            offered_video_bandwidth("m=video 9 RTP 96\nm=video 9 RTP 97\nb=AS:100\n"),
            None,
            "only the first video section counts"
        );
        assert_eq!(layout_kind("grid"), Some(LayoutKind::Grid));
        assert_eq!(layout_kind("mosaic"), None);
    }
}
