//! Connection caps of the TCP listeners (`[<listener>] max_connections` and
//! `max_connections_per_ip`) against the real binary: a connection beyond a cap is refused the
//! way its protocol expects (CometQL: MySQL error 1040 from a real MySQL client; the comet
//! WebSocket, SIP over WebSocket and HTTP listeners: `503 Service Unavailable`), the others
//! keep working, a freed place is taken again, and /metrics counts what was refused.
//!
//! A held connection is known to be admitted when the server has answered it (the CometQL
//! greeting, the WebSocket `101`, an HTTP `200`). It is released by closing its write side
//! and reading to the server's end of the connection: the server gives the place back before
//! it closes the socket, so no waiting for the server is needed after that.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Server, assert_metric, err_code, mysql_opts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DEADLINE: Duration = Duration::from_secs(10);

/// Connects to `to` from the loopback address `from` (127.0.0.x: still this machine).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until `end` has been read (or the connection ends), within the deadline.
async fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !got.windows(end.len()).any(|w| w == end) {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server answered within the deadline");
    got
}

/// Closes our side and reads to the end of the connection: once this returns, the server has
/// released the connection's place.
async fn release(mut s: TcpStream) {
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the server did not close the connection within the deadline"
    );
}

/// A CometQL connection the server admitted: its greeting (protocol version 10) has arrived.
async fn cometql_held(from: &str, to: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, to).await;
    let mut head = [0u8; 5];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[4], 10, "a MySQL greeting, not an error: {head:?}");
    s
}

/// A connection from `from` gets an ERR packet (0xff) with `code` and a message containing
/// `text` instead of the CometQL greeting, then the end of the connection.
async fn assert_err_instead_of_greeting(from: &str, to: SocketAddr, code: u16, text: &str) {
    let mut c = connect_from(from, to).await;
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, c.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer[4], 0xff, "{answer:?}");
    assert_eq!(u16::from_le_bytes([answer[5], answer[6]]), code);
    assert!(
        String::from_utf8_lossy(&answer).contains(text),
        "{answer:?}"
    );
}

/// A WebSocket upgrade of `path` (with `protocol`, if any); returns the socket and the
/// server's answer head.
async fn upgrade(to: SocketAddr, path: &str, protocol: Option<&str>) -> (TcpStream, String) {
    let mut s = connect_from("127.0.0.1", to).await;
    let protocol = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let head = read_until(&mut s, b"\r\n\r\n").await;
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// The refused connection's whole answer: a 503 that says to retry later, then the end.
async fn assert_refused_503(mut s: TcpStream, what: &str) {
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{what}: the refused connection was not closed"))
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{what}: {answer}"
    );
    assert!(
        answer.contains("\r\nRetry-After: 5\r\n"),
        "{what}: {answer}"
    );
}

#[tokio::test]
async fn cometql_refuses_beyond_its_caps_with_mysql_error_1040() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        &[
            "--set",
            "cometql.max_connections=3",
            "--set",
            "cometql.max_connections_per_ip=2",
        ],
    );
    let a1 = cometql_held("127.0.0.1", s.cometql).await;
    let a2 = cometql_held("127.0.0.1", s.cometql).await;
    // A real MySQL client from the same address: refused with 1040 (the per-address cap).
    let refused =
        mysql_async::Conn::new(mysql_opts(&s, "root", common::PASSWORD, Some("CometQL_v1")))
            .await
            .expect_err("a third connection from 127.0.0.1 is refused");
    assert_eq!(err_code(refused), 1040);
    // Another address still gets in, up to the listener's cap.
    let b = cometql_held("127.0.0.2", s.cometql).await;
    assert_err_instead_of_greeting("127.0.0.3", s.cometql, 1040, "Too many connections").await;

    // A place freed is taken again: the real client logs in and runs a statement.
    release(a1).await;
    let mut conn = common::connect(&s).await;
    use mysql_async::prelude::Queryable;
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    let m = s.metrics(&["comet_connections"]);
    assert_metric(
        &m,
        r#"comet_connections_refused_total{listener="cometql",cap="max_connections_per_ip"}"#,
        1.0,
    );
    assert_metric(
        &m,
        r#"comet_connections_refused_total{listener="cometql",cap="max_connections"}"#,
        1.0,
    );
    assert_metric(&m, r#"comet_connections_open{listener="cometql"}"#, 3.0);
    drop((a2, b, conn));
}

#[tokio::test]
async fn websocket_listeners_answer_503_beyond_their_cap() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        &[
            "--set",
            "ws.max_connections=2",
            "--set",
            "sip.max_connections=2",
        ],
    );
    let comet_path = "/ws/sesion=&myid=0&devid=0&v=4.08&uuid=u&api=js";
    for (name, addr, path, protocol) in [
        ("comet WebSocket", s.ws, comet_path, None),
        ("SIP over WebSocket", s.sip, "/", Some("sip")),
    ] {
        let (first, head) = upgrade(addr, path, protocol).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{name}: {head}");
        let (second, head) = upgrade(addr, path, protocol).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{name}: {head}");
        // The third upgrade request is answered 503 (its request read, so the answer is not
        // lost to a reset).
        let mut third = connect_from("127.0.0.1", addr).await;
        third
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_refused_503(third, name).await;
        // The held connections still work after the refusal: close one, and its place is
        // taken by a new upgrade.
        release(first).await;
        let (again, head) = upgrade(addr, path, protocol).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{name}: {head}");
        drop((second, again));
    }
    let m = s.metrics(&["comet_connections_refused_total"]);
    for listener in ["ws", "sip"] {
        assert_metric(
            &m,
            &format!(
                r#"comet_connections_refused_total{{listener="{listener}",cap="max_connections"}}"#
            ),
            1.0,
        );
    }
}

#[tokio::test]
async fn http_answers_503_beyond_its_cap_and_serves_again_once_a_place_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--set", "http.max_connections=2"]);
    let http = s.http.expect("the HTTP listener is on by default");
    let mut held = Vec::new();
    for _ in 0..2 {
        // Kept alive after its answer: it holds its place.
        let mut k = connect_from("127.0.0.1", http).await;
        k.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = read_until(&mut k, b"\r\n\r\n").await;
        assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
        held.push(k);
    }
    let mut refused = connect_from("127.0.0.1", http).await;
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_refused_503(refused, "HTTP").await;
    release(held.pop().unwrap()).await;
    // /metrics (through the harness's own request) is served in the freed place.
    let m = s.metrics(&["comet_connections"]);
    assert_metric(
        &m,
        r#"comet_connections_refused_total{listener="http",cap="max_connections"}"#,
        1.0,
    );
    // The kept-alive one and the harness's own request for /metrics.
    assert_metric(&m, r#"comet_connections_open{listener="http"}"#, 2.0);
}

/// `[cometql] max_auth_failures` (here 3): an address that gave wrong passwords that
/// many times gets the authentication error (16) saying so, even with the right password,
/// and then at connect, instead of the greeting; another address still gets the greeting;
/// /metrics counts the failures and the refusals.
#[tokio::test]
async fn cometql_blocks_an_address_after_too_many_failed_logins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--set", "cometql.max_auth_failures=3"]);
    let login = |password: &'static str| {
        let opts = mysql_opts(&s, "root", password, Some("CometQL_v1"));
        async move {
            match mysql_async::Conn::new(opts).await {
                Err(mysql_async::Error::Server(e)) => (e.code, e.message),
                other => panic!("expected a refused login, got {other:?}"),
            }
        }
    };
    for k in 0..3 {
        let (code, message) = login("wrong").await;
        assert_eq!(code, 16, "attempt {k}: {message}");
        assert!(
            !message.contains("too many"),
            "attempt {k} is checked: {message}"
        );
    }
    let (code, message) = login(common::PASSWORD).await;
    assert_eq!(code, 16);
    assert!(
        message.contains("too many failed logins"),
        "the right password from the blocked address is refused unchecked: {message}"
    );
    // At connect, instead of the greeting.
    assert_err_instead_of_greeting("127.0.0.1", s.cometql, 16, "too many failed logins").await;
    // Another address is greeted.
    drop(cometql_held("127.0.0.2", s.cometql).await);
    let m = s.metrics(&["comet_auth_"]);
    assert_metric(&m, r#"comet_auth_failures_total{listener="cometql"}"#, 3.0);
    assert_metric(&m, r#"comet_auth_blocked_total{listener="cometql"}"#, 2.0);
}
