//! The audio conference harness shared by the end-to-end tests (`audio_conference`,
//! `moderation`): the real server binary, independent WebRTC peers (webrtc-rs) that each send
//! their own tone as Opus, SIP over WebSocket as JsSIP does it, CometQL as a backend drives it,
//! and spectrum checks (Goertzel, median of 100 ms windows) of what every peer hears.

use std::time::Duration;

use super::peer::Peer;
use super::sip_client::{Session, SipClient, Ua};
use super::tones::{self, Spectrum};
use super::{Server, connect};
use mysql_async::prelude::Queryable;
use tokio::time::Instant;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

/// `[sip] host` of the test server (its default): the digest realm and the host JsSIP dials.
pub const HOST: &str = "127.0.0.1";
/// The conference every test uses, and what its members dial (dev 0, profile `audio`).
pub const ROOM: &str = "room";
pub const NUMBER: &str = "0*room*audio";
/// One tone per member.
pub const TONES: [f64; 5] = [440.0, 660.0, 880.0, 1100.0, 1320.0];
/// Peak amplitude of every tone (-21 dBov RMS): five of them sum below the mixer's limiter.
pub const AMPLITUDE: f64 = 4000.0;
/// A tone counts as heard at this amplitude or more (-10.5 dB under what was sent: Opus at
/// 32 kbit/s and the mix keep a tone well above this).
pub const HEARD: f64 = AMPLITUDE * 0.3;
/// A tone counts as not heard when it is this much below the weakest heard one (and below
/// `HEARD`).
pub const MARGIN_DB: f64 = 20.0;
/// How long a steady state is measured: 1 s.
pub const VERIFY: usize = tones::RATE as usize;
/// The window used while waiting for a steady state: 0.4 s.
pub const SETTLE: usize = tones::RATE as usize * 2 / 5;
/// Tones are measured in 100 ms windows; the median over the windows counts.
pub const WINDOW: usize = tones::RATE as usize / 10;

pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

pub fn sip_user(user: i64) -> String {
    format!("{:06}{user}", 0)
}

pub fn hash_of(user: i64) -> String {
    format!("key{user}Secret")
}

/// What the backend does before a user may call: the user's key (`users_auth`), then the
/// invitation to [`ROOM`] with `profile` (`conference`), over CometQL.
pub async fn invite(db: &mut mysql_async::Conn, user: i64, profile: &str) {
    invite_to(db, ROOM, user, &hash_of(user), 1, profile).await;
}

/// [`invite`] to another `room`, with the user's key `hash` and `caller` as the inviter.
pub async fn invite_to(
    db: &mut mysql_async::Conn,
    room: &str,
    user: i64,
    hash: &str,
    caller: i64,
    profile: &str,
) {
    db.query_drop(format!(
        "INSERT INTO users_auth (id, hash) VALUES ({user}, '{hash}')"
    ))
    .await
    .unwrap();
    db.query_drop(format!(
        "INSERT INTO conference (name, user_id, caller_id, message, profile) \
         VALUES ('{room}', {user}, {caller}, '', '{profile}')"
    ))
    .await
    .unwrap();
}

/// `user` joins by calling `number` as the browser does, with `peer` as its WebRTC side:
/// the peer makes its offer (passed through `edit`, e.g. to add a bandwidth line), the user
/// registers over SIP over WebSocket as JsSIP does (digest authentication) and sends the
/// INVITE, the peer takes the SDP answer, and its connection must come up. Returns the SIP
/// connection, the dialog and the answer. `SHOW_SDP=1` prints the offer and the answer.
pub async fn call(
    server: &Server,
    user: i64,
    number: &str,
    peer: &mut Peer,
    edit: impl FnOnce(String) -> String,
) -> (SipClient, Session, String) {
    let offer = edit(peer.offer(deadline(10)).await);
    let mut sip = SipClient::connect(
        server.sip,
        Ua::new(&sip_user(user), &hash_of(user), HOST, user as u64),
    )
    .await;
    let reg = sip.register().await;
    assert_eq!(
        reg.status(),
        Some(200),
        "REGISTER of user {user}\n{}",
        sip.transcript()
    );
    let (session, answer) = sip.call(number, &offer).await;
    if std::env::var("SHOW_SDP").is_ok() {
        println!("user {user} offer:\n{offer}\nanswer:\n{answer}");
    }
    peer.answer(&answer).await;
    let up = peer
        .wait_state(deadline(15), |s| s == RTCPeerConnectionState::Connected)
        .await;
    assert!(
        up,
        "user {user}: the WebRTC connection did not come up ({:?})\nanswer:\n{answer}\n\
         SIP transcript:\n{}",
        peer.state(),
        sip.transcript()
    );
    (sip, session, answer)
}

/// One conference member: its SIP connection, its dialog and its WebRTC peer.
pub struct Member {
    pub user: i64,
    pub tone: f64,
    pub sip: SipClient,
    pub session: Session,
    pub peer: Peer,
}

impl Member {
    /// The member hangs up as JsSIP does: BYE, then its peer connection closes.
    #[allow(dead_code)]
    pub async fn hang_up(mut self) {
        self.sip.bye(&mut self.session).await;
        self.peer.close().await;
    }

    /// The server hangs this member up: a BYE for its dialog with an RFC 3326 Reason header
    /// (protocol, cause, text), which the test answers as JsSIP does. Returns the Reason.
    pub async fn expect_bye(&mut self) -> String {
        let bye = self.sip.expect_request("BYE", deadline(15)).await;
        assert_eq!(
            bye.h("call-id"),
            Some(self.session.call_id.as_str()),
            "{}",
            bye.raw
        );
        let reason = bye
            .h("reason")
            .unwrap_or_else(|| panic!("the BYE has no Reason header:\n{}", bye.raw))
            .to_string();
        assert!(
            (reason.starts_with("SIP") || reason.starts_with("Q.850")) && reason.contains("text="),
            "Reason is RFC 3326 (protocol ;cause ;text): {reason}"
        );
        self.sip.respond(&bye, 200, "OK");
        reason
    }
}

/// A server with its CometQL connection and the members that joined.
pub struct Room {
    pub server: Server,
    pub db: mysql_async::Conn,
    pub members: Vec<Member>,
    pub _dir: tempfile::TempDir,
}

impl Room {
    pub async fn start(extra: &[&str]) -> Room {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(dir.path(), extra);
        let db = connect(&server).await;
        Room {
            server,
            db,
            members: Vec::new(),
            _dir: dir,
        }
    }

    /// A server (with `extra` flags) whose conference has `users` in it, user `users[i]`
    /// sending `TONES[i]`: each invited over CometQL, then joined over SIP and WebRTC.
    pub async fn with_talkers(extra: &[&str], users: &[i64]) -> Room {
        let mut room = Room::start(extra).await;
        for &user in users {
            room.invite(user).await;
        }
        for (&user, tone) in users.iter().zip(TONES) {
            room.join(user, tone).await;
        }
        room
    }

    /// What the backend does before a user may call: the user's key, then the invitation.
    pub async fn invite(&mut self, user: i64) {
        invite(&mut self.db, user, "audio").await;
    }

    /// A user registers and dials the conference as JsSIP does; the peer connects and starts
    /// sending its tone.
    pub async fn join(&mut self, user: i64, tone: f64) {
        let peer = Peer::new(&format!("user {user} ({tone} Hz)")).await;
        self.join_with(user, tone, peer).await;
    }

    /// [`Room::join`] with a given peer (e.g. a G.711 telephone); returns the SDP answer.
    pub async fn join_with(&mut self, user: i64, tone: f64, mut peer: Peer) -> String {
        let (sip, session, answer) = call(&self.server, user, NUMBER, &mut peer, |o| o).await;
        peer.start_tone(tone, AMPLITUDE, user as u64);
        self.members.push(Member {
            user,
            tone,
            sip,
            session,
            peer,
        });
        answer
    }

    pub fn member(&mut self, user: i64) -> &mut Member {
        self.members.iter_mut().find(|m| m.user == user).unwrap()
    }

    /// Removes a member from the list (the test hangs it up).
    pub fn take(&mut self, user: i64) -> Member {
        let i = self.members.iter().position(|m| m.user == user).unwrap();
        self.members.remove(i)
    }

    /// The four CppComet columns of `conference_members` for the room: (user_id, join_time,
    /// last_talking) by user_id.
    pub async fn members_rows(&mut self) -> Vec<(i64, String, String)> {
        let rows: Vec<(String, String, String, String)> = self
            .db
            .query(format!(
                "SELECT name, user_id, join_time, last_talking FROM conference_members WHERE name = '{ROOM}'"
            ))
            .await
            .unwrap();
        let mut out: Vec<(i64, String, String)> = rows
            .into_iter()
            .map(|(name, user, join, talk)| {
                assert_eq!(name, ROOM);
                (user.parse().unwrap(), join, talk)
            })
            .collect();
        out.sort();
        out
    }

    /// Waits until `conference_members` lists exactly `users` (polling CometQL).
    pub async fn wait_members(&mut self, users: &[i64]) -> Vec<(i64, String, String)> {
        let mut want = users.to_vec();
        want.sort();
        let end = deadline(10);
        loop {
            let rows = self.members_rows().await;
            let got: Vec<i64> = rows.iter().map(|r| r.0).collect();
            if got == want {
                return rows;
            }
            assert!(
                Instant::now() < end,
                "conference_members lists {got:?}, expected {want:?}: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything known about the members and the server's media counters, for failure
    /// messages.
    pub fn report(&self) -> String {
        let mut lines: Vec<String> = self.members.iter().map(|m| m.peer.report()).collect();
        lines.push(format!("server: {}", media_metrics(&self.server)));
        lines.join("\n")
    }

    /// Asserts that every member hears exactly the tones of `talkers` except its own: waits
    /// (with a deadline) until each member's latest audio shows it, then measures one more
    /// second of fresh audio of every member (median of ten 100 ms windows) and asserts on it.
    pub async fn assert_hearing(&self, talkers: &[f64], what: &str) {
        self.assert_hearing_each(
            |m| Some(talkers.iter().copied().filter(|&t| t != m.tone).collect()),
            what,
        )
        .await;
    }

    /// Like [`Room::assert_hearing`], with what each member should hear given per member:
    /// `hears(member)` is the tones present (every other test tone must be absent), or `None`
    /// for a member not checked (a deaf one, which receives nothing).
    pub async fn assert_hearing_each(
        &self,
        hears: impl Fn(&Member) -> Option<Vec<f64>>,
        what: &str,
    ) {
        let all: Vec<f64> = TONES.to_vec();
        let checked: Vec<&Member> = self.members.iter().filter(|m| hears(m).is_some()).collect();
        let expect = |m: &Member| -> (Vec<f64>, Vec<f64>) {
            let present: Vec<f64> = hears(m).unwrap_or_default();
            let absent: Vec<f64> = all
                .iter()
                .copied()
                .filter(|t| !present.contains(t))
                .collect();
            (present, absent)
        };
        // 1. A steady state is reached.
        let started = Instant::now();
        let end = deadline(20);
        for &m in &checked {
            let (present, absent) = expect(m);
            loop {
                let pcm = m.peer.heard_last(SETTLE);
                let s = Spectrum::median_of_windows(&pcm, &all, WINDOW);
                if pcm.len() == SETTLE && s.matches(&present, &absent, HEARD, MARGIN_DB) {
                    break;
                }
                let more = m.peer.wait_heard(m.peer.heard_len(), 4800, end).await;
                assert!(
                    more && Instant::now() < end,
                    "{what}: user {} ({} Hz) should hear {present:?} and not {absent:?} but \
                     never did; last {:.2} s: {s}\npeers:\n{}\nits SIP transcript:\n{}",
                    m.user,
                    m.tone,
                    pcm.len() as f64 / f64::from(tones::RATE),
                    self.report(),
                    m.sip.transcript()
                );
            }
        }
        println!(
            "{what}: steady after {:.2} s",
            started.elapsed().as_secs_f64()
        );
        // 2. One fresh second of every member.
        let marks: Vec<usize> = checked.iter().map(|m| m.peer.heard_len()).collect();
        let skipped: Vec<u64> = checked.iter().map(|m| m.peer.skipped_frames()).collect();
        let end = deadline(10);
        for (m, &from) in checked.iter().zip(&marks) {
            assert!(
                m.peer.wait_heard(from, VERIFY, end).await,
                "{what}: user {} received less than 1 s of audio in 10 s\npeers:\n{}",
                m.user,
                self.report()
            );
        }
        for ((m, &from), &skipped) in checked.iter().zip(&marks).zip(&skipped) {
            // While anyone talks, every 20 ms frame is sent (no DTX gaps in a loud mix).
            assert_eq!(
                m.peer.skipped_frames(),
                skipped,
                "{what}: the server skipped frames to user {} while others talked\npeers:\n{}",
                m.user,
                self.report()
            );
            let (present, absent) = expect(m);
            let pcm = m.peer.heard_since(from);
            let s = Spectrum::median_of_windows(&pcm[..VERIFY], &all, WINDOW);
            println!("{what}: user {} ({} Hz) hears {s}", m.user, m.tone);
            assert!(
                s.matches(&present, &absent, HEARD, MARGIN_DB),
                "{what}: user {} ({} Hz) should hear {present:?} (each >= {HEARD}) and not \
                 {absent:?} ({MARGIN_DB} dB below); measured {s}\nevery 100 ms:\n{}\n\
                 peers:\n{}",
                m.user,
                m.tone,
                spectrogram(&pcm[..VERIFY], &all),
                self.report()
            );
        }
    }

    /// A CometQL statement from the backend; returns the affected rows.
    pub async fn update(&mut self, sql: &str) -> u64 {
        self.db
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        self.db.affected_rows()
    }

    /// Waits (deadline 10 s) until `user` has received no audio packet for a whole second.
    pub async fn wait_receiving_nothing(&self, user: i64, what: &str) {
        let m = self.members.iter().find(|m| m.user == user).unwrap();
        let end = deadline(10);
        let mut last = (m.peer.received_levels().0, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = m.peer.received_levels().0;
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(1) {
                return;
            }
            assert!(
                Instant::now() < end,
                "{what}: user {user} kept receiving audio\npeers:\n{}",
                self.report()
            );
        }
    }

    pub async fn close(mut self) {
        println!("{}", self.report());
        for m in &mut self.members {
            m.peer.close().await;
        }
        let errors: Vec<String> = self
            .server
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains("panicked") || l.contains("ERROR"))
            .collect();
        assert!(errors.is_empty(), "server errors: {errors:#?}");
    }
}

/// The server's media counters from `GET /metrics` (comet_participants, comet_rtp_*, ...).
pub fn media_metrics(server: &Server) -> String {
    server.metrics(&[
        "comet_participants",
        "comet_conferences",
        "comet_rtp",
        "comet_mix",
        "comet_sfu",
        "comet_audio",
        "comet_sip",
    ])
}

/// Tone amplitudes every 100 ms, one line each, for failure messages.
pub fn spectrogram(pcm: &[i16], freqs: &[f64]) -> String {
    pcm.chunks(WINDOW)
        .enumerate()
        .map(|(i, c)| {
            let s = Spectrum::measure(c, freqs);
            let cols: Vec<String> = s.tones.iter().map(|(_, a)| format!("{a:6.0}")).collect();
            format!("  {:4} ms: {}", i * 100, cols.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the `conference_members` rows: `join_time` and `last_talking` are seconds (numbers),
/// and every listed talker has talked.
pub fn check_rows(rows: &[(i64, String, String)], talkers: &[i64]) {
    for (user, join, talk) in rows {
        let join: u64 = join
            .parse()
            .unwrap_or_else(|_| panic!("join_time of {user} is {join:?}: {rows:?}"));
        assert!(join < 120, "join_time of {user}: {join}");
        if talkers.contains(user) {
            let t: u64 = talk.parse().unwrap_or_else(|_| {
                panic!("user {user} talks, yet last_talking is {talk:?}: {rows:?}")
            });
            assert!(t <= 5, "user {user} talks now, last_talking {t}");
        }
    }
}
