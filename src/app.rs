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
use crate::realtime::{Offline, Realtime};
use crate::store::{MemoryStore, SqliteStore, Store};

/// A running server.
pub struct Running {
    pub engine: Arc<Engine>,
    /// Where CometQL actually listens (the configured port may be 0).
    pub cometql_addr: SocketAddr,
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
        format!(
            "comet-server {ver} ({config_origin})\n\
             \x20 CometQL (MySQL protocol)  {a}   try: mysql -h {ip} -P {port} -u root -p'{pw}' CometQL_v1\n\
             \x20 dev_key                   {pw}{key_note}\n\
             \x20 store                     {store}\n\
             READY cometql={a}\n",
            ver = env!("CARGO_PKG_VERSION"),
            ip = a.ip(),
            port = a.port(),
            pw = config.password,
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
    let (store, store_path) = open_store(config)?;
    let realtime: Arc<dyn Realtime> = Arc::new(Offline);
    let conferences = Arc::new(ConferenceRegistry::new());
    let engine = Arc::new(Engine::new(
        store,
        realtime,
        conferences,
        Settings::from_config(config),
    ));
    let listener = TcpListener::bind(SocketAddr::new(config.cometql.ip, config.cometql.port))
        .await
        .with_context(|| format!("cannot listen for CometQL on {}", config.cometql))?;
    let cometql_addr = listener.local_addr()?;
    let tasks = vec![tokio::spawn(cometql::server::serve(
        listener,
        engine.clone(),
    ))];
    Ok(Running {
        engine,
        cometql_addr,
        store_path,
        tasks,
    })
}
