//! The endpoint against str0m clients (full ICE, frame mode) on an in-memory network and a
//! virtual clock: connection, media both ways, keyframe requests, close, timeouts, several
//! participants on the one port.

mod common;

use std::time::Duration;

use comet_sfu::{
    AnswerOptions, AudioLevel, CloseReason, Codec, Error, Event, KeyframeKind, MediaKind,
    MediaPacket, ParticipantId,
};
use common::*;
use str0m::format::Codec as SCodec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaTime, Mid};

const OPUS_FRAME: [u8; 6] = [0xfc, 0xff, 0xfe, 0x01, 0x02, 0x03];

fn media_of(net: &Net, id: ParticipantId, kind: MediaKind) -> Vec<MediaPacket> {
    net.events_of(id)
        .filter_map(|e| match e {
            Event::Media(m) if m.kind == kind => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// The client sends `n` Opus frames, 20 ms apart, with audio level `level`.
fn client_sends_audio(net: &mut Net, i: usize, n: u32, level: i8) {
    for k in 0..n {
        let now = net.now;
        let c = &mut net.clients[i];
        let w = c.rtc.writer(c.audio).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == SCodec::Opus)
            .unwrap()
            .pt();
        let t = MediaTime::new(u64::from(k) * 960, Frequency::FORTY_EIGHT_KHZ);
        w.audio_level(level, true)
            .write(pt, now, t, OPUS_FRAME.to_vec())
            .unwrap();
        net.advance(Duration::from_millis(20));
    }
}

/// The client sends `n` H.264 frames (Annex B: SPS, PPS, IDR), 40 ms apart.
fn client_sends_h264(net: &mut Net, i: usize, n: u32) {
    for k in 0..n {
        let now = net.now;
        let c = &mut net.clients[i];
        let w = c.rtc.writer(c.video).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == SCodec::H264)
            .unwrap()
            .pt();
        let mut frame = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0xda];
        frame.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        frame.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        frame.extend(std::iter::repeat_n(0x5a, 3000)); // bigger than one packet: FU-A
        let t = MediaTime::new(u64::from(k) * 3600, Frequency::NINETY_KHZ);
        w.write(pt, now, t, frame).unwrap();
        net.advance(Duration::from_millis(40));
    }
}

#[test]
fn connect_media_keyframes_and_close() {
    let mut net = Net::new(config());
    let i = net.add_client(AnswerOptions::default());
    let id = net.clients[i].id;
    net.connect_all();
    assert!(matches!(net.events_of(id).next(), Some(Event::Connected)));

    // Audio in: every packet, in order, with its RFC 6464 level.
    client_sends_audio(&mut net, i, 50, -25);
    let audio = media_of(&net, id, MediaKind::Audio);
    assert_eq!(audio.len(), 50, "{:?}", net.ep.metrics());
    for w in audio.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 960);
        assert!(w[1].arrival >= w[0].arrival);
    }
    for p in &audio {
        assert_eq!(p.codec, Codec::Opus);
        assert_eq!(&p.payload[..], &OPUS_FRAME);
        assert_eq!(
            p.audio_level,
            Some(AudioLevel {
                level: 25,
                voice: true
            })
        );
    }

    // Audio out: the client gets our payloads.
    let ts0 = 1234u32;
    for k in 0..50u32 {
        let payload: Vec<u8> = vec![0xfc, k as u8, 7, 7];
        let level = Some(AudioLevel {
            level: 30,
            voice: true,
        });
        net.ep
            .write_audio(id, payload, ts0 + k * 960, level, net.now)
            .unwrap();
        net.advance(Duration::from_millis(20));
    }
    let got = net.clients[i].audio_received();
    assert!(got.len() >= 49, "client got {} audio frames", got.len());
    assert!(got.iter().any(|d| d.data[..] == [0xfc, 10, 7, 7]));
    let ext = &got[5].ext_vals;
    assert_eq!(
        (ext.audio_level, ext.voice_activity),
        (Some(-30), Some(true))
    );

    // Video in: H.264 fragmented into FU-A packets, marker on each frame's last packet.
    client_sends_h264(&mut net, i, 5);
    let video = media_of(&net, id, MediaKind::Video);
    assert!(video.len() >= 15, "{} video packets", video.len());
    assert!(video.iter().all(|p| p.codec == Codec::H264));
    assert_eq!(video.iter().filter(|p| p.marker).count(), 5);
    for w in video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }

    // Keyframe request to the client (PLI): it sees it for its video.
    net.ep.request_keyframe(id, net.now).unwrap();
    net.advance(Duration::from_millis(50));
    let c = &net.clients[i];
    assert!(
        c.events.iter().any(|e| matches!(e,
            str0m::Event::KeyframeRequest(r) if r.mid == c.video && r.kind == KeyframeRequestKind::Pli)),
        "client saw no PLI"
    );
    assert_eq!(net.ep.metrics().plis_sent, 1);
    // And a FIR (what the MCU escalates to when PLIs go unanswered).
    net.ep
        .request_keyframe_kind(id, comet_sfu::KeyframeKind::Fir, net.now)
        .unwrap();
    net.advance(Duration::from_millis(50));
    let c = &net.clients[i];
    assert!(
        c.events.iter().any(|e| matches!(e,
            str0m::Event::KeyframeRequest(r) if r.mid == c.video && r.kind == KeyframeRequestKind::Fir)),
        "client saw no FIR"
    );
    assert_eq!(net.ep.metrics().firs_sent, 1);

    // Video out, then the client asks us for a keyframe.
    for k in 0..10u32 {
        let marker = k % 2 == 1;
        let nal: Vec<u8> = vec![0x65, 0x88, k as u8];
        net.ep
            .write_video(id, nal, 90_000 + (k / 2) * 3000, marker, net.now)
            .unwrap();
        net.advance(Duration::from_millis(20));
    }
    {
        let now = net.now;
        let c = &mut net.clients[i];
        let v = c.video;
        c.rtc
            .writer(v)
            .unwrap()
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .unwrap();
        let _ = now;
    }
    net.advance(Duration::from_millis(50));
    assert!(
        net.events_of(id)
            .any(|e| matches!(e, Event::KeyframeRequest(KeyframeKind::Pli))),
        "no keyframe request from the client"
    );
    assert_eq!(net.ep.metrics().plis_received, 1);

    // RTCP reports flowed: stats events with an RTT.
    net.advance(Duration::from_secs(2));
    assert!(
        net.events_of(id).any(|e| matches!(e, Event::Stats(_))),
        "no stats"
    );

    // Close: one Closed(Local), the client sees DTLS close_notify.
    net.ep.close(id, net.now).unwrap();
    net.advance(Duration::from_millis(100));
    let closed: Vec<&Event> = net
        .events_of(id)
        .filter(|e| matches!(e, Event::Closed(_)))
        .collect();
    assert!(matches!(closed[..], [Event::Closed(CloseReason::Local)]));
    assert!(net.clients[i].closed(), "client did not see the close");
    assert!(matches!(net.events_of(id).last(), Some(Event::Closed(_))));
    let m = net.ep.metrics();
    assert_eq!((m.participants, m.participants_closed), (0, 1));
    assert!(m.rtp_in >= 65 && m.rtp_out == 60, "{m:?}");
    assert_eq!(
        net.ep.write_audio(id, vec![1], 0, None, net.now),
        Err(Error::UnknownParticipant(id))
    );
}

#[test]
fn writes_before_connect_and_on_hold_are_refused() {
    let mut net = Net::new(config());
    let i = net.add_client(AnswerOptions {
        audio: comet_sfu::Direction::RecvOnly,
        ..Default::default()
    });
    let id = net.clients[i].id;
    assert_eq!(
        net.ep.write_audio(id, vec![1], 0, None, net.now),
        Err(Error::NotConnected)
    );
    net.connect_all();
    assert_eq!(
        net.ep.write_audio(id, vec![1], 0, None, net.now),
        Err(Error::NotSending(MediaKind::Audio))
    );
    assert_eq!(net.ep.metrics().writes_refused, 2);
    // Video is sendrecv: fine.
    net.ep
        .write_video(id, vec![0x65, 1], 0, true, net.now)
        .unwrap();
}

#[test]
fn connect_timeout() {
    let mut net = Net::new(config());
    let i = net.add_client(AnswerOptions::default());
    net.clients[i].reachable = false;
    let id = net.clients[i].id;
    net.advance(Duration::from_secs(19));
    let early: Vec<&Event> = net.events_of(id).collect();
    assert!(early.is_empty(), "{early:?}");
    net.advance(Duration::from_secs(2));
    let evs: Vec<&Event> = net.events_of(id).collect();
    assert!(
        matches!(evs[..], [Event::Closed(CloseReason::ConnectTimeout)]),
        "{evs:?}"
    );
    assert_eq!(net.ep.metrics().participants, 0);
}

#[test]
fn ice_timeout_after_peer_vanishes() {
    let mut net = Net::new(config());
    let i = net.add_client(AnswerOptions::default());
    let id = net.clients[i].id;
    net.connect_all();
    net.clients[i].reachable = false;
    let gone = net.now;
    assert!(net.run_until(Duration::from_secs(40), |n| {
        n.events_of(id).any(|e| matches!(e, Event::Closed(_)))
    }));
    let evs: Vec<&Event> = net
        .events_of(id)
        .filter(|e| !matches!(e, Event::Stats(_) | Event::StreamPaused { .. }))
        .collect();
    assert!(
        matches!(
            evs[..],
            [
                Event::Connected,
                Event::Disconnected,
                Event::Closed(CloseReason::IceTimeout)
            ]
        ),
        "{evs:?}"
    );
    let took = net.now - gone;
    assert!(
        took >= Duration::from_secs(10) && took <= Duration::from_secs(30),
        "{took:?}"
    );
}

#[test]
fn several_participants_on_one_port() {
    let mut net = Net::new(config());
    for _ in 0..4 {
        net.add_client(AnswerOptions::default());
    }
    net.connect_all();
    for i in 0..4 {
        client_sends_audio(&mut net, i, 10, -(10 + i as i8));
    }
    for i in 0..4 {
        let id = net.clients[i].id;
        let audio = media_of(&net, id, MediaKind::Audio);
        assert_eq!(audio.len(), 10, "participant {i}");
        assert!(
            audio
                .iter()
                .all(|p| p.audio_level.map(|l| l.level) == Some(10 + i as u8)),
            "participant {i} got someone else's packets"
        );
    }
    // Each client hears only what was written for it.
    for i in 0..4 {
        let id = net.clients[i].id;
        for k in 0..5u32 {
            net.ep
                .write_audio(id, vec![0xfc, i as u8, k as u8], k * 960, None, net.now)
                .unwrap();
        }
        net.advance(Duration::from_millis(20));
    }
    net.advance(Duration::from_millis(200));
    for i in 0..4 {
        let got = net.clients[i].audio_received();
        assert!(!got.is_empty(), "client {i} got nothing");
        assert!(got.iter().all(|d| d.data[1] == i as u8), "client {i}");
    }
    assert_eq!(net.ep.metrics().participants, 4);
    assert_eq!(net.ep.metrics().unknown_dropped, 0);
}

/// The client re-offers through str0m's SDP API; the endpoint answers the re-offer.
fn reoffer(
    net: &mut Net,
    i: usize,
    change: impl FnOnce(&mut str0m::change::SdpApi, Mid, Mid),
) -> comet_sfu::Answer {
    use str0m::change::SdpAnswer;
    let (offer, pending) = {
        let c = &mut net.clients[i];
        let (audio, video) = (c.audio, c.video);
        let mut api = c.rtc.sdp_api();
        change(&mut api, audio, video);
        api.apply().unwrap()
    };
    let id = net.clients[i].id;
    let answer = net
        .ep
        .accept_reoffer(
            id,
            &offer.to_sdp_string(),
            AnswerOptions::default(),
            net.now,
        )
        .unwrap();
    let sdp = SdpAnswer::from_sdp_string(&answer.sdp).unwrap();
    net.clients[i]
        .rtc
        .sdp_api()
        .accept_answer(pending, sdp)
        .unwrap();
    net.advance(Duration::from_millis(50));
    answer
}

#[test]
fn hold_unhold_and_ice_restart_while_connected() {
    use comet_sfu::Direction;
    use str0m::media::Direction as SDir;
    let mut net = Net::new(config());
    let i = net.add_client(AnswerOptions::default());
    let id = net.clients[i].id;
    net.connect_all();

    // Hold: the client only sends; we may not.
    let held = reoffer(&mut net, i, |api, a, v| {
        api.set_direction(a, SDir::SendOnly);
        api.set_direction(v, SDir::SendOnly);
    });
    assert_eq!(held.audio.unwrap().direction, Direction::RecvOnly);
    let (audio, video) = net.ep.media(id).unwrap();
    assert_eq!(audio.unwrap().direction, Direction::RecvOnly);
    assert_eq!(video.unwrap().direction, Direction::RecvOnly);
    assert_eq!(
        net.ep.write_audio(id, vec![1], 0, None, net.now),
        Err(Error::NotSending(MediaKind::Audio))
    );

    // Unhold.
    let unheld = reoffer(&mut net, i, |api, a, v| {
        api.set_direction(a, SDir::SendRecv);
        api.set_direction(v, SDir::SendRecv);
    });
    assert_eq!(unheld.audio.unwrap().direction, Direction::SendRecv);
    let before = net.clients[i].audio_received().len();
    for k in 0..5u32 {
        net.ep
            .write_audio(id, vec![0xfc, 9, k as u8], k * 960, None, net.now)
            .unwrap();
        net.advance(Duration::from_millis(20));
    }
    assert!(net.clients[i].audio_received().len() > before);

    // ICE restart: our answer carries new credentials; media keeps flowing.
    let ufrag = |sdp: &str| {
        read_sdp(sdp).mlines[0]
            .starts("ice-ufrag:")
            .first()
            .map(|s| s.to_string())
    };
    let restarted = reoffer(&mut net, i, |api, _, _| {
        api.ice_restart(true);
    });
    assert_ne!(ufrag(&restarted.sdp), ufrag(&unheld.sdp));
    net.advance(Duration::from_secs(3));
    let n = media_of(&net, id, MediaKind::Audio).len();
    client_sends_audio(&mut net, i, 10, -20);
    assert_eq!(media_of(&net, id, MediaKind::Audio).len(), n + 10);
    assert!(net.ep.is_connected(id));
    assert!(
        !net.events_of(id).any(|e| matches!(e, Event::Closed(_))),
        "closed after ICE restart"
    );
}

#[test]
fn nack_retransmission_both_ways() {
    let mut net = Net::new(config());
    let i = net.add_client(AnswerOptions::default());
    let id = net.clients[i].id;
    net.connect_all();
    let vpt = net.ep.media(id).unwrap().1.unwrap().payload_type;

    // Our 3rd video packet to the client is lost once: the client NACKs, we retransmit (RTX),
    // it assembles every frame.
    let mut n = 0;
    net.drop_to_client = Some(Box::new(move |_, d| {
        if rtp_pt(d) == Some(vpt) {
            n += 1;
            n == 3
        } else {
            false
        }
    }));
    for k in 0..10u32 {
        let nal: Vec<u8> = vec![0x65, 0x88, k as u8];
        net.ep
            .write_video(id, nal, (k / 2) * 3000, k % 2 == 1, net.now)
            .unwrap();
        net.advance(Duration::from_millis(20));
    }
    net.advance(Duration::from_secs(2));
    let c = &net.clients[i];
    let frames = c
        .events
        .iter()
        .filter(|e| matches!(e, str0m::Event::MediaData(d) if d.mid == c.video))
        .count();
    assert_eq!(frames, 5, "client assembled {frames} of 5 frames");
    assert!(
        net.ep.metrics().nacks_received >= 1,
        "{:?}",
        net.ep.metrics()
    );

    // The client's 4th video packet is lost once: we NACK, it retransmits, no gap remains.
    net.drop_to_client = None;
    let mut n = 0;
    net.drop_to_ep = Some(Box::new(move |_, d| {
        if rtp_pt(d) == Some(vpt) {
            n += 1;
            n == 4
        } else {
            false
        }
    }));
    client_sends_h264(&mut net, i, 5);
    net.advance(Duration::from_secs(2));
    let mut seqs: Vec<u64> = media_of(&net, id, MediaKind::Video)
        .iter()
        .map(|p| p.seq)
        .collect();
    let arrived = seqs.clone();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), arrived.len(), "duplicates delivered");
    assert_eq!(
        seqs.last().unwrap() - seqs.first().unwrap() + 1,
        seqs.len() as u64,
        "gap left: {seqs:?}"
    );
    // The retransmission arrived late: not in sequence order (RTP level, no reordering here).
    assert_ne!(arrived, seqs);
    assert!(net.ep.metrics().nacks_sent >= 1, "{:?}", net.ep.metrics());
}

#[test]
fn remb_and_twcc_estimates_and_rtt() {
    let mut net = Net::new(comet_sfu::EndpointConfig {
        bwe_initial_bitrate: Some(500_000),
        ..config()
    });
    let i = net.add_client(AnswerOptions::default());
    let id = net.clients[i].id;
    net.connect_all();
    for k in 0..100u32 {
        let mut nal = vec![0x65, 0x88];
        nal.extend(std::iter::repeat_n(k as u8, 1000));
        net.ep
            .write_video(id, nal, k * 3000, true, net.now)
            .unwrap();
        net.ep
            .write_audio(id, vec![0xfc, 1], k * 960, None, net.now)
            .unwrap();
        net.advance(Duration::from_millis(33));
    }
    assert!(
        net.events_of(id).any(|e| matches!(
            e,
            Event::BitrateEstimate {
                source: comet_sfu::BitrateSource::Twcc,
                ..
            }
        )),
        "no TWCC estimate"
    );
    {
        let c = &mut net.clients[i];
        let v = c.video;
        c.rtc
            .direct_api()
            .stream_rx_by_mid(v, None)
            .expect("client receives our video")
            .request_remb(str0m::bwe::Bitrate::kbps(300));
    }
    net.advance(Duration::from_millis(100));
    assert!(
        net.events_of(id).any(|e| matches!(
            e,
            Event::BitrateEstimate {
                bps: 300_000,
                source: comet_sfu::BitrateSource::Remb
            }
        )),
        "no REMB estimate"
    );
    assert!(
        net.events_of(id)
            .any(|e| matches!(e, Event::Stats(s) if s.rtt.is_some() && s.bytes_out > 0)),
        "no RTT from RTCP reports"
    );
}

/// One shard of three: its ids are its index modulo 3, its ufrags start with its index, and
/// it records every demultiplexing key it starts and stops answering to (offer, the peer's
/// verified address, ICE restart, close) for its driver. A whole endpoint records none.
#[test]
fn a_shard_records_its_routes() {
    use comet_sfu::{RouteChange, Shard};
    let ufrag = |sdp: &str| {
        read_sdp(sdp).mlines[0]
            .starts("ice-ufrag:")
            .first()
            .map(|s| s.trim_start_matches("ice-ufrag:").to_string())
            .unwrap()
    };
    let mut net = Net::new(comet_sfu::EndpointConfig {
        shard: Shard { index: 1, count: 3 },
        ..config()
    });
    let first = net.add_client(AnswerOptions::default());
    let second = net.add_client(AnswerOptions::default());
    let (a, b) = (net.clients[first].id, net.clients[second].id);
    assert_eq!((a.0 % 3, b.0 % 3), (1, 1), "{a} {b}");
    assert_eq!(Shard::of(a, 3), 1);
    assert_ne!(a, b);
    let offered = net.ep.take_route_changes();
    let ufrags: Vec<String> = offered
        .iter()
        .map(|c| match c {
            RouteChange::Ufrag { ufrag, ours: true } => ufrag.clone(),
            other => panic!("before any datagram only ufrags: {other:?}"),
        })
        .collect();
    assert_eq!(ufrags.len(), 2);
    assert!(ufrags.iter().all(|u| u.starts_with("1s")), "{ufrags:?}");

    net.connect_all();
    let learned = net.ep.take_route_changes();
    let addrs = [net.clients[first].addr, net.clients[second].addr];
    for addr in addrs {
        assert!(
            learned.contains(&RouteChange::Addr { addr, ours: true }),
            "{addr} not learned: {learned:?}"
        );
    }
    assert!(
        learned
            .iter()
            .all(|c| matches!(c, RouteChange::Addr { ours: true, .. })),
        "{learned:?}"
    );

    // ICE restart: the old ufrag goes, the new one comes.
    let old = ufrags[first].clone();
    let restarted = reoffer(&mut net, first, |api, _, _| {
        api.ice_restart(true);
    });
    let new = ufrag(&restarted.sdp);
    assert_ne!(new, old);
    let changes = net.ep.take_route_changes();
    assert_eq!(
        changes[..2],
        [
            RouteChange::Ufrag {
                ufrag: old,
                ours: false
            },
            RouteChange::Ufrag {
                ufrag: new.clone(),
                ours: true
            }
        ]
    );

    // Closing gives up the participant's ufrag and address.
    net.ep.close(a, net.now).unwrap();
    let closed = net.ep.take_route_changes();
    assert!(closed.contains(&RouteChange::Ufrag {
        ufrag: new,
        ours: false
    }));
    assert!(closed.contains(&RouteChange::Addr {
        addr: addrs[0],
        ours: false
    }));
    assert!(!closed.iter().any(|c| matches!(
        c,
        RouteChange::Addr { addr, .. } if *addr == addrs[1]
    )));

    // A whole endpoint has nothing to publish.
    let mut whole = Net::new(config());
    whole.add_client(AnswerOptions::default());
    whole.connect_all();
    assert_eq!(whole.ep.take_route_changes(), Vec::new());
}

#[test]
fn a_shard_outside_its_count_is_refused() {
    use comet_sfu::Shard;
    for shard in [Shard { index: 3, count: 3 }, Shard { index: 0, count: 0 }] {
        let r = comet_sfu::Endpoint::new(comet_sfu::EndpointConfig { shard, ..config() });
        assert!(matches!(r, Err(Error::Config(_))), "{shard:?}");
    }
}
