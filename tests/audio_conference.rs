//! Audio conferences end to end (issue 6): the real server binary, real and independent WebRTC
//! peers (webrtc-rs), each signalled over SIP over WebSocket exactly as JsSIP does it
//! (REGISTER and INVITE with digest auth, `sip:<dev>*<name>*<profile>@host`), each sending its
//! own sine tone as real Opus with the RFC 6464 audio level. Every peer decodes what it receives
//! and the tests check by spectrum (Goertzel) that it hears every other talker and not itself.
//! The backend side is CometQL over the MySQL protocol (`users_auth`, `conference`,
//! `conference_members`), as a PHP backend drives it.
//!
//! Loopback only; every wait has a deadline. Failures print the measured tone amplitudes, what
//! each peer sent and received, and the SIP transcript.

mod common;

use std::sync::atomic::Ordering;

use common::audio_room::*;
use common::metric;
use common::peer::Peer;
use common::sip_client::{SipClient, Ua};
use common::tones::{self, Spectrum};
use mysql_async::prelude::Queryable;

#[test]
fn the_tone_detector_separates_the_test_tones() {
    let mut pcm = Vec::new();
    for k in 0..25 {
        let a = tones::tone_frame(440.0, 4000.0, k);
        let b = tones::tone_frame(880.0, 2000.0, k);
        pcm.extend(a.iter().zip(&b).map(|(x, y)| x + y));
    }
    let s = Spectrum::measure(&pcm, &TONES);
    assert!((s.at(440.0) - 4000.0).abs() < 100.0, "{s}");
    assert!((s.at(880.0) - 2000.0).abs() < 100.0, "{s}");
    for f in [660.0, 1100.0, 1320.0] {
        assert!(s.at(f) < 5.0, "{s}");
    }
    assert!(s.matches(&[440.0, 880.0], &[660.0, 1100.0, 1320.0], 1000.0, 30.0));
    assert!(!s.matches(&[440.0, 660.0], &[880.0], 1000.0, 30.0));
    assert_eq!(tones::rfc6464_level(4000.0), 21);

    // A glitch in the middle of a second of 660 Hz (here the worst case: the phase flips by
    // half a cycle) cancels the tone in one coherent 1 s window, not in the median of 100 ms
    // windows.
    let mut pcm: Vec<i16> = (0..25)
        .flat_map(|k| tones::tone_frame(660.0, 4000.0, k))
        .collect();
    pcm.extend((25..50).flat_map(|k| tones::tone_frame(660.0, 4000.0, k).into_iter().map(|x| -x)));
    let whole = Spectrum::measure(&pcm, &TONES);
    let median = Spectrum::median_of_windows(&pcm, &TONES, WINDOW);
    assert!(whole.at(660.0) < 1000.0, "{whole}");
    assert!((median.at(660.0) - 4000.0).abs() < 200.0, "{median}");
    assert!(median.at(440.0) < 100.0, "{median}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_hear_each_other_and_not_themselves() {
    let mut room = Room::with_talkers(&[], &[1, 2]).await;
    room.assert_hearing(&TONES[..2], "two peers").await;
    let rows = room.wait_members(&[1, 2]).await;
    check_rows(&rows, &[1, 2]);
    // What an operator sees on /metrics: two WebRTC participants, media both ways, the
    // mixing clock running, nothing dropped or skipped.
    let m = media_metrics(&room.server);
    let v = |name: &str| metric(&m, name).unwrap_or_else(|| panic!("{name} missing: {m}"));
    assert_eq!(v("comet_sfu_participants"), 2.0, "{m}");
    assert_eq!(v("comet_participants"), 2.0, "{m}");
    // Each of the two hears exactly the other's frames: the other's packets are forwarded as
    // they came (what was heard above is what the talkers' encoders made), not re-encoded.
    assert!(v("comet_audio_passthrough_total") > 0.0, "{m}");
    // Two members leave the mixing clock idle: the encoders keep the configured complexity.
    assert_eq!(v("comet_audio_opus_complexity"), 5.0, "{m}");
    // Two SIP calls started, none ended, nothing refused or malformed.
    assert_eq!(v("comet_sip_calls_started_total"), 2.0, "{m}");
    assert_eq!(v("comet_sip_calls_ended_total"), 0.0, "{m}");
    assert_eq!(v("comet_sip_forbidden_total"), 0.0, "{m}");
    assert_eq!(
        v(r#"comet_sip_malformed_total{handling="dropped"}"#),
        0.0,
        "{m}"
    );
    for name in [
        "comet_sfu_rtp_in_total",
        "comet_sfu_rtp_out_total",
        "comet_sfu_datagrams_in_total",
        "comet_sfu_bytes_out_total",
        "comet_rtp_packets_in_total",
        "comet_rtp_packets_out_total",
        "comet_mix_ticks_total",
    ] {
        assert!(v(name) > 0.0, "{name}: {m}");
    }
    for name in [
        "comet_sfu_malformed_dropped_total",
        "comet_sfu_panics_total",
    ] {
        assert_eq!(v(name), 0.0, "{name}: {m}");
    }
    room.close().await;
}

/// Five simultaneous talkers with `[media] max_talkers = 5`: every member hears the four
/// others. Then one hangs up (SIP BYE): the four left hear the three others, nobody hears the
/// one who left, and `conference_members` follows. The WebRTC endpoint runs as two shards
/// (`[media] threads = 2`), so the members' media goes through different endpoint threads
/// and still meets in one mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_then_one_leaves() {
    let mut room = Room::start(&["--set", "media.max_talkers=5", "--set", "media.threads=2"]).await;
    let users = [1, 2, 3, 4, 5];
    for user in users {
        room.invite(user).await;
    }
    for (user, tone) in users.iter().zip(TONES) {
        room.join(*user, tone).await;
    }
    room.assert_hearing(&TONES, "five talkers").await;
    // What the server sends carries the RFC 6464 level of the mix (four tones of -21 dBov).
    for m in &room.members {
        let (packets, with_level, last) = m.peer.received_levels();
        assert_eq!(with_level, packets, "{}", m.peer.report());
        let level = last.unwrap();
        assert!(
            (10..=20).contains(&level),
            "level {level}: {}",
            m.peer.report()
        );
    }
    let rows = room.wait_members(&users).await;
    check_rows(&rows, &users);
    let m = media_metrics(&room.server);
    let v = |name: &str| metric(&m, name).unwrap_or_else(|| panic!("{name} missing: {m}"));
    assert_eq!(v("comet_sfu_shards"), 2.0, "{m}");
    assert_eq!(v("comet_sfu_participants"), 5.0, "{m}");
    for name in [
        "comet_sfu_inbox_dropped_total",
        "comet_sfu_unknown_dropped_total",
        "comet_sfu_malformed_dropped_total",
    ] {
        assert_eq!(v(name), 0.0, "{name}: {m}");
    }

    // User 3 (880 Hz) hangs up the way JsSIP does: BYE, then the peer connection closes.
    room.take(3).hang_up().await;
    let rows = room.wait_members(&[1, 2, 4, 5]).await;
    check_rows(&rows, &[1, 2, 4, 5]);
    room.assert_hearing(&[440.0, 660.0, 1100.0, 1320.0], "after user 3 left")
        .await;
    room.close().await;
}

/// With the default `[media] max_talkers = 3`, four equal talkers: the first three to talk
/// hold the three mixed slots (a newcomer must be 6 dB louder to take one), so everybody hears
/// them and nobody hears the fourth, who hears the shared mix of the three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_three_loudest_of_four_talkers_are_mixed_by_default() {
    let mut room = Room::start(&[]).await;
    for user in [1, 2, 3, 4] {
        room.invite(user).await;
    }
    for (user, tone) in [1, 2, 3].into_iter().zip(TONES) {
        room.join(user, tone).await;
    }
    // The three are mixed before the fourth starts.
    room.assert_hearing(&TONES[..3], "three talkers").await;
    room.join(4, TONES[3]).await;
    room.assert_hearing(&TONES[..3], "four talkers, three mixed")
        .await;
    let rows = room.wait_members(&[1, 2, 3, 4]).await;
    check_rows(&rows, &[1, 2, 3, 4]);

    // The operator's view (`/debug/conferences`) says the same: the three are mixed and hear
    // their own N-1 mix, the fourth talks, is not mixed, and hears the shared mix; everyone's
    // audio is received and decoded.
    let text = room.server.http_get("/debug/conferences").unwrap();
    let confs: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let members = confs[0]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(members.len(), 4, "{text}");
    for m in members {
        let user = m["user"].as_i64().unwrap();
        let mixed = user != 4;
        assert_eq!(m["talking"], true, "{m}");
        assert_eq!(m["mixed"], mixed, "{m}");
        assert_eq!(m["output"], if mixed { "own" } else { "shared" }, "{m}");
        assert!(m["received"]["decoded"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["received"]["malformed"], 0, "{m}");
    }
    room.close().await;
}

/// Every peer loses 10% of what it sends (dropped at random before sending, as the network
/// would): the server's jitter buffer and Opus concealment (and the peers' in-band FEC) keep
/// every tone audible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tones_survive_ten_percent_packet_loss() {
    let mut room = Room::start(&[]).await;
    let users = [1, 2, 3];
    for user in users {
        room.invite(user).await;
    }
    for (user, tone) in users.iter().zip(TONES) {
        room.join(*user, tone).await;
        room.members.last().unwrap().peer.set_loss(0.10);
    }
    room.assert_hearing(&TONES[..3], "10% loss").await;
    let rows = room.wait_members(&users).await;
    check_rows(&rows, &users);

    // The loss really happened, and the server saw it: every member hangs up, and the server
    // adds up the packets its members never received.
    let (mut frames, mut dropped) = (0, 0);
    for m in &mut room.members {
        m.peer.stop_tone().await;
        frames += m.peer.send_stats.frames.load(Ordering::Relaxed);
        dropped += m.peer.send_stats.dropped.load(Ordering::Relaxed);
        m.sip.bye(&mut m.session).await;
    }
    println!("the peers dropped {dropped} of {frames} packets");
    assert!(
        dropped * 100 >= frames * 5 && dropped * 100 <= frames * 16,
        "the peers dropped {dropped} of {frames} packets: not about 10%"
    );
    room.wait_members(&[]).await;
    let metrics = media_metrics(&room.server);
    let counter = |name: &str| -> f64 {
        metric(&metrics, name).unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let lost = counter("comet_rtp_packets_lost_total") as u64;
    assert!(
        lost > 0 && lost <= dropped,
        "the server counted {lost} lost packets, the peers dropped {dropped}: {metrics}"
    );
    // The talkers were heard, so their losses were filled in (in-band FEC or concealment).
    let frames = |kind: &str| counter(&format!("comet_audio_frames_total{{kind=\"{kind}\"}}"));
    assert!(
        frames("decoded") > 0.0 && frames("fec") + frames("concealed") > 0.0,
        "no recovered or concealed frames: {metrics}"
    );
    room.close().await;
}

/// `DELETE FROM conference WHERE name = 'room' AND user_id = 2` is a kick: user 2 gets a SIP
/// BYE with a Reason header, leaves conference_members, the others stop hearing it, and it
/// cannot dial back in (its invitation is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_member_gets_bye_with_reason_and_leaves() {
    let users = [1, 2, 3];
    let mut room = Room::with_talkers(&[], &users).await;
    room.assert_hearing(&TONES[..3], "before the kick").await;
    room.wait_members(&users).await;

    room.db
        .query_drop(format!(
            "DELETE FROM conference WHERE name = '{ROOM}' AND user_id = 2"
        ))
        .await
        .unwrap();
    room.member(2).expect_bye().await;
    let mut kicked = room.take(2);
    // The browser closes its peer connection after the BYE; the tone stops with it.
    kicked.peer.close().await;

    let rows = room.wait_members(&[1, 3]).await;
    check_rows(&rows, &[1, 3]);
    room.assert_hearing(&[TONES[0], TONES[2]], "after the kick")
        .await;

    // No invitation any more: dialling back in is refused.
    let peer = Peer::new("user 2 again").await;
    let offer = peer.offer(deadline(10)).await;
    let (_, fin) = kicked.sip.invite(NUMBER, &offer).await;
    assert_eq!(fin.status(), Some(403), "{}", kicked.sip.transcript());
    let _ = peer.pc.close().await;
    room.wait_members(&[1, 3]).await;
    room.close().await;
}

/// What is refused end to end: a wrong password (REGISTER and INVITE), an unknown user, an
/// INVITE without credentials, a user with a key but no invitation, an invited user dialling
/// another conference. None of it joins: `conference_members` stays empty and the media side
/// never sees a participant. Then the invited user with the right key joins (the setup works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_never_join() {
    let mut room = Room::start(&[]).await;
    room.invite(1).await;
    // User 2 has a key but no invitation.
    room.db
        .query_drop(format!(
            "INSERT INTO users_auth (id, hash) VALUES (2, '{}')",
            hash_of(2)
        ))
        .await
        .unwrap();
    let sip = room.server.sip;
    let peer = Peer::new("refused").await;
    let offer = peer.offer(deadline(10)).await;

    // A wrong password: REGISTER and INVITE.
    let mut bad = SipClient::connect(sip, Ua::new(&sip_user(1), "wrongKey1", HOST, 11)).await;
    let r = bad.register().await;
    assert_eq!(r.status(), Some(403), "{}", bad.transcript());
    let (_, fin) = bad.invite(NUMBER, &offer).await;
    assert_eq!(fin.status(), Some(403), "{}", bad.transcript());

    // An unknown user.
    let mut unknown = SipClient::connect(sip, Ua::new(&sip_user(9), &hash_of(9), HOST, 12)).await;
    let r = unknown.register().await;
    assert_eq!(r.status(), Some(403), "{}", unknown.transcript());
    let (_, fin) = unknown.invite(NUMBER, &offer).await;
    assert_eq!(fin.status(), Some(403), "{}", unknown.transcript());

    // No credentials: challenged, twice, and nothing else.
    let mut noauth = SipClient::connect(sip, Ua::new(&sip_user(1), &hash_of(1), HOST, 13)).await;
    for _ in 0..2 {
        let mut s = noauth.ua.new_session(NUMBER);
        let text = noauth.ua.invite(&mut s, None, &offer);
        noauth.send(text);
        let ch = noauth.expect_final("INVITE", 401).await;
        assert!(ch.h("www-authenticate").is_some(), "{}", ch.raw);
        let ack = noauth.ua.ack_failure(&s, &ch);
        noauth.send(ack);
    }

    // The right key, no invitation to this conference.
    let mut uninvited = SipClient::connect(sip, Ua::new(&sip_user(2), &hash_of(2), HOST, 14)).await;
    let r = uninvited.register().await;
    assert_eq!(r.status(), Some(200), "{}", uninvited.transcript());
    let (_, fin) = uninvited.invite(NUMBER, &offer).await;
    assert_eq!(fin.status(), Some(403), "{}", uninvited.transcript());

    // Invited to `room`, dialling `other`.
    let mut elsewhere = SipClient::connect(sip, Ua::new(&sip_user(1), &hash_of(1), HOST, 15)).await;
    let (_, fin) = elsewhere.invite("0*other*audio", &offer).await;
    assert_eq!(fin.status(), Some(403), "{}", elsewhere.transcript());

    // Nobody joined: no member anywhere, no participant on the media side.
    let rows: Vec<mysql_async::Row> = room
        .db
        .query("SELECT * FROM conference_members")
        .await
        .unwrap();
    assert!(rows.is_empty(), "members after refused calls: {rows:?}");
    assert!(room.members_rows().await.is_empty());
    let metrics = media_metrics(&room.server);
    assert!(
        metrics.contains("comet_participants 0") && metrics.contains("comet_sfu_participants 0"),
        "media participants after refused calls: {metrics}"
    );
    let _ = peer.pc.close().await;

    // The control: the invited user with the right key gets in.
    room.join(1, TONES[0]).await;
    room.wait_members(&[1]).await;
    room.close().await;
}

/// A browser whose media connection goes away without a SIP BYE (the tab's peer connection
/// closed): the server ends the call itself, with a BYE that says why, and the member leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_media_closes_is_hung_up() {
    let mut room = Room::with_talkers(&[], &[1, 2]).await;
    room.assert_hearing(&TONES[..2], "two peers").await;

    let mut gone = room.take(2);
    gone.peer.close().await; // DTLS close_notify, no BYE
    let reason = gone.expect_bye().await;
    assert!(reason.contains("media"), "{reason}");
    room.wait_members(&[1]).await;
    room.close().await;
}

/// Callers that offer only G.711 (a SIP phone behind a gateway: PCMU, or PCMA) join an Opus
/// conference: the server answers with their codec, resamples them into the 48 kHz mix and
/// back, and everybody hears everybody else and not themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g711_telephones_and_opus_browsers_hear_each_other() {
    use comet_media::g711::Law;
    let mut room = Room::start(&[]).await;
    for user in [1, 2, 3] {
        room.invite(user).await;
    }
    room.join(1, TONES[0]).await;
    for (user, law, rtpmap) in [(2, Law::Mu, "PCMU/8000"), (3, Law::A, "PCMA/8000")] {
        let tone = TONES[user as usize - 1];
        let peer = Peer::g711(&format!("user {user} ({tone} Hz, {rtpmap})"), law).await;
        let answer = room.join_with(user, tone, peer).await;
        let audio = answer
            .split("m=")
            .find(|m| m.starts_with("audio"))
            .unwrap_or_else(|| panic!("no audio in the answer:\n{answer}"));
        assert!(
            audio.contains(rtpmap) && !audio.contains("opus"),
            "the answer should use {rtpmap} only:\n{answer}"
        );
    }
    room.assert_hearing(&TONES[..3], "Opus, PCMU and PCMA")
        .await;
    room.wait_members(&[1, 2, 3]).await;
    room.close().await;
}
