//! The `[http]` listener's browser side without a browser: the demo page and its backend
//! endpoint (CometQL statements through the engine, seen from a MySQL client and a comet
//! WebSocket), `/api/cometVideoApi.js`, `/api/features`, and the demo's safety rules.

mod common;

use common::http::{Req, get, post_json, request};
use common::{Server, connect};
use futures_util::StreamExt;
use mysql_async::prelude::*;
use serde_json::{Value, json};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

#[tokio::test]
async fn page_js_api_and_features_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let http = s.http.expect("HTTP listener");
    assert!(
        s.stdout
            .iter()
            .any(|l| l.contains(&format!("open http://{http}/ in two tabs"))),
        "{:?}",
        s.stdout
    );

    let page = get(http, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("/api/cometVideoApi.js") && page.body.contains("/demo/demo.js"));
    for (path, ty) in [
        ("/demo/demo.js", "text/javascript"),
        ("/demo/logic.js", "text/javascript"),
        ("/demo/demo.css", "text/css"),
    ] {
        let r = get(http, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
    }

    let js = get(http, "/api/cometVideoApi.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        js.body.starts_with("/* cometVideoApi.js"),
        "the bundle's banner"
    );
    assert!(js.body.contains("jssip 3."), "JsSIP 3 is bundled");
    assert!(js.body.len() > 100_000);

    let f = get(http, "/api/features").await.json();
    assert_eq!(
        f["video"],
        json!(comet_server::conference::VIDEO_COMPOSITION)
    );
    assert_eq!(f["demo"], json!(true));
    assert_eq!(
        f["demo_profile"],
        json!(if f["video"] == json!(true) {
            "video"
        } else {
            "audio"
        })
    );
    assert_eq!(f["ws"]["port"], json!(s.ws.port()));
    assert_eq!(f["ws"]["tls"], json!(false));
    assert_eq!(f["broadcast"], json!(false), "no [broadcast] hls_url");
    assert_eq!(f["hls"], json!(null));
    assert_eq!(f["sip"]["port"], json!(s.sip.port()));
    assert_eq!(f["profiles"]["video"]["video"], json!(true));
    assert_eq!(f["profiles"]["audio"]["video"], json!(false));
    assert_eq!(f["broadcast"], json!(false));
    assert_eq!(f["hls"], Value::Null);
}

#[tokio::test]
async fn demo_backend_runs_cometql_statements() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let http = s.http.unwrap();
    let mut db = connect(&s).await;
    let before = metric(
        &get(http, "/metrics").await.body,
        "comet_cometql_queries_total",
    );

    // A session: INSERT INTO users_auth with a demo key; asking again gives the same key.
    let r = post_json(http, "/demo/api/session", &json!({"user_id": 5})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let key = r.json()["user_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("demo_"), "{key}");
    let hash: Option<String> = db
        .query_first("SELECT hash FROM users_auth WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(hash.as_deref(), Some(key.as_str()));
    let again = post_json(http, "/demo/api/session", &json!({"user_id": 5})).await;
    assert_eq!(again.json()["user_key"], json!(key));
    let after = metric(
        &get(http, "/metrics").await.body,
        "comet_cometql_queries_total",
    );
    assert!(
        after >= before + 3.0,
        "the demo's statements run through the CometQL engine ({before} -> {after})"
    );

    // Joining: INSERT INTO conference, so the user's comet connection gets sys_sipCall.
    let url = format!(
        "ws://{}/ws/sesion={key}&myid=5&devid=0&v=4.08&uuid=abcdefghijabcdefghijabcdefghij12&api=js",
        s.ws
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let info = next(&mut ws).await;
    assert_eq!(info["event"], "serverInfo");
    assert_eq!(info["authorized"], json!(true));
    let r = post_json(
        http,
        "/demo/api/join",
        &json!({"room": "101", "user_id": 5}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let call = next(&mut ws).await;
    assert_eq!(call["event"], "sys_sipCall");
    assert_eq!(call["data"]["sys"]["conference_name"], "101");
    assert_eq!(
        call["data"]["sys"]["sipNumber"],
        json!(format!("0*101*{}", r.json()["profile"].as_str().unwrap()))
    );
    let invited: Vec<(u32, u32, String)> = db
        .query("SELECT user_id, caller_id, profile FROM conference WHERE name = '101'")
        .await
        .unwrap();
    assert_eq!(invited.len(), 1);
    assert_eq!((invited[0].0, invited[0].1), (5, 5));

    // Nobody is in the media conference yet.
    let m = get(http, "/demo/api/members?room=101").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.json()["members"], json!([]));

    // Leaving: DELETE FROM conference ... AND user_id.
    let r = post_json(
        http,
        "/demo/api/leave",
        &json!({"room": "101", "user_id": 5}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let left: Vec<u32> = db
        .query("SELECT user_id FROM conference WHERE name = '101'")
        .await
        .unwrap();
    assert!(left.is_empty());
}

#[tokio::test]
async fn demo_never_touches_users_or_rooms_that_are_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let http = s.http.unwrap();
    let mut db = connect(&s).await;
    // A real user of the customer, invited to a real room.
    db.query_drop("INSERT INTO users_auth (id, hash) VALUES (77, 'customersSecretHash')")
        .await
        .unwrap();
    db.query_drop(
        "INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('board', 77, 77, '', 'audio')",
    )
    .await
    .unwrap();

    let r = post_json(http, "/demo/api/session", &json!({"user_id": 77})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(!r.body.contains("customersSecretHash"));
    let hash: Option<String> = db
        .query_first("SELECT hash FROM users_auth WHERE id = 77")
        .await
        .unwrap();
    assert_eq!(hash.as_deref(), Some("customersSecretHash"), "unchanged");

    assert_eq!(
        post_json(http, "/demo/api/session", &json!({"user_id": 8}))
            .await
            .status,
        200
    );
    let r = post_json(
        http,
        "/demo/api/join",
        &json!({"room": "board", "user_id": 8}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = post_json(
        http,
        "/demo/api/join",
        &json!({"room": "101", "user_id": 77}),
    )
    .await;
    assert_eq!(r.status, 403, "only demo users join: {}", r.body);
    let r = post_json(
        http,
        "/demo/api/mute",
        &json!({"room": "board", "user_id": 77, "audio": false}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post_json(
        http,
        "/demo/api/leave",
        &json!({"room": "board", "user_id": 77}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let still: Vec<u32> = db
        .query("SELECT user_id FROM conference WHERE name = 'board'")
        .await
        .unwrap();
    assert_eq!(still, vec![77]);

    // Bad input never reaches a statement.
    for body in [
        json!({"room": "1'; DELETE FROM conference WHERE name = 'board", "user_id": 8}),
        json!({"room": "101", "user_id": 0}),
        json!({"room": "", "user_id": 8}),
    ] {
        let r = post_json(http, "/demo/api/join", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }

    // Another site's form post (no JSON content type) and a DNS-rebinding host are refused.
    let r = request(
        http,
        "POST",
        "/demo/api/session",
        Req {
            content_type: Some("text/plain"),
            body: Some(r#"{"user_id": 9}"#),
            ..Req::default()
        },
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    let r = request(
        http,
        "POST",
        "/demo/api/session",
        Req {
            host: Some("attacker.example"),
            content_type: Some("application/json"),
            body: Some(r#"{"user_id": 9}"#),
        },
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let none: Option<String> = db
        .query_first("SELECT hash FROM users_auth WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn a_config_file_turns_the_demo_off_and_keeps_the_js_api() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("comet.ini");
    std::fs::write(&ini, "[http]\ndemo = false\n").unwrap();
    let s = Server::start_with(dir.path(), &["--config", ini.to_str().unwrap()]);
    let http = s.http.unwrap();
    assert!(!s.stdout.iter().any(|l| l.contains("in two tabs")));
    let root = get(http, "/").await;
    assert_eq!(root.status, 200);
    assert!(root.body.contains("demo page is off"), "{}", root.body);
    assert_eq!(get(http, "/demo/demo.js").await.status, 404);
    let r = post_json(http, "/demo/api/session", &json!({"user_id": 5})).await;
    assert_eq!(r.status, 404);
    assert_eq!(get(http, "/api/cometVideoApi.js").await.status, 200);
    assert_eq!(
        get(http, "/api/features").await.json()["demo"],
        json!(false)
    );
}

/// The next comet frame as JSON, within 20 s.
async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let m = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
        .await
        .expect("a frame within 20 s")
        .unwrap()
        .unwrap();
    serde_json::from_str::<Value>(m.to_text().unwrap()).unwrap()
}

/// With `[broadcast] hls_url`, `/api/features` tells the demo page where viewers watch
/// (`{room}` is what the page fills in).
#[tokio::test]
async fn features_name_the_hls_player_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        &[
            "--set",
            "broadcast.hls_url=http://127.0.0.1:8088/hls/{name}.m3u8",
        ],
    );
    let http = s.http.expect("HTTP listener");
    let f = get(http, "/api/features").await.json();
    assert_eq!(f["broadcast"], json!(true));
    assert_eq!(f["hls"], json!("http://127.0.0.1:8088/hls/{room}.m3u8"));
}
