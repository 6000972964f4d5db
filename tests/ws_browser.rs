//! A real browser (headless Chromium) speaks the comet WebSocket protocol from a page with plain
//! JavaScript: it receives the `sys_sipCall` invitation after a CometQL INSERT, and two pages
//! signal each other with `web_pipe2` on the call pipe. Pages report what they see over HTTP.

mod common;

use axum::routing::get;
use common::browser::{chromium, serve};
use common::{Server, connect};
use mysql_async::prelude::*;

const PAGE: &str = include_str!("browser/comet_page.html");

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

    let (http_addr, mut reports) = serve(
        axum::Router::new().route("/page.html", get(|| async { axum::response::Html(PAGE) })),
    )
    .await;
    let page = |role: &str, user: u32, hash: &str| {
        format!(
            "http://{http_addr}/page.html?role={role}&user={user}&hash={hash}&ws={}",
            s.ws
        )
    };
    let _a = chromium(&page("a", 11, "hashEleven"));
    let _b = chromium(&page("b", 12, "hashTwelve"));
    for p in ["a", "b"] {
        let info = reports.wait_for(p, "serverInfo", 60).await;
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
        let call = reports.wait_for(p, "sys_sipCall", 60).await;
        assert_eq!(call["sys"]["callPipe"], pipe.as_str(), "page {p}");
        assert_eq!(call["sys"]["conference_name"], "101");
        assert_eq!(call["sys"]["mode"], "video");
        assert_eq!(call["sys"]["caller_id"], 11);
        assert_eq!(call["message"], "call");
    }

    // Page a's `accept` reaches page b through the server, escaped and attributed to user 11.
    let relay = reports.wait_for("b", "relay", 60).await;
    assert_eq!(relay["pipe"], pipe.as_str());
    assert_eq!(relay["user_id"], 11);
    assert_eq!(relay["data"]["status"], "start_accept");
    assert_eq!(relay["data"]["type"], "video");
    let answer = reports.wait_for("a", "answer", 60).await;
    assert!(answer["number_messages"].as_u64().unwrap() >= 1);
}
