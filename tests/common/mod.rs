//! Shared test harness: starts the real `comet-server` binary on loopback with its own data
//! directory and free ports, and waits (with a deadline) until it says it is ready.

#![allow(dead_code)]

pub mod browser;
pub mod http;
pub mod nginx;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod audio_room;
pub mod peer;
pub mod picture;
pub mod sip_client;
pub mod tones;

pub const PASSWORD: &str = "test-dev-key";

/// A running server process; killed when dropped.
pub struct Server {
    child: Child,
    pub cometql: SocketAddr,
    pub ws: SocketAddr,
    /// SIP over WebSocket (`ws://`), announced to browsers as `127.0.0.1:<port>`.
    pub sip: SocketAddr,
    /// The UDP media socket.
    pub media: SocketAddr,
    /// The HTTP listener (unless a test disabled it).
    pub http: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub stdout: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

/// Finds a required external program or fails with a clear message (never skips).
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed. The README's test command installs every test dependency \
         (scripts/setup.sh); run it or install the Debian package that provides `{name}`."
    );
}

impl Server {
    /// Starts a server with a fresh data directory inside `dir`.
    pub fn start(dir: &Path) -> Server {
        Self::start_with(dir, &[])
    }

    /// Starts a server with extra command-line arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        let data_dir = dir.join("data");
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--cometql-port".into(),
            "0".into(),
            "--ws-port".into(),
            "0".into(),
            "--http-port".into(),
            "0".into(),
            "--sip-port".into(),
            "0".into(),
            "--media-port".into(),
            "0".into(),
            "--set".into(),
            format!("main.password={PASSWORD}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_comet-server"))
            .args(&args)
            // COMET_TEST_LOG=comet_server=debug shows the server's debug logs in a test's output.
            .env(
                "RUST_LOG",
                std::env::var("COMET_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start comet-server");
        let (out_tx, out_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if out_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match out_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("READY ") {
                        let addr = |key: &str| -> SocketAddr {
                            rest.split_whitespace()
                                .find_map(|kv| kv.strip_prefix(key))
                                .unwrap_or_else(|| panic!("READY line names {key}: {rest}"))
                                .parse()
                                .expect("an address")
                        };
                        let (cometql, ws) = (addr("cometql="), addr("ws="));
                        let (sip, media) = (addr("sip="), addr("media="));
                        let http = rest
                            .split_whitespace()
                            .find_map(|kv| kv.strip_prefix("http="))
                            .map(|a| a.parse().expect("an address"));
                        lines.push(line);
                        return Server {
                            child,
                            cometql,
                            ws,
                            sip,
                            media,
                            http,
                            data_dir,
                            stdout: lines,
                            stderr: err_rx,
                        };
                    }
                    lines.push(line);
                }
                Err(e) => {
                    let why = match e {
                        mpsc::RecvTimeoutError::Timeout => "did not become ready within 60 s",
                        mpsc::RecvTimeoutError::Disconnected => "exited before it was ready",
                    };
                    let _ = child.kill();
                    let _ = child.wait();
                    let err: Vec<String> = err_rx.try_iter().collect();
                    panic!("comet-server {why}\nstdout: {lines:#?}\nstderr: {err:#?}");
                }
            }
        }
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM and waits (with a deadline) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.wait_exit()
    }

    /// Sends SIGTERM and returns at once.
    #[allow(dead_code)]
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }

    /// Sends SIGUSR1 (the server starts draining).
    #[allow(dead_code)]
    pub fn signal_usr1(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-USR1", &pid]).status();
    }

    /// Sends SIGHUP (the TLS listeners reload their certificates).
    #[allow(dead_code)]
    pub fn signal_hup(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-HUP", &pid]).status();
    }

    /// Waits (at most 20 s) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("comet-server did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `/metrics` lines whose names start with one of `prefixes`, joined with ", ".
    #[allow(dead_code)]
    pub fn metrics(&self, prefixes: &[&str]) -> String {
        let text = match self.http_get("/metrics") {
            Ok(t) => t,
            Err(e) => return e,
        };
        text.lines()
            .filter(|l| !l.starts_with('#') && prefixes.iter().any(|p| l.starts_with(p)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The body of `GET path` on the HTTP listener (from loopback, so admin pages answer), or
    /// what went wrong.
    pub fn http_get(&self, path: &str) -> Result<String, String> {
        self.http_request("GET", path, &[]).map(|(_, body)| body)
    }

    /// `POST path` (empty body) on the HTTP listener from loopback: the status and the body.
    #[allow(dead_code)]
    pub fn http_post(&self, path: &str) -> Result<(u16, String), String> {
        self.http_request("POST", path, &[])
    }

    /// One HTTP/1.0 request with an empty body and the `headers` lines: the status and the
    /// body.
    pub fn http_request(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
    ) -> Result<(u16, String), String> {
        use std::io::{Read, Write};
        let Some(addr) = self.http else {
            return Err("no HTTP listener".into());
        };
        let mut text = String::new();
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .and_then(|mut t| {
                t.set_read_timeout(Some(Duration::from_secs(5)))?;
                let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
                write!(
                    t,
                    "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n{extra}\r\n"
                )?;
                t.read_to_string(&mut text)
            })
            .map_err(|e| format!("{method} {path} failed: {e}"))?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line: {text}"))?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, body.to_string()))
    }

    /// Waits (at most `limit`) until the server has printed `n` stderr lines containing
    /// `text`; returns the lines read meanwhile (they are no longer in [`Server::stderr_lines`]).
    #[allow(dead_code)]
    pub fn wait_log(&self, text: &str, n: usize, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        while seen.iter().filter(|l: &&String| l.contains(text)).count() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "fewer than {n} lines with {text:?} within {limit:?}:\n{}",
                    seen.join("\n")
                ),
            }
        }
        seen
    }

    /// Stderr lines printed so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    pub fn port(&self) -> u16 {
        self.cometql.port()
    }

    /// The address the READY line gives for `key` (e.g. `cluster`), if it names one.
    #[allow(dead_code)]
    pub fn ready_addr(&self, key: &str) -> Option<SocketAddr> {
        let prefix = format!("{key}=");
        self.stdout
            .iter()
            .find_map(|l| l.strip_prefix("READY "))?
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(prefix.as_str()))?
            .parse()
            .ok()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// mysql_async connection options for the test server.
pub fn mysql_opts(
    server: &Server,
    user: &str,
    password: &str,
    db: Option<&str>,
) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(server.cometql.ip().to_string())
        .tcp_port(server.port())
        .user(Some(user))
        .pass(Some(password))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// Connects as dev 0 with the right key.
pub async fn connect(server: &Server) -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_opts(server, "root", PASSWORD, Some("CometQL_v1")))
        .await
        .expect("connect to CometQL")
}

/// The server error code of a failed statement.
pub fn err_code(e: mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Asserts that metric `name` (with its labels) is `value` in [`Server::metrics`]' text.
#[allow(dead_code)]
#[track_caller]
pub fn assert_metric(text: &str, name: &str, value: f64) {
    assert_eq!(metric(text, name), Some(value), "{name} in {text}");
}

/// One value in [`Server::metrics`]' text (`name value, name value, ...`); `None`: not there.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.split(", ")
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
