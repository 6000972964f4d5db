//! Real browsers in a video conference: two headless Chromium pages (JsSIP 2.0.6, as
//! cometVideoApi.js ships it, and 3.x) join a `video` conference with the fake camera and
//! microphone, writing `b=AS:256` into their offers as cometVideoApi.js does; the second page
//! offers VP8 alone for video (its offer's other video codecs removed), so it must receive the
//! canvas as VP8 while the first receives H.264. Each page plays
//! the one video stream it receives in a <video> element; its getStats must show inbound video
//! with framesDecoded growing and a resolution equal to the canvas of the `video` profile
//! (640x360). A snapshot of each page's <video> element (drawn into a canvas, PNG) is saved
//! under `tests/artifacts/` and must not be a blank picture.

mod common;

use axum::routing::get;
use base64::Engine;
use common::audio_room::invite_to;
use common::browser::{chromium, jssip_routes, serve};
use common::picture::artifacts_dir;
use common::{Server, connect};
use mysql_async::prelude::*;

const PAGE: &str = include_str!("browser/video_page.html");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chromium_pages_receive_the_composed_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut db = connect(&s).await;
    for (user, hash) in [(31, "hashThirtyOne"), (32, "hashThirtyTwo")] {
        invite_to(&mut db, "vroom", user, hash, 31, "video").await;
    }

    let (http, mut reports) = serve(
        axum::Router::new()
            .route("/video.html", get(|| async { axum::response::Html(PAGE) }))
            .merge(jssip_routes())
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20)),
    )
    .await;
    let page = |role: &str, version: u8, user: u32, hash: &str, vp8: bool| {
        format!(
            "http://{http}/video.html?role={role}&jssip={version}&user={user}&hash={hash}&sip={}&room=vroom&profile=video&vp8={}",
            s.sip,
            u8::from(vp8)
        )
    };
    // Page b offers VP8 alone for video: it receives the canvas as VP8.
    let _a = chromium(&page("a", 2, 31, "hashThirtyOne", false));
    let _b = chromium(&page("b", 3, 32, "hashThirtyTwo", true));
    let codec = |p: &str| if p == "a" { "H264" } else { "VP8" };

    let v2 = reports.wait_for("a", "loaded", 60).await;
    assert_eq!(v2["version"], "2.0.6");
    let v3 = reports.wait_for("b", "loaded", 60).await;
    assert!(v3["version"].as_str().unwrap().starts_with("3."), "{v3}");
    for p in ["a", "b"] {
        reports.wait_for(p, "registered", 60).await;
        let answer = reports.wait_for(p, "answer", 60).await;
        let sdp = answer["sdp"].as_str().unwrap_or_default();
        assert!(
            sdp.contains("m=video") && sdp.contains(codec(p)) && sdp.contains("a=sendrecv"),
            "{p}: video is answered sendrecv with {}:\n{sdp}",
            codec(p)
        );
        reports.wait_for(p, "confirmed", 60).await;
    }
    for p in ["a", "b"] {
        let first = reports.wait_for(p, "video", 90).await;
        let later = reports.wait_for(p, "video_later", 90).await;
        println!("page {p}: inbound video {first} then {later}");
        let frames = |v: &serde_json::Value| v["framesDecoded"].as_u64().unwrap();
        assert!(frames(&later) > frames(&first), "{p}: {first} then {later}");
        assert_eq!(
            (later["frameWidth"].as_u64(), later["frameHeight"].as_u64()),
            (Some(640), Some(360)),
            "{p}: the canvas of the video profile: {later}"
        );
        assert!(
            later["codec"]
                .as_str()
                .unwrap_or_default()
                .contains(codec(p)),
            "{p}: {later}"
        );
        let snap = reports.wait_for(p, "snapshot", 60).await;
        assert_eq!(
            (snap["width"].as_u64(), snap["height"].as_u64()),
            (Some(640), Some(360)),
            "{p}: snapshot size"
        );
        let png = snap["png"]
            .as_str()
            .and_then(|u| u.strip_prefix("data:image/png;base64,"))
            .expect("a PNG data URL");
        let png = base64::engine::general_purpose::STANDARD
            .decode(png)
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{p}: not a PNG");
        let path = artifacts_dir().join(format!("video_browser_page_{p}.png"));
        std::fs::write(&path, &png).unwrap();
        println!(
            "page {p}: snapshot saved to {} (luma mean {}, stddev {})",
            path.display(),
            snap["lumaMean"],
            snap["lumaStddev"]
        );
        // The other page's fake camera (a moving pattern) fills the big tile: not one colour.
        assert!(
            snap["lumaStddev"].as_f64().unwrap_or(0.0) > 5.0,
            "{p}: the picture is blank: mean {} stddev {}",
            snap["lumaMean"],
            snap["lumaStddev"]
        );
    }
    // The browsers' congestion-control feedback (TWCC/REMB) reaches the canvas encoders.
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = s.metrics(&["comet_video_bitrate_estimates_total"]);
        let n: f64 = m
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if n > 0.0 {
            println!("{m}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no bandwidth estimate for the canvases: {}",
            s.metrics(&["comet_video"])
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let members: Vec<String> = db
        .query("SELECT user_id FROM conference_members WHERE name = 'vroom'")
        .await
        .unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
}
