//! [`Store`] in one SQLite file (WAL mode) with group commit, and reads beside the writes.
//!
//! One thread owns the writing connection. Write requests queue up while it works; it runs every
//! waiting request in one transaction (each inside its own savepoint, so one failing request does
//! not undo the others), commits once, and only then answers them. Under load, many acknowledged
//! writes share one fsync; no request is acknowledged before its commit.
//!
//! Reads (every method that only looks) go to [`READERS`] threads of their own, each with a
//! read-only connection. In WAL mode a reader sees the last commit and neither waits for the
//! writer nor holds it up, so an authentication lookup never waits for someone else's fsync.
//! A read sees every write acknowledged before it was asked (the write's commit came first),
//! and nothing of a transaction still in progress.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::*;
use crate::config::SyncMode;

/// Answers a write request with the outcome of its transaction (`Err`: why it did not commit).
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write request: run on the writer's connection inside the batch's transaction (`None`:
/// the transaction could not begin, so nothing runs and the reply carries why). Says whether
/// it succeeded, and how to answer once the transaction has ended.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Reply) + Send>;
type Read = Box<dyn FnOnce(&Connection) + Send>;

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 256;

/// Threads (each with its own connection) that answer reads.
pub const READERS: usize = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users_auth (
    dev INTEGER NOT NULL, id INTEGER NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (dev, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users_time (
    dev INTEGER NOT NULL, id INTEGER NOT NULL, time INTEGER NOT NULL,
    PRIMARY KEY (dev, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_queue (
    idx INTEGER PRIMARY KEY AUTOINCREMENT, dev INTEGER NOT NULL, id INTEGER NOT NULL,
    event TEXT NOT NULL, message TEXT NOT NULL, time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS user_queue_by_user ON user_queue (dev, id, idx);
CREATE INDEX IF NOT EXISTS user_queue_by_time ON user_queue (time);
CREATE TABLE IF NOT EXISTS pipe_history (
    idx INTEGER PRIMARY KEY AUTOINCREMENT, dev INTEGER NOT NULL, pipe TEXT NOT NULL,
    time INTEGER NOT NULL, event TEXT NOT NULL, message TEXT NOT NULL, user_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS pipe_history_by_pipe ON pipe_history (dev, pipe, idx);
CREATE TABLE IF NOT EXISTS settings (
    dev INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (dev, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conference (
    dev INTEGER NOT NULL, name TEXT NOT NULL, user_id INTEGER NOT NULL,
    caller_id INTEGER NOT NULL, message TEXT NOT NULL, profile TEXT NOT NULL,
    stream TEXT NOT NULL, node TEXT NOT NULL, time INTEGER NOT NULL,
    PRIMARY KEY (dev, name, user_id)) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// A [`Store`] backed by one SQLite database file.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reads: mpsc::Sender<Read>,
    stats: Arc<StoreStats>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, sync: SyncMode) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        let sync = match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
        ))
        .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        // The readers open the file once it is in WAL mode and has its tables.
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")?;
                Ok(c)
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)?;
        let stats = Arc::new(StoreStats::default());
        let spawn_err =
            |e: std::io::Error| StoreError::Backend(format!("cannot start a store thread: {e}"));
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("comet-store".into())
            .spawn(move || writer(conn, rx, &writer_stats))
            .map_err(spawn_err)?;
        let (read_tx, read_rx) = mpsc::channel::<Read>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        for (i, c) in readers.into_iter().enumerate() {
            let rx = read_rx.clone();
            std::thread::Builder::new()
                .name(format!("comet-store-read-{i}"))
                .spawn(move || reader(c, &rx))
                .map_err(spawn_err)?;
        }
        Ok(SqliteStore {
            jobs: tx,
            reads: read_tx,
            stats,
        })
    }

    /// Runs `f` on the store thread inside the current batch; resolves after the batch commits.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> StoreResult<R> {
        let (tx, rx) = oneshot::channel();
        let stats = self.stats.clone();
        let job: Job = Box::new(move |conn| {
            StoreStats::sub(&stats.writes_waiting, 1);
            let res = conn.map(f);
            let ok = matches!(res, Some(Ok(_)));
            let reply: Reply = Box::new(move |commit| {
                let out = match (res, commit) {
                    (Some(Err(e)), _) => Err(backend(e)),
                    (None, Err(e)) => Err(StoreError::Backend(e)),
                    (_, Err(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                    (Some(Ok(v)), Ok(())) => Ok(v),
                    (None, Ok(())) => Err(StoreError::Backend("not run".into())),
                };
                StoreStats::add(&stats.writes, 1);
                let _ = tx.send(out);
            });
            (ok, reply)
        });
        StoreStats::add(&self.stats.writes_waiting, 1);
        if self.jobs.send(job).is_err() {
            StoreStats::sub(&self.stats.writes_waiting, 1);
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a reader's connection (it must only read); resolves with its result.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> StoreResult<R> {
        let (tx, rx) = oneshot::channel();
        let stats = self.stats.clone();
        let job: Read = Box::new(move |conn| {
            StoreStats::sub(&stats.reads_waiting, 1);
            let out = f(conn).map_err(backend);
            StoreStats::add(&stats.reads, 1);
            let _ = tx.send(out);
        });
        StoreStats::add(&self.stats.reads_waiting, 1);
        if self.reads.send(job).is_err() {
            StoreStats::sub(&self.stats.reads_waiting, 1);
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A reader thread: answers reads from the shared queue until every sender is gone.
fn reader(conn: Connection, rx: &Mutex<mpsc::Receiver<Read>>) {
    loop {
        // Only the wait for the next read holds the lock, not the read itself.
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match next {
            Ok(read) => read(&conn),
            Err(_) => return,
        }
    }
}

fn writer(conn: Connection, rx: mpsc::Receiver<Job>, stats: &StoreStats) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let began = Instant::now();
        stats.busy_since_ms.store(mono_ms(), Ordering::Relaxed);
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            stats.busy_since_ms.store(0, Ordering::Relaxed);
            let msg = format!("cannot begin a transaction: {e}");
            tracing::error!("{msg}");
            StoreStats::add(&stats.commit_failures, 1);
            // Run nothing; answer every request with the failure.
            for job in batch {
                let (_, reply) = job(None);
                reply(Err(msg.clone()));
            }
            continue;
        }
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            let savepoint = conn.execute_batch("SAVEPOINT job");
            let (ok, reply) = job(Some(&conn));
            if savepoint.is_ok() {
                let end = if ok {
                    "RELEASE job"
                } else {
                    "ROLLBACK TO job; RELEASE job"
                };
                let _ = conn.execute_batch(end);
            }
            replies.push(reply);
        }
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        match &commit {
            Ok(()) => StoreStats::add(&stats.commits, 1),
            Err(e) => {
                tracing::error!("store commit failed: {e}");
                StoreStats::add(&stats.commit_failures, 1);
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        StoreStats::add(&stats.write_ns, began.elapsed().as_nanos() as u64);
        stats.busy_since_ms.store(0, Ordering::Relaxed);
        for reply in replies {
            reply(commit.clone());
        }
    }
}

fn trim_sql(table: &str, key_col: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE dev = ?1 AND {key_col} = ?2 AND idx NOT IN \
         (SELECT idx FROM {table} WHERE dev = ?1 AND {key_col} = ?2 ORDER BY idx DESC LIMIT ?3)"
    )
}

fn conference_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConferenceRow> {
    Ok(ConferenceRow {
        name: r.get(0)?,
        user_id: r.get(1)?,
        caller_id: r.get(2)?,
        message: r.get(3)?,
        profile: r.get(4)?,
        stream: r.get(5)?,
        node: r.get(6)?,
        time: r.get(7)?,
    })
}

fn queued_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedMessage> {
    Ok(QueuedMessage {
        index: r.get(0)?,
        event: r.get(1)?,
        message: r.get(2)?,
        time: r.get(3)?,
    })
}

const CONFERENCE_COLS: &str = "name, user_id, caller_id, message, profile, stream, node, time";

#[async_trait]
impl Store for SqliteStore {
    fn stats(&self) -> Option<&StoreStats> {
        Some(&self.stats)
    }

    async fn user_hash(&self, dev: DevId, user: UserId) -> StoreResult<Option<String>> {
        self.read(move |c| {
            c.prepare_cached("SELECT hash FROM users_auth WHERE dev = ?1 AND id = ?2")?
                .query_row(params![dev, user], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn set_user_hash(&self, dev: DevId, user: UserId, hash: &str) -> StoreResult<()> {
        let hash = hash.to_string();
        self.call(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO users_auth (dev, id, hash) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![dev, user, hash])
            .map(drop)
        })
        .await
    }

    async fn delete_user_hash(&self, dev: DevId, user: UserId) -> StoreResult<bool> {
        self.call(move |c| {
            c.prepare_cached("DELETE FROM users_auth WHERE dev = ?1 AND id = ?2")?
                .execute(params![dev, user])
                .map(|n| n > 0)
        })
        .await
    }

    async fn last_seen(&self, dev: DevId, user: UserId) -> StoreResult<Option<i64>> {
        self.read(move |c| {
            c.prepare_cached("SELECT time FROM users_time WHERE dev = ?1 AND id = ?2")?
                .query_row(params![dev, user], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn set_last_seen(&self, dev: DevId, user: UserId, time: i64) -> StoreResult<()> {
        self.call(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO users_time (dev, id, time) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![dev, user, time])
            .map(drop)
        })
        .await
    }

    async fn queue_user_message(
        &self,
        dev: DevId,
        user: UserId,
        event: &str,
        message: &str,
        time: i64,
        keep: usize,
    ) -> StoreResult<QueuedMessage> {
        let (event, message) = (event.to_string(), message.to_string());
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO user_queue (dev, id, event, message, time) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![dev, user, event, message, time])?;
            let index = c.last_insert_rowid();
            c.prepare_cached(&trim_sql("user_queue", "id"))?
                .execute(params![dev, user, keep as i64])?;
            Ok(QueuedMessage {
                index,
                event,
                message,
                time,
            })
        })
        .await
    }

    async fn user_messages(
        &self,
        dev: DevId,
        user: UserId,
        since: i64,
    ) -> StoreResult<Vec<QueuedMessage>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT idx, event, message, time FROM user_queue \
                 WHERE dev = ?1 AND id = ?2 AND time >= ?3 ORDER BY idx",
            )?
            .query_map(params![dev, user, since], queued_from_row)?
            .collect()
        })
        .await
    }

    async fn take_user_messages(
        &self,
        dev: DevId,
        user: UserId,
        since: i64,
    ) -> StoreResult<Vec<QueuedMessage>> {
        self.call(move |c| {
            let out = c
                .prepare_cached(
                    "SELECT idx, event, message, time FROM user_queue \
                     WHERE dev = ?1 AND id = ?2 AND time >= ?3 ORDER BY idx",
                )?
                .query_map(params![dev, user, since], queued_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            c.prepare_cached("DELETE FROM user_queue WHERE dev = ?1 AND id = ?2")?
                .execute(params![dev, user])?;
            Ok(out)
        })
        .await
    }

    async fn clear_user_messages(&self, dev: DevId, user: UserId) -> StoreResult<u64> {
        self.call(move |c| {
            c.prepare_cached("DELETE FROM user_queue WHERE dev = ?1 AND id = ?2")?
                .execute(params![dev, user])
                .map(|n| n as u64)
        })
        .await
    }

    async fn purge_user_messages(&self, before: i64) -> StoreResult<u64> {
        self.call(move |c| {
            c.prepare_cached("DELETE FROM user_queue WHERE time < ?1")?
                .execute(params![before])
                .map(|n| n as u64)
        })
        .await
    }

    async fn append_pipe_message(
        &self,
        dev: DevId,
        pipe: &str,
        entry: NewPipeMessage<'_>,
        keep: usize,
    ) -> StoreResult<PipeMessage> {
        let pipe = pipe.to_string();
        let (event, message) = (entry.event.to_string(), entry.message.to_string());
        let (user_id, time) = (entry.user_id, entry.time);
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO pipe_history (dev, pipe, time, event, message, user_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![dev, pipe, time, event, message, user_id])?;
            let index = c.last_insert_rowid();
            c.prepare_cached(&trim_sql("pipe_history", "pipe"))?
                .execute(params![dev, pipe, keep as i64])?;
            Ok(PipeMessage {
                index,
                time,
                event,
                message,
                user_id,
            })
        })
        .await
    }

    async fn pipe_messages(
        &self,
        dev: DevId,
        pipe: &str,
        newest: usize,
    ) -> StoreResult<Vec<PipeMessage>> {
        let pipe = pipe.to_string();
        let newest = i64::try_from(newest).unwrap_or(i64::MAX);
        self.read(move |c| {
            c.prepare_cached(
                "SELECT idx, time, event, message, user_id FROM (\
                 SELECT idx, time, event, message, user_id FROM pipe_history \
                 WHERE dev = ?1 AND pipe = ?2 ORDER BY idx DESC LIMIT ?3) ORDER BY idx",
            )?
            .query_map(params![dev, pipe, newest], |r| {
                Ok(PipeMessage {
                    index: r.get(0)?,
                    time: r.get(1)?,
                    event: r.get(2)?,
                    message: r.get(3)?,
                    user_id: r.get(4)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn clear_pipe_messages(&self, dev: DevId, pipe: &str) -> StoreResult<u64> {
        let pipe = pipe.to_string();
        self.call(move |c| {
            c.prepare_cached("DELETE FROM pipe_history WHERE dev = ?1 AND pipe = ?2")?
                .execute(params![dev, pipe])
                .map(|n| n as u64)
        })
        .await
    }

    async fn setting(&self, dev: DevId, key: &str) -> StoreResult<Option<String>> {
        let key = key.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT value FROM settings WHERE dev = ?1 AND key = ?2")?
                .query_row(params![dev, key], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn set_setting(&self, dev: DevId, key: &str, value: Option<&str>) -> StoreResult<()> {
        let (key, value) = (key.to_string(), value.map(str::to_string));
        self.call(move |c| {
            match value {
                Some(v) => c
                    .prepare_cached(
                        "INSERT OR REPLACE INTO settings (dev, key, value) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![dev, key, v])?,
                None => c
                    .prepare_cached("DELETE FROM settings WHERE dev = ?1 AND key = ?2")?
                    .execute(params![dev, key])?,
            };
            Ok(())
        })
        .await
    }

    async fn put_conference_row(&self, dev: DevId, row: &ConferenceRow) -> StoreResult<()> {
        let row = row.clone();
        self.call(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO conference \
                 (dev, name, user_id, caller_id, message, profile, stream, node, time) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                dev,
                row.name,
                row.user_id,
                row.caller_id,
                row.message,
                row.profile,
                row.stream,
                row.node,
                row.time
            ])
            .map(drop)
        })
        .await
    }

    async fn conference_rows(&self, dev: DevId, name: &str) -> StoreResult<Vec<ConferenceRow>> {
        let name = name.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {CONFERENCE_COLS} FROM conference WHERE dev = ?1 AND name = ?2 ORDER BY user_id"
            ))?
            .query_map(params![dev, name], conference_from_row)?
            .collect()
        })
        .await
    }

    async fn conference_row(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
    ) -> StoreResult<Option<ConferenceRow>> {
        let name = name.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {CONFERENCE_COLS} FROM conference WHERE dev = ?1 AND name = ?2 AND user_id = ?3"
            ))?
            .query_row(params![dev, name, user], conference_from_row)
            .optional()
        })
        .await
    }

    async fn delete_conference_rows(
        &self,
        dev: DevId,
        name: &str,
        user: Option<UserId>,
    ) -> StoreResult<u64> {
        let name = name.to_string();
        self.call(move |c| {
            let n = match user {
                Some(u) => c
                    .prepare_cached(
                        "DELETE FROM conference WHERE dev = ?1 AND name = ?2 AND user_id = ?3",
                    )?
                    .execute(params![dev, name, u])?,
                None => c
                    .prepare_cached("DELETE FROM conference WHERE dev = ?1 AND name = ?2")?
                    .execute(params![dev, name])?,
            };
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.sqlite3"), SyncMode::Normal).unwrap();
        super::super::conformance::run(&s).await;
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        {
            let s = SqliteStore::open(&path, SyncMode::Full).unwrap();
            s.set_user_hash(3, 4, "h").await.unwrap();
        }
        let s = SqliteStore::open(&path, SyncMode::Full).unwrap();
        assert_eq!(s.user_hash(3, 4).await.unwrap().as_deref(), Some("h"));
    }

    #[tokio::test]
    async fn concurrent_writes_are_all_acknowledged_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(
            SqliteStore::open(&dir.path().join("t.sqlite3"), SyncMode::Full).unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.set_user_hash(1, i, &format!("h{i}")).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for i in 0..200 {
            assert_eq!(s.user_hash(1, i).await.unwrap(), Some(format!("h{i}")));
        }
    }

    /// While the writer is inside a transaction (here: a request that waits to be released,
    /// as a slow fsync would), reads are still answered, and they see only committed rows.
    #[tokio::test]
    async fn reads_do_not_wait_for_the_writer_and_see_only_commits() {
        let deadline = std::time::Duration::from_secs(10);
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(&dir.path().join("t.sqlite3"), SyncMode::Full).unwrap());
        s.set_setting(1, "before", Some("x")).await.unwrap();
        let (inside_tx, inside) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let writer = tokio::spawn({
            let s = s.clone();
            async move {
                s.call(move |c| {
                    c.execute(
                        "INSERT INTO settings (dev, key, value) VALUES (1, 'during', 'y')",
                        [],
                    )?;
                    let _ = inside_tx.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
            }
        });
        tokio::time::timeout(deadline, inside)
            .await
            .expect("the write started")
            .unwrap();
        let (before, during) = tokio::time::timeout(deadline, async {
            tokio::join!(s.setting(1, "before"), s.setting(1, "during"))
        })
        .await
        .expect("reads are answered while the writer is busy");
        assert_eq!(before.unwrap().as_deref(), Some("x"));
        assert_eq!(during.unwrap(), None, "an uncommitted row is not visible");
        assert!(
            s.stats().unwrap().busy_for().is_some(),
            "a write transaction is open"
        );
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(s.stats().unwrap().busy_for(), None, "and closed");
        assert_eq!(
            s.setting(1, "during").await.unwrap().as_deref(),
            Some("y"),
            "an acknowledged write is visible to the next read"
        );
        let st = s.stats().unwrap();
        assert_eq!(st.writes.load(Ordering::Relaxed), 2);
        assert_eq!(st.reads.load(Ordering::Relaxed), 3);
        assert_eq!(st.writes_waiting.load(Ordering::Relaxed), 0);
        assert_eq!(st.reads_waiting.load(Ordering::Relaxed), 0);
        assert!(st.commits.load(Ordering::Relaxed) >= 1);
        assert!(st.write_ns.load(Ordering::Relaxed) > 0);
    }

    /// Another process holds the database's write lock longer than the busy timeout: the
    /// write is answered with why (not as if the store had shut down), reads go on, and once
    /// the lock is gone writes work again.
    #[tokio::test]
    async fn a_transaction_that_cannot_begin_is_answered_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        let s = SqliteStore::open(&path, SyncMode::Normal).unwrap();
        s.set_setting(1, "a", Some("x")).await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = s.set_setting(1, "b", Some("y")).await.unwrap_err();
        assert!(
            err.to_string().contains("cannot begin a transaction")
                && err.to_string().contains("locked"),
            "{err}"
        );
        assert_eq!(
            s.stats().unwrap().commit_failures.load(Ordering::Relaxed),
            1
        );
        assert_eq!(s.setting(1, "a").await.unwrap().as_deref(), Some("x"));
        other.execute_batch("ROLLBACK").unwrap();
        s.set_setting(1, "b", Some("y")).await.unwrap();
        assert_eq!(s.setting(1, "b").await.unwrap().as_deref(), Some("y"));
        assert_eq!(s.stats().unwrap().writes_waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_failing_request_does_not_undo_its_batch_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.sqlite3"), SyncMode::Normal).unwrap();
        let bad = s.call(|c| {
            c.execute(
                "INSERT INTO settings (dev, key, value) VALUES (1, 'a', 'x')",
                [],
            )?;
            c.execute("INSERT INTO no_such_table VALUES (1)", [])
                .map(drop)
        });
        let good = s.set_setting(1, "b", Some("y"));
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        good.unwrap();
        assert_eq!(
            s.setting(1, "a").await.unwrap(),
            None,
            "the failed request was rolled back"
        );
        assert_eq!(s.setting(1, "b").await.unwrap().as_deref(), Some("y"));
    }
}
