//! Broadcast costs and delay: a conference of two webrtc-rs peers (each sending a tone) on the
//! real server, measured three ways for `--seconds` each (server CPU from /proc):
//!
//! 1. the conference alone (profile `video`, no broadcast),
//! 2. plus one RTMP output to a real nginx-rtmp making HLS and DASH,
//! 3. plus one RTMP output and one MP4 recording.
//!
//! Then the glass-to-HLS delay: peer 2 starts its tone; the delay is from that moment to the
//! first HLS segment whose audio has the tone being listed in the playlist (what a player can
//! fetch at the earliest; a player adds its own buffer). Repeated `--delays` times.
//!
//!   cargo bench --bench broadcast -- [--seconds 20] [--delays 5]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::peer::Peer;
use common::sip_client::{SipClient, Ua};
use common::tones::Spectrum;
use common::{Server, connect, tool};
use mysql_async::prelude::Queryable;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

const ROOM: &str = "room";
const TONES: [f64; 2] = [440.0, 660.0];

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / 100.0
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for d in ["logs", "hls", "dash"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\ndaemon off;\n\
                 master_process off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
                 events {{ worker_connections 64; }}\nrtmp {{ server {{ listen 127.0.0.1:{port}; \
                 chunk_size 4096; application cam1 {{ live on; record off; hls on; \
                 hls_path {d}/hls; hls_fragment 2s; hls_playlist_length 6s; dash on; \
                 dash_path {d}/dash; dash_fragment 2s; dash_playlist_length 6s; }} }} }}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(tool("nginx"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    fn segments(&self) -> Vec<PathBuf> {
        let p = self.dir.join("hls").join(format!("{ROOM}.m3u8"));
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(".ts"))
            .map(|l| self.dir.join("hls").join(l))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn join(server: &Server, db: &mut mysql_async::Conn, user: i64) -> (SipClient, Peer) {
    let hash = format!("key{user}Secret");
    db.query_drop(format!(
        "INSERT INTO users_auth (id, hash) VALUES ({user}, '{hash}')"
    ))
    .await
    .unwrap();
    db.query_drop(format!(
        "INSERT INTO conference (name, user_id, caller_id, message, profile) \
         VALUES ('{ROOM}', {user}, 1, '', 'video')"
    ))
    .await
    .unwrap();
    let mut sip = SipClient::connect(
        server.sip,
        Ua::new(&format!("{:06}{user}", 0), &hash, "127.0.0.1", user as u64),
    )
    .await;
    sip.register().await;
    let mut peer = Peer::new(&format!("user {user}")).await;
    let d = tokio::time::Instant::now() + Duration::from_secs(10);
    let offer = peer.offer(d).await;
    let (_s, answer) = sip.call(&format!("0*{ROOM}*video"), &offer).await;
    peer.answer(&answer).await;
    let d = tokio::time::Instant::now() + Duration::from_secs(15);
    assert!(
        peer.wait_state(d, |s| s == RTCPeerConnectionState::Connected)
            .await
    );
    (sip, peer)
}

fn has_tone(seg: &Path, freq: f64) -> bool {
    let out = Command::new(tool("ffmpeg"))
        .args(["-v", "error", "-i"])
        .arg(seg)
        .args(["-vn", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .unwrap();
    let pcm: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    pcm.chunks(4800)
        .any(|c| c.len() == 4800 && Spectrum::measure(c, &[freq]).at(freq) > 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = arg("--seconds", 20);
    let delays = arg("--delays", 5);
    let dir = tempfile::tempdir().unwrap();
    let mut cpu = Vec::new();
    for (label, stream, record) in [
        ("conference only", false, false),
        ("+ RTMP", true, false),
        ("+ RTMP + recording", true, true),
    ] {
        let sub = dir.path().join(label.replace([' ', '+'], "_"));
        std::fs::create_dir_all(&sub).unwrap();
        let nginx = Nginx::start(&sub.join("nginx"));
        let mut ini = String::from("[profile.video]\n");
        if stream {
            ini += &format!("stream = rtmp://127.0.0.1:{}/cam1/{{name}}\n", nginx.port);
        }
        if record {
            ini += &format!(
                "record = yes\n[broadcast]\nrecord_dir = {}\n",
                sub.join("rec").display()
            );
        }
        std::fs::write(sub.join("comet.ini"), ini).unwrap();
        let cfg = sub.join("comet.ini").display().to_string();
        let server = Server::start_with(&sub, &["--config", &cfg]);
        let pid = server.pid();
        let mut db = connect(&server).await;
        let (_s1, mut p1) = join(&server, &mut db, 1).await;
        let (_s2, mut p2) = join(&server, &mut db, 2).await;
        p1.start_tone(TONES[0], 4000.0, 1);
        p2.start_tone(TONES[1], 4000.0, 2);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let share = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
        println!("{label}: server CPU {share:.1} % of one core");
        cpu.push((label, share));

        if stream && !record {
            // Glass-to-HLS delay.
            let mut measured = Vec::new();
            for _ in 0..delays {
                p2.stop_tone().await;
                // Wait until the newest segment has no 660 Hz.
                let end = Instant::now() + Duration::from_secs(30);
                loop {
                    let segs = nginx.segments();
                    if let Some(last) = segs.last()
                        && !has_tone(last, TONES[1])
                    {
                        break;
                    }
                    assert!(Instant::now() < end, "the tone never left the HLS stream");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let known: Vec<PathBuf> = nginx.segments();
                let started = Instant::now();
                let started_wall = SystemTime::now();
                p2.start_tone(TONES[1], 4000.0, 2);
                let end = Instant::now() + Duration::from_secs(30);
                let mut webrtc: Option<f64> = None;
                'found: loop {
                    // The same tone over WebRTC, as member 1 hears it (for comparison).
                    if webrtc.is_none()
                        && Spectrum::measure(&p1.heard_last(4800), &[TONES[1]]).at(TONES[1])
                            > 1000.0
                    {
                        webrtc = Some(started.elapsed().as_secs_f64());
                        println!(
                            "glass-to-WebRTC (member 1 hears it): {:.2} s",
                            webrtc.unwrap_or(0.0)
                        );
                    }
                    for s in nginx.segments() {
                        if !known.contains(&s)
                            && std::fs::metadata(&s)
                                .and_then(|m| m.modified())
                                .is_ok_and(|t| t > started_wall)
                            && has_tone(&s, TONES[1])
                        {
                            let d = started.elapsed().as_secs_f64();
                            println!("glass-to-HLS: {d:.2} s ({})", s.display());
                            measured.push(d);
                            break 'found;
                        }
                    }
                    assert!(Instant::now() < end, "the tone never reached HLS");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            measured.sort_by(f64::total_cmp);
            if !measured.is_empty() {
                println!(
                    "glass-to-HLS over {} runs: min {:.2} s, median {:.2} s, max {:.2} s",
                    measured.len(),
                    measured[0],
                    measured[measured.len() / 2],
                    measured[measured.len() - 1]
                );
            }
        }
        p1.close().await;
        p2.close().await;
        drop(server);
    }
    let base = cpu[0].1;
    for (label, share) in &cpu {
        println!("| {label} | {share:.1} % | {:+.1} % |", share - base);
    }
}
