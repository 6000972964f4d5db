//! The thin tokio driver: **the only IO of this crate**. It owns one `UdpSocket` and the wall
//! clock, runs an [`Endpoint`] in one task, takes commands from any number of [`SfuHandle`]s and
//! delivers `(ParticipantId, Event)` on a bounded channel.
//!
//! Three bounded queues feed it: commands (offers, closes, keyframe requests, metrics), audio
//! batches (a mixer tick's packets) and video batches (what a conference's video thread
//! produced at once). A few waiting commands (`COMMANDS_PER_TURN`) are served before anything
//! else on each turn, so an offer never waits behind media; batches are written in chunks with
//! the socket read in between. Writers wait for room when a queue is full.
//!
//! Events are never reordered. When the event channel is full, media packets, stats and
//! bitrate estimates are dropped (counted in [`Metrics::events_dropped`]); lifecycle events
//! and keyframe requests wait for room, and while they wait later droppable events are dropped
//! rather than overtaking them. The consumer should read events promptly (the conference
//! runtime does, every 20 ms tick at the latest).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{
    Answer, AnswerOptions, AudioLevel, Endpoint, EndpointConfig, Error, Event, KeyframeKind,
    Metrics, Output, ParticipantId,
};

mod shards;

/// Sizes of the driver's channels.
#[derive(Debug, Clone, Copy)]
pub struct DriverOptions {
    /// Capacity of the event channel.
    pub event_capacity: usize,
    /// Capacity of the command channel (offers, closes, keyframe requests; senders wait for
    /// room when it is full).
    pub command_capacity: usize,
    /// Video batches ([`SfuHandle::write_video_batch`]) queued at most; writers wait for room.
    pub video_batches: usize,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            event_capacity: 8192,
            command_capacity: 8192,
            video_batches: 256,
        }
    }
}

/// Events from the driver: `(participant, event)`.
pub type Events = mpsc::Receiver<(ParticipantId, Event)>;

/// What the driver task runs on; most users call [`bind`] instead.
#[derive(Debug)]
enum Command {
    AcceptOffer {
        offer: String,
        opts: AnswerOptions,
        reply: oneshot::Sender<Result<Answer, Error>>,
    },
    AcceptReoffer {
        id: ParticipantId,
        offer: String,
        opts: AnswerOptions,
        reply: oneshot::Sender<Result<Answer, Error>>,
    },
    WriteAudio {
        id: ParticipantId,
        payload: Arc<[u8]>,
        timestamp: u32,
        level: Option<AudioLevel>,
    },
    RequestKeyframe {
        id: ParticipantId,
        kind: KeyframeKind,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Close {
        id: ParticipantId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Metrics {
        reply: oneshot::Sender<Metrics>,
    },
    Shutdown,
}

/// One audio packet of [`SfuHandle::write_audio_batch_blocking`]: the arguments of
/// [`Endpoint::write_audio`].
#[derive(Debug, Clone)]
pub struct AudioWrite {
    pub id: ParticipantId,
    pub payload: Arc<[u8]>,
    pub timestamp: u32,
    pub level: Option<AudioLevel>,
}

/// One video packet of [`SfuHandle::write_video_batch`]: the arguments of
/// [`Endpoint::write_video`].
#[derive(Debug, Clone)]
pub struct VideoWrite {
    pub id: ParticipantId,
    pub payload: Arc<[u8]>,
    pub timestamp: u32,
    pub marker: bool,
}

/// A cheap, cloneable handle to a running driver (one endpoint, or the shards of a sharded
/// one: calls about a participant go to the shard that holds it, an offer to the shard with
/// the fewest participants). The driver stops when every handle is dropped or
/// [`SfuHandle::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct SfuHandle {
    shards: Arc<[ShardLink]>,
    /// Offers made so far: a burst of offers to equally loaded shards goes round them.
    offers: Arc<AtomicUsize>,
    /// The socket reader's counters (sharded drivers only).
    reader: Option<Arc<shards::ReaderStats>>,
    local_addr: SocketAddr,
}

/// The queues to one driver loop (the endpoint, or one shard of it).
#[derive(Debug)]
struct ShardLink {
    tx: mpsc::Sender<Command>,
    /// Audio batches have their own short queue: a driver that falls behind makes the
    /// mixing clock wait (and skip periods) instead of letting latency pile up.
    audio_tx: mpsc::Sender<Vec<AudioWrite>>,
    /// Video packets have a queue of their own too, so that offers, closes and keyframe
    /// requests never wait behind the video of busy conferences.
    video_tx: mpsc::Sender<Vec<VideoWrite>>,
    /// Participants the shard holds (a sharded driver's shards publish it).
    load: Arc<AtomicU64>,
}

/// A driver loop's queues: its link (for the handle) and its ends (for the loop).
fn queues(opts: &DriverOptions) -> (ShardLink, Queues) {
    let (tx, commands) = mpsc::channel(opts.command_capacity.max(1));
    let (audio_tx, audio) = mpsc::channel(AUDIO_BATCHES);
    let (video_tx, video) = mpsc::channel(opts.video_batches.max(1));
    let link = ShardLink {
        tx,
        audio_tx,
        video_tx,
        load: Arc::new(AtomicU64::new(0)),
    };
    (
        link,
        Queues {
            commands,
            audio,
            video,
        },
    )
}

/// Audio batches (mixer ticks) queued for the driver at most.
const AUDIO_BATCHES: usize = 4;

/// Bind `bind_addr` and start a driver with `config`. When `config.candidates` is empty the
/// socket's own address is announced (it must then be a concrete address, not a wildcard).
pub async fn bind(
    bind_addr: SocketAddr,
    mut config: EndpointConfig,
    opts: DriverOptions,
) -> io::Result<(SfuHandle, Events, JoinHandle<()>)> {
    let socket = UdpSocket::bind(bind_addr).await?;
    let local = socket.local_addr()?;
    if config.candidates.is_empty() {
        config.candidates.push(local);
    }
    let endpoint = Endpoint::new(config).map_err(io::Error::other)?;
    Ok(spawn(socket, endpoint, opts))
}

/// Kernel buffer asked for on each side of the socket. One socket carries every participant:
/// at 1000 participants a 100 ms stall of the driver is ~5000 datagrams in and a tick of 1000
/// out; Linux's usual default (~208 KiB) holds a few hundred.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Asks for [`SOCKET_BUFFER`] on both sides of `socket`; the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`, which is logged when it is less.
fn grow_buffers(s: socket2::SockRef<'_>) {
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    // Linux reports twice what was set (it counts its bookkeeping).
    let granted = (
        s.recv_buffer_size().unwrap_or(0),
        s.send_buffer_size().unwrap_or(0),
    );
    if granted.0 < SOCKET_BUFFER || granted.1 < SOCKET_BUFFER {
        tracing::warn!(
            recv = granted.0,
            send = granted.1,
            wanted = SOCKET_BUFFER,
            "the media socket's kernel buffers are small; raise net.core.rmem_max and \
             net.core.wmem_max so bursts are not dropped"
        );
    } else {
        tracing::debug!(recv = granted.0, send = granted.1, "media socket buffers");
    }
}

/// Datagrams the kernel dropped on `socket` for lack of receive buffer (`SO_MEMINFO`).
#[cfg(target_os = "linux")]
fn socket_drops(socket: &socket2::SockRef<'_>) -> u64 {
    use std::os::fd::AsRawFd;
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the call; the fd is
    // open for as long as `socket` is borrowed.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r == 0 && len as usize > libc::SK_MEMINFO_DROPS as usize * 4 {
        u64::from(info[libc::SK_MEMINFO_DROPS as usize])
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn socket_drops(_socket: &socket2::SockRef<'_>) -> u64 {
    0
}

/// Run `endpoint` on `socket` on a thread of its own (named `comet-sfu`, with a
/// single-threaded tokio runtime): the endpoint's loop then never waits behind other tasks of
/// the caller's runtime, whatever they do. The returned task (on the caller's runtime) ends
/// when the driver does; aborting it stops the driver.
pub fn spawn_dedicated(
    socket: std::net::UdpSocket,
    endpoint: Endpoint,
    opts: DriverOptions,
) -> io::Result<(SfuHandle, Events, JoinHandle<()>)> {
    socket.set_nonblocking(true)?;
    let (parts_tx, parts_rx) = std::sync::mpsc::channel();
    let thread = shards::start_thread("comet-sfu".into(), move || async move {
        let socket = UdpSocket::from_std(socket)?;
        let (handle, events, task) = spawn(socket, endpoint, opts);
        let _ = parts_tx.send((handle, events));
        Ok(async move {
            let _ = task.await;
        })
    })?;
    // Sent before the thread said it started.
    let (handle, events) = parts_rx
        .recv()
        .map_err(|_| io::Error::other("the endpoint thread did not start"))?;
    let task = tokio::spawn(thread.finished());
    Ok((handle, events, task))
}

/// Run `endpoint` on `socket` in a new tokio task.
pub fn spawn(
    socket: UdpSocket,
    endpoint: Endpoint,
    opts: DriverOptions,
) -> (SfuHandle, Events, JoinHandle<()>) {
    grow_buffers(socket2::SockRef::from(&socket));
    let local_addr = socket
        .local_addr()
        .unwrap_or_else(|_| endpoint.config().candidates[0]);
    let (link, queues) = queues(&opts);
    let (ev_tx, ev_rx) = mpsc::channel(opts.event_capacity.max(1));
    let task = tokio::spawn(run(Net::Socket(socket), endpoint, queues, ev_tx));
    (
        SfuHandle {
            shards: Arc::new([link]),
            offers: Arc::new(AtomicUsize::new(0)),
            reader: None,
            local_addr,
        },
        ev_rx,
        task,
    )
}

/// Run `endpoints`, the shards of one endpoint (`endpoints[i]` configured as shard `i` of
/// `endpoints.len()`, see [`EndpointConfig::shard`](crate::EndpointConfig)), on one socket:
/// each shard on a thread of its own (`comet-sfu-<i>`), and one more thread
/// (`comet-sfu-rx`) that reads the socket and hands every datagram to the shard whose
/// participant it is for (by the ICE ufrag of a binding request, else by the source address
/// the shard's endpoint learned from one). Each shard sends on the same socket itself. One
/// endpoint is run as [`spawn_dedicated`] runs it. The returned task (on the caller's
/// runtime) ends when every thread has; aborting it stops them all.
pub fn spawn_sharded(
    socket: std::net::UdpSocket,
    mut endpoints: Vec<Endpoint>,
    opts: DriverOptions,
) -> io::Result<(SfuHandle, Events, JoinHandle<()>)> {
    let count = endpoints.len();
    if count <= 1 {
        let endpoint = endpoints
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no endpoint"))?;
        return spawn_dedicated(socket, endpoint, opts);
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let want = crate::Shard {
            index: i as u32,
            count: count as u32,
        };
        if ep.config().shard != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("endpoint {i} is not configured as shard {i} of {count}"),
            ));
        }
    }
    socket.set_nonblocking(true)?;
    grow_buffers(socket2::SockRef::from(&socket));
    let local_addr = socket.local_addr()?;
    let (ev_tx, ev_rx) = mpsc::channel(opts.event_capacity.max(1));
    let routes = shards::Routes::default();
    let stats = Arc::new(shards::ReaderStats::default());
    let mut links = Vec::with_capacity(count);
    let mut inboxes = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count + 1);
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        let (link, queues) = queues(&opts);
        let (inbox_tx, inbox) = shards::inbox();
        let shard = shards::ShardNet::parts(
            i as u32,
            inbox,
            socket.try_clone()?,
            routes.clone(),
            link.load.clone(),
        );
        let events = ev_tx.clone();
        threads.push(shards::start_thread(
            format!("comet-sfu-{i}"),
            move || async move {
                let net = Net::Shard(shard.register()?);
                Ok(run(net, endpoint, queues, events))
            },
        )?);
        links.push(link);
        inboxes.push(inbox_tx);
    }
    drop(ev_tx);
    let reader_stats = stats.clone();
    threads.push(shards::start_thread(
        "comet-sfu-rx".into(),
        move || async move {
            let fd = shards::register(socket, tokio::io::Interest::READABLE)?;
            Ok(shards::read(fd, routes, inboxes, reader_stats))
        },
    )?);
    let task = tokio::spawn(async move {
        for t in threads {
            t.finished().await;
        }
    });
    Ok((
        SfuHandle {
            shards: links.into(),
            offers: Arc::new(AtomicUsize::new(0)),
            reader: Some(stats),
            local_addr,
        },
        ev_rx,
        task,
    ))
}

impl SfuHandle {
    /// The local address of the driver's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many shards carry the endpoint (1 unless started with [`spawn_sharded`]).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard that holds `id`.
    fn link(&self, id: ParticipantId) -> &ShardLink {
        &self.shards[crate::Shard::of(id, self.shards.len() as u32) as usize]
    }

    /// The shard for a new participant: the one with the fewest, and among equals the next
    /// in turn (a burst of offers, before the shards have counted them, goes round).
    fn least_loaded(&self) -> &ShardLink {
        let n = self.shards.len();
        if n == 1 {
            return &self.shards[0];
        }
        let turn = self.offers.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| (turn + k) % n)
            .min_by_key(|&i| self.shards[i].load.load(Ordering::Relaxed))
            .map_or(&self.shards[0], |i| &self.shards[i])
    }

    /// [`Endpoint::accept_offer`].
    pub async fn accept_offer(
        &self,
        offer: impl Into<String>,
        opts: AnswerOptions,
    ) -> Result<Answer, Error> {
        let (reply, rx) = oneshot::channel();
        send(
            self.least_loaded(),
            Command::AcceptOffer {
                offer: offer.into(),
                opts,
                reply,
            },
        )
        .await?;
        rx.await.map_err(|_| Error::DriverGone)?
    }

    /// [`Endpoint::accept_reoffer`].
    pub async fn accept_reoffer(
        &self,
        id: ParticipantId,
        offer: impl Into<String>,
        opts: AnswerOptions,
    ) -> Result<Answer, Error> {
        let (reply, rx) = oneshot::channel();
        send(
            self.link(id),
            Command::AcceptReoffer {
                id,
                offer: offer.into(),
                opts,
                reply,
            },
        )
        .await?;
        rx.await.map_err(|_| Error::DriverGone)?
    }

    /// [`Endpoint::write_audio`], fire and forget (refused writes are counted in
    /// [`Metrics::writes_refused`]).
    pub async fn write_audio(
        &self,
        id: ParticipantId,
        payload: Arc<[u8]>,
        timestamp: u32,
        level: Option<AudioLevel>,
    ) -> Result<(), Error> {
        send(
            self.link(id),
            Command::WriteAudio {
                id,
                payload,
                timestamp,
                level,
            },
        )
        .await
    }

    /// Many [`Endpoint::write_audio`]s in one command (a mixer tick's output), from a thread
    /// that is not a tokio runtime's: waits while the command channel is full.
    ///
    /// # Panics
    /// When called from within an asynchronous execution context (tokio's rule for
    /// `blocking_send`).
    pub fn write_audio_batch_blocking(&self, writes: Vec<AudioWrite>) -> Result<(), Error> {
        for (link, part) in self.split(writes, |w| w.id) {
            link.audio_tx
                .blocking_send(part)
                .map_err(|_| Error::DriverGone)?;
        }
        Ok(())
    }

    /// Many [`Endpoint::write_video`]s (what a conference's video thread produced at once),
    /// fire and forget; waits while [`DriverOptions::video_batches`] batches are queued.
    /// Refused writes are counted in [`Metrics::writes_refused`].
    pub async fn write_video_batch(&self, writes: Vec<VideoWrite>) -> Result<(), Error> {
        for (link, part) in self.split(writes, |w| w.id) {
            link.video_tx
                .send(part)
                .await
                .map_err(|_| Error::DriverGone)?;
        }
        Ok(())
    }

    /// A batch of writes by shard, in order within each; empty parts left out.
    fn split<W>(
        &self,
        writes: Vec<W>,
        id: impl Fn(&W) -> ParticipantId,
    ) -> Vec<(&ShardLink, Vec<W>)> {
        if writes.is_empty() {
            return Vec::new();
        }
        let n = self.shards.len();
        if n == 1 {
            return vec![(&self.shards[0], writes)];
        }
        let mut parts: Vec<Vec<W>> = (0..n).map(|_| Vec::new()).collect();
        for w in writes {
            parts[crate::Shard::of(id(&w), n as u32) as usize].push(w);
        }
        self.shards
            .iter()
            .zip(parts)
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }

    /// [`Endpoint::request_keyframe`].
    pub async fn request_keyframe(&self, id: ParticipantId) -> Result<(), Error> {
        self.request_keyframe_kind(id, KeyframeKind::Pli).await
    }

    /// [`Endpoint::request_keyframe_kind`].
    pub async fn request_keyframe_kind(
        &self,
        id: ParticipantId,
        kind: KeyframeKind,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        send(self.link(id), Command::RequestKeyframe { id, kind, reply }).await?;
        rx.await.map_err(|_| Error::DriverGone)?
    }

    /// [`Endpoint::close`].
    pub async fn close(&self, id: ParticipantId) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        send(self.link(id), Command::Close { id, reply }).await?;
        rx.await.map_err(|_| Error::DriverGone)?
    }

    /// The endpoint's counters plus the driver's (over every shard, and the datagrams the
    /// socket's reader of a sharded driver dropped itself).
    pub async fn metrics(&self) -> Result<Metrics, Error> {
        let mut total = Metrics::default();
        for link in self.shards.iter() {
            let (reply, rx) = oneshot::channel();
            send(link, Command::Metrics { reply }).await?;
            total.merge(&rx.await.map_err(|_| Error::DriverGone)?);
        }
        if let Some(reader) = &self.reader {
            reader.add_to(&mut total);
        }
        Ok(total)
    }

    /// Stop the driver (participants are dropped without closing).
    pub async fn shutdown(&self) {
        for link in self.shards.iter() {
            let _ = link.tx.send(Command::Shutdown).await;
        }
    }

    /// Resolves once the driver has stopped (every shard's command queue is gone).
    pub async fn closed(&self) {
        for link in self.shards.iter() {
            link.tx.closed().await;
        }
    }
}

async fn send(link: &ShardLink, c: Command) -> Result<(), Error> {
    link.tx.send(c).await.map_err(|_| Error::DriverGone)
}

impl Metrics {
    /// Adds another shard's counters; the socket's own numbers are the same socket's.
    fn merge(&mut self, o: &Metrics) {
        // Destructured so that a new field cannot be forgotten here.
        let Metrics {
            participants,
            participants_accepted,
            participants_closed,
            datagrams_in,
            datagrams_out,
            bytes_in,
            bytes_out,
            malformed_dropped,
            unknown_dropped,
            rtp_in,
            rtp_out,
            nacks_received,
            nacks_sent,
            plis_received,
            firs_received,
            plis_sent,
            firs_sent,
            panics,
            writes_refused,
            events_dropped,
            send_errors,
            shards,
            inbox_dropped,
            socket_drops,
            socket_recv_buffer,
        } = *o;
        self.participants += participants;
        self.participants_accepted += participants_accepted;
        self.participants_closed += participants_closed;
        self.datagrams_in += datagrams_in;
        self.datagrams_out += datagrams_out;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.malformed_dropped += malformed_dropped;
        self.unknown_dropped += unknown_dropped;
        self.rtp_in += rtp_in;
        self.rtp_out += rtp_out;
        self.nacks_received += nacks_received;
        self.nacks_sent += nacks_sent;
        self.plis_received += plis_received;
        self.firs_received += firs_received;
        self.plis_sent += plis_sent;
        self.firs_sent += firs_sent;
        self.panics += panics;
        self.writes_refused += writes_refused;
        self.events_dropped += events_dropped;
        self.send_errors += send_errors;
        self.shards += shards;
        self.inbox_dropped += inbox_dropped;
        self.socket_drops = self.socket_drops.max(socket_drops);
        self.socket_recv_buffer = self.socket_recv_buffer.max(socket_recv_buffer);
    }
}

/// Droppable when the consumer is behind: there is always a newer one coming.
fn droppable(ev: &Event) -> bool {
    matches!(
        ev,
        Event::Media(_) | Event::Stats(_) | Event::BitrateEstimate { .. }
    )
}

struct Delivery {
    tx: mpsc::Sender<(ParticipantId, Event)>,
    pending: VecDeque<(ParticipantId, Event)>,
    dropped: u64,
}

impl Delivery {
    fn deliver(&mut self, id: ParticipantId, ev: Event) {
        if self.tx.is_closed() {
            return;
        }
        if !self.pending.is_empty() {
            if droppable(&ev) {
                self.dropped += 1;
            } else {
                self.pending.push_back((id, ev));
            }
            return;
        }
        match self.tx.try_send((id, ev)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((id, ev))) => {
                if droppable(&ev) {
                    self.dropped += 1;
                } else {
                    self.pending.push_back((id, ev));
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Datagrams read per wakeup before the endpoint's output is flushed.
const RECV_BATCH: usize = 64;
/// Writes of a batch (audio or video) between two looks at the socket.
const WRITE_CHUNK: usize = 64;
/// Waiting commands served at the start of each turn of the driver, before anything else.
const COMMANDS_PER_TURN: usize = 16;

/// What the driver task reads besides the socket.
struct Queues {
    commands: mpsc::Receiver<Command>,
    audio: mpsc::Receiver<Vec<AudioWrite>>,
    video: mpsc::Receiver<Vec<VideoWrite>>,
}

/// A batch of media writes taken from its queue.
enum Batch {
    Audio(Vec<AudioWrite>),
    Video(Vec<VideoWrite>),
}

/// Sends what the endpoint has queued and delivers its events; returns when to call
/// `handle_timeout` next. A shard publishes its routes first: an address learned from a
/// binding request must be routed before our response lets the peer go on to DTLS (what the
/// sends themselves remove, a closed participant's keys, waits for the next flush).
async fn flush(
    net: &Net,
    ep: &mut Endpoint,
    delivery: &mut Delivery,
    send_errors: &mut u64,
) -> Instant {
    net.publish(ep);
    loop {
        match ep.poll_output(Instant::now()) {
            Output::Transmit(t) => {
                if net.send_to(&t.bytes, t.to).await.is_err() {
                    *send_errors += 1;
                }
            }
            Output::Event(id, ev) => delivery.deliver(id, ev),
            Output::Timeout(t) => return t,
        }
    }
}

/// Where a driver's datagrams come from and go to.
enum Net {
    /// The driver owns the socket (the whole endpoint on one thread).
    Socket(UdpSocket),
    /// One shard of several: the socket's reader hands it its datagrams.
    Shard(shards::ShardNet),
}

/// What [`Net::recv`] waited for.
enum Received {
    /// One datagram of this length in the buffer.
    One(usize, SocketAddr),
    /// Datagrams from the reader.
    Batch(Vec<shards::Datagram>),
    /// A receive error that carries no datagram (e.g. ICMP-induced).
    Nothing,
    /// The reader is gone: the driver stops.
    Closed,
}

impl Net {
    async fn recv(&mut self, buf: &mut [u8]) -> Received {
        match self {
            Net::Socket(s) => match s.recv_from(buf).await {
                Ok((n, from)) => Received::One(n, from),
                Err(_) => Received::Nothing,
            },
            Net::Shard(s) => match s.inbox.recv().await {
                Some(batch) => Received::Batch(batch),
                None => Received::Closed,
            },
        }
    }

    async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            Net::Socket(s) => s.send_to(bytes, to).await,
            Net::Shard(s) => s.send_to(bytes, to).await,
        }
    }

    /// Hands the endpoint up to `max` datagrams that are already waiting (never waits).
    fn receive_ready(&mut self, ep: &mut Endpoint, buf: &mut [u8], local: SocketAddr, max: usize) {
        match self {
            Net::Socket(socket) => {
                for _ in 0..max {
                    match socket.try_recv_from(buf) {
                        Ok((n, from)) => ep.handle_datagram(from, local, &buf[..n], Instant::now()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP-induced errors carry no datagram; the next may.
                        Err(_) => continue,
                    }
                }
            }
            Net::Shard(s) => {
                let mut taken = 0;
                while taken < max {
                    let Some(batch) = s.inbox.try_recv() else {
                        break;
                    };
                    taken += batch.len();
                    handle_batch(ep, local, batch);
                }
            }
        }
    }

    /// A shard publishes the demultiplexing keys its endpoint added or removed, and its
    /// participant count; a whole endpoint has nothing to publish.
    fn publish(&self, ep: &mut Endpoint) {
        if let Net::Shard(s) = self {
            s.publish(ep);
        }
    }

    fn socket_ref(&self) -> socket2::SockRef<'_> {
        match self {
            Net::Socket(s) => socket2::SockRef::from(s),
            Net::Shard(s) => socket2::SockRef::from(s.out.get_ref()),
        }
    }
}

fn handle_batch(ep: &mut Endpoint, local: SocketAddr, batch: Vec<shards::Datagram>) {
    let now = Instant::now();
    for d in batch {
        ep.handle_datagram(d.from, local, &d.bytes, now);
    }
}

async fn run(
    net: Net,
    mut ep: Endpoint,
    mut queues: Queues,
    ev_tx: mpsc::Sender<(ParticipantId, Event)>,
) {
    let mut io = Io::new(net, &ep, ev_tx);
    let local = io.local;
    let sleep = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(sleep);

    loop {
        let deadline = flush(&io.net, &mut ep, &mut io.delivery, &mut io.send_errors).await;
        sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));

        // Commands (offers, closes, keyframe requests, metrics) first, so they never wait
        // behind the media batches; a few per turn, so a burst of offers (each one parses SDP
        // and sets up DTLS) does not hold the media up either.
        for _ in 0..COMMANDS_PER_TURN {
            let Ok(c) = queues.commands.try_recv() else {
                break;
            };
            if !handle_command(&mut ep, c, &io) {
                return;
            }
        }
        let has_pending = !io.delivery.pending.is_empty();
        let mut batch = None;
        tokio::select! {
            r = io.net.recv(&mut io.buf) => {
                match r {
                    Received::One(n, from) => {
                        ep.handle_datagram(from, local, &io.buf[..n], Instant::now());
                        // More may be waiting: take them before flushing.
                        io.net.receive_ready(&mut ep, &mut io.buf, local, RECV_BATCH - 1);
                    }
                    Received::Batch(batch) => {
                        let n = batch.len();
                        handle_batch(&mut ep, local, batch);
                        io.net.receive_ready(&mut ep, &mut io.buf, local, RECV_BATCH.saturating_sub(n));
                    }
                    // Receive errors (e.g. ICMP-induced ECONNREFUSED) carry no datagram: go on.
                    Received::Nothing => {}
                    Received::Closed => break,
                }
            }
            c = queues.commands.recv() => {
                let Some(c) = c else { break };
                if !handle_command(&mut ep, c, &io) {
                    break;
                }
            }
            Some(writes) = queues.audio.recv() => batch = Some(Batch::Audio(writes)),
            Some(writes) = queues.video.recv() => batch = Some(Batch::Video(writes)),
            permit = io.delivery.tx.reserve(), if has_pending => {
                match permit {
                    Ok(permit) => {
                        if let Some(x) = io.delivery.pending.pop_front() {
                            permit.send(x);
                        }
                    }
                    Err(_) => io.delivery.pending.clear(),
                }
            }
            _ = &mut sleep => ep.handle_timeout(Instant::now()),
        }
        // A batch (a mixer tick's audio, one packet per member; a video thread's packets)
        // takes a while to encrypt and send: in chunks, with what arrived meanwhile read in
        // between, so incoming packets do not wait for the whole batch (that wait is jitter to
        // the mixer).
        match batch {
            Some(Batch::Audio(w)) => io.write::<_, AudioWrite>(&mut ep, w, None).await,
            // Audio is what the ear notices: a tick's batch that arrives while a large video
            // batch (a keyframe for many subscribers) is written goes out between its chunks.
            Some(Batch::Video(w)) => io.write(&mut ep, w, Some(&mut queues.audio)).await,
            None => {}
        }
    }
}

/// One media write of a batch.
trait MediaWrite {
    fn apply(self, ep: &mut Endpoint, now: Instant);
}

impl MediaWrite for AudioWrite {
    fn apply(self, ep: &mut Endpoint, now: Instant) {
        let _ = ep.write_audio(self.id, self.payload, self.timestamp, self.level, now);
    }
}

impl MediaWrite for VideoWrite {
    fn apply(self, ep: &mut Endpoint, now: Instant) {
        let _ = ep.write_video(self.id, self.payload, self.timestamp, self.marker, now);
    }
}

/// The driver task's network side: the socket (or a shard's share of it), the receive buffer,
/// event delivery and the driver's own counters.
struct Io {
    net: Net,
    local: SocketAddr,
    buf: Vec<u8>,
    delivery: Delivery,
    send_errors: u64,
}

impl Io {
    fn new(net: Net, ep: &Endpoint, events: mpsc::Sender<(ParticipantId, Event)>) -> Self {
        let local = match &net {
            Net::Socket(s) => s.local_addr(),
            Net::Shard(s) => s.out.get_ref().local_addr(),
        };
        Io {
            net,
            local: local.unwrap_or(ep.config().candidates[0]),
            buf: vec![0u8; 2048],
            delivery: Delivery {
                tx: events,
                pending: VecDeque::new(),
                dropped: 0,
            },
            send_errors: 0,
        }
    }

    /// Writes a batch in chunks of [`WRITE_CHUNK`], sending each chunk and reading what arrived
    /// meanwhile before the next; with `audio`, audio batches waiting there are written whole
    /// between two chunks.
    async fn write<W: MediaWrite, A: MediaWrite>(
        &mut self,
        ep: &mut Endpoint,
        writes: Vec<W>,
        mut audio: Option<&mut mpsc::Receiver<Vec<A>>>,
    ) {
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            self.chunk(ep, &mut writes).await;
            if let Some(rx) = audio.as_deref_mut() {
                while let Ok(batch) = rx.try_recv() {
                    let mut batch = batch.into_iter().peekable();
                    while batch.peek().is_some() {
                        self.chunk(ep, &mut batch).await;
                    }
                }
            }
        }
    }

    /// Writes up to [`WRITE_CHUNK`] of `writes`, sends them and reads what arrived meanwhile.
    async fn chunk<W: MediaWrite>(
        &mut self,
        ep: &mut Endpoint,
        writes: &mut impl Iterator<Item = W>,
    ) {
        let now = Instant::now();
        for w in writes.by_ref().take(WRITE_CHUNK) {
            w.apply(ep, now);
        }
        flush(&self.net, ep, &mut self.delivery, &mut self.send_errors).await;
        self.net
            .receive_ready(ep, &mut self.buf, self.local, RECV_BATCH);
    }
}

/// Apply one command; `false` to stop the driver.
fn handle_command(ep: &mut Endpoint, c: Command, io: &Io) -> bool {
    let now = Instant::now();
    match c {
        // A shard publishes the new ufrag before the answer leaves: the peer's first binding
        // request must find it.
        Command::AcceptOffer { offer, opts, reply } => {
            let answer = ep.accept_offer(&offer, opts, now);
            io.net.publish(ep);
            let _ = reply.send(answer);
        }
        Command::AcceptReoffer {
            id,
            offer,
            opts,
            reply,
        } => {
            let answer = ep.accept_reoffer(id, &offer, opts, now);
            io.net.publish(ep);
            let _ = reply.send(answer);
        }
        Command::WriteAudio {
            id,
            payload,
            timestamp,
            level,
        } => {
            let _ = ep.write_audio(id, payload, timestamp, level, now);
        }
        Command::RequestKeyframe { id, kind, reply } => {
            let _ = reply.send(ep.request_keyframe_kind(id, kind, now));
        }
        Command::Close { id, reply } => {
            let _ = reply.send(ep.close(id, now));
        }
        Command::Metrics { reply } => {
            let socket = io.net.socket_ref();
            let _ = reply.send(Metrics {
                events_dropped: io.delivery.dropped,
                send_errors: io.send_errors,
                shards: 1,
                socket_drops: socket_drops(&socket),
                socket_recv_buffer: socket.recv_buffer_size().unwrap_or(0) as u64,
                ..ep.metrics()
            });
        }
        Command::Shutdown => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A write that records its tag instead of writing.
    struct Mark(u32, Arc<Mutex<Vec<u32>>>);

    impl MediaWrite for Mark {
        fn apply(self, _ep: &mut Endpoint, _now: Instant) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    /// An audio batch waiting while a large video batch is written goes out after the video
    /// batch's first chunk, not after its last.
    #[tokio::test]
    async fn audio_goes_out_between_the_chunks_of_a_video_batch() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut ep = Endpoint::new(EndpointConfig {
            candidates: vec![local],
            ..EndpointConfig::default()
        })
        .unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let mut io = Io::new(Net::Socket(socket), &ep, tx);
        let order = Arc::new(Mutex::new(Vec::new()));
        let video: Vec<Mark> = (0..4 * WRITE_CHUNK as u32)
            .map(|k| Mark(k, order.clone()))
            .collect();
        let (audio_tx, mut audio_rx) = mpsc::channel(4);
        audio_tx
            .try_send(vec![Mark(1000, order.clone()), Mark(1001, order.clone())])
            .unwrap();
        io.write(&mut ep, video, Some(&mut audio_rx)).await;
        let order = order.lock().unwrap().clone();
        let at = order
            .iter()
            .position(|&t| t == 1000)
            .expect("the audio was written");
        assert_eq!(
            at, WRITE_CHUNK,
            "audio after the first video chunk: {order:?}"
        );
        assert_eq!(order[at + 1], 1001, "the audio batch whole");
        assert_eq!(order.len(), 4 * WRITE_CHUNK + 2, "every write once");
    }
}
