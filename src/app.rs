//! Start-up: builds the store, the engine and the listeners from a [`Config`], and says what
//! listens where.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::admission::{Gate, Gates};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cluster::MediaNode;
use crate::cluster::head::ClusterHead;
use crate::cluster::node::NodeLink;
use crate::cometql::{self, Engine, Settings};
use crate::conference::{ConferenceRegistry, MediaRuntime, RuntimeConfig};
use crate::config::{ClusterRole, Config, DEFAULT_PASSWORD, StoreBackend};
use crate::realtime::{PipeSubscriber, Realtime};
use crate::sip::{self, SipContext};
use crate::store::{DevId, MemoryStore, SqliteStore, Store, UserId};
use crate::ws::{self, Hub, WsContext};

/// Every live browser connection CometQL can reach: the comet WebSocket hub, plus the SIP
/// connections for `DELETE FROM users_auth` (their registrations and calls end too).
struct LiveConnections {
    hub: Arc<Hub>,
    sip: SipContext,
    /// On a cluster's head: the media nodes end the user's SIP connections too.
    cluster: Option<Arc<ClusterHead>>,
}

impl Realtime for LiveConnections {
    fn send_to_user(&self, dev: DevId, user: UserId, frame: &str) -> usize {
        self.hub.send_to_user(dev, user, frame)
    }
    fn send_to_pipe(&self, dev: DevId, pipe: &str, frame: &str) -> usize {
        self.hub.send_to_pipe(dev, pipe, frame)
    }
    fn disconnect_user(&self, dev: DevId, user: UserId) -> usize {
        if let Some(c) = &self.cluster {
            c.disconnect_user(dev, user);
        }
        self.hub.disconnect_user(dev, user) + self.sip.disconnect_user(dev, user)
    }
    fn is_online(&self, dev: DevId, user: UserId) -> bool {
        self.hub.is_online(dev, user)
    }
    fn pipe_subscribers(&self, dev: DevId, pipe: &str) -> Vec<PipeSubscriber> {
        self.hub.pipe_subscribers(dev, pipe)
    }
    fn pipe_subscriber_count(&self, dev: DevId, pipe: &str) -> usize {
        self.hub.pipe_subscriber_count(dev, pipe)
    }
}

/// The Reason text of the BYE every call gets when the server stops.
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// A running server.
pub struct Running {
    pub engine: Arc<Engine>,
    pub hub: Arc<Hub>,
    /// Where CometQL actually listens (a configured port may be 0).
    pub cometql_addr: SocketAddr,
    /// Where the comet WebSocket listens, and whether it is `wss`.
    pub ws_addr: SocketAddr,
    pub ws_tls: bool,
    /// Where the HTTP listener listens, when enabled, and whether it is `https`.
    pub http_addr: Option<SocketAddr>,
    pub http_tls: bool,
    /// Whether the demo page is served at `/`.
    pub demo: bool,
    /// The `--tls-self-signed` certificate, when one is in use.
    pub self_signed: Option<crate::tls::SelfSigned>,
    /// Where SIP over WebSocket listens, and whether it is `wss`.
    pub sip_addr: SocketAddr,
    pub sip_tls: bool,
    /// The UDP media socket, and the address announced in ICE candidates.
    pub media_addr: SocketAddr,
    pub media_announced: SocketAddr,
    pub runtime: Arc<MediaRuntime>,
    /// RTMP outputs and recordings of the running conferences.
    pub broadcasts: Arc<crate::broadcast::Broadcasts>,
    /// Where the store keeps its file, if it has one.
    pub store_path: Option<std::path::PathBuf>,
    /// On a cluster's head: its media nodes, and where they connect.
    pub cluster_head: Option<(Arc<ClusterHead>, SocketAddr)>,
    /// On a media node: its link to the head.
    pub cluster_node: Option<Arc<NodeLink>>,
    /// Draining: SIGUSR1 or `POST /admin/drain` ([`crate::draining`]).
    pub draining: Arc<crate::draining::Draining>,
    /// The SIP connections (to hang their calls up on shutdown) and the listeners' gates (to
    /// see them close).
    sip: SipContext,
    gates: Gates,
    /// The listeners and periodic jobs, which [`Running::stop`] ends.
    tasks: Vec<JoinHandle<()>>,
    /// The WebRTC endpoint, which runs until the process ends: the calls [`Running::drain`]
    /// hangs up close their participants in it.
    _media: JoinHandle<()>,
    /// The SIP listener and its connections: [`Running::drain`] stops it accepting and ends
    /// the connections.
    _sip: JoinHandle<()>,
    /// Conference events not yet in the pipe history.
    events_pending: Arc<AtomicUsize>,
    /// A media node's link to its head, which runs until the process ends (the leaves of the
    /// calls [`Running::drain`] hangs up are reported).
    _cluster_link: Option<JoinHandle<()>>,
    /// The TLS listeners and their certificate files, for [`Running::reload_tls`].
    tls_reload: Vec<TlsReload>,
}

/// A TLS listener whose certificate [`Running::reload_tls`] reads again from its files.
enum TlsReload {
    /// The comet WebSocket or HTTP listener (axum-server's configuration, shared with it).
    Axum {
        listener: &'static str,
        config: axum_server::tls_rustls::RustlsConfig,
        files: (std::path::PathBuf, std::path::PathBuf),
    },
    /// The SIP listener (its acceptor lives in the SIP context).
    Sip {
        files: (std::path::PathBuf, std::path::PathBuf),
    },
    /// A cluster head's listener for its media nodes.
    Cluster {
        head: Arc<ClusterHead>,
        files: (std::path::PathBuf, std::path::PathBuf),
    },
}

impl Running {
    /// Stops accepting connections (and the periodic jobs); open connections and the media
    /// keep going until [`Running::drain`] or the end of the process.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Ends what browsers hold open, so that they hear of the shutdown at once instead of
    /// finding a dead socket later: every call gets a BYE (or a 480, if not answered yet) whose
    /// Reason says the server is shutting down, then its SIP connection closes; every comet
    /// WebSocket closes with 1001 "going away", which the JS API answers by reconnecting. Waits
    /// until those connections are gone and the conference events they caused (leaves, ends)
    /// are in the pipe history, at most `timeout`. Call after [`Running::stop`].
    pub async fn drain(&self, timeout: std::time::Duration) {
        let sip = self.sip.shut_down(SHUTDOWN_REASON);
        let ws = self.hub.close_all();
        tracing::info!(
            sip_connections = sip,
            ws_connections = ws,
            "hanging up calls and closing connections"
        );
        let end = tokio::time::Instant::now() + timeout;
        // The calls end as their connections close; their leave and end events follow them
        // into the pipe history.
        let events = || self.events_pending.load(Ordering::Relaxed);
        while self.gates.sip.open() + self.gates.ws.open() + events() > 0 {
            if tokio::time::Instant::now() >= end {
                tracing::warn!(
                    sip_connections = self.gates.sip.open(),
                    ws_connections = self.gates.ws.open(),
                    conference_events = events(),
                    "still open or unwritten after {timeout:?}; exiting anyway"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // A media node: the leaves of those calls go to the head, then the link closes, so
        // the head drops this node's members at once.
        if let Some(link) = &self.cluster_node {
            link.close(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Reads every TLS listener's certificate and key again from their files (SIGHUP: a
    /// renewed certificate is used without a restart). New connections get the new one, open
    /// ones keep theirs; a listener whose files do not load keeps its certificate and the
    /// error is logged. Returns how many listeners reloaded.
    pub async fn reload_tls(&self) -> usize {
        let mut reloaded = 0;
        for r in &self.tls_reload {
            let (listener, (cert, key), result) = match r {
                TlsReload::Axum {
                    listener,
                    config,
                    files,
                } => (
                    *listener,
                    files,
                    config
                        .reload_from_pem_file(&files.0, &files.1)
                        .await
                        .map_err(anyhow::Error::from),
                ),
                TlsReload::Sip { files } => (
                    "sip",
                    files,
                    sip::server::tls_acceptor_from_pem(&files.0, &files.1)
                        .map(|a| self.sip.replace_tls(a)),
                ),
                TlsReload::Cluster { head, files } => (
                    "cluster",
                    files,
                    sip::server::tls_acceptor_from_pem(&files.0, &files.1)
                        .map(|a| head.replace_tls(a)),
                ),
            };
            match result {
                Ok(()) => {
                    reloaded += 1;
                    tracing::info!(listener, cert = %cert.display(), "TLS certificate reloaded");
                }
                Err(e) => tracing::error!(
                    listener,
                    cert = %cert.display(),
                    key = %key.display(),
                    "cannot reload the TLS certificate, keeping the old one: {e:#}"
                ),
            }
        }
        reloaded
    }

    /// Stops every broadcast: recordings are finalized (MP4 `moov` written), RTMP outputs send
    /// what they have queued. Blocking; waits at most `timeout`.
    pub fn finish_broadcasts(&self, timeout: std::time::Duration) {
        self.broadcasts.shutdown(timeout);
    }

    /// The start-up banner: what listens where, and how to connect.
    pub fn banner(&self, config: &Config, config_origin: &str) -> String {
        let key_note = if config.password == DEFAULT_PASSWORD {
            " (the public default: set [main] password before exposing the server)"
        } else {
            ""
        };
        let store = match &self.store_path {
            Some(p) => format!("SQLite {}", p.display()),
            None => "memory (nothing survives a restart)".to_string(),
        };
        let a = self.cometql_addr;
        let scheme = if self.ws_tls { "wss" } else { "ws" };
        let sip_scheme = if self.sip_tls { "wss" } else { "ws" };
        let http_scheme = if self.http_tls { "https" } else { "http" };
        let (mut http_line, mut http_ready) = match self.http_addr {
            Some(h) => (
                format!(
                    "  HTTP                      {http_scheme}://{h}/   (/api/cometVideoApi.js, /api/features, /metrics, /healthz, /livez)\n"
                ),
                format!(" http={h}"),
            ),
            None => (String::new(), String::new()),
        };
        if let Some((_, addr)) = &self.cluster_head {
            http_ready.push_str(&format!(" cluster={addr}"));
        }
        if let (Some(h), true) = (self.http_addr, self.demo) {
            let shown = if h.ip().is_unspecified() {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), h.port())
            } else {
                h
            };
            http_line.push_str(&format!(
                "  demo                      open {http_scheme}://{shown}/ in two tabs\n"
            ));
            if !h.ip().is_loopback() {
                http_line.push_str(
                    "  demo warning              [http] demo = true on a public address: anyone \
                     who reaches it can create demo users and join demo rooms\n",
                );
            }
        }
        if let Some((head, addr)) = &self.cluster_head {
            http_line.push_str(&format!(
                "  cluster head              media nodes connect to {}://{addr}{}; conferences go to {}\n",
                if head.is_tls() { "wss" } else { "ws" },
                crate::cluster::PATH,
                if config.cluster.local_media {
                    "them and to this server"
                } else {
                    "them only"
                }
            ));
        }
        if let Some(link) = &self.cluster_node {
            http_line.push_str(&format!(
                "  cluster media node        head {} (users and invitations are read there)\n",
                link.url()
            ));
        }
        if let Some(ss) = &self.self_signed {
            http_line.push_str(&format!(
                "  TLS (self-signed)         {} (SHA-256 {}); browsers ask once per host\n",
                ss.cert.display(),
                ss.fingerprint
            ));
        }
        format!(
            "comet-server {ver} ({config_origin})\n\
             \x20 CometQL (MySQL protocol)  {a}   try: mysql -h {ip} -P {port} -u root -p'{pw}' CometQL_v1\n\
             \x20 comet WebSocket           {scheme}://{ws}/ws/   (CometServer JS API; /info for health)\n\
             \x20 SIP over WebSocket        {sip_scheme}://{sip}   (JsSIP; browsers are told {host}:{sip_port})\n\
             \x20 media (WebRTC, UDP)       {media}   (announced in ICE: {announced})\n\
             {http_line}\
             \x20 dev_key                   {pw}{key_note}\n\
             \x20 store                     {store}\n\
             READY cometql={a} ws={ws} sip={sip} media={media}{http_ready}\n",
            ver = env!("CARGO_PKG_VERSION"),
            ip = a.ip(),
            port = a.port(),
            pw = config.password,
            ws = self.ws_addr,
            sip = self.sip_addr,
            host = config.sip_host,
            sip_port = self.sip_addr.port(),
            media = self.media_addr,
            announced = self.media_announced,
        )
    }
}

/// Opens the configured store.
pub fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<std::path::PathBuf>)> {
    Ok(match config.store_backend {
        StoreBackend::Memory => (Arc::new(MemoryStore::new()), None),
        StoreBackend::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}",
                    config.data_dir.display()
                )
            })?;
            let path = config.data_dir.join("comet.sqlite3");
            let store = SqliteStore::open(&path, config.store_sync)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            (Arc::new(store), Some(path))
        }
    })
}

/// Publishes every conference event on the comet pipe `conference_<name>` (and its history, when
/// pipes_settings keeps one), in order.
///
/// Browsers get each event at once; the history is written by a second task in the same order,
/// so a slow store commit delays the history only, never the next event. At most
/// `LOG_BACKLOG` events wait for the store; beyond, their history entries are dropped (and
/// logged as a warning).
///
/// Returns the count of events not yet written to the history (or dropped), which
/// [`Running::drain`] waits to see at 0: the leaves and ends of the calls it hangs up are kept.
fn publish_conference_events(
    registry: &ConferenceRegistry,
    engine: Arc<Engine>,
) -> Arc<AtomicUsize> {
    const LOG_BACKLOG: usize = 10_000;
    let pending = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let counted = pending.clone();
    registry.set_events(Arc::new(move |e| {
        counted.fetch_add(1, Ordering::Relaxed);
        if tx.send(e).is_err() {
            counted.fetch_sub(1, Ordering::Relaxed);
        }
    }));
    let (log_tx, mut log_rx) =
        tokio::sync::mpsc::channel::<(i64, String, &'static str, String, i64)>(LOG_BACKLOG);
    let logger = engine.clone();
    let logged = pending.clone();
    tokio::spawn(async move {
        while let Some((dev, pipe, event, message, now)) = log_rx.recv().await {
            if let Err(err) = logger
                .log_pipe_message(dev, &pipe, event, &message, 0, now)
                .await
            {
                tracing::warn!("cannot log a conference event: {err}");
            }
            logged.fetch_sub(1, Ordering::Relaxed);
        }
    });
    let relayed = pending.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let pipe = format!("conference_{}", e.conference);
            if crate::names::check_pipe(&pipe).is_err() {
                // Conference names over 53 characters have no event pipe.
                relayed.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let now = crate::cometql::engine::unix_now();
            let message = e.data.to_string();
            let frame = crate::realtime::pipe_message_frame(&pipe, e.event, &message, now);
            engine.realtime.send_to_pipe(e.dev, &pipe, &frame);
            if log_tx
                .try_send((e.dev, pipe, e.event, message, now))
                .is_err()
            {
                relayed.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!("conference event history is behind; an entry was dropped");
            }
        }
    });
    pending
}

/// Each profile's RTMP URL, recording and canvas.
fn broadcast_plan(
    config: &Config,
    broadcasts: Arc<crate::broadcast::Broadcasts>,
) -> crate::broadcast::BroadcastPlan {
    use crate::broadcast::{ProfileBroadcast, encode::VideoFormat};
    crate::broadcast::BroadcastPlan {
        broadcasts,
        profiles: config
            .profiles
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    ProfileBroadcast {
                        stream: p.stream.clone(),
                        record: p.record,
                        // The broadcast canvas of a video profile.
                        video: p.video.then_some(VideoFormat {
                            width: p.canvas.0,
                            height: p.canvas.1,
                            fps: p.fps,
                        }),
                    },
                )
            })
            .collect(),
        record_dir: config.recordings_dir(),
        video_bitrate: config.broadcast_video_bitrate,
        audio_bitrate: config.broadcast_audio_bitrate,
        keyframe_interval_ms: config.broadcast_keyframe_ms,
    }
}

/// The canvas of a profile's video conferences (`None`: an audio-only profile).
fn video_settings(p: &crate::config::Profile) -> Option<crate::conference::video::VideoSettings> {
    use crate::conference::video::{VideoSettings, layout_kind};
    p.video.then(|| {
        let d = VideoSettings::default();
        let max_bitrate = p.video_bitrate.saturating_mul(1000);
        VideoSettings {
            layout: layout_kind(&p.layout).unwrap_or(d.layout),
            width: p.canvas.0,
            height: p.canvas.1,
            fps: p.fps,
            max_bitrate,
            start_bitrate: d.start_bitrate.min(max_bitrate),
            ..d
        }
    })
}

/// The listeners' admission gates, after raising the open-file limit as far as allowed; warns
/// when the caps could exhaust the descriptors anyway.
fn connection_gates(config: &Config) -> Gates {
    if let Some(files) = crate::admission::raise_open_file_limit() {
        let caps: u64 = [config.cometql_conns, config.ws_conns, config.sip_conns]
            .into_iter()
            .chain(config.http_enabled.then_some(config.http_conns))
            .map(|l| l.max as u64)
            .sum();
        if caps + crate::admission::RESERVED_FILES > files {
            tracing::warn!(
                "the open-file limit is {files}, below the listeners' max_connections ({caps}) \
                 plus {} for the rest of the server: raise the limit (ulimit -n, systemd \
                 LimitNOFILE=) or lower max_connections, or a flood of connections ends in \
                 \"too many open files\" for everything",
                crate::admission::RESERVED_FILES
            );
        }
    }
    Gates {
        cometql: Gate::new("cometql", config.cometql_conns),
        ws: Gate::new("ws", config.ws_conns),
        sip: Gate::new("sip", config.sip_conns),
        http: Gate::new("http", config.http_conns),
    }
}

/// Loads `[listener]`'s PEM certificate chain and key for an axum-server listener (HTTP, the
/// comet WebSocket) and records them for [`Running::reload_tls`].
async fn axum_tls(
    listener: &'static str,
    cert: &std::path::Path,
    key: &std::path::Path,
    reload: &mut Vec<TlsReload>,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| {
            format!(
                "cannot load the [{listener}] TLS certificate {} and key {}",
                cert.display(),
                key.display()
            )
        })?;
    reload.push(TlsReload::Axum {
        listener,
        config: config.clone(),
        files: (cert.to_path_buf(), key.to_path_buf()),
    });
    Ok(config)
}

/// Binds every listener and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    // One rustls crypto backend for the whole process (ring; str0m uses aws-lc directly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let gates = connection_gates(config);
    let (store, store_path) = open_store(config)?;
    // TLS: configured certificates, and the self-signed one for listeners that have none.
    let (mut ws_tls_files, mut sip_tls_files, mut http_tls_files) = (
        config.ws_tls.clone(),
        config.sip_tls.clone(),
        config.http_tls.clone(),
    );
    let self_signed = if config.tls_self_signed {
        let ss = crate::tls::ensure(
            &config.data_dir.join("tls-self-signed"),
            &crate::tls::names(config),
        )?;
        for files in [&mut ws_tls_files, &mut sip_tls_files, &mut http_tls_files] {
            if files.is_none() {
                *files = Some((ss.cert.clone(), ss.key.clone()));
            }
        }
        Some(ss)
    } else {
        None
    };
    let hub = Arc::new(Hub::new());
    let conferences = Arc::new(ConferenceRegistry::new());
    let mut tasks = Vec::new();
    let mut tls_reload = Vec::new();

    // The WebRTC endpoint: one UDP socket; ICE candidates carry the announced address and the
    // port actually bound.
    let media_bind = SocketAddr::new(config.media.ip, config.media.port);
    let socket = std::net::UdpSocket::bind(media_bind)
        .with_context(|| format!("cannot bind the UDP media port {media_bind}"))?;
    let media_addr = socket.local_addr()?;
    let media_announced = SocketAddr::new(config.media_announce(), media_addr.port());
    // Send-side bandwidth estimation (TWCC) for the video canvases we send: it starts at the
    // highest canvas bitrate of the video profiles and only lowers the encoders' bitrate (to
    // what the path carries); REMB from browsers is used either way.
    let bwe_start = config
        .profiles
        .values()
        .filter(|p| p.video)
        .map(|p| u64::from(p.video_bitrate) * 1000)
        .max();
    // The endpoint's loops carry every participant's packets: each shard gets a thread of its
    // own (and with several, one more reads the socket for them).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = config.media_threads(cpus);
    let endpoints = (0..threads)
        .map(|index| {
            comet_sfu::Endpoint::new(comet_sfu::EndpointConfig {
                candidates: vec![media_announced],
                bwe_initial_bitrate: bwe_start,
                shard: comet_sfu::Shard {
                    index: index as u32,
                    count: threads as u32,
                },
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("cannot start the WebRTC endpoint: {e}"))?;
    let (sfu, events, sfu_task) = comet_sfu::driver::spawn_sharded(
        socket,
        endpoints,
        comet_sfu::driver::DriverOptions::default(),
    )
    .context("cannot start the WebRTC endpoint threads")?;
    tracing::info!(threads, "WebRTC endpoint started");
    let broadcasts = crate::broadcast::Broadcasts::new(tokio::runtime::Handle::current());
    let runtime = MediaRuntime::start(
        sfu,
        events,
        conferences.clone(),
        RuntimeConfig {
            max_talkers: config.max_talkers,
            opus_complexity: config.opus_complexity,
            opus_bitrate: config.opus_bitrate,
            broadcast: Some(Arc::new(broadcast_plan(config, broadcasts.clone()))),
            profiles: config
                .profiles
                .iter()
                .map(|(name, p)| (name.clone(), video_settings(p)))
                .collect(),
        },
    );

    // SIP over WebSocket: JsSIP registers and dials conferences here.
    let mut sip_ctx = SipContext::new(
        store.clone(),
        config.sip_host.clone(),
        conferences.clone(),
        runtime.clone(),
    );
    sip_ctx = sip_ctx.with_gate(gates.sip.clone());
    sip_ctx = sip_ctx.with_ws_limits(sip::server::WsLimits {
        messages: config.sip_messages,
        ..Default::default()
    });
    if let Some((cert, key)) = &sip_tls_files {
        tls_reload.push(TlsReload::Sip {
            files: (cert.clone(), key.clone()),
        });
        sip_ctx = sip_ctx.with_tls(sip::server::tls_acceptor_from_pem(cert, key).with_context(
            || {
                format!(
                    "cannot load the [sip] TLS certificate {} and key {}",
                    cert.display(),
                    key.display()
                )
            },
        )?);
    }
    let sip_bind = SocketAddr::new(config.sip.ip, config.sip.port);
    let sip_listener = TcpListener::bind(sip_bind)
        .await
        .with_context(|| format!("cannot listen for SIP over WebSocket on {sip_bind}"))?;
    let sip_addr = sip_listener.local_addr()?;
    let sip_tls = sip_ctx.tls.is_some();
    // Where browsers reach this server's SIP: the `node` of the conferences it runs.
    let own_node = format!("{}:{}", config.sip_host, sip_addr.port());
    // A media node reads users and invitations from its head, and reports its members there.
    let head_tls = match &config.cluster.head_ca {
        Some(ca) if config.cluster.role() == ClusterRole::Node => Some(
            crate::cluster::node::trusting(ca)
                .with_context(|| format!("cannot load [cluster] head_ca {}", ca.display()))?,
        ),
        _ => None,
    };
    let cluster_node = (config.cluster.role() == ClusterRole::Node).then(|| {
        let name = if config.cluster.name.is_empty() {
            own_node.clone()
        } else {
            config.cluster.name.clone()
        };
        NodeLink::new(
            &config.cluster.head,
            head_tls,
            config.cluster.secret.clone(),
            MediaNode {
                name,
                sip_host: config.sip_host.clone(),
                sip_port: sip_addr.port(),
            },
            conferences.clone(),
        )
    });
    // In a cluster, a conference runs only on the node its invitations name.
    if config.cluster.role() != ClusterRole::Single {
        sip_ctx = sip_ctx.with_node(own_node.clone());
    }
    if let Some(link) = &cluster_node {
        sip_ctx = sip_ctx.with_directory(link.clone());
        link.set_sip(sip_ctx.clone());
    }
    let cluster_link = cluster_node.clone().map(|link| tokio::spawn(link.run()));
    // Not among `tasks`: the SIP connections live in this task, and [`Running::drain`] (not
    // `stop`) ends them, with a BYE for every call.
    let sip_task = {
        let ctx = sip_ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = sip::serve(sip_listener, ctx).await {
                tracing::error!("SIP listener stopped: {e}");
            }
        })
    };

    // A cluster's head: the listener its media nodes connect to.
    let cluster_head = if config.cluster.role() == ClusterRole::Head {
        let local = config.cluster.local_media.then(|| MediaNode {
            name: own_node.clone(),
            sip_host: config.sip_host.clone(),
            sip_port: sip_addr.port(),
        });
        let head = ClusterHead::new(
            config.cluster.secret.clone(),
            local,
            store.clone(),
            conferences.clone(),
        );
        if let Some((cert, key)) = &config.cluster.tls {
            tls_reload.push(TlsReload::Cluster {
                head: head.clone(),
                files: (cert.clone(), key.clone()),
            });
            head.set_tls(
                sip::server::tls_acceptor_from_pem(cert, key).with_context(|| {
                    format!(
                        "cannot load the [cluster] TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?,
            );
        }
        let bind = SocketAddr::new(config.cluster.listen.ip, config.cluster.listen.port);
        let l = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen for cluster media nodes on {bind}"))?;
        let addr = l.local_addr()?;
        tasks.push(tokio::spawn(head.clone().serve(l)));
        Some((head, addr))
    } else {
        None
    };
    let draining = Arc::new(crate::draining::Draining::new(
        runtime.clone(),
        cluster_node.clone(),
        cluster_head.as_ref().map(|(h, _)| h.clone()),
        config.drain_timeout,
    ));
    let live = Arc::new(LiveConnections {
        hub: hub.clone(),
        sip: sip_ctx.clone(),
        cluster: cluster_head.as_ref().map(|(h, _)| h.clone()),
    });
    // Browsers are told the port actually bound (the configured one may be 0).
    let mut settings = Settings::from_config(config);
    settings.sip_port = sip_addr.port();
    settings.node = own_node;
    settings.cluster = cluster_head.as_ref().map(|(h, _)| h.clone());
    settings.media_node_of = cluster_node.as_ref().map(|l| l.url().to_string());
    {
        // Queued personal messages live QUEUE_TTL_SECS; those of users who never connect
        // again are dropped here, once a minute.
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                let before = cometql::engine::unix_now() - cometql::engine::QUEUE_TTL_SECS;
                match store.purge_user_messages(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!("purged {n} expired queued messages"),
                    Err(e) => tracing::warn!("cannot purge expired queued messages: {e}"),
                }
            }
        }));
    }
    let engine = Arc::new(Engine::new(store, live, conferences.clone(), settings));
    // Not among `tasks`: the events of the calls `drain` hangs up are still published. A
    // media node publishes none: its head does, from what the node reports.
    let events_pending = if cluster_node.is_some() {
        Arc::new(AtomicUsize::new(0))
    } else {
        publish_conference_events(&conferences, engine.clone())
    };
    conferences.set_profile_limits(
        config
            .profiles
            .iter()
            .filter(|(_, p)| p.max_duration > 0)
            .map(|(n, p)| (n.clone(), std::time::Duration::from_secs(p.max_duration)))
            .collect(),
    );
    {
        let registry = conferences.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                every.tick().await;
                registry.enforce_time_limits(std::time::Instant::now());
            }
        }));
    }

    let listener = TcpListener::bind(SocketAddr::new(config.cometql.ip, config.cometql.port))
        .await
        .with_context(|| format!("cannot listen for CometQL on {}", config.cometql))?;
    let cometql_addr = listener.local_addr()?;
    tasks.push(tokio::spawn(cometql::server::serve(
        listener,
        engine.clone(),
        gates.cometql.clone(),
    )));

    let ws_ctx = Arc::new(WsContext {
        hub: hub.clone(),
        engine: engine.clone(),
        server_name: config.server_name.clone(),
        timeouts: Default::default(),
        gate: gates.ws.clone(),
        commands: config.ws_commands,
    });
    let ws_bind = SocketAddr::new(config.ws.ip, config.ws.port);
    let (ws_addr, ws_tls) = match &ws_tls_files {
        None => {
            let l = TcpListener::bind(ws_bind)
                .await
                .with_context(|| format!("cannot listen for the comet WebSocket on {ws_bind}"))?;
            let addr = l.local_addr()?;
            tasks.push(tokio::spawn(ws::server::serve(l, ws_ctx)));
            (addr, false)
        }
        Some((cert, key)) => {
            let tls = axum_tls("ws", cert, key, &mut tls_reload).await?;
            let l = std::net::TcpListener::bind(ws_bind)
                .with_context(|| format!("cannot listen for the comet WebSocket on {ws_bind}"))?;
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            tasks.push(tokio::spawn(ws::server::serve_tls(l, tls, ws_ctx)));
            (addr, true)
        }
    };

    let demo = config.demo_enabled();
    let video = crate::conference::VIDEO_COMPOSITION;
    let features = crate::http::Features {
        server: config.server_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        video,
        demo,
        demo_profile: if video { "video" } else { "audio" }.to_string(),
        profiles: config
            .profiles
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    crate::http::ProfileFeatures {
                        video: p.video,
                        layout: p.layout.clone(),
                    },
                )
            })
            .collect(),
        // The demo links to the HLS player when viewers have somewhere to watch.
        broadcast: !config.hls_url.is_empty(),
        hls: (!config.hls_url.is_empty()).then(|| config.hls_url.replace("{name}", "{room}")),
        ws: crate::http::Endpoint {
            port: ws_addr.port(),
            tls: ws_tls,
        },
        sip: crate::http::Endpoint {
            port: sip_addr.port(),
            tls: sip_tls,
        },
    };
    let (http_addr, http_tls) = if config.http_enabled {
        let bind = SocketAddr::new(config.http.ip, config.http.port);
        let ctx = Arc::new(crate::http::HttpContext {
            engine: engine.clone(),
            hub: hub.clone(),
            runtime: runtime.clone(),
            broadcast: broadcasts.stats.clone(),
            metrics_token: config.metrics_token.clone(),
            demo: demo.then(|| {
                Arc::new(crate::demo::Demo::new(
                    engine.clone(),
                    config.http_demo == crate::config::DemoMode::Auto,
                    features.demo_profile.clone(),
                ))
            }),
            features,
            gates: gates.clone(),
            sip: sip_ctx.core.stats.clone(),
            cluster_node: cluster_node.clone(),
            draining: draining.clone(),
        });
        match &http_tls_files {
            None => {
                let l = TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("cannot listen for HTTP on {bind}"))?;
                let addr = l.local_addr()?;
                tasks.push(tokio::spawn(crate::http::serve(l, ctx)));
                (Some(addr), false)
            }
            Some((cert, key)) => {
                let tls = axum_tls("http", cert, key, &mut tls_reload).await?;
                let l = std::net::TcpListener::bind(bind)
                    .with_context(|| format!("cannot listen for HTTPS on {bind}"))?;
                l.set_nonblocking(true)?;
                let addr = l.local_addr()?;
                tasks.push(tokio::spawn(crate::http::serve_tls(l, tls, ctx)));
                (Some(addr), true)
            }
        }
    } else {
        (None, false)
    };

    Ok(Running {
        engine,
        hub,
        http_addr,
        http_tls,
        demo: demo && http_addr.is_some(),
        self_signed,
        sip_addr,
        sip_tls,
        media_addr,
        media_announced,
        runtime,
        broadcasts,
        cometql_addr,
        ws_addr,
        ws_tls,
        store_path,
        cluster_head,
        cluster_node,
        draining,
        _cluster_link: cluster_link,
        sip: sip_ctx,
        gates,
        tasks,
        _media: sfu_task,
        _sip: sip_task,
        events_pending,
        tls_reload,
    })
}
