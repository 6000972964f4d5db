//! [`Store`] in process memory: for tests and `[store] backend = memory`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;

#[derive(Default)]
struct Inner {
    next_index: i64,
    users: HashMap<(DevId, UserId), String>,
    last_seen: HashMap<(DevId, UserId), i64>,
    queues: HashMap<(DevId, UserId), VecDeque<QueuedMessage>>,
    pipes: HashMap<(DevId, String), VecDeque<PipeMessage>>,
    settings: HashMap<(DevId, String), String>,
    conferences: HashMap<(DevId, String), BTreeMap<UserId, ConferenceRow>>,
}

impl Inner {
    fn index(&mut self) -> i64 {
        self.next_index += 1;
        self.next_index
    }
}

/// A [`Store`] that forgets everything when dropped.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> StoreResult<R> {
        // A poisoned lock means a panic elsewhere while holding it; the data is still consistent
        // because every operation below is a single in-place update.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut g))
    }
}

fn trim<T>(q: &mut VecDeque<T>, keep: usize) {
    while q.len() > keep {
        q.pop_front();
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn user_hash(&self, dev: DevId, user: UserId) -> StoreResult<Option<String>> {
        self.with(|i| i.users.get(&(dev, user)).cloned())
    }

    async fn set_user_hash(&self, dev: DevId, user: UserId, hash: &str) -> StoreResult<()> {
        self.with(|i| {
            i.users.insert((dev, user), hash.to_string());
        })
    }

    async fn delete_user_hash(&self, dev: DevId, user: UserId) -> StoreResult<bool> {
        self.with(|i| i.users.remove(&(dev, user)).is_some())
    }

    async fn last_seen(&self, dev: DevId, user: UserId) -> StoreResult<Option<i64>> {
        self.with(|i| i.last_seen.get(&(dev, user)).copied())
    }

    async fn set_last_seen(&self, dev: DevId, user: UserId, time: i64) -> StoreResult<()> {
        self.with(|i| {
            i.last_seen.insert((dev, user), time);
        })
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
        self.with(|i| {
            let m = QueuedMessage {
                index: i.index(),
                event: event.to_string(),
                message: message.to_string(),
                time,
            };
            let q = i.queues.entry((dev, user)).or_default();
            q.push_back(m.clone());
            trim(q, keep);
            m
        })
    }

    async fn user_messages(
        &self,
        dev: DevId,
        user: UserId,
        since: i64,
    ) -> StoreResult<Vec<QueuedMessage>> {
        self.with(|i| {
            i.queues
                .get(&(dev, user))
                .map(|q| q.iter().filter(|m| m.time >= since).cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn take_user_messages(
        &self,
        dev: DevId,
        user: UserId,
        since: i64,
    ) -> StoreResult<Vec<QueuedMessage>> {
        self.with(|i| {
            i.queues
                .remove(&(dev, user))
                .map(|q| q.into_iter().filter(|m| m.time >= since).collect())
                .unwrap_or_default()
        })
    }

    async fn clear_user_messages(&self, dev: DevId, user: UserId) -> StoreResult<u64> {
        self.with(|i| i.queues.remove(&(dev, user)).map_or(0, |q| q.len() as u64))
    }

    async fn purge_user_messages(&self, before: i64) -> StoreResult<u64> {
        self.with(|i| {
            let mut purged = 0;
            i.queues.retain(|_, q| {
                let n = q.len();
                q.retain(|m| m.time >= before);
                purged += (n - q.len()) as u64;
                !q.is_empty()
            });
            purged
        })
    }

    async fn append_pipe_message(
        &self,
        dev: DevId,
        pipe: &str,
        entry: NewPipeMessage<'_>,
        keep: usize,
    ) -> StoreResult<PipeMessage> {
        self.with(|i| {
            let m = PipeMessage {
                index: i.index(),
                time: entry.time,
                event: entry.event.to_string(),
                message: entry.message.to_string(),
                user_id: entry.user_id,
            };
            let q = i.pipes.entry((dev, pipe.to_string())).or_default();
            q.push_back(m.clone());
            trim(q, keep);
            m
        })
    }

    async fn pipe_messages(
        &self,
        dev: DevId,
        pipe: &str,
        newest: usize,
    ) -> StoreResult<Vec<PipeMessage>> {
        self.with(|i| {
            i.pipes
                .get(&(dev, pipe.to_string()))
                .map(|q| {
                    q.iter()
                        .skip(q.len().saturating_sub(newest))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    async fn clear_pipe_messages(&self, dev: DevId, pipe: &str) -> StoreResult<u64> {
        self.with(|i| {
            i.pipes
                .remove(&(dev, pipe.to_string()))
                .map_or(0, |q| q.len() as u64)
        })
    }

    async fn setting(&self, dev: DevId, key: &str) -> StoreResult<Option<String>> {
        self.with(|i| i.settings.get(&(dev, key.to_string())).cloned())
    }

    async fn set_setting(&self, dev: DevId, key: &str, value: Option<&str>) -> StoreResult<()> {
        self.with(|i| match value {
            Some(v) => {
                i.settings.insert((dev, key.to_string()), v.to_string());
            }
            None => {
                i.settings.remove(&(dev, key.to_string()));
            }
        })
    }

    async fn put_conference_row(&self, dev: DevId, row: &ConferenceRow) -> StoreResult<()> {
        self.with(|i| {
            i.conferences
                .entry((dev, row.name.clone()))
                .or_default()
                .insert(row.user_id, row.clone());
        })
    }

    async fn conference_rows(&self, dev: DevId, name: &str) -> StoreResult<Vec<ConferenceRow>> {
        self.with(|i| {
            i.conferences
                .get(&(dev, name.to_string()))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn conference_row(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
    ) -> StoreResult<Option<ConferenceRow>> {
        self.with(|i| {
            i.conferences
                .get(&(dev, name.to_string()))
                .and_then(|m| m.get(&user).cloned())
        })
    }

    async fn delete_conference_rows(
        &self,
        dev: DevId,
        name: &str,
        user: Option<UserId>,
    ) -> StoreResult<u64> {
        self.with(|i| {
            let key = (dev, name.to_string());
            let n = match (i.conferences.get_mut(&key), user) {
                (None, _) => 0,
                (Some(m), Some(u)) => m.remove(&u).is_some() as u64,
                (Some(m), None) => {
                    let n = m.len() as u64;
                    m.clear();
                    n
                }
            };
            if i.conferences.get(&key).is_some_and(|m| m.is_empty()) {
                i.conferences.remove(&key);
            }
            n
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run(&super::MemoryStore::new()).await;
    }
}
