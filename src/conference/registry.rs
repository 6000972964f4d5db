//! Who is in which media conference right now, and what the backend decided about them.
//!
//! The SIP driver adds a member when its call is answered and removes it when the call ends; the
//! media runtime reports voice activity and reads the moderation flags; CometQL reads
//! `conference_members`, changes flags (`UPDATE conference_members ...`) and hangs members up
//! (`DELETE FROM conference`, `DELETE FROM users_auth`). Every change is also published as a
//! [`ConferenceEvent`] to the sink installed with [`ConferenceRegistry::set_events`] (the
//! `conference_<name>` comet pipe). Time is passed in, so the registry runs on any clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::store::{DevId, UserId};

/// Ends one member's call; called with a human-readable reason (it becomes the SIP Reason header).
pub type Hangup = Arc<dyn Fn(&str) + Send + Sync>;

/// What the backend decided about one member (`UPDATE conference_members ...`). A member the
/// server muted cannot unmute itself: the flag lives here, not in the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFlags {
    /// Heard by the others.
    pub audio: bool,
    /// Seen by the others.
    pub video: bool,
    /// Hears nothing.
    pub deaf: bool,
    /// Pinned to the big tile of the canvas.
    pub video_floor: bool,
}

impl Default for MemberFlags {
    fn default() -> Self {
        MemberFlags {
            audio: true,
            video: true,
            deaf: false,
            video_floor: false,
        }
    }
}

/// Something that happened in a conference, for the `conference_<name>` event pipe.
#[derive(Debug, Clone, PartialEq)]
pub struct ConferenceEvent {
    pub dev: DevId,
    pub conference: String,
    /// `join`, `leave`, `talking`, `flags`, `layout`, `end`.
    pub event: &'static str,
    pub data: Value,
}

/// Receives every [`ConferenceEvent`], in order.
pub type EventSink = Arc<dyn Fn(ConferenceEvent) + Send + Sync>;

/// A change the backend made to a conference that runs in another process (a media node of a
/// cluster, see [`crate::cluster`]): that process's media runtime must apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    Flags {
        user: UserId,
        flags: MemberFlags,
    },
    Layout(String),
    /// The conference's time limit from its start (zero: none).
    MaxDuration(Duration),
}

/// Carries [`RemoteChange`]s to the process that runs a conference. Called with the registry
/// locked: it must only queue.
pub type Remote = Arc<dyn Fn(RemoteChange) + Send + Sync>;

/// A membership change of this process's conferences, reported to a cluster's head.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mirror {
    Join {
        dev: DevId,
        name: String,
        user: UserId,
        profile: String,
    },
    Leave {
        dev: DevId,
        name: String,
        user: UserId,
    },
    Activity {
        dev: DevId,
        name: String,
        user: UserId,
        talking: bool,
        energy: u8,
    },
}

/// Receives every [`Mirror`] change, in order. Called with the registry locked: it must only
/// queue.
pub type MirrorSink = Arc<dyn Fn(Mirror) + Send + Sync>;

struct Member {
    joined: Instant,
    last_talking: Option<Instant>,
    talking: bool,
    energy: u8,
    flags: MemberFlags,
    profile: String,
    hangup: Hangup,
}

/// Member `user` of conference (`dev`, `name`) in the locked map, with its conference's remote
/// side (set when the conference runs on a media node).
fn member_in<'a>(
    map: &'a mut HashMap<Key, Conference>,
    dev: DevId,
    name: &str,
    user: UserId,
) -> Option<(&'a mut Member, &'a mut Option<Remote>)> {
    let conf = map.get_mut(&(dev, name.to_string()))?;
    let m = conf.members.get_mut(&user)?;
    Some((m, &mut conf.remote))
}

struct Conference {
    members: BTreeMap<UserId, Member>,
    layout: Option<String>,
    /// When the conference ends on its own (`max_duration`).
    deadline: Option<Instant>,
    started: Instant,
    /// Set when the conference runs in another process (a media node).
    remote: Option<Remote>,
}

/// What the media runtime applies to a conference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceState {
    /// Set by `UPDATE conference_members SET layout = ...` (`None`: the profile's).
    pub layout: Option<String>,
    pub flags: Vec<(UserId, MemberFlags)>,
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
    pub talking: bool,
    /// 0..=100.
    pub energy: u8,
    pub flags: MemberFlags,
    /// The conference's layout (`None`: the profile's).
    pub layout: Option<String>,
    pub profile: String,
    /// The conference's time limit, if any.
    pub max_duration: Option<Duration>,
}

type Key = (DevId, String);

/// Live conference membership for all developers.
#[derive(Default)]
pub struct ConferenceRegistry {
    inner: Mutex<HashMap<Key, Conference>>,
    /// Bumped by every flag or layout change, so the media runtime re-reads flags only then.
    generation: AtomicU64,
    events: OnceLock<EventSink>,
    /// A media node's report of its membership changes to the cluster's head.
    mirror: OnceLock<MirrorSink>,
    /// `max_duration` per profile.
    limits: OnceLock<HashMap<String, Duration>>,
}

impl ConferenceRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs the event sink (once). It runs with the registry locked: it must only queue.
    pub fn set_events(&self, sink: EventSink) {
        let _ = self.events.set(sink);
    }

    /// Installs the sink that reports membership changes to a cluster's head (once).
    pub fn set_mirror(&self, sink: MirrorSink) {
        let _ = self.mirror.set(sink);
    }

    fn mirror(&self, change: impl FnOnce() -> Mirror) {
        if let Some(sink) = self.mirror.get() {
            sink(change());
        }
    }

    /// Installs the per-profile time limits (once): a conference ends this long after it started.
    pub fn set_profile_limits(&self, limits: HashMap<String, Duration>) {
        let _ = self.limits.set(limits);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Conference>> {
        // Every critical section is a single map update; a poisoned lock still holds valid data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes an event. Called with the registry locked, so events go out in the order the
    /// changes happened (the sink must not call back into the registry: it queues).
    fn emit(&self, dev: DevId, conference: &str, event: &'static str, data: Value) {
        if let Some(sink) = self.events.get() {
            sink(ConferenceEvent {
                dev,
                conference: conference.to_string(),
                event,
                data,
            });
        }
    }

    /// Changes seen by the media runtime (flags, layouts) since start; compare to re-read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Adds (or replaces, for a re-join) a member. The conference exists while it has members;
    /// it starts its profile's time limit when created.
    pub fn join(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
        profile: &str,
        now: Instant,
        hangup: Hangup,
    ) {
        self.join_remote(dev, name, user, profile, now, hangup, None);
    }

    /// [`join`](Self::join) for a member whose call runs in another process: `remote` carries
    /// the backend's changes of the conference there. `joined` is when the member joined.
    #[allow(clippy::too_many_arguments)]
    pub fn join_remote(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
        profile: &str,
        joined: Instant,
        hangup: Hangup,
        remote: Option<Remote>,
    ) {
        let now = joined;
        {
            let mut g = self.lock();
            let conf = g
                .entry((dev, name.to_string()))
                .or_insert_with(|| Conference {
                    members: BTreeMap::new(),
                    layout: None,
                    deadline: self
                        .limits
                        .get()
                        .and_then(|l| l.get(profile))
                        .map(|d| now + *d),
                    started: now,
                    remote: None,
                });
            if remote.is_some() {
                conf.remote = remote;
            }
            conf.members.insert(
                user,
                Member {
                    joined: now,
                    last_talking: None,
                    talking: false,
                    energy: 0,
                    flags: MemberFlags::default(),
                    profile: profile.to_string(),
                    hangup,
                },
            );
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.emit(
                dev,
                name,
                "join",
                json!({"user_id": user, "profile": profile}),
            );
            self.mirror(|| Mirror::Join {
                dev,
                name: name.to_string(),
                user,
                profile: profile.to_string(),
            });
        }
    }

    /// Gives a member whose call runs in another process new ways to reach it (a media node's
    /// new link to the head), with no event: it did not leave. False if it is not there.
    pub fn rebind_remote(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
        hangup: Hangup,
        remote: Remote,
    ) -> bool {
        let mut g = self.lock();
        let Some((m, conf_remote)) = member_in(&mut g, dev, name, user) else {
            return false;
        };
        m.hangup = hangup;
        *conf_remote = Some(remote);
        true
    }

    /// Removes a member; the conference ends with its last member. True if it was there.
    pub fn leave(&self, dev: DevId, name: &str, user: UserId) -> bool {
        let mut g = self.lock();
        let key = (dev, name.to_string());
        let Some(conf) = g.get_mut(&key) else {
            return false;
        };
        let was = conf.members.remove(&user).is_some();
        let ended = conf.members.is_empty();
        if ended {
            g.remove(&key);
        }
        if was {
            self.emit(dev, name, "leave", json!({"user_id": user}));
            self.mirror(|| Mirror::Leave {
                dev,
                name: name.to_string(),
                user,
            });
        }
        if ended {
            self.emit(dev, name, "end", json!({}));
        }
        was
    }

    /// Records a member's voice activity (the media runtime calls this when it changes, and at
    /// least every second while talking). Publishes talking start/stop.
    pub fn activity(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
        talking: bool,
        energy: u8,
        now: Instant,
    ) {
        let mut g = self.lock();
        let Some(m) = g
            .get_mut(&(dev, name.to_string()))
            .and_then(|c| c.members.get_mut(&user))
        else {
            return;
        };
        m.energy = energy;
        if talking {
            m.last_talking = Some(now);
        }
        let changed = m.talking != talking;
        m.talking = talking;
        self.mirror(|| Mirror::Activity {
            dev,
            name: name.to_string(),
            user,
            talking,
            energy,
        });
        if changed {
            self.emit(
                dev,
                name,
                "talking",
                json!({"user_id": user, "talking": talking}),
            );
        }
    }

    /// Records that a member is talking at `now`.
    pub fn talking(&self, dev: DevId, name: &str, user: UserId, now: Instant) {
        self.activity(dev, name, user, true, 0, now);
    }

    /// A member's flags, if it is in the conference.
    pub fn flags(&self, dev: DevId, name: &str, user: UserId) -> Option<MemberFlags> {
        self.lock()
            .get(&(dev, name.to_string()))
            .and_then(|c| c.members.get(&user))
            .map(|m| m.flags)
    }

    /// A conference's layout and every member's flags, for the media runtime.
    pub fn conference_state(&self, dev: DevId, name: &str) -> Option<ConferenceState> {
        self.lock()
            .get(&(dev, name.to_string()))
            .map(|c| ConferenceState {
                layout: c.layout.clone(),
                flags: c.members.iter().map(|(u, m)| (*u, m.flags)).collect(),
            })
    }

    /// Changes a member's flags; returns whether the member was there.
    pub fn update_flags(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
        change: impl FnOnce(&mut MemberFlags),
    ) -> bool {
        let mut g = self.lock();
        let Some((m, remote)) = member_in(&mut g, dev, name, user) else {
            return false;
        };
        change(&mut m.flags);
        let flags = m.flags;
        if let Some(remote) = remote {
            remote(RemoteChange::Flags { user, flags });
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.emit(
            dev,
            name,
            "flags",
            json!({
                "user_id": user,
                "audio": flags.audio,
                "video": flags.video,
                "deaf": flags.deaf,
                "video_floor": flags.video_floor,
            }),
        );
        true
    }

    /// Sets a conference's layout; returns whether the conference exists.
    pub fn set_layout(&self, dev: DevId, name: &str, layout: &str) -> bool {
        let mut g = self.lock();
        let Some(c) = g.get_mut(&(dev, name.to_string())) else {
            return false;
        };
        c.layout = Some(layout.to_string());
        if let Some(remote) = &c.remote {
            remote(RemoteChange::Layout(layout.to_string()));
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.emit(dev, name, "layout", json!({"layout": layout}));
        true
    }

    /// Limits a running conference to `limit` from its start (0: no limit); returns whether the
    /// conference exists.
    pub fn set_max_duration(&self, dev: DevId, name: &str, limit: Duration) -> bool {
        let mut g = self.lock();
        let Some(c) = g.get_mut(&(dev, name.to_string())) else {
            return false;
        };
        c.deadline = (!limit.is_zero()).then(|| c.started + limit);
        if let Some(remote) = &c.remote {
            remote(RemoteChange::MaxDuration(limit));
        }
        true
    }

    /// Ends every conference whose time limit has passed: each member is hung up with a reason.
    /// Returns how many conferences ended.
    pub fn enforce_time_limits(&self, now: Instant) -> usize {
        let due: Vec<Key> = self
            .lock()
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for (dev, name) in &due {
            self.hangup(*dev, name, None, "the conference reached its time limit");
        }
        due.len()
    }

    /// Members of one conference, or of every conference of `dev`, ordered by (name, user_id).
    pub fn members(&self, dev: DevId, name: Option<&str>, now: Instant) -> Vec<MemberRow> {
        let g = self.lock();
        // One conference is looked up, not scanned for (a statement may name 4000, and the
        // mixing clock takes this lock every tick).
        let confs: Vec<(&String, &Conference)> = match name {
            Some(n) => g
                .get_key_value(&(dev, n.to_string()))
                .map(|((_, n), c)| (n, c))
                .into_iter()
                .collect(),
            None => {
                let mut all: Vec<_> = g
                    .iter()
                    .filter(|((d, _), _)| *d == dev)
                    .map(|((_, n), c)| (n, c))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(b.0));
                all
            }
        };
        confs
            .into_iter()
            .flat_map(|(n, conf)| {
                conf.members.iter().map(move |(u, m)| MemberRow {
                    name: n.clone(),
                    user_id: *u,
                    joined_for: now.saturating_duration_since(m.joined),
                    silent_for: m.last_talking.map(|t| now.saturating_duration_since(t)),
                    talking: m.talking,
                    energy: m.energy,
                    flags: m.flags,
                    layout: conf.layout.clone(),
                    profile: m.profile.clone(),
                    max_duration: conf
                        .deadline
                        .map(|d| d.saturating_duration_since(conf.started)),
                })
            })
            .collect()
    }

    /// Every member of every conference, with its dev_id (what a media node tells a cluster's
    /// head when it connects).
    pub fn all_members(&self, now: Instant) -> Vec<(DevId, MemberRow)> {
        let devs: std::collections::BTreeSet<DevId> = self.lock().keys().map(|k| k.0).collect();
        devs.into_iter()
            .flat_map(|dev| {
                self.members(dev, None, now)
                    .into_iter()
                    .map(move |r| (dev, r))
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
                Some(conf) => conf
                    .members
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
                .filter_map(|(_, conf)| conf.members.get(&user).map(|m| m.hangup.clone()))
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
    use std::sync::atomic::AtomicUsize;

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
        r.join(1, "101", 7, "audio", t0, h.clone());
        r.join(1, "101", 3, "audio", t0 + Duration::from_secs(5), h.clone());
        r.join(2, "101", 9, "audio", t0, h.clone());
        r.talking(1, "101", 7, t0 + Duration::from_secs(8));
        let rows = r.members(1, Some("101"), t0 + Duration::from_secs(10));
        assert_eq!(rows.len(), 2, "dev 2 is not visible to dev 1");
        assert_eq!(rows[0].user_id, 3);
        assert_eq!(rows[0].joined_for, Duration::from_secs(5));
        assert_eq!(rows[0].silent_for, None);
        assert_eq!(rows[1].joined_for, Duration::from_secs(10));
        assert_eq!(rows[1].silent_for, Some(Duration::from_secs(2)));
        assert_eq!(rows[1].profile, "audio");
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
        r.join(1, "x", 1, "default", t0, ha.clone());
        r.join(1, "x", 2, "default", t0, hb.clone());
        r.join(1, "y", 1, "default", t0, ha);
        assert_eq!(r.hangup(1, "x", Some(2), "kick"), 1);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (0, 1));
        assert_eq!(r.hangup(1, "x", None, "end"), 2);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 2));
        assert_eq!(r.hangup_user(1, 1, "deleted"), 2);
        assert_eq!(a.load(Ordering::SeqCst), 3);
        assert_eq!(r.hangup_user(2, 1, "other dev"), 0);
        assert_eq!(r.hangup(1, "nope", None, "x"), 0);
    }

    #[test]
    fn events_flags_and_time_limits() {
        let r = ConferenceRegistry::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        r.set_events(Arc::new(move |e: ConferenceEvent| {
            s2.lock().unwrap().push((e.event, e.data));
        }));
        r.set_profile_limits(HashMap::from([(
            "audio".to_string(),
            Duration::from_secs(60),
        )]));
        let t0 = Instant::now();
        let (kicked, h) = counter();
        let g0 = r.generation();
        r.join(0, "r", 5, "audio", t0, h);
        assert!(r.update_flags(0, "r", 5, |f| f.audio = false));
        assert!(r.generation() > g0);
        assert!(!r.flags(0, "r", 5).unwrap().audio);
        assert!(
            !r.update_flags(0, "r", 6, |f| f.audio = false),
            "not a member"
        );
        r.activity(0, "r", 5, true, 40, t0);
        r.activity(0, "r", 5, true, 41, t0);
        r.activity(0, "r", 5, false, 0, t0);
        assert!(r.set_layout(0, "r", "grid"));
        assert_eq!(r.enforce_time_limits(t0 + Duration::from_secs(59)), 0);
        assert_eq!(r.enforce_time_limits(t0 + Duration::from_secs(60)), 1);
        assert_eq!(kicked.load(Ordering::SeqCst), 1, "the member was hung up");
        r.leave(0, "r", 5);
        let events: Vec<&str> = seen.lock().unwrap().iter().map(|e| e.0).collect();
        assert_eq!(
            events,
            [
                "join", "flags", "talking", "talking", "layout", "leave", "end"
            ]
        );
        assert_eq!(seen.lock().unwrap()[1].1["audio"], false);
        assert_eq!(seen.lock().unwrap()[2].1["talking"], true);
        assert_eq!(seen.lock().unwrap()[3].1["talking"], false);
    }

    #[test]
    fn a_remote_conference_gets_the_backends_changes_and_a_node_reports_its_own() {
        // The head: a member whose call runs on a media node.
        let head = ConferenceRegistry::new();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let c2 = changes.clone();
        let remote: Remote = Arc::new(move |c: RemoteChange| c2.lock().unwrap().push(c));
        let t0 = Instant::now();
        let (kicked, h) = counter();
        head.join_remote(0, "r", 5, "audio", t0, h, Some(remote));
        assert!(head.update_flags(0, "r", 5, |f| f.deaf = true));
        assert!(head.set_layout(0, "r", "grid"));
        assert!(head.set_max_duration(0, "r", Duration::from_secs(90)));
        assert_eq!(head.hangup(0, "r", Some(5), "kick"), 1);
        assert_eq!(kicked.load(Ordering::SeqCst), 1);
        let flags = MemberFlags {
            deaf: true,
            ..MemberFlags::default()
        };
        assert_eq!(
            *changes.lock().unwrap(),
            [
                RemoteChange::Flags { user: 5, flags },
                RemoteChange::Layout("grid".into()),
                RemoteChange::MaxDuration(Duration::from_secs(90)),
            ]
        );
        // A local conference has no remote: nothing is sent anywhere.
        let (_, h) = counter();
        head.join(0, "local", 1, "audio", t0, h);
        assert!(head.update_flags(0, "local", 1, |f| f.audio = false));
        assert_eq!(changes.lock().unwrap().len(), 3);

        // A media node: joins, activity and leaves are mirrored in order; its own flag
        // changes (applied from the head) are not sent back.
        let node = ConferenceRegistry::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        node.set_mirror(Arc::new(move |m: Mirror| s2.lock().unwrap().push(m)));
        let (_, h) = counter();
        node.join(3, "n", 8, "video", t0, h);
        node.activity(3, "n", 8, true, 55, t0);
        node.activity(3, "n", 9, true, 55, t0);
        assert!(node.update_flags(3, "n", 8, |f| f.video = false));
        assert!(node.leave(3, "n", 8));
        assert!(!node.leave(3, "n", 8));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Mirror::Join {
                    dev: 3,
                    name: "n".into(),
                    user: 8,
                    profile: "video".into()
                },
                Mirror::Activity {
                    dev: 3,
                    name: "n".into(),
                    user: 8,
                    talking: true,
                    energy: 55
                },
                Mirror::Leave {
                    dev: 3,
                    name: "n".into(),
                    user: 8
                },
            ]
        );
        // What a reconnecting node lists.
        let (_, h) = counter();
        node.join(3, "n", 4, "video", t0, h);
        let all = node.all_members(t0 + Duration::from_secs(2));
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].0, all[0].1.user_id), (3, 4));
        assert_eq!(all[0].1.joined_for, Duration::from_secs(2));
    }
}
