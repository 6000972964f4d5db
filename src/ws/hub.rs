//! Live comet WebSocket connections: who is connected, who is subscribed to what, and delivery.
//!
//! The hub is plain in-memory state behind one lock; it never blocks on a socket. Each connection
//! has a bounded outgoing queue of shared frames (`Arc<str>`, so a broadcast to 10 000
//! subscribers allocates the text once). A connection whose queue is full is too slow to keep:
//! it is told to close instead of holding everyone else up.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::realtime::{PipeSubscriber, Realtime};
use crate::store::{DevId, UserId};

pub type ConnId = u64;

/// Most live connections one user may have.
pub const MAX_CONNECTIONS_PER_USER: usize = 16;
/// Frames a connection may have waiting before it is considered too slow.
pub const QUEUE_FRAMES: usize = 1024;
/// Bytes of frames a connection may have waiting before it is considered too slow (a frame
/// of 64 KiB of control characters escapes to ~390 KB of JSON).
pub const QUEUE_BYTES: usize = 8 << 20;

/// What a connection says about itself (users_in_pipes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    pub dev: DevId,
    /// 0 for anonymous connections.
    pub user_id: UserId,
    pub uuid: String,
    pub user_agent: String,
    pub ip: String,
    pub origin: String,
    pub language: String,
}

/// What the hub asks a connection task to do.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Frame(Arc<str>),
    /// Send this error frame (if any), then close.
    Close(Option<Arc<str>>),
    /// Close with 1001 "going away": the server is shutting down (clients reconnect).
    GoingAway,
}

/// The hub's handle on one connection.
pub struct ConnHandle {
    pub id: ConnId,
    pub rx: mpsc::Receiver<Outgoing>,
    /// Notified when the connection fell too far behind and must close.
    pub kill: Arc<Notify>,
    /// Bytes of `Outgoing::Frame`s waiting in `rx`: the task subtracts each frame it takes
    /// ([`ConnHandle::took`]).
    queued: Arc<AtomicUsize>,
}

impl ConnHandle {
    /// Tells the hub a frame left the queue.
    pub fn took(&self, frame: &str) {
        self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
    }
}

struct Conn {
    info: ConnInfo,
    tx: mpsc::Sender<Outgoing>,
    kill: Arc<Notify>,
    pipes: BTreeSet<String>,
    queued: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    /// Set by [`Hub::close_all`]: a connection that registers afterwards is closed at once.
    closing: bool,
    conns: HashMap<ConnId, Conn>,
    users: HashMap<(DevId, UserId), Vec<ConnId>>,
    pipes: HashMap<(DevId, String), BTreeSet<ConnId>>,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct HubStats {
    pub frames_sent: AtomicU64,
    pub slow_closed: AtomicU64,
    /// Times a connection's reading paused because it sent faster than `[ws]
    /// commands_per_second` allows (see `throttle`).
    pub throttled: AtomicU64,
}

/// All live comet WebSocket connections.
#[derive(Default)]
pub struct Hub {
    state: RwLock<State>,
    next: AtomicU64,
    pub stats: HubStats,
}

/// Refused registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyConnections;

/// What registering or unregistering changed for the user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// The user went from offline to online (or back).
    pub changed: bool,
}

fn track_frame(event: &str, pipe: &str, user: UserId, uuid: &str, now: i64) -> Arc<str> {
    json!({
        "data": {"user_id": user, "uuid": uuid},
        "event": event,
        "message_send_time": now,
        "pipe": pipe,
    })
    .to_string()
    .into()
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every critical section leaves the maps consistent; a poisoned lock is still usable.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection. Authorized users are limited to [`MAX_CONNECTIONS_PER_USER`].
    pub fn register(&self, info: ConnInfo) -> Result<(ConnHandle, Presence), TooManyConnections> {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let kill = Arc::new(Notify::new());
        let queued = Arc::new(AtomicUsize::new(0));
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut s = self.write();
        let mut changed = false;
        if info.user_id > 0 {
            let list = s.users.entry((info.dev, info.user_id)).or_default();
            if list.len() >= MAX_CONNECTIONS_PER_USER {
                return Err(TooManyConnections);
            }
            changed = list.is_empty();
            list.push(id);
        }
        if s.closing {
            // Registered while the server shuts down: told like the others.
            let _ = tx.try_send(Outgoing::GoingAway);
        }
        s.conns.insert(
            id,
            Conn {
                info,
                tx,
                kill: kill.clone(),
                pipes: BTreeSet::new(),
                queued: queued.clone(),
            },
        );
        Ok((
            ConnHandle {
                id,
                rx,
                kill,
                queued,
            },
            Presence { changed },
        ))
    }

    /// Removes a connection, telling `track_*` subscribers it left. Returns its info and
    /// whether its user went offline.
    pub fn unregister(&self, id: ConnId, now: i64) -> Option<(ConnInfo, Presence)> {
        let mut s = self.write();
        let conn = s.conns.remove(&id)?;
        for p in &conn.pipes {
            remove_from_pipe(&mut s, conn.info.dev, p, id);
        }
        let mut changed = false;
        if conn.info.user_id > 0 {
            let key = (conn.info.dev, conn.info.user_id);
            if let Some(list) = s.users.get_mut(&key) {
                list.retain(|c| *c != id);
                if list.is_empty() {
                    s.users.remove(&key);
                    changed = true;
                }
            }
        }
        drop(s);
        let events: Vec<(String, Arc<str>)> = conn
            .pipes
            .iter()
            .filter(|p| p.starts_with("track_"))
            .map(|p| {
                let f = track_frame("unsubscription", p, conn.info.user_id, &conn.info.uuid, now);
                (p.clone(), f)
            })
            .collect();
        self.send_track_events(conn.info.dev, id, &events);
        Some((conn.info, Presence { changed }))
    }

    /// Delivers `track_*` events under the read lock only: a pipe with many subscribers must
    /// not hold every other sender (and connect, and disconnect) behind the write lock.
    /// `except` (the connection the events are about) never hears its own.
    fn send_track_events(&self, dev: DevId, except: ConnId, events: &[(String, Arc<str>)]) {
        if events.is_empty() {
            return;
        }
        let s = self.read();
        for (pipe, frame) in events {
            send_locked(&s, &self.stats, dev, pipe, frame, Some(except));
        }
    }

    /// Replaces a connection's subscriptions. `track_*` subscribers hear about joins and
    /// leaves, never their own (delivered after the change, under the read lock).
    pub fn set_subscriptions(&self, id: ConnId, pipes: &[String], now: i64) {
        let mut s = self.write();
        let Some(conn) = s.conns.get(&id) else {
            return;
        };
        let (dev, user, uuid) = (conn.info.dev, conn.info.user_id, conn.info.uuid.clone());
        let new: BTreeSet<String> = pipes.iter().cloned().collect();
        let old = conn.pipes.clone();
        let mut events = Vec::new();
        for p in old.difference(&new) {
            remove_from_pipe(&mut s, dev, p, id);
            if p.starts_with("track_") {
                events.push((
                    p.clone(),
                    track_frame("unsubscription", p, user, &uuid, now),
                ));
            }
        }
        for p in new.difference(&old) {
            if p.starts_with("track_") {
                events.push((p.clone(), track_frame("subscription", p, user, &uuid, now)));
            }
            s.pipes.entry((dev, p.clone())).or_default().insert(id);
        }
        if let Some(conn) = s.conns.get_mut(&id) {
            conn.pipes = new;
        }
        drop(s);
        self.send_track_events(dev, id, &events);
    }

    /// Sends to every subscriber of a pipe except `except`; returns how many got it.
    pub fn send_to_pipe_except(
        &self,
        dev: DevId,
        pipe: &str,
        frame: &str,
        except: Option<ConnId>,
    ) -> usize {
        let f: Arc<str> = frame.into();
        send_locked(&self.read(), &self.stats, dev, pipe, &f, except)
    }

    /// Sends a frame to one connection.
    pub fn send_to_conn(&self, id: ConnId, frame: &str) -> bool {
        let s = self.read();
        s.conns
            .get(&id)
            .is_some_and(|c| deliver(c, &self.stats, Arc::from(frame)))
    }

    /// (user_id, uuid) of every connection subscribed to a pipe.
    pub fn pipe_users(&self, dev: DevId, pipe: &str) -> Vec<(UserId, String)> {
        let s = self.read();
        s.pipes
            .get(&(dev, pipe.to_string()))
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| s.conns.get(id))
                    .map(|c| (c.info.user_id, c.info.uuid.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of live connections.
    pub fn connections(&self) -> usize {
        self.read().conns.len()
    }

    /// Tells every connection to close with 1001 "going away" (the server is shutting down);
    /// returns how many were told.
    pub fn close_all(&self) -> usize {
        let mut s = self.write();
        s.closing = true;
        for c in s.conns.values() {
            // A full queue cannot take the close: the kill switch closes it anyway.
            if c.tx.try_send(Outgoing::GoingAway).is_err() {
                c.kill.notify_one();
            }
        }
        s.conns.len()
    }
}

fn remove_from_pipe(s: &mut State, dev: DevId, pipe: &str, id: ConnId) {
    let key = (dev, pipe.to_string());
    if let Some(set) = s.pipes.get_mut(&key) {
        set.remove(&id);
        if set.is_empty() {
            s.pipes.remove(&key);
        }
    }
}

/// Queues a frame on a connection; a full queue means the peer is too slow: it is told to close.
fn deliver(c: &Conn, stats: &HubStats, frame: Arc<str>) -> bool {
    let len = frame.len();
    // Counted before the send, so the task's subtraction can never come first.
    let too_slow = if c.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
        true
    } else {
        match c.tx.try_send(Outgoing::Frame(frame)) {
            Ok(()) => {
                stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    };
    c.queued.fetch_sub(len, Ordering::Relaxed);
    if too_slow {
        stats.slow_closed.fetch_add(1, Ordering::Relaxed);
        c.kill.notify_one();
    }
    false
}

fn send_locked(
    s: &State,
    stats: &HubStats,
    dev: DevId,
    pipe: &str,
    frame: &Arc<str>,
    except: Option<ConnId>,
) -> usize {
    let Some(ids) = s.pipes.get(&(dev, pipe.to_string())) else {
        return 0;
    };
    ids.iter()
        .filter(|id| Some(**id) != except)
        .filter_map(|id| s.conns.get(id))
        .filter(|c| deliver(c, stats, frame.clone()))
        .count()
}

impl Realtime for Hub {
    fn send_to_user(&self, dev: DevId, user: UserId, frame: &str) -> usize {
        let s = self.read();
        let f: Arc<str> = frame.into();
        s.users
            .get(&(dev, user))
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| s.conns.get(id))
                    .filter(|c| deliver(c, &self.stats, f.clone()))
                    .count()
            })
            .unwrap_or(0)
    }

    fn send_to_pipe(&self, dev: DevId, pipe: &str, frame: &str) -> usize {
        self.send_to_pipe_except(dev, pipe, frame, None)
    }

    fn disconnect_user(&self, dev: DevId, user: UserId) -> usize {
        let s = self.read();
        s.users
            .get(&(dev, user))
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| s.conns.get(id))
                    .filter(|c| {
                        // A full queue cannot take the close: the kill switch closes it anyway.
                        if c.tx.try_send(Outgoing::Close(None)).is_err() {
                            c.kill.notify_one();
                        }
                        true
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    fn is_online(&self, dev: DevId, user: UserId) -> bool {
        self.read().users.contains_key(&(dev, user))
    }

    fn pipe_subscribers(&self, dev: DevId, pipe: &str) -> Vec<PipeSubscriber> {
        let s = self.read();
        s.pipes
            .get(&(dev, pipe.to_string()))
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| s.conns.get(id))
                    .map(|c| PipeSubscriber {
                        user_id: c.info.user_id,
                        user_uuid: c.info.uuid.clone(),
                        user_agent: c.info.user_agent.clone(),
                        ip: c.info.ip.clone(),
                        origin: c.info.origin.clone(),
                        language: c.info.language.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pipe_subscriber_count(&self, dev: DevId, pipe: &str) -> usize {
        self.read()
            .pipes
            .get(&(dev, pipe.to_string()))
            .map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dev: DevId, user: UserId, uuid: &str) -> ConnInfo {
        ConnInfo {
            dev,
            user_id: user,
            uuid: uuid.into(),
            ..Default::default()
        }
    }

    fn frames(h: &mut ConnHandle) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(o) = h.rx.try_recv() {
            if let Outgoing::Frame(f) = o {
                out.push(f.to_string());
            }
        }
        out
    }

    #[test]
    fn users_pipes_and_presence() {
        let hub = Hub::new();
        let (mut a1, p) = hub.register(info(1, 7, "a1")).unwrap();
        assert!(p.changed, "first connection: online");
        let (mut a2, p) = hub.register(info(1, 7, "a2")).unwrap();
        assert!(!p.changed);
        let (mut b, _) = hub.register(info(2, 7, "b")).unwrap();
        assert!(hub.is_online(1, 7));
        assert_eq!(hub.send_to_user(1, 7, "hi"), 2);
        assert_eq!(frames(&mut a1), ["hi"]);
        assert_eq!(frames(&mut a2), ["hi"]);
        assert!(frames(&mut b).is_empty(), "dev 2 is another space");
        hub.set_subscriptions(a1.id, &["web_x".into()], 0);
        hub.set_subscriptions(b.id, &["web_x".into()], 0);
        assert_eq!(hub.send_to_pipe(1, "web_x", "p"), 1);
        assert_eq!(hub.pipe_subscriber_count(1, "web_x"), 1);
        assert_eq!(hub.send_to_pipe_except(1, "web_x", "p", Some(a1.id)), 0);
        hub.unregister(a1.id, 0);
        let (_, p) = hub.unregister(a2.id, 0).unwrap();
        assert!(p.changed, "last connection: offline");
        assert!(!hub.is_online(1, 7));
        assert_eq!(hub.pipe_subscriber_count(1, "web_x"), 0);
    }

    #[test]
    fn track_pipes_announce_joins_and_leaves_to_others() {
        let hub = Hub::new();
        let (mut a, _) = hub.register(info(0, 1, "ua")).unwrap();
        let (mut b, _) = hub.register(info(0, 2, "ub")).unwrap();
        hub.set_subscriptions(a.id, &["track_room".into()], 10);
        assert!(frames(&mut a).is_empty(), "no echo to the newcomer");
        hub.set_subscriptions(b.id, &["track_room".into()], 11);
        let got = frames(&mut a);
        assert_eq!(
            got,
            [
                r#"{"data":{"user_id":2,"uuid":"ub"},"event":"subscription","message_send_time":11,"pipe":"track_room"}"#
            ]
        );
        assert!(frames(&mut b).is_empty());
        assert_eq!(hub.pipe_users(0, "track_room").len(), 2);
        hub.unregister(b.id, 12);
        assert_eq!(
            frames(&mut a),
            [
                r#"{"data":{"user_id":2,"uuid":"ub"},"event":"unsubscription","message_send_time":12,"pipe":"track_room"}"#
            ]
        );
    }

    #[test]
    fn per_user_limit() {
        let hub = Hub::new();
        let handles: Vec<_> = (0..MAX_CONNECTIONS_PER_USER)
            .map(|_| hub.register(info(0, 3, "")).unwrap())
            .collect();
        assert_eq!(hub.register(info(0, 3, "")).err(), Some(TooManyConnections));
        // Anonymous connections are not limited per user.
        for _ in 0..20 {
            hub.register(info(0, 0, "")).unwrap();
        }
        drop(handles);
    }

    /// Frames count by bytes too: a consumer with QUEUE_BYTES waiting is too slow however few
    /// frames that is, and what it takes makes room again.
    #[test]
    fn slow_consumers_are_told_to_close_by_bytes() {
        let hub = Hub::new();
        let (mut h, _) = hub.register(info(0, 1, "")).unwrap();
        hub.set_subscriptions(h.id, &["web_big".into()], 0);
        let big = "x".repeat(1 << 20);
        for _ in 0..QUEUE_BYTES >> 20 {
            assert_eq!(hub.send_to_pipe(0, "web_big", &big), 1);
        }
        // Taking one frame makes room for one more; then the queue is full by bytes.
        let Ok(Outgoing::Frame(f)) = h.rx.try_recv() else {
            panic!("a frame was queued");
        };
        h.took(&f);
        assert_eq!(hub.send_to_pipe(0, "web_big", &big), 1);
        assert_eq!(hub.stats.slow_closed.load(Ordering::Relaxed), 0);
        assert_eq!(hub.send_to_pipe(0, "web_big", &big), 0);
        assert_eq!(hub.stats.slow_closed.load(Ordering::Relaxed), 1);
        assert!(h.rx.len() < QUEUE_FRAMES);
    }

    #[test]
    fn slow_consumers_are_told_to_close() {
        let hub = Hub::new();
        let (h, _) = hub.register(info(0, 1, "")).unwrap();
        hub.set_subscriptions(h.id, &["web_flood".into()], 0);
        for _ in 0..QUEUE_FRAMES {
            assert_eq!(hub.send_to_pipe(0, "web_flood", "x"), 1);
        }
        assert_eq!(hub.send_to_pipe(0, "web_flood", "x"), 0);
        assert_eq!(hub.stats.slow_closed.load(Ordering::Relaxed), 1);
        // The kill switch was pulled: a waiter is woken at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), h.kill.notified())
                .await
                .expect("kill notified");
        });
    }
}
