//! Draining (SIGUSR1 or `POST /admin/drain`): the server takes no new conference, the calls it
//! has go on (and their conference still takes members), and it exits by itself when the last
//! one ends, or hangs the rest up when `[main] drain_timeout` is over.

mod common;

use std::time::Duration;

use common::audio_room::*;
use common::peer::Peer;
use common::sip_client::{SipClient, Ua};
use common::{assert_metric, connect};
use mysql_async::prelude::Queryable;

/// Calls `number` as `user` and returns the final status of the INVITE.
async fn call_status(server: &common::Server, user: i64, number: &str) -> Option<u16> {
    let peer = Peer::new(&format!("user {user} calling {number}")).await;
    let offer = peer.offer(deadline(10)).await;
    let mut sip = SipClient::connect(
        server.sip,
        Ua::new(&sip_user(user), &hash_of(user), HOST, user as u64),
    )
    .await;
    assert_eq!(
        sip.register().await.status(),
        Some(200),
        "{}",
        sip.transcript()
    );
    let (_, fin) = sip.invite(number, &offer).await;
    let _ = peer.pc.close().await;
    fin.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_finishes_its_calls_then_exits() {
    let mut room = Room::with_talkers(&[], &[1]).await;
    room.invite(2).await;
    invite_to(&mut room.db, "other", 3, &hash_of(3), 1, "audio").await;

    // A web page cannot make a local browser drain the server.
    let (status, body) = room
        .server
        .http_request("POST", "/admin/drain", &["Origin: https://evil.example"])
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_metric(
        &room.server.metrics(&["comet_draining"]),
        "comet_draining",
        0.0,
    );
    let (status, body) = room.server.http_post("/admin/drain").unwrap();
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["draining"], true, "{body}");
    assert_eq!(v["calls"], 1, "{body}");
    room.server
        .wait_log("draining (POST /admin/drain)", 1, Duration::from_secs(5));
    // Load balancers see it, operators too.
    let (status, health) = room.server.http_request("GET", "/healthz", &[]).unwrap();
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("draining"), "{health}");
    // The process is alive: a liveness probe must not restart it.
    let (status, live) = room.server.http_request("GET", "/livez", &[]).unwrap();
    assert_eq!((status, live.as_str()), (200, "ok\n"));
    assert_metric(
        &room.server.metrics(&["comet_draining"]),
        "comet_draining",
        1.0,
    );
    // A second request changes nothing.
    assert_eq!(room.server.http_post("/admin/drain").unwrap().0, 202);

    // A new conference does not start here: SIP 503.
    assert_eq!(
        call_status(&room.server, 3, "0*other*audio").await,
        Some(503)
    );
    // The running one still takes its invited members, and they hear each other.
    room.join(2, TONES[1]).await;
    room.wait_members(&[1, 2]).await;
    room.assert_hearing(&TONES[..2], "two members while draining")
        .await;

    // The last call ends: the server exits by itself, cleanly.
    for user in [1, 2] {
        room.take(user).hang_up().await;
    }
    room.server.wait_log(
        "drained: the last call has ended",
        1,
        Duration::from_secs(10),
    );
    assert!(room.server.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_hangs_up_the_calls_left() {
    let mut room = Room::with_talkers(&["--set", "main.drain_timeout=1"], &[1]).await;
    room.server.signal_usr1();
    room.server
        .wait_log("draining (SIGUSR1)", 1, Duration::from_secs(5));
    let reason = room.member(1).expect_bye().await;
    assert!(reason.contains("server shutting down"), "{reason}");
    let log = room
        .server
        .wait_log("drain timeout", 1, Duration::from_secs(5));
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:#?}");
    assert!(room.server.wait_exit().success());
}

/// Without calls, draining means exiting at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_without_calls_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::Server::start(dir.path());
    let mut db = connect(&server).await;
    db.query_drop("SELECT 1").await.unwrap();
    server.signal_usr1();
    assert!(server.wait_exit().success());
}
