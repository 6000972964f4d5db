//! A cluster of two processes on loopback: a head (CometQL, the comet WebSocket, the store)
//! and a media node. The backend talks only to the head; browsers are sent to the node and call
//! it; the head's CometQL sees and moderates the node's conference.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::audio_room::*;
use common::sip_client::{SipClient, Ua};
use common::{Server, connect, err_code};
use mysql_async::prelude::Queryable;

const SECRET: &str = "cluster-secret-for-tests";

/// The head's `cluster=` address from its READY line.
fn cluster_addr(head: &Server) -> SocketAddr {
    head.ready_addr("cluster")
        .expect("the head's READY line names its cluster listener")
}

fn head_flags(local_media: bool) -> Vec<String> {
    [
        "--set".to_string(),
        format!("cluster.secret={SECRET}"),
        "--set".into(),
        "cluster.port=0".into(),
        "--set".into(),
        format!("cluster.local_media={local_media}"),
    ]
    .into()
}

fn node_flags(head: impl std::fmt::Display, secret: &str, name: &str) -> Vec<String> {
    [
        "--set".to_string(),
        format!("cluster.secret={secret}"),
        "--set".into(),
        format!("cluster.head={head}"),
        "--set".into(),
        format!("cluster.name={name}"),
    ]
    .into()
}

fn start(dir: &std::path::Path, flags: &[String]) -> Server {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start_with(dir, &flags)
}

/// Waits (deadline 10 s) until the conference pipe's history, talking events aside, ends with
/// `tail`; returns the events (the history is written after the events go out).
async fn wait_events(db: &mut mysql_async::Conn, tail: &[&str]) -> Vec<String> {
    let end = deadline(10);
    loop {
        let rows: Vec<(String, String)> = db
            .query(format!(
                "SELECT event, message FROM pipes_messages WHERE name = 'conference_{ROOM}'"
            ))
            .await
            .unwrap();
        let names: Vec<String> = rows
            .into_iter()
            .map(|(e, _)| e)
            .filter(|e| e != "talking")
            .collect();
        if names.ends_with(&tail.iter().map(|t| t.to_string()).collect::<Vec<_>>()) {
            return names;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "conference_{ROOM} history {names:?} does not end with {tail:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conference_runs_on_the_media_node_the_head_chose() {
    let head_dir = tempfile::tempdir().unwrap();
    let head = start(head_dir.path(), &head_flags(false));
    let link = cluster_addr(&head);
    let mut db = connect(&head).await;
    // No media node yet, and the head runs none itself: an invitation has nowhere to go.
    db.query_drop("INSERT INTO users_auth (id, hash) VALUES (1, 'key1Secret')")
        .await
        .unwrap();
    let e = db
        .query_drop(format!(
            "INSERT INTO conference (name, user_id, message, profile) VALUES ('{ROOM}', 1, '', 'audio')"
        ))
        .await
        .expect_err("no media node");
    let text = e.to_string();
    assert_eq!(err_code(e), 500, "{text}");
    assert!(text.contains("no media node"), "{text}");

    let node_dir = tempfile::tempdir().unwrap();
    let node = start(node_dir.path(), &node_flags(link, SECRET, "media-1"));
    head.wait_log("media node connected", 1, Duration::from_secs(15));
    node.wait_log("connected to the head", 1, Duration::from_secs(15));
    db.query_drop(format!(
        "INSERT INTO pipes_settings (name, length) VALUES ('conference_{ROOM}', 100)"
    ))
    .await
    .unwrap();

    // The room: the backend's connection is the head's CometQL, the browsers call the node.
    let mut room = Room {
        server: node,
        db,
        members: Vec::new(),
        _dir: node_dir,
    };
    for user in [1, 2, 3] {
        room.invite(user).await;
    }
    // The invitation and the browser's sys_sipCall name the node.
    let node_addr = format!("127.0.0.1:{}", room.server.sip.port());
    let nodes: Vec<String> = room
        .db
        .query(format!("SELECT node FROM conference WHERE name = '{ROOM}'"))
        .await
        .unwrap();
    assert_eq!(
        nodes,
        [node_addr.clone(), node_addr.clone(), node_addr.clone()]
    );
    let queued: Vec<(String, String)> = room
        .db
        .query("SELECT event, message FROM users_messages WHERE id = 2")
        .await
        .unwrap();
    let (event, message) = queued.last().expect("user 2's sys_sipCall is queued");
    assert_eq!(event, "sys_sipCall");
    let sys = &serde_json::from_str::<serde_json::Value>(message).unwrap()["sys"];
    assert_eq!(sys["serverName"], "127.0.0.1");
    assert_eq!(sys["serverPort"], room.server.sip.port());
    assert_ne!(room.server.sip.port(), head.sip.port());

    // Calling the head instead (its SIP listener is up; it runs no conference here) does not
    // split the conference: the invitation names the node.
    let mut wrong = SipClient::connect(head.sip, Ua::new(&sip_user(1), &hash_of(1), HOST, 1)).await;
    assert_eq!(wrong.register().await.status(), Some(200));
    let peer = common::peer::Peer::new("user 1 calling the head").await;
    let offer = peer.offer(deadline(10)).await;
    let (_, answer) = wrong.invite(NUMBER, &offer).await;
    assert_eq!(answer.status(), Some(403), "{}", wrong.transcript());
    let warning = answer.h("warning").unwrap_or_default().to_string();
    assert!(
        warning.contains(&format!("runs on the media node {node_addr}")),
        "{warning}"
    );
    drop((wrong, peer));

    // They call the node: it asks the head for their keys and invitations, and they hear each
    // other; the head's conference_members lists them.
    for (user, tone) in [(1, TONES[0]), (2, TONES[1]), (3, TONES[2])] {
        room.join(user, tone).await;
    }
    room.wait_members(&[1, 2, 3]).await;
    let text = head.metrics(&["comet_cluster_"]);
    common::assert_metric(&text, "comet_cluster_node_members{node=\"media-1\"}", 3.0);
    room.assert_hearing(&TONES[..3], "three members on the node")
        .await;

    // The head moderates the node's conference: user 2 muted is no longer heard.
    let n = room
        .update(&format!(
            "UPDATE conference_members SET audio = 0 WHERE name = '{ROOM}' AND user_id = 2"
        ))
        .await;
    assert_eq!(n, 1);
    room.assert_hearing(&[TONES[0], TONES[2]], "user 2 muted from the head")
        .await;

    // A kick on the head hangs the call up on the node.
    room.update(&format!(
        "DELETE FROM conference WHERE name = '{ROOM}' AND user_id = 2"
    ))
    .await;
    let reason = room.member(2).expect_bye().await;
    assert!(reason.contains("removed from the conference"), "{reason}");
    room.take(2);
    room.wait_members(&[1, 3]).await;

    // The head published the node's events on the conference pipe, and keeps their history.
    let names = wait_events(&mut room.db, &["leave"]).await;
    assert_eq!(names, ["join", "join", "join", "flags", "leave"]);

    // The node shuts down (SIGTERM): it hangs its calls up, reports their leaves and closes
    // its link, and the head publishes the leaves and the end at once.
    room.server.signal_term();
    for user in [1, 3] {
        let reason = room.member(user).expect_bye().await;
        assert!(reason.contains("server shutting down"), "{reason}");
    }
    room.wait_members(&[]).await;
    wait_events(&mut room.db, &["leave", "leave", "end"]).await;
    assert!(room.server.wait_exit().success());
    head.wait_log("media node disconnected", 1, Duration::from_secs(5));
    let text = head.metrics(&["comet_cluster_"]);
    common::assert_metric(&text, "comet_cluster_nodes", 0.0);
    common::assert_metric(&text, "comet_cluster_links_total", 1.0);
}

/// A node that presents the wrong secret is refused, and while it has no head its SIP cannot
/// check anybody: REGISTER gets 500 (as when a store fails); its /healthz says why. Its
/// CometQL answers only its own conference_members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_head_lets_nobody_in() {
    let head_dir = tempfile::tempdir().unwrap();
    let head = start(head_dir.path(), &head_flags(true));
    let link = cluster_addr(&head);
    let node_dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-cluster-secret";
    let node = start(node_dir.path(), &node_flags(link, wrong, "media-x"));
    head.wait_log("connection was refused", 1, Duration::from_secs(15));
    node.wait_log("401", 1, Duration::from_secs(15));
    // The node's CometQL is not the cluster's: a write (or a read of anything but its own
    // conference_members) is refused with a pointer to the head.
    let mut node_db = connect(&node).await;
    let e = node_db
        .query_drop("INSERT INTO users_auth (id, hash) VALUES (7, 'key7Secret')")
        .await
        .expect_err("refused on a media node");
    let text = e.to_string();
    assert_eq!(err_code(e), 403, "{text}");
    assert!(text.contains("send CometQL to its head"), "{text}");
    let e = node_db
        .query_drop("SELECT * FROM users_auth WHERE id = 7")
        .await
        .expect_err("refused on a media node");
    assert_eq!(err_code(e), 403);
    let rows: Vec<mysql_async::Row> = node_db
        .query("SELECT * FROM conference_members")
        .await
        .unwrap();
    assert!(rows.is_empty());
    // Without its head it lets nobody in.
    let mut sip = SipClient::connect(node.sip, Ua::new(&sip_user(7), "key7Secret", HOST, 7)).await;
    let reg = sip.register().await;
    assert_eq!(reg.status(), Some(500), "{}", sip.transcript());
    let health = node.http_get("/healthz").unwrap();
    assert!(
        health.starts_with("unhealthy") && health.contains("not connected to the head"),
        "{health}"
    );
    // Still alive: a liveness probe leaves it running until its head is back.
    assert_eq!(node.http_get("/livez").unwrap(), "ok\n");
    let text = head.metrics(&["comet_cluster_"]);
    common::assert_metric(&text, "comet_cluster_nodes", 0.0);
    assert!(
        common::metric(&text, "comet_cluster_refused_total").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // With local_media the head places conferences on itself meanwhile.
    let mut db = connect(&head).await;
    invite(&mut db, 1, "audio").await;
    let nodes: Vec<String> = db
        .query(format!("SELECT node FROM conference WHERE name = '{ROOM}'"))
        .await
        .unwrap();
    assert_eq!(nodes, [format!("127.0.0.1:{}", head.sip.port())]);
}

/// With `[cluster] tls_cert` the link is wss: a node that trusts the head's certificate
/// (`head_ca`) connects; one that speaks plain ws to it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_can_be_wss() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut flags = head_flags(false);
    flags.extend([
        "--set".to_string(),
        format!("cluster.tls_cert={}", cert.display()),
        "--set".into(),
        format!("cluster.tls_key={}", key.display()),
    ]);
    let head = start(&dir.path().join("head"), &flags);
    assert!(
        head.stdout
            .iter()
            .any(|l| l.contains("media nodes connect to wss://")),
        "{:#?}",
        head.stdout
    );
    let link = cluster_addr(&head);

    // Plain ws to the TLS listener: refused.
    let plain = start(
        &dir.path().join("plain"),
        &node_flags(link, SECRET, "media-plain"),
    );
    head.wait_log("TLS handshake", 1, Duration::from_secs(15));
    drop(plain);

    // wss, trusting the head's certificate.
    let mut flags = node_flags(
        format!("wss://localhost:{}", link.port()),
        SECRET,
        "media-tls",
    );
    flags.extend([
        "--set".to_string(),
        format!("cluster.head_ca={}", cert.display()),
    ]);
    let node = start(&dir.path().join("node"), &flags);
    head.wait_log("media node connected", 1, Duration::from_secs(15));
    node.wait_log("connected to the head", 1, Duration::from_secs(15));
    let text = head.metrics(&["comet_cluster_"]);
    common::assert_metric(&text, "comet_cluster_nodes", 1.0);
}

/// Two media nodes: conferences spread over both, each conference's invitations all name one
/// node; when a node is gone, a new invitation to one of its conferences goes to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conferences_spread_over_two_nodes_and_move_when_one_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let head = start(&dir.path().join("head"), &head_flags(false));
    let link = cluster_addr(&head);
    let one = start(
        &dir.path().join("one"),
        &node_flags(link, SECRET, "media-1"),
    );
    let two = start(
        &dir.path().join("two"),
        &node_flags(link, SECRET, "media-2"),
    );
    head.wait_log("media node connected", 2, Duration::from_secs(15));
    let addr_of = |s: &Server| format!("127.0.0.1:{}", s.sip.port());
    let (a1, a2) = (addr_of(&one), addr_of(&two));
    let mut db = connect(&head).await;
    let rooms: Vec<String> = (0..16).map(|i| format!("spread{i}")).collect();
    for room in &rooms {
        for user in [1, 2] {
            invite_to(&mut db, room, user, &hash_of(user), 1, "audio").await;
        }
    }
    let placed = |rows: Vec<(String, String)>| -> std::collections::BTreeMap<String, String> {
        let mut by_room = std::collections::BTreeMap::new();
        for (room, node) in rows {
            let was = by_room.insert(room.clone(), node.clone());
            assert!(
                was.is_none_or(|w| w == node),
                "{room} has invitations on two nodes"
            );
        }
        by_room
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    for room in &rooms {
        let r: Vec<(String, String)> = db
            .query(format!(
                "SELECT name, node FROM conference WHERE name = '{room}'"
            ))
            .await
            .unwrap();
        assert_eq!(r.len(), 2, "{room}");
        rows.extend(r);
    }
    let by_room = placed(rows);
    let on_one: Vec<&String> = by_room
        .iter()
        .filter(|(_, n)| **n == a1)
        .map(|(r, _)| r)
        .collect();
    let on_two = by_room.values().filter(|n| **n == a2).count();
    assert!(
        !on_one.is_empty() && on_two > 0 && on_one.len() + on_two == rooms.len(),
        "16 conferences over {a1} and {a2}: {by_room:?}"
    );

    // Node one goes away (SIGKILL): the head logs the broken link once it has forgotten it.
    let mut one = one;
    one.kill();
    head.wait_log("media node link lost", 1, Duration::from_secs(15));
    common::assert_metric(
        &head.metrics(&["comet_cluster_nodes"]),
        "comet_cluster_nodes",
        1.0,
    );
    // A new invitation to a conference that was on node one goes to node two, and its
    // sys_sipCall says so.
    let moved = on_one[0];
    invite_to(&mut db, moved, 3, &hash_of(3), 1, "audio").await;
    let node: Vec<String> = db
        .query(format!(
            "SELECT node FROM conference WHERE name = '{moved}' AND user_id = 3"
        ))
        .await
        .unwrap();
    assert_eq!(node, std::slice::from_ref(&a2));
    let queued: Vec<String> = db
        .query("SELECT message FROM users_messages WHERE id = 3")
        .await
        .unwrap();
    let sys = &serde_json::from_str::<serde_json::Value>(queued.last().unwrap()).unwrap()["sys"];
    assert_eq!(sys["serverPort"], two.sip.port());
    // Conferences on node two stay there.
    let stay = by_room.iter().find(|(_, n)| **n == a2).unwrap().0;
    invite_to(&mut db, stay, 4, &hash_of(4), 1, "audio").await;
    let node: Vec<String> = db
        .query(format!(
            "SELECT node FROM conference WHERE name = '{stay}' AND user_id = 4"
        ))
        .await
        .unwrap();
    assert_eq!(node, [a2]);
}

/// A media node drains (SIGUSR1): the head places no new conference there (with no other
/// node, an invitation to a new conference fails), while a new invitation to the conference
/// it runs still names it and that member joins there. When its last call ends the node exits
/// by itself, and the head sees it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_keeps_its_conference_and_gets_no_new_one() {
    let head_dir = tempfile::tempdir().unwrap();
    let head = start(head_dir.path(), &head_flags(false));
    let link = cluster_addr(&head);
    let db = connect(&head).await;
    let node_dir = tempfile::tempdir().unwrap();
    let node = start(node_dir.path(), &node_flags(link, SECRET, "media-1"));
    head.wait_log("media node connected", 1, Duration::from_secs(15));
    node.wait_log("connected to the head", 1, Duration::from_secs(15));
    let mut room = Room {
        server: node,
        db,
        members: Vec::new(),
        _dir: node_dir,
    };
    room.invite(1).await;
    room.join(1, TONES[0]).await;
    room.wait_members(&[1]).await;

    room.server.signal_usr1();
    head.wait_log("media node draining", 1, Duration::from_secs(10));
    common::assert_metric(
        &head.metrics(&["comet_cluster_"]),
        "comet_cluster_nodes_draining",
        1.0,
    );
    room.db
        .query_drop("INSERT INTO users_auth (id, hash) VALUES (3, 'key3Secret')")
        .await
        .unwrap();
    let e = room
        .db
        .query_drop(
            "INSERT INTO conference (name, user_id, message, profile) VALUES ('other', 3, '', 'audio')",
        )
        .await
        .expect_err("the only node drains");
    let text = e.to_string();
    assert_eq!(err_code(e), 500, "{text}");
    assert!(text.contains("draining"), "{text}");

    // The running conference: a new invitation names the node, and the user joins there.
    room.invite(2).await;
    let node_addr = format!("127.0.0.1:{}", room.server.sip.port());
    let nodes: Vec<String> = room
        .db
        .query(format!(
            "SELECT node FROM conference WHERE name = '{ROOM}' AND user_id = 2"
        ))
        .await
        .unwrap();
    assert_eq!(nodes, [node_addr]);
    room.join(2, TONES[1]).await;
    room.wait_members(&[1, 2]).await;
    room.assert_hearing(&TONES[..2], "two members on a draining node")
        .await;

    for user in [1, 2] {
        room.take(user).hang_up().await;
    }
    assert!(room.server.wait_exit().success());
    head.wait_log("media node disconnected", 1, Duration::from_secs(5));
    room.wait_members(&[]).await;
}
