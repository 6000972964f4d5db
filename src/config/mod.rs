//! Configuration: embedded defaults, then `comet.ini`, then command-line flags.
//!
//! Every key is declared once in [`KEYS`] with its default, its documentation and its parser;
//! the defaults, the loader and `comet.ini.example` are all checked against that one table.
//! Unknown keys warn with `file:line`; invalid values stop start-up with a clear message.
//! Keys that only meant something to CppComet + FreeSWITCH are accepted and reported as ignored,
//! so an existing `comet.ini` starts without edits.

pub mod ini;

use crate::admission::ConnLimits;
use crate::throttle::CommandRate;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The dev_key CppComet shipped with; we keep it as the default for loopback-only use.
pub const DEFAULT_PASSWORD: &str = "password";

/// A listener address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub ip: IpAddr,
    pub port: u16,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::net::SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// Where acknowledged writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// SQLite (WAL) in the data directory: survives restarts and crashes.
    Sqlite,
    /// Process memory only: for tests and throw-away runs.
    Memory,
}

/// How hard SQLite syncs a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync every commit: an acknowledged write survives a power cut.
    Full,
    /// fsync at checkpoints: survives a process crash, may lose the last writes on power loss.
    Normal,
}

/// Whether the HTTP listener serves the demo page and its backend endpoint (`[http] demo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoMode {
    /// On when the HTTP listener is on a loopback address, off otherwise.
    Auto,
    /// On, wherever the listener is (an explicit choice for a public test server).
    On,
    Off,
}

/// The whole server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[main] password`: the dev_key for CometQL logins and JWT signatures.
    pub password: String,
    /// `[main] data_dir`: where the store keeps its files.
    pub data_dir: PathBuf,
    /// `[main] server_name`: the `server` field of the comet `serverInfo` frame.
    pub server_name: String,
    pub cometql: Listen,
    pub ws: Listen,
    /// `[ws] tls_cert` / `tls_key`: PEM files; when both are set the listener speaks wss://.
    pub ws_tls: Option<(PathBuf, PathBuf)>,
    pub sip: Listen,
    /// `[sip] host`: the name browsers are told to connect to (`serverName`).
    pub sip_host: String,
    /// `[sip] pipesalt`: salt of the callPipe hash.
    pub pipesalt: String,
    pub media: Listen,
    /// `[sip] tls_cert` / `tls_key`: PEM files; when both are set the listener speaks wss://.
    pub sip_tls: Option<(PathBuf, PathBuf)>,
    /// `[media] announce_ip`: the address put in ICE candidates (default: `[media] ip`).
    pub media_announce_ip: Option<IpAddr>,
    /// `[media] threads`: threads (shards) that carry the WebRTC endpoint; 0 picks from the
    /// CPU count ([`Config::media_threads`]).
    pub media_threads: usize,
    /// `[media] max_talkers`: how many of the loudest talkers a conference mixes.
    pub max_talkers: usize,
    /// `[media] opus_complexity`: libopus complexity (0-10) of the mixes we encode (the most;
    /// lowered under load, see `conference::complexity`).
    pub opus_complexity: u8,
    /// `[media] opus_bitrate`: bit/s of the Opus mixes we send.
    pub opus_bitrate: u32,
    pub http: Listen,
    pub http_enabled: bool,
    /// `[http] tls_cert` / `tls_key`: PEM files; when both are set the listener speaks https://.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// `[http] demo`: the demo page and its backend endpoint.
    pub http_demo: DemoMode,
    /// `[main] tls_self_signed`: generate a self-signed certificate for every listener that has
    /// no certificate configured (`--tls-self-signed`).
    pub tls_self_signed: bool,
    /// `[main] drain_timeout`: how long a draining server waits for its last call (`None`: as
    /// long as it takes).
    pub drain_timeout: Option<std::time::Duration>,
    /// `[http] metrics_token`: opens /metrics to non-loopback clients presenting it.
    pub metrics_token: Option<String>,
    pub store_backend: StoreBackend,
    pub store_sync: SyncMode,
    /// `[log] level`: a tracing filter such as `info` or `comet_server=debug`.
    pub log_level: String,
    /// `[log] format`: text lines or JSON objects.
    pub log_format: crate::logging::LogFormat,
    /// Conference profiles by name (`[profile.<name>]`); default, audio and video are built in.
    pub profiles: BTreeMap<String, Profile>,
    /// `[broadcast] record_dir`: where recordings go (empty: `<data_dir>/recordings`).
    pub record_dir: PathBuf,
    /// `[broadcast] video_bitrate`, bit/s.
    pub broadcast_video_bitrate: u32,
    /// `[broadcast] audio_bitrate`, bit/s.
    pub broadcast_audio_bitrate: u32,
    /// `[broadcast] keyframe_interval`, milliseconds between keyframes of the broadcast.
    pub broadcast_keyframe_ms: u32,
    /// `[broadcast] hls_url`: the HLS playlist viewers open, `{name}` standing for the
    /// conference name (empty: no player link is offered).
    pub hls_url: String,
    /// `[cometql] max_connections` / `max_connections_per_ip`.
    pub cometql_conns: ConnLimits,
    /// `[ws] max_connections` / `max_connections_per_ip`.
    pub ws_conns: ConnLimits,
    /// `[ws] commands_per_second` / `command_burst`.
    pub ws_commands: CommandRate,
    /// `[sip] max_connections` / `max_connections_per_ip`.
    pub sip_conns: ConnLimits,
    /// `[sip] messages_per_second` / `message_burst`.
    pub sip_messages: CommandRate,
    /// `[http] max_connections` / `max_connections_per_ip`.
    pub http_conns: ConnLimits,
    /// `[cluster]`: a head and its media nodes.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: how this process takes part in a cluster (see `crate::cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `secret`: what a media node presents to the head. Empty: no cluster.
    pub secret: String,
    /// `ip`, `port`: the head's listener for its media nodes.
    pub listen: Listen,
    /// `head`: on a media node, the head's listener (`host:port` or a `ws://`/`wss://` URL).
    pub head: String,
    /// `name`: this media node's name (empty: `<sip host>:<sip port>`).
    pub name: String,
    /// `local_media`: whether the head runs conferences itself too.
    pub local_media: bool,
    /// `tls_cert` / `tls_key`: on a head, PEM files; when both are set the link is wss.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `head_ca`: on a media node, PEM certificates to trust for a wss head (empty: the
    /// system's roots).
    pub head_ca: Option<PathBuf>,
}

/// Which part this process plays in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    /// No cluster: one process does everything.
    Single,
    /// The head: CometQL, the comet WebSocket and the store, and conferences on its media
    /// nodes (and on itself with `local_media`).
    Head,
    /// A media node: SIP and media of the conferences the head sends it.
    Node,
}

impl ClusterConfig {
    pub fn role(&self) -> ClusterRole {
        if self.secret.is_empty() {
            ClusterRole::Single
        } else if self.head.is_empty() {
            ClusterRole::Head
        } else {
            ClusterRole::Node
        }
    }
}

/// Canvas layouts of video conferences.
pub const LAYOUTS: &[&str] = &["active-speaker", "grid", "presenter"];

/// A conference profile: what a conference dialled as `<dev>*<name>*<profile>` gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Longest a conference of this profile lasts, in seconds (0: no limit).
    pub max_duration: u64,
    /// Canvas layout of video conferences (one of [`LAYOUTS`]).
    pub layout: String,
    /// Whether members send and receive video.
    pub video: bool,
    /// Canvas width and height of video conferences (even).
    pub canvas: (u32, u32),
    /// Canvas frames per second.
    pub fps: u32,
    /// Most bit/s one canvas encoding may use (kbit/s).
    pub video_bitrate: u32,
    /// RTMP URL the conference is published to (`{name}`, `{dev}` replaced); empty: none.
    pub stream: String,
    /// Whether conferences of this profile are recorded to `[broadcast] record_dir`.
    pub record: bool,
}

impl Profile {
    /// A profile with the default settings.
    pub fn new(video: bool) -> Profile {
        Profile {
            max_duration: 0,
            layout: "active-speaker".into(),
            video,
            canvas: (640, 360),
            fps: 30,
            video_bitrate: 1500,
            stream: String::new(),
            record: false,
        }
    }

    fn builtin(name: &str) -> Option<Profile> {
        let video = match name {
            "default" | "video" => true,
            "audio" => false,
            _ => return None,
        };
        Some(Profile::new(video))
    }
}

/// The built-in profiles.
pub fn builtin_profiles() -> BTreeMap<String, Profile> {
    ["default", "audio", "video"]
        .into_iter()
        .filter_map(|n| Profile::builtin(n).map(|p| (n.to_string(), p)))
        .collect()
}

/// One key of a `[profile.<name>]` section.
struct ProfileKey {
    name: &'static str,
    doc: &'static str,
    get: fn(&Profile) -> String,
    set: fn(&mut Profile, &str) -> Result<(), String>,
}

static PROFILE_KEYS: &[ProfileKey] = &[
    ProfileKey {
        name: "max_duration",
        doc: "Seconds a conference of this profile may last; then every member is hung up (a SIP \
              BYE with a Reason header) and the conference ends. 0: no limit. \
              `UPDATE conference_members SET max_duration = N WHERE name = ...` changes it for \
              one running conference.",
        get: |p| p.max_duration.to_string(),
        set: |p, v| {
            p.max_duration = v
                .parse()
                .map_err(|_| format!("`{v}` is not a number of seconds"))?;
            Ok(())
        },
    },
    ProfileKey {
        name: "layout",
        doc: "Canvas layout: active-speaker (the speaker big, the others as thumbnails), grid, \
              or presenter (the speaker only).",
        get: |p| p.layout.clone(),
        set: |p, v| {
            if !LAYOUTS.contains(&v) {
                return Err(format!("`{v}` is not a layout ({})", LAYOUTS.join(", ")));
            }
            p.layout = v.to_string();
            Ok(())
        },
    },
    ProfileKey {
        name: "video",
        doc: "Whether members send and receive video (the composed canvas).",
        get: |p| p.video.to_string(),
        set: |p, v| {
            p.video = parse_bool(v)?;
            Ok(())
        },
    },
    ProfileKey {
        name: "canvas",
        doc: "Size of the composed video every member receives, WIDTHxHEIGHT (even numbers, \
              64..4096).",
        get: |p| format!("{}x{}", p.canvas.0, p.canvas.1),
        set: |p, v| {
            let bad = || format!("`{v}` is not WIDTHxHEIGHT of even numbers in 64..4096");
            let (w, h) = v.split_once(['x', 'X']).ok_or_else(bad)?;
            let w: u32 = w.trim().parse().map_err(|_| bad())?;
            let h: u32 = h.trim().parse().map_err(|_| bad())?;
            if !(64..=4096).contains(&w) || !(64..=4096).contains(&h) || (w | h) & 1 != 0 {
                return Err(bad());
            }
            p.canvas = (w, h);
            Ok(())
        },
    },
    ProfileKey {
        name: "fps",
        doc: "Frames per second of the composed video (1..60).",
        get: |p| p.fps.to_string(),
        set: |p, v| {
            p.fps = v
                .parse()
                .ok()
                .filter(|f| (1..=60).contains(f))
                .ok_or_else(|| format!("`{v}` is not a frame rate in 1..60"))?;
            Ok(())
        },
    },
    ProfileKey {
        name: "video_bitrate",
        doc: "Most kbit/s one encoding of the composed video may use. Each encoding also stays \
              under the b=AS its viewers offered (cometVideoApi.js: 256) and their REMB/TWCC \
              estimates.",
        get: |p| p.video_bitrate.to_string(),
        set: |p, v| {
            p.video_bitrate = v
                .parse()
                .ok()
                .filter(|b| (64..=20_000).contains(b))
                .ok_or_else(|| format!("`{v}` is not a bitrate in 64..20000 kbit/s"))?;
            Ok(())
        },
    },
    ProfileKey {
        name: "stream",
        doc: "RTMP URL every conference of this profile is published to while it has members \
              (the composed canvas as H.264 and the mix as AAC; nginx-rtmp turns it into HLS and \
              DASH), for example rtmp://127.0.0.1:1935/cam1/{name}. `{name}` is replaced by the \
              conference name, `{dev}` by the dev_id. Empty: no broadcast. The `stream` column \
              of `INSERT INTO conference` sets it for one conference.",
        get: |p| p.stream.clone(),
        set: |p, v| {
            if !v.is_empty() {
                crate::broadcast::rtmp::RtmpUrl::parse(&crate::broadcast::expand_url(v, 0, "x"))?;
            }
            p.stream = v.to_string();
            Ok(())
        },
    },
    ProfileKey {
        name: "record",
        doc: "Whether conferences of this profile are recorded (canvas and mix; audio only for a \
              profile without video) to an MP4 file in [broadcast] record_dir named \
              <name>_<YYYYmmdd-HHMMSS>.mp4 (UTC start time).",
        get: |p| p.record.to_string(),
        set: |p, v| {
            p.record = parse_bool(v)?;
            Ok(())
        },
    },
];

/// A problem that stops start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line`, `command line` or `configuration`.
    pub at: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// One configuration key.
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    /// The default, as it would be written in `comet.ini`.
    pub default: &'static str,
    pub doc: &'static str,
    set: fn(&mut Config, &str) -> Result<(), String>,
}

fn parse_ip(v: &str) -> Result<IpAddr, String> {
    v.parse()
        .map_err(|_| format!("`{v}` is not an IP address (for example 127.0.0.1 or 0.0.0.0)"))
}

/// A port number; 0 asks the system for a free one (the banner shows which).
fn parse_port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| format!("`{v}` is not a port number (1-65535, or 0 for any free port)"))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "`{v}` is not a boolean (true/false, 1/0, yes/no, on/off)"
        )),
    }
}

/// `max_connections`: at least 1.
fn parse_max_connections(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{v}` is not a connection count (1 or more)")),
    }
}

/// `max_connections_per_ip`: 0 (no cap) or more.
/// Frames per second (`commands_per_second`, `messages_per_second`).
fn parse_rate(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!(
            "`{v}` is not a rate (frames per second, more than 0)"
        )),
    }
}

/// Frames at once (`command_burst`, `message_burst`).
fn parse_burst(v: &str) -> Result<f64, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n as f64),
        _ => Err(format!("`{v}` is not a frame count (1 or more)")),
    }
}

fn parse_auth_failures(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("`{v}` is not a count of failed logins (0 for no limit)"))
}

fn parse_per_ip(v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .map_err(|_| format!("`{v}` is not a connection count (0 for no per-address cap)"))
}

const MAX_CONNECTIONS_DOC: &str = "Connections this listener holds at once; beyond it a new \
     connection is refused (see README, Connection limits). Counts against the process's \
     open-file limit, which the server raises to the hard limit at start-up and checks.";
const AUTH_FAILURES_DOC: &str = "Failed logins one client address may have in a row on this \
     listener; beyond, its attempts are refused without being checked until its allowance \
     refills (all of it in 10 minutes). 0: no limit. Every client behind one address shares \
     its allowance: behind a reverse proxy or a NAT, and while old processes still use an old \
     key, one bad client locks the others out; set it on listeners exposed to the internet.";
const PER_IP_DOC: &str = "Connections one client address may hold at once on this listener \
     (an IPv6 client counts by its /64). 0: no per-address cap. Behind a reverse proxy every \
     client has the proxy's address: leave it 0 there.";

fn non_empty(v: &str, what: &str) -> Result<String, String> {
    if v.is_empty() {
        Err(format!("{what} must not be empty"))
    } else {
        Ok(v.to_string())
    }
}

/// Sets the certificate (`part` 0) or key (1) of a TLS pair; the pair is checked in `validate`.
fn set_tls_part(tls: &mut Option<(PathBuf, PathBuf)>, v: &str, part: usize) {
    let (mut cert, mut key) = tls.take().unwrap_or_default();
    if part == 0 {
        cert = PathBuf::from(v);
    } else {
        key = PathBuf::from(v);
    }
    if !(cert.as_os_str().is_empty() && key.as_os_str().is_empty()) {
        *tls = Some((cert, key));
    }
}

/// Every key we understand, in the order `comet.ini.example` documents them.
pub static KEYS: &[Key] = &[
    Key {
        section: "main",
        name: "password",
        default: DEFAULT_PASSWORD,
        doc: "The dev_key: the password of every CometQL login (any MySQL user name is a dev_id; \
              `root` means 0) and the HS256 secret of comet JWTs. Change it before listening on \
              anything but loopback: the server refuses to start otherwise.",
        set: |c, v| {
            c.password = non_empty(v, "the password")?;
            Ok(())
        },
    },
    Key {
        section: "main",
        name: "data_dir",
        default: "data",
        doc: "Directory for persistent state (the SQLite store). Relative paths are relative to \
              the working directory. Created if missing.",
        set: |c, v| {
            c.data_dir = PathBuf::from(non_empty(v, "data_dir")?);
            Ok(())
        },
    },
    Key {
        section: "main",
        name: "server_name",
        default: "comet-server",
        doc: "Name reported to browsers in the comet `serverInfo` frame.",
        set: |c, v| {
            c.server_name = non_empty(v, "server_name")?;
            Ok(())
        },
    },
    Key {
        section: "main",
        name: "tls_self_signed",
        default: "false",
        doc: "Quick local HTTPS/WSS: generate a self-signed certificate (kept in \
              data_dir/tls-self-signed/, made again when the names change) for localhost, \
              127.0.0.1, ::1, [sip] host and every listener address, and use it on each of the \
              http, ws and sip listeners that has no tls_cert of its own. Browsers warn once per \
              host; use real certificates (the tls_cert/tls_key keys) anywhere else. The flag \
              --tls-self-signed sets it.",
        set: |c, v| {
            c.tls_self_signed = parse_bool(v)?;
            Ok(())
        },
    },
    Key {
        section: "main",
        name: "drain_timeout",
        default: "1800",
        doc: "Seconds a draining server (SIGUSR1 or POST /admin/drain: no new conference \
              starts here, the running ones go on) waits for its last call to end before it \
              hangs up the rest and exits. 0: no limit.",
        set: |c, v| {
            c.drain_timeout = match v.parse::<u64>() {
                Ok(0) => None,
                Ok(s) => Some(std::time::Duration::from_secs(s)),
                Err(_) => return Err(format!("`{v}` is not a number of seconds")),
            };
            Ok(())
        },
    },
    Key {
        section: "cometql",
        name: "ip",
        default: "127.0.0.1",
        doc: "Address of the CometQL (MySQL protocol) listener.",
        set: |c, v| {
            c.cometql.ip = parse_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "cometql",
        name: "port",
        default: "3300",
        doc: "Port of the CometQL listener (CppComet's shipped comet.ini used 3307).",
        set: |c, v| {
            c.cometql.port = parse_port(v)?;
            Ok(())
        },
    },
    Key {
        section: "cometql",
        name: "max_connections",
        default: "1000",
        doc: MAX_CONNECTIONS_DOC,
        set: |c, v| {
            c.cometql_conns.max = parse_max_connections(v)?;
            Ok(())
        },
    },
    Key {
        section: "cometql",
        name: "max_connections_per_ip",
        default: "0",
        doc: PER_IP_DOC,
        set: |c, v| {
            c.cometql_conns.per_ip = parse_per_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "cometql",
        name: "max_auth_failures",
        default: "0",
        doc: AUTH_FAILURES_DOC,
        set: |c, v| {
            c.cometql_conns.auth_failures = parse_auth_failures(v)?;
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "ip",
        default: "127.0.0.1",
        doc: "Address of the comet WebSocket listener (browser events).",
        set: |c, v| {
            c.ws.ip = parse_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "port",
        default: "8087",
        doc: "Port of the comet WebSocket listener.",
        set: |c, v| {
            c.ws.port = parse_port(v)?;
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "tls_cert",
        default: "",
        doc: "PEM certificate chain for wss:// on the comet WebSocket listener (with tls_key). \
              Empty: plain ws://, meant for loopback or a TLS-terminating proxy.",
        set: |c, v| {
            set_tls_part(&mut c.ws_tls, v, 0);
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "tls_key",
        default: "",
        doc: "PEM private key for tls_cert.",
        set: |c, v| {
            set_tls_part(&mut c.ws_tls, v, 1);
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "max_connections",
        default: "10000",
        doc: MAX_CONNECTIONS_DOC,
        set: |c, v| {
            c.ws_conns.max = parse_max_connections(v)?;
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "max_connections_per_ip",
        default: "0",
        doc: PER_IP_DOC,
        set: |c, v| {
            c.ws_conns.per_ip = parse_per_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "max_auth_failures",
        default: "0",
        doc: AUTH_FAILURES_DOC,
        set: |c, v| {
            c.ws_conns.auth_failures = parse_auth_failures(v)?;
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "commands_per_second",
        default: "20",
        doc: "Frames one connection may send per second on average (subscriptions, web_pipe2, \
              pipe_log, ...). A connection that sends faster is not closed: the server reads \
              its next frame once the rate allows (metric comet_ws_throttled_total).",
        set: |c, v| {
            c.ws_commands.per_second = parse_rate(v)?;
            Ok(())
        },
    },
    Key {
        section: "ws",
        name: "command_burst",
        default: "100",
        doc: "Frames one connection may send at once before commands_per_second applies (a \
              page subscribing to its pipes when it opens).",
        set: |c, v| {
            c.ws_commands.burst = parse_burst(v)?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "ip",
        default: "127.0.0.1",
        doc: "Address of the SIP-over-WebSocket listener (JsSIP in the browser).",
        set: |c, v| {
            c.sip.ip = parse_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "port",
        default: "7443",
        doc: "Port of the SIP-over-WebSocket listener, announced to browsers as `serverPort`.",
        set: |c, v| {
            c.sip.port = parse_port(v)?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "host",
        default: "127.0.0.1",
        doc: "Host name announced to browsers as `serverName` (they connect to \
              wss://host:port) and used as the SIP digest realm.",
        set: |c, v| {
            c.sip_host = non_empty(v, "the SIP host")?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "pipesalt",
        default: "pipesalt",
        doc: "Salt mixed into the callPipe hash of every conference (keep it stable: browsers \
              of one conference must compute the same pipe).",
        set: |c, v| {
            c.pipesalt = v.to_string();
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "tls_cert",
        default: "",
        doc: "PEM certificate chain for wss:// on the SIP listener (with tls_key). Browsers on \
              https pages open only wss://. Empty: plain ws://, for loopback or a TLS proxy.",
        set: |c, v| {
            set_tls_part(&mut c.sip_tls, v, 0);
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "tls_key",
        default: "",
        doc: "PEM private key for the SIP tls_cert.",
        set: |c, v| {
            set_tls_part(&mut c.sip_tls, v, 1);
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "max_connections",
        default: "4000",
        doc: MAX_CONNECTIONS_DOC,
        set: |c, v| {
            c.sip_conns.max = parse_max_connections(v)?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "max_connections_per_ip",
        default: "0",
        doc: PER_IP_DOC,
        set: |c, v| {
            c.sip_conns.per_ip = parse_per_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "max_auth_failures",
        default: "0",
        doc: AUTH_FAILURES_DOC,
        set: |c, v| {
            c.sip_conns.auth_failures = parse_auth_failures(v)?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "messages_per_second",
        default: "20",
        doc: "SIP messages one connection may send per second on average (JsSIP sends a few a \
              minute, more while a call starts). A connection that sends faster is not \
              closed: the server reads its next message once the rate allows (metric \
              comet_sip_throttled_total).",
        set: |c, v| {
            c.sip_messages.per_second = parse_rate(v)?;
            Ok(())
        },
    },
    Key {
        section: "sip",
        name: "message_burst",
        default: "50",
        doc: "SIP messages one connection may send at once before messages_per_second applies.",
        set: |c, v| {
            c.sip_messages.burst = parse_burst(v)?;
            Ok(())
        },
    },
    Key {
        section: "media",
        name: "ip",
        default: "127.0.0.1",
        doc: "Address of the single UDP port that carries all WebRTC media.",
        set: |c, v| {
            c.media.ip = parse_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "media",
        name: "port",
        default: "10000",
        doc: "The UDP media port.",
        set: |c, v| {
            c.media.port = parse_port(v)?;
            Ok(())
        },
    },
    Key {
        section: "media",
        name: "announce_ip",
        default: "",
        doc: "Address announced in ICE candidates when it differs from `ip` (NAT, 0.0.0.0 \
              binds). Empty: announce `ip`.",
        set: |c, v| {
            c.media_announce_ip = if v.is_empty() {
                None
            } else {
                Some(parse_ip(v)?)
            };
            Ok(())
        },
    },
    Key {
        section: "media",
        name: "threads",
        default: "0",
        doc: "Threads that carry the WebRTC endpoint (ICE, DTLS, SRTP and the sends of every \
              participant; one more thread reads the socket and hands each datagram to the \
              thread of its participant). 0: one per four CPUs, at least 1 and at most 16. \
              One thread carries about 1000 audio participants on a current core.",
        set: |c, v| {
            c.media_threads = match v.parse::<usize>() {
                Ok(n) if n <= 64 => n,
                _ => return Err(format!("`{v}` is not a thread count (0-64)")),
            };
            Ok(())
        },
    },
    Key {
        section: "media",
        name: "max_talkers",
        default: "3",
        doc: "How many of the loudest talkers each conference mixes (everyone else is heard \
              when they become one of the loudest).",
        set: |c, v| {
            c.max_talkers = match v.parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => return Err(format!("`{v}` is not a talker count (1-64)")),
            };
            Ok(())
        },
    },
    Key {
        section: "media",
        name: "opus_complexity",
        default: "5",
        doc: "libopus complexity (0-10) of the mixes the server encodes. Encoding is most of \
              the CPU of small conferences (every talker gets its own N-1 mix): lower trades \
              a little quality for CPU (see benches/README.md). This is the most it uses: \
              while the mixing clock is short of time (ticks over 70 % of their 20 ms) the \
              server steps it down, and back up when the load has gone (metric \
              comet_audio_opus_complexity).",
        set: |c, v| {
            c.opus_complexity = match v.parse::<u8>() {
                Ok(n) if n <= 10 => n,
                _ => return Err(format!("`{v}` is not an Opus complexity (0-10)")),
            };
            Ok(())
        },
    },
    Key {
        section: "media",
        name: "opus_bitrate",
        default: "32",
        doc: "kbit/s of the Opus mixes sent to participants (cometVideoApi.js asks for 32).",
        set: |c, v| {
            c.opus_bitrate = match v.parse::<u32>() {
                Ok(n) if (6..=510).contains(&n) => n * 1000,
                _ => return Err(format!("`{v}` is not an Opus bitrate in kbit/s (6-510)")),
            };
            Ok(())
        },
    },
    Key {
        section: "broadcast",
        name: "record_dir",
        default: "",
        doc: "Directory of the recordings of profiles with `record = yes`. Empty: \
              <data_dir>/recordings. Created if missing.",
        set: |c, v| {
            c.record_dir = PathBuf::from(v);
            Ok(())
        },
    },
    Key {
        section: "broadcast",
        name: "video_bitrate",
        default: "1000",
        doc: "kbit/s of the H.264 canvas sent over RTMP and recorded.",
        set: |c, v| {
            c.broadcast_video_bitrate = match v.parse::<u32>() {
                Ok(n) if (100..=20_000).contains(&n) => n * 1000,
                _ => return Err(format!("`{v}` is not a bitrate in 100..20000 kbit/s")),
            };
            Ok(())
        },
    },
    Key {
        section: "broadcast",
        name: "keyframe_interval",
        default: "2",
        doc: "Seconds between keyframes of the broadcast's H.264 (0.5-10). HLS/DASH fragments \
              start on a keyframe, so this is the shortest fragment nginx-rtmp can cut: set \
              hls_fragment to it (1 with hls_fragment 1s gives the lowest stable HLS delay; \
              see README, Broadcast).",
        set: |c, v| {
            c.broadcast_keyframe_ms = match v.parse::<f64>() {
                Ok(s) if (0.5..=10.0).contains(&s) => (s * 1000.0).round() as u32,
                _ => {
                    return Err(format!(
                        "`{v}` is not a keyframe interval in 0.5..10 seconds"
                    ));
                }
            };
            Ok(())
        },
    },
    Key {
        section: "broadcast",
        name: "hls_url",
        default: "",
        doc: "The HLS playlist viewers of a broadcast open (where nginx-rtmp's hls_path is \
              served), `{name}` standing for the conference name, e.g. \
              http://127.0.0.1:8088/hls/{name}.m3u8. The demo page links to it. Empty: no link.",
        set: |c, v| {
            if !(v.is_empty() || v.starts_with("http://") || v.starts_with("https://")) {
                return Err(format!("`{v}` is not an http:// or https:// URL"));
            }
            c.hls_url = v.to_string();
            Ok(())
        },
    },
    Key {
        section: "broadcast",
        name: "audio_bitrate",
        default: "128",
        doc: "kbit/s of the AAC mix sent over RTMP and recorded.",
        set: |c, v| {
            c.broadcast_audio_bitrate = match v.parse::<u32>() {
                Ok(n) if (32..=320).contains(&n) => n * 1000,
                _ => return Err(format!("`{v}` is not a bitrate in 32..320 kbit/s")),
            };
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "ip",
        default: "127.0.0.1",
        doc: "Address of the HTTP listener (demo page, JS API, metrics).",
        set: |c, v| {
            c.http.ip = parse_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "port",
        default: "8080",
        doc: "Port of the HTTP listener.",
        set: |c, v| {
            c.http.port = parse_port(v)?;
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "enabled",
        default: "true",
        doc: "Serve the HTTP listener at all.",
        set: |c, v| {
            c.http_enabled = parse_bool(v)?;
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "demo",
        default: "auto",
        doc: "The demo page at / (pick a room and a user id, join a conference from two tabs) and \
              its backend endpoint /demo/api/, which creates users and invites them the way a \
              customer's backend does (CometQL statements as dev 0). `auto`: on when [http] ip \
              is loopback, off otherwise. `true`: on anywhere (anyone who reaches the listener \
              can create demo users and join demo rooms; it never touches users or rooms that \
              are not the demo's). `false`: off.",
        set: |c, v| {
            c.http_demo = match v.to_ascii_lowercase().as_str() {
                "auto" => DemoMode::Auto,
                _ => {
                    if parse_bool(v).map_err(|_| format!("`{v}` is not auto, true or false"))? {
                        DemoMode::On
                    } else {
                        DemoMode::Off
                    }
                }
            };
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "tls_cert",
        default: "",
        doc: "PEM certificate chain for https:// on the HTTP listener (with tls_key). Browsers \
              allow camera and microphone only on https pages or on localhost. Empty: plain \
              http://.",
        set: |c, v| {
            set_tls_part(&mut c.http_tls, v, 0);
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "tls_key",
        default: "",
        doc: "PEM private key for the HTTP tls_cert.",
        set: |c, v| {
            set_tls_part(&mut c.http_tls, v, 1);
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "metrics_token",
        default: "",
        doc: "Bearer token that lets non-loopback clients read /metrics (Prometheus text format). \
              Empty: /metrics answers loopback only.",
        set: |c, v| {
            c.metrics_token = (!v.is_empty()).then(|| v.to_string());
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "max_connections",
        default: "4000",
        doc: MAX_CONNECTIONS_DOC,
        set: |c, v| {
            c.http_conns.max = parse_max_connections(v)?;
            Ok(())
        },
    },
    Key {
        section: "http",
        name: "max_connections_per_ip",
        default: "0",
        doc: PER_IP_DOC,
        set: |c, v| {
            c.http_conns.per_ip = parse_per_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "store",
        name: "backend",
        default: "sqlite",
        doc: "`sqlite`: persistent store in data_dir (comet.sqlite3, WAL). `memory`: nothing \
              survives a restart (tests).",
        set: |c, v| {
            c.store_backend = match v {
                "sqlite" => StoreBackend::Sqlite,
                "memory" => StoreBackend::Memory,
                _ => return Err(format!("`{v}` is not a store backend (sqlite or memory)")),
            };
            Ok(())
        },
    },
    Key {
        section: "store",
        name: "sync",
        default: "full",
        doc: "`full`: an acknowledged write survives a power cut (fsync per commit; concurrent \
              writes share one fsync). `normal`: survives a process crash only.",
        set: |c, v| {
            c.store_sync = match v {
                "full" => SyncMode::Full,
                "normal" => SyncMode::Normal,
                _ => return Err(format!("`{v}` is not a sync mode (full or normal)")),
            };
            Ok(())
        },
    },
    Key {
        section: "log",
        name: "level",
        default: "info",
        doc: "Log filter (tracing EnvFilter syntax, e.g. `info` or `comet_server=debug`). The \
              RUST_LOG environment variable overrides it.",
        set: |c, v| {
            c.log_level = non_empty(v, "the log level")?;
            Ok(())
        },
    },
    Key {
        section: "log",
        name: "format",
        default: "text",
        doc: "`text`: human-readable lines. `json`: one JSON object per line (timestamp, \
              level, target, message and the event's fields) for log collectors.",
        set: |c, v| {
            c.log_format = match v {
                "text" => crate::logging::LogFormat::Text,
                "json" => crate::logging::LogFormat::Json,
                _ => return Err(format!("`{v}` is not a log format (text or json)")),
            };
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "secret",
        default: "",
        doc: "Shared by a head and its media nodes (at least 16 characters): a media node \
              presents it to the head. Empty: no cluster, this process does everything. With a \
              secret and no `head`, this process is a head: it keeps CometQL, the comet \
              WebSocket and the store, and sends each conference to a media node (the \
              sys_sipCall event tells browsers which node to call). See README, Cluster.",
        set: |c, v| {
            c.cluster.secret = v.to_string();
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "ip",
        default: "127.0.0.1",
        doc: "On a head: address of the listener media nodes connect to. The link is a \
              WebSocket authenticated by the secret: without tls_cert keep it on a private \
              network.",
        set: |c, v| {
            c.cluster.listen.ip = parse_ip(v)?;
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "port",
        default: "7445",
        doc: "On a head: port of the listener media nodes connect to.",
        set: |c, v| {
            c.cluster.listen.port = parse_port(v)?;
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "tls_cert",
        default: "",
        doc: "On a head: PEM certificate chain for the media nodes' link (with tls_key); nodes \
              then use a wss:// head URL. SIGHUP reloads it. Empty: plain ws://, for a private \
              network.",
        set: |c, v| {
            set_tls_part(&mut c.cluster.tls, v, 0);
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "tls_key",
        default: "",
        doc: "On a head: PEM private key for the cluster tls_cert.",
        set: |c, v| {
            set_tls_part(&mut c.cluster.tls, v, 1);
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "local_media",
        default: "true",
        doc: "On a head: whether it runs conferences itself too, as one more media node. false: \
              conferences go only to media nodes (an INSERT INTO conference while none is \
              connected is refused with error 500).",
        set: |c, v| {
            c.cluster.local_media = parse_bool(v)?;
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "head",
        default: "",
        doc: "On a media node: the head's cluster listener, host:port (or a ws:// or wss:// \
              URL). The node reads users and invitations from the head and reports who is in \
              its conferences; browsers reach its [sip] host and port, so set those to what \
              they can reach. Empty: not a media node.",
        set: |c, v| {
            c.cluster.head = v.to_string();
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "head_ca",
        default: "",
        doc: "On a media node whose head URL is wss://: PEM certificates to trust for the head \
              (its own certificate, or a private CA). Empty: the system's trusted roots.",
        set: |c, v| {
            c.cluster.head_ca = (!v.is_empty()).then(|| PathBuf::from(v));
            Ok(())
        },
    },
    Key {
        section: "cluster",
        name: "name",
        default: "",
        doc: "On a media node: its name among the head's nodes (unique). Empty: its [sip] \
              host:port.",
        set: |c, v| {
            c.cluster.name = v.to_string();
            Ok(())
        },
    },
];

/// CppComet settings that have no meaning here: accepted, reported once, ignored.
static LEGACY_KEYS: &[(&str, &str)] = &[
    ("main", "host"),
    ("main", "node_name"),
    ("main", "buf_size"),
    ("main", "fd_limit"),
    ("main", "usequeryloger"),
    ("main", "base_dir"),
    ("ws", "thread_num"),
    ("ws", "statistics"),
    ("ws", "uptimetestinterval"),
    ("ws", "maxuptime"),
    ("ws", "host"),
    ("ws", "backlog"),
    ("ws", "epoll_size"),
    ("cometql", "thread_num"),
    ("cometql", "statistics"),
    ("cometql", "uptimetestinterval"),
    ("cometql", "maxuptime"),
    ("cometql", "backlog"),
    ("cometql", "epoll_size"),
    ("sip", "freeswitch"),
    ("sip", "cometql"),
];

/// Whole CppComet sections with no meaning here (MySQL backend, FreeSWITCH directory, ...).
static LEGACY_SECTIONS: &[&str] = &[
    "db",
    "freeswitch",
    "content-type",
    "statistics",
    "benchmark",
    "ws-dev",
    "cometql-dev",
];

impl Default for Config {
    /// The embedded default configuration: every listener on 127.0.0.1.
    fn default() -> Self {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let mut c = Config {
            password: String::new(),
            data_dir: PathBuf::new(),
            server_name: String::new(),
            cometql: Listen {
                ip: loopback,
                port: 1,
            },
            ws: Listen {
                ip: loopback,
                port: 1,
            },
            ws_tls: None,
            sip: Listen {
                ip: loopback,
                port: 1,
            },
            sip_host: String::new(),
            pipesalt: String::new(),
            media: Listen {
                ip: loopback,
                port: 1,
            },
            media_announce_ip: None,
            sip_tls: None,
            media_threads: 0,
            max_talkers: 3,
            opus_complexity: 5,
            opus_bitrate: 32_000,
            http: Listen {
                ip: loopback,
                port: 1,
            },
            http_enabled: true,
            http_tls: None,
            http_demo: DemoMode::Auto,
            tls_self_signed: false,
            drain_timeout: Some(std::time::Duration::from_secs(1800)),
            metrics_token: None,
            store_backend: StoreBackend::Sqlite,
            store_sync: SyncMode::Full,
            log_level: String::new(),
            log_format: crate::logging::LogFormat::Text,
            profiles: builtin_profiles(),
            record_dir: PathBuf::new(),
            hls_url: String::new(),
            broadcast_video_bitrate: 0,
            broadcast_audio_bitrate: 0,
            broadcast_keyframe_ms: 0,
            cometql_conns: ConnLimits {
                max: 1,
                per_ip: 0,
                auth_failures: 0,
            },
            ws_conns: ConnLimits {
                max: 1,
                per_ip: 0,
                auth_failures: 0,
            },
            ws_commands: CommandRate {
                per_second: 1.0,
                burst: 1.0,
            },
            sip_conns: ConnLimits {
                max: 1,
                per_ip: 0,
                auth_failures: 0,
            },
            sip_messages: CommandRate {
                per_second: 1.0,
                burst: 1.0,
            },
            http_conns: ConnLimits {
                max: 1,
                per_ip: 0,
                auth_failures: 0,
            },
            cluster: ClusterConfig {
                secret: String::new(),
                listen: Listen {
                    ip: loopback,
                    port: 1,
                },
                head: String::new(),
                name: String::new(),
                local_media: true,
                tls: None,
                head_ca: None,
            },
        };
        for k in KEYS {
            // The defaults are part of the key table; a bad one is a programming error caught by
            // the `defaults_parse` test, so fall back silently here rather than panic.
            let _ = (k.set)(&mut c, k.default);
        }
        c
    }
}

/// What loading produced besides the configuration: things to log once logging is up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Unknown keys and sections, with `file:line`.
    pub warnings: Vec<String>,
    /// CppComet keys that are accepted and ignored.
    pub ignored: Vec<String>,
}

/// One override from the command line, `section.key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub section: String,
    pub key: String,
    pub value: String,
}

impl Override {
    /// Parses `section.key=value`. The key is what follows the last dot, so a section name may
    /// have dots of its own: `profile.audio.max_duration=60` is `[profile.audio] max_duration`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (path, value) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected section.key=value"))?;
        let (section, key) = path
            .trim()
            .rsplit_once('.')
            .filter(|(section, key)| !section.trim().is_empty() && !key.trim().is_empty())
            .ok_or_else(|| format!("`{s}`: expected section.key=value"))?;
        Ok(Override {
            section: section.trim().to_ascii_lowercase(),
            key: key.trim().to_ascii_lowercase(),
            value: value.trim().to_string(),
        })
    }
}

/// For a `profile.<name>` (or `profile:<name>`) section: its profile name, or why the name is
/// not one. `None` for every other section.
fn profile_section(section: &str) -> Option<Result<&str, String>> {
    let name = section
        .strip_prefix("profile.")
        .or_else(|| section.strip_prefix("profile:"))?;
    Some(if crate::names::is_conference_name(name) {
        Ok(name)
    } else {
        Err("a profile name is 1-64 characters of A-Za-z0-9_-".into())
    })
}

fn find_key(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

impl Config {
    /// Defaults, then the INI text (if any, named `origin` in messages), then overrides.
    pub fn load(
        ini_text: Option<(&str, &str)>,
        overrides: &[Override],
    ) -> Result<(Config, LoadReport), ConfigError> {
        let mut c = Config::default();
        let mut report = LoadReport::default();
        if let Some((origin, text)) = ini_text {
            let entries = ini::parse(text).map_err(|e| ConfigError {
                at: format!("{origin}:{}", e.line),
                message: format!("not an INI line: `{}`", e.text.trim()),
            })?;
            for e in entries {
                let at = format!("{origin}:{}", e.line);
                if let Some(name) = profile_section(&e.section) {
                    let name = name.map_err(|m| ConfigError {
                        at: at.clone(),
                        message: format!("[{}]: {m}", e.section),
                    })?;
                    let known =
                        c.set_profile_key(name, &e.key, &e.value)
                            .map_err(|m| ConfigError {
                                at: at.clone(),
                                message: format!("[{}] {}: {m}", e.section, e.key),
                            })?;
                    if !known {
                        report.warnings.push(format!(
                            "{at}: unknown key [{}] {} (ignored)",
                            e.section, e.key
                        ));
                    }
                } else if let Some(k) = find_key(&e.section, &e.key) {
                    (k.set)(&mut c, &e.value).map_err(|m| ConfigError {
                        at,
                        message: format!("[{}] {}: {m}", e.section, e.key),
                    })?;
                } else if LEGACY_SECTIONS.contains(&e.section.as_str())
                    || LEGACY_KEYS.contains(&(e.section.as_str(), e.key.as_str()))
                {
                    report.ignored.push(format!(
                        "{at}: [{}] {} is a CppComet/FreeSWITCH setting with no effect here",
                        e.section, e.key
                    ));
                } else {
                    report.warnings.push(format!(
                        "{at}: unknown key [{}] {} (ignored)",
                        e.section, e.key
                    ));
                }
            }
        }
        for o in overrides {
            if let Some(name) = profile_section(&o.section) {
                let cli = |m: String| ConfigError {
                    at: "command line".into(),
                    message: format!("{}.{}: {m}", o.section, o.key),
                };
                let known = c
                    .set_profile_key(name.map_err(cli)?, &o.key, &o.value)
                    .map_err(cli)?;
                if !known {
                    return Err(ConfigError {
                        at: "command line".into(),
                        message: format!(
                            "unknown setting {}.{} (a profile has {})",
                            o.section,
                            o.key,
                            PROFILE_KEYS
                                .iter()
                                .map(|k| k.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                continue;
            }
            let k = find_key(&o.section, &o.key).ok_or_else(|| ConfigError {
                at: "command line".into(),
                message: format!("unknown setting {}.{}", o.section, o.key),
            })?;
            (k.set)(&mut c, &o.value).map_err(|m| ConfigError {
                at: "command line".into(),
                message: format!("{}.{}: {m}", o.section, o.key),
            })?;
        }
        c.validate()?;
        Ok((c, report))
    }

    /// Sets one key of profile `name` (`[profile.<name>]` in comet.ini, `--set
    /// profile.<name>.<key>=<value>`), creating the profile if it is new. `Ok(false)`: no such
    /// key. The name must have been checked ([`profile_section`]).
    fn set_profile_key(&mut self, name: &str, key: &str, value: &str) -> Result<bool, String> {
        let Some(k) = PROFILE_KEYS.iter().find(|k| k.name == key) else {
            return Ok(false);
        };
        let profile = self
            .profiles
            .entry(name.to_string())
            .or_insert_with(|| Profile::builtin(name).unwrap_or_else(|| Profile::new(true)));
        (k.set)(profile, value)?;
        Ok(true)
    }

    /// Loads `path` (or only defaults when `None`) and applies overrides.
    pub fn load_file(
        path: Option<&Path>,
        overrides: &[Override],
    ) -> Result<(Config, LoadReport), ConfigError> {
        match path {
            None => Config::load(None, overrides),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    at: p.display().to_string(),
                    message: format!("cannot read the configuration file: {e}"),
                })?;
                Config::load(Some((&p.display().to_string(), &text)), overrides)
            }
        }
    }

    /// Cross-key rules.
    /// Where recordings go: `[broadcast] record_dir`, or `<data_dir>/recordings`.
    pub fn recordings_dir(&self) -> PathBuf {
        if self.record_dir.as_os_str().is_empty() {
            self.data_dir.join("recordings")
        } else {
            self.record_dir.clone()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (section, tls) in [
            ("ws", &self.ws_tls),
            ("sip", &self.sip_tls),
            ("http", &self.http_tls),
            ("cluster", &self.cluster.tls),
        ] {
            if let Some((cert, key)) = tls
                && (cert.as_os_str().is_empty() || key.as_os_str().is_empty())
            {
                return Err(ConfigError {
                    at: "configuration".into(),
                    message: format!("[{section}] tls_cert and tls_key must be set together"),
                });
            }
        }
        let listeners = [
            ("cometql", self.cometql),
            ("ws", self.ws),
            ("sip", self.sip),
            ("media", self.media),
            ("http", self.http),
        ];
        if self.password == DEFAULT_PASSWORD
            && let Some((name, l)) = listeners.iter().find(|(_, l)| !l.ip.is_loopback())
        {
            return Err(ConfigError {
                at: "configuration".into(),
                message: format!(
                    "[{name}] listens on {l}, which is not loopback, while [main] password is \
                         still the public default; set a private password first"
                ),
            });
        }
        let cluster = &self.cluster;
        if cluster.role() != ClusterRole::Single && cluster.secret.chars().count() < 16 {
            return Err(ConfigError {
                at: "configuration".into(),
                message: "[cluster] secret must have at least 16 characters".into(),
            });
        }
        if !cluster.head.is_empty() && cluster.secret.is_empty() {
            return Err(ConfigError {
                at: "configuration".into(),
                message: "[cluster] head is set but [cluster] secret is empty: a media node \
                          needs the head's secret"
                    .into(),
            });
        }
        let mut listeners = listeners.to_vec();
        if cluster.role() == ClusterRole::Head {
            listeners.push(("cluster", cluster.listen));
        }
        let tcp: Vec<_> = listeners
            .iter()
            .filter(|(n, _)| *n != "media" && (*n != "http" || self.http_enabled))
            .collect();
        for (i, (a, la)) in tcp.iter().enumerate() {
            for (b, lb) in &tcp[i + 1..] {
                let same_ip = la.ip == lb.ip || la.ip.is_unspecified() || lb.ip.is_unspecified();
                if la.port != 0 && la.port == lb.port && same_ip {
                    return Err(ConfigError {
                        at: "configuration".into(),
                        message: format!("[{a}] and [{b}] both want TCP {la}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the HTTP listener serves the demo (see [`DemoMode`]). Never on a cluster's
    /// media node: its CometQL is not the cluster's.
    pub fn demo_enabled(&self) -> bool {
        self.http_enabled
            && self.cluster.role() != ClusterRole::Node
            && match self.http_demo {
                DemoMode::On => true,
                DemoMode::Off => false,
                DemoMode::Auto => self.http.ip.is_loopback(),
            }
    }

    /// The threads that carry the WebRTC endpoint on a machine of `cpus` CPUs: `[media]
    /// threads`, or for 0 one per four CPUs (1 to 16).
    pub fn media_threads(&self, cpus: usize) -> usize {
        match self.media_threads {
            0 => (cpus / 4).clamp(1, 16),
            n => n,
        }
    }

    /// The address put into ICE candidates.
    pub fn media_announce(&self) -> IpAddr {
        self.media_announce_ip.unwrap_or(self.media.ip)
    }

    /// The media node string stored in `conference.node`: `<sip host>:<sip port>`.
    pub fn node(&self) -> String {
        format!("{}:{}", self.sip_host, self.sip.port)
    }

    /// The `comet.ini.example` text generated from [`KEYS`].
    pub fn example_ini() -> String {
        let mut out = String::from(
            "; comet-server configuration. Every key is optional: the values shown are the\n\
             ; embedded defaults. Command-line flags override this file (see --help).\n\
             ; CppComet keys with no meaning here (e.g. [db], [freeswitch], thread_num) are\n\
             ; accepted and ignored, so an existing comet.ini works unchanged. As in CppComet, `;`\n\
             ; or `#` starts a comment anywhere; double-quote a value that contains them.\n",
        );
        let mut section = "";
        for k in KEYS {
            if k.section != section {
                section = k.section;
                out.push_str(&format!("\n[{section}]\n"));
            }
            for line in wrap(k.doc, 94) {
                out.push_str("; ");
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str(&format!("{} = {}\n", k.name, k.default));
        }
        out.push_str(
            "\n; Conference profiles: a conference dialled as <dev>*<name>*<profile> gets its\n\
             ; profile's settings. default, audio and video are built in (shown with their\n\
             ; values); a [profile.<name>] section of another name defines a new profile that\n\
             ; INSERT INTO conference (..., profile) may use.\n",
        );
        for (name, p) in builtin_profiles() {
            out.push_str(&format!("\n[profile.{name}]\n"));
            for k in PROFILE_KEYS {
                for line in wrap(k.doc, 94) {
                    out.push_str("; ");
                    out.push_str(&line);
                    out.push('\n');
                }
                out.push_str(&format!("{} = {}\n", k.name, (k.get)(&p)));
            }
        }
        out
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for w in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + w.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let mut c = Config::default();
        for k in KEYS {
            assert_eq!(
                (k.set)(&mut c, k.default),
                Ok(()),
                "[{}] {}",
                k.section,
                k.name
            );
        }
        let c = Config::default();
        assert_eq!(c.cometql.port, 3300);
        assert!(c.cometql.ip.is_loopback());
        assert!(c.ws.ip.is_loopback() && c.sip.ip.is_loopback() && c.http.ip.is_loopback());
        assert_eq!(c.node(), "127.0.0.1:7443");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn file_overrides_defaults_and_flags_override_file() {
        let ini = "[cometql]\nport = 3307\n[ws]\nport = 9000\n";
        let (c, r) = Config::load(Some(("comet.ini", ini)), &[]).unwrap();
        assert_eq!(c.cometql.port, 3307);
        assert_eq!(c.ws.port, 9000);
        assert!(r.warnings.is_empty());
        let o = [Override::parse("cometql.port=4000").unwrap()];
        let (c, _) = Config::load(Some(("comet.ini", ini)), &o).unwrap();
        assert_eq!(c.cometql.port, 4000);
        assert_eq!(c.ws.port, 9000);
    }

    #[test]
    fn unknown_keys_warn_with_file_and_line() {
        let ini = "[main]\npassword = x\n\n[cometql]\nprot = 1\n[bogus]\na = b\n";
        let (_, r) = Config::load(Some(("/etc/comet.ini", ini)), &[]).unwrap();
        assert_eq!(r.warnings.len(), 2);
        assert!(
            r.warnings[0].starts_with("/etc/comet.ini:5:"),
            "{:?}",
            r.warnings
        );
        assert!(r.warnings[0].contains("[cometql] prot"));
        assert!(r.warnings[1].starts_with("/etc/comet.ini:7:"));
    }

    #[test]
    fn cppcomet_keys_are_ignored_not_warned() {
        let ini = "[db]\nhost = localhost\n[ws]\nthread_num = 4\n[sip]\nfreeswitch = []Server=a\n";
        let (_, r) = Config::load(Some(("comet.ini", ini)), &[]).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.ignored.len(), 3);
    }

    #[test]
    fn invalid_values_stop_with_a_clear_message() {
        let e = Config::load(Some(("c.ini", "[ws]\nport = 70000\n")), &[]).unwrap_err();
        assert_eq!(e.at, "c.ini:2");
        assert!(
            e.message.contains("[ws] port") && e.message.contains("70000"),
            "{e}"
        );
        let e = Config::load(Some(("c.ini", "[cometql]\nip = localhost\n")), &[]).unwrap_err();
        assert!(e.message.contains("not an IP address"), "{e}");
        let e = Config::load(Some(("c.ini", "[main]\nnot ini\n")), &[]).unwrap_err();
        assert_eq!(e.at, "c.ini:2");
        let e = Config::load(None, &[Override::parse("nope.key=1").unwrap()]).unwrap_err();
        assert_eq!(e.at, "command line");
        for bad in [
            "media.opus_complexity=11",
            "media.opus_bitrate=5",
            "media.opus_bitrate=x",
        ] {
            let e = Config::load(None, &[Override::parse(bad).unwrap()]).unwrap_err();
            assert!(e.message.contains("Opus"), "{bad}: {e}");
        }
        for bad in [
            "ws.max_connections=0",
            "sip.max_connections=-1",
            "http.max_connections_per_ip=many",
        ] {
            let e = Config::load(None, &[Override::parse(bad).unwrap()]).unwrap_err();
            assert!(e.message.contains("connection count"), "{bad}: {e}");
        }
        let (c, _) = Config::load(
            None,
            &[
                Override::parse("cometql.max_connections=7").unwrap(),
                Override::parse("cometql.max_connections_per_ip=3").unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(
            c.cometql_conns,
            ConnLimits {
                max: 7,
                per_ip: 3,
                auth_failures: 0
            }
        );
        assert_eq!(
            c.ws_conns,
            ConnLimits {
                max: 10_000,
                per_ip: 0,
                auth_failures: 0
            }
        );
    }

    #[test]
    fn drain_timeout_is_seconds_or_none() {
        use std::time::Duration;
        let set = |kv: &str| Config::load(None, &[Override::parse(kv).unwrap()]);
        assert_eq!(
            Config::default().drain_timeout,
            Some(Duration::from_secs(1800))
        );
        assert_eq!(set("main.drain_timeout=0").unwrap().0.drain_timeout, None);
        assert_eq!(
            set("main.drain_timeout=90").unwrap().0.drain_timeout,
            Some(Duration::from_secs(90))
        );
        let e = set("main.drain_timeout=soon").unwrap_err();
        assert!(e.message.contains("seconds"), "{e}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        use crate::logging::LogFormat;
        let set = |kv: &str| Config::load(None, &[Override::parse(kv).unwrap()]);
        assert_eq!(Config::default().log_format, LogFormat::Text);
        assert_eq!(
            set("log.format=json").unwrap().0.log_format,
            LogFormat::Json
        );
        assert_eq!(
            set("log.format=text").unwrap().0.log_format,
            LogFormat::Text
        );
        let e = set("log.format=xml").unwrap_err();
        assert!(e.message.contains("log format"), "{e}");
    }

    #[test]
    fn media_threads_follow_the_cpus_unless_set() {
        let mut c = Config::default();
        assert_eq!(c.media_threads, 0);
        let auto: Vec<usize> = [1, 2, 4, 8, 16, 64, 128].map(|n| c.media_threads(n)).into();
        assert_eq!(auto, [1, 1, 1, 2, 4, 16, 16]);
        let set = |kv: &str| Config::load(None, &[Override::parse(kv).unwrap()]);
        c = set("media.threads=3").unwrap().0;
        assert_eq!((c.media_threads(2), c.media_threads(64)), (3, 3));
        for bad in ["media.threads=65", "media.threads=two"] {
            let e = set(bad).unwrap_err();
            assert!(e.message.contains("thread count"), "{bad}: {e}");
        }
    }

    #[test]
    fn opus_settings() {
        let (c, _) = Config::load(None, &[]).unwrap();
        assert_eq!((c.opus_complexity, c.opus_bitrate), (5, 32_000));
        let (c, _) = Config::load(
            Some(("c.ini", "[media]\nopus_complexity = 2\nopus_bitrate = 24\n")),
            &[],
        )
        .unwrap();
        assert_eq!((c.opus_complexity, c.opus_bitrate), (2, 24_000));
    }

    #[test]
    fn default_password_refuses_public_listeners() {
        let e = Config::load(Some(("c.ini", "[cometql]\nip = 0.0.0.0\n")), &[]).unwrap_err();
        assert!(e.message.contains("password"), "{e}");
        let ini = "[main]\npassword = s3cret\n[cometql]\nip = 0.0.0.0\n";
        assert!(Config::load(Some(("c.ini", ini)), &[]).is_ok());
    }

    #[test]
    fn profiles_builtin_changed_and_new() {
        let ini = "[profile.audio]\nmax_duration = 60\n[profile.webinar]\nlayout = presenter\nvideo = yes\nfoo = 1\n";
        let (c, r) = Config::load(Some(("c.ini", ini)), &[]).unwrap();
        assert_eq!(c.profiles["audio"].max_duration, 60);
        assert!(!c.profiles["audio"].video);
        assert_eq!(c.profiles["webinar"].layout, "presenter");
        assert!(c.profiles["video"].video);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].starts_with("c.ini:6:"), "{:?}", r.warnings);
        let e =
            Config::load(Some(("c.ini", "[profile.video]\nlayout = mosaic\n")), &[]).unwrap_err();
        assert_eq!(e.at, "c.ini:2");
        let e = Config::load(Some(("c.ini", "[profile.bad*name]\nvideo = no\n")), &[]).unwrap_err();
        assert!(e.message.contains("profile name"), "{e}");
    }

    #[test]
    fn profile_keys_from_the_command_line() {
        let o = Override::parse("profile.audio.max_duration=2").unwrap();
        assert_eq!(
            (o.section.as_str(), o.key.as_str(), o.value.as_str()),
            ("profile.audio", "max_duration", "2")
        );
        let dotted = Override::parse("main.password=a.b=c").unwrap();
        assert_eq!(
            (dotted.section.as_str(), dotted.key.as_str()),
            ("main", "password")
        );
        assert_eq!(dotted.value, "a.b=c");
        for bad in ["password=x", ".password=x", "main.=x", "main.password"] {
            assert!(Override::parse(bad).is_err(), "{bad}");
        }
        // Flags override the file, key by key.
        let ini = "[profile.audio]\nmax_duration = 600\n";
        let (c, _) = Config::load(Some(("c.ini", ini)), &[o]).unwrap();
        assert_eq!(c.profiles["audio"].max_duration, 2);
        assert!(
            !c.profiles["audio"].video,
            "the other keys keep their values"
        );
        // A new profile from flags alone, as a [profile.<name>] section would make it.
        let flags = [
            "profile.lecture.video=no",
            "profile:lecture.max_duration=90",
        ]
        .map(|f| Override::parse(f).unwrap());
        let (c, _) = Config::load(None, &flags).unwrap();
        assert_eq!(c.profiles["lecture"].max_duration, 90);
        assert!(!c.profiles["lecture"].video);
        assert_eq!(c.profiles["lecture"].layout, "active-speaker");
        // Mistakes stop start-up and say what is wrong.
        for (flag, says) in [
            (
                "profile.audio.max_len=2",
                "unknown setting profile.audio.max_len",
            ),
            ("profile.audio.max_duration=soon", "not a number of seconds"),
            ("profile.bad*name.video=no", "profile name"),
            ("profile.video.layout=mosaic", "not a layout"),
        ] {
            let e = Config::load(None, &[Override::parse(flag).unwrap()]).unwrap_err();
            assert_eq!(e.at, "command line", "{flag}");
            assert!(e.message.contains(says), "{flag}: {e}");
        }
    }

    #[test]
    fn demo_is_on_for_loopback_unless_turned_off() {
        let (c, _) = Config::load(None, &[]).unwrap();
        assert_eq!(c.http_demo, DemoMode::Auto);
        assert!(c.demo_enabled(), "on in the embedded default configuration");
        let (c, _) = Config::load(Some(("c.ini", "[http]\ndemo = false\n")), &[]).unwrap();
        assert!(!c.demo_enabled(), "a config file turns it off");
        let public = "[main]\npassword = s3cret\n[http]\nip = 0.0.0.0\n";
        let (c, _) = Config::load(Some(("c.ini", public)), &[]).unwrap();
        assert!(!c.demo_enabled(), "auto: off on a public listener");
        let ini = format!("{public}demo = true\n");
        let (c, _) = Config::load(Some(("c.ini", &ini)), &[]).unwrap();
        assert!(c.demo_enabled(), "explicitly on");
        let (c, _) = Config::load(Some(("c.ini", "[http]\nenabled = no\n")), &[]).unwrap();
        assert!(!c.demo_enabled(), "no HTTP listener, no demo");
        let node =
            "[cluster]\nsecret = 0123456789abcdef\nhead = 10.0.0.1:7445\n[http]\ndemo = true\n";
        let (c, _) = Config::load(Some(("c.ini", node)), &[]).unwrap();
        assert!(!c.demo_enabled(), "a media node has no demo");
        let e = Config::load(Some(("c.ini", "[http]\ndemo = maybe\n")), &[]).unwrap_err();
        assert!(e.message.contains("auto, true or false"), "{e}");
    }

    #[test]
    fn http_tls_pair_and_self_signed() {
        let e = Config::load(Some(("c.ini", "[http]\ntls_cert = a.pem\n")), &[]).unwrap_err();
        assert!(e.message.contains("[http] tls_cert and tls_key"), "{e}");
        let o = [Override::parse("main.tls_self_signed=true").unwrap()];
        let (c, _) = Config::load(None, &o).unwrap();
        assert!(c.tls_self_signed);
    }

    #[test]
    fn profile_canvas_fps_and_bitrate() {
        let ini = "[profile.hd]\ncanvas = 1280x720\nfps = 25\nvideo_bitrate = 2500\n";
        let (c, _) = Config::load(Some(("c.ini", ini)), &[]).unwrap();
        let hd = &c.profiles["hd"];
        assert_eq!(
            (hd.canvas, hd.fps, hd.video_bitrate),
            ((1280, 720), 25, 2500)
        );
        let v = &c.profiles["video"];
        assert_eq!((v.canvas, v.fps, v.video_bitrate), ((640, 360), 30, 1500));
        for bad in [
            "canvas = 641x360",
            "canvas = 640",
            "canvas = 32x32",
            "fps = 0",
            "fps = 61",
            "video_bitrate = 10",
        ] {
            let ini = format!("[profile.video]\n{bad}\n");
            let e = Config::load(Some(("c.ini", &ini)), &[]).unwrap_err();
            assert_eq!(e.at, "c.ini:2", "{bad}: {e}");
        }
    }

    #[test]
    fn port_clash_is_refused() {
        let e = Config::load(Some(("c.ini", "[ws]\nport = 3300\n")), &[]).unwrap_err();
        assert!(e.message.contains("[cometql] and [ws]"), "{e}");
    }

    #[test]
    fn shipped_example_documents_every_key_and_loads_cleanly() {
        let shipped = include_str!("../../comet.ini.example");
        assert_eq!(
            shipped,
            Config::example_ini(),
            "comet.ini.example is out of date: regenerate it with `comet-server --print-example-config > comet.ini.example`"
        );
        let (c, r) = Config::load(Some(("comet.ini.example", shipped)), &[]).unwrap();
        assert!(r.warnings.is_empty() && r.ignored.is_empty());
        assert_eq!(c.cometql, Config::default().cometql);
    }

    #[test]
    fn cluster_roles_and_their_checks() {
        let load = |ini: &str| Config::load(Some(("t.ini", ini)), &[]).map(|(c, _)| c);
        let single = load("").unwrap();
        assert_eq!(single.cluster.role(), ClusterRole::Single);
        let head = load("[cluster]\nsecret = 0123456789abcdef\n").unwrap();
        assert_eq!(head.cluster.role(), ClusterRole::Head);
        assert!(head.cluster.local_media);
        let node = load("[cluster]\nsecret = 0123456789abcdef\nhead = 10.0.0.1:7445\n").unwrap();
        assert_eq!(node.cluster.role(), ClusterRole::Node);
        let e = load("[cluster]\nsecret = short\n").unwrap_err();
        assert!(e.message.contains("at least 16"), "{e}");
        let e = load("[cluster]\nhead = 10.0.0.1:7445\n").unwrap_err();
        assert!(e.message.contains("secret is empty"), "{e}");
        let e = load("[cluster]\nsecret = 0123456789abcdef\nport = 3300\n").unwrap_err();
        assert!(e.message.contains("[cometql] and [cluster]"), "{e}");
    }
}
