//! The demo as a person uses it, in real browsers: `tests/browser/demo.spec.mjs` (Playwright
//! driving Debian's Chromium with fake camera and microphone) opens the demo page of a running
//! server in two contexts, joins room 101 from both, waits for inbound audio (and video when
//! the server composes it) and for two members in the list, mutes one (checked in
//! conference_members over CometQL), and leaves. Screenshots: tests/artifacts/demo/.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{PASSWORD, Server, tool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_join_room_101_hear_each_other_mute_and_leave() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir()
            && browser_dir.join("node_modules/mysql2").is_dir(),
        "playwright-core and mysql2 are missing from tests/browser/node_modules: run \
         scripts/setup.sh test (npm ci in tests/browser)"
    );
    let artifacts = root.join("tests/artifacts/demo");
    let _ = std::fs::remove_dir_all(&artifacts);

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
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
