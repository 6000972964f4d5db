//! Real browsers call in: headless Chromium pages use JsSIP from npm (2.0.6, as
//! cometVideoApi.js ships it, and 3.x) to REGISTER and INVITE exactly as contract section 4
//! describes, after the test inserted the invitations over CometQL. Both pages receive mixed
//! audio (getStats: inbound packets and audioLevel > 0, the other page's fake microphone),
//! `conference_members` lists both, and `DELETE FROM conference` for one user ends that page's
//! call with a BYE.

mod common;

use axum::routing::get;
use common::audio_room::invite_to;
use common::browser::{chromium, jssip_routes, serve};
use common::{Server, connect};
use mysql_async::prelude::*;

const PAGE: &str = include_str!("browser/sip_page.html");

async fn members(db: &mut mysql_async::Conn) -> Vec<String> {
    db.query("SELECT user_id FROM conference_members WHERE name = 'room'")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_2_and_3_pages_hear_each_other_and_a_delete_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    for (user, hash) in [(21, "hashTwentyOne"), (22, "hashTwentyTwo")] {
        invite_to(&mut db, "room", user, hash, 21, "audio").await;
    }

    let (http, mut reports) = serve(
        axum::Router::new()
            .route("/sip.html", get(|| async { axum::response::Html(PAGE) }))
            .merge(jssip_routes()),
    )
    .await;
    let page = |role: &str, version: u8, user: u32, hash: &str| {
        format!(
            "http://{http}/sip.html?role={role}&jssip={version}&user={user}&hash={hash}&sip={}&room=room&profile=audio",
            s.sip
        )
    };
    let _a = chromium(&page("a", 2, 21, "hashTwentyOne"));
    let _b = chromium(&page("b", 3, 22, "hashTwentyTwo"));

    let v2 = reports.wait_for("a", "loaded", 60).await;
    assert_eq!(v2["version"], "2.0.6");
    let v3 = reports.wait_for("b", "loaded", 60).await;
    assert!(v3["version"].as_str().unwrap().starts_with("3."), "{v3}");
    for p in ["a", "b"] {
        reports.wait_for(p, "registered", 60).await;
        reports.wait_for(p, "confirmed", 60).await;
    }
    for p in ["a", "b"] {
        let audio = reports.wait_for(p, "audio", 60).await;
        assert!(
            audio["packetsReceived"].as_u64().unwrap() > 50,
            "{p}: {audio}"
        );
        assert!(audio["audioLevel"].as_f64().unwrap() > 0.0, "{p}: {audio}");
    }
    let mut m = members(&mut db).await;
    m.sort();
    assert_eq!(m, ["21", "22"]);

    // The backend kicks user 21: its page sees the BYE.
    db.query_drop("DELETE FROM conference WHERE name = 'room' AND user_id = 21")
        .await
        .unwrap();
    let ended = reports.wait_for("a", "ended", 60).await;
    assert_eq!(ended["originator"], "remote", "{ended}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if members(&mut db).await == ["22"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "conference_members still lists the kicked user"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
