//! The head's side of the cluster: the listener media nodes connect to, the connected nodes,
//! and where a new conference goes (see the module contract in [`super`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{info, warn};

use super::{LINK_GRACE, MediaNode, PATH, ToHead, ToNode, VERSION, lock};
use crate::conference::ConferenceRegistry;
use crate::conference::registry::{MemberFlags, Mirror, Remote, RemoteChange};
use crate::store::{ConferenceRow, DevId, Store, UserId};

/// A member of a node's conference, as the head tracks it: (dev, conference, user).
type MemberKey = (DevId, String, UserId);

/// Connections the cluster listener holds at once (media nodes, and handshakes not done yet).
pub const MAX_LINKS: usize = 256;

/// The link that reported a member, and its node's name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    link: u64,
    node: String,
}

/// Which link reported each remote member, by conference: placement finds the link of a
/// conference's members with one lookup, not a scan of every member of the cluster.
#[derive(Debug, Default)]
struct Owners(HashMap<(DevId, String), HashMap<UserId, Owner>>);

impl Owners {
    fn insert(&mut self, (dev, name, user): &MemberKey, owner: Owner) -> Option<Owner> {
        self.0
            .entry((*dev, name.clone()))
            .or_default()
            .insert(*user, owner)
    }

    /// The link of some member of the conference.
    fn link_of(&self, dev: DevId, name: &str) -> Option<u64> {
        let members = self.0.get(&(dev, name.to_string()))?;
        members.values().next().map(|o| o.link)
    }

    /// Removes the member if link `link` reported it; whether it did.
    fn remove_if_owned(&mut self, (dev, name, user): &MemberKey, link: u64) -> bool {
        let conf = (*dev, name.clone());
        let Some(members) = self.0.get_mut(&conf) else {
            return false;
        };
        if members.get(user).is_none_or(|o| o.link != link) {
            return false;
        }
        members.remove(user);
        if members.is_empty() {
            self.0.remove(&conf);
        }
        true
    }

    /// Removes the members for which `pred` holds; returns them.
    fn take(&mut self, pred: impl Fn(&MemberKey, &Owner) -> bool) -> Vec<MemberKey> {
        let mut taken = Vec::new();
        self.0.retain(|(dev, name), members| {
            members.retain(|user, o| {
                let key = (*dev, name.clone(), *user);
                let take = pred(&key, o);
                if take {
                    taken.push(key);
                }
                !take
            });
            !members.is_empty()
        });
        taken
    }

    fn per_node(&self) -> std::collections::BTreeMap<String, usize> {
        let mut per = std::collections::BTreeMap::new();
        for o in self.0.values().flat_map(|m| m.values()) {
            *per.entry(o.node.clone()).or_insert(0) += 1;
        }
        per
    }
}

struct Link {
    id: u64,
    node: MediaNode,
    tx: mpsc::UnboundedSender<ToNode>,
    /// The node is draining: no new conference goes there.
    draining: bool,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HeadStats {
    /// Links accepted (hello answered with welcome).
    pub links: AtomicU64,
    /// Connections refused: wrong secret or path, no hello, wrong version.
    pub refused: AtomicU64,
    /// Frames from nodes that did not parse (dropped).
    pub malformed: AtomicU64,
}

/// The head: its connected media nodes and their members in its registry.
pub struct ClusterHead {
    secret: String,
    /// The head itself as a media node (`[cluster] local_media`).
    local: Option<MediaNode>,
    store: Arc<dyn Store>,
    registry: Arc<ConferenceRegistry>,
    links: Mutex<HashMap<String, Link>>,
    /// Which link reported each remote member (a replaced link must not remove the members
    /// its successor reported).
    owners: Mutex<Owners>,
    next_link: AtomicU64,
    /// How long a broken link's members are kept ([`LINK_GRACE`]; shorter in tests).
    grace_ms: AtomicU64,
    /// `[cluster] tls_cert`: the link is wss.
    tls: std::sync::OnceLock<std::sync::RwLock<TlsAcceptor>>,
    /// The head itself is draining: its own media takes no new conference.
    draining: std::sync::atomic::AtomicBool,
    /// Notified when a link is accepted, refused or gone ([`ClusterHead::changed`]).
    changed: tokio::sync::Notify,
    pub stats: HeadStats,
}

impl std::fmt::Debug for ClusterHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHead")
            .field("local", &self.local)
            .field("nodes", &self.nodes())
            .finish_non_exhaustive()
    }
}

impl ClusterHead {
    /// `local`: the head's own SIP address when it runs conferences too.
    pub fn new(
        secret: String,
        local: Option<MediaNode>,
        store: Arc<dyn Store>,
        registry: Arc<ConferenceRegistry>,
    ) -> Arc<ClusterHead> {
        Arc::new(ClusterHead {
            secret,
            local,
            store,
            registry,
            links: Mutex::default(),
            owners: Mutex::default(),
            next_link: AtomicU64::new(1),
            grace_ms: AtomicU64::new(LINK_GRACE.as_millis() as u64),
            tls: std::sync::OnceLock::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            stats: HeadStats::default(),
        })
    }

    /// Keeps a broken link's members `grace` instead of [`LINK_GRACE`].
    pub fn set_link_grace(&self, grace: Duration) {
        self.grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    /// The connected media nodes, by name.
    pub fn nodes(&self) -> Vec<MediaNode> {
        let mut nodes: Vec<MediaNode> =
            lock(&self.links).values().map(|l| l.node.clone()).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// Members each media node has reported (kept ones of a broken link included), by node.
    pub fn members_per_node(&self) -> std::collections::BTreeMap<String, usize> {
        let mut per = lock(&self.owners).per_node();
        for n in self.nodes() {
            per.entry(n.name).or_insert(0);
        }
        per
    }

    /// The connected node that has members of conference `name` now: a new invitation goes
    /// there whatever the others say.
    pub fn running(&self, dev: DevId, name: &str) -> Option<MediaNode> {
        let id = lock(&self.owners).link_of(dev, name)?;
        lock(&self.links)
            .values()
            .find(|l| l.id == id)
            .map(|l| l.node.clone())
    }

    /// Resolves at the head's next change of links: a node linked, refused or gone (to wait
    /// for one instead of polling [`ClusterHead::nodes`] or the stats).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The connected media nodes that are draining, by name.
    pub fn draining_nodes(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.links)
            .values()
            .filter(|l| l.draining)
            .map(|l| l.node.name.clone())
            .collect();
        names.sort();
        names
    }

    /// The head's own media takes no new conference from now on (it is draining).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Where a new invitation to a conference that runs nowhere ([`ClusterHead::running`])
    /// sends the browser: the node of the conference's other invitations (`existing`) while
    /// it is available, else the rendezvous choice. Draining nodes (and a draining head's own
    /// media) are not available. `Err` when no node is.
    pub fn place(
        &self,
        dev: DevId,
        name: &str,
        existing: &[ConferenceRow],
    ) -> Result<MediaNode, String> {
        let mut candidates: Vec<MediaNode> = {
            let links = lock(&self.links);
            let mut open: Vec<MediaNode> = links
                .values()
                .filter(|l| !l.draining)
                .map(|l| l.node.clone())
                .collect();
            open.sort_by(|a, b| a.name.cmp(&b.name));
            open
        };
        if !self.draining.load(Ordering::Relaxed) {
            candidates.extend(self.local.clone());
        }
        if let Some(n) = existing
            .iter()
            .find_map(|r| candidates.iter().find(|c| c.address() == r.node))
        {
            return Ok(n.clone());
        }
        super::choose(&candidates, dev, name)
            .cloned()
            .ok_or_else(|| {
                "no media node is connected to this head to run the conference (or every one is \
                 draining)"
                    .into()
            })
    }

    /// Ends a user's SIP registrations and calls on every node (`DELETE FROM users_auth`).
    pub fn disconnect_user(&self, dev: DevId, user: UserId) {
        for l in lock(&self.links).values() {
            let _ = l.tx.send(ToNode::DisconnectUser { dev, user });
        }
    }

    /// Speaks wss with `tls` (whose certificate [`ClusterHead::replace_tls`] replaces).
    pub fn set_tls(&self, tls: TlsAcceptor) {
        let _ = self.tls.set(std::sync::RwLock::new(tls));
    }

    /// New links get this certificate; open ones keep theirs (SIGHUP).
    pub fn replace_tls(&self, tls: TlsAcceptor) {
        if let Some(t) = self.tls.get() {
            *t.write().unwrap_or_else(|p| p.into_inner()) = tls;
        }
    }

    /// Whether the link is wss.
    pub fn is_tls(&self) -> bool {
        self.tls.get().is_some()
    }

    /// Accepts media nodes on `listener` until the task is aborted. At most [`MAX_LINKS`]
    /// connections at once (links and handshakes): beyond, a new one is closed at once and
    /// counted as refused.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_LINKS));
        loop {
            let (stream, peer) = crate::admission::accept(&listener, "cluster listener").await;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.changed.notify_waiters();
                warn!(%peer, "cluster: {MAX_LINKS} connections are open; a new one was closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let head = self.clone();
            let tls = head
                .tls
                .get()
                .map(|t| t.read().unwrap_or_else(|p| p.into_inner()).clone());
            tokio::spawn(async move {
                let _slot = slot;
                let linked = match tls {
                    None => head.link(stream).await,
                    Some(tls) => {
                        match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => head.link(stream).await,
                            Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                            Err(_) => Err("no TLS handshake within 10 s".into()),
                        }
                    }
                };
                if let Err(why) = linked {
                    head.stats.refused.fetch_add(1, Ordering::Relaxed);
                    head.changed.notify_waiters();
                    warn!(%peer, "cluster: a media node's connection was refused: {why}");
                }
            });
        }
    }

    /// One node's link, from the handshake to its end.
    // `ErrorResponse` is tungstenite's handshake callback error type, large or not.
    #[allow(clippy::result_large_err)]
    async fn link<S>(self: &Arc<Self>, stream: S) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let secret = self.secret.clone();
        let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let refuse = |status: StatusCode, why: &str| {
                let mut r = ErrorResponse::new(Some(why.to_string()));
                *r.status_mut() = status;
                Err(r)
            };
            if req.uri().path() != PATH {
                return refuse(StatusCode::NOT_FOUND, "not a cluster link path");
            }
            let presented = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if !crate::secret::bearer_matches(presented, &secret) {
                return refuse(StatusCode::UNAUTHORIZED, "wrong cluster secret");
            }
            Ok(resp)
        };
        let mut ws = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::accept_hdr_async(stream, check),
        )
        .await
        .map_err(|_| "no WebSocket handshake within 10 s".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
        // The hello.
        let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| "no hello within 10 s".to_string())?;
        let hello = match first {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<ToHead>(&t).ok(),
            _ => None,
        };
        let Some(ToHead::Hello {
            version,
            name,
            sip_host,
            sip_port,
            members,
            draining,
        }) = hello
        else {
            return Err("the first frame was not a hello".into());
        };
        let why = if version != VERSION {
            Some(format!(
                "this head speaks cluster protocol {VERSION}, not {version}"
            ))
        } else if name.is_empty() || self.local.as_ref().is_some_and(|l| l.name == name) {
            Some(format!(
                "the node name `{name}` is empty or the head's own: set [cluster] name"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = ws
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: why.clone().into(),
                })))
                .await;
            return Err(why);
        }
        let node = MediaNode {
            name: name.clone(),
            sip_host,
            sip_port,
        };
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel::<ToNode>();
        let replaced = lock(&self.links).insert(
            name.clone(),
            Link {
                id,
                node: node.clone(),
                tx: tx.clone(),
                draining,
            },
        );
        if replaced.is_some() {
            // The old link ends by itself (its socket is gone or goes); its members are
            // settled below from this hello.
            info!(node = %name, "cluster: media node reconnected; its older link is replaced");
        }
        self.stats.links.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
        info!(node = %name, address = %node.address(), members = members.len(), "cluster: media node connected");
        // The node is the authority on its members: those an older link reported that this
        // hello does not list are gone.
        let listed: std::collections::HashSet<MemberKey> = members
            .iter()
            .map(|m| (m.dev, m.name.clone(), m.user))
            .collect();
        self.leave_where(|k, o| o.node == name && o.link != id && !listed.contains(k));
        let now = Instant::now();
        for m in members {
            let joined = now
                .checked_sub(Duration::from_millis(m.joined_ms))
                .unwrap_or(now);
            self.remote_join(id, &name, &tx, m.dev, &m.name, m.user, &m.profile, joined);
            self.registry
                .activity(m.dev, &m.name, m.user, m.talking, m.energy, now);
        }
        let welcome = serde_json::to_string(&ToNode::Welcome).expect("serializable");
        let result = match ws.send(Message::Text(welcome.into())).await {
            Err(e) => Err(e.to_string()),
            Ok(()) => super::pump(
                &mut ws,
                &mut rx,
                |msg| self.on_message(id, &name, &tx, msg),
                |e| {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(node = %name, "cluster: a frame that does not parse was dropped: {e}");
                },
            )
            .await,
        };
        drop(tx);
        // Forgotten before it is logged: whoever reads the log line finds the node gone.
        self.link_ended(id, &name, result.is_ok());
        match &result {
            Ok(_) => info!(node = %name, "cluster: media node disconnected"),
            Err(e) => warn!(
                node = %name,
                "cluster: media node link lost: {e}; its members are kept {} s for it to return",
                LINK_GRACE.as_secs()
            ),
        }
        Ok(())
    }

    /// Forgets a link: its registration (unless a newer link replaced it) and, at once when it
    /// was closed cleanly or after [`LINK_GRACE`] when it broke, the members it still owns
    /// (their leave and end events are published).
    fn link_ended(self: &Arc<Self>, id: u64, name: &str, clean: bool) {
        {
            let mut links = lock(&self.links);
            if links.get(name).is_some_and(|l| l.id == id) {
                links.remove(name);
            }
        }
        self.changed.notify_waiters();
        if clean {
            self.leave_where(|_, o| o.link == id);
        } else {
            let head = self.clone();
            let grace = Duration::from_millis(self.grace_ms.load(Ordering::Relaxed));
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                head.leave_where(|_, o| o.link == id);
            });
        }
    }

    /// The remote members for which `pred` holds leave (their events are published).
    fn leave_where(&self, pred: impl Fn(&MemberKey, &Owner) -> bool) {
        let gone = lock(&self.owners).take(pred);
        for (dev, conf, user) in gone {
            self.registry.leave(dev, &conf, user);
        }
    }

    /// A member the node `node` reports over link `link`: joins the head's registry, or, when
    /// an older link of the same node reported it, is bound to this link without an event.
    #[allow(clippy::too_many_arguments)]
    fn remote_join(
        &self,
        link: u64,
        node: &str,
        tx: &mpsc::UnboundedSender<ToNode>,
        dev: DevId,
        name: &str,
        user: UserId,
        profile: &str,
        joined: Instant,
    ) {
        let owner = Owner {
            link,
            node: node.to_string(),
        };
        let before = lock(&self.owners).insert(&(dev, name.to_string(), user), owner);
        let known = before.is_some_and(|o| o.node == node && o.link != link);
        let hangup = {
            let (tx, name) = (tx.clone(), name.to_string());
            Arc::new(move |reason: &str| {
                let _ = tx.send(ToNode::Hangup {
                    dev,
                    name: name.clone(),
                    user: Some(user),
                    reason: reason.to_string(),
                });
            })
        };
        let remote: Remote = {
            let (tx, name) = (tx.clone(), name.to_string());
            Arc::new(move |change: RemoteChange| {
                let name = name.clone();
                let _ = tx.send(match change {
                    RemoteChange::Flags { user, flags } => ToNode::Flags {
                        dev,
                        name,
                        user,
                        flags: flags_out(flags),
                    },
                    RemoteChange::Layout(layout) => ToNode::Layout { dev, name, layout },
                    RemoteChange::MaxDuration(d) => ToNode::MaxDuration {
                        dev,
                        name,
                        secs: d.as_secs(),
                    },
                });
            })
        };
        if !(known
            && self
                .registry
                .rebind_remote(dev, name, user, hangup.clone(), remote.clone()))
        {
            self.registry
                .join_remote(dev, name, user, profile, joined, hangup, Some(remote));
        }
    }

    fn on_message(&self, link: u64, node: &str, tx: &mpsc::UnboundedSender<ToNode>, msg: ToHead) {
        match msg {
            ToHead::Hello { .. } => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
            ToHead::Draining => {
                if let Some(l) = lock(&self.links).get_mut(node).filter(|l| l.id == link) {
                    l.draining = true;
                }
                info!(node = %node, "cluster: media node draining: no new conference goes there");
            }
            ToHead::UserHash { id, dev, user } => {
                let (store, tx) = (self.store.clone(), tx.clone());
                tokio::spawn(async move {
                    let (hash, error) = match store.user_hash(dev, user).await {
                        Ok(h) => (h, None),
                        Err(e) => (None, Some(e.to_string())),
                    };
                    let _ = tx.send(ToNode::UserHash { id, hash, error });
                });
            }
            ToHead::Invitation {
                id,
                dev,
                name,
                user,
            } => {
                let (store, tx) = (self.store.clone(), tx.clone());
                tokio::spawn(async move {
                    let (row, error) = match store.conference_row(dev, &name, user).await {
                        Ok(r) => (r, None),
                        Err(e) => (None, Some(e.to_string())),
                    };
                    let _ = tx.send(ToNode::Invitation { id, row, error });
                });
            }
            ToHead::Member {
                change:
                    Mirror::Join {
                        dev,
                        name,
                        user,
                        profile,
                    },
            } => self.remote_join(link, node, tx, dev, &name, user, &profile, Instant::now()),
            ToHead::Member {
                change: Mirror::Leave { dev, name, user },
            } => {
                if lock(&self.owners).remove_if_owned(&(dev, name.clone(), user), link) {
                    self.registry.leave(dev, &name, user);
                }
            }
            ToHead::Member {
                change:
                    Mirror::Activity {
                        dev,
                        name,
                        user,
                        talking,
                        energy,
                    },
            } => self
                .registry
                .activity(dev, &name, user, talking, energy, Instant::now()),
        }
    }
}

fn flags_out(f: MemberFlags) -> super::Flags {
    super::Flags {
        audio: f.audio,
        video: f.video,
        deaf: f.deaf,
        video_floor: f.video_floor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn node(name: &str, port: u16) -> MediaNode {
        MediaNode {
            name: name.into(),
            sip_host: "10.0.0.1".into(),
            sip_port: port,
        }
    }

    fn row(node: &str) -> ConferenceRow {
        ConferenceRow {
            name: "room".into(),
            user_id: 1,
            caller_id: 0,
            message: String::new(),
            profile: "audio".into(),
            stream: String::new(),
            node: node.into(),
            time: 0,
        }
    }

    #[test]
    fn placement_follows_members_then_invitations_then_the_hash() {
        let registry = Arc::new(ConferenceRegistry::new());
        let none = ClusterHead::new(
            "s".repeat(16),
            None,
            Arc::new(MemoryStore::new()),
            registry.clone(),
        );
        let e = none.place(0, "room", &[]).unwrap_err();
        assert!(e.contains("no media node"), "{e}");

        let head = ClusterHead::new(
            "s".repeat(16),
            Some(node("head", 7443)),
            Arc::new(MemoryStore::new()),
            registry,
        );
        assert_eq!(head.place(0, "room", &[]).unwrap().name, "head");
        let mut txs = Vec::new();
        for (id, (name, port)) in [("a", 7001), ("b", 7002)].into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(rx);
            lock(&head.links).insert(
                name.into(),
                Link {
                    id: id as u64 + 1,
                    node: node(name, port),
                    tx,
                    draining: false,
                },
            );
        }
        let all = [node("a", 7001), node("b", 7002), node("head", 7443)];
        // No invitation yet: the rendezvous choice among the connected nodes and the head.
        for conf in ["room", "r1", "r2", "r3"] {
            let want = crate::cluster::choose(&all, 0, conf).unwrap();
            assert_eq!(&head.place(0, conf, &[]).unwrap(), want);
        }
        // The other invitations' node while it is connected; a gone node is not used.
        assert_eq!(
            head.place(0, "room", &[row("10.0.0.1:7002")]).unwrap().name,
            "b"
        );
        assert_eq!(
            &head.place(0, "room", &[row("10.0.0.1:9999")]).unwrap(),
            crate::cluster::choose(&all, 0, "room").unwrap()
        );
        // Members on a node keep the conference there, whatever the invitations say.
        assert_eq!(head.running(0, "room"), None);
        lock(&head.owners).insert(
            &(0, "room".into(), 5),
            Owner {
                link: 1,
                node: "a".into(),
            },
        );
        assert_eq!(head.running(0, "room").unwrap().name, "a");
        assert_eq!(head.running(1, "room"), None, "another dev's room");
        // Its member leaves (reported by another link: not taken), then by its own.
        let key = (0, "room".to_string(), 5);
        assert!(!lock(&head.owners).remove_if_owned(&key, 2));
        assert!(lock(&head.owners).remove_if_owned(&key, 1));
        assert_eq!(head.running(0, "room"), None);
        // The user's registrations end on every node.
        head.disconnect_user(0, 5);
        for rx in &mut txs {
            assert_eq!(
                rx.try_recv().unwrap(),
                ToNode::DisconnectUser { dev: 0, user: 5 }
            );
        }

        // Node a drains: no new conference goes there, not even one whose invitations name
        // it; a conference running there stays.
        let (tx, _rx) = mpsc::unbounded_channel();
        head.on_message(2, "a", &tx, ToHead::Draining);
        assert!(head.draining_nodes().is_empty(), "another link's frame");
        head.on_message(1, "a", &tx, ToHead::Draining);
        assert_eq!(head.draining_nodes(), ["a"]);
        let open = [node("b", 7002), node("head", 7443)];
        for k in 0..32 {
            let conf = format!("c{k}");
            let want = crate::cluster::choose(&open, 0, &conf).unwrap();
            assert_eq!(&head.place(0, &conf, &[]).unwrap(), want, "{conf}");
        }
        assert_ne!(
            head.place(0, "room", &[row("10.0.0.1:7001")]).unwrap().name,
            "a"
        );
        lock(&head.owners).insert(
            &(0, "busy".into(), 6),
            Owner {
                link: 1,
                node: "a".into(),
            },
        );
        assert_eq!(head.running(0, "busy").unwrap().name, "a");
        // The head drains its own media too: b is left; then b drains: nothing is.
        head.set_draining();
        for k in 0..8 {
            assert_eq!(head.place(0, &format!("c{k}"), &[]).unwrap().name, "b");
        }
        head.on_message(2, "b", &tx, ToHead::Draining);
        let e = head.place(0, "c0", &[]).unwrap_err();
        assert!(e.contains("no media node"), "{e}");
    }
}
