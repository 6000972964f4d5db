//! One load point: start the server under test, join M x N peers, measure for D seconds,
//! and sum up what the peers and /proc saw.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::peer::{self, Role, Running, Shared, Spec};
use crate::procstat::{self, Usage};
use crate::{comet, janus, media};

/// Which server a run loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// comet-server (this workspace's release binary).
    Comet,
    /// Janus AudioBridge (Debian's `janus`).
    Janus,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Comet => "comet",
            Target::Janus => "janus",
        })
    }
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub conferences: usize,
    pub members: usize,
    /// Talkers per conference (the others are silent with DTX).
    pub talkers: usize,
    pub video: bool,
    pub duration: Duration,
    /// Share of each peer's packets dropped before sending (0..1).
    pub loss: f64,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Conferences whose talkers and two silent members decode and analyse what they hear.
    pub probe_confs: usize,
    /// First RTP sequence number of every stream (`None`: random).
    pub first_seq: Option<u16>,
    /// Time between the last join and the start of the measurement.
    pub settle: Duration,
    pub server_bin: PathBuf,
    /// comet-server as a cluster: a head and one media node (two processes).
    pub cluster: bool,
    /// `section.key=value` settings for comet-server (`--set`).
    pub server_settings: Vec<String>,
    pub janus_bin: PathBuf,
    /// Draw progress bars (on stderr).
    pub progress: bool,
}

/// What one run measured. CPU is in percent of one core; delays and jitter in ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub target: String,
    pub conferences: usize,
    pub members: usize,
    pub talkers: usize,
    pub video: bool,
    pub loss_pct: f64,
    pub duration_s: f64,
    /// Peers asked for, joined, and the first join failures.
    pub participants: usize,
    pub joined: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    pub ramp_s: f64,
    pub cpu: Usage,
    pub server_cpu_per_participant: f64,
    pub loadgen_cpu_per_participant: f64,
    pub server_rss_mib: f64,
    pub server_rss_idle_mib: f64,
    pub server_rss_per_participant_kib: f64,
    pub server_threads: u64,
    pub loadgen_rss_mib: f64,
    /// Audio packets the peers received, and what a packet every 20 ms to each would be.
    pub audio_packets: u64,
    pub audio_expected: u64,
    /// Sequence numbers never received (lost between server and peers, or never sent).
    pub lost: u64,
    /// 20 ms frames the server left out of its stream (RTP timestamp jumps).
    pub skipped_frames: u64,
    pub lost_pct: f64,
    pub jitter_ms_mean: f64,
    pub jitter_ms_max: f64,
    pub max_gap_ms: f64,
    pub peers_dead: usize,
    pub delay_ms_p50: Option<f64>,
    pub delay_ms_p99: Option<f64>,
    pub delay_samples: usize,
    pub delay_unmatched: u64,
    pub join_ms_p50: Option<f64>,
    pub join_ms_p99: Option<f64>,
    pub join_ms_max: Option<f64>,
    pub probes: usize,
    pub probes_ok: usize,
    pub hearing_failures: Vec<String>,
    pub video_sending_peers: usize,
    pub video_sent: u64,
    pub video_received: u64,
    /// Audio packets the peers sent 20 ms or more late (the load generator was starved), and
    /// the latest, ms.
    #[serde(default)]
    pub loadgen_sent_late: u64,
    #[serde(default)]
    pub loadgen_send_late_max_ms: f64,
    /// Frames the peers did not send because they were over 100 ms late.
    #[serde(default)]
    pub loadgen_send_skipped: u64,
    /// Who limited the run: the server, the load generator, other processes, or nobody.
    pub bottleneck: String,
    /// How much each of the server's `/metrics` counters grew in the window (comet only;
    /// gauges as at the end): what its jitter buffers dropped, ticks skipped, and so on.
    #[serde(default)]
    pub server_counters: BTreeMap<String, f64>,
}

impl RunResult {
    pub fn total(&self) -> usize {
        self.conferences * self.members
    }

    /// Whether the run held its load: every peer joined, stayed and heard what it should, and
    /// the server added no loss (no missing packets, no skipped frames).
    pub fn held(&self) -> bool {
        self.failed == 0
            && self.peers_dead == 0
            && self.lost == 0
            && self.skipped_frames == 0
            && self.delivered_enough()
            && self.probes_ok == self.probes
    }

    /// Whether the peers got (nearly) a packet every 20 ms: a server that falls behind and
    /// sends fewer packets without skipping sequence numbers or timestamps is caught here.
    pub fn delivered_enough(&self) -> bool {
        self.audio_packets * 100 >= self.audio_expected * 99
    }

    /// Frames the server's receivers concealed in the window (a packet missing when the mix
    /// needed it: loss, or too late), of the frames they decoded; `-` without the counters
    /// (Janus).
    pub fn concealed_cell(&self) -> String {
        let c = |kind: &str| {
            self.server_counters
                .get(&format!("comet_audio_frames_total{{kind=\"{kind}\"}}"))
                .copied()
        };
        if self.server_counters.is_empty() {
            return "-".into();
        }
        let concealed = c("concealed").unwrap_or(0.0);
        let decoded = c("decoded").unwrap_or(0.0) + c("fec").unwrap_or(0.0);
        format!(
            "{concealed:.0} ({:.2}%)",
            100.0 * concealed / decoded.max(1.0)
        )
    }

    /// Whether the server was the limit (over 90 % of the machine's cores).
    pub fn saturated(&self) -> bool {
        self.cpu.server_pct >= 90.0 * self.cpu.cores
    }
}

/// Counters (`*_total`) as their growth from `before` to `after`, gauges as in `after`; only
/// those that are not zero.
fn counter_deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, &v)| {
            let family = k.split('{').next().unwrap_or(k);
            if family.ends_with("_total") {
                (k.clone(), v - before.get(k).copied().unwrap_or(0.0))
            } else {
                (k.clone(), v)
            }
        })
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn bar(progress: bool, len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if !progress {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// The peers of a run: in each conference the first `talkers` talk, the rest are silent; the
/// first `probe_confs` conferences have probes (their talkers and two silent members).
pub fn specs(cfg: &RunConfig) -> Vec<Spec> {
    let talkers = cfg.talkers.min(cfg.members);
    let mut out = Vec::new();
    for c in 0..cfg.conferences {
        for i in 0..cfg.members {
            out.push(Spec {
                index: c * cfg.members + i,
                conf: c,
                role: if i < talkers {
                    Role::Talker(i)
                } else {
                    Role::Silent
                },
                probe: c < cfg.probe_confs && i < talkers + 2,
                loss: cfg.loss,
                video: cfg.video,
                talkers,
                first_seq: cfg.first_seq,
            });
        }
    }
    out
}

/// The server under test, whichever it is.
enum Sut {
    Comet(comet::Server, Vec<comet::Member>),
    Janus(janus::Janus, janus::Api, Vec<Running>),
}

impl Sut {
    /// The process that runs the conferences.
    fn pid(&self) -> u32 {
        match self {
            Sut::Comet(s, _) => s.pid(),
            Sut::Janus(j, _, _) => j.pid(),
        }
    }

    /// Every process of the server (a cluster's head too).
    fn pids(&self) -> Vec<u32> {
        match self {
            Sut::Comet(s, _) => s.pids(),
            Sut::Janus(j, _, _) => vec![j.pid()],
        }
    }

    fn peers(&self) -> Vec<&Running> {
        match self {
            Sut::Comet(_, m) => m.iter().map(|m| &m.peer).collect(),
            Sut::Janus(_, _, p) => p.iter().collect(),
        }
    }

    fn peers_mut(&mut self) -> Vec<&mut Running> {
        match self {
            Sut::Comet(_, m) => m.iter_mut().map(|m| &mut m.peer).collect(),
            Sut::Janus(_, _, p) => p.iter_mut().collect(),
        }
    }
}

/// Runs `join` for every spec with at most `concurrency` in flight; `progress` is called
/// after each (with the error, if it failed). Returns those that joined.
async fn join_each<T, Fut: std::future::Future<Output = Result<T>>>(
    specs: Vec<Spec>,
    concurrency: usize,
    join: impl Fn(Spec) -> Fut,
    mut progress: impl FnMut(Option<&anyhow::Error>),
) -> Vec<T> {
    use futures_util::StreamExt;
    let mut joined = Vec::new();
    let mut s = futures_util::stream::iter(specs.into_iter().map(join))
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = s.next().await {
        match r {
            Ok(m) => {
                progress(None);
                joined.push(m);
            }
            Err(e) => progress(Some(&e)),
        }
    }
    joined
}

/// Runs one load point.
pub async fn run(cfg: &RunConfig) -> Result<RunResult> {
    let talkers = cfg.talkers.min(cfg.members);
    let specs = specs(cfg);
    let total = specs.len();
    let label = format!("{} {}x{}", cfg.target, cfg.conferences, cfg.members);
    // The grid starts a little later so that no peer is late for frame 0.
    let shared = Shared::new(
        cfg.conferences,
        talkers,
        cfg.video,
        Instant::now() + Duration::from_millis(100),
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ramp = bar(
        cfg.progress,
        total as u64,
        "{prefix:>16} joining [{bar:30}] {pos}/{len} {msg}",
    );
    ramp.set_prefix(label.clone());
    let mut failures = Vec::new();
    let mut fails = 0usize;
    let started = Instant::now();
    let mut on_join = |e: Option<&anyhow::Error>| {
        ramp.inc(1);
        if let Some(e) = e {
            fails += 1;
            ramp.set_message(format!("{fails} failed"));
            if failures.len() < 5 {
                failures.push(format!("{e:#}"));
            }
        }
    };
    let (mut sut, idle_rss) = match cfg.target {
        Target::Comet => {
            let server = comet::Server::start(
                &cfg.server_bin,
                talkers.max(3),
                cfg.cluster,
                &cfg.server_settings,
            )?;
            let idle = procstat::rss_mib(server.pid()).unwrap_or(0.0);
            comet::invite_all(&server, &specs).await?;
            let sip = server.sip;
            let members = join_each(
                specs.clone(),
                cfg.concurrency,
                |spec| comet::join(sip, spec, shared.clone(), stop_rx.clone()),
                &mut on_join,
            )
            .await;
            (Sut::Comet(server, members), idle)
        }
        Target::Janus => {
            let j = janus::Janus::start(&cfg.janus_bin).await?;
            let idle = procstat::rss_mib(j.pid()).unwrap_or(0.0);
            let api = janus::Api::connect(j.ws).await?;
            api.create_rooms(cfg.conferences)
                .await
                .with_context(|| j.log_tail())?;
            let peers = join_each(
                specs.clone(),
                cfg.concurrency,
                |spec| janus::join(&api, spec, shared.clone(), stop_rx.clone()),
                &mut on_join,
            )
            .await;
            (Sut::Janus(j, api, peers), idle)
        }
    };
    // Joined means audio flows: wait (with a deadline) for every peer's first packet.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = sut
            .peers()
            .iter()
            .filter(|p| {
                let s = p.stats();
                s.first_audio_at.is_none() && s.dead.is_none()
            })
            .count();
        ramp.set_message(format!("{fails} failed, {waiting} waiting for audio"));
        if waiting == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp_s = started.elapsed().as_secs_f64();
    ramp.finish_and_clear();

    // Settle (jitter buffers, voice activity), then measure.
    tokio::time::sleep(cfg.settle).await;
    let pids = sut.pids();
    let run_bar = bar(
        cfg.progress,
        cfg.duration.as_millis() as u64,
        "{prefix:>16} measuring [{bar:30}] {msg}",
    );
    run_bar.set_prefix(label.clone());
    let counters0 = match &sut {
        Sut::Comet(server, _) => server.metrics().await,
        Sut::Janus(..) => BTreeMap::new(),
    };
    shared.phase.store(peer::MEASURING, Ordering::SeqCst);
    let s0 = procstat::Sample::take(&pids);
    let end = Instant::now() + cfg.duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250).min(end - Instant::now())).await;
        let s = procstat::Sample::take(&pids);
        let u = procstat::usage(&s0, &s);
        run_bar.set_position((cfg.duration - (end - Instant::now().min(end))).as_millis() as u64);
        run_bar.set_message(format!(
            "server {:.0}% loadgen {:.0}% other {:.0}%",
            u.server_pct, u.loadgen_pct, u.other_pct
        ));
    }
    let s1 = procstat::Sample::take(&pids);
    shared.phase.store(peer::DONE, Ordering::SeqCst);
    let counters1 = match &sut {
        Sut::Comet(server, _) => server.metrics().await,
        Sut::Janus(..) => BTreeMap::new(),
    };
    // The server's view of the probes (before they hang up), for when one fails.
    let probe_users: Vec<u64> = specs
        .iter()
        .filter(|s| s.probe)
        .map(comet::user_of)
        .collect();
    let probes_debug = match &sut {
        Sut::Comet(server, _) => server.members_debug(&probe_users).await,
        Sut::Janus(..) => BTreeMap::new(),
    };
    run_bar.finish_and_clear();
    let cpu = procstat::usage(&s0, &s1);
    // Of the process that runs the conferences (a cluster's media node).
    let server_rss = procstat::rss_mib(sut.pid()).unwrap_or(0.0);
    let server_threads = procstat::threads(sut.pid()).unwrap_or(0);
    let loadgen_rss = procstat::rss_mib(std::process::id()).unwrap_or(0.0);

    // Stop every peer; each hands over its counters as it ends.
    let _ = stop_tx.send(true);
    let fin = tokio::time::Instant::now() + Duration::from_secs(5);
    for p in sut.peers_mut() {
        p.finish(fin).await;
    }
    let peers: Vec<(Spec, peer::Stats)> = sut
        .peers()
        .iter()
        .map(|p| (p.spec.clone(), p.stats()))
        .collect();
    let hangups = match &sut {
        Sut::Janus(_, api, _) => api.hangups.load(Ordering::Relaxed),
        Sut::Comet(..) => 0,
    };
    drop(sut);

    let joined = peers.len();
    let mut r = RunResult {
        target: if cfg.cluster && cfg.target == Target::Comet {
            "comet-cluster".to_string()
        } else {
            cfg.target.to_string()
        },
        conferences: cfg.conferences,
        members: cfg.members,
        talkers,
        video: cfg.video,
        loss_pct: cfg.loss * 100.0,
        duration_s: cpu.wall_s,
        participants: total,
        joined,
        failed: total - joined,
        failures,
        ramp_s,
        cpu,
        server_rss_mib: server_rss,
        server_rss_idle_mib: idle_rss,
        server_threads,
        loadgen_rss_mib: loadgen_rss,
        server_counters: counter_deltas(&counters0, &counters1),
        ..Default::default()
    };
    let n = joined.max(1) as f64;
    r.server_cpu_per_participant = cpu.server_pct / n;
    r.loadgen_cpu_per_participant = cpu.loadgen_pct / n;
    r.server_rss_per_participant_kib = (server_rss - idle_rss).max(0.0) * 1024.0 / n;
    let mut delays = Vec::new();
    let mut joins = Vec::new();
    let mut jitters = Vec::new();
    // What each probed talker sent in the window: tells "not sent" from "not mixed" when a
    // probe misses a tone.
    let mut talkers_sent = Vec::new();
    for (spec, s) in &peers {
        let w = &s.window;
        if let (Role::Talker(j), Some(_)) = (spec.role, &s.hearing) {
            talkers_sent.push(format!(
                "peer {} ({} Hz) sent {} audio packets",
                spec.index,
                media::talker_freq(j),
                w.sent_audio
            ));
        }
        if let Some(why) = &s.dead {
            r.peers_dead += 1;
            if r.failures.len() < 5 {
                r.failures.push(format!("peer {} died: {why}", spec.index));
            }
        }
        r.audio_packets += w.audio_packets;
        r.loadgen_sent_late += w.sent_late;
        r.loadgen_send_skipped += w.send_skipped;
        r.loadgen_send_late_max_ms = r.loadgen_send_late_max_ms.max(w.send_late_max_ms);
        r.lost += w.lost;
        r.skipped_frames += w.skipped_frames;
        r.max_gap_ms = r.max_gap_ms.max(w.max_gap_ms);
        jitters.push(w.jitter_max_ms);
        r.video_sent += w.sent_video;
        r.video_received += w.video_packets;
        if s.video_sending {
            r.video_sending_peers += 1;
        }
        if let (Some(a), Some(b)) = (s.invite_at, s.first_audio_at) {
            joins.push(b.duration_since(a).as_secs_f64() * 1e3);
        }
        if let Some(h) = &s.hearing {
            r.probes += 1;
            delays.extend(h.delays_ms.iter().copied());
            r.delay_unmatched += h.unmatched;
            let own = match spec.role {
                Role::Talker(j) => Some(j),
                Role::Silent => None,
            };
            let frames = h.frames.max(1) as f64;
            let shares: Vec<f64> = h.heard.iter().map(|&x| x as f64 / frames).collect();
            let others_ok = shares
                .iter()
                .enumerate()
                .all(|(j, &x)| Some(j) == own || x >= 0.8);
            let own_ok = own.is_none_or(|j| shares[j] <= 0.02) && h.own_bursts == 0;
            if h.frames > 0 && others_ok && own_ok {
                r.probes_ok += 1;
            } else if r.hearing_failures.len() < 5 {
                r.hearing_failures.push(format!(
                    "peer {} ({}): tones {:?} Hz heard in {:?} of {} frames, {} own bursts",
                    spec.index,
                    match own {
                        Some(j) => format!("talker at {} Hz", media::talker_freq(j)),
                        None => "silent".into(),
                    },
                    (0..talkers).map(media::talker_freq).collect::<Vec<_>>(),
                    shares
                        .iter()
                        .map(|x| format!("{:.0}%", x * 100.0))
                        .collect::<Vec<_>>(),
                    h.frames,
                    h.own_bursts
                ));
            }
        }
    }
    if r.probes_ok < r.probes && !talkers_sent.is_empty() {
        r.hearing_failures.push(format!(
            "in the window the probed talkers sent: {}",
            talkers_sent.join(", ")
        ));
        for (user, line) in &probes_debug {
            r.hearing_failures.push(format!(
                "the server's view of peer {} at the end: {line}",
                user - 1
            ));
        }
    }
    if hangups > 0 && r.failures.len() < 5 {
        r.failures
            .push(format!("Janus sent {hangups} hangup events during the run"));
    }
    r.audio_expected = (joined as f64 * cpu.wall_s * 50.0).round() as u64;
    r.lost_pct = if r.audio_expected > 0 {
        (r.lost + r.skipped_frames) as f64 * 100.0 / r.audio_expected as f64
    } else {
        0.0
    };
    jitters.sort_by(f64::total_cmp);
    r.jitter_ms_mean = if jitters.is_empty() {
        0.0
    } else {
        jitters.iter().sum::<f64>() / jitters.len() as f64
    };
    r.jitter_ms_max = jitters.last().copied().unwrap_or(0.0);
    delays.sort_by(f64::total_cmp);
    r.delay_samples = delays.len();
    r.delay_ms_p50 = percentile(&delays, 0.5);
    r.delay_ms_p99 = percentile(&delays, 0.99);
    joins.sort_by(f64::total_cmp);
    r.join_ms_p50 = percentile(&joins, 0.5);
    r.join_ms_p99 = percentile(&joins, 0.99);
    r.join_ms_max = joins.last().copied();
    r.bottleneck = bottleneck(&cpu);
    Ok(r)
}

/// Names what limited the run from the CPU shares.
fn bottleneck(u: &Usage) -> String {
    let cap = 100.0 * u.cores;
    let busy = u.server_pct + u.loadgen_pct + u.other_pct;
    if u.server_pct >= 0.9 * cap {
        format!("server (saturated: {:.0}% of {:.0}%)", u.server_pct, cap)
    } else if busy >= 0.9 * cap {
        if u.loadgen_pct > u.server_pct && u.loadgen_pct > u.other_pct {
            format!(
                "load generator (machine full: loadgen {:.0}%)",
                u.loadgen_pct
            )
        } else if u.other_pct > u.server_pct {
            format!("other processes (machine full: other {:.0}%)", u.other_pct)
        } else {
            format!("machine full (server {:.0}%)", u.server_pct)
        }
    } else {
        format!("none ({:.0}% of {:.0}% used)", busy, cap)
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
}

/// The header of [`row`].
pub const TABLE_HEADER: &str = "| server | conf x members | joined | server CPU % | CPU %/participant | loadgen CPU % | other CPU % | server RSS MiB (KiB/participant) | lost+skipped | concealed by the server (of decoded) | jitter ms mean/max | delay ms p50/p99 | join ms p50/p99 | probes ok | bottleneck |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// One markdown table row.
pub fn row(r: &RunResult) -> String {
    format!(
        "| {} | {} x {} | {}/{} | {:.1} | {:.3} | {:.1} | {:.1} | {:.0} ({:.0}) | {} ({:.2}%) | {} | {:.1}/{:.1} | {}/{} | {}/{} | {}/{} | {} |",
        r.target,
        r.conferences,
        r.members,
        r.joined,
        r.participants,
        r.cpu.server_pct,
        r.server_cpu_per_participant,
        r.cpu.loadgen_pct,
        r.cpu.other_pct,
        r.server_rss_mib,
        r.server_rss_per_participant_kib,
        r.lost + r.skipped_frames,
        r.lost_pct,
        r.concealed_cell(),
        r.jitter_ms_mean,
        r.jitter_ms_max,
        fmt_opt(r.delay_ms_p50),
        fmt_opt(r.delay_ms_p99),
        fmt_opt(r.join_ms_p50),
        fmt_opt(r.join_ms_p99),
        r.probes_ok,
        r.probes,
        r.bottleneck
    )
}

/// A plain-text report of one run (the table row plus what went wrong).
pub fn describe(r: &RunResult) -> String {
    let mut s = format!("{TABLE_HEADER}\n{}\n", row(r));
    if r.video {
        s.push_str(&format!(
            "video: {} of {} peers could send (the answer's video direction), {} packets sent, {} received\n",
            r.video_sending_peers, r.joined, r.video_sent, r.video_received
        ));
    }
    for f in &r.failures {
        s.push_str(&format!("failure: {}\n", first_line(f)));
    }
    for f in &r.hearing_failures {
        s.push_str(&format!("hearing: {f}\n"));
    }
    if r.delay_unmatched > 0 {
        s.push_str(&format!(
            "{} marker bursts could not be matched to a send\n",
            r.delay_unmatched
        ));
    }
    if r.loadgen_sent_late > 0 || r.loadgen_send_skipped > 0 {
        s.push_str(&format!(
            "the load generator sent {} audio packets 20 ms or more late (latest {:.0} ms) and \
             skipped {} over 100 ms late\n",
            r.loadgen_sent_late, r.loadgen_send_late_max_ms, r.loadgen_send_skipped
        ));
    }
    if !r.delivered_enough() {
        s.push_str(&format!(
            "short delivery: the peers got {} of {} audio packets (one every 20 ms would be)\n",
            r.audio_packets, r.audio_expected
        ));
    }
    if !r.held() && !r.server_counters.is_empty() {
        // What the server saw in the window, minus the per-component ones nobody needs here.
        let c: Vec<String> = r
            .server_counters
            .iter()
            .filter(|(k, _)| {
                k.starts_with("comet_audio")
                    || k.starts_with("comet_mix")
                    || k.starts_with("comet_rtp")
                    || k.starts_with("comet_sfu_events")
                    || k.starts_with("comet_sfu_send")
                    || k.starts_with("comet_sfu_socket")
                    || k.starts_with("comet_sfu_panics")
            })
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        s.push_str(&format!(
            "server counters in the window: {}\n",
            c.join(", ")
        ));
    }
    s
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
