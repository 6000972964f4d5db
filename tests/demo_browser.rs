//! The demo as a person uses it, in real browsers: `tests/browser/demo.spec.mjs` (Playwright
//! driving Debian's Chromium with fake camera and microphone) opens the demo page of a running
//! server in two contexts, joins room 101 from both, waits for inbound audio (and video when
//! the server composes it) and for two members in the list, mutes one (checked in
//! conference_members over CometQL), and leaves. Screenshots: tests/artifacts/demo/. The same
//! script runs against a cluster's head whose conferences run on a media node: the page and
//! its `cometVideoApi.js` are the head's, and the browsers' SIP and media go to the node the
//! `sys_sipCall` names (tests/artifacts/demo-cluster/).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{PASSWORD, Server, tool};

/// One browser run at a time: each sends and receives real-time media on the same 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_join_room_101_hear_each_other_mute_and_leave() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    run_demo(&s, "demo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_works_when_its_conference_runs_on_a_media_node() {
    const SECRET: &str = "demo-cluster-secret-0123";
    let _turn = ONE_AT_A_TIME.lock().await;
    let head_dir = tempfile::tempdir().unwrap();
    let head = Server::start_with(
        head_dir.path(),
        &[
            "--set",
            &format!("cluster.secret={SECRET}"),
            "--set",
            "cluster.port=0",
            "--set",
            "cluster.local_media=false",
        ],
    );
    let link = head
        .ready_addr("cluster")
        .expect("the head's READY line names its cluster listener");
    let node_dir = tempfile::tempdir().unwrap();
    let node = Server::start_with(
        node_dir.path(),
        &[
            "--set",
            &format!("cluster.secret={SECRET}"),
            "--set",
            &format!("cluster.head={link}"),
        ],
    );
    head.wait_log("media node connected", 1, Duration::from_secs(15));
    run_demo(&head, "demo-cluster").await;
    // The calls ran on the node: it answered them (the head runs no conference).
    let calls = |s: &Server| {
        common::metric(
            &s.metrics(&["comet_sip_calls_started_total"]),
            "comet_sip_calls_started_total",
        )
    };
    assert_eq!(calls(&head), Some(0.0));
    assert!(calls(&node).is_some_and(|n| n >= 2.0), "{:?}", calls(&node));
}

/// Runs `tests/browser/demo.spec.mjs` against `s`'s demo page and CometQL; screenshots go to
/// tests/artifacts/<artifacts>/.
async fn run_demo(s: &Server, artifacts: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir()
            && browser_dir.join("node_modules/mysql2").is_dir(),
        "playwright-core and mysql2 are missing from tests/browser/node_modules: run \
         scripts/setup.sh test (npm ci in tests/browser)"
    );
    let artifacts = root.join("tests/artifacts").join(artifacts);
    let _ = std::fs::remove_dir_all(&artifacts);

    let http = s.http.expect("HTTP listener");

    let mut child = tokio::process::Command::new(tool("node"))
        .arg(browser_dir.join("demo.spec.mjs"))
        .current_dir(&browser_dir)
        .env("DEMO_URL", format!("http://{http}"))
        .env("COMETQL_HOST", s.cometql.ip().to_string())
        .env("COMETQL_PORT", s.cometql.port().to_string())
        .env("COMETQL_PASSWORD", PASSWORD)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", tool("chromium"))
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let status = match tokio::time::timeout(Duration::from_secs(300), child.wait()).await {
        Ok(st) => st.expect("wait for node"),
        Err(_) => {
            let _ = child.kill().await;
            panic!("the demo browser test did not finish within 300 s");
        }
    };
    assert!(
        status.success(),
        "the demo browser test failed ({status}); its steps are above, screenshots and page \
         console logs in {}",
        artifacts.display()
    );
    for shot in [
        "demo-a-in-call.png",
        "demo-b-in-call.png",
        "demo-a-muted.png",
    ] {
        assert!(artifacts.join(shot).is_file(), "{shot}");
    }
}
