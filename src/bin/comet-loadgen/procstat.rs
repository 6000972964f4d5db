//! CPU time and memory of a process, and of the whole machine, from /proc.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far, all its threads included.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let user: f64 = f.get(11)?.parse().ok()?;
    let sys: f64 = f.get(12)?.parse().ok()?;
    Some((user + sys) / TICKS)
}

/// Resident memory in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// (busy, total) CPU seconds of the whole machine (all cores) from /proc/stat.
pub fn machine_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / TICKS, total / TICKS))
}

/// A CPU reading of the processes of a run and the machine.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub server: f64,
    pub loadgen: f64,
    pub machine_busy: f64,
}

impl Sample {
    /// `server_pids`: every process of the server under test (its CPU is their sum).
    pub fn take(server_pids: &[u32]) -> Sample {
        let (machine_busy, _) = machine_seconds().unwrap_or((0.0, 0.0));
        Sample {
            at: Instant::now(),
            server: server_pids
                .iter()
                .map(|&p| cpu_seconds(p).unwrap_or(0.0))
                .sum(),
            loadgen: cpu_seconds(std::process::id()).unwrap_or(0.0),
            machine_busy,
        }
    }
}

/// CPU use between two samples, in percent of one core.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub wall_s: f64,
    pub server_pct: f64,
    pub loadgen_pct: f64,
    /// Everything else on the machine (other processes), percent of one core.
    pub other_pct: f64,
    /// Cores of the machine.
    pub cores: f64,
}

pub fn usage(a: &Sample, b: &Sample) -> Usage {
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-6);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let server = (b.server - a.server) / wall * 100.0;
    let loadgen = (b.loadgen - a.loadgen) / wall * 100.0;
    let machine = (b.machine_busy - a.machine_busy) / wall * 100.0;
    Usage {
        wall_s: wall,
        server_pct: server,
        loadgen_pct: loadgen,
        other_pct: (machine - server - loadgen).max(0.0),
        cores,
    }
}
