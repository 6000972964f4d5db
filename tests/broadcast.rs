//! Broadcast and recording end to end (issue 8): the real server binary, a real nginx with
//! nginx-rtmp (Debian's `libnginx-mod-rtmp`) producing HLS and DASH into a temp directory, two
//! webrtc-rs peers in a conference (signalled over SIP as JsSIP does), each sending its own
//! tone. What a viewer gets is checked with `ffprobe` and `ffmpeg`: the HLS segments carry H.264
//! at the canvas size and AAC, their audio has both participants' tones (Goertzel), the DASH
//! manifest exists, publishing resumes after nginx is killed and restarted, and the MP4
//! recording is finalized (on the conference's end, and on SIGTERM) with the right streams and
//! duration.
//!
//! Loopback only; every wait polls with a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::audio_room::{ROOM, call, deadline, invite};
use common::nginx::Nginx;
use common::peer::Peer;
use common::sip_client::SipClient;
use common::tones::{self, Spectrum};
use common::{Server, connect, tool};
use mysql_async::prelude::Queryable;
use tokio::time::Instant;

const TONES: [f64; 2] = [440.0, 660.0];
const AMPLITUDE: f64 = 4000.0;
/// A tone counts as present at this amplitude or more (AAC at 128 kbit/s keeps it near 4000).
const HEARD: f64 = AMPLITUDE * 0.3;
/// The canvas of the `video` profile's broadcast.
const CANVAS: (u64, u64) = (640, 360);

/// `ffprobe -show_streams -show_format` as JSON.
fn probe(file: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// (codec_type, codec_name, width, height) of every stream.
fn streams(v: &serde_json::Value) -> Vec<(String, String, u64, u64)> {
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["codec_type"].as_str().unwrap_or("").to_string(),
                        s["codec_name"].as_str().unwrap_or("").to_string(),
                        s["width"].as_u64().unwrap_or(0),
                        s["height"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The audio of media files decoded to 48 kHz mono PCM.
fn decode_audio(files: &[PathBuf]) -> Vec<i16> {
    let mut pcm = Vec::new();
    for f in files {
        let out = Command::new(tool("ffmpeg"))
            .args(["-v", "error", "-i"])
            .arg(f)
            .args(["-vn", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
            .output()
            .expect("run ffmpeg");
        assert!(
            out.status.success(),
            "ffmpeg cannot decode {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        pcm.extend(
            out.stdout
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }
    pcm
}

fn tone_spectrum(pcm: &[i16]) -> Spectrum {
    Spectrum::median_of_windows(pcm, &TONES, tones::RATE as usize / 10)
}

fn both_tones(s: &Spectrum) -> bool {
    TONES.iter().all(|&t| s.at(t) >= HEARD)
}

/// The server's `comet_broadcast*` samples from `/metrics`, by name with labels, e.g.
/// `comet_broadcast_rtmp_tags_total{kind="video"}`.
fn scrape(server: &Server) -> std::collections::BTreeMap<String, f64> {
    let text = server.metrics(&["comet_broadcast"]);
    let m: std::collections::BTreeMap<String, f64> = text
        .split(", ")
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect();
    assert!(
        m.contains_key("comet_broadcasts") && m.contains_key("comet_broadcast_rtmp_bytes_total"),
        "/metrics has no broadcast metrics: {text}"
    );
    m
}

fn metric(m: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("/metrics has no {name}: {m:?}"))
}

/// Scrapes `/metrics` until `ok` holds (an operator's dashboard catching up), or fails with
/// `what` and the last scrape.
async fn wait_metrics(
    server: &Server,
    secs: u64,
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, f64>) -> bool,
) -> std::collections::BTreeMap<String, f64> {
    let end = deadline(secs);
    loop {
        let m = scrape(server);
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < end, "{what} within {secs} s: {m:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A conference member: its SIP connection and its WebRTC peer sending a tone.
struct Member {
    _sip: SipClient,
    peer: Peer,
}

async fn join(server: &Server, db: &mut mysql_async::Conn, user: i64, profile: &str) -> Member {
    invite(db, user, profile).await;
    let mut peer = Peer::new(&format!("user {user}")).await;
    let (sip, _session, _answer) = call(
        server,
        user,
        &format!("0*{ROOM}*{profile}"),
        &mut peer,
        |o| o,
    )
    .await;
    peer.start_tone(TONES[(user - 1) as usize], AMPLITUDE, user as u64);
    Member { _sip: sip, peer }
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("comet.ini");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// The one recording in `dir`, once ffprobe can read it (MP4: once its `moov` is written).
async fn wait_recording(dir: &Path, secs: u64) -> (PathBuf, serde_json::Value) {
    let end = deadline(secs);
    loop {
        let last;
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        if let [file] = files.as_slice() {
            match probe(file) {
                Ok(v) => return (file.clone(), v),
                Err(e) => last = e,
            }
        } else {
            last = format!("files: {files:?}");
        }
        assert!(
            Instant::now() < end,
            "no finalized recording in {} within {secs} s: {last}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn duration_of(v: &serde_json::Value) -> f64 {
    v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(-1.0)
}

/// HLS and DASH through nginx-rtmp, a restart of nginx mid-stream, and the MP4 recording
/// finalized when the backend ends the conference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_dash_reconnect_and_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut nginx = Nginx::start(&dir.path().join("nginx"), "2s", "6s");
    let rec = dir.path().join("rec");
    let config = write_config(
        dir.path(),
        &format!(
            "[profile.video]\nstream = rtmp://127.0.0.1:{}/cam1/{{name}}\nrecord = yes\n\
             [broadcast]\nrecord_dir = {}\n",
            nginx.port,
            rec.display()
        ),
    );
    let server = Server::start_with(dir.path(), &["--config", &config]);
    let mut db = connect(&server).await;
    let before_join = Instant::now();
    let mut a = join(&server, &mut db, 1, "video").await;
    let after_join = Instant::now();
    let mut b = join(&server, &mut db, 2, "video").await;

    // 1. HLS: segments with H.264 at the canvas size and AAC, carrying both tones.
    let end = deadline(60);
    let (segment, spectrum) = loop {
        let segs = nginx.segments(ROOM);
        if segs.len() >= 2 {
            let last = segs[segs.len() - 1].clone();
            let pcm = decode_audio(&segs[segs.len() - 2..]);
            let tail = &pcm[pcm.len().saturating_sub(tones::RATE as usize)..];
            let s = tone_spectrum(tail);
            if both_tones(&s) {
                break (last, s);
            }
            assert!(
                Instant::now() < end,
                "the HLS audio never carried both tones: {s}\n{}",
                nginx.log()
            );
        }
        assert!(
            Instant::now() < end,
            "no HLS segments within 60 s: {:?}\nnginx log:\n{}",
            nginx.segments(ROOM),
            nginx.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!("HLS segment {} hears {spectrum}", segment.display());
    let info = probe(&segment).expect("ffprobe an HLS segment");
    let st = streams(&info);
    assert!(
        st.iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && (s.2, s.3) == CANVAS),
        "HLS segment streams: {st:?}"
    );
    assert!(
        st.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "HLS segment streams: {st:?}"
    );
    let playlist = std::fs::read_to_string(nginx.playlist(ROOM)).unwrap();
    assert!(playlist.contains("#EXTM3U"), "{playlist}");

    // 2. DASH.
    let mpd = nginx.dir.join("dash").join(format!("{ROOM}.mpd"));
    let end = deadline(30);
    while !mpd.is_file() {
        assert!(Instant::now() < end, "no DASH manifest {}", mpd.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let manifest = std::fs::read_to_string(&mpd).unwrap();
    assert!(manifest.contains("<MPD"), "{manifest}");
    assert!(manifest.contains("avc1"), "{manifest}");
    assert!(manifest.contains("mp4a"), "{manifest}");

    // What an operator sees on /metrics while the conference is broadcast and recorded: one
    // broadcast, one RTMP output publishing after one connect, one recording; bytes, audio and
    // video tags and encoded frames flowing, time spent encoding both.
    let live = scrape(&server);
    println!("/metrics while broadcasting: {live:#?}");
    for (name, want) in [
        ("comet_broadcasts", 1.0),
        ("comet_broadcast_rtmp_outputs", 1.0),
        ("comet_broadcast_rtmp_publishing", 1.0),
        ("comet_broadcast_rtmp_connects_total", 1.0),
        ("comet_broadcast_rtmp_reconnects_total", 0.0),
        ("comet_broadcast_rtmp_failures_total", 0.0),
        ("comet_broadcast_recordings", 1.0),
        ("comet_broadcast_recordings_finalized_total", 0.0),
    ] {
        assert_eq!(metric(&live, name), want, "{name}: {live:#?}");
    }
    for name in [
        "comet_broadcast_rtmp_bytes_total",
        "comet_broadcast_rtmp_tags_total{kind=\"audio\"}",
        "comet_broadcast_rtmp_tags_total{kind=\"video\"}",
        "comet_broadcast_recording_bytes_total",
        "comet_broadcast_frames_encoded_total{kind=\"audio\"}",
        "comet_broadcast_frames_encoded_total{kind=\"video\"}",
        "comet_broadcast_encode_seconds_total{kind=\"audio\"}",
        "comet_broadcast_encode_seconds_total{kind=\"video\"}",
    ] {
        assert!(metric(&live, name) > 0.0, "{name}: {live:#?}");
    }
    // Video at 30 fps, AAC at 48000/1024 frames a second: the tag counts follow the encoders.
    let video_tags = metric(&live, "comet_broadcast_rtmp_tags_total{kind=\"video\"}");
    let audio_tags = metric(&live, "comet_broadcast_rtmp_tags_total{kind=\"audio\"}");
    assert!(
        video_tags > 30.0 && audio_tags > 40.0,
        "a few seconds of HLS, yet {video_tags} video and {audio_tags} audio tags"
    );
    let bytes_live = metric(&live, "comet_broadcast_rtmp_bytes_total");
    for reason in ["queue_full", "late", "rate_control"] {
        let name = format!("comet_broadcast_frames_dropped_total{{reason=\"{reason}\"}}");
        println!("{name} {}", metric(&live, &name));
    }

    // 3. nginx dies and comes back: publishing resumes, new segments appear.
    nginx.kill();
    let restarted = SystemTime::now();
    // nginx stays down until the server has noticed (its RTMP output stopped publishing).
    wait_metrics(
        &server,
        30,
        "the lost RTMP connection is not on /metrics",
        |m| metric(m, "comet_broadcast_rtmp_publishing") == 0.0,
    )
    .await;
    nginx.spawn();
    let end = deadline(60);
    loop {
        let fresh: Vec<PathBuf> = nginx
            .segments(ROOM)
            .into_iter()
            .filter(|s| {
                std::fs::metadata(s)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > restarted)
            })
            .collect();
        if let Some(seg) = fresh.last() {
            let st = streams(&probe(seg).expect("ffprobe a segment after the restart"));
            assert!(
                st.iter().any(|s| s.1 == "h264") && st.iter().any(|s| s.1 == "aac"),
                "after the restart: {st:?}"
            );
            println!("after the nginx restart: {}", seg.display());
            break;
        }
        assert!(
            Instant::now() < end,
            "no new HLS segment within 60 s of restarting nginx\nnginx log:\n{}",
            nginx.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // /metrics tells the operator: the connection was lost (a failure), the output published
    // again (a reconnect), and bytes keep flowing.
    let after = wait_metrics(&server, 30, "the reconnect is not on /metrics", |m| {
        metric(m, "comet_broadcast_rtmp_reconnects_total") >= 1.0
            && metric(m, "comet_broadcast_rtmp_publishing") == 1.0
    })
    .await;
    println!("/metrics after the nginx restart: {after:#?}");
    assert!(
        metric(&after, "comet_broadcast_rtmp_failures_total") >= 1.0,
        "{after:#?}"
    );
    assert_eq!(
        metric(&after, "comet_broadcast_rtmp_connects_total"),
        1.0 + metric(&after, "comet_broadcast_rtmp_reconnects_total"),
        "{after:#?}"
    );
    assert_eq!(metric(&after, "comet_broadcast_rtmp_outputs"), 1.0);
    let grown = wait_metrics(&server, 30, "RTMP bytes stopped growing", |m| {
        metric(m, "comet_broadcast_rtmp_bytes_total")
            > metric(&after, "comet_broadcast_rtmp_bytes_total")
    })
    .await;
    assert!(metric(&grown, "comet_broadcast_rtmp_bytes_total") > bytes_live);
    assert!(
        metric(&grown, "comet_broadcast_rtmp_tags_total{kind=\"video\"}") > video_tags,
        "{grown:#?}"
    );

    // 4. The backend ends the conference: the recording is finalized.
    let delete_sent = Instant::now();
    db.query_drop(format!("DELETE FROM conference WHERE name = '{ROOM}'"))
        .await
        .unwrap();
    let (file, info) = wait_recording(&rec, 30).await;
    let seen = Instant::now();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("{ROOM}_")) && name.ends_with(".mp4"),
        "{name}"
    );
    let st = streams(&info);
    assert!(
        st.iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && (s.2, s.3) == CANVAS),
        "recording streams: {st:?}"
    );
    assert!(
        st.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "recording streams: {st:?}"
    );
    // The conference lasted from the first join to the DELETE.
    let d = duration_of(&info);
    let shortest = (delete_sent - after_join).as_secs_f64() - 1.0;
    let longest = (seen - before_join).as_secs_f64() + 1.0;
    println!("recording {name}: {d:.2} s (conference: {shortest:.2}..{longest:.2} s +-1)");
    assert!(
        d >= shortest && d <= longest,
        "recording lasts {d} s, the conference {shortest}..{longest} s"
    );
    let pcm = decode_audio(std::slice::from_ref(&file));
    let tail = &pcm[pcm.len().saturating_sub(4 * tones::RATE as usize)..];
    let s = tone_spectrum(&tail[..tail.len().min(2 * tones::RATE as usize)]);
    assert!(both_tones(&s), "the recording's audio: {s}");
    // /metrics: nothing broadcast any more, one recording finalized, and the bytes it counted
    // are the file's size.
    let ended = wait_metrics(&server, 30, "the broadcast did not end on /metrics", |m| {
        metric(m, "comet_broadcasts") == 0.0 && metric(m, "comet_broadcast_rtmp_outputs") == 0.0
    })
    .await;
    println!("/metrics after the conference: {ended:#?}");
    assert_eq!(metric(&ended, "comet_broadcast_rtmp_publishing"), 0.0);
    assert_eq!(metric(&ended, "comet_broadcast_recordings"), 0.0);
    assert_eq!(
        metric(&ended, "comet_broadcast_recordings_finalized_total"),
        1.0
    );
    assert_eq!(
        metric(&ended, "comet_broadcast_recording_failures_total"),
        0.0
    );
    assert_eq!(
        metric(&ended, "comet_broadcast_recording_bytes_total"),
        std::fs::metadata(&file).unwrap().len() as f64,
        "recording bytes on /metrics vs the file {}",
        file.display()
    );

    a.peer.close().await;
    b.peer.close().await;
    let errors: Vec<String> = server
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(errors.is_empty(), "server errors: {errors:#?}");
}

/// An audio-only profile records audio only; SIGTERM finalizes the recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_recording_finalized_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let config = write_config(
        dir.path(),
        &format!(
            "[profile.audio]\nrecord = yes\n[broadcast]\nrecord_dir = {}\n",
            rec.display()
        ),
    );
    let mut server = Server::start_with(dir.path(), &["--config", &config]);
    let mut db = connect(&server).await;
    let before_join = Instant::now();
    let mut a = join(&server, &mut db, 1, "audio").await;
    let after_join = Instant::now();
    let mut b = join(&server, &mut db, 2, "audio").await;
    // Both are heard by each other (so the mix has both), for a few seconds.
    let end = deadline(30);
    while !(a.peer.heard_len() > 3 * tones::RATE as usize
        && b.peer.heard_len() > 3 * tones::RATE as usize)
    {
        assert!(Instant::now() < end, "the peers hear nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // /metrics: one broadcast that is a recording only (no RTMP output), its file growing.
    let m = wait_metrics(&server, 30, "the recording is not on /metrics", |m| {
        metric(m, "comet_broadcast_recording_bytes_total") > 0.0
    })
    .await;
    assert_eq!(metric(&m, "comet_broadcasts"), 1.0, "{m:#?}");
    assert_eq!(metric(&m, "comet_broadcast_recordings"), 1.0, "{m:#?}");
    assert_eq!(metric(&m, "comet_broadcast_rtmp_outputs"), 0.0, "{m:#?}");
    assert_eq!(
        metric(&m, "comet_broadcast_frames_encoded_total{kind=\"video\"}"),
        0.0,
        "{m:#?}"
    );
    assert!(metric(&m, "comet_broadcast_frames_encoded_total{kind=\"audio\"}") > 0.0);
    let term_sent = Instant::now();
    let status = server.terminate();
    let exited = Instant::now();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let (file, info) = wait_recording(&rec, 5).await;
    let st = streams(&info);
    assert_eq!(
        st.iter()
            .map(|s| (s.0.as_str(), s.1.as_str()))
            .collect::<Vec<_>>(),
        vec![("audio", "aac")],
        "{}",
        file.display()
    );
    let d = duration_of(&info);
    let shortest = (term_sent - after_join).as_secs_f64() - 1.0;
    let longest = (exited - before_join).as_secs_f64() + 1.0;
    println!("audio recording: {d:.2} s (conference: {shortest:.2}..{longest:.2} s +-1)");
    assert!(
        d >= shortest && d <= longest,
        "recording lasts {d} s, the conference {shortest}..{longest} s"
    );
    let pcm = decode_audio(std::slice::from_ref(&file));
    let tail = &pcm[pcm.len().saturating_sub(2 * tones::RATE as usize)..];
    let s = tone_spectrum(tail);
    assert!(both_tones(&s), "the recording's audio: {s}");
    a.peer.close().await;
    b.peer.close().await;
}

/// Colours (Y, U, V) of the two cameras in `hls_shows_the_composed_canvas`.
const CAMERAS: [(u8, u8, u8); 2] = [(82, 90, 240), (145, 54, 34)];

/// The median (Y, U, V) of the middle of `tile` in a 640x360 I420 picture.
fn tile_colour(yuv: &[u8], tile: comet_mixer::Rect) -> (i32, i32, i32) {
    let (w, h) = (CANVAS.0 as usize, CANVAS.1 as usize);
    let (y_plane, rest) = yuv.split_at(w * h);
    let (u_plane, v_plane) = rest.split_at(w * h / 4);
    let (mut ys, mut us, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    let (x0, y0) = (tile.x + tile.w / 4, tile.y + tile.h / 4);
    for y in (y0..y0 + tile.h / 2).step_by(3) {
        for x in (x0..x0 + tile.w / 2).step_by(3) {
            let (x, y) = (x as usize, y as usize);
            ys.push(y_plane[y * w + x]);
            us.push(u_plane[(y / 2) * (w / 2) + x / 2]);
            vs.push(v_plane[(y / 2) * (w / 2) + x / 2]);
        }
    }
    let median = |v: &mut Vec<u8>| {
        v.sort_unstable();
        i32::from(v[v.len() / 2])
    };
    (median(&mut ys), median(&mut us), median(&mut vs))
}

fn near(c: (i32, i32, i32), want: (u8, u8, u8)) -> bool {
    (c.0 - i32::from(want.0)).abs() <= 16
        && (c.1 - i32::from(want.1)).abs() <= 16
        && (c.2 - i32::from(want.2)).abs() <= 16
}

/// With members sending cameras, the broadcast carries the video MCU's viewer canvas: one
/// camera big (the speaker), the other as a thumbnail; not the "no video" card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_shows_the_composed_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&dir.path().join("nginx"), "2s", "6s");
    let config = write_config(
        dir.path(),
        &format!(
            "[profile.video]\nstream = rtmp://127.0.0.1:{}/cam1/{{name}}\n",
            nginx.port
        ),
    );
    let server = Server::start_with(dir.path(), &["--config", &config]);
    let mut db = connect(&server).await;
    let mut peers = Vec::new();
    for user in [1i64, 2] {
        invite(&mut db, user, "video").await;
        let mut peer =
            Peer::with_video(&format!("user {user}"), std::sync::Arc::new(|_| Vec::new())).await;
        let (sip, _session, _answer) =
            call(&server, user, &format!("0*{ROOM}*video"), &mut peer, |o| o).await;
        peer.start_tone(TONES[(user - 1) as usize], AMPLITUDE, user as u64);
        peer.start_camera(CAMERAS[(user - 1) as usize], 320, 180, 15);
        peers.push((sip, peer));
    }
    let rects = comet_mixer::LayoutConfig::new(
        comet_mixer::LayoutKind::ActiveSpeaker,
        CANVAS.0 as u32,
        CANVAS.1 as u32,
    )
    .tiles(2)
    .unwrap();
    let big = comet_mixer::fit_rect(320, 180, rects[0]);
    let small = comet_mixer::fit_rect(320, 180, rects[1]);
    let end = deadline(60);
    loop {
        if let Some(seg) = nginx.segments(ROOM).last() {
            let out = Command::new(tool("ffmpeg"))
                .args(["-v", "error", "-i"])
                .arg(seg)
                .args([
                    "-frames:v",
                    "1",
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "yuv420p",
                    "-",
                ])
                .output()
                .expect("run ffmpeg");
            if out.status.success() && out.stdout.len() == (CANVAS.0 * CANVAS.1 * 3 / 2) as usize {
                let (b, s) = (
                    tile_colour(&out.stdout, big),
                    tile_colour(&out.stdout, small),
                );
                let shows = |x, y| near(b, CAMERAS[x]) && near(s, CAMERAS[y]);
                if shows(0, 1) || shows(1, 0) {
                    println!("the broadcast canvas: big {b:?}, thumbnail {s:?}");
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "the HLS picture never showed both cameras: big tile {b:?}, thumbnail {s:?}"
                );
            }
        }
        assert!(
            Instant::now() < end,
            "no HLS picture within 60 s\n{}",
            nginx.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (_sip, mut p) in peers {
        p.close().await;
    }
}
