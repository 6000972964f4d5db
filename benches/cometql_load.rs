//! CometQL load run: N concurrent `mysql_async` clients against the real `comet-server` binary
//! (SQLite store, `[store] sync = full`), each doing a fixed number of
//! INSERT users_auth / INSERT conference / SELECT / DELETE rounds. Prints throughput and latency
//! percentiles per statement kind and the server's CPU time (from /proc).
//!
//!   cargo bench --bench cometql_load -- [--clients 1,8,32] [--rounds 500] [--sync full|normal]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mysql_async::prelude::*;

const KEY: &str = "bench-key";

struct Args {
    clients: Vec<usize>,
    rounds: usize,
    sync: String,
}

fn args() -> Args {
    let mut a = Args {
        clients: vec![1, 8, 32],
        rounds: 300,
        sync: "full".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--clients" => {
                a.clients = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|n| n.parse().ok())
                    .collect()
            }
            "--rounds" => a.rounds = it.next().and_then(|n| n.parse().ok()).unwrap_or(a.rounds),
            "--sync" => a.sync = it.next().unwrap_or(a.sync),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The server process, killed when the bench ends, also when a client panics.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_comet-server"))
        .args([
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
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--set", &format!("main.password={KEY}")])
        .args(["--set", &format!("store.sync={}", a.sync)])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start comet-server");
    let mut child = Server(child);
    let pid = child.0.id();
    let mut port = 0u16;
    for line in BufReader::new(child.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // READY cometql=127.0.0.1:3300 ws=... (one key=address per listener)
        if let Some(rest) = line.strip_prefix("READY ") {
            let addr = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("cometql="))
                .expect("the READY line names the CometQL address");
            port = addr.rsplit(':').next().unwrap().parse().unwrap();
            break;
        }
    }
    assert!(port != 0, "server did not start");
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "| clients | rounds | statements/s | INSERT p50/p99 ms | SELECT p50/p99 ms | DELETE p50/p99 ms | server CPU s | server CPU µs/statement |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &a.clients {
        let total = (n * a.rounds) as u64;
        let bar = ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rounds {per_sec}").unwrap(),
        );
        bar.set_message(format!("{n} clients"));
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let results = rt.block_on(async {
            let mut tasks = Vec::new();
            for client in 0..n {
                let bar = bar.clone();
                let rounds = a.rounds;
                tasks.push(tokio::spawn(async move {
                    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
                        .ip_or_hostname("127.0.0.1")
                        .tcp_port(port)
                        .user(Some("root"))
                        .pass(Some(KEY))
                        .prefer_socket(false)
                        .into();
                    let mut c = mysql_async::Conn::new(opts).await.unwrap();
                    let (mut ins, mut sel, mut del) = (Vec::new(), Vec::new(), Vec::new());
                    for r in 0..rounds {
                        let id = (client * 1_000_000 + r + 1) as i64;
                        let t = Instant::now();
                        c.query_drop(format!("INSERT INTO users_auth (id, hash) VALUES ({id}, 'h{id}')"))
                            .await
                            .unwrap();
                        ins.push(t.elapsed());
                        let t = Instant::now();
                        c.query_drop(format!("INSERT INTO conference (name, user_id, message, profile) VALUES ('load{client}', {id}, '', 'audio')"))
                            .await
                            .unwrap();
                        ins.push(t.elapsed());
                        let t = Instant::now();
                        let rows: Vec<mysql_async::Row> = c
                            .query(format!("SELECT * FROM users_auth WHERE id = {id}"))
                            .await
                            .unwrap();
                        assert_eq!(rows.len(), 1);
                        sel.push(t.elapsed());
                        let t = Instant::now();
                        c.query_drop(format!("DELETE FROM conference WHERE name = 'load{client}' AND user_id = {id}"))
                            .await
                            .unwrap();
                        del.push(t.elapsed());
                        bar.inc(1);
                    }
                    (ins, sel, del)
                }));
            }
            let (mut ins, mut sel, mut del) = (Vec::new(), Vec::new(), Vec::new());
            for t in tasks {
                let (i, s, d) = t.await.unwrap();
                ins.extend(i);
                sel.extend(s);
                del.extend(d);
            }
            (ins, sel, del)
        });
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        bar.finish_and_clear();
        let (mut ins, mut sel, mut del) = results;
        let statements = (ins.len() + sel.len() + del.len()) as f64;
        println!(
            "| {n} | {} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {:.0} |",
            a.rounds,
            statements / wall,
            pct(&mut ins, 0.5),
            pct(&mut ins, 0.99),
            pct(&mut sel, 0.5),
            pct(&mut sel, 0.99),
            pct(&mut del, 0.5),
            pct(&mut del, 0.99),
            cpu,
            cpu / statements * 1e6,
        );
    }
}
