//! Start-up: builds the store, the engine and the listeners from a [`Config`], and says what
//! listens where.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cometql::{self, Engine, Settings};
use crate::conference::ConferenceRegistry;
use crate::config::{Config, DEFAULT_PASSWORD, StoreBackend};
use crate::store::{MemoryStore, SqliteStore, Store};
use crate::ws::{self, Hub, WsContext};

/// A running server.
pub struct Running {
    pub engine: Arc<Engine>,
    pub hub: Arc<Hub>,
    /// Where CometQL actually listens (a configured port may be 0).
    pub cometql_addr: SocketAddr,
    /// Where the comet WebSocket listens, and whether it is `wss`.
    pub ws_addr: SocketAddr,
    pub ws_tls: bool,
    /// Where the HTTP listener listens, when enabled.
    pub http_addr: Option<SocketAddr>,
    /// Where the store keeps its file, if it has one.
    pub store_path: Option<std::path::PathBuf>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting connections.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
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
        let (http_line, http_ready) = match self.http_addr {
            Some(h) => (
                format!("  HTTP                      http://{h}/   (/metrics, /healthz)\n"),
                format!(" http={h}"),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "comet-server {ver} ({config_origin})\n\
             \x20 CometQL (MySQL protocol)  {a}   try: mysql -h {ip} -P {port} -u root -p'{pw}' CometQL_v1\n\
             \x20 comet WebSocket           {scheme}://{ws}/ws/   (CometServer JS API; /info for health)\n\
             {http_line}\
             \x20 dev_key                   {pw}{key_note}\n\
             \x20 store                     {store}\n\
             READY cometql={a} ws={ws}{http_ready}\n",
            ver = env!("CARGO_PKG_VERSION"),
            ip = a.ip(),
            port = a.port(),
            pw = config.password,
            ws = self.ws_addr,
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

/// Binds every listener and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    // One rustls crypto backend for the whole process (ring; str0m uses aws-lc directly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, store_path) = open_store(config)?;
    let hub = Arc::new(Hub::new());
    let conferences = Arc::new(ConferenceRegistry::new());
    let engine = Arc::new(Engine::new(
        store,
        hub.clone(),
        conferences,
        Settings::from_config(config),
    ));
    let mut tasks = Vec::new();

    let listener = TcpListener::bind(SocketAddr::new(config.cometql.ip, config.cometql.port))
        .await
        .with_context(|| format!("cannot listen for CometQL on {}", config.cometql))?;
    let cometql_addr = listener.local_addr()?;
    tasks.push(tokio::spawn(cometql::server::serve(
        listener,
        engine.clone(),
    )));

    let ws_ctx = Arc::new(WsContext {
        hub: hub.clone(),
        engine: engine.clone(),
        server_name: config.server_name.clone(),
    });
    let ws_bind = SocketAddr::new(config.ws.ip, config.ws.port);
    let (ws_addr, ws_tls) = match &config.ws_tls {
        None => {
            let l = TcpListener::bind(ws_bind)
                .await
                .with_context(|| format!("cannot listen for the comet WebSocket on {ws_bind}"))?;
            let addr = l.local_addr()?;
            tasks.push(tokio::spawn(ws::server::serve(l, ws_ctx)));
            (addr, false)
        }
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load the [ws] TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let l = std::net::TcpListener::bind(ws_bind)
                .with_context(|| format!("cannot listen for the comet WebSocket on {ws_bind}"))?;
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            tasks.push(tokio::spawn(ws::server::serve_tls(l, tls, ws_ctx)));
            (addr, true)
        }
    };

    let http_addr = if config.http_enabled {
        let bind = SocketAddr::new(config.http.ip, config.http.port);
        let l = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen for HTTP on {bind}"))?;
        let addr = l.local_addr()?;
        let ctx = Arc::new(crate::http::HttpContext {
            engine: engine.clone(),
            hub: hub.clone(),
            metrics_token: config.metrics_token.clone(),
        });
        tasks.push(tokio::spawn(crate::http::serve(l, ctx)));
        Some(addr)
    } else {
        None
    };

    Ok(Running {
        engine,
        hub,
        http_addr,
        cometql_addr,
        ws_addr,
        ws_tls,
        store_path,
        tasks,
    })
}
