//! Broadcast costs and glass-to-HLS delay, on the real server with a real nginx-rtmp.
//!
//! **CPU** (`--seconds` per configuration, server CPU from /proc): a conference of two
//! webrtc-rs peers (each sending a tone, profile `video`: the broadcast encodes the 640x360
//! 30 fps canvas and the AAC mix) measured
//!
//! 1. alone (no broadcast),
//! 2. plus one RTMP output to nginx-rtmp making HLS and DASH,
//! 3. plus one RTMP output and one MP4 recording.
//!
//! **Glass-to-HLS delay**, for each nginx-rtmp setting (keyframe interval, `hls_fragment`,
//! `hls_playlist_length`): peer 2 keeps its RTP stream going and switches from silence to a
//! 660 Hz tone; the onset is the wall-clock time the peer sent the first RTP packet of the
//! tone. The bench polls the playlist nginx serves over HTTP on 127.0.0.1 every 20 ms, fetches
//! every newly listed segment over HTTP, decodes its audio with ffmpeg and looks for the tone's
//! onset (10 ms windows, Goertzel). The delay is from the onset to the playlist response that
//! first listed the segment holding it: the earliest a player could fetch it. A player adds
//! its hold-back on top (RFC 8216 6.3.3 / hls.js `liveSyncDurationCount`: 3 target
//! durations from the end of the playlist); the bench estimates glass-to-ear with it as
//! `listed + 3 * TARGETDURATION - (segment duration - onset offset in the segment)`.
//! `--delays` samples per setting (p50 and max).
//!
//!   cargo bench --bench broadcast -- [--seconds 20] [--delays 6] [--skip-cpu] [--skip-delay]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::audio_room::{call, invite};
use common::nginx::Nginx;
use common::peer::Peer;
use common::sip_client::SipClient;
use common::tones::Spectrum;
use common::{Server, connect, tool};

const ROOM: &str = "room";
const TONES: [f64; 2] = [440.0, 660.0];
/// A tone is present in a window at this amplitude or more (it is sent at 4000).
const PRESENT: f64 = 1000.0;

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

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// One nginx-rtmp HLS setting, with the server's keyframe interval that goes with it.
#[derive(Clone, Copy)]
struct HlsSetting {
    label: &'static str,
    /// `[broadcast] keyframe_interval`, seconds.
    keyframe: f64,
    /// `hls_fragment` and `hls_playlist_length`, as nginx reads them.
    fragment: &'static str,
    playlist: &'static str,
}

const SETTINGS: [HlsSetting; 3] = [
    HlsSetting {
        label: "default",
        keyframe: 2.0,
        fragment: "2s",
        playlist: "6s",
    },
    HlsSetting {
        label: "lowest stable",
        keyframe: 1.0,
        fragment: "1s",
        playlist: "4s",
    },
    HlsSetting {
        label: "below: 0.5 s fragments",
        keyframe: 0.5,
        fragment: "500ms",
        playlist: "3s",
    },
];

/// The HLS playlist of the conference as nginx serves it over HTTP (what a player reads).
fn served_playlist(nginx: &Nginx) -> Option<Playlist> {
    let body = http_get(nginx.http, &format!("/hls/{ROOM}.m3u8"))?;
    Playlist::parse(&String::from_utf8_lossy(&body))
}

/// `GET path` over HTTP/1.0 on loopback: the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let mut t = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    t.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    t.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    t.read_to_end(&mut raw).ok()?;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&raw[..head_end]);
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(raw[head_end + 4..].to_vec())
}

/// An HLS media playlist: target duration and (uri, duration) of each segment.
struct Playlist {
    target: f64,
    segments: Vec<(String, f64)>,
}

impl Playlist {
    fn parse(text: &str) -> Option<Playlist> {
        let mut target = None;
        let mut segments = Vec::new();
        let mut dur = 0.0;
        for l in text.lines() {
            if let Some(t) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
                target = t.trim().parse().ok();
            } else if let Some(d) = l.strip_prefix("#EXTINF:") {
                dur = d.split(',').next()?.parse().ok()?;
            } else if !l.starts_with('#') && !l.trim().is_empty() {
                segments.push((l.trim().to_string(), dur));
            }
        }
        Some(Playlist {
            target: target?,
            segments,
        })
    }
}

/// The audio of a segment, 48 kHz mono.
fn decode_audio(bytes: &[u8], scratch: &Path) -> Vec<i16> {
    std::fs::write(scratch, bytes).unwrap();
    let out = Command::new(tool("ffmpeg"))
        .args(["-v", "error", "-i"])
        .arg(scratch)
        .args(["-vn", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .unwrap();
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The first sample of `freq` in `pcm` (10 ms windows; the tone must hold for 3 windows).
fn onset(pcm: &[i16], freq: f64) -> Option<usize> {
    const W: usize = 480;
    let on: Vec<bool> = pcm
        .chunks_exact(W)
        .map(|c| Spectrum::measure(c, &[freq]).at(freq) >= PRESENT)
        .collect();
    (0..on.len())
        .find(|&i| on[i..].iter().take(3).all(|&x| x) && on.len() >= i + 3)
        .map(|i| i * W)
}

fn any_tone(pcm: &[i16], freq: f64) -> bool {
    pcm.chunks_exact(480)
        .any(|c| Spectrum::measure(c, &[freq]).at(freq) >= PRESENT)
}

async fn join(server: &Server, db: &mut mysql_async::Conn, user: i64) -> (SipClient, Peer) {
    invite(db, user, "video").await;
    let mut peer = Peer::new(&format!("user {user}")).await;
    let (sip, _session, _answer) =
        call(server, user, &format!("0*{ROOM}*video"), &mut peer, |o| o).await;
    (sip, peer)
}

/// The `p` quantile of sorted values, interpolated between neighbours (0.5: the median).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let x = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo as f64)
}

/// Server CPU of the conference alone, with one RTMP output, and with RTMP and a recording.
async fn cpu(dir: &Path, seconds: u64) {
    let mut rows = Vec::new();
    for (label, stream, record) in [
        ("conference only", false, false),
        ("+ RTMP", true, false),
        ("+ RTMP + recording", true, true),
    ] {
        let sub = dir.join(label.replace([' ', '+'], "_"));
        std::fs::create_dir_all(&sub).unwrap();
        let nginx = Nginx::start(
            &sub.join("nginx"),
            SETTINGS[0].fragment,
            SETTINGS[0].playlist,
        );
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
        let encode = |s: &Server| -> f64 {
            s.metrics(&["comet_broadcast_encode_seconds_total"])
                .split(", ")
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        };
        let (c0, e0, t0) = (cpu_seconds(pid), encode(&server), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let secs = t0.elapsed().as_secs_f64();
        let share = (cpu_seconds(pid) - c0) / secs * 100.0;
        let threads = (encode(&server) - e0) / secs * 100.0;
        println!(
            "{label}: server CPU {share:.1} % of one core (broadcast threads by /metrics: \
             {threads:.1} %)"
        );
        rows.push((label, share, threads));
        p1.close().await;
        p2.close().await;
        drop(server);
    }
    let base = rows[0].1;
    println!(
        "| configuration | server CPU | on top of the conference | broadcast threads (/metrics) |"
    );
    for (label, share, threads) in &rows {
        println!(
            "| {label} | {share:.1} % | {:+.1} % | {threads:.1} % |",
            share - base
        );
    }
}

/// One glass-to-HLS sample: (listed delay, offset of the onset in its segment, the
/// segment's duration, target duration, glass-to-WebRTC).
struct Sample {
    listed: f64,
    offset: f64,
    duration: f64,
    target: f64,
    webrtc: Option<f64>,
}

impl Sample {
    /// Glass-to-ear for a player holding back 3 target durations from the live edge.
    fn with_player(&self) -> f64 {
        self.listed + (3.0 * self.target - (self.duration - self.offset)).max(0.0)
    }
}

async fn delay(dir: &Path, s: HlsSetting, samples: u64) -> Vec<Sample> {
    let sub = dir.join(format!("delay-{}", s.fragment));
    std::fs::create_dir_all(&sub).unwrap();
    let nginx = Nginx::start(&sub.join("nginx"), s.fragment, s.playlist);
    std::fs::write(
        sub.join("comet.ini"),
        format!(
            "[profile.video]\nstream = rtmp://127.0.0.1:{}/cam1/{{name}}\n\
             [broadcast]\nkeyframe_interval = {}\n",
            nginx.port, s.keyframe
        ),
    )
    .unwrap();
    let cfg = sub.join("comet.ini").display().to_string();
    let server = Server::start_with(&sub, &["--config", &cfg]);
    let mut db = connect(&server).await;
    let (_s1, mut p1) = join(&server, &mut db, 1).await;
    let (_s2, mut p2) = join(&server, &mut db, 2).await;
    p1.start_tone(TONES[0], 4000.0, 1);
    p2.set_tone(false);
    p2.start_tone(TONES[1], 4000.0, 2);
    let scratch = sub.join("segment.ts");
    // Warm up: a playlist with a few segments.
    let end = Instant::now() + Duration::from_secs(60);
    while served_playlist(&nginx).is_none_or(|p| p.segments.len() < 3) {
        assert!(Instant::now() < end, "no HLS playlist: {}", nginx.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out = Vec::new();
    let mut durations: Vec<f64> = Vec::new();
    for _ in 0..samples {
        // Silence, until a segment listed from now on has none of the tone.
        p2.set_tone(false);
        let seen: Vec<String> = served_playlist(&nginx)
            .map(|p| p.segments.into_iter().map(|s| s.0).collect())
            .unwrap_or_default();
        let end = Instant::now() + Duration::from_secs(30);
        'silent: loop {
            if let Some(p) = served_playlist(&nginx) {
                for (uri, _) in p.segments.iter().filter(|s| !seen.contains(&s.0)) {
                    if let Some(b) = http_get(nginx.http, &format!("/hls/{uri}"))
                        && !any_tone(&decode_audio(&b, &scratch), TONES[1])
                    {
                        break 'silent;
                    }
                }
            }
            assert!(Instant::now() < end, "the tone never left the HLS stream");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A uniformly random phase against the fragment boundaries (the silence check ends
        // just after a segment was listed).
        let phase = rand::random_range(0..(s.keyframe * 1000.0) as u64);
        tokio::time::sleep(Duration::from_millis(phase)).await;
        let known: Vec<String> = served_playlist(&nginx)
            .map(|p| p.segments.into_iter().map(|s| s.0).collect())
            .unwrap_or_default();
        p2.set_tone(true);
        let end = Instant::now() + Duration::from_secs(30);
        let onset_at = loop {
            if let Some(t) = p2.tone_onset() {
                break t;
            }
            assert!(Instant::now() < end, "the peer never sent the tone");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let mut webrtc = None;
        let mut fetched: Vec<String> = known.clone();
        let sample = 'found: loop {
            if webrtc.is_none() && {
                let heard = p1.heard_last(960);
                heard.len() == 960 && Spectrum::measure(&heard, &[TONES[1]]).at(TONES[1]) >= PRESENT
            } {
                webrtc = SystemTime::now().duration_since(onset_at).ok();
            }
            if let Some(p) = served_playlist(&nginx) {
                let listed_at = SystemTime::now();
                for (uri, dur) in &p.segments {
                    if fetched.contains(uri) {
                        continue;
                    }
                    fetched.push(uri.clone());
                    durations.push(*dur);
                    let Some(b) = http_get(nginx.http, &format!("/hls/{uri}")) else {
                        continue;
                    };
                    if let Some(at) = onset(&decode_audio(&b, &scratch), TONES[1]) {
                        break 'found Sample {
                            listed: listed_at
                                .duration_since(onset_at)
                                .unwrap_or_default()
                                .as_secs_f64(),
                            offset: at as f64 / 48_000.0,
                            duration: *dur,
                            target: p.target,
                            webrtc: webrtc.map(|d| d.as_secs_f64()),
                        };
                    }
                }
            }
            assert!(Instant::now() < end, "the tone never reached HLS");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "  {}: glass-to-HLS-listed {:.2} s (onset {:.2} s into a {:.2} s segment, target \
             {} s); with a player's 3-target-duration hold-back ~{:.2} s; glass-to-WebRTC {}",
            s.label,
            sample.listed,
            sample.offset,
            sample.duration,
            sample.target,
            sample.with_player(),
            sample
                .webrtc
                .map(|w| format!("{:.2} s", w))
                .unwrap_or_else(|| "not seen in 20 ms polls".into())
        );
        out.push(sample);
    }
    let longest = durations.iter().cloned().fold(0.0, f64::max);
    println!(
        "  {}: {} segments, durations {:.2}..{:.2} s",
        s.label,
        durations.len(),
        durations.iter().cloned().fold(f64::INFINITY, f64::min),
        longest
    );
    p1.close().await;
    p2.close().await;
    drop(server);
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = arg("--seconds", 20);
    let delays = arg("--delays", 6);
    let dir = tempfile::tempdir().unwrap();
    if !flag("--skip-cpu") {
        cpu(dir.path(), seconds).await;
    }
    if flag("--skip-delay") {
        return;
    }
    let mut table = Vec::new();
    for s in SETTINGS {
        println!(
            "glass-to-HLS, {}: keyframe_interval {} s, hls_fragment {}, hls_playlist_length {}",
            s.label, s.keyframe, s.fragment, s.playlist
        );
        let samples = delay(dir.path(), s, delays).await;
        let mut listed: Vec<f64> = samples.iter().map(|x| x.listed).collect();
        let mut ear: Vec<f64> = samples.iter().map(Sample::with_player).collect();
        let mut rtc: Vec<f64> = samples.iter().filter_map(|x| x.webrtc).collect();
        listed.sort_by(f64::total_cmp);
        ear.sort_by(f64::total_cmp);
        rtc.sort_by(f64::total_cmp);
        let target = samples.first().map(|x| x.target).unwrap_or(0.0);
        table.push(format!(
            "| {} | {} s / {} / {} | {} | {:.2} / {:.2} s | {:.0} s | {:.2} / {:.2} s | {:.2} s |",
            s.label,
            s.keyframe,
            s.fragment,
            s.playlist,
            samples.len(),
            percentile(&listed, 0.5),
            percentile(&listed, 1.0),
            3.0 * target,
            percentile(&ear, 0.5),
            percentile(&ear, 1.0),
            percentile(&rtc, 0.5),
        ));
    }
    println!(
        "| setting | keyframe / hls_fragment / hls_playlist_length | samples | glass-to-listed \
         p50 / max | player hold-back (3 x target) | glass-to-ear estimate p50 / max | \
         glass-to-WebRTC p50 |"
    );
    for row in table {
        println!("{row}");
    }
}
