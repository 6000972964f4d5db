//! SIGTERM ends what browsers hold open before the process goes, so that they hear of it at
//! once: every call gets a BYE whose Reason says the server is shutting down and its SIP
//! connection closes; every comet WebSocket gets a close frame 1001 "going away" (the JS API
//! reconnects on it). The conference's leave and end events reach its pipe history. Then the
//! process exits cleanly.

mod common;

use std::time::Duration;

use common::audio_room::*;
use common::{Server, connect};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hangs_up_every_call_and_closes_websockets_going_away() {
    let mut room = Room::start(&[]).await;
    // The backend keeps the conference's events.
    room.update(&format!(
        "INSERT INTO pipes_settings (name, length) VALUES ('conference_{ROOM}', 100)"
    ))
    .await;
    for (user, tone) in [(1, TONES[0]), (2, TONES[1])] {
        room.invite(user).await;
        room.join(user, tone).await;
    }
    room.wait_members(&[1, 2]).await;
    // A browser page on the comet WebSocket.
    let url = format!(
        "ws://{}/ws/sesion=&myid=0&devid=0&v=4.08&uuid=page00000000&api=js",
        room.server.ws
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connect");
    let first = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .expect("serverInfo within 15 s");
    assert!(
        matches!(&first, Some(Ok(Message::Text(t))) if t.contains("serverInfo")),
        "{first:?}"
    );

    room.server.signal_term();

    for user in [1, 2] {
        let reason = room.member(user).expect_bye().await;
        assert!(
            reason.contains("server shutting down"),
            "user {user}: Reason {reason}"
        );
    }
    // Then each SIP connection closes (its inbox ends before the deadline).
    for user in [1, 2] {
        let end = deadline(15);
        let sip = &mut room.member(user).sip;
        while let Some(m) = sip.recv(end).await {
            assert!(m.method() != Some("INVITE"), "unexpected: {}", m.raw);
        }
        assert!(
            Instant::now() < end,
            "user {user}'s SIP connection is still open"
        );
    }
    // The page's WebSocket gets 1001 "going away".
    let close = loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a close frame within 15 s");
        match m {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert_eq!(close.reason.as_str(), "server shutting down");

    let status = room.server.wait_exit();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let errors: Vec<String> = room
        .server
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("panicked") || l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(errors.is_empty(), "server errors: {errors:#?}");

    // After a restart the history has both leaves and the end: nothing the hangups caused
    // was lost with the process.
    let again = Server::start(room._dir.path());
    let mut db = connect(&again).await;
    let events: Vec<(String, String)> = db
        .query(format!(
            "SELECT event, message FROM pipes_messages WHERE name = 'conference_{ROOM}'"
        ))
        .await
        .unwrap();
    let events: Vec<&str> = events
        .iter()
        .map(|(e, _)| e.as_str())
        .filter(|e| *e != "talking")
        .collect();
    assert_eq!(
        events,
        ["join", "join", "leave", "leave", "end"],
        "conference_{ROOM} history"
    );
}
