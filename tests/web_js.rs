//! The browser code's unit tests (`web/test/*.test.mjs`, node's test runner): the video API's
//! signalling against fakes of the comet API and JsSIP, the built-in comet client, SDP edits,
//! the demo page's logic, and the built bundle itself.

mod common;

use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn node_test_runner_passes_web_tests() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let child = tokio::process::Command::new(common::tool("node"))
        .args(["--test", "test/"])
        .current_dir(&web)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("node --test finished within 120 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    assert!(passed >= 30, "only {passed} JS tests ran:\n{stdout}");
}
