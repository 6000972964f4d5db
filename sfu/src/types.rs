//! The public vocabulary of the endpoint: identifiers, configuration, events, outputs, errors.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One WebRTC peer connection held by the [`Endpoint`](crate::Endpoint). Never reused within
/// one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// A media direction, always from the point of view it is stated from (ours in
/// [`NegotiatedMedia`] and [`AnswerOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The same direction seen from the other end.
    pub fn invert(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    pub(crate) fn sdp_attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    pub(crate) fn from_str0m(d: str0m::media::Direction) -> Direction {
        use str0m::media::Direction as D;
        match d {
            D::SendRecv => Direction::SendRecv,
            D::SendOnly => Direction::SendOnly,
            D::RecvOnly => Direction::RecvOnly,
            D::Inactive => Direction::Inactive,
        }
    }
}

/// Codecs this endpoint negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Pcmu,
    Pcma,
    /// RFC 4733 DTMF events, negotiated next to the audio codec at its clock rate.
    TelephoneEvent,
    H264,
    Vp8,
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus | Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => MediaKind::Audio,
            Codec::H264 | Codec::Vp8 => MediaKind::Video,
        }
    }
}

/// Video codecs in order of preference ([`EndpointConfig::video_codecs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 with packetization-mode=1; profile-level-id 42e01f preferred, then any constrained
    /// baseline, then baseline.
    H264,
    Vp8,
}

/// RFC 6464 client-to-mixer audio level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// 0..=127, meaning 0..=-127 dBov (0 is the loudest).
    pub level: u8,
    /// The V bit: the sender's voice activity flag.
    pub voice: bool,
}

/// Endpoint configuration. `Default` gives no candidates: set [`EndpointConfig::candidates`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Announced host candidates: the address(es) peers reach the one UDP socket at (public
    /// address and port behind a 1:1 NAT). At least one.
    pub candidates: Vec<SocketAddr>,
    /// Video codecs in order of preference; one is chosen per offer.
    pub video_codecs: Vec<VideoCodec>,
    /// A participant that has not connected (ICE + DTLS) this long after its offer is closed
    /// with [`CloseReason::ConnectTimeout`].
    pub connect_timeout: Duration,
    /// A connected participant whose ICE stays disconnected this long is closed with
    /// [`CloseReason::IceTimeout`]. (str0m's ICE-lite agent declares a pair dead after 15 s
    /// without binding requests; browsers send them every few seconds.)
    pub disconnect_timeout: Duration,
    /// Accepting more offers than this fails with [`Error::TooManyParticipants`].
    pub max_participants: usize,
    /// How often [`Event::Stats`] is produced per participant (and NACK counters updated).
    pub stats_interval: Duration,
    /// Enable str0m's send-side bandwidth estimation (TWCC) with this initial estimate in bit/s
    /// for participants we send video to; estimates then arrive as [`Event::BitrateEstimate`]. REMB from the peer is surfaced
    /// either way.
    pub bwe_initial_bitrate: Option<u64>,
    /// This endpoint as one shard of several that share one UDP socket (see
    /// [`driver::spawn_sharded`](crate::driver)): its participant ids are `index` modulo
    /// `count`, its ICE ufrags start with the index, and it records the demultiplexing keys it
    /// adds and removes for its driver ([`Endpoint::take_route_changes`](crate::Endpoint)).
    /// The default is the whole endpoint (index 0 of 1).
    pub shard: Shard,
}

/// Which of `count` shards an endpoint is; see [`EndpointConfig::shard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The only shard: an endpoint on its own.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The shard that holds participant `id` among `count` shards.
    pub fn of(id: ParticipantId, count: u32) -> u32 {
        (id.0 % u64::from(count.max(1))) as u32
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

/// A demultiplexing key a sharded endpoint started or stopped answering to; its driver
/// publishes these so that the socket's reader hands each datagram to the right shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// STUN binding requests to this local ufrag are ours (from now on / no longer).
    Ufrag { ufrag: String, ours: bool },
    /// Datagrams from this peer address are ours (from now on / no longer).
    Addr { addr: SocketAddr, ours: bool },
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            candidates: Vec::new(),
            video_codecs: vec![VideoCodec::H264, VideoCodec::Vp8],
            connect_timeout: Duration::from_secs(20),
            disconnect_timeout: Duration::from_secs(10),
            max_participants: 2000,
            stats_interval: Duration::from_secs(1),
            bwe_initial_bitrate: None,
            shard: Shard::WHOLE,
        }
    }
}

/// What we want for one offer, from our point of view; the negotiated direction is this
/// intersected with what the offer allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerOptions {
    pub audio: Direction,
    pub video: Direction,
}

impl Default for AnswerOptions {
    fn default() -> Self {
        AnswerOptions {
            audio: Direction::SendRecv,
            video: Direction::SendRecv,
        }
    }
}

/// One negotiated m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedMedia {
    pub kind: MediaKind,
    /// The codec both directions use.
    pub codec: Codec,
    /// Its payload type (the offer's number).
    pub payload_type: u8,
    /// RTP clock rate of `codec`.
    pub clock_rate: u32,
    /// Our direction as answered: `sends()` means write_* may send.
    pub direction: Direction,
    /// Telephone-event payload type negotiated next to the audio codec.
    pub telephone_event: Option<u8>,
}

/// The result of accepting an offer or a re-offer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub participant: ParticipantId,
    /// The SDP answer to send back (ICE-lite, our host candidate(s), DTLS fingerprint).
    pub sdp: String,
    pub audio: Option<NegotiatedMedia>,
    pub video: Option<NegotiatedMedia>,
}

/// An incoming RTP packet, decrypted, before any jitter buffer.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    pub kind: MediaKind,
    pub codec: Codec,
    pub payload_type: u8,
    pub ssrc: u32,
    /// Extended (rollover-counted) sequence number; `seq as u16` is the header's.
    pub seq: u64,
    /// RTP timestamp as in the header.
    pub timestamp: u32,
    pub marker: bool,
    /// RTP payload (no header, padding removed; RTX already unwrapped).
    pub payload: Arc<[u8]>,
    /// From the RFC 6464 header extension, if the sender set it.
    pub audio_level: Option<AudioLevel>,
    /// When the datagram carrying it was handed to the endpoint.
    pub arrival: Instant,
}

/// PLI or FIR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeKind {
    Pli,
    Fir,
}

/// Where a bitrate estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitrateSource {
    /// The peer's REMB for our outgoing media.
    Remb,
    /// Our own TWCC-based estimate ([`EndpointConfig::bwe_initial_bitrate`]).
    Twcc,
}

/// Why a participant ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// [`Endpoint::close`](crate::Endpoint::close) was called.
    Local,
    /// The peer closed DTLS (close_notify).
    Remote,
    /// ICE + DTLS did not complete within [`EndpointConfig::connect_timeout`].
    ConnectTimeout,
    /// ICE stayed disconnected for [`EndpointConfig::disconnect_timeout`].
    IceTimeout,
    /// A protocol failure (DTLS alert, fingerprint mismatch, SRTP setup, ...).
    Failed(String),
    /// The WebRTC stack panicked on this participant's input; the participant was discarded
    /// (a bug: counted in [`Metrics::panics`]).
    Internal,
}

impl CloseReason {
    /// True for the reasons that are failures rather than a hangup from either side.
    pub fn is_failure(&self) -> bool {
        !matches!(self, CloseReason::Local | CloseReason::Remote)
    }
}

/// Connection statistics, every [`EndpointConfig::stats_interval`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParticipantStats {
    pub rtt: Option<Duration>,
    /// Fraction lost of what the peer sends us (0.0..=1.0).
    pub ingress_loss: Option<f32>,
    /// Fraction lost of what we send, as the peer reports it.
    pub egress_loss: Option<f32>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What happens to a participant. Every participant ends with exactly one [`Event::Closed`];
/// its id means nothing after that.
#[derive(Debug, Clone)]
pub enum Event {
    /// ICE and DTLS are up, SRTP keys derived: media flows.
    Connected,
    /// ICE consent lost (no binding requests): transient until [`Event::Reconnected`] or
    /// [`Event::Closed`] with [`CloseReason::IceTimeout`].
    Disconnected,
    /// ICE is back after [`Event::Disconnected`].
    Reconnected,
    /// An incoming RTP packet.
    Media(MediaPacket),
    /// The peer asks for a keyframe of the video we send.
    KeyframeRequest(KeyframeKind),
    /// An estimate of the bitrate we may send to this peer.
    BitrateEstimate {
        bps: u64,
        source: BitrateSource,
    },
    /// An incoming stream stopped (no packets for a while) or resumed.
    StreamPaused {
        kind: MediaKind,
        paused: bool,
    },
    Stats(ParticipantStats),
    /// The participant is gone (the only terminal event).
    Closed(CloseReason),
}

/// A datagram to send from the one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local candidate address it leaves from (the socket's announced address).
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What [`Endpoint::poll_output`](crate::Endpoint::poll_output) yields.
#[derive(Debug)]
pub enum Output {
    Transmit(Transmit),
    Event(ParticipantId, Event),
    /// Nothing more until this time (or new input): call
    /// [`Endpoint::handle_timeout`](crate::Endpoint::handle_timeout) then.
    Timeout(Instant),
}

/// Counters since the endpoint started (gauges where noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Gauge: participants currently held.
    pub participants: u64,
    pub participants_accepted: u64,
    pub participants_closed: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Datagrams that are none of STUN/DTLS/RTP/RTCP, or too short/garbled to be one.
    pub malformed_dropped: u64,
    /// Well-formed datagrams no participant claims (unknown source address, unknown ICE ufrag,
    /// failed STUN integrity).
    pub unknown_dropped: u64,
    pub rtp_in: u64,
    /// RTP packets handed to the stack by write_audio/write_video (retransmissions excluded).
    pub rtp_out: u64,
    /// NACKs the peers sent us (answered from the retransmission cache).
    pub nacks_received: u64,
    /// NACKs we sent the peers.
    pub nacks_sent: u64,
    pub plis_received: u64,
    pub firs_received: u64,
    /// Keyframe requests (PLI) we sent on `request_keyframe`.
    pub plis_sent: u64,
    /// Keyframe requests (FIR) we sent on `request_keyframe_kind`.
    pub firs_sent: u64,
    /// Panics caught inside the WebRTC stack (bugs; the participant is discarded).
    pub panics: u64,
    /// write_audio/write_video calls refused (not connected, not sending, no such m-line).
    pub writes_refused: u64,
    /// Driver only: events dropped because the event channel was full.
    pub events_dropped: u64,
    /// Driver only: `send_to` failures.
    pub send_errors: u64,
    /// Driver only: the endpoint threads (shards) that carry it.
    pub shards: u64,
    /// Sharded driver only: datagrams the socket's reader dropped because the shard they were
    /// for had too many waiting (the shard fell behind).
    pub inbox_dropped: u64,
    /// Driver only: datagrams the kernel dropped because the socket's receive buffer was
    /// full (the driver fell behind), from `SO_MEMINFO` (0 where unavailable).
    pub socket_drops: u64,
    /// Driver only: the socket's receive buffer as granted by the kernel, bytes.
    pub socket_recv_buffer: u64,
}

/// Errors of the endpoint API (never of network input, which is dropped and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid offer: {0}")]
    InvalidOffer(String),
    #[error("no common {0:?} codec")]
    NoCommonCodec(MediaKind),
    #[error("too many participants")]
    TooManyParticipants,
    #[error("unknown participant {0}")]
    UnknownParticipant(ParticipantId),
    #[error("participant not connected")]
    NotConnected,
    #[error("no negotiated {0:?} m-line")]
    NoMedia(MediaKind),
    #[error("{0:?} is not negotiated for sending")]
    NotSending(MediaKind),
    #[error("no incoming {0:?} stream yet")]
    NotReceiving(MediaKind),
    #[error("the driver has stopped")]
    DriverGone,
}
