//! The comet WebSocket protocol through a real WebSocket client (tokio-tungstenite) against the
//! real server binary, with CometQL statements from a real MySQL client.

mod common;

use std::time::Duration;

use common::{PASSWORD, Server, connect};
use futures_util::{SinkExt, StreamExt};
use mysql_async::prelude::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const DEADLINE: Duration = Duration::from_secs(10);

fn url(s: &Server, dev: i64, user: i64, session: &str) -> String {
    format!(
        "ws://{}/ws/sesion={session}&myid={user}&devid={dev}&v=4.08&uuid=uuid{user}x&api=js",
        s.ws
    )
}

async fn open(s: &Server, dev: i64, user: i64, session: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(s, dev, user, session))
        .await
        .expect("websocket connect");
    let info = next(&mut ws).await;
    assert_eq!(info["event"], "serverInfo", "{info}");
    (ws, info)
}

/// The next text frame as JSON, within the deadline.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a frame within the deadline")
            .expect("the connection is open")
            .expect("a valid frame");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Waits for the server to close the connection (frames before the close are returned).
async fn until_closed(ws: &mut Ws) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the close within the deadline")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return frames,
            Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// A round trip through the server: everything sent to this connection before the answer has
/// arrived by the time this returns (frames are delivered in order). Returns those frames.
async fn barrier(ws: &mut Ws) -> Vec<Value> {
    send(ws, "pipe_count\nweb_barrier\nbarrier").await;
    let mut before = Vec::new();
    loop {
        let f = next(ws).await;
        if f["pipe"] == "_answer_pipe_count" && f["marker"] == "barrier" {
            return before;
        }
        before.push(f);
    }
}

async fn cql(c: &mut mysql_async::Conn, sql: &str) {
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn server_info_and_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (1, 'hashOfUser1')",
    )
    .await;

    let (_ws, info) = open(&s, 0, 1, "hashOfUser1").await;
    assert_eq!(info["authorized"], true);
    assert_eq!(info["data"], "hashOfUser1");
    assert_eq!(info["pipe"], "sys");
    assert!(info["message_send_time"].as_i64().unwrap() > 1_600_000_000);
    assert!(info["server"].is_string());

    let (_ws, info) = open(&s, 0, 1, "wrongHash").await;
    assert_eq!(info["authorized"], false);
    assert_eq!(info["data"], "");
    let (_ws, info) = open(&s, 0, 0, "").await;
    assert_eq!(info["authorized"], false);

    // An HS256 JWT signed with dev_key + dev_id authorizes, and gives a user without a hash one.
    let exp = comet_server::cometql::engine::unix_now() + 600;
    let token = comet_server::ws::jwt::sign(&json!({"user_id": 9, "exp": exp}), PASSWORD, 0);
    let (_ws, info) = open(&s, 0, 9, &token).await;
    assert_eq!(info["authorized"], true);
    let hash = info["data"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 32);
    let stored: Vec<String> = db
        .query("SELECT hash FROM users_auth WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(
        stored,
        [hash],
        "the hash the browser got is the user's users_auth hash"
    );
    let expired = comet_server::ws::jwt::sign(&json!({"user_id": 9, "exp": 1}), PASSWORD, 0);
    let (_ws, info) = open(&s, 0, 9, &expired).await;
    assert_eq!(info["authorized"], false);
}

#[tokio::test]
async fn bad_urls_get_the_old_error_frame_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/comet-server/ws/sesion=x&myid=1&devid=0",
        s.ws
    ))
    .await
    .unwrap();
    let frames = until_closed(&mut ws).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["event"], "error");
    assert_eq!(frames[0]["pipe"], "sys");
    assert_eq!(frames[0]["data"]["error_code"], 418);
}

/// A session value with UTF-8 in it (the request line may carry raw UTF-8) and longer than
/// the 600 bytes kept, cut inside a character: the connection is served like any other (the
/// cut used to panic the connection's handler, which dropped it without an answer).
#[tokio::test]
async fn a_long_utf8_session_is_cut_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let session = format!("{}é{}", "a".repeat(599), "b".repeat(40));
    let (mut ws, info) = open(&s, 0, 5, &session).await;
    assert_eq!(info["authorized"], false, "{info}");
    send(&mut ws, "pipe_count\nweb_x\nm1").await;
    assert_eq!(next(&mut ws).await["data"], json!(["user_in_pipe", 0]));
}

#[tokio::test]
async fn personal_messages_live_and_queued() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (2, 'h2')",
    )
    .await;

    // Offline: queued, then delivered on connect with fromQueue.
    cql(&mut db, "INSERT INTO users_messages (id, event, message) VALUES (2, 'hello', 'while you were away')").await;
    cql(&mut db, "INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', 2, 5, 'join us', 'video')").await;
    let (mut a, _) = open(&s, 0, 2, "h2").await;
    let q1 = next(&mut a).await;
    assert_eq!(q1["event"], "hello");
    assert_eq!(q1["pipe"], "msg");
    assert_eq!(q1["fromQueue"], true);
    assert_eq!(q1["data"], "while you were away");
    assert!(q1["message_send_time"].is_i64());
    let q2 = next(&mut a).await;
    assert_eq!(q2["event"], "sys_sipCall");
    assert_eq!(q2["fromQueue"], true);
    let data: Value =
        serde_json::from_str(q2["data"].as_str().expect("queued data is a string")).unwrap();
    assert_eq!(data["sys"]["conference_name"], "101");
    let queued: Vec<mysql_async::Row> = db
        .query("SELECT * FROM users_messages WHERE id = 2")
        .await
        .unwrap();
    assert!(queued.is_empty(), "delivered messages leave the queue");

    // Online: delivered live on every connection of the user, not queued.
    let (mut b, _) = open(&s, 0, 2, "h2").await;
    cql(
        &mut db,
        "INSERT INTO users_messages (id, event, message) VALUES (2, 'ping', '{\"x\":1}')",
    )
    .await;
    for ws in [&mut a, &mut b] {
        let f = next(ws).await;
        assert_eq!(
            f,
            json!({"data": "{\"x\":1}", "event": "ping", "pipe": "msg"})
        );
    }
    cql(&mut db, "INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', 2, 5, 'join us', 'video')").await;
    let f = next(&mut a).await;
    let pipe = comet_server::conference::callpipe::call_pipe(
        "0*101*video",
        "127.0.0.1",
        s.sip.port(),
        0,
        "pipesalt",
    );
    let key = f["data"]["sys"]["callKey"].clone();
    assert_eq!(
        f,
        json!({
            "data": {
                "message": "join us",
                "sys": {
                    "callKey": key,
                    "callPipe": pipe,
                    "caller_id": 5,
                    "conference": "true",
                    "conference_name": "101",
                    "mode": "video",
                    "serverName": "127.0.0.1",
                    "serverPort": s.sip.port(),
                    "sipNumber": "0*101*video",
                    "stream": 0
                }
            },
            "event": "sys_sipCall",
            "pipe": "msg"
        })
    );
    let queued: Vec<mysql_async::Row> = db
        .query("SELECT * FROM users_messages WHERE id = 2")
        .await
        .unwrap();
    assert!(queued.is_empty(), "live deliveries are not queued");
}

#[tokio::test]
async fn pipes_broadcast_history_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    let (mut a, _) = open(&s, 0, 0, "").await;
    let (mut b, _) = open(&s, 0, 0, "").await;
    send(&mut a, "subscription\nweb_news\nweb_other").await;
    send(&mut b, "subscription\nweb_news").await;
    barrier(&mut a).await;
    barrier(&mut b).await;
    let n: Vec<(String, String)> = db
        .query("SELECT * FROM pipes WHERE name IN ('web_news', 'web_other')")
        .await
        .unwrap();
    assert_eq!(
        n,
        [
            ("web_news".into(), "2".into()),
            ("web_other".into(), "1".into())
        ]
    );
    let rows: Vec<mysql_async::Row> = db
        .query("SELECT * FROM users_in_pipes WHERE name = 'web_news'")
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let ip: String = rows[0].get("ip").unwrap();
    assert_eq!(ip, "127.0.0.1");

    cql(
        &mut db,
        "INSERT INTO pipes_settings (name, length) VALUES ('web_news', 10)",
    )
    .await;
    cql(
        &mut db,
        "INSERT INTO pipes_messages (name, event, message) VALUES ('web_news', 'story', 'extra!')",
    )
    .await;
    for ws in [&mut a, &mut b] {
        let f = next(ws).await;
        assert_eq!(f["data"], "extra!");
        assert_eq!(f["event"], "story");
        assert_eq!(f["pipe"], "web_news");
        assert!(f["message_send_time"].is_i64());
        assert!(f.get("user_id").is_none());
    }
    // A full replacement: b leaves web_news.
    send(&mut b, "subscription\nweb_other").await;
    barrier(&mut b).await;
    cql(
        &mut db,
        "INSERT INTO pipes_messages (name, event, message) VALUES ('web_news', 'story', 'second')",
    )
    .await;
    assert_eq!(next(&mut a).await["data"], "second");
    assert!(barrier(&mut b).await.is_empty(), "b no longer subscribed");

    // History, as the JS asks for it.
    send(&mut a, "pipe_log\nweb_news\nm1\n").await;
    let h1 = next(&mut a).await;
    let h2 = next(&mut a).await;
    assert_eq!(
        (h1["data"].as_str(), h2["data"].as_str()),
        (Some("extra!"), Some("second"))
    );
    assert_eq!(h1["fromQueue"], true);
    assert_eq!(h1["user_id"], 0);
}

#[tokio::test]
async fn web_pipe2_relays_to_the_others_and_answers_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (3, 'h3')",
    )
    .await;
    let (mut a, _) = open(&s, 0, 3, "h3").await;
    let (mut b, _) = open(&s, 0, 0, "").await;
    send(&mut a, "subscription\nweb_room").await;
    send(&mut b, "subscription\nweb_room").await;
    barrier(&mut a).await;
    barrier(&mut b).await;
    let msg = r#"{"status":"start_accept","type":"video","_cometApi_uuid":"u1"}"#;
    send(&mut a, &format!("web_pipe2\nweb_room\naccept\n*\n{msg}")).await;
    let answer = next(&mut a).await;
    assert_eq!(answer["pipe"], "_answer_to_web_room");
    assert_eq!(answer["event"], "answer");
    assert_eq!(answer["data"]["number_messages"], 1);
    let relayed = next(&mut b).await;
    assert_eq!(relayed["pipe"], "web_room");
    assert_eq!(relayed["event"], "accept");
    assert_eq!(relayed["user_id"], 3);
    assert_eq!(
        relayed["data"],
        r#"{\"status\":\"start_accept\",\"type\":\"video\",\"_cometApi_uuid\":\"u1\"}"#,
        "the JSON travels as a backslash-escaped string"
    );
    assert!(
        barrier(&mut a).await.is_empty(),
        "the sender does not get its own message"
    );
    // Hidden sender with @, and errors that keep the connection open.
    send(&mut a, "web_pipe2\n@web_room\nx\n*\nhi").await;
    next(&mut a).await;
    assert_eq!(next(&mut b).await["user_id"], 0);
    send(&mut a, "web_pipe2\nroom\nx\n*\nhi").await;
    let e = next(&mut a).await;
    assert_eq!(e["event"], "error");
    assert_eq!(e["data"]["number_messages"], -1);
    send(&mut b, "web_pipe2\nwebauth_x\nx\n*\nhi").await;
    assert_eq!(
        next(&mut b).await["event"],
        "error",
        "anonymous users cannot send to webauth_"
    );
    barrier(&mut a).await;
}

#[tokio::test]
async fn track_pipes_counts_and_presence() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (4, 'h4')",
    )
    .await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (5, 'h5')",
    )
    .await;
    let (mut watcher, _) = open(&s, 0, 0, "").await;
    send(&mut watcher, "subscription\ntrack_call\nuser_status_5").await;
    barrier(&mut watcher).await;

    let (mut u4, _) = open(&s, 0, 4, "h4").await;
    send(&mut u4, "subscription\ntrack_call").await;
    let joined = next(&mut watcher).await;
    assert_eq!(joined["event"], "subscription");
    assert_eq!(joined["pipe"], "track_call");
    assert_eq!(joined["data"], json!({"user_id": 4, "uuid": "uuid4x"}));
    send(&mut u4, "track_pipe_users\ntrack_call\nm7").await;
    let users = next(&mut u4).await;
    assert_eq!(users["marker"], "m7");
    assert_eq!(users["data"].as_array().unwrap().len(), 2);
    send(&mut u4, "pipe_count\ntrack_call\nm8").await;
    let count = next(&mut u4).await;
    assert_eq!(count["data"], json!(["user_in_pipe", 2]));
    send(&mut u4, "pipe_count\nnot_web\nm9").await;
    assert_eq!(next(&mut u4).await["event"], "error");
    send(&mut u4, "user_data\nm10\n5").await;
    let ud = next(&mut u4).await;
    assert_eq!(ud["pipe"], "_answer");
    assert_eq!(ud["marker"], "m10");
    assert_eq!(ud["data"], json!({"user_data": "", "user_id": 5}));

    // users_time: 0 while online; presence events on user_status_<id>.
    let (u5, _) = open(&s, 0, 5, "h5").await;
    let online = next(&mut watcher).await;
    assert_eq!(
        online,
        json!({"data": "online", "event": "online", "pipe": "user_status_5"})
    );
    let t: Vec<(i64, i64)> = db
        .query("SELECT * FROM users_time WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(t, [(5, 0)]);
    drop(u5);
    let offline = next(&mut watcher).await;
    assert_eq!(offline["event"], "offline");
    let t: Vec<(i64, i64)> = db
        .query("SELECT * FROM users_time WHERE id = 5")
        .await
        .unwrap();
    assert!(t[0].1 > 1_600_000_000, "last seen time: {t:?}");
    send(&mut watcher, "user_status\n5").await;
    let st = next(&mut watcher).await;
    assert_eq!(st["event"], "user_status_5");
    assert!(st["data"]["last_online_time"].as_i64().unwrap() >= 0);

    drop(u4);
    let left = next(&mut watcher).await;
    assert_eq!(left["event"], "unsubscription");
    assert_eq!(left["data"]["user_id"], 4);
}

#[tokio::test]
async fn deleting_a_users_key_closes_their_connections() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (6, 'h6')",
    )
    .await;
    let (mut a, _) = open(&s, 0, 6, "h6").await;
    let (mut b, _) = open(&s, 0, 6, "h6").await;
    let (mut other, _) = open(&s, 0, 0, "").await;
    cql(&mut db, "DELETE FROM users_auth WHERE id = 6").await;
    until_closed(&mut a).await;
    until_closed(&mut b).await;
    barrier(&mut other).await;
    let (_c, info) = open(&s, 0, 6, "h6").await;
    assert_eq!(info["authorized"], false, "the old key no longer works");
}

#[tokio::test]
async fn limits_and_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (7, 'h7')",
    )
    .await;

    // 16 connections per user; the 17th gets an error and a close.
    let mut conns = Vec::new();
    for _ in 0..16 {
        conns.push(open(&s, 0, 7, "h7").await.0);
    }
    let (mut extra, _) = open(&s, 0, 7, "h7").await;
    let frames = until_closed(&mut extra).await;
    assert_eq!(frames[0]["event"], "error");
    drop(conns);

    // More than 32 pipes: an error frame, the first 32 kept.
    let (mut ws, _) = open(&s, 0, 0, "").await;
    let names: Vec<String> = (0..40).map(|i| format!("web_p{i:02}")).collect();
    send(&mut ws, &format!("subscription\n{}", names.join("\n"))).await;
    let e = next(&mut ws).await;
    assert_eq!(e["event"], "error");
    barrier(&mut ws).await;
    let n: Vec<(String, String)> = db
        .query("SELECT * FROM pipes WHERE name IN ('web_p31', 'web_p32')")
        .await
        .unwrap();
    assert_eq!(
        n,
        [
            ("web_p31".into(), "1".into()),
            ("web_p32".into(), "0".into())
        ]
    );

    // An unknown command: error and close.
    send(&mut ws, "rm -rf\n/").await;
    let frames = until_closed(&mut ws).await;
    assert_eq!(frames[0]["event"], "error");

    // A frame over 65535 bytes: closed (with an error frame).
    let (mut ws, _) = open(&s, 0, 0, "").await;
    let _ = ws
        .send(Message::Text(
            format!("web_pipe2\nweb_x\ne\n*\n{}", "x".repeat(70_000)).into(),
        ))
        .await;
    let frames = until_closed(&mut ws).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["event"], "error");

    // A binary frame: error and close.
    let (mut ws, _) = open(&s, 0, 0, "").await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let frames = until_closed(&mut ws).await;
    assert_eq!(frames[0]["event"], "error");

    // The statistics command the JS sends after connecting is accepted silently.
    let (mut ws, _) = open(&s, 0, 0, "").await;
    send(&mut ws, "statistics\n{\"url\":\"x\"}").await;
    assert!(barrier(&mut ws).await.is_empty());
}

#[tokio::test]
async fn info_endpoint_and_subprotocol_echo() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut req = url(&s, 0, 0, "").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "chat".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("chat")
    );
    assert_eq!(next(&mut ws).await["event"], "serverInfo");

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.ws).await.unwrap();
    tcp.write_all(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
}

#[tokio::test]
async fn wss_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let s = Server::start_with(
        dir.path(),
        &[
            "--set",
            &format!("ws.tls_cert={}", cert_path.display()),
            "--set",
            &format!("ws.tls_key={}", key_path.display()),
        ],
    );
    assert!(
        s.stdout.iter().any(|l| l.contains("wss://")),
        "{:?}",
        s.stdout
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!(
        "wss://localhost:{}/ws/sesion=&myid=0&devid=0&v=4.08&uuid=t&api=js",
        s.ws.port()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            tls,
        ))),
    )
    .await
    .expect("wss connect");
    assert_eq!(next(&mut ws).await["event"], "serverInfo");
}

/// A connection that sends faster than `[ws] commands_per_second` is slowed down, not cut
/// off: every command of a flood is answered, in order, and the pauses are counted.
#[tokio::test]
async fn a_flood_of_commands_is_throttled_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        &[
            "--set",
            "ws.commands_per_second=50",
            "--set",
            "ws.command_burst=5",
        ],
    );
    let (mut ws, _) = open(&s, 0, 0, "").await;
    const FLOOD: usize = 40;
    for i in 0..FLOOD {
        ws.feed(Message::Text(format!("pipe_count\nweb_flood\nm{i}").into()))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..FLOOD {
        let f = next(&mut ws).await;
        assert_eq!(f["pipe"], "_answer_pipe_count", "{f}");
        assert_eq!(f["marker"], format!("m{i}"), "{f}");
    }
    let m = s.metrics(&["comet_ws_throttled_total"]);
    let paused = common::metric(&m, "comet_ws_throttled_total").expect("the metric");
    assert!(paused >= 1.0, "{m}");
    // The connection is still open and served.
    assert!(barrier(&mut ws).await.is_empty());
}

/// `[ws] max_auth_failures`: after that many wrong user keys from one address, its keys are
/// not checked (the connection is anonymous, even with the right key) until its allowance
/// refills; /metrics counts both.
#[tokio::test]
async fn an_address_that_fails_too_often_connects_anonymously() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--set", "ws.max_auth_failures=2"]);
    let mut db = connect(&s).await;
    cql(
        &mut db,
        "INSERT INTO users_auth (id, hash) VALUES (1, 'hashOfUser1')",
    )
    .await;
    let (_ws, info) = open(&s, 0, 1, "hashOfUser1").await;
    assert_eq!(
        info["authorized"], true,
        "the right key, before any failure"
    );
    for guess in ["guess1", "guess2"] {
        let (_ws, info) = open(&s, 0, 1, guess).await;
        assert_eq!(info["authorized"], false);
    }
    let (_ws, info) = open(&s, 0, 1, "hashOfUser1").await;
    assert_eq!(
        info["authorized"], false,
        "the right key, unchecked: {info}"
    );
    let m = s.metrics(&["comet_auth_"]);
    common::assert_metric(&m, r#"comet_auth_failures_total{listener="ws"}"#, 2.0);
    common::assert_metric(&m, r#"comet_auth_blocked_total{listener="ws"}"#, 1.0);
}
