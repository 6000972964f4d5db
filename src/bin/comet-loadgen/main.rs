//! comet-loadgen: audio conference load on comet-server and, side by side, on Janus
//! AudioBridge. Peers register and dial exactly as the browser JS does (CometQL invitations,
//! then SIP over WebSocket: REGISTER and INVITE with digest auth), or join an AudioBridge room
//! through the Janus WebSocket API, send pre-encoded Opus (a few talkers with a tone and marker
//! bursts, everyone else silent with DTX and the RFC 6464 level), and check what they receive.
//! See the README section `comet-loadgen` and benches/README.md.

mod comet;
mod janus;
mod media;
mod peer;
mod plot;
mod procstat;
mod run;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use run::{RunConfig, RunResult, Target};

#[derive(Parser, Debug)]
#[command(
    name = "comet-loadgen",
    version,
    about = "Audio conference load generator: comet-server and Janus AudioBridge side by side"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One load point (the default command).
    Run(RunArgs),
    /// The benchmark sweep: N = 3..1000 in one conference and in conferences of 4, on both
    /// servers; writes sweep.json, sweep.md and the SVG plots.
    Sweep(SweepArgs),
    /// Draws the plots again from a sweep.json.
    Plot {
        #[arg(long, default_value = "benches/results/sweep.json")]
        input: PathBuf,
        #[arg(long, default_value = "benches/results")]
        out: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The comet-server binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// A comet-server setting, `section.key=value` (its `--set`), e.g. `media.threads=2`;
    /// repeatable.
    #[arg(long = "server-set", value_name = "KEY=VALUE")]
    server_set: Vec<String>,
    /// The Janus binary.
    #[arg(long, default_value = "/usr/bin/janus")]
    janus_bin: PathBuf,
    /// Joins in flight at once while ramping up.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds between the last join and the measurement.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Which server to load (`both`: comet then Janus, same load, one table).
    #[arg(long, default_value = "comet")]
    target: TargetArg,
    /// Conferences (M).
    #[arg(long, default_value_t = 1)]
    conferences: usize,
    /// Members per conference (N).
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Talkers per conference; the other members are silent (DTX).
    #[arg(long, default_value_t = 3)]
    talkers: usize,
    /// Audio only (the default).
    #[arg(long, conflicts_with = "video")]
    audio: bool,
    /// Also offer and send H.264 test video (every member).
    #[arg(long)]
    video: bool,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Percent of each peer's packets dropped before sending.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Conferences with probes (their talkers and two silent members decode what they hear).
    #[arg(long, default_value_t = 2)]
    probe_confs: usize,
    /// First RTP sequence number of every stream (default: random), e.g. 65400 so that the
    /// 16-bit numbers wrap during the run.
    #[arg(long)]
    first_seq: Option<u16>,
    /// Write the result(s) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// comet-server as a cluster: a head (CometQL, the invitations) and one media node that
    /// runs the conferences; the CPU of both counts as the server's.
    #[arg(long)]
    cluster: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug, Clone)]
struct SweepArgs {
    /// Where sweep.json, sweep.md and the plots go.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Seconds of measurement per point.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop starting new points after this many minutes.
    #[arg(long, default_value_t = 18.0)]
    budget_minutes: f64,
    /// Servers to sweep.
    #[arg(long, value_delimiter = ',', default_value = "comet,janus")]
    targets: Vec<Target>,
    /// N values of the single conference.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "3,10,50,100,200,500,1000"
    )]
    single: Vec<usize>,
    /// M values of the conferences of 4 (N = 4M).
    #[arg(long, value_delimiter = ',', default_value = "3,13,25,50,125,250")]
    small: Vec<usize>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Comet,
    Janus,
    Both,
}

fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("comet-server")))
        .unwrap_or_else(|| PathBuf::from("comet-server"))
}

fn config(a: &RunArgs, target: Target) -> RunConfig {
    RunConfig {
        target,
        conferences: a.conferences.max(1),
        members: a.members.max(1),
        talkers: a.talkers,
        video: a.video && !a.audio,
        duration: Duration::from_secs_f64(a.duration.max(0.5)),
        loss: (a.loss / 100.0).clamp(0.0, 1.0),
        concurrency: a.common.concurrency,
        probe_confs: a.probe_confs,
        first_seq: a.first_seq,
        settle: Duration::from_secs_f64(a.common.settle.max(0.0)),
        server_bin: a
            .common
            .server_bin
            .clone()
            .unwrap_or_else(default_server_bin),
        cluster: a.cluster,
        server_settings: a.common.server_set.clone(),
        janus_bin: a.common.janus_bin.clone(),
        progress: !a.common.no_progress,
    }
}

/// What the machine is, for the record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Machine {
    cpu_model: String,
    cores: usize,
    mem_gib: f64,
    kernel: String,
    janus: String,
    comet_server: String,
}

fn machine(janus_bin: &std::path::Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let janus = std::process::Command::new(janus_bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem_gib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        janus,
        comet_server: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The open-file limit must cover a socket and a WebSocket per peer, on both sides.
fn check_files(peers: usize) -> Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: Option<usize> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    if let Some(soft) = soft
        && soft < 3 * peers + 100
    {
        bail!(
            "the open-file limit is {soft}, {} peers need about {}: raise it (ulimit -n)",
            peers,
            3 * peers + 100
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match cli.cmd {
        None => rt.block_on(cmd_run(cli.run)),
        Some(Cmd::Run(a)) => rt.block_on(cmd_run(a)),
        Some(Cmd::Sweep(a)) => rt.block_on(cmd_sweep(a)),
        Some(Cmd::Plot { input, out }) => {
            let sweep: Sweep = serde_json::from_str(
                &std::fs::read_to_string(&input)
                    .with_context(|| format!("read {}", input.display()))?,
            )?;
            for p in plot::plot(&sweep.results, &out)? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
    }
}

async fn cmd_run(a: RunArgs) -> Result<()> {
    check_files(a.conferences * a.members)?;
    let targets = match a.target {
        TargetArg::Comet => vec![Target::Comet],
        TargetArg::Janus => vec![Target::Janus],
        TargetArg::Both => vec![Target::Comet, Target::Janus],
    };
    let mut results = Vec::new();
    for t in targets {
        let r = run::run(&config(&a, t)).await?;
        print!("{}", run::describe(&r));
        results.push(r);
    }
    if results.len() > 1 {
        println!("\n{}", run::TABLE_HEADER);
        for r in &results {
            println!("{}", run::row(r));
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sweep {
    machine: Machine,
    elapsed_s: f64,
    duration_s: f64,
    results: Vec<RunResult>,
    /// Points not run, and why.
    skipped: Vec<String>,
}

async fn cmd_sweep(a: SweepArgs) -> Result<()> {
    let max_n = a
        .single
        .iter()
        .copied()
        .chain(a.small.iter().map(|m| 4 * m))
        .max()
        .unwrap_or(0);
    check_files(max_n)?;
    std::fs::create_dir_all(&a.out)?;
    let started = Instant::now();
    let budget = Duration::from_secs_f64(a.budget_minutes * 60.0);
    // Points in order of N, each on every target back to back.
    let mut points: Vec<(usize, usize, usize)> = a
        .single
        .iter()
        .map(|&n| (1, n, 3))
        .chain(a.small.iter().map(|&m| (m, 4, 2)))
        .collect();
    points.sort_by_key(|&(m, n, _)| (m * n, m));
    let mut sweep = Sweep {
        machine: machine(&a.common.janus_bin),
        duration_s: a.duration,
        ..Default::default()
    };
    // A shape whose server fell over at some N is not run at larger N.
    let mut fell: Vec<(Target, bool, usize, String)> = Vec::new();
    let total = points.len() * a.targets.len();
    let mut done = 0;
    for &(m, n, talkers) in &points {
        for &target in &a.targets {
            done += 1;
            let small = m > 1;
            let shape = if small {
                "conferences of 4"
            } else {
                "one conference"
            };
            if let Some((_, _, at, why)) = fell.iter().find(|f| f.0 == target && f.1 == small) {
                sweep.skipped.push(format!(
                    "{target} {m} x {n}: not run, {target} already failed at N = {at} ({shape}): {why}"
                ));
                continue;
            }
            if started.elapsed() > budget {
                sweep.skipped.push(format!(
                    "{target} {m} x {n}: not run, the {:.0} min budget was used up",
                    a.budget_minutes
                ));
                continue;
            }
            eprintln!(
                "[{done}/{total}, {:.0} s] {target}: {m} x {n} ({shape})",
                started.elapsed().as_secs_f64()
            );
            let args = RunArgs {
                target: TargetArg::Comet,
                conferences: m,
                members: n,
                talkers,
                audio: true,
                video: false,
                duration: a.duration,
                loss: 0.0,
                probe_confs: 2,
                first_seq: None,
                json: None,
                cluster: false,
                common: a.common.clone(),
            };
            match run::run(&config(&args, target)).await {
                Ok(r) => {
                    eprint!("{}", run::describe(&r));
                    let bad_join = r.joined * 20 < r.participants * 19;
                    if r.saturated() || bad_join || r.lost_pct > 5.0 {
                        let why = if r.saturated() {
                            format!("server CPU {:.0}%", r.cpu.server_pct)
                        } else if bad_join {
                            format!("{} of {} joined", r.joined, r.participants)
                        } else {
                            format!("{:.1}% of the audio lost", r.lost_pct)
                        };
                        fell.push((target, small, m * n, why));
                    }
                    sweep.results.push(r);
                }
                Err(e) => {
                    eprintln!("{target} {m} x {n} failed: {e:#}");
                    fell.push((target, small, m * n, format!("the run failed: {e:#}")));
                    sweep
                        .skipped
                        .push(format!("{target} {m} x {n}: the run failed: {e:#}"));
                }
            }
            sweep.elapsed_s = started.elapsed().as_secs_f64();
            std::fs::write(
                a.out.join("sweep.json"),
                serde_json::to_string_pretty(&sweep)?,
            )?;
        }
    }
    let plots = plot::plot(&sweep.results, &a.out)?;
    let md = sweep_markdown(&sweep);
    std::fs::write(a.out.join("sweep.md"), &md)?;
    println!("{md}");
    for p in plots {
        println!("wrote {}", p.display());
    }
    println!(
        "sweep took {:.1} min; results in {}",
        sweep.elapsed_s / 60.0,
        a.out.display()
    );
    Ok(())
}

/// The sweep's tables: per N, ours next to Janus's, then every run in full.
fn sweep_markdown(s: &Sweep) -> String {
    let mut out = String::new();
    let m = &s.machine;
    out.push_str(&format!(
        "Machine: `{}`, {} cores, {:.0} GiB, Linux {}; {}; comet-server {}. Sweep took {:.1} min, {:.0} s measured per point.\n\n",
        m.cpu_model, m.cores, m.mem_gib, m.kernel, m.janus, m.comet_server, s.elapsed_s / 60.0, s.duration_s
    ));
    out.push_str("| shape | N | comet CPU %/participant | Janus CPU %/participant | Janus / comet | comet delay p50/p99 ms | Janus delay p50/p99 ms | comet held | Janus held |\n|---|---|---|---|---|---|---|---|---|\n");
    let mut keys: Vec<(usize, usize)> = s
        .results
        .iter()
        .map(|r| (r.conferences, r.members))
        .collect();
    keys.sort_by_key(|&(m, n)| ((m > 1), m * n));
    keys.dedup();
    let find = |t: &str, k: (usize, usize)| {
        s.results
            .iter()
            .find(|r| r.target == t && (r.conferences, r.members) == k)
    };
    let delay = |r: Option<&RunResult>| {
        r.map(|r| {
            format!(
                "{}/{}",
                r.delay_ms_p50.map_or("-".into(), |v| format!("{v:.0}")),
                r.delay_ms_p99.map_or("-".into(), |v| format!("{v:.0}"))
            )
        })
        .unwrap_or_else(|| "not run".into())
    };
    let held = |r: Option<&RunResult>| {
        r.map(|r| {
            if r.held() {
                "yes".to_string()
            } else {
                format!(
                    "no ({}/{} joined, {:.2}% lost, {}/{} probes ok)",
                    r.joined, r.participants, r.lost_pct, r.probes_ok, r.probes
                )
            }
        })
        .unwrap_or_else(|| "not run".into())
    };
    for k in keys {
        let (c, j) = (find("comet", k), find("janus", k));
        let shape = if k.0 > 1 {
            format!("{} x 4", k.0)
        } else {
            "1 conference".into()
        };
        let cpu = |r: Option<&RunResult>| {
            r.map(|r| {
                let sat = if r.saturated() { " (saturated)" } else { "" };
                format!("{:.3}{sat}", r.server_cpu_per_participant)
            })
            .unwrap_or_else(|| "not run".into())
        };
        let ratio = match (c, j) {
            (Some(c), Some(j)) if c.server_cpu_per_participant > 0.0 => format!(
                "{:.1}x",
                j.server_cpu_per_participant / c.server_cpu_per_participant
            ),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {shape} | {} | {} | {} | {ratio} | {} | {} | {} | {} |\n",
            k.0 * k.1,
            cpu(c),
            cpu(j),
            delay(c),
            delay(j),
            held(c),
            held(j)
        ));
    }
    out.push_str("\nEvery run:\n\n");
    out.push_str(run::TABLE_HEADER);
    out.push('\n');
    for r in &s.results {
        out.push_str(&run::row(r));
        out.push('\n');
    }
    if !s.skipped.is_empty() {
        out.push_str("\nNot run:\n\n");
        for k in &s.skipped {
            out.push_str(&format!("- {k}\n"));
        }
    }
    let notes: Vec<String> = s
        .results
        .iter()
        .filter(|r| !r.failures.is_empty() || !r.hearing_failures.is_empty())
        .map(|r| {
            let mut v: Vec<String> = r
                .failures
                .iter()
                .chain(r.hearing_failures.iter())
                .map(|f| f.lines().next().unwrap_or("").to_string())
                .collect();
            v.dedup();
            format!(
                "- {} {} x {}: {}",
                r.target,
                r.conferences,
                r.members,
                v.join("; ")
            )
        })
        .collect();
    if !notes.is_empty() {
        out.push_str("\nFailures seen:\n\n");
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}
