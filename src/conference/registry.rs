//! Who is in which media conference right now.
//!
//! The conference runtime adds a member when its call is answered and removes it when the call
//! ends; CometQL reads `conference_members` from here and hangs members up through it (DELETE FROM
//! conference, DELETE FROM users_auth). Time is passed in, so the registry runs on any clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{DevId, UserId};

/// Ends one member's call; called with a human-readable reason (it becomes the SIP Reason header).
pub type Hangup = Arc<dyn Fn(&str) + Send + Sync>;

struct Member {
    joined: Instant,
    last_talking: Option<Instant>,
    hangup: Hangup,
}

/// One row of `conference_members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub name: String,
    pub user_id: UserId,
    /// Time since the member joined.
    pub joined_for: Duration,
    /// Time since the member last spoke, if ever.
    pub silent_for: Option<Duration>,
}

/// Live conference membership for all developers.
#[derive(Default)]
pub struct ConferenceRegistry {
    inner: Mutex<HashMap<(DevId, String), BTreeMap<UserId, Member>>>,
}

impl ConferenceRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(DevId, String), BTreeMap<UserId, Member>>> {
        // Every critical section is a single map update; a poisoned lock still holds valid data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces, for a re-join) a member. The conference exists while it has members.
    pub fn join(&self, dev: DevId, name: &str, user: UserId, now: Instant, hangup: Hangup) {
        self.lock()
            .entry((dev, name.to_string()))
            .or_default()
            .insert(
                user,
                Member {
                    joined: now,
                    last_talking: None,
                    hangup,
                },
            );
    }

    /// Removes a member; the conference disappears with its last member. True if it was there.
    pub fn leave(&self, dev: DevId, name: &str, user: UserId) -> bool {
        let mut g = self.lock();
        let key = (dev, name.to_string());
        let Some(members) = g.get_mut(&key) else {
            return false;
        };
        let was = members.remove(&user).is_some();
        if members.is_empty() {
            g.remove(&key);
        }
        was
    }

    /// Records that a member is talking at `now`.
    pub fn talking(&self, dev: DevId, name: &str, user: UserId, now: Instant) {
        if let Some(m) = self
            .lock()
            .get_mut(&(dev, name.to_string()))
            .and_then(|c| c.get_mut(&user))
        {
            m.last_talking = Some(now);
        }
    }

    /// Members of one conference, or of every conference of `dev`, ordered by (name, user_id).
    pub fn members(&self, dev: DevId, name: Option<&str>, now: Instant) -> Vec<MemberRow> {
        let g = self.lock();
        let mut confs: Vec<_> = g
            .iter()
            .filter(|((d, n), _)| *d == dev && name.is_none_or(|x| x == n))
            .collect();
        confs.sort_by(|a, b| a.0.1.cmp(&b.0.1));
        confs
            .into_iter()
            .flat_map(|((_, n), members)| {
                members.iter().map(move |(u, m)| MemberRow {
                    name: n.clone(),
                    user_id: *u,
                    joined_for: now.saturating_duration_since(m.joined),
                    silent_for: m.last_talking.map(|t| now.saturating_duration_since(t)),
                })
            })
            .collect()
    }

    /// Hangs up one member, or every member of the conference when `user` is `None`.
    /// Returns how many calls were told to end. The calls leave the registry when they end.
    pub fn hangup(&self, dev: DevId, name: &str, user: Option<UserId>, reason: &str) -> usize {
        let targets: Vec<Hangup> = {
            let g = self.lock();
            match g.get(&(dev, name.to_string())) {
                None => Vec::new(),
                Some(members) => members
                    .iter()
                    .filter(|(u, _)| user.is_none_or(|x| x == **u))
                    .map(|(_, m)| m.hangup.clone())
                    .collect(),
            }
        };
        // Called outside the lock: a hangup may call back into the registry.
        for h in &targets {
            h(reason);
        }
        targets.len()
    }

    /// Hangs up every call of one user, in every conference of `dev`.
    pub fn hangup_user(&self, dev: DevId, user: UserId, reason: &str) -> usize {
        let targets: Vec<Hangup> = {
            let g = self.lock();
            g.iter()
                .filter(|((d, _), _)| *d == dev)
                .filter_map(|(_, members)| members.get(&user).map(|m| m.hangup.clone()))
                .collect()
        };
        for h in &targets {
            h(reason);
        }
        targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, Hangup) {
        let c = Arc::new(AtomicUsize::new(0));
        let c2 = c.clone();
        (
            c,
            Arc::new(move |_: &str| {
                c2.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn members_times_and_lifecycle() {
        let r = ConferenceRegistry::new();
        let t0 = Instant::now();
        let (_, h) = counter();
        r.join(1, "101", 7, t0, h.clone());
        r.join(1, "101", 3, t0 + Duration::from_secs(5), h.clone());
        r.join(2, "101", 9, t0, h.clone());
        r.talking(1, "101", 7, t0 + Duration::from_secs(8));
        let rows = r.members(1, Some("101"), t0 + Duration::from_secs(10));
        assert_eq!(rows.len(), 2, "dev 2 is not visible to dev 1");
        assert_eq!(rows[0].user_id, 3);
        assert_eq!(rows[0].joined_for, Duration::from_secs(5));
        assert_eq!(rows[0].silent_for, None);
        assert_eq!(rows[1].joined_for, Duration::from_secs(10));
        assert_eq!(rows[1].silent_for, Some(Duration::from_secs(2)));
        assert!(r.leave(1, "101", 7));
        assert!(r.leave(1, "101", 3));
        assert!(
            r.members(1, None, t0).is_empty(),
            "the conference ends with its last member"
        );
        assert!(!r.leave(1, "101", 3));
    }

    #[test]
    fn hangups_reach_the_right_calls() {
        let r = ConferenceRegistry::new();
        let t0 = Instant::now();
        let (a, ha) = counter();
        let (b, hb) = counter();
        r.join(1, "x", 1, t0, ha.clone());
        r.join(1, "x", 2, t0, hb.clone());
        r.join(1, "y", 1, t0, ha);
        assert_eq!(r.hangup(1, "x", Some(2), "kick"), 1);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (0, 1));
        assert_eq!(r.hangup(1, "x", None, "end"), 2);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 2));
        assert_eq!(r.hangup_user(1, 1, "deleted"), 2);
        assert_eq!(a.load(Ordering::SeqCst), 3);
        assert_eq!(r.hangup_user(2, 1, "other dev"), 0);
        assert_eq!(r.hangup(1, "nope", None, "x"), 0);
    }
}
