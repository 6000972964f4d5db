//! `comet-loadgen` against the real server binary, a few peers for a couple of seconds, so the
//! load generator cannot rot: its peers register and dial over SIP as JsSIP does, exchange
//! audio (talkers with marker bursts, silent members with DTX), and every probe hears the other
//! talkers and not itself; the mouth-to-ear delay is measured. `--video` makes every peer offer
//! H.264 (the audio MCU answers video inactive: then no peer may send it).
//!
//! The full sweep (`benches/run-load.sh`) is not part of the test suite.

use std::process::Command;

#[test]
fn loadgen_runs_a_small_conference_against_the_server() {
    let (r, ctx) = run_small("1", "4", &["--video"]);
    assert_eq!(r["target"], "comet", "{ctx}");
    assert_eq!(r["joined"], 4, "every peer joins: {ctx}");
    assert_eq!(r["failed"], 0, "{ctx}");
    assert_eq!(r["peers_dead"], 0, "{ctx}");
    // Two talkers and two silent members, all probes in the first conference.
    assert_eq!(r["probes"], 4, "{ctx}");
    assert_eq!(
        r["probes_ok"], 4,
        "each probe hears the other talkers and not itself: {ctx}"
    );
    assert!(
        r["delay_samples"].as_u64().unwrap() >= 2,
        "marker bursts are found in the mix: {ctx}"
    );
    let p50 = r["delay_ms_p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 500.0, "delay p50 {p50} ms: {ctx}");
    assert!(r["audio_packets"].as_u64().unwrap() > 0, "{ctx}");
    assert!(
        r["lost_pct"].as_f64().unwrap() < 5.0,
        "the server sends every member a packet per 20 ms: {ctx}"
    );
    assert!(r["cpu"]["server_pct"].as_f64().unwrap() > 0.0, "{ctx}");
    assert!(r["server_rss_mib"].as_f64().unwrap() > 0.0, "{ctx}");
    assert!(r["join_ms_p50"].as_f64().is_some(), "{ctx}");
    // The server's own counters over the window, read from its /metrics: it ticked and
    // decoded the two talkers.
    let counter = |name: &str| r["server_counters"][name].as_f64().unwrap_or(0.0);
    assert!(counter("comet_mix_ticks_total") > 0.0, "{ctx}");
    assert!(
        counter("comet_audio_frames_total{kind=\"decoded\"}") > 0.0,
        "{ctx}"
    );
    // Video was offered by everyone: either the server answers it inactive (the audio MCU) and
    // nobody sends it, or it takes it and everybody does.
    assert_eq!(r["video"], true, "{ctx}");
    let senders = r["video_sending_peers"].as_u64().unwrap();
    assert!(
        senders == 0 || (senders == 4 && r["video_sent"].as_u64().unwrap() > 0),
        "{ctx}"
    );
}

/// Every stream's 16-bit RTP sequence numbers wrap during the measurement (they start at
/// 65400): the peers' SRTP index moves to the next rollover, and the server follows it, so
/// every probe still hears the other talkers. (Before the load generator kept its
/// sequence numbers in 16 bits, a talker whose random first number was near the wrap went
/// silent for the rest of the run: its packets no longer authenticated.) The server runs its
/// WebRTC endpoint as two threads (`--server-set media.threads=2`), whose SRTP contexts follow
/// the wrap alike.
#[test]
fn rtp_sequence_numbers_wrap_during_the_run() {
    let (r, ctx) = run_small(
        "1",
        "3",
        &["--server-set", "media.threads=2", "--first-seq", "65400"],
    );
    assert_eq!(r["joined"], 3, "{ctx}");
    assert_eq!(r["peers_dead"], 0, "{ctx}");
    // 136 packets after the first one (2.7 s) the numbers wrap: inside the 3 s window, which
    // starts a second after the joins.
    assert_eq!(r["probes"], 3, "{ctx}");
    assert_eq!(
        r["probes_ok"], 3,
        "each probe hears the other talker through the wrap: {ctx}"
    );
    let counter = |name: &str| r["server_counters"][name].as_f64().unwrap_or(0.0);
    assert!(
        counter("comet_audio_frames_total{kind=\"decoded\"}") >= 280.0,
        "the server decoded both talkers through the window: {ctx}"
    );
}

/// `--cluster`: the users are invited on a head and call its media node, which runs the
/// conferences; the probes hear the other talkers as with one process.
#[test]
fn a_run_against_a_cluster() {
    let (r, ctx) = run_small("2", "3", &["--cluster"]);
    assert_eq!(r["target"], "comet-cluster", "{ctx}");
    assert_eq!(r["joined"], 6, "{ctx}");
    assert_eq!(r["peers_dead"], 0, "{ctx}");
    assert_eq!(r["probes"], r["probes_ok"], "{ctx}");
    assert!(r["probes"].as_u64().unwrap_or(0) >= 3, "{ctx}");
    let counter = |name: &str| r["server_counters"][name].as_f64().unwrap_or(0.0);
    assert!(
        counter("comet_audio_frames_total{kind=\"decoded\"}") >= 280.0,
        "the media node decoded the talkers: {ctx}"
    );
}

/// [`run_loadgen`] with `conferences` of `members`, two talkers each, a 3 s window a second
/// after the joins, and `extra` arguments.
fn run_small(conferences: &str, members: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let mut args = vec![
        "--conferences",
        conferences,
        "--members",
        members,
        "--talkers",
        "2",
        "--duration",
        "3",
        "--settle",
        "1",
    ];
    args.extend_from_slice(extra);
    run_loadgen(&args)
}

/// Runs `comet-loadgen run --target comet` against the built server with `args` and the
/// flags every test wants; returns its JSON result (the one run) and, for failure messages,
/// its output and the JSON text.
fn run_loadgen(args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = Command::new(env!("CARGO_BIN_EXE_comet-loadgen"))
        .args(["run", "--target", "comet"])
        .args(args)
        .args([
            "--no-progress",
            "--server-bin",
            env!("CARGO_BIN_EXE_comet-server"),
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run comet-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "comet-loadgen failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json).expect("the JSON result");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (v[0].clone(), format!("{stdout}\n{text}"))
}
