//! A media node's side of the cluster: the link to the head, kept up; the SIP listener's
//! [`Directory`] on the head; membership reports; the head's commands (see [`super`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{info, warn};

use super::{ANSWER_TIMEOUT, MediaNode, MemberState, PATH, ToHead, ToNode, VERSION, lock};
use crate::conference::ConferenceRegistry;
use crate::conference::registry::{MemberFlags, Mirror};
use crate::sip::{Directory, SipContext};
use crate::store::{ConferenceRow, DevId, StoreError, StoreResult, UserId};

/// What the head answered to a lookup.
enum Answer {
    Hash(Option<String>, Option<String>),
    Row(Option<Box<ConferenceRow>>, Option<String>),
}

/// Counters and state for `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// The link is up (welcomed by the head).
    pub up: AtomicBool,
    /// Links established.
    pub connects: AtomicU64,
    /// Lookups asked of the head, and those that failed (link down, timeout, store error).
    pub lookups: AtomicU64,
    pub lookup_failures: AtomicU64,
}

/// A media node's link to its head.
pub struct NodeLink {
    url: String,
    /// TLS for a wss head whose certificate is not under the system's roots (`head_ca`).
    tls: Option<Arc<rustls::ClientConfig>>,
    secret: String,
    node: MediaNode,
    registry: Arc<ConferenceRegistry>,
    /// For the head's `disconnect_user` (set once the SIP listener exists).
    sip: OnceLock<SipContext>,
    /// The link's outgoing queue while it is up.
    out: Mutex<Option<mpsc::UnboundedSender<ToHead>>>,
    /// The node is draining ([`NodeLink::set_draining`]); every hello says so.
    draining: AtomicBool,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
    /// Set by [`NodeLink::close`]: no more links.
    stopping: AtomicBool,
    /// Notified when [`NodeLink::run`] has ended.
    finished: tokio::sync::Notify,
    pub stats: NodeStats,
}

/// The link's URL from `[cluster] head`: `host:port`, or a ws:// / wss:// URL (the path
/// defaults to [`PATH`]).
pub fn head_url(head: &str) -> String {
    if let Some(rest) = head
        .strip_prefix("ws://")
        .or_else(|| head.strip_prefix("wss://"))
    {
        if rest.contains('/') && !rest.ends_with('/') {
            head.to_string()
        } else {
            format!("{}{PATH}", head.trim_end_matches('/'))
        }
    } else {
        format!("ws://{head}{PATH}")
    }
}

/// TLS for a wss head that trusts the certificates in the PEM file `ca` (`[cluster] head_ca`)
/// and only those.
pub fn trusting(ca: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parsing {}", ca.display()))?)
            .with_context(|| format!("a certificate of {}", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{} holds no certificate", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl NodeLink {
    /// A link (not yet running: [`NodeLink::run`]) for `node` (its name, and where browsers
    /// reach its SIP listener); `tls` for a wss head (`None`: the system's roots).
    pub fn new(
        head: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        secret: String,
        node: MediaNode,
        registry: Arc<ConferenceRegistry>,
    ) -> Arc<NodeLink> {
        let link = Arc::new(NodeLink {
            url: head_url(head),
            tls,
            secret,
            node,
            registry: registry.clone(),
            sip: OnceLock::new(),
            out: Mutex::new(None),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            finished: tokio::sync::Notify::new(),
            stats: NodeStats::default(),
        });
        // Membership changes go to the head while the link is up; a new link's hello lists
        // every member again.
        let weak = Arc::downgrade(&link);
        registry.set_mirror(Arc::new(move |change: Mirror| {
            if let Some(link) = weak.upgrade() {
                link.send(ToHead::Member { change });
            }
        }));
        link
    }

    /// The SIP listener, for the head's `disconnect_user`.
    pub fn set_sip(&self, sip: SipContext) {
        let _ = self.sip.set(sip);
    }

    /// The head's link URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The node drains: the head is told now (if the link is up) and in every later hello, and
    /// places no new conference here.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.send(ToHead::Draining);
    }

    fn send(&self, msg: ToHead) -> bool {
        lock(&self.out)
            .as_ref()
            .is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Asks the head; `Err` when the link is down or the answer does not come in time.
    async fn ask(&self, make: impl FnOnce(u64) -> ToHead) -> StoreResult<Answer> {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let fail = |why: &str| {
            self.stats.lookup_failures.fetch_add(1, Ordering::Relaxed);
            lock(&self.pending).remove(&id);
            Err(failed(why))
        };
        if !self.send(make(id)) {
            return fail("not connected");
        }
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(_)) => fail("the link closed before the answer"),
            Err(_) => fail("no answer in time"),
        }
    }

    /// Keeps the link up until [`NodeLink::close`] (or the task is aborted): connects, says
    /// hello, serves the head's frames; after a failure waits 0.5 s, doubling to 5 s, and
    /// connects again.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        while !self.stopping.load(Ordering::Relaxed) {
            let started = Instant::now();
            match self.session().await {
                Ok(()) => info!(head = %self.url, "cluster: the link to the head is closed"),
                Err(e) => warn!(head = %self.url, "cluster: link to the head: {e}"),
            }
            self.down();
            if self.stopping.load(Ordering::Relaxed) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(500);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.down();
        self.finished.notify_one();
    }

    /// Closes the link for good (the server is shutting down, its calls hung up): what is
    /// queued goes out, then a close frame, so the head drops this node's members at once.
    /// Waits at most `wait` for it.
    pub async fn close(&self, wait: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        // The session's queue ends once what it holds is sent.
        *lock(&self.out) = None;
        let _ = tokio::time::timeout(wait, self.finished.notified()).await;
    }

    /// The link is down: lookups waiting for an answer fail now.
    fn down(&self) {
        self.stats.up.store(false, Ordering::Relaxed);
        *lock(&self.out) = None;
        lock(&self.pending).clear();
    }

    async fn session(&self) -> Result<(), String> {
        let mut req = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("bad [cluster] head URL {}: {e}", self.url))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.secret))
            .map_err(|_| "the [cluster] secret is not a valid header value".to_string())?;
        req.headers_mut().insert("authorization", bearer);
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector),
        )
        .await
        .map_err(|_| "no connection within 10 s".to_string())?
        .map_err(|e| format!("cannot connect: {e}"))?;
        // From here membership changes queue for this link; the hello lists every member
        // (a join queued meanwhile is sent twice, which the head takes as a re-join).
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut out = lock(&self.out);
            if self.stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            *out = Some(tx);
        }
        let now = Instant::now();
        let members = self
            .registry
            .all_members(now)
            .into_iter()
            .map(|(dev, r)| MemberState {
                dev,
                name: r.name,
                user: r.user_id,
                profile: r.profile,
                joined_ms: r.joined_for.as_millis() as u64,
                talking: r.talking,
                energy: r.energy,
            })
            .collect();
        let hello = ToHead::Hello {
            version: VERSION,
            name: self.node.name.clone(),
            sip_host: self.node.sip_host.clone(),
            sip_port: self.node.sip_port,
            members,
            draining: self.draining.load(Ordering::Relaxed),
        };
        let text = serde_json::to_string(&hello).expect("serializable");
        ws.send(Message::Text(text.into()))
            .await
            .map_err(|e| e.to_string())?;
        let end = super::pump(
            &mut ws,
            &mut rx,
            |msg| self.on_message(msg),
            |e| warn!("cluster: a frame from the head does not parse: {e}"),
        )
        .await?;
        if self.stopping.load(Ordering::Relaxed) {
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "media node shutting down".into(),
                }))
                .await;
        }
        match end {
            Some(reason) => Err(format!("the head closed the link: {reason}")),
            None => Ok(()),
        }
    }

    fn on_message(&self, msg: ToNode) {
        match msg {
            ToNode::Welcome => {
                self.stats.up.store(true, Ordering::Relaxed);
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                info!(head = %self.url, node = %self.node.name, "cluster: connected to the head");
            }
            ToNode::UserHash { id, hash, error } => self.answer(id, Answer::Hash(hash, error)),
            ToNode::Invitation { id, row, error } => {
                self.answer(id, Answer::Row(row.map(Box::new), error))
            }
            ToNode::Hangup {
                dev,
                name,
                user,
                reason,
            } => {
                self.registry.hangup(dev, &name, user, &reason);
            }
            ToNode::Flags {
                dev,
                name,
                user,
                flags,
            } => {
                self.registry.update_flags(dev, &name, user, |f| {
                    *f = MemberFlags {
                        audio: flags.audio,
                        video: flags.video,
                        deaf: flags.deaf,
                        video_floor: flags.video_floor,
                    }
                });
            }
            ToNode::Layout { dev, name, layout } => {
                self.registry.set_layout(dev, &name, &layout);
            }
            ToNode::MaxDuration { dev, name, secs } => {
                self.registry
                    .set_max_duration(dev, &name, Duration::from_secs(secs));
            }
            ToNode::DisconnectUser { dev, user } => {
                if let Some(sip) = self.sip.get() {
                    sip.disconnect_user(dev, user);
                }
            }
        }
    }

    fn answer(&self, id: u64, a: Answer) {
        if let Some(tx) = lock(&self.pending).remove(&id) {
            let _ = tx.send(a);
        }
    }
}

fn failed(error: &str) -> StoreError {
    StoreError::Backend(format!("cluster head: {error}"))
}

#[async_trait::async_trait]
impl Directory for NodeLink {
    async fn user_hash(&self, dev: DevId, user: UserId) -> StoreResult<Option<String>> {
        match self.ask(|id| ToHead::UserHash { id, dev, user }).await? {
            Answer::Hash(_, Some(e)) => Err(failed(&e)),
            Answer::Hash(hash, None) => Ok(hash),
            Answer::Row(..) => Err(failed("a wrong answer")),
        }
    }

    async fn invitation(
        &self,
        dev: DevId,
        name: &str,
        user: UserId,
    ) -> StoreResult<Option<ConferenceRow>> {
        let name = name.to_string();
        match self
            .ask(|id| ToHead::Invitation {
                id,
                dev,
                name,
                user,
            })
            .await?
        {
            Answer::Row(_, Some(e)) => Err(failed(&e)),
            Answer::Row(row, None) => Ok(row.map(|r| *r)),
            Answer::Hash(..) => Err(failed("a wrong answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::head_url;

    #[test]
    fn head_urls() {
        assert_eq!(head_url("10.0.0.1:7445"), "ws://10.0.0.1:7445/cluster/v1");
        assert_eq!(head_url("ws://h:1"), "ws://h:1/cluster/v1");
        assert_eq!(head_url("wss://h:1/"), "wss://h:1/cluster/v1");
        assert_eq!(head_url("wss://h/x/cluster"), "wss://h/x/cluster");
    }
}
