//! Moderation over CometQL end to end (issue 11), with real WebRTC peers each sending its own
//! tone (the audio harness of `tests/common/audio_room.rs`): `UPDATE conference_members`
//! mutes, deafens and restores members in the media; `DELETE FROM conference_members` hangs a
//! member up; a time limit (per profile in the configuration, or per conference over CometQL)
//! ends the call with a SIP BYE carrying a Reason header; every change is published, in
//! order, on the `conference_<name>` comet pipe to a WebSocket subscriber and kept in
//! `pipes_messages` when the pipe's history is configured; bad statements get the contract's
//! error codes through a real MySQL client.
//!
//! Loopback only; every wait has a deadline.

mod common;

use std::time::Duration;

use common::audio_room::*;
use futures_util::{SinkExt, StreamExt};
use mysql_async::prelude::Queryable;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `audio`, `video`, `deaf` columns of one member.
async fn flags_of(room: &mut Room, user: i64) -> (String, String, String) {
    let rows: Vec<(String, String, String)> = room
        .db
        .query(format!(
            "SELECT audio, video, deaf FROM conference_members WHERE name = '{ROOM}' AND user_id = {user}"
        ))
        .await
        .unwrap();
    rows.into_iter()
        .next()
        .unwrap_or_else(|| panic!("user {user} is not in conference_members"))
}

/// A comet WebSocket subscriber of the conference's event pipe.
async fn subscribe_events(room: &Room) -> Ws {
    let url = format!(
        "ws://{}/ws/sesion=&myid=0&devid=0&v=4.08&uuid=watcher0000&api=js",
        room.server.ws
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connect");
    let info = next_frame(&mut ws).await;
    assert_eq!(info["event"], "serverInfo", "{info}");
    ws.send(Message::Text(
        format!("subscription\nconference_{ROOM}").into(),
    ))
    .await
    .unwrap();
    // The subscription is in place once the server answers a round trip after it.
    ws.send(Message::Text("pipe_count\nweb_barrier\nready".into()))
        .await
        .unwrap();
    loop {
        let f = next_frame(&mut ws).await;
        if f["marker"] == "ready" {
            return ws;
        }
    }
}

async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame within 15 s")
            .expect("the connection is open")
            .expect("a valid frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

/// Reads conference events until `until` matches one; returns them all as (event, data).
async fn events_until(ws: &mut Ws, until: impl Fn(&str, &Value) -> bool) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    loop {
        let f = next_frame(ws).await;
        if f["pipe"] != format!("conference_{ROOM}") {
            continue;
        }
        let event = f["event"].as_str().unwrap().to_string();
        let data: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
        let done = until(&event, &data);
        got.push((event, data));
        if done {
            return got;
        }
    }
}

/// The events that are not voice activity, as compact strings (`join 1`, `flags 2 audio=0`).
fn moderation_events(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(e, _)| e != "talking")
        .map(|(e, d)| match e.as_str() {
            "flags" => format!(
                "flags {} audio={} deaf={}",
                d["user_id"], d["audio"], d["deaf"]
            ),
            "join" | "leave" => format!("{e} {}", d["user_id"]),
            _ => e.clone(),
        })
        .collect()
}

/// Mute, unmute, deafen and restore with `UPDATE conference_members`: the change is heard
/// (or no longer heard) by the others, shows in `conference_members`, and the muted member
/// still hears everybody; a deaf member receives nothing while the others hear it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_and_deaf_take_effect_in_the_media() {
    let users = [1, 2, 3];
    let mut room = Room::with_talkers(&[], &users).await;
    room.assert_hearing(&TONES[..3], "three talkers").await;
    room.wait_members(&users).await;

    // Mute user 2 (660 Hz): nobody hears it; it still hears the two others.
    let n = room
        .update(&format!(
            "UPDATE conference_members SET audio = 0 WHERE name = '{ROOM}' AND user_id = 2"
        ))
        .await;
    assert_eq!(n, 1, "one member muted");
    assert_eq!(
        flags_of(&mut room, 2).await,
        ("0".into(), "1".into(), "0".into())
    );
    room.assert_hearing(&[TONES[0], TONES[2]], "user 2 muted")
        .await;

    // Unmute: everybody hears it again.
    room.update(&format!(
        "UPDATE conference_members SET audio = 1 WHERE name = '{ROOM}' AND user_id = 2"
    ))
    .await;
    assert_eq!(
        flags_of(&mut room, 2).await,
        ("1".into(), "1".into(), "0".into())
    );
    room.assert_hearing(&TONES[..3], "user 2 unmuted").await;

    // Deafen user 3: it receives nothing; the others still hear all three.
    room.update(&format!(
        "UPDATE conference_members SET deaf = 1 WHERE name = '{ROOM}' AND user_id = 3"
    ))
    .await;
    assert_eq!(
        flags_of(&mut room, 3).await,
        ("1".into(), "1".into(), "1".into())
    );
    room.wait_receiving_nothing(3, "user 3 deaf").await;
    room.assert_hearing_each(
        |m| {
            (m.user != 3).then(|| {
                TONES[..3]
                    .iter()
                    .copied()
                    .filter(|&t| t != m.tone)
                    .collect()
            })
        },
        "user 3 deaf",
    )
    .await;

    // Both flags at once for two members, then everything back.
    let n = room
        .update(&format!(
            "UPDATE conference_members SET audio = 0, deaf = 0 WHERE name = '{ROOM}' AND user_id IN (1, 3)"
        ))
        .await;
    assert_eq!(n, 2);
    room.assert_hearing(&[TONES[1]], "users 1 and 3 muted")
        .await;
    room.update(&format!(
        "UPDATE conference_members SET audio = 1 WHERE name = '{ROOM}' AND user_id IN (1, 3)"
    ))
    .await;
    room.assert_hearing(&TONES[..3], "everyone back").await;
    room.close().await;
}

/// The `conference_<name>` pipe delivers joins, flag changes, leaves and the end, in order,
/// to a WebSocket subscriber; with a history length set in `pipes_settings` the events stay in
/// `pipes_messages`. `DELETE FROM conference_members` hangs a member up with a BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_and_delete_hangs_up() {
    let mut room = Room::start(&[]).await;
    room.update(&format!(
        "INSERT INTO pipes_settings (name, length) VALUES ('conference_{ROOM}', 50)"
    ))
    .await;
    let mut ws = subscribe_events(&room).await;
    for user in [1, 2] {
        room.invite(user).await;
    }
    room.join(1, TONES[0]).await;
    room.join(2, TONES[1]).await;
    room.assert_hearing(&TONES[..2], "two talkers").await;
    room.update(&format!(
        "UPDATE conference_members SET audio = 0 WHERE name = '{ROOM}' AND user_id = 2"
    ))
    .await;
    room.update(&format!(
        "UPDATE conference_members SET audio = 1 WHERE name = '{ROOM}' AND user_id = 2"
    ))
    .await;

    // The backend hangs user 2 up.
    let n = room
        .update(&format!(
            "DELETE FROM conference_members WHERE name = '{ROOM}' AND user_id = 2"
        ))
        .await;
    assert_eq!(n, 1, "one member hung up");
    let reason = room.member(2).expect_bye().await;
    println!("BYE Reason: {reason}");
    let mut gone = room.take(2);
    gone.peer.close().await;
    room.wait_members(&[1]).await;

    // User 1 leaves by itself: the conference ends.
    room.take(1).hang_up().await;
    let events = events_until(&mut ws, |e, _| e == "end").await;
    let got = moderation_events(&events);
    assert_eq!(
        got,
        [
            "join 1",
            "join 2",
            "flags 2 audio=false deaf=false",
            "flags 2 audio=true deaf=false",
            "leave 2",
            "leave 1",
            "end",
        ],
        "all events: {events:?}"
    );
    // Both talked: each has a talking start before any stop of its own.
    for user in [1, 2] {
        let talk: Vec<bool> = events
            .iter()
            .filter(|(e, d)| e == "talking" && d["user_id"] == user)
            .map(|(_, d)| d["talking"].as_bool().unwrap())
            .collect();
        assert_eq!(
            talk.first(),
            Some(&true),
            "user {user} talking events {talk:?}"
        );
        assert!(
            talk.windows(2).all(|w| w[0] != w[1]),
            "talking alternates: {talk:?}"
        );
    }

    // The history has them too, in the same order (it is written just after the frame goes
    // out, so the last rows may land a moment after the WebSocket saw them).
    let sent: Vec<String> = events
        .iter()
        .filter(|(e, _)| e != "talking")
        .map(|(e, _)| e.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<(String, String)> = room
            .db
            .query(format!(
                "SELECT event, message FROM pipes_messages WHERE name = 'conference_{ROOM}'"
            ))
            .await
            .unwrap();
        let logged: Vec<String> = rows
            .iter()
            .filter(|(e, _)| e != "talking")
            .map(|(e, _)| e.clone())
            .collect();
        if logged.len() >= sent.len() || Instant::now() > deadline {
            assert_eq!(logged, sent, "pipes_messages: {rows:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    room.close().await;
}

/// `[profile.audio] max_duration` (here from the command line) ends the conference: every
/// member gets a BYE whose Reason says why, and `conference_members` empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_time_limit_ends_the_conference() {
    let mut room = Room::start(&["--set", "profile.audio.max_duration=10"]).await;
    for user in [1, 2] {
        room.invite(user).await;
    }
    room.join(1, TONES[0]).await;
    let started = Instant::now();
    room.join(2, TONES[1]).await;
    let rows: Vec<(String,)> = room
        .db
        .query(format!(
            "SELECT max_duration FROM conference_members WHERE name = '{ROOM}'"
        ))
        .await
        .unwrap();
    assert!(
        rows.len() == 2 && rows.iter().all(|r| r.0 == "10"),
        "{rows:?}"
    );
    for user in [1, 2] {
        let reason = room.member(user).expect_bye().await;
        assert!(reason.contains("time limit"), "{reason}");
    }
    let after = started.elapsed();
    println!("hung up {:.1} s after the first join", after.as_secs_f64());
    room.wait_members(&[]).await;
    for user in [1, 2] {
        room.take(user).peer.close().await;
    }
    room.close().await;
}

/// `UPDATE conference_members SET max_duration = N WHERE name = ...` limits one running
/// conference; 0 removes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conference_time_limit_set_over_cometql_ends_it() {
    let mut room = Room::with_talkers(&[], &[1, 2]).await;
    room.wait_members(&[1, 2]).await;
    // A limit far away, then none: nothing happens.
    room.update(&format!(
        "UPDATE conference_members SET max_duration = 3600 WHERE name = '{ROOM}'"
    ))
    .await;
    room.update(&format!(
        "UPDATE conference_members SET max_duration = 0 WHERE name = '{ROOM}'"
    ))
    .await;
    room.assert_hearing(&TONES[..2], "no limit").await;
    // The conference has run for more than one second: a one-second limit ends it now.
    room.update(&format!(
        "UPDATE conference_members SET max_duration = 1 WHERE name = '{ROOM}'"
    ))
    .await;
    for user in [1, 2] {
        let reason = room.member(user).expect_bye().await;
        assert!(reason.contains("time limit"), "{reason}");
    }
    room.wait_members(&[]).await;
    for user in [1, 2] {
        room.take(user).peer.close().await;
    }
    room.close().await;
}

/// Bad moderation statements, from a real MySQL client, get the contract's error codes and
/// change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_moderation_statements_get_error_codes() {
    let mut room = Room::start(&[]).await;
    room.invite(1).await;
    room.join(1, TONES[0]).await;
    room.wait_members(&[1]).await;
    for (sql, code) in [
        // No name.
        (
            "UPDATE conference_members SET audio = 0 WHERE user_id = 1",
            13,
        ),
        // A member flag without user_id.
        (
            "UPDATE conference_members SET audio = 0 WHERE name = 'room'",
            13,
        ),
        // An unknown column.
        (
            "UPDATE conference_members SET volume = 3 WHERE name = 'room' AND user_id = 1",
            14,
        ),
        // Values out of range.
        (
            "UPDATE conference_members SET audio = 2 WHERE name = 'room' AND user_id = 1",
            12,
        ),
        (
            "UPDATE conference_members SET layout = 'mosaic' WHERE name = 'room'",
            12,
        ),
        (
            "UPDATE conference_members SET max_duration = -1 WHERE name = 'room'",
            12,
        ),
        // Read-only columns.
        (
            "UPDATE conference_members SET talking = 1 WHERE name = 'room' AND user_id = 1",
            10,
        ),
    ] {
        let err = room.db.query_drop(sql).await.unwrap_err();
        match err {
            mysql_async::Error::Server(e) => assert_eq!(e.code, code, "{sql}: {}", e.message),
            other => panic!("{sql}: {other}"),
        }
    }
    assert_eq!(
        flags_of(&mut room, 1).await,
        ("1".into(), "1".into(), "0".into())
    );
    room.close().await;
}
