//! Start-up behaviour of the binary: the banner, configuration files, warnings and refusals.

mod common;

use std::process::Command;

use common::Server;

#[test]
fn banner_says_what_listens_where() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let text = s.stdout.join("\n");
    assert!(text.contains("CometQL (MySQL protocol)"), "{text}");
    assert!(text.contains(&s.cometql.to_string()), "{text}");
    assert!(text.contains("dev_key"), "{text}");
    assert!(s.cometql.ip().is_loopback());
}

#[test]
fn config_file_unknown_keys_warn_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("comet.ini");
    std::fs::write(
        &ini,
        "[main]\npassword = from-file\n\n[cometql]\nip = 127.0.0.1\nprot = 1\n[db]\nhost = localhost\n",
    )
    .unwrap();
    let mut s = Server::start_with(dir.path(), &["--config", ini.to_str().unwrap()]);
    // The flag in the harness overrides the file's password; the file's keys are read.
    let status = s.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let err = s.stderr_lines().join("\n");
    assert!(
        err.contains(&format!("{}:6: unknown key [cometql] prot", ini.display())),
        "{err}"
    );
    assert!(
        err.contains("[db] host is a CppComet/FreeSWITCH setting"),
        "{err}"
    );
}

#[test]
fn invalid_values_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("bad.ini");
    std::fs::write(&ini, "[ws]\nport = seventy\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_comet-server"))
        .args(["--config", ini.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2", ini.display())), "{err}");
    assert!(
        err.contains("[ws] port") && err.contains("seventy"),
        "{err}"
    );

    // The public default key on a public address is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_comet-server"))
        .args(["--set", "cometql.ip=0.0.0.0", "--memory-store"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
}

#[test]
fn example_config_is_what_the_binary_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_comet-server"))
        .arg("--print-example-config")
        .output()
        .unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/comet.ini.example")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), shipped);
}

#[tokio::test]
async fn metrics_and_health_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut c = common::connect(&s).await;
    use mysql_async::prelude::*;
    c.query_drop("SELECT 1").await.unwrap();
    let _ = c.query_drop("SELECT * FROM nope WHERE id = 1").await;
    let http = s.http.expect("the HTTP listener is on by default");
    let get = |path: &str| {
        let path = path.to_string();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
            tcp.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut body = String::new();
            tcp.read_to_string(&mut body).await.unwrap();
            body
        }
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/livez").await.starts_with("HTTP/1.1 200"));
    let m = get("/metrics").await;
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        m.contains("# TYPE comet_cometql_queries_total counter"),
        "{m}"
    );
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {m}"))
    };
    assert!(value("comet_cometql_queries_total") >= 2);
    assert!(value("comet_cometql_errors_total") >= 1);
    assert_eq!(value("comet_cometql_connections"), 1);
}

/// The HTTP and comet WebSocket listeners disconnect a client that does not finish its
/// request headers within 10 s (slowloris: a few bytes, then nothing), and one that connects
/// and sends nothing, while a prompt request on the same listeners is answered.
#[tokio::test]
async fn clients_that_never_finish_their_headers_are_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let http = s.http.expect("the HTTP listener is on by default");
    let mut waiting = Vec::new();
    for addr in [http, s.ws] {
        let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        waiting.push(partial);
        waiting.push(silent);
    }
    // And a kept-alive connection after its first answer.
    let mut kept = tokio::net::TcpStream::connect(http).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    waiting.push(kept);
    // Meanwhile the listeners serve others.
    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Each stalled connection is closed by the server (EOF, maybe after a 408), within twice
    // the timeout.
    for (i, mut c) in waiting.into_iter().enumerate() {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(20), c.read_to_end(&mut rest))
                .await;
        assert!(
            matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
            "stalled connection {i} (http partial, http silent, ws partial, ws silent, http kept alive) was not closed"
        );
    }
}

/// `[log] format = json`: every line the server writes to stderr, from start-up to a SIGTERM
/// shutdown, is one JSON object with the timestamp, level, target and message, and an event's
/// fields keep their names and types. Stdout still has the READY line.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(
        dir.path(),
        &["--set", "log.format=json", "--set", "media.threads=2"],
    );
    assert!(
        s.stdout.iter().any(|l| l.starts_with("READY ")),
        "{:?}",
        s.stdout
    );
    let seen = s.wait_log(
        "WebRTC endpoint started",
        1,
        std::time::Duration::from_secs(10),
    );
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    let mut lines = seen;
    lines.extend(s.stderr_lines());
    assert!(lines.len() >= 2, "{lines:?}");
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for o in &objects {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(o[key].is_string(), "no {key}: {o}");
        }
    }
    let started = objects
        .iter()
        .find(|o| o["message"] == "WebRTC endpoint started")
        .unwrap();
    assert_eq!(started["level"], "INFO", "{started}");
    assert_eq!(started["target"], "comet_server::app", "{started}");
    assert_eq!(started["threads"], 2, "{started}");
}
