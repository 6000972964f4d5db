//! The Janus side of a run: start Debian's `janus` with only the AudioBridge plugin and the
//! WebSocket transport, on 127.0.0.1 only (an `LD_PRELOAD` shim makes libnice see 127.0.0.1
//! as the machine's one interface, see `benches/janus/loopback_ifaddrs.c`), create one
//! AudioBridge room per conference, and join each peer the way `janus.js`'s AudioBridge demo
//! does: attach, `join`, then `configure` with the SDP offer; Janus answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::comet::TempDir;
use crate::peer::{Pending, Running, Shared, Spec};

const SHIM: &str = include_str!("../../../benches/janus/loopback_ifaddrs.c");
const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// A running Janus, killed when dropped.
pub struct Janus {
    child: Child,
    pub ws: SocketAddr,
    dir: TempDir,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let s = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

impl Janus {
    /// Starts `bin` (Debian's `janus`) in a fresh configuration directory.
    pub async fn start(bin: &Path) -> Result<Janus> {
        let dir = TempDir::new("comet-loadgen-janus")?;
        let d = dir.0.clone();
        for sub in ["plugins", "transports", "events", "loggers"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let link = |from: &str, to: PathBuf| -> Result<()> {
            std::os::unix::fs::symlink(Path::new(LIB).join(from), &to)
                .with_context(|| format!("link {from}: is the `janus` package installed?"))
        };
        link(
            "plugins/libjanus_audiobridge.so",
            d.join("plugins/libjanus_audiobridge.so"),
        )?;
        link(
            "transports/libjanus_websockets.so",
            d.join("transports/libjanus_websockets.so"),
        )?;
        let shim_c = d.join("loopback_ifaddrs.c");
        let shim = d.join("libloopback_ifaddrs.so");
        std::fs::write(&shim_c, SHIM)?;
        let st = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&shim)
            .arg(&shim_c)
            .status()
            .context("run cc to build the getifaddrs shim")?;
        if !st.success() {
            bail!("cc failed to build {}", shim_c.display());
        }
        let port = free_port()?;
        let ds = d.display();
        std::fs::write(
            d.join("janus.jcfg"),
            format!(
                "general: {{\n\tconfigs_folder = \"{ds}\"\n\tplugins_folder = \"{ds}/plugins\"\n\
                 \ttransports_folder = \"{ds}/transports\"\n\tevents_folder = \"{ds}/events\"\n\
                 \tloggers_folder = \"{ds}/loggers\"\n\tdebug_level = 3\n\tserver_name = \"loadgen\"\n\
                 \tsession_timeout = 120\n\tinterface = \"127.0.0.1\"\n}}\n\
                 media: {{\n}}\nnat: {{\n\tnice_debug = false\n\tignore_mdns = true\n}}\n\
                 plugins: {{\n}}\ntransports: {{\n}}\nevents: {{\n\tbroadcast = false\n}}\n"
            ),
        )?;
        std::fs::write(
            d.join("janus.transport.websockets.jcfg"),
            format!(
                "general: {{\n\tjson = \"plain\"\n\tws = true\n\tws_port = {port}\n\
                 \tws_ip = \"127.0.0.1\"\n\twss = false\n}}\n\
                 admin: {{\n\tadmin_ws = false\n\tadmin_wss = false\n}}\n"
            ),
        )?;
        std::fs::write(d.join("janus.plugin.audiobridge.jcfg"), "general: {\n}\n")?;
        let log = std::fs::File::create(d.join("janus.log"))?;
        let child = Command::new(bin)
            .arg("-C")
            .arg(d.join("janus.jcfg"))
            .arg("-F")
            .arg(&d)
            .arg("-o")
            .env("LD_PRELOAD", &shim)
            .current_dir(&d)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut janus = Janus {
            child,
            ws: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        // Ready when the WebSocket port accepts connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(janus.ws).await.is_ok() {
                return Ok(janus);
            }
            if let Ok(Some(st)) = janus.child.try_wait() {
                bail!(
                    "janus exited ({st}) before listening:\n{}",
                    janus.log_tail()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!("janus did not listen within 20 s:\n{}", janus.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of Janus's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.0.join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// One WebSocket connection to the Janus API with one session.
pub struct Api {
    out: mpsc::UnboundedSender<String>,
    waiting: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>>,
    next: AtomicU64,
    session: u64,
    /// `hangup` events Janus sent (a peer's PeerConnection went away).
    pub hangups: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Api {
    pub async fn connect(addr: SocketAddr) -> Result<Api> {
        let mut req = format!("ws://{addr}/").into_client_request()?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .context("connect to the Janus WebSocket API")?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let waiting: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>> = Default::default();
        let hangups = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(async move {
            while let Some(t) = out_rx.recv().await {
                if sink.send(Message::text(t)).await.is_err() {
                    break;
                }
            }
        });
        let (w, h) = (waiting.clone(), hangups.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v["janus"] == "hangup" {
                    h.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(tr) = v["transaction"].as_str()
                    && let Some(tx) = lock(&w).get(tr)
                {
                    let _ = tx.send(v.clone());
                }
            }
        });
        let mut api = Api {
            out,
            waiting,
            next: AtomicU64::new(1),
            session: 0,
            hangups,
            tasks: vec![writer, reader],
        };
        let r = api.call(json!({"janus": "create"})).await?;
        api.session = r["data"]["id"]
            .as_u64()
            .with_context(|| format!("no session id in {r}"))?;
        // Janus drops a session after session_timeout without a request.
        let out = api.out.clone();
        let session = api.session;
        api.tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                k += 1;
                let msg = json!({"janus": "keepalive", "session_id": session,
                                 "transaction": format!("keepalive{k}")});
                if out.send(msg.to_string()).is_err() {
                    break;
                }
            }
        }));
        Ok(api)
    }

    /// Sends a request and returns its first reply that is not an `ack` (for plugin messages:
    /// the asynchronous `event`), failing on `error`.
    pub async fn call(&self, mut req: Value) -> Result<Value> {
        let tr = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        req["transaction"] = json!(tr);
        if self.session != 0 {
            req["session_id"] = json!(self.session);
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.waiting).insert(tr.clone(), tx);
        let _ = self.out.send(req.to_string());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let r = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(v)) if v["janus"] == "ack" => continue,
                Ok(Some(v)) => break Ok(v),
                Ok(None) => break Err(anyhow::anyhow!("the Janus connection closed")),
                Err(_) => break Err(anyhow::anyhow!("Janus did not answer {req} within 30 s")),
            }
        };
        lock(&self.waiting).remove(&tr);
        let v = r?;
        if v["janus"] == "error" {
            bail!("Janus error: {}", v["error"]);
        }
        if let Some(e) = v["plugindata"]["data"].get("error") {
            bail!("AudioBridge error: {e}");
        }
        Ok(v)
    }

    async fn attach(&self) -> Result<u64> {
        let r = self
            .call(json!({"janus": "attach", "plugin": "janus.plugin.audiobridge"}))
            .await?;
        r["data"]["id"]
            .as_u64()
            .with_context(|| format!("no handle id in {r}"))
    }

    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut req = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(j) = jsep {
            req["jsep"] = j;
        }
        self.call(req).await
    }

    /// Creates one room per conference: 48 kHz mixing (as ours), the audio-level extension.
    pub async fn create_rooms(&self, conferences: usize) -> Result<()> {
        let h = self.attach().await?;
        for c in 0..conferences {
            let r = self
                .message(
                    h,
                    json!({"request": "create", "room": room_of(c), "sampling_rate": 48000,
                           "audiolevel_ext": true, "audiolevel_event": false, "record": false}),
                    None,
                )
                .await?;
            if r["plugindata"]["data"]["audiobridge"] != "created" {
                bail!("room {c} not created: {r}");
            }
        }
        Ok(())
    }
}

fn room_of(conf: usize) -> u64 {
    1000 + conf as u64
}

/// Joins one peer: attach, join (Opus at 32 kbit/s, complexity 5: what our server encodes
/// with), configure with the offer, apply the answer.
pub async fn join(
    api: &Api,
    spec: Spec,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<Running> {
    let h = api.attach().await?;
    let r = api
        .message(
            h,
            json!({"request": "join", "room": room_of(spec.conf),
                   "display": format!("loadgen{}", spec.index), "muted": false,
                   "bitrate": 32000, "quality": 5}),
            None,
        )
        .await?;
    if r["plugindata"]["data"]["audiobridge"] != "joined" {
        bail!("join answered {r}");
    }
    let pending = Pending::new(spec, &shared, false).await?;
    pending.mark_invite();
    let r = api
        .message(
            h,
            json!({"request": "configure", "muted": false}),
            Some(json!({"type": "offer", "sdp": pending.offer(), "trickle": false})),
        )
        .await?;
    let answer = r["jsep"]["sdp"]
        .as_str()
        .with_context(|| format!("no SDP answer in {r}"))?;
    pending.start(answer, shared, stop)
}
