//! The comet-server side of a run: start the server binary on loopback, invite every user
//! over CometQL (users_auth + conference rows, as a PHP backend does), and dial each peer in
//! over SIP over WebSocket exactly as JsSIP does (REGISTER and INVITE with digest
//! authentication, `sip:<dev>*<name>*audio@host`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use comet_server::sip::client::{SipClient, Ua};
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::peer::{Pending, Running, Shared, Spec};

const KEY: &str = "loadgen-dev-key";
/// `[sip] host` of the server (its default): the digest realm and the host JsSIP dials.
const HOST: &str = "127.0.0.1";

/// A running comet-server process (with `--cluster`: a media node, and the head it belongs
/// to), killed when dropped.
pub struct Server {
    child: Child,
    /// With `--cluster`: the head, whose CometQL invites the users.
    head: Option<(Child, TempDir)>,
    pub cometql: SocketAddr,
    pub sip: SocketAddr,
    /// The HTTP listener (`/metrics`) of the process that runs the conferences.
    pub http: Option<SocketAddr>,
    _dir: tempfile_dir::Dir,
}

/// A temporary directory, removed when dropped (no extra dependency for one directory).
mod tempfile_dir {
    use std::path::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Dir> {
            let p = std::env::temp_dir().join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub use tempfile_dir::Dir as TempDir;

/// The secret of the `--cluster` runs' head and node.
const CLUSTER_SECRET: &str = "loadgen-cluster-secret";

/// Starts `bin` with every listener on 127.0.0.1 and ephemeral ports, the memory store (the
/// store is not what is measured) and `extra` settings; waits for its READY line (and, with
/// `linked`, for a media node's log line saying it is connected to its head) and returns the
/// process and that line's `key=address` pairs.
fn spawn(
    bin: &Path,
    dir: &TempDir,
    max_talkers: usize,
    extra: &[String],
    linked: bool,
) -> Result<(Child, BTreeMap<String, SocketAddr>)> {
    // A node logs its link at info; the rest of the server only what goes wrong.
    let log = if linked {
        "warn,comet_server::cluster::node=info"
    } else {
        "warn"
    };
    let mut child = Command::new(bin)
        .args([
            "--memory-store",
            "--cometql-port",
            "0",
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--sip-port",
            "0",
            "--media-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(&dir.0)
        .args(["--set", &format!("main.password={KEY}")])
        .args(["--set", &format!("media.max_talkers={max_talkers}")])
        .args(extra)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(if linked {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    // The node's stderr is read as long as it runs (a full pipe would stop it); the line
    // that says it is linked is reported once.
    let (linked_tx, linked_rx) = std::sync::mpsc::channel::<()>();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("connected to the head") {
                    let _ = linked_tx.send(());
                }
            }
        });
    }
    let stdout = child.stdout.take().context("server stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not print READY within 30 s", bin.display());
            }
        };
        if let Some(rest) = line.strip_prefix("READY ") {
            let addrs = rest
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            if linked && linked_rx.recv_timeout(Duration::from_secs(15)).is_err() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the media node did not link to its head within 15 s");
            }
            return Ok((child, addrs));
        }
    }
}

fn addr(addrs: &BTreeMap<String, SocketAddr>, key: &str) -> Result<SocketAddr> {
    addrs
        .get(key)
        .copied()
        .with_context(|| format!("the READY line names no {key}"))
}

impl Server {
    /// Starts `bin` on loopback. With `cluster`, two processes: a head that runs no
    /// conference itself (`[cluster] local_media = false`) and one media node; the users are
    /// invited on the head and call the node, and both count as the server; returns once the
    /// node is linked to the head. `settings` (`section.key=value`) go to every process.
    pub fn start(
        bin: &Path,
        max_talkers: usize,
        cluster: bool,
        settings: &[String],
    ) -> Result<Server> {
        let dir = tempfile_dir::Dir::new("comet-loadgen")?;
        let set = |kv: String| ["--set".to_string(), kv];
        let user: Vec<String> = settings.iter().flat_map(|kv| set(kv.clone())).collect();
        if !cluster {
            let (child, addrs) = spawn(bin, &dir, max_talkers, &user, false)?;
            return Ok(Server {
                cometql: addr(&addrs, "cometql")?,
                sip: addr(&addrs, "sip")?,
                http: addrs.get("http").copied(),
                child,
                head: None,
                _dir: dir,
            });
        }
        let head_dir = tempfile_dir::Dir::new("comet-loadgen-head")?;
        let head_args: Vec<String> = [
            set(format!("cluster.secret={CLUSTER_SECRET}")),
            set("cluster.port=0".into()),
            set("cluster.local_media=false".into()),
        ]
        .concat()
        .into_iter()
        .chain(user.iter().cloned())
        .collect();
        let (head, head_addrs) = spawn(bin, &head_dir, max_talkers, &head_args, false)?;
        let head_ready = (head, head_dir);
        let link = addr(&head_addrs, "cluster")?;
        let node_args: Vec<String> = [
            set(format!("cluster.secret={CLUSTER_SECRET}")),
            set(format!("cluster.head={link}")),
        ]
        .concat()
        .into_iter()
        .chain(user)
        .collect();
        let (child, addrs) = spawn(bin, &dir, max_talkers, &node_args, true)?;
        Ok(Server {
            cometql: addr(&head_addrs, "cometql")?,
            sip: addr(&addrs, "sip")?,
            http: addrs.get("http").copied(),
            child,
            head: Some(head_ready),
            _dir: dir,
        })
    }

    /// The server's processes (the media node first).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        pids.extend(self.head.as_ref().map(|(h, _)| h.id()));
        pids
    }

    /// The process that runs the conferences.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The body of `GET path` on the HTTP listener (`None`: no listener, or no answer
    /// within 5 s).
    async fn get(&self, path: &str) -> Option<String> {
        let addr = self.http?;
        let get = async {
            let mut t = tokio::net::TcpStream::connect(addr).await?;
            t.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
                .await?;
            let mut text = String::new();
            t.read_to_string(&mut text).await?;
            std::io::Result::Ok(text)
        };
        let text = tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .ok()?
            .ok()?;
        Some(
            text.split_once("\r\n\r\n")
                .map_or(text.as_str(), |(_, b)| b)
                .to_string(),
        )
    }

    /// The server's counters from `/metrics` (name with labels -> value); empty if it does
    /// not answer.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        self.get("/metrics")
            .await
            .map(|t| parse_metrics(&t))
            .unwrap_or_default()
    }

    /// What the server says about the members of `users` (`/debug/conferences`), one line
    /// each, by user id.
    pub async fn members_debug(&self, users: &[u64]) -> BTreeMap<u64, String> {
        let Some(text) = self.get("/debug/conferences").await else {
            return BTreeMap::new();
        };
        let Ok(serde_json::Value::Array(confs)) = serde_json::from_str(&text) else {
            return BTreeMap::new();
        };
        confs
            .iter()
            .filter_map(|c| c.get("members")?.as_array())
            .flatten()
            .filter_map(|m| {
                let user = m.get("user")?.as_u64()?;
                users.contains(&user).then(|| (user, m.to_string()))
            })
            .collect()
    }
}

/// The samples of a Prometheus text exposition (comments and the HTTP header skipped).
fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| l.starts_with("comet_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((head, _)) = &mut self.head {
            let _ = head.kill();
            let _ = head.wait();
        }
    }
}

pub fn user_of(spec: &Spec) -> u64 {
    spec.index as u64 + 1
}

fn room_of(conf: usize) -> String {
    format!("load{conf}")
}

fn hash_of(user: u64) -> String {
    format!("loadgenKey{user}")
}

/// What the backend does before its users may call: a key per user and an invitation of each
/// to its conference, over CometQL (a few connections in parallel).
pub async fn invite_all(server: &Server, specs: &[Spec]) -> Result<()> {
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(server.cometql.ip().to_string())
        .tcp_port(server.cometql.port())
        .user(Some("root"))
        .pass(Some(KEY))
        .db_name(Some("CometQL_v1"))
        .prefer_socket(false)
        .into();
    let chunks: Vec<Vec<Spec>> = specs
        .chunks(specs.len().div_ceil(8).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut db = mysql_async::Conn::new(opts)
                .await
                .context("connect to CometQL")?;
            for s in &chunk {
                let user = user_of(s);
                db.query_drop(format!(
                    "INSERT INTO users_auth (id, hash) VALUES ({user}, '{}')",
                    hash_of(user)
                ))
                .await
                .context("INSERT INTO users_auth")?;
                db.query_drop(format!(
                    "INSERT INTO conference (name, user_id, caller_id, message, profile) \
                     VALUES ('{}', {user}, 1, '', 'audio')",
                    room_of(s.conf)
                ))
                .await
                .context("INSERT INTO conference")?;
            }
            let _ = db.disconnect().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("CometQL task")??;
    }
    Ok(())
}

/// One member in a call: its SIP connection (the call lasts while it is open) and its peer.
pub struct Member {
    pub peer: Running,
    _sip: SipClient,
}

/// Registers and dials one peer in; returns once the answer is applied.
pub async fn join(
    sip_addr: SocketAddr,
    spec: Spec,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<Member> {
    let user = user_of(&spec);
    let sip_user = format!("{:06}{user}", 0);
    let pending = Pending::new(spec.clone(), &shared, true).await?;
    let mut sip = SipClient::connect_with(
        sip_addr,
        Ua::new(&sip_user, &hash_of(user), HOST, user),
        false,
    )
    .await?;
    let reg = sip.register().await?;
    if reg.status() != Some(200) {
        bail!("REGISTER of {sip_user} answered {}", reg.first);
    }
    pending.mark_invite();
    let number = format!("0*{}*audio", room_of(spec.conf));
    let (_session, answer) = sip.call(&number, pending.offer()).await?;
    let peer = pending.start(&answer, shared, stop)?;
    Ok(Member { peer, _sip: sip })
}
