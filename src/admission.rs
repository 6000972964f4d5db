//! Connection admission for the TCP listeners (CometQL, comet WebSocket, SIP, HTTP).
//!
//! Each listener has a [`Gate`]: at most `max` connections open at once, and (when
//! `per_ip` is not 0) at most `per_ip` from one client address (an IPv6 client counts by
//! its /64, the block one subscriber gets). A connection is admitted before anything else is
//! done with it and holds a [`Permit`] until it closes; a refused one is answered as its
//! protocol expects (CometQL: MySQL error 1040, plain HTTP and WebSocket: `503` with
//! `Retry-After`, TLS listeners: closed) and counted. Without a cap a flood of connections
//! ends in "too many open files" for every listener, the store and the recordings at once.
//!
//! [`Admitted`] carries the permit with the stream and gives it back before the socket is
//! shut down or closed, so a client that has seen its connection end can connect again.
//!
//! A gate can also limit failed authentications per client address (`auth_failures`, off by
//! default): an address may fail that many times in a row, and its allowance refills over
//! [`AUTH_REFILL`]. An address that has used it up is refused without its
//! credentials being checked ([`Gate::may_authenticate`]) until it has credit again, so a
//! password cannot be guessed at the speed of the network.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::throttle::{CommandRate, Throttle};

/// The next connection on `listener`. An accept that fails (out of file descriptors and the
/// like) is logged with `what` (the listener's name) and retried after a short pause instead
/// of spinning; the other connections keep being served meanwhile.
pub async fn accept(listener: &tokio::net::TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(x) => return x,
            Err(e) => {
                tracing::warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How many connections a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once (at least 1).
    pub max: usize,
    /// Connections open at once from one client address; 0: no per-address cap.
    pub per_ip: usize,
    /// Failed authentications one client address may have in a row before it is refused for
    /// a while ([`AUTH_REFILL`] refills the whole allowance); 0: no limit.
    pub auth_failures: u32,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener holds `max` connections.
    Full,
    /// The client's address holds `per_ip` connections.
    PerIp,
}

/// Refused connections answered with a 503 that may still be draining their request at once
/// (each holds a descriptor for at most [`LINGER`]); beyond this they are just closed.
const MAX_LINGERING: usize = 64;
/// How long a refused HTTP connection is read (and discarded) after the 503, so that closing
/// it does not reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(2);
/// At most one warning per listener in this interval (a flood is one event, not a log line
/// per connection).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How long a client address takes to get its whole allowance of failed authentications back.
pub const AUTH_REFILL: Duration = Duration::from_secs(600);
/// Client addresses whose failed authentications are tracked at most (addresses with their
/// whole allowance back are forgotten first).
const MAX_AUTH_TRACKED: usize = 65_536;

/// Admission state of one listener.
#[derive(Debug)]
pub struct Gate {
    listener: &'static str,
    limits: ConnLimits,
    state: Mutex<State>,
    refused_full: AtomicU64,
    refused_per_ip: AtomicU64,
    lingering: Arc<Semaphore>,
    auth_failed: AtomicU64,
    auth_refused: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    by_client: HashMap<IpAddr, usize>,
    last_warning: Option<Instant>,
    /// Each client address's allowance of failed authentications: a token bucket of
    /// `auth_failures` that refills over [`AUTH_REFILL`], one token per failure.
    credits: HashMap<IpAddr, Throttle>,
    last_auth_warning: Option<Instant>,
}

impl Gate {
    /// A gate for the listener named `listener` (used in logs and metric labels).
    pub fn new(listener: &'static str, limits: ConnLimits) -> Arc<Gate> {
        Arc::new(Gate {
            listener,
            limits,
            state: Mutex::new(State::default()),
            refused_full: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            lingering: Arc::new(Semaphore::new(MAX_LINGERING)),
            auth_failed: AtomicU64::new(0),
            auth_refused: AtomicU64::new(0),
        })
    }

    /// A client address's allowance before any failure.
    fn full_credit(&self, now: Instant) -> Throttle {
        let n = f64::from(self.limits.auth_failures);
        Throttle::new(
            CommandRate {
                per_second: n / AUTH_REFILL.as_secs_f64(),
                burst: n,
            },
            now,
        )
    }

    /// Whether `peer` may authenticate now. `Err(retry_after)`: its address has used up its
    /// allowance of failed authentications; refuse the attempt without checking it (counted).
    pub fn may_authenticate(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.limits.auth_failures == 0 {
            return Ok(());
        }
        let wait = self
            .state()
            .credits
            .get(&client_key(peer))
            .and_then(|c| c.wait(now));
        match wait {
            None => Ok(()),
            Some(w) => {
                self.auth_refused.fetch_add(1, Ordering::Relaxed);
                Err(w)
            }
        }
    }

    /// Counts a failed authentication of `peer` against its address's allowance.
    pub fn auth_failed(&self, peer: IpAddr, now: Instant) {
        self.auth_failed.fetch_add(1, Ordering::Relaxed);
        if self.limits.auth_failures == 0 {
            return;
        }
        let key = client_key(peer);
        let mut st = self.state();
        if !st.credits.contains_key(&key) && st.credits.len() >= MAX_AUTH_TRACKED {
            // Forget the addresses that have their whole allowance back.
            st.credits.retain(|_, c| !c.is_full(now));
            if st.credits.len() >= MAX_AUTH_TRACKED {
                return;
            }
        }
        let credit = st
            .credits
            .entry(key)
            .or_insert_with(|| self.full_credit(now));
        credit.charge(now);
        if credit.wait(now).is_some()
            && st
                .last_auth_warning
                .is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY)
        {
            st.last_auth_warning = Some(now);
            drop(st);
            tracing::warn!(
                listener = self.listener,
                client = %key,
                max_auth_failures = self.limits.auth_failures,
                "a client address failed to authenticate too often; its attempts are refused for a while"
            );
        }
    }

    /// Failed authentications, and attempts refused because their address had failed too
    /// often.
    pub fn auth_counts(&self) -> (u64, u64) {
        (
            self.auth_failed.load(Ordering::Relaxed),
            self.auth_refused.load(Ordering::Relaxed),
        )
    }

    pub fn listener(&self) -> &'static str {
        self.listener
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two counters and a map, consistent after every statement: a panic
        // elsewhere while it was held leaves nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `peer`, or says why not (and counts it).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refused> {
        let key = client_key(peer);
        let mut st = self.state();
        let from_client = st.by_client.get(&key).copied().unwrap_or(0);
        let refused = if st.open >= self.limits.max {
            Some(Refused::Full)
        } else if self.limits.per_ip != 0 && from_client >= self.limits.per_ip {
            Some(Refused::PerIp)
        } else {
            None
        };
        if let Some(why) = refused {
            let counter = match why {
                Refused::Full => &self.refused_full,
                Refused::PerIp => &self.refused_per_ip,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if st
                .last_warning
                .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
            {
                st.last_warning = Some(now);
                drop(st);
                match why {
                    Refused::Full => tracing::warn!(
                        listener = self.listener,
                        max = self.limits.max,
                        "refusing connections: the listener is at its max_connections"
                    ),
                    Refused::PerIp => tracing::warn!(
                        listener = self.listener,
                        client = %key,
                        per_ip = self.limits.per_ip,
                        "refusing connections: a client address is at max_connections_per_ip"
                    ),
                }
            }
            return Err(why);
        }
        st.open += 1;
        *st.by_client.entry(key).or_insert(0) += 1;
        Ok(Permit {
            gate: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state().open
    }

    /// Connections refused so far: because the listener was full, because the client's
    /// address was.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_full.load(Ordering::Relaxed),
            self.refused_per_ip.load(Ordering::Relaxed),
        )
    }

    /// Answers a refused plain-HTTP connection (the comet WebSocket, SIP over WebSocket and
    /// HTTP listeners) with `503 Service Unavailable` and closes it, reading what the client
    /// sends for up to `LINGER` (2 s) so the close does not reset the answer away. Runs on its
    /// own task; when `MAX_LINGERING` (64) refusals are already lingering the connection is just
    /// closed.
    pub fn refuse_http(&self, mut stream: TcpStream, why: Refused) {
        let Ok(slot) = self.lingering.clone().try_acquire_owned() else {
            return;
        };
        let reason = match why {
            Refused::Full => "the server is at its connection limit",
            Refused::PerIp => "too many connections from your address",
        };
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}\n",
            reason.len() + 1
        );
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(LINGER, async {
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, io::Error>(())
            })
            .await;
        });
    }
}

/// The address a per-address cap counts: IPv4 (an IPv4-mapped IPv6 address as IPv4), or the
/// /64 of an IPv6 address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// An admitted connection's place on its listener, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.gate.state();
        st.open -= 1;
        if let Some(n) = st.by_client.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                st.by_client.remove(&self.key);
            }
        }
    }
}

/// A stream with its [`Permit`]. The permit is given back first when the stream is shut
/// down or dropped, so it is free by the time the client sees the connection end.
#[derive(Debug)]
pub struct Admitted<S> {
    // Declared before `stream`: fields drop in order, so the permit goes before the socket
    // closes.
    permit: Option<Permit>,
    stream: S,
}

impl<S> Admitted<S> {
    pub fn new(stream: S, permit: Permit) -> Self {
        Admitted {
            permit: Some(permit),
            stream,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.permit = None;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The gates of the four TCP listeners (the metrics read them).
#[derive(Debug, Clone)]
pub struct Gates {
    pub cometql: Arc<Gate>,
    pub ws: Arc<Gate>,
    pub sip: Arc<Gate>,
    pub http: Arc<Gate>,
}

impl Gates {
    pub fn all(&self) -> [&Arc<Gate>; 4] {
        [&self.cometql, &self.ws, &self.sip, &self.http]
    }
}

/// The peer of an accepted socket, for admission (a socket that has no peer any more is
/// counted as the unspecified address and closes at its first read anyway).
pub fn peer_ip(stream: &TcpStream) -> IpAddr {
    stream
        .peer_addr()
        .map(|a: SocketAddr| a.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// Descriptors kept for everything but client connections: the store, recordings, the media
/// socket, the listeners, logs.
pub const RESERVED_FILES: u64 = 1000;

/// Raises the soft open-file limit to the hard one (the default soft limit, 1024 on Linux, is
/// far below what a server with thousands of connections needs) and returns the limit in
/// force, if the system reports one.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one is
        // always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failed_logins_block_an_address_until_its_allowance_refills() {
        let limits = |auth_failures| ConnLimits {
            max: 10,
            per_ip: 0,
            auth_failures,
        };
        let gate = Gate::new("test", limits(2));
        let t0 = Instant::now();
        let a = ip("2001:db8:1:2::7");
        assert_eq!(gate.may_authenticate(a, t0), Ok(()));
        gate.auth_failed(a, t0);
        assert_eq!(gate.may_authenticate(a, t0), Ok(()));
        gate.auth_failed(a, t0);
        // Two failures: blocked, for the time one failure takes to refill (AUTH_REFILL / 2),
        // and so is the rest of its /64; another /64 is not.
        let wait = gate.may_authenticate(a, t0).unwrap_err();
        assert_eq!(wait, AUTH_REFILL / 2);
        assert!(gate.may_authenticate(ip("2001:db8:1:2::8"), t0).is_err());
        assert_eq!(gate.may_authenticate(ip("2001:db8:1:3::7"), t0), Ok(()));
        assert!(gate.may_authenticate(a, t0 + wait / 2).is_err());
        assert_eq!(gate.may_authenticate(a, t0 + wait), Ok(()));
        // One attempt back: failing it blocks again at once.
        gate.auth_failed(a, t0 + wait);
        assert!(gate.may_authenticate(a, t0 + wait).is_err());
        assert_eq!(gate.auth_counts(), (3, 4));
        // 0: no limit, failures are only counted.
        let open = Gate::new("test", limits(0));
        for _ in 0..100 {
            open.auth_failed(a, t0);
        }
        assert_eq!(open.may_authenticate(a, t0), Ok(()));
        assert_eq!(open.auth_counts(), (100, 0));
    }

    #[test]
    fn caps_in_all_and_per_address_and_permits_give_back() {
        let gate = Gate::new(
            "test",
            ConnLimits {
                max: 3,
                per_ip: 2,
                auth_failures: 0,
            },
        );
        let a1 = gate.admit(ip("10.0.0.1")).unwrap();
        let a2 = gate.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.1")).unwrap_err(), Refused::PerIp);
        // An IPv4-mapped address is the same client.
        assert_eq!(
            gate.admit(ip("::ffff:10.0.0.1")).unwrap_err(),
            Refused::PerIp
        );
        let b = gate.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.3")).unwrap_err(), Refused::Full);
        assert_eq!(gate.open(), 3);
        assert_eq!(gate.refused(), (1, 2));
        drop(a1);
        assert_eq!(gate.open(), 2);
        let a3 = gate.admit(ip("10.0.0.1")).unwrap();
        drop((a2, a3, b));
        assert_eq!(gate.open(), 0);
        assert!(gate.state().by_client.is_empty(), "no address is kept");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let gate = Gate::new(
            "test",
            ConnLimits {
                max: 10,
                per_ip: 1,
                auth_failures: 0,
            },
        );
        let _a = gate.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            gate.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refused::PerIp
        );
        let _b = gate.admit(ip("2001:db8:1:3::1")).unwrap();
    }

    #[test]
    fn no_per_address_cap_when_zero() {
        let gate = Gate::new(
            "test",
            ConnLimits {
                max: 3,
                per_ip: 0,
                auth_failures: 0,
            },
        );
        let held: Vec<_> = (0..3)
            .map(|_| gate.admit(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(gate.admit(ip("127.0.0.1")).unwrap_err(), Refused::Full);
        drop(held);
    }

    #[tokio::test]
    async fn admitted_stream_gives_its_permit_back_at_shutdown() {
        let gate = Gate::new(
            "test",
            ConnLimits {
                max: 1,
                per_ip: 0,
                auth_failures: 0,
            },
        );
        let (a, _b) = tokio::io::duplex(64);
        let mut s = Admitted::new(a, gate.admit(ip("127.0.0.1")).unwrap());
        assert_eq!(gate.open(), 1);
        s.shutdown().await.unwrap();
        assert_eq!(gate.open(), 0);
        drop(s);
        assert_eq!(gate.open(), 0);
    }
}
