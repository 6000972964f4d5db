//! State that survives a restart: users_auth, queued personal messages, pipe history, settings,
//! last-seen times and conference invitations.
//!
//! [`Store`] is deliberately narrow (keyed reads, upserts, deletes; no query language) so that a
//! networked store (Redis, PostgreSQL) can implement it for a cluster. Every method is scoped by
//! `dev_id`: one developer never sees another's rows. A method that returns `Ok` has made its write
//! durable as configured (see [`crate::config::SyncMode`]).

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

/// A developer (tenant) id: the CometQL login name, `db_<N>`, `devid=` on the WebSocket.
pub type DevId = i64;
/// A user id inside one developer's space.
pub type UserId = i64;

/// A personal message waiting for its user to come online (`users_messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Position in the store; increases with every queued message.
    pub index: i64,
    pub event: String,
    pub message: String,
    /// Unix time (seconds) it was queued.
    pub time: i64,
}

/// A message broadcast on a pipe and kept as history (`pipes_messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeMessage {
    /// Position in the store; increases with every stored message.
    pub index: i64,
    /// Unix time (seconds).
    pub time: i64,
    pub event: String,
    pub message: String,
    /// Sender (0 for the backend).
    pub user_id: UserId,
}

/// A message to add to a pipe's history.
#[derive(Debug, Clone, Copy)]
pub struct NewPipeMessage<'a> {
    pub event: &'a str,
    pub message: &'a str,
    /// Sender (0 for the backend).
    pub user_id: UserId,
    /// Unix time (seconds).
    pub time: i64,
}

/// One invitation to a conference (`conference` table, contract 2.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConferenceRow {
    pub name: String,
    pub user_id: UserId,
    pub caller_id: UserId,
    pub message: String,
    pub profile: String,
    /// RTMP URL to broadcast to, or empty.
    pub stream: String,
    /// `<sip host>:<sip port>` of the media node that runs this conference.
    pub node: String,
    /// Unix time (seconds) of the invitation.
    pub time: i64,
}

/// A store failure: surfaced to clients as CometQL error 500, never as a lost acknowledged write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("the store is shut down")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a store that queues its requests counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Requests answered, by kind.
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Requests queued and not yet started, by kind.
    pub reads_waiting: AtomicU64,
    pub writes_waiting: AtomicU64,
    /// Transactions committed (each holds one or more writes) and transactions that failed to
    /// begin or commit (their writes were answered with an error).
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Time spent in write transactions, from BEGIN to the end of COMMIT (the fsync included).
    pub write_ns: AtomicU64,
    /// When the write transaction in progress began (milliseconds on a monotonic clock that
    /// starts with the process), 0 when none is.
    pub busy_since_ms: AtomicU64,
}

/// Milliseconds on a monotonic clock that starts with the process (never 0).
pub(crate) fn mono_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

impl StoreStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// How long the write transaction in progress has been open, if one is.
    pub fn busy_for(&self) -> Option<std::time::Duration> {
        match self.busy_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_millis(
                mono_ms().saturating_sub(since),
            )),
        }
    }
}

/// Persistent state, scoped by developer.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's counters, if it keeps any (the SQLite store does).
    fn stats(&self) -> Option<&StoreStats> {
        None
    }

    /// The users_auth hash of a user, if any.
    async fn user_hash(&self, dev: DevId, user: UserId) -> StoreResult<Option<String>>;
    /// Sets (replaces) a user's hash.
    async fn set_user_hash(&self, dev: DevId, user: UserId, hash: &str) -> StoreResult<()>;
    /// Removes a user's hash; true if there was one.
    async fn delete_user_hash(&self, dev: DevId, user: UserId) -> StoreResult<bool>;

    /// Unix time of the user's last disconnect, if known.
    async fn last_seen(&self, dev: DevId, user: UserId) -> StoreResult<Option<i64>>;
    /// Records a disconnect.
    async fn set_last_seen(&self, dev: DevId, user: UserId, time: i64) -> StoreResult<()>;

    /// Queues a personal message, keeping only the newest `keep` messages of that user.
    async fn queue_user_message(
        &self,
        dev: DevId,
        user: UserId,
        event: &str,
        message: &str,
        time: i64,
        keep: usize,
    ) -> StoreResult<QueuedMessage>;
    /// Queued messages of a user not older than `since` (unix seconds), oldest first.
    async fn user_messages(
        &self,
        dev: DevId,
        user: UserId,
        since: i64,
    ) -> StoreResult<Vec<QueuedMessage>>;
    /// Removes and returns the queued messages not older than `since`, oldest first (delivery on
    /// connect). Older ones are dropped too.
    async fn take_user_messages(
        &self,
        dev: DevId,
        user: UserId,
        since: i64,
    ) -> StoreResult<Vec<QueuedMessage>>;
    /// Drops a user's queue; returns how many messages were removed.
    async fn clear_user_messages(&self, dev: DevId, user: UserId) -> StoreResult<u64>;
    /// Drops every queued message older than `before` (unix seconds), of every user: they can
    /// no longer be delivered, and users who never connect would keep them forever.
    async fn purge_user_messages(&self, before: i64) -> StoreResult<u64>;

    /// Appends to a pipe's history, keeping only the newest `keep` messages.
    async fn append_pipe_message(
        &self,
        dev: DevId,
        pipe: &str,
        entry: NewPipeMessage<'_>,
        keep: usize,
    ) -> StoreResult<PipeMessage>;
    /// The newest `newest` messages of a pipe's history, oldest first (a reader never needs
    /// more, and a history may hold 1000 messages of 64 KiB).
    async fn pipe_messages(
        &self,
        dev: DevId,
        pipe: &str,
        newest: usize,
    ) -> StoreResult<Vec<PipeMessage>>;
    /// Drops a pipe's history; returns how many messages were removed.
    async fn clear_pipe_messages(&self, dev: DevId, pipe: &str) -> StoreResult<u64>;

    /// A setting (for example a pipe's history length), if set.
    async fn setting(&self, dev: DevId, key: &str) -> StoreResult<Option<String>>;
    /// Sets a setting; `None` removes it.
    async fn set_setting(&self, dev: DevId, key: &str, value: Option<&str>) -> StoreResult<()>;

    /// Stores an invitation, replacing the one for the same (dev, name, user_id).
    async fn put_conference_row(&self, dev: DevId, row: &ConferenceRow) -> StoreResult<()>;
    /// The invitations of one conference, by user_id.
    async fn conference_rows(&self, dev: DevId, name: &str) -> StoreResult<Vec<ConferenceRow>>;
    /// One user's invitation to one conference.
    async fn conference_row(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
    ) -> StoreResult<Option<ConferenceRow>>;
    /// Removes one user's invitation, or all of a conference's when `user` is `None`; returns how
    /// many rows were removed.
    async fn delete_conference_rows(
        &self,
        dev: DevId,
        name: &str,
        user: Option<UserId>,
    ) -> StoreResult<u64>;
}

#[cfg(test)]
pub(crate) mod conformance {
    //! One behavioural suite every [`Store`] implementation must pass.
    use super::*;

    pub async fn run(s: &dyn Store) {
        users(s).await;
        queues(s).await;
        pipes(s).await;
        settings(s).await;
        conferences(s).await;
        isolation(s).await;
    }

    async fn users(s: &dyn Store) {
        assert_eq!(s.user_hash(1, 5).await.unwrap(), None);
        s.set_user_hash(1, 5, "abc").await.unwrap();
        s.set_user_hash(1, 5, "def").await.unwrap();
        assert_eq!(s.user_hash(1, 5).await.unwrap().as_deref(), Some("def"));
        assert!(s.delete_user_hash(1, 5).await.unwrap());
        assert!(!s.delete_user_hash(1, 5).await.unwrap());
        assert_eq!(s.user_hash(1, 5).await.unwrap(), None);

        assert_eq!(s.last_seen(1, 5).await.unwrap(), None);
        s.set_last_seen(1, 5, 1000).await.unwrap();
        s.set_last_seen(1, 5, 2000).await.unwrap();
        assert_eq!(s.last_seen(1, 5).await.unwrap(), Some(2000));
    }

    async fn queues(s: &dyn Store) {
        for i in 0..12 {
            s.queue_user_message(1, 7, "ev", &format!("m{i}"), 100 + i, 10)
                .await
                .unwrap();
        }
        let all = s.user_messages(1, 7, 0).await.unwrap();
        assert_eq!(all.len(), 10, "only the newest 10 are kept");
        assert_eq!(all[0].message, "m2");
        assert_eq!(all[9].message, "m11");
        assert!(all.windows(2).all(|w| w[0].index < w[1].index));
        let fresh = s.user_messages(1, 7, 108).await.unwrap();
        assert_eq!(fresh.len(), 4);
        let taken = s.take_user_messages(1, 7, 110).await.unwrap();
        assert_eq!(
            taken.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(),
            ["m10", "m11"]
        );
        assert!(s.user_messages(1, 7, 0).await.unwrap().is_empty());
        s.queue_user_message(1, 7, "ev", "x", 1, 10).await.unwrap();
        assert_eq!(s.clear_user_messages(1, 7).await.unwrap(), 1);
        assert_eq!(s.clear_user_messages(1, 7).await.unwrap(), 0);
        // Expired messages of users who never connect are purged; fresh ones stay.
        for (user, time) in [(8, 100), (8, 200), (9, 150), (10, 300)] {
            s.queue_user_message(2, user, "ev", "m", time, 10)
                .await
                .unwrap();
        }
        assert_eq!(s.purge_user_messages(200).await.unwrap(), 2);
        assert_eq!(s.user_messages(2, 8, 0).await.unwrap().len(), 1);
        assert!(s.user_messages(2, 9, 0).await.unwrap().is_empty());
        assert_eq!(s.user_messages(2, 10, 0).await.unwrap().len(), 1);
        assert_eq!(s.purge_user_messages(1000).await.unwrap(), 2);
    }

    async fn pipes(s: &dyn Store) {
        for i in 0..5 {
            let text = format!("p{i}");
            let entry = NewPipeMessage {
                event: "msg",
                message: &text,
                user_id: i,
                time: 10 + i,
            };
            s.append_pipe_message(1, "chat", entry, 3).await.unwrap();
        }
        let h = s.pipe_messages(1, "chat", 99).await.unwrap();
        assert_eq!(
            h.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(),
            ["p2", "p3", "p4"]
        );
        let newest = s.pipe_messages(1, "chat", 2).await.unwrap();
        assert_eq!(
            newest
                .iter()
                .map(|m| m.message.as_str())
                .collect::<Vec<_>>(),
            ["p3", "p4"]
        );
        assert_eq!(h[2].user_id, 4);
        assert_eq!(h[2].time, 14);
        assert!(s.pipe_messages(1, "other", 99).await.unwrap().is_empty());
        assert_eq!(s.clear_pipe_messages(1, "chat").await.unwrap(), 3);
        assert!(s.pipe_messages(1, "chat", 99).await.unwrap().is_empty());
    }

    async fn settings(s: &dyn Store) {
        assert_eq!(s.setting(1, "k").await.unwrap(), None);
        s.set_setting(1, "k", Some("v")).await.unwrap();
        s.set_setting(1, "k", Some("w")).await.unwrap();
        assert_eq!(s.setting(1, "k").await.unwrap().as_deref(), Some("w"));
        s.set_setting(1, "k", None).await.unwrap();
        assert_eq!(s.setting(1, "k").await.unwrap(), None);
    }

    fn row(name: &str, user: UserId, msg: &str) -> ConferenceRow {
        ConferenceRow {
            name: name.into(),
            user_id: user,
            caller_id: 2,
            message: msg.into(),
            profile: "video".into(),
            stream: String::new(),
            node: "127.0.0.1:7443".into(),
            time: 1234,
        }
    }

    async fn conferences(s: &dyn Store) {
        s.put_conference_row(1, &row("101", 3, "a")).await.unwrap();
        s.put_conference_row(1, &row("101", 2, "b")).await.unwrap();
        s.put_conference_row(1, &row("101", 3, "c")).await.unwrap();
        s.put_conference_row(1, &row("102", 2, "d")).await.unwrap();
        let rows = s.conference_rows(1, "101").await.unwrap();
        assert_eq!(rows, vec![row("101", 2, "b"), row("101", 3, "c")]);
        assert_eq!(
            s.conference_row(1, "101", 3).await.unwrap(),
            Some(row("101", 3, "c"))
        );
        assert_eq!(s.conference_row(1, "101", 9).await.unwrap(), None);
        assert_eq!(
            s.delete_conference_rows(1, "101", Some(2)).await.unwrap(),
            1
        );
        assert_eq!(s.delete_conference_rows(1, "101", None).await.unwrap(), 1);
        assert!(s.conference_rows(1, "101").await.unwrap().is_empty());
        assert_eq!(s.conference_rows(1, "102").await.unwrap().len(), 1);
    }

    async fn isolation(s: &dyn Store) {
        s.set_user_hash(10, 1, "ten").await.unwrap();
        s.set_user_hash(20, 1, "twenty").await.unwrap();
        assert_eq!(s.user_hash(10, 1).await.unwrap().as_deref(), Some("ten"));
        assert_eq!(s.user_hash(20, 1).await.unwrap().as_deref(), Some("twenty"));
        s.put_conference_row(10, &row("r", 1, "x")).await.unwrap();
        assert!(s.conference_rows(20, "r").await.unwrap().is_empty());
        assert_eq!(s.delete_conference_rows(20, "r", None).await.unwrap(), 0);
        s.queue_user_message(10, 1, "e", "m", 1, 10).await.unwrap();
        assert!(s.user_messages(20, 1, 0).await.unwrap().is_empty());
        let entry = NewPipeMessage {
            event: "e",
            message: "m",
            user_id: 0,
            time: 1,
        };
        s.append_pipe_message(10, "p", entry, 10).await.unwrap();
        assert!(s.pipe_messages(20, "p", 99).await.unwrap().is_empty());
        s.set_setting(10, "k", Some("v")).await.unwrap();
        assert_eq!(s.setting(20, "k").await.unwrap(), None);
    }
}
