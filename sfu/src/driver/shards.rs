//! A sharded driver's parts: the routing table the shards publish to, the socket reader that
//! hands each datagram to its shard, and a shard's side of the socket.
//!
//! The reader routes as the endpoint demultiplexes (RFC 7983 first byte; a STUN binding
//! request by the local ufrag in its `USERNAME`, anything else by source address), so a
//! shard only ever sees datagrams its own endpoint would claim. A shard adds a ufrag before
//! its answer leaves and a peer address only once its endpoint verified a binding request
//! from it (MESSAGE-INTEGRITY), so a forged datagram cannot move a peer to another shard.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::demux::{self, Kind};
use crate::{Endpoint, Metrics, RouteChange};

/// Datagrams waiting for one shard at most (about 4 MiB of media, a third of a second of
/// 1000 participants' packets); more are dropped and counted ([`Metrics::inbox_dropped`]), as
/// the kernel drops what overflows the socket's buffer. Counted in datagrams, not in the
/// reader's batches, whose size follows the load.
const INBOX_DATAGRAMS: usize = 16384;
/// Datagrams the reader takes from the socket before handing them on.
const READ_BATCH: usize = 64;
/// Largest datagram read (as the unsharded driver reads).
const MAX_DATAGRAM: usize = 2048;

/// One received datagram, on its way to a shard.
pub(crate) struct Datagram {
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Which shard answers to which local ufrag and peer address.
#[derive(Debug, Default)]
struct Table {
    ufrags: HashMap<String, u32>,
    addrs: HashMap<SocketAddr, u32>,
}

/// Why the reader dropped a datagram itself.
#[derive(Debug, PartialEq, Eq)]
enum Unrouted {
    Malformed,
    Unknown,
}

impl Table {
    fn apply(&mut self, shard: u32, change: RouteChange) {
        match change {
            RouteChange::Ufrag { ufrag, ours: true } => {
                self.ufrags.insert(ufrag, shard);
            }
            RouteChange::Ufrag { ufrag, ours: false } => {
                if self.ufrags.get(&ufrag) == Some(&shard) {
                    self.ufrags.remove(&ufrag);
                }
            }
            RouteChange::Addr { addr, ours: true } => {
                self.addrs.insert(addr, shard);
            }
            RouteChange::Addr { addr, ours: false } => {
                if self.addrs.get(&addr) == Some(&shard) {
                    self.addrs.remove(&addr);
                }
            }
        }
    }

    /// The shard a datagram is for, the way the endpoint demultiplexes it.
    fn route(&self, bytes: &[u8], from: SocketAddr) -> Result<u32, Unrouted> {
        let kind = demux::classify(bytes).ok_or(Unrouted::Malformed)?;
        if kind == Kind::Stun
            && let Some(shard) =
                demux::binding_request_ufrag(bytes).and_then(|u| self.ufrags.get(u))
        {
            return Ok(*shard);
        }
        self.addrs.get(&from).copied().ok_or(Unrouted::Unknown)
    }
}

/// The reader's end of a shard's inbox.
pub(super) struct InboxTx {
    tx: mpsc::UnboundedSender<Vec<Datagram>>,
    waiting: Arc<AtomicUsize>,
}

/// The shard's end of its inbox.
pub(crate) struct InboxRx {
    rx: mpsc::UnboundedReceiver<Vec<Datagram>>,
    waiting: Arc<AtomicUsize>,
}

/// A shard's inbox: batches of datagrams, at most [`INBOX_DATAGRAMS`] waiting.
pub(super) fn inbox() -> (InboxTx, InboxRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        InboxTx {
            tx,
            waiting: waiting.clone(),
        },
        InboxRx { rx, waiting },
    )
}

impl InboxTx {
    /// Hands `batch` to the shard, unless that would leave more than [`INBOX_DATAGRAMS`]
    /// waiting: then the batch comes back (the shard fell behind). A shard that is gone (the
    /// driver stops) just does not get it. The reader is the only sender, so the check cannot
    /// race with another.
    fn offer(&self, batch: Vec<Datagram>) -> Result<(), Vec<Datagram>> {
        let n = batch.len();
        if self.waiting.load(Ordering::Acquire) + n > INBOX_DATAGRAMS {
            return Err(batch);
        }
        self.waiting.fetch_add(n, Ordering::AcqRel);
        if self.tx.send(batch).is_err() {
            self.waiting.fetch_sub(n, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

impl InboxRx {
    pub(crate) async fn recv(&mut self) -> Option<Vec<Datagram>> {
        let batch = self.rx.recv().await?;
        self.waiting.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }

    pub(crate) fn try_recv(&mut self) -> Option<Vec<Datagram>> {
        let batch = self.rx.try_recv().ok()?;
        self.waiting.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }
}

/// The routing table, shared by the shards (writers) and the reader.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes(Arc<RwLock<Table>>);

/// What the reader counts itself: datagrams the shards never see.
#[derive(Debug, Default)]
pub(crate) struct ReaderStats {
    malformed: AtomicU64,
    unknown: AtomicU64,
    overflow: AtomicU64,
    bytes: AtomicU64,
}

impl ReaderStats {
    /// Adds the reader's drops to the shards' total.
    pub(super) fn add_to(&self, m: &mut Metrics) {
        let malformed = self.malformed.load(Ordering::Relaxed);
        let unknown = self.unknown.load(Ordering::Relaxed);
        let overflow = self.overflow.load(Ordering::Relaxed);
        m.datagrams_in += malformed + unknown + overflow;
        m.bytes_in += self.bytes.load(Ordering::Relaxed);
        m.malformed_dropped += malformed;
        m.unknown_dropped += unknown;
        m.inbox_dropped += overflow;
    }
}

/// A shard's side of the socket: its inbox from the reader, and the socket to send on
/// (registered for writability only, so that incoming datagrams do not wake the shard).
pub(crate) struct ShardNet {
    index: u32,
    pub inbox: InboxRx,
    pub out: AsyncFd<std::net::UdpSocket>,
    routes: Routes,
    load: Arc<AtomicU64>,
}

/// A [`ShardNet`] before it is registered with its thread's runtime.
pub(super) struct ShardParts {
    index: u32,
    inbox: InboxRx,
    out: std::net::UdpSocket,
    routes: Routes,
    load: Arc<AtomicU64>,
}

impl ShardNet {
    pub(super) fn parts(
        index: u32,
        inbox: InboxRx,
        out: std::net::UdpSocket,
        routes: Routes,
        load: Arc<AtomicU64>,
    ) -> ShardParts {
        ShardParts {
            index,
            inbox,
            out,
            routes,
            load,
        }
    }

    pub(super) async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.out
            .async_io(Interest::WRITABLE, |s| s.send_to(bytes, to))
            .await
    }

    /// Publishes the endpoint's route changes and participant count.
    pub(super) fn publish(&self, ep: &mut Endpoint) {
        self.load
            .store(ep.participant_count() as u64, Ordering::Relaxed);
        let changes = ep.take_route_changes();
        if changes.is_empty() {
            return;
        }
        let mut table = self
            .routes
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for c in changes {
            table.apply(self.index, c);
        }
    }
}

impl ShardParts {
    /// Registers the socket with the current runtime (a shard's own thread).
    pub(super) fn register(self) -> io::Result<ShardNet> {
        Ok(ShardNet {
            index: self.index,
            inbox: self.inbox,
            out: register(self.out, Interest::WRITABLE)?,
            routes: self.routes,
            load: self.load,
        })
    }
}

/// Registers `socket` with the current runtime for `interest` only.
pub(super) fn register(
    socket: std::net::UdpSocket,
    interest: Interest,
) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the socket owns its descriptor, and the `AsyncFd` owns the socket: the
    // descriptor stays open, and the same, for as long as it is registered.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// Reads the socket and hands each datagram to its shard, a batch at a time; ends when every
/// shard has (their inboxes are closed).
pub(super) async fn read(
    socket: AsyncFd<std::net::UdpSocket>,
    routes: Routes,
    inboxes: Vec<InboxTx>,
    stats: Arc<ReaderStats>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut batches: Vec<Vec<Datagram>> = inboxes.iter().map(|_| Vec::new()).collect();
    let gone = async {
        for inbox in &inboxes {
            inbox.closed().await;
        }
    };
    tokio::pin!(gone);
    loop {
        let mut ready = tokio::select! {
            r = socket.readable() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the media socket cannot be read");
                    return;
                }
            },
            _ = &mut gone => return,
        };
        {
            let table = routes.0.read().unwrap_or_else(PoisonError::into_inner);
            for _ in 0..READ_BATCH {
                let (n, from) = match ready.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                    Ok(Ok(got)) => got,
                    // ICMP-induced errors carry no datagram; the next may.
                    Ok(Err(_)) => continue,
                    // Nothing more waiting (readiness cleared).
                    Err(_) => break,
                };
                let bytes = &buf[..n];
                match table.route(bytes, from) {
                    Ok(shard) => batches[shard as usize].push(Datagram {
                        from,
                        bytes: bytes.to_vec(),
                    }),
                    Err(why) => {
                        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        let counter = match why {
                            Unrouted::Malformed => &stats.malformed,
                            Unrouted::Unknown => &stats.unknown,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for (inbox, batch) in inboxes.iter().zip(batches.iter_mut()) {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            if let Err(b) = inbox.offer(batch) {
                stats.overflow.fetch_add(b.len() as u64, Ordering::Relaxed);
                stats.bytes.fetch_add(
                    b.iter().map(|d| d.bytes.len() as u64).sum(),
                    Ordering::Relaxed,
                );
            }
        }
    }
}

/// A thread running one future on a single-threaded tokio runtime of its own.
pub(super) struct Thread {
    /// Dropped (or sent) to stop the thread's future.
    _stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl Thread {
    /// Resolves once the thread's future has ended.
    pub(super) async fn finished(self) {
        let Thread { _stop, done } = self;
        let _ = done.await;
    }
}

/// Starts thread `name` and in it the future `make` returns (made inside the runtime, so that
/// it can register sockets); returns once it has started, or with `make`'s error.
pub(super) fn start_thread<M, F, Fut>(name: String, make: M) -> io::Result<Thread>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future<Output = io::Result<Fut>>,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            rt.block_on(async move {
                let work = match make().await {
                    Ok(w) => {
                        let _ = started_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                tokio::select! {
                    _ = work => {}
                    // The caller's task was aborted (or dropped): stop.
                    _ = stop_rx => {}
                }
            });
            let _ = done_tx.send(());
        })?;
    started_rx
        .recv()
        .map_err(|_| io::Error::other(format!("thread {name} did not start")))??;
    Ok(Thread {
        _stop: stop_tx,
        done: done_rx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while !attrs.len().is_multiple_of(4) {
            attrs.push(0);
        }
        let mut b = vec![0x00, 0x01];
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        b.extend_from_slice(&[7; 12]);
        b.extend_from_slice(&attrs);
        b
    }

    fn datagrams(n: usize) -> Vec<Datagram> {
        (0..n)
            .map(|_| Datagram {
                from: "127.0.0.1:5000".parse().unwrap(),
                bytes: vec![0x80; 40],
            })
            .collect()
    }

    /// A shard that does not keep up gets at most INBOX_DATAGRAMS waiting, whatever the
    /// batch sizes; what it takes frees room again; a gone shard takes nothing and is not
    /// counted as behind.
    #[test]
    fn an_inbox_holds_a_bounded_number_of_datagrams() {
        let (tx, mut rx) = inbox();
        for _ in 0..INBOX_DATAGRAMS / 64 {
            assert!(tx.offer(datagrams(64)).is_ok());
        }
        assert_eq!(
            tx.offer(datagrams(1)).err().map(|b| b.len()),
            Some(1),
            "full"
        );
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(64));
        assert!(tx.offer(datagrams(65)).is_err(), "64 free, not 65");
        assert!(tx.offer(datagrams(63)).is_ok());
        assert!(tx.offer(datagrams(1)).is_ok());
        assert!(tx.offer(datagrams(1)).is_err());
        drop(rx);
        let (tx, rx) = inbox();
        drop(rx);
        assert!(
            tx.offer(datagrams(1)).is_ok(),
            "a gone shard: not a shard behind"
        );
        assert_eq!(tx.waiting.load(Ordering::Relaxed), 0);
    }

    /// Routes follow the shards' changes; a shard cannot remove another shard's key.
    #[test]
    fn table_routes_by_ufrag_then_address() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let mut t = Table::default();
        let stun = binding_request("1sabcd:theirs");
        let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        rtp.extend_from_slice(&[0; 30]);
        assert_eq!(t.route(&stun, peer), Err(Unrouted::Unknown));
        assert_eq!(t.route(&[0xff; 40], peer), Err(Unrouted::Malformed));
        t.apply(
            1,
            RouteChange::Ufrag {
                ufrag: "1sabcd".into(),
                ours: true,
            },
        );
        assert_eq!(t.route(&stun, peer), Ok(1));
        assert_eq!(t.route(&rtp, peer), Err(Unrouted::Unknown));
        t.apply(
            1,
            RouteChange::Addr {
                addr: peer,
                ours: true,
            },
        );
        assert_eq!(t.route(&rtp, peer), Ok(1));
        assert_eq!(t.route(&rtp, other), Err(Unrouted::Unknown));
        // The peer's address moved to shard 0 (a new participant there learned it): shard 1
        // forgetting it later does not take it from shard 0.
        t.apply(
            0,
            RouteChange::Addr {
                addr: peer,
                ours: true,
            },
        );
        t.apply(
            1,
            RouteChange::Addr {
                addr: peer,
                ours: false,
            },
        );
        assert_eq!(t.route(&rtp, peer), Ok(0));
        // A binding request goes by its ufrag, wherever its source address is routed.
        assert_eq!(t.route(&stun, peer), Ok(1));
        t.apply(
            1,
            RouteChange::Ufrag {
                ufrag: "1sabcd".into(),
                ours: false,
            },
        );
        assert_eq!(t.route(&stun, peer), Ok(0), "then by address");
    }
}
