//! A cluster: one head and its media nodes, as CppComet was one signalling server and its
//! FreeSWITCH media servers.
//!
//! # Contract
//!
//! - **The head** is a whole comet-server (CometQL, the comet WebSocket, the store) with
//!   `[cluster] secret` set. It listens for media nodes on `[cluster] ip, port`. Every
//!   `INSERT INTO conference` places the conference on a media node: the node that has its
//!   members now, or the node named by the conference's other invitations while that node is
//!   connected, else the node chosen by
//!   rendezvous hashing of (node name, dev_id, conference name) among the connected nodes (and
//!   the head itself with `[cluster] local_media`). A node joining or leaving moves only the
//!   conferences that hash to it. The invitation's `node` column, and the `serverName`,
//!   `serverPort` and `callPipe` of its `sys_sipCall` event, name that node: the browser's JsSIP
//!   calls it directly. With no node to place it on, the INSERT fails with error 500. Every
//!   SIP listener of the cluster (the head's too) lets a user in only on the node its
//!   invitation names (403 with a `Warning` naming that node elsewhere), so a conference never
//!   runs on two nodes.
//! - **A media node** is a comet-server with `[cluster] head` and the same secret. Its SIP
//!   listener reads users_auth hashes and invitations from the head (never from its own store),
//!   and its conferences run there. It reports every join, leave and voice-activity change to
//!   the head, whose registry lists the node's members in `conference_members` and publishes
//!   their events on the `conference_<name>` pipes, exactly as for its own. The head sends the
//!   backend's decisions back: hangups (`DELETE FROM conference`, `DELETE FROM users_auth`,
//!   time limits), moderation flags, layouts and time limits (`UPDATE conference_members`),
//!   and the end of a deleted user's SIP registrations.
//! - **The link** is one WebSocket from each node to the head (path [`PATH`]; wss when the
//!   head has `[cluster] tls_cert`, the node trusting `[cluster] head_ca`), opened with
//!   `Authorization: Bearer <secret>` (anything else: HTTP 401), JSON text frames ([`ToHead`],
//!   [`ToNode`]). The node says [`ToHead::Hello`] first, with every member it has, and the head
//!   answers [`ToNode::Welcome`] (or closes with the reason: wrong version, a name that is the
//!   head's own). A node whose name is already connected replaces the older link (a node that
//!   restarted before the head saw its old connection die). Both sides ping every [`PING_EVERY`] and give a link up after
//!   [`SILENCE_LIMIT`] without a frame.
//! - **When the link breaks** the node's calls go on, and its SIP answers REGISTER and INVITE
//!   with 500, as when a store fails, until the link is back (its `/healthz` says so
//!   meanwhile). The head keeps the node's members for [`LINK_GRACE`]: if the node's new hello
//!   lists them nothing is published (the ones it does not list leave then); otherwise they
//!   leave when the grace ends (their leave and end events are published). A node that closes
//!   the link (it is shutting down, after hanging up its calls) loses its members at once. The node reconnects (0.5 s, doubling to 5 s) and its hello lists its
//!   members again.
//! - **A draining node** (SIGUSR1 or `POST /admin/drain`, see `src/app.rs`) says
//!   [`ToHead::Draining`] (and says so in later hellos): the head places no new conference
//!   there. The conferences it runs stay there (a new invitation to one names it), and the
//!   node exits once its last call has ended. A draining head does the same with its own
//!   media (`[cluster] local_media`).
//!
//! [`head`] is the head's side, [`node`] the node's.

pub mod head;
pub mod node;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::conference::registry::Mirror;
use crate::store::{ConferenceRow, DevId, UserId};

/// The link's WebSocket path.
pub const PATH: &str = "/cluster/v1";
/// The link protocol's version ([`ToHead::Hello`]).
pub const VERSION: u32 = 1;
/// Both sides ping this often.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// A link with nothing received for this long is dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// After a link breaks (an error or silence, not a close), the head keeps the node's members
/// this long: a node back within it lists them in its hello and nothing is published; those
/// it no longer lists leave then. A link closed cleanly drops them at once.
pub const LINK_GRACE: Duration = Duration::from_secs(10);
/// A node waits this long for the head to answer a lookup.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// One member of a node's conferences, as its hello lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub dev: DevId,
    pub name: String,
    pub user: UserId,
    pub profile: String,
    /// Milliseconds since the member joined.
    pub joined_ms: u64,
    pub talking: bool,
    pub energy: u8,
}

/// Moderation flags of one member (`UPDATE conference_members`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub audio: bool,
    pub video: bool,
    pub deaf: bool,
    pub video_floor: bool,
}

/// What a media node sends the head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToHead {
    /// The first frame of a link.
    Hello {
        version: u32,
        name: String,
        /// Where browsers reach the node's SIP listener (`serverName`, `serverPort`).
        sip_host: String,
        sip_port: u16,
        members: Vec<MemberState>,
        /// The node is draining (see [`ToHead::Draining`]); absent from older nodes.
        #[serde(default)]
        draining: bool,
    },
    /// The node is draining: it keeps the conferences it runs but takes no new one, so the
    /// head places new conferences elsewhere.
    Draining,
    /// Asks for the users_auth hash of a user ([`ToNode::UserHash`] answers).
    UserHash { id: u64, dev: DevId, user: UserId },
    /// Asks for the invitation of a user to a conference ([`ToNode::Invitation`] answers).
    Invitation {
        id: u64,
        dev: DevId,
        name: String,
        user: UserId,
    },
    /// A join, leave or voice-activity change of the node's conferences.
    Member { change: Mirror },
}

/// What the head sends a media node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToNode {
    /// The hello was accepted.
    Welcome,
    UserHash {
        id: u64,
        hash: Option<String>,
        /// The store failed (the node answers 503).
        error: Option<String>,
    },
    Invitation {
        id: u64,
        row: Option<ConferenceRow>,
        error: Option<String>,
    },
    /// Hang up one member, or the whole conference without `user`.
    Hangup {
        dev: DevId,
        name: String,
        user: Option<UserId>,
        reason: String,
    },
    Flags {
        dev: DevId,
        name: String,
        user: UserId,
        flags: Flags,
    },
    Layout {
        dev: DevId,
        name: String,
        layout: String,
    },
    /// The conference's time limit from its start, in seconds (0: none).
    MaxDuration { dev: DevId, name: String, secs: u64 },
    /// End the user's SIP registrations and calls (`DELETE FROM users_auth`).
    DisconnectUser { dev: DevId, user: UserId },
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section of the cluster's maps is one update: a poisoned lock still
    // holds valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Carries an established link, on either side, until it ends: sends what `out` queues, hands
/// every frame that parses to `on_frame` (the error of one that does not to `on_bad`), pings
/// every [`PING_EVERY`] and gives up after [`SILENCE_LIMIT`] without a frame. `Ok(None)`: the
/// peer closed it (or `out` ended); `Ok(Some(reason))`: the peer closed it saying why.
async fn pump<S, In, Out>(
    ws: &mut WebSocketStream<S>,
    out: &mut mpsc::UnboundedReceiver<Out>,
    mut on_frame: impl FnMut(In),
    mut on_bad: impl FnMut(serde_json::Error),
) -> Result<Option<String>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DeserializeOwned,
    Out: Serialize,
{
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut heard = std::time::Instant::now();
    loop {
        tokio::select! {
            next = out.recv() => {
                let Some(next) = next else { return Ok(None) };
                let text = serde_json::to_string(&next).expect("serializable");
                ws.send(Message::Text(text.into())).await.map_err(|e| e.to_string())?;
            }
            frame = ws.next() => {
                heard = std::time::Instant::now();
                match frame {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<In>(&t) {
                        Ok(msg) => on_frame(msg),
                        Err(e) => on_bad(e),
                    },
                    Some(Ok(Message::Close(f))) => {
                        return Ok(f.map(|f| f.reason.to_string()).filter(|r| !r.is_empty()));
                    }
                    None => return Ok(None),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= SILENCE_LIMIT {
                    return Err(format!("nothing heard for {} s", SILENCE_LIMIT.as_secs()));
                }
                ws.send(Message::Ping(Vec::new().into())).await.map_err(|e| e.to_string())?;
            }
        }
    }
}

/// Where browsers reach a media node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaNode {
    pub name: String,
    pub sip_host: String,
    pub sip_port: u16,
}

impl MediaNode {
    /// `<sip host>:<sip port>`, the `node` column of `conference`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.sip_host, self.sip_port)
    }
}

/// Rendezvous (highest random weight) score of a node for a conference: FNV-1a over the node's
/// name, the dev_id and the conference name. The same on every head and across restarts.
pub fn score(node: &str, dev: DevId, conference: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(node.as_bytes());
    eat(&[0xff]);
    eat(&dev.to_le_bytes());
    eat(conference.as_bytes());
    // FNV's low bits mix poorly for short inputs: finish with a 64-bit avalanche.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The node a new conference goes to: the highest [`score`] (ties: the smaller name).
pub fn choose<'a>(nodes: &'a [MediaNode], dev: DevId, conference: &str) -> Option<&'a MediaNode> {
    nodes.iter().max_by(|a, b| {
        score(&a.name, dev, conference)
            .cmp(&score(&b.name, dev, conference))
            .then_with(|| b.name.cmp(&a.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> MediaNode {
        MediaNode {
            name: name.into(),
            sip_host: "h".into(),
            sip_port: 1,
        }
    }

    #[test]
    fn rendezvous_spreads_and_moves_only_what_it_must() {
        let three: Vec<MediaNode> = ["a", "b", "c"].into_iter().map(node).collect();
        let names: Vec<String> = (0..3000).map(|i| format!("room{i}")).collect();
        let placed: Vec<String> = names
            .iter()
            .map(|n| choose(&three, 7, n).unwrap().name.clone())
            .collect();
        for want in ["a", "b", "c"] {
            let share = placed.iter().filter(|p| *p == want).count();
            assert!((800..=1200).contains(&share), "{want} got {share} of 3000");
        }
        // Node b goes: only its conferences move, and they spread over a and c.
        let two: Vec<MediaNode> = ["a", "c"].into_iter().map(node).collect();
        for (n, before) in names.iter().zip(&placed) {
            let after = &choose(&two, 7, n).unwrap().name;
            if before != "b" {
                assert_eq!(after, before, "{n} moved although its node stayed");
            }
        }
        // The order of the list does not matter, and the dev_id is part of the key.
        let reversed: Vec<MediaNode> = ["c", "b", "a"].into_iter().map(node).collect();
        assert!(
            names.iter().all(
                |n| choose(&three, 7, n).unwrap().name == choose(&reversed, 7, n).unwrap().name
            )
        );
        assert!(
            names
                .iter()
                .any(|n| choose(&three, 7, n).unwrap().name != choose(&three, 8, n).unwrap().name)
        );
        assert!(choose(&[], 0, "x").is_none());
    }

    #[test]
    fn frames_round_trip_as_tagged_json() {
        let hello = ToHead::Hello {
            version: VERSION,
            name: "n1".into(),
            sip_host: "media1.example.com".into(),
            sip_port: 7443,
            draining: false,
            members: vec![MemberState {
                dev: 0,
                name: "room".into(),
                user: 5,
                profile: "audio".into(),
                joined_ms: 1200,
                talking: true,
                energy: 40,
            }],
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert!(text.starts_with(r#"{"t":"hello""#), "{text}");
        assert_eq!(serde_json::from_str::<ToHead>(&text).unwrap(), hello);
        let join = ToHead::Member {
            change: Mirror::Join {
                dev: 3,
                name: "room".into(),
                user: 9,
                profile: "video".into(),
            },
        };
        let text = serde_json::to_string(&join).unwrap();
        assert!(
            text.starts_with(r#"{"t":"member","change":{"kind":"join""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ToHead>(&text).unwrap(), join);
        let hangup = ToNode::Hangup {
            dev: 0,
            name: "room".into(),
            user: None,
            reason: "conference ended by the backend".into(),
        };
        let text = serde_json::to_string(&hangup).unwrap();
        assert_eq!(serde_json::from_str::<ToNode>(&text).unwrap(), hangup);
        assert!(serde_json::from_str::<ToNode>(r#"{"t":"bogus"}"#).is_err());
    }

    /// A head and a node in one process, over a real WebSocket on 127.0.0.1: the hello's
    /// members, lookups, reports, the backend's changes, a broken link and the replay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_and_its_head_over_a_real_link() {
        use crate::conference::ConferenceRegistry;
        use crate::sip::Directory;
        use crate::store::{MemoryStore, Store};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Instant;

        /// Waits (deadline 10 s) until `ok` holds, checking it again at every change: a
        /// registry event of either side, a hangup on the node, a change of the head's links.
        async fn wait_until(
            head: &head::ClusterHead,
            changed: &tokio::sync::Notify,
            what: &str,
            mut ok: impl FnMut() -> bool,
        ) {
            let end = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (ours, heads) = (changed.notified(), head.changed());
                tokio::pin!(ours, heads);
                ours.as_mut().enable();
                heads.as_mut().enable();
                if ok() {
                    return;
                }
                let woke = tokio::time::timeout_at(end, async {
                    tokio::select! {
                        _ = ours => {}
                        _ = heads => {}
                    }
                })
                .await;
                assert!(woke.is_ok(), "timed out waiting until {what}");
            }
        }
        const SECRET: &str = "0123456789abcdef-test";
        let store = Arc::new(MemoryStore::new());
        store.set_user_hash(0, 7, "key7").await.unwrap();
        let row = ConferenceRow {
            name: "room".into(),
            user_id: 7,
            caller_id: 0,
            message: String::new(),
            profile: "audio".into(),
            stream: String::new(),
            node: "10.0.0.9:7443".into(),
            time: 0,
        };
        store.put_conference_row(0, &row).await.unwrap();
        let head_reg = Arc::new(ConferenceRegistry::new());
        let head = head::ClusterHead::new(SECRET.into(), None, store, head_reg.clone());
        // Every registry event wakes the waits; the head's are also kept.
        let changed = Arc::new(tokio::sync::Notify::new());
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (e2, c2) = (events.clone(), changed.clone());
        head_reg.set_events(Arc::new(
            move |e: crate::conference::registry::ConferenceEvent| {
                e2.lock()
                    .unwrap()
                    .push((e.event, e.data["user_id"].as_i64()));
                c2.notify_waiters();
            },
        ));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _serve = tokio::spawn(head.clone().serve(listener));

        // A wrong secret is refused.
        let intruder = node::NodeLink::new(
            &addr,
            None,
            "wrong-secret-0123456789".into(),
            MediaNode {
                name: "x".into(),
                sip_host: "10.0.0.8".into(),
                sip_port: 7443,
            },
            Arc::new(ConferenceRegistry::new()),
        );
        let t = tokio::spawn(intruder.run());
        wait_until(&head, &changed, "the head refused it", || {
            head.stats.refused.load(Ordering::Relaxed) >= 1
        })
        .await;
        t.abort();
        assert!(head.nodes().is_empty());

        // A member in a call before the link is up comes with the hello.
        let node_reg = Arc::new(ConferenceRegistry::new());
        let link = node::NodeLink::new(
            &addr,
            None,
            SECRET.into(),
            MediaNode {
                name: "n1".into(),
                sip_host: "10.0.0.9".into(),
                sip_port: 7443,
            },
            node_reg.clone(),
        );
        let c2 = changed.clone();
        node_reg.set_events(Arc::new(move |_| c2.notify_waiters()));
        let hung = Arc::new(AtomicUsize::new(0));
        let (h2, c2) = (hung.clone(), changed.clone());
        node_reg.join(
            0,
            "room",
            7,
            "audio",
            Instant::now(),
            Arc::new(move |_: &str| {
                h2.fetch_add(1, Ordering::SeqCst);
                c2.notify_waiters();
            }),
        );
        let task = tokio::spawn(link.clone().run());
        wait_until(&head, &changed, "the head lists the hello's member", || {
            head_reg.members(0, Some("room"), Instant::now()).len() == 1
        })
        .await;
        assert_eq!(
            head.nodes(),
            [MediaNode {
                name: "n1".into(),
                sip_host: "10.0.0.9".into(),
                sip_port: 7443
            }]
        );
        // The node's SIP lookups are answered from the head's store.
        assert_eq!(link.user_hash(0, 7).await.unwrap().as_deref(), Some("key7"));
        assert_eq!(link.user_hash(0, 8).await.unwrap(), None);
        assert_eq!(link.invitation(0, "room", 7).await.unwrap(), Some(row));
        assert_eq!(link.invitation(0, "room", 8).await.unwrap(), None);

        // Later joins and voice activity.
        node_reg.join(
            0,
            "room",
            8,
            "audio",
            Instant::now(),
            Arc::new(|_: &str| {}),
        );
        node_reg.activity(0, "room", 8, true, 60, Instant::now());
        wait_until(&head, &changed, "user 8 talks on the head", || {
            let rows = head_reg.members(0, Some("room"), Instant::now());
            rows.iter()
                .any(|r| r.user_id == 8 && r.talking && r.energy == 60)
        })
        .await;
        // The backend's changes on the head reach the node.
        assert!(head_reg.update_flags(0, "room", 8, |f| f.audio = false));
        wait_until(&head, &changed, "user 8 muted on the node", || {
            node_reg.flags(0, "room", 8).is_some_and(|f| !f.audio)
        })
        .await;
        assert!(head_reg.set_layout(0, "room", "grid"));
        wait_until(&head, &changed, "the layout on the node", || {
            node_reg
                .conference_state(0, "room")
                .is_some_and(|s| s.layout.as_deref() == Some("grid"))
        })
        .await;
        assert_eq!(head_reg.hangup(0, "room", Some(7), "kick"), 1);
        wait_until(&head, &changed, "the node hung user 7 up", || {
            hung.load(Ordering::SeqCst) == 1
        })
        .await;
        // A leave reported by the node.
        node_reg.leave(0, "room", 8);
        wait_until(&head, &changed, "user 8 left on the head", || {
            head_reg.members(0, Some("room"), Instant::now()).len() == 1
        })
        .await;

        // The link breaks: the head forgets the node but keeps its members for the grace;
        // lookups fail meanwhile.
        events.lock().unwrap().clear();
        head.set_link_grace(Duration::from_secs(30));
        task.abort();
        wait_until(&head, &changed, "the head saw the link go", || {
            head.nodes().is_empty()
        })
        .await;
        assert_eq!(head_reg.members(0, None, Instant::now()).len(), 1);
        assert!(link.user_hash(0, 7).await.is_err());
        // It comes back within the grace: the hello lists user 7 (kept, nothing published)
        // and user 9, who joined meanwhile.
        node_reg.join(
            0,
            "room",
            9,
            "audio",
            Instant::now(),
            Arc::new(|_: &str| {}),
        );
        let task = tokio::spawn(link.clone().run());
        wait_until(
            &head,
            &changed,
            "the head lists the node's members again",
            || {
                let mut users: Vec<UserId> = head_reg
                    .members(0, Some("room"), Instant::now())
                    .iter()
                    .map(|r| r.user_id)
                    .collect();
                users.sort();
                users == [7, 9]
            },
        )
        .await;
        assert_eq!(*events.lock().unwrap(), [("join", Some(9))]);
        // Hangups reach the node over the new link.
        assert_eq!(head_reg.hangup(0, "room", Some(7), "kick again"), 1);
        wait_until(&head, &changed, "the node hung user 7 up again", || {
            hung.load(Ordering::SeqCst) == 2
        })
        .await;

        // A break not mended within the grace: the members leave when it ends.
        head.set_link_grace(Duration::from_millis(300));
        task.abort();
        wait_until(&head, &changed, "the head saw the link go", || {
            head.nodes().is_empty()
        })
        .await;
        let broke = Instant::now();
        wait_until(&head, &changed, "the members left after the grace", || {
            head_reg.members(0, None, Instant::now()).is_empty()
        })
        .await;
        assert!(broke.elapsed() >= Duration::from_millis(250));
        // A node that closes its link (shutting down) loses its members at once.
        head.set_link_grace(Duration::from_secs(30));
        let _task = tokio::spawn(link.clone().run());
        wait_until(&head, &changed, "back", || {
            head_reg.members(0, None, Instant::now()).len() == 2
        })
        .await;
        link.close(Duration::from_secs(5)).await;
        wait_until(&head, &changed, "dropped at the close", || {
            head.nodes().is_empty() && head_reg.members(0, None, Instant::now()).is_empty()
        })
        .await;
        assert_eq!(head.stats.links.load(Ordering::Relaxed), 3);
    }
}
