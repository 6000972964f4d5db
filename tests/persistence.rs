//! A crash loses no acknowledged write: the server is killed with SIGKILL right after an INSERT
//! was acknowledged, restarted on the same data directory, and the rows are there.

mod common;

use common::{Server, assert_metric, connect, metric};
use mysql_async::prelude::*;

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let mut c = connect(&s).await;
    c.query_drop("INSERT INTO users_auth (id, hash) VALUES (77, 'survivor')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO conference (name, user_id, message, profile) VALUES ('crash', 77, 'm', 'audio')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO pipes_settings (name, length) VALUES ('web_log', 5)")
        .await
        .unwrap();
    c.query_drop(
        "INSERT INTO pipes_messages (name, event, message) VALUES ('web_log', 'e', 'kept')",
    )
    .await
    .unwrap();
    // The store counts what it did: each statement's writes, in committed transactions.
    let m = s.metrics(&["comet_store_"]);
    let writes = metric(&m, r#"comet_store_requests_total{kind="write"}"#).expect(&m);
    assert!(writes >= 5.0, "{m}");
    assert!(
        metric(&m, "comet_store_commits_total").expect(&m) >= 1.0,
        "{m}"
    );
    assert_metric(&m, "comet_store_commit_failures_total", 0.0);
    // Acknowledged: kill at once, no shutdown path runs.
    s.kill();
    drop(c);

    let s = Server::start(dir.path());
    let mut c = connect(&s).await;
    let hash: Vec<String> = c
        .query("SELECT hash FROM users_auth WHERE id = 77")
        .await
        .unwrap();
    assert_eq!(hash, ["survivor"]);
    let conf: Vec<(String, String)> = c
        .query("SELECT user_id, profile FROM conference WHERE name = 'crash'")
        .await
        .unwrap();
    assert_eq!(conf, [("77".to_string(), "audio".to_string())]);
    // The queued sys_sipCall for the offline user survived too.
    let queued: Vec<String> = c
        .query("SELECT event FROM users_messages WHERE id = 77")
        .await
        .unwrap();
    assert_eq!(queued, ["sys_sipCall"]);
    let hist: Vec<String> = c
        .query("SELECT message FROM pipes_messages WHERE name = 'web_log'")
        .await
        .unwrap();
    assert_eq!(hist, ["kept"]);
    // Those SELECTs were answered by the reader connections, and nothing waits.
    let m = s.metrics(&["comet_store_"]);
    let reads = metric(&m, r#"comet_store_requests_total{kind="read"}"#).expect(&m);
    assert!(reads >= 4.0, "{m}");
    assert_metric(&m, r#"comet_store_requests_waiting{kind="read"}"#, 0.0);
}

#[tokio::test]
async fn memory_store_forgets_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(dir.path(), &["--memory-store"]);
    assert!(
        s.stdout.iter().any(|l| l.contains("memory")),
        "{:?}",
        s.stdout
    );
    let mut c = connect(&s).await;
    c.query_drop("INSERT INTO users_auth (id, hash) VALUES (1, 'gone')")
        .await
        .unwrap();
    assert_eq!(
        s.metrics(&["comet_store_"]),
        "",
        "the memory store keeps no counters"
    );
    s.kill();
    let s = Server::start_with(dir.path(), &["--memory-store"]);
    let mut c = connect(&s).await;
    let hash: Vec<String> = c
        .query("SELECT hash FROM users_auth WHERE id = 1")
        .await
        .unwrap();
    assert!(hash.is_empty());
}
