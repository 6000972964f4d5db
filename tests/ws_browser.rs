//! A real browser (headless Chromium) speaks the comet WebSocket protocol from a page with plain
//! JavaScript: it receives the `sys_sipCall` invitation after a CometQL INSERT, and two pages
//! signal each other with `web_pipe2` on the call pipe. Pages report what they see over HTTP.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use common::{Server, connect, tool};
use mysql_async::prelude::*;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

const PAGE: &str = include_str!("browser/comet_page.html");

/// A browser process and its throw-away profile directory (removed after the process).
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium(url: &str) -> Browser {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(tool("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    Browser {
        child,
        _profile: profile,
    }
}

type Reports = Arc<Mutex<mpsc::UnboundedSender<(String, String, Value)>>>;

async fn report(State(tx): State<Reports>, Json(v): Json<Value>) -> &'static str {
    let page = v["page"].as_str().unwrap_or("").to_string();
    let event = v["event"].as_str().unwrap_or("").to_string();
    let _ = tx.lock().await.send((page, event, v["data"].clone()));
    "ok"
}

/// Waits (with a deadline) for a report from `page` with `event`.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<(String, String, Value)>,
    seen: &mut Vec<(String, String, Value)>,
    page: &str,
    event: &str,
) -> Value {
    if let Some(i) = seen.iter().position(|(p, e, _)| p == page && e == event) {
        return seen.remove(i).2;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("page {page} did not report {event} within 60 s; saw {seen:?}")
            })
            .expect("report channel open");
        if got.0 == page && got.1 == event {
            return got.2;
        }
        seen.push(got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_pages_get_invited_and_signal_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    db.query_drop("INSERT INTO users_auth (id, hash) VALUES (11, 'hashEleven')")
        .await
        .unwrap();
    db.query_drop("INSERT INTO users_auth (id, hash) VALUES (12, 'hashTwelve')")
        .await
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/page.html", get(|| async { axum::response::Html(PAGE) }))
        .route("/report", post(report))
        .with_state(Arc::new(Mutex::new(tx)));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(http, app).await });

    let page = |role: &str, user: u32, hash: &str| {
        format!(
            "http://{http_addr}/page.html?role={role}&user={user}&hash={hash}&ws={}",
            s.ws
        )
    };
    let _a = chromium(&page("a", 11, "hashEleven"));
    let _b = chromium(&page("b", 12, "hashTwelve"));
    let mut seen = Vec::new();
    for p in ["a", "b"] {
        let info = wait_for(&mut rx, &mut seen, p, "serverInfo").await;
        assert_eq!(info["authorized"], true, "page {p}: {info}");
        assert_eq!(info["hasKey"], true);
    }

    // The backend invites both users; each page gets sys_sipCall live.
    for user in [11, 12] {
        db.query_drop(format!(
            "INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', {user}, 11, 'call', 'video')"
        ))
        .await
        .unwrap();
    }
    let pipe = comet_server::conference::callpipe::call_pipe(
        "0*101*video",
        "127.0.0.1",
        s.sip.port(),
        0,
        "pipesalt",
    );
    for p in ["a", "b"] {
        let call = wait_for(&mut rx, &mut seen, p, "sys_sipCall").await;
        assert_eq!(call["sys"]["callPipe"], pipe.as_str(), "page {p}");
        assert_eq!(call["sys"]["conference_name"], "101");
        assert_eq!(call["sys"]["mode"], "video");
        assert_eq!(call["sys"]["caller_id"], 11);
        assert_eq!(call["message"], "call");
    }

    // Page a's `accept` reaches page b through the server, escaped and attributed to user 11.
    let relay = wait_for(&mut rx, &mut seen, "b", "relay").await;
    assert_eq!(relay["pipe"], pipe.as_str());
    assert_eq!(relay["user_id"], 11);
    assert_eq!(relay["data"]["status"], "start_accept");
    assert_eq!(relay["data"]["type"], "video");
    let answer = wait_for(&mut rx, &mut seen, "a", "answer").await;
    assert!(answer["number_messages"].as_u64().unwrap() >= 1);
}
