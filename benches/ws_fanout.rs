//! Fan-out: one `INSERT INTO pipes_messages` delivered to N subscribed comet WebSocket
//! connections. Starts the release `comet-server`, opens N connections subscribed to one pipe,
//! then sends M messages through CometQL, each stamped with its send time and sent once the
//! previous one has reached every connection; every connection records when each arrived.
//!
//!   cargo bench --bench ws_fanout -- [--conns 1000,10000] [--messages 20]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use mysql_async::prelude::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "bench-key";

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let mut conns = vec![1000usize, 10000];
    let mut messages = 20usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--conns" => {
                conns = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|n| n.parse().ok())
                    .collect()
            }
            "--messages" => messages = it.next().and_then(|n| n.parse().ok()).unwrap_or(messages),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_comet-server"))
        .args([
            "--cometql-port",
            "0",
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--memory-store",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--set", &format!("main.password={KEY}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start comet-server");
    let pid = child.id();
    let (mut cql_port, mut ws_addr) = (0u16, String::new());
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("READY ") {
            for kv in rest.split_whitespace() {
                if let Some(a) = kv.strip_prefix("cometql=") {
                    cql_port = a.rsplit(':').next().unwrap().parse().unwrap();
                }
                if let Some(a) = kv.strip_prefix("ws=") {
                    ws_addr = a.to_string();
                }
            }
            break;
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "| connections | messages | deliveries/s | p50 ms | p99 ms | max ms | server CPU s | server CPU µs/delivery | server RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &conns {
        rt.block_on(run(n, messages, cql_port, &ws_addr, pid));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn run(n: usize, messages: usize, cql_port: u16, ws_addr: &str, pid: u32) {
    let epoch = Instant::now();
    let bar = ProgressBar::new(n as u64)
        .with_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}").unwrap());
    bar.set_message("connecting");
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<Duration>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let pipe = format!("web_fanout{n}");
    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    for i in 0..n {
        let url = format!("ws://{ws_addr}/ws/sesion=&myid=0&devid=0&v=4.08&uuid=b{i}&api=js");
        let (lat_tx, ready_tx, pipe, sem) =
            (lat_tx.clone(), ready_tx.clone(), pipe.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            // At most 200 handshakes at a time; the permit is returned once subscribed.
            let mut permit = Some(sem.acquire_owned().await.unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("connect");
            ws.send(Message::Text(format!("subscription\n{pipe}").into()))
                .await
                .unwrap();
            ws.send(Message::Text("pipe_count\nweb_x\nready".into()))
                .await
                .unwrap();
            let mut got = 0;
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["marker"] == "ready" {
                    permit.take();
                    let _ = ready_tx.send(());
                    continue;
                }
                if v["pipe"] == pipe.as_str() {
                    let sent: u64 = v["data"].as_str().unwrap().parse().unwrap();
                    let now = epoch.elapsed().as_micros() as u64;
                    let _ = lat_tx.send(Duration::from_micros(now.saturating_sub(sent)));
                    got += 1;
                    if got == messages {
                        break;
                    }
                }
            }
            ws
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        ready_rx.recv().await.expect("connection ready");
        bar.inc(1);
    }
    bar.finish_and_clear();
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(cql_port)
        .user(Some("root"))
        .pass(Some(KEY))
        .prefer_socket(false)
        .into();
    let mut db = mysql_async::Conn::new(opts).await.unwrap();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let total = n * messages;
    let mut lat = Vec::with_capacity(total);
    // One fan-out at a time: the next INSERT goes out once every connection has the previous
    // message, so each latency is that of a single INSERT reaching N browsers.
    for _ in 0..messages {
        let stamp = epoch.elapsed().as_micros();
        db.query_drop(format!(
            "INSERT INTO pipes_messages (name, event, message) VALUES ('{pipe}', 'tick', '{stamp}')"
        ))
        .await
        .unwrap();
        let target = lat.len() + n;
        while lat.len() < target {
            lat.push(lat_rx.recv().await.expect("deliveries"));
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let rss = rss_mib(pid);
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "| {n} | {messages} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
        total as f64 / wall,
        p(0.5),
        p(0.99),
        p(1.0),
        cpu,
        cpu / total as f64 * 1e6,
        rss
    );
    for t in tasks {
        let _ = t.await;
    }
}
