//! The sans-IO endpoint: every participant's str0m `Rtc`, the demultiplexing tables, the output
//! queue and the deadlines. Time only moves through the `now` arguments.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{Codec as SCodec, FormatParams};
use str0m::media::{Frequency, KeyframeRequestKind, Mid, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event as SEvent, IceConnectionState, IceCreds, Input, Output as SOutput};
use str0m::{Rtc, RtcConfig};

use crate::demux::{self, Kind};
use crate::sdp::{self, OfferScan, SectionKind, SectionPlan};
use crate::types::*;

/// Upper bound on `poll_output` calls per drain: far above anything one input produces; a
/// guard against a stack that never reaches its timeout.
const MAX_DRAIN: usize = 100_000;
/// Source addresses remembered per participant (one per working candidate pair in practice).
const MAX_ADDRS: usize = 8;
/// `poll_output` answer when no participant has anything scheduled.
const IDLE: Duration = Duration::from_secs(1);

/// The WebRTC endpoint: all participants behind one UDP port. See the crate documentation.
pub struct Endpoint {
    config: EndpointConfig,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    participants: HashMap<ParticipantId, Participant>,
    by_ufrag: HashMap<String, ParticipantId>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    deadlines: BTreeSet<(Instant, ParticipantId)>,
    queue: VecDeque<Output>,
    metrics: Metrics,
    next_id: u64,
    scratch: Vec<ParticipantId>,
    /// Demultiplexing keys added and removed since the driver last took them (only recorded
    /// by one shard of several).
    routes: Vec<RouteChange>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("candidates", &self.config.candidates)
            .field("participants", &self.participants.len())
            .finish()
    }
}

struct Participant {
    rtc: Rtc,
    ufrag: String,
    created: Instant,
    connected: bool,
    disconnected_since: Option<Instant>,
    audio: Option<Track>,
    video: Option<Track>,
    /// Negotiated payload types (RTX excluded: str0m unwraps it).
    payload_types: Vec<(u8, Codec)>,
    addrs: Vec<SocketAddr>,
    /// str0m's own next timeout.
    rtc_timeout: Instant,
    /// Our key in `Endpoint::deadlines`.
    deadline: Option<Instant>,
    /// Last cumulative NACK counts per (mid, egress): egress = NACKs the peer sent us.
    nack_counts: Vec<(Mid, bool, u64)>,
}

struct Track {
    mid: Mid,
    info: NegotiatedMedia,
    next_seq: u64,
}

/// What a drain ended with.
enum DrainEnd {
    Timeout,
    Close(CloseReason),
}

impl Endpoint {
    /// A new endpoint. Generates the DTLS certificate all participants share (its fingerprint
    /// is in every answer).
    pub fn new(config: EndpointConfig) -> Result<Endpoint, Error> {
        if config.candidates.is_empty() {
            return Err(Error::Config("no candidate address".into()));
        }
        for c in &config.candidates {
            Candidate::host(*c, "udp").map_err(|e| Error::Config(format!("candidate {c}: {e}")))?;
        }
        if config.video_codecs.is_empty() {
            return Err(Error::Config("no video codec".into()));
        }
        let shard = config.shard;
        if shard.count == 0 || shard.index >= shard.count {
            return Err(Error::Config(format!(
                "shard {} of {}",
                shard.index, shard.count
            )));
        }
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| Error::Config("cannot generate a DTLS certificate".into()))?;
        Ok(Endpoint {
            config,
            crypto,
            cert,
            participants: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            deadlines: BTreeSet::new(),
            queue: VecDeque::new(),
            metrics: Metrics::default(),
            // Ids of shard `index` are `index` modulo `count`; never 0.
            next_id: u64::from(shard.count) + u64::from(shard.index),
            scratch: Vec::new(),
            routes: Vec::new(),
        })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The demultiplexing keys (local ufrags, peer addresses) this endpoint started or stopped
    /// answering to since the last call, in order. Recorded only by one shard of several
    /// ([`EndpointConfig::shard`]); always empty for a whole endpoint.
    pub fn take_route_changes(&mut self) -> Vec<RouteChange> {
        std::mem::take(&mut self.routes)
    }

    fn route(&mut self, change: RouteChange) {
        if self.config.shard.count > 1 {
            self.routes.push(change);
        }
    }

    pub fn metrics(&self) -> Metrics {
        Metrics {
            participants: self.participants.len() as u64,
            ..self.metrics
        }
    }

    /// Ids of the participants currently held.
    pub fn participants(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.participants.keys().copied()
    }

    /// How many participants the endpoint holds.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Whether `id` is held and connected.
    pub fn is_connected(&self, id: ParticipantId) -> bool {
        self.participants.get(&id).is_some_and(|p| p.connected)
    }

    /// The negotiated audio and video of `id`.
    pub fn media(
        &self,
        id: ParticipantId,
    ) -> Option<(Option<NegotiatedMedia>, Option<NegotiatedMedia>)> {
        let p = self.participants.get(&id)?;
        Some((
            p.audio.as_ref().map(|t| t.info),
            p.video.as_ref().map(|t| t.info),
        ))
    }

    /// Accept a new participant's offer: one audio and one video m-line at most (others are
    /// rejected), one codec each, directions narrowed by `opts`.
    pub fn accept_offer(
        &mut self,
        offer_sdp: &str,
        opts: AnswerOptions,
        now: Instant,
    ) -> Result<Answer, Error> {
        if self.participants.len() >= self.config.max_participants {
            return Err(Error::TooManyParticipants);
        }
        let scan = OfferScan::parse(offer_sdp).map_err(Error::InvalidOffer)?;

        let mut plans = Vec::with_capacity(scan.sections.len());
        let mut audio_choice = None;
        let mut video_choice = None;
        for s in &scan.sections {
            let plan = match s.kind {
                _ if s.port_zero => SectionPlan::Reject,
                SectionKind::Audio if audio_choice.is_none() => {
                    let c = sdp::choose_audio(s).ok_or(Error::NoCommonCodec(MediaKind::Audio))?;
                    audio_choice = Some((c, s.mid.clone()));
                    SectionPlan::Keep(sdp::narrow_direction(s.direction, opts.audio))
                }
                SectionKind::Video if video_choice.is_none() => {
                    match sdp::choose_video(s, &self.config.video_codecs) {
                        Some(c) => {
                            video_choice = Some((c, s.mid.clone()));
                            SectionPlan::Keep(sdp::narrow_direction(s.direction, opts.video))
                        }
                        None => SectionPlan::Reject,
                    }
                }
                _ => SectionPlan::Reject,
            };
            plans.push(plan);
        }
        if audio_choice.is_none() && video_choice.is_none() {
            return Err(Error::InvalidOffer(
                "no usable audio or video m-line".into(),
            ));
        }
        let audio_mid = mid_of(audio_choice.as_ref().map(|(_, m)| m))?;
        let video_mid = mid_of(video_choice.as_ref().map(|(_, m)| m))?;

        let narrowed = sdp::rewrite_offer(offer_sdp, &scan, &plans);
        let offer = guard(|| SdpOffer::from_sdp_string(&narrowed))
            .ok_or_else(|| Error::InvalidOffer("SDP parser failure".into()))?
            .map_err(|e| Error::InvalidOffer(e.to_string()))?;

        // Unique local ufrag: it is the demultiplexing key for STUN. A shard's start with its
        // index and a letter, so no two shards hand out the same one.
        let creds = loop {
            let mut c = IceCreds::new();
            if self.config.shard.count > 1 {
                c.ufrag = format!("{}s{}", self.config.shard.index, c.ufrag);
            }
            if !self.by_ufrag.contains_key(&c.ufrag) {
                break c;
            }
        };

        let mut cfg = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(creds.clone())
            .set_stats_interval(Some(self.config.stats_interval))
            .clear_codecs();
        // Bandwidth estimation (and with it str0m's pacer) only for participants we send
        // video to: an audio-only participant gets one small packet per 20 ms, and the pacer's
        // timers cost the endpoint more than the audio itself in large audio conferences.
        if let Some(bps) = self.config.bwe_initial_bitrate
            && video_choice.is_some()
            && opts.video.sends()
        {
            cfg = cfg.enable_bwe(Some(Bitrate::bps(bps)));
        }
        let mut payload_types = Vec::new();
        {
            let codecs = cfg.codec_config();
            if let Some((a, _)) = &audio_choice {
                let (codec, freq, channels, format) = match a.codec {
                    Codec::Opus => (
                        SCodec::Opus,
                        Frequency::FORTY_EIGHT_KHZ,
                        a.channels,
                        FormatParams {
                            min_p_time: Some(10),
                            use_inband_fec: Some(true),
                            ..Default::default()
                        },
                    ),
                    Codec::Pcma => (
                        SCodec::PCMA,
                        Frequency::EIGHT_KHZ,
                        a.channels,
                        FormatParams::default(),
                    ),
                    _ => (
                        SCodec::PCMU,
                        Frequency::EIGHT_KHZ,
                        a.channels,
                        FormatParams::default(),
                    ),
                };
                codecs.add_config(a.pt.into(), None, codec, freq, channels, format);
                payload_types.push((a.pt, a.codec));
                if let Some(te) = a.telephone_event {
                    codecs.add_config(
                        te.into(),
                        None,
                        SCodec::Tele,
                        freq,
                        None,
                        FormatParams::parse_line("0-15"),
                    );
                    payload_types.push((te, Codec::TelephoneEvent));
                }
            }
            if let Some((v, _)) = &video_choice {
                let rtx = v.rtx.map(Pt::from);
                match v.codec {
                    Codec::H264 => codecs.add_h264(
                        v.pt.into(),
                        rtx,
                        true,
                        v.profile_level_id.unwrap_or(sdp::H264_PREFERRED_PLID),
                    ),
                    _ => codecs.add_config(
                        v.pt.into(),
                        rtx,
                        SCodec::Vp8,
                        Frequency::NINETY_KHZ,
                        None,
                        FormatParams::default(),
                    ),
                }
                payload_types.push((v.pt, v.codec));
            }
        }

        let candidates = self.config.candidates.clone();
        let built = guard(move || {
            let mut rtc = cfg.build(now);
            for c in candidates {
                if let Ok(c) = Candidate::host(c, "udp") {
                    rtc.add_local_candidate(c);
                }
            }
            let answer = rtc.sdp_api().accept_offer(offer);
            (rtc, answer)
        })
        .ok_or_else(|| Error::InvalidOffer("WebRTC stack failure on the offer".into()))?;
        let (rtc, answer) = built;
        let answer = answer.map_err(|e| Error::InvalidOffer(e.to_string()))?;
        // The codec we configured from the offer must be what str0m answered.
        let answered = |mid: Option<Mid>, pt: u8| {
            mid.and_then(|m| rtc.media(m))
                .is_some_and(|m| m.remote_pts().contains(&Pt::from(pt)))
        };
        if let Some((a, _)) = &audio_choice
            && !answered(audio_mid, a.pt)
        {
            return Err(Error::NoCommonCodec(MediaKind::Audio));
        }
        let video_mid = match &video_choice {
            Some((v, _)) if !answered(video_mid, v.pt) => {
                tracing::warn!(pt = v.pt, "chosen video codec missing from the answer");
                None
            }
            _ => video_mid,
        };

        let id = ParticipantId(self.next_id);
        self.next_id += u64::from(self.config.shard.count);
        let mut p = Participant {
            rtc,
            ufrag: creds.ufrag.clone(),
            created: now,
            connected: false,
            disconnected_since: None,
            audio: None,
            video: None,
            payload_types,
            addrs: Vec::new(),
            rtc_timeout: now,
            deadline: None,
            nack_counts: Vec::new(),
        };
        if let (Some((a, _)), Some(mid)) = (&audio_choice, audio_mid) {
            p.audio = Some(Track::new(
                &p.rtc,
                mid,
                MediaKind::Audio,
                a.codec,
                a.pt,
                a.telephone_event,
            ));
        }
        if let (Some((v, _)), Some(mid)) = (&video_choice, video_mid) {
            p.video = Some(Track::new(
                &p.rtc,
                mid,
                MediaKind::Video,
                v.codec,
                v.pt,
                None,
            ));
        }
        let result = Answer {
            participant: id,
            sdp: sdp::reject_in_answer(&answer.to_sdp_string(), &sdp::rejected_mids(&scan, &plans)),
            audio: p.audio.as_ref().map(|t| t.info),
            video: p.video.as_ref().map(|t| t.info),
        };
        tracing::debug!(participant = %id, audio = ?result.audio, video = ?result.video, "offer accepted");
        self.route(RouteChange::Ufrag {
            ufrag: creds.ufrag.clone(),
            ours: true,
        });
        self.by_ufrag.insert(creds.ufrag, id);
        self.participants.insert(id, p);
        self.metrics.participants_accepted += 1;
        self.drain(id, now);
        Ok(result)
    }

    /// Accept a re-offer (re-INVITE: hold with sendonly/inactive, unhold, ICE restart) from an
    /// existing participant. The m-lines and codecs stay those of the first offer.
    pub fn accept_reoffer(
        &mut self,
        id: ParticipantId,
        offer_sdp: &str,
        opts: AnswerOptions,
        now: Instant,
    ) -> Result<Answer, Error> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        let scan = OfferScan::parse(offer_sdp).map_err(Error::InvalidOffer)?;
        let audio_mid = p.audio.as_ref().map(|t| t.mid);
        let video_mid = p.video.as_ref().map(|t| t.mid);
        let plans: Vec<SectionPlan> = scan
            .sections
            .iter()
            .map(|s| {
                let mid = s.mid.as_deref().map(Mid::from);
                let want = if mid.is_some() && mid == audio_mid {
                    opts.audio
                } else if mid.is_some() && mid == video_mid {
                    opts.video
                } else {
                    return SectionPlan::Reject;
                };
                if s.port_zero {
                    SectionPlan::Reject
                } else {
                    SectionPlan::Keep(sdp::narrow_direction(s.direction, want))
                }
            })
            .collect();
        let narrowed = sdp::rewrite_offer(offer_sdp, &scan, &plans);
        let offer = guard(|| SdpOffer::from_sdp_string(&narrowed))
            .ok_or_else(|| Error::InvalidOffer("SDP parser failure".into()))?
            .map_err(|e| Error::InvalidOffer(e.to_string()))?;

        let rtc = &mut p.rtc;
        let answer = match guard(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer))) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                let alive = p.rtc.is_alive();
                self.drain(id, now);
                if !alive {
                    self.finish(id, CloseReason::Failed(e.to_string()), now);
                }
                return Err(Error::InvalidOffer(e.to_string()));
            }
            None => {
                self.metrics.panics += 1;
                self.finish(id, CloseReason::Internal, now);
                return Err(Error::InvalidOffer(
                    "WebRTC stack failure on the offer".into(),
                ));
            }
        };
        for t in [&mut p.audio, &mut p.video].into_iter().flatten() {
            t.info.direction = p
                .rtc
                .media(t.mid)
                .map(|m| Direction::from_str0m(m.direction()))
                .unwrap_or(Direction::Inactive);
        }
        // An ICE restart changes our ufrag: the demultiplexing key.
        let ufrag = p.rtc.direct_api().local_ice_credentials().ufrag;
        let restarted = (ufrag != p.ufrag).then(|| std::mem::replace(&mut p.ufrag, ufrag.clone()));
        let result = Answer {
            participant: id,
            sdp: sdp::reject_in_answer(&answer.to_sdp_string(), &sdp::rejected_mids(&scan, &plans)),
            audio: p.audio.as_ref().map(|t| t.info),
            video: p.video.as_ref().map(|t| t.info),
        };
        if let Some(old) = restarted {
            self.by_ufrag.remove(&old);
            self.by_ufrag.insert(ufrag.clone(), id);
            self.route(RouteChange::Ufrag {
                ufrag: old,
                ours: false,
            });
            self.route(RouteChange::Ufrag { ufrag, ours: true });
        }
        self.drain(id, now);
        Ok(result)
    }

    /// Hand a datagram received on the socket to the endpoint. `from` is the peer, `to` the
    /// local address it arrived at (an address that is not one of the configured candidates,
    /// e.g. a wildcard bind, stands for the first candidate of the same IP family).
    /// Anything that is not for a participant is dropped and counted; never a panic.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        self.metrics.datagrams_in += 1;
        self.metrics.bytes_in += bytes.len() as u64;
        let Some(kind) = demux::classify(bytes) else {
            self.metrics.malformed_dropped += 1;
            return;
        };
        let contents = match guard(|| DatagramRecv::try_from(bytes)) {
            Some(Ok(c)) => c,
            Some(Err(_)) => {
                self.metrics.malformed_dropped += 1;
                return;
            }
            None => {
                self.metrics.panics += 1;
                self.metrics.malformed_dropped += 1;
                return;
            }
        };
        let by_ufrag = match kind {
            Kind::Stun => demux::binding_request_ufrag(bytes).and_then(|u| self.by_ufrag.get(u)),
            _ => None,
        };
        let Some(id) = by_ufrag.or_else(|| self.by_addr.get(&from)).copied() else {
            self.metrics.unknown_dropped += 1;
            return;
        };
        let to = self.local_candidate_for(to);
        let Some(p) = self.participants.get_mut(&id) else {
            self.metrics.unknown_dropped += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents,
            },
        );
        if kind == Kind::Stun {
            // Verifies MESSAGE-INTEGRITY with our password for binding requests.
            let rtc = &p.rtc;
            if guard(AssertUnwindSafe(|| rtc.accepts(&input))) != Some(true) {
                self.metrics.unknown_dropped += 1;
                return;
            }
            self.learn_addr(id, from);
        }
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let rtc = &mut p.rtc;
        match guard(AssertUnwindSafe(|| rtc.handle_input(input))) {
            Some(Ok(())) => self.drain(id, now),
            Some(Err(e)) => {
                if p.rtc.is_alive() {
                    // A record the stack refused (replay, bad auth, garbage after a valid
                    // header): the session goes on.
                    self.metrics.malformed_dropped += 1;
                    self.drain(id, now);
                } else {
                    self.finish(id, CloseReason::Failed(e.to_string()), now);
                }
            }
            None => {
                self.metrics.panics += 1;
                self.finish(id, CloseReason::Internal, now);
            }
        }
    }

    /// Advance time: run every participant whose deadline has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.participants.get_mut(&id) {
                p.deadline = None;
            }
            due.push(id);
        }
        for &id in &due {
            self.service(id, now);
        }
        self.scratch = due;
    }

    /// The next output: queued datagrams and events first, then the time to call
    /// [`Endpoint::handle_timeout`] at.
    pub fn poll_output(&mut self, now: Instant) -> Output {
        if let Some(o) = self.queue.pop_front() {
            return o;
        }
        let next = self.deadlines.first().map_or(now + IDLE, |(t, _)| *t);
        Output::Timeout(next)
    }

    /// Send one audio RTP packet (the payload is one encoded frame, e.g. 20 ms of Opus).
    /// Sequence numbers are ours; `rtp_timestamp` is in the codec clock (48 kHz for Opus).
    /// Pass an `Arc<[u8]>` to share one encoded mix among participants without copies.
    pub fn write_audio(
        &mut self,
        id: ParticipantId,
        payload: impl Into<Arc<[u8]>>,
        rtp_timestamp: u32,
        audio_level: Option<AudioLevel>,
        now: Instant,
    ) -> Result<(), Error> {
        let ext = ExtensionValues {
            audio_level: audio_level.map(|l| -(l.level.min(127) as i8)),
            voice_activity: audio_level.map(|l| l.voice),
            ..Default::default()
        };
        self.write(
            id,
            MediaKind::Audio,
            payload.into(),
            rtp_timestamp,
            false,
            ext,
            now,
        )
    }

    /// Send one video RTP packet: `payload` is already packetized (an RTP payload, e.g. a VP8
    /// descriptor + partition, or an H.264 NAL unit / FU-A fragment); `marker` ends a frame.
    /// Kept for retransmission on NACK.
    pub fn write_video(
        &mut self,
        id: ParticipantId,
        payload: impl Into<Arc<[u8]>>,
        rtp_timestamp: u32,
        marker: bool,
        now: Instant,
    ) -> Result<(), Error> {
        let ext = ExtensionValues::default();
        self.write(
            id,
            MediaKind::Video,
            payload.into(),
            rtp_timestamp,
            marker,
            ext,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        id: ParticipantId,
        kind: MediaKind,
        payload: Arc<[u8]>,
        rtp_timestamp: u32,
        marker: bool,
        ext: ExtensionValues,
        now: Instant,
    ) -> Result<(), Error> {
        let r = self.write_inner(id, kind, payload, rtp_timestamp, marker, ext, now);
        if r.is_err() {
            self.metrics.writes_refused += 1;
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn write_inner(
        &mut self,
        id: ParticipantId,
        kind: MediaKind,
        payload: Arc<[u8]>,
        rtp_timestamp: u32,
        marker: bool,
        ext: ExtensionValues,
        now: Instant,
    ) -> Result<(), Error> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        if !p.connected {
            return Err(Error::NotConnected);
        }
        let track = match kind {
            MediaKind::Audio => p.audio.as_mut(),
            MediaKind::Video => p.video.as_mut(),
        }
        .ok_or(Error::NoMedia(kind))?;
        if !track.info.direction.sends() {
            return Err(Error::NotSending(kind));
        }
        let mid = track.mid;
        let pt: Pt = track.info.payload_type.into();
        let seq = track.next_seq;
        let rtc = &mut p.rtc;
        let written = guard(AssertUnwindSafe(|| {
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                return false;
            };
            let w = RtpWrite::new(pt, seq.into(), rtp_timestamp, now, payload)
                .marker(marker)
                .ext_vals(ext)
                .nackable(kind == MediaKind::Video);
            tx.write_rtp(w);
            true
        }));
        match written {
            Some(true) => {}
            Some(false) => return Err(Error::NotSending(kind)),
            None => {
                self.metrics.panics += 1;
                self.finish(id, CloseReason::Internal, now);
                return Err(Error::UnknownParticipant(id));
            }
        }
        if let Some(t) = match kind {
            MediaKind::Audio => p.audio.as_mut(),
            MediaKind::Video => p.video.as_mut(),
        } {
            t.next_seq += 1;
        }
        self.metrics.rtp_out += 1;
        self.drain(id, now);
        self.tick(id, now);
        Ok(())
    }

    /// Ask the peer for a video keyframe (PLI).
    pub fn request_keyframe(&mut self, id: ParticipantId, now: Instant) -> Result<(), Error> {
        self.request_keyframe_kind(id, KeyframeKind::Pli, now)
    }

    /// Ask the peer for a video keyframe with a PLI (RFC 4585: a picture was lost) or a FIR
    /// (RFC 5104: a decoder (re)starts and needs an intra picture; also what an MCU sends when
    /// PLIs went unanswered).
    pub fn request_keyframe_kind(
        &mut self,
        id: ParticipantId,
        kind: KeyframeKind,
        now: Instant,
    ) -> Result<(), Error> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(Error::UnknownParticipant(id))?;
        let track = p.video.as_ref().ok_or(Error::NoMedia(MediaKind::Video))?;
        if !track.info.direction.receives() {
            return Err(Error::NotReceiving(MediaKind::Video));
        }
        let mid = track.mid;
        let rtc = &mut p.rtc;
        let sent = guard(AssertUnwindSafe(|| {
            let mut api = rtc.direct_api();
            match api.stream_rx_by_mid(mid, None) {
                Some(rx) => {
                    rx.request_keyframe(match kind {
                        KeyframeKind::Pli => KeyframeRequestKind::Pli,
                        KeyframeKind::Fir => KeyframeRequestKind::Fir,
                    });
                    true
                }
                None => false,
            }
        }));
        match sent {
            Some(true) => {}
            Some(false) => return Err(Error::NotReceiving(MediaKind::Video)),
            None => {
                self.metrics.panics += 1;
                self.finish(id, CloseReason::Internal, now);
                return Err(Error::UnknownParticipant(id));
            }
        }
        match kind {
            KeyframeKind::Pli => self.metrics.plis_sent += 1,
            KeyframeKind::Fir => self.metrics.firs_sent += 1,
        }
        self.drain(id, now);
        self.tick(id, now);
        Ok(())
    }

    /// Hang up: DTLS close_notify and RTCP BYE go out, then [`Event::Closed`] with
    /// [`CloseReason::Local`]; the id is forgotten.
    pub fn close(&mut self, id: ParticipantId, now: Instant) -> Result<(), Error> {
        if !self.participants.contains_key(&id) {
            return Err(Error::UnknownParticipant(id));
        }
        self.finish(id, CloseReason::Local, now);
        Ok(())
    }

    // ---- internals ----

    fn local_candidate_for(&self, to: SocketAddr) -> SocketAddr {
        let c = &self.config.candidates;
        if c.contains(&to) {
            return to;
        }
        c.iter()
            .find(|a| a.is_ipv4() == to.is_ipv4())
            .or(c.first())
            .copied()
            .unwrap_or(to)
    }

    fn learn_addr(&mut self, id: ParticipantId, from: SocketAddr) {
        let previous = self.by_addr.insert(from, id);
        if previous.is_none() {
            self.route(RouteChange::Addr {
                addr: from,
                ours: true,
            });
        }
        if let Some(old) = previous.filter(|old| *old != id)
            && let Some(o) = self.participants.get_mut(&old)
        {
            o.addrs.retain(|a| *a != from);
        }
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if !p.addrs.contains(&from) {
            p.addrs.push(from);
            if p.addrs.len() > MAX_ADDRS {
                let gone = p.addrs.remove(0);
                if self.by_addr.get(&gone) == Some(&id) {
                    self.by_addr.remove(&gone);
                    self.route(RouteChange::Addr {
                        addr: gone,
                        ours: false,
                    });
                }
            }
        }
    }

    /// Feed `Input::Timeout(now)` (lets str0m send what was just queued) and drain.
    fn tick(&mut self, id: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let rtc = &mut p.rtc;
        match guard(AssertUnwindSafe(|| rtc.handle_input(Input::Timeout(now)))) {
            Some(Ok(())) => self.drain(id, now),
            Some(Err(e)) => self.finish(id, CloseReason::Failed(e.to_string()), now),
            None => {
                self.metrics.panics += 1;
                self.finish(id, CloseReason::Internal, now);
            }
        }
    }

    /// A participant's deadline came: our own timers, then str0m's.
    fn service(&mut self, id: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        if !p.connected && now >= p.created + self.config.connect_timeout {
            self.finish(id, CloseReason::ConnectTimeout, now);
            return;
        }
        if p.disconnected_since
            .is_some_and(|t| now >= t + self.config.disconnect_timeout)
        {
            self.finish(id, CloseReason::IceTimeout, now);
            return;
        }
        if p.rtc_timeout <= now {
            self.tick(id, now);
        } else {
            self.reschedule(id);
        }
    }

    /// Poll the participant's `Rtc` until its timeout (str0m's single-mutation invariant),
    /// queueing transmits and events.
    fn drain(&mut self, id: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let queue = &mut self.queue;
        let metrics = &mut self.metrics;
        let end = guard(AssertUnwindSafe(|| drain_rtc(id, p, queue, metrics, now)));
        match end {
            Some(DrainEnd::Timeout) => self.reschedule(id),
            Some(DrainEnd::Close(reason)) => self.finish(id, reason, now),
            None => {
                self.metrics.panics += 1;
                self.finish(id, CloseReason::Internal, now);
            }
        }
    }

    fn reschedule(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let mut t = p.rtc_timeout;
        if !p.connected {
            t = t.min(p.created + self.config.connect_timeout);
        }
        if let Some(since) = p.disconnected_since {
            t = t.min(since + self.config.disconnect_timeout);
        }
        if p.deadline == Some(t) {
            return;
        }
        if let Some(old) = p.deadline.take() {
            self.deadlines.remove(&(old, id));
        }
        p.deadline = Some(t);
        self.deadlines.insert((t, id));
    }

    /// End a participant: close politely (close_notify, BYE), queue what that sends, forget it,
    /// and emit the one [`Event::Closed`].
    fn finish(&mut self, id: ParticipantId, reason: CloseReason, now: Instant) {
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        if reason != CloseReason::Internal {
            let queue = &mut self.queue;
            let metrics = &mut self.metrics;
            let polite = guard(AssertUnwindSafe(|| {
                if p.rtc.is_alive() {
                    let _ = p.rtc.close();
                    let _ = drain_rtc(id, &mut p, queue, metrics, now);
                    let _ = p.rtc.handle_input(Input::Timeout(now));
                    let _ = drain_rtc(id, &mut p, queue, metrics, now);
                }
            }));
            if polite.is_none() {
                self.metrics.panics += 1;
            }
        }
        // Events of the final drain belong before Closed; none may follow it.
        if let Some(t) = p.deadline {
            self.deadlines.remove(&(t, id));
        }
        if self.by_ufrag.get(&p.ufrag) == Some(&id) {
            self.by_ufrag.remove(&p.ufrag);
            self.route(RouteChange::Ufrag {
                ufrag: p.ufrag.clone(),
                ours: false,
            });
        }
        for a in &p.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
                self.route(RouteChange::Addr {
                    addr: *a,
                    ours: false,
                });
            }
        }
        self.metrics.participants_closed += 1;
        if reason == CloseReason::Internal {
            tracing::error!(participant = %id, "WebRTC stack panicked; participant discarded");
        } else {
            tracing::debug!(participant = %id, ?reason, "participant closed");
        }
        self.queue
            .push_back(Output::Event(id, Event::Closed(reason)));
    }
}

impl Track {
    fn new(
        rtc: &Rtc,
        mid: Mid,
        kind: MediaKind,
        codec: Codec,
        pt: u8,
        telephone_event: Option<u8>,
    ) -> Track {
        let direction = rtc
            .media(mid)
            .map(|m| Direction::from_str0m(m.direction()))
            .unwrap_or(Direction::Inactive);
        let clock_rate = match codec {
            Codec::Opus => 48_000,
            Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => 8_000,
            Codec::H264 | Codec::Vp8 => 90_000,
        };
        Track {
            mid,
            info: NegotiatedMedia {
                kind,
                codec,
                payload_type: pt,
                clock_rate,
                direction,
                telephone_event,
            },
            // Random start below 2^15: no rollover counter to signal (RFC 3550 asks for a
            // random initial sequence number).
            next_seq: u64::from(random_u16() & 0x7fff),
        }
    }
}

fn random_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u16
}

fn mid_of(mid: Option<&Option<String>>) -> Result<Option<Mid>, Error> {
    match mid {
        None => Ok(None),
        Some(Some(m)) if !m.is_empty() => Ok(Some(Mid::from(m.as_str()))),
        Some(_) => Err(Error::InvalidOffer("m-line without a usable a=mid".into())),
    }
}

/// Run `f`, turning a panic into `None` (a panicking `Rtc` is discarded by the caller).
fn guard<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Option<R> {
    catch_unwind(f).ok()
}

fn drain_rtc(
    id: ParticipantId,
    p: &mut Participant,
    queue: &mut VecDeque<Output>,
    metrics: &mut Metrics,
    now: Instant,
) -> DrainEnd {
    let mut remote_closed = false;
    for _ in 0..MAX_DRAIN {
        let out = match p.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => return DrainEnd::Close(CloseReason::Failed(e.to_string())),
        };
        match out {
            SOutput::Timeout(t) => {
                p.rtc_timeout = t;
                if remote_closed {
                    return DrainEnd::Close(CloseReason::Remote);
                }
                return DrainEnd::Timeout;
            }
            SOutput::Transmit(t) => {
                metrics.datagrams_out += 1;
                metrics.bytes_out += t.contents.len() as u64;
                queue.push_back(Output::Transmit(Transmit {
                    from: t.source,
                    to: t.destination,
                    bytes: t.contents.into(),
                }));
            }
            SOutput::Event(e) => {
                if let Some(ev) = map_event(p, e, metrics, now, &mut remote_closed) {
                    queue.push_back(Output::Event(id, ev));
                }
            }
        }
    }
    DrainEnd::Close(CloseReason::Failed("WebRTC stack did not settle".into()))
}

fn map_event(
    p: &mut Participant,
    e: SEvent,
    metrics: &mut Metrics,
    now: Instant,
    remote_closed: &mut bool,
) -> Option<Event> {
    match e {
        SEvent::Connected => {
            if p.connected {
                return None;
            }
            p.connected = true;
            Some(Event::Connected)
        }
        SEvent::IceConnectionStateChange(s) => match s {
            IceConnectionState::Disconnected if p.connected && p.disconnected_since.is_none() => {
                p.disconnected_since = Some(now);
                Some(Event::Disconnected)
            }
            IceConnectionState::Connected | IceConnectionState::Completed => {
                p.disconnected_since.take().map(|_| Event::Reconnected)
            }
            _ => None,
        },
        SEvent::RtpPacket(pkt) => media_packet(p, pkt)
            .inspect(|_| metrics.rtp_in += 1)
            .map(Event::Media),
        SEvent::KeyframeRequest(req) => {
            let kind = match req.kind {
                KeyframeRequestKind::Pli => {
                    metrics.plis_received += 1;
                    KeyframeKind::Pli
                }
                KeyframeRequestKind::Fir => {
                    metrics.firs_received += 1;
                    KeyframeKind::Fir
                }
            };
            Some(Event::KeyframeRequest(kind))
        }
        SEvent::EgressBitrateEstimate(b) => match b {
            BweKind::Remb { estimate, .. } => Some(Event::BitrateEstimate {
                bps: estimate.as_u64(),
                source: BitrateSource::Remb,
            }),
            BweKind::Twcc { estimate, .. } => Some(Event::BitrateEstimate {
                bps: estimate.as_u64(),
                source: BitrateSource::Twcc,
            }),
            _ => None,
        },
        SEvent::StreamPaused(s) => {
            let kind = track_kind(p, s.mid)?;
            Some(Event::StreamPaused {
                kind,
                paused: s.paused,
            })
        }
        SEvent::MediaIngressStats(s) => {
            metrics.nacks_sent += nack_delta(p, s.mid, false, s.nacks);
            None
        }
        SEvent::MediaEgressStats(s) => {
            metrics.nacks_received += nack_delta(p, s.mid, true, s.nacks);
            None
        }
        // Nothing to report before the connection is up.
        SEvent::PeerStats(_) if !p.connected => None,
        SEvent::PeerStats(s) => Some(Event::Stats(ParticipantStats {
            rtt: s.rtt,
            ingress_loss: s.ingress_loss_fraction,
            egress_loss: s.egress_loss_fraction,
            bytes_in: s.peer_bytes_rx,
            bytes_out: s.peer_bytes_tx,
        })),
        SEvent::Closed => {
            *remote_closed = true;
            None
        }
        _ => None,
    }
}

fn track_kind(p: &Participant, mid: Mid) -> Option<MediaKind> {
    [&p.audio, &p.video]
        .into_iter()
        .flatten()
        .find(|t| t.mid == mid)
        .map(|t| t.info.kind)
}

fn nack_delta(p: &mut Participant, mid: Mid, egress: bool, total: u64) -> u64 {
    match p
        .nack_counts
        .iter_mut()
        .find(|(m, e, _)| *m == mid && *e == egress)
    {
        Some((_, _, last)) => {
            let d = total.saturating_sub(*last);
            *last = total;
            d
        }
        None => {
            p.nack_counts.push((mid, egress, total));
            total
        }
    }
}

fn media_packet(p: &Participant, pkt: RtpPacket) -> Option<MediaPacket> {
    let pt = *pkt.header.payload_type;
    let codec = p
        .payload_types
        .iter()
        .find(|(t, _)| *t == pt)
        .map(|(_, c)| *c)?;
    let ext = &pkt.header.ext_vals;
    let audio_level = ext.audio_level.map(|l| AudioLevel {
        level: l.unsigned_abs().min(127),
        voice: ext.voice_activity.unwrap_or(false),
    });
    Some(MediaPacket {
        kind: codec.kind(),
        codec,
        payload_type: pt,
        ssrc: *pkt.header.ssrc,
        seq: *pkt.seq_no,
        timestamp: pkt.header.timestamp,
        marker: pkt.header.marker,
        payload: pkt.payload,
        audio_level,
        arrival: pkt.timestamp,
    })
}
