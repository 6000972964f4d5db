//! SDP answers for the offers browsers send (contract section 4), on a virtual clock.

mod common;

use std::time::Instant;

use comet_sfu::{AnswerOptions, Codec, Direction, Endpoint, EndpointConfig, Error, MediaKind};
use comet_sfu::{ParticipantId, VideoCodec};
use common::*;

fn endpoint() -> Endpoint {
    Endpoint::new(config()).unwrap()
}

/// Checks every answer must pass: ICE-lite, BUNDLE, rtcp-mux, DTLS, our candidate.
fn check_common(answer: &Sdp, bundled: &[&str]) {
    assert!(answer.session.iter().any(|a| a == "ice-lite"), "{answer:?}");
    let group = format!("group:BUNDLE {}", bundled.join(" "));
    assert!(answer.session.contains(&group), "{group} in {answer:?}");
    let first = &answer.mlines[0];
    let cands = first.starts("candidate:");
    assert_eq!(cands.len(), 1, "{first:?}");
    assert!(
        cands[0].contains("127.0.0.1 20000 typ host"),
        "{}",
        cands[0]
    );
    for m in answer.mlines.iter().filter(|m| m.port != 0) {
        assert!(m.has("rtcp-mux"), "{m:?}");
        assert_eq!(m.starts("setup:"), ["setup:passive"], "{m:?}");
        assert!(m.starts("fingerprint:sha-256 ").len() == 1, "{m:?}");
        assert_eq!(m.starts("ice-ufrag:").len(), 1);
        assert_eq!(m.starts("ice-pwd:").len(), 1);
    }
}

fn rtpmap(m: &MLine, pt: u8) -> String {
    let p = format!("rtpmap:{pt} ");
    m.starts(&p)
        .first()
        .map(|s| s[p.len()..].to_string())
        .unwrap_or_default()
}

fn fmtp(m: &MLine, pt: u8) -> String {
    let p = format!("fmtp:{pt} ");
    m.starts(&p)
        .first()
        .map(|s| s[p.len()..].to_string())
        .unwrap_or_default()
}

#[test]
fn chrome_audio_video() {
    let mut ep = endpoint();
    let a = ep
        .accept_offer(CHROME, AnswerOptions::default(), Instant::now())
        .unwrap();
    let sdp = read_sdp(&a.sdp);
    check_common(&sdp, &["0", "1"]);
    assert_eq!(sdp.mlines.len(), 2);

    let audio = &sdp.mlines[0];
    assert_eq!(audio.kind, "audio");
    // Opus and telephone-event/48000 only: no RED, G722, PCMU, PCMA, CN, telephone-event/8000.
    assert_eq!(audio.pts, [111, 110], "{audio:?}");
    assert_eq!(rtpmap(audio, 111), "opus/48000/2");
    assert_eq!(rtpmap(audio, 110), "telephone-event/48000");
    assert!(fmtp(audio, 111).contains("useinbandfec=1"));
    assert!(
        audio.has("extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        "{audio:?}"
    );
    assert_eq!(audio.direction(), "sendrecv");
    assert!(audio.starts("ssrc:").iter().any(|s| s.contains("cname:")));

    let video = &sdp.mlines[1];
    assert_eq!(video.kind, "video");
    // H.264 packetization-mode=1 42e01f (not 42001f, listed first) and its RTX.
    assert_eq!(video.pts, [106, 107], "{video:?}");
    assert_eq!(rtpmap(video, 106), "H264/90000");
    let f = fmtp(video, 106);
    assert!(f.contains("packetization-mode=1"), "{f}");
    assert!(f.contains("profile-level-id=42e01f"), "{f}");
    assert_eq!(fmtp(video, 107), "apt=106");
    for fb in ["nack", "nack pli", "ccm fir"] {
        assert!(video.has(&format!("rtcp-fb:106 {fb}")), "{fb} in {video:?}");
    }
    assert_eq!(video.direction(), "sendrecv");

    let am = a.audio.unwrap();
    assert_eq!(
        (
            am.kind,
            am.codec,
            am.payload_type,
            am.clock_rate,
            am.direction
        ),
        (
            MediaKind::Audio,
            Codec::Opus,
            111,
            48000,
            Direction::SendRecv
        )
    );
    assert_eq!(am.telephone_event, Some(110));
    let vm = a.video.unwrap();
    assert_eq!(
        (vm.codec, vm.payload_type, vm.clock_rate, vm.direction),
        (Codec::H264, 106, 90000, Direction::SendRecv)
    );
}

#[test]
fn chrome_with_vp8_preferred() {
    let mut ep = Endpoint::new(EndpointConfig {
        video_codecs: vec![VideoCodec::Vp8, VideoCodec::H264],
        ..config()
    })
    .unwrap();
    let a = ep
        .accept_offer(CHROME, AnswerOptions::default(), Instant::now())
        .unwrap();
    let video = &read_sdp(&a.sdp).mlines[1];
    assert_eq!(video.pts, [96, 97], "{video:?}");
    assert_eq!(rtpmap(video, 96), "VP8/90000");
    assert_eq!(a.video.unwrap().codec, Codec::Vp8);
}

#[test]
fn firefox_audio_video() {
    let mut ep = endpoint();
    let a = ep
        .accept_offer(FIREFOX, AnswerOptions::default(), Instant::now())
        .unwrap();
    let sdp = read_sdp(&a.sdp);
    check_common(&sdp, &["0", "1"]);
    let audio = &sdp.mlines[0];
    // Firefox's telephone-event is 8 kHz: not usable next to Opus.
    assert_eq!(audio.pts, [109], "{audio:?}");
    assert_eq!(rtpmap(audio, 109), "opus/48000/2");
    let video = &sdp.mlines[1];
    assert_eq!(video.pts, [126, 127], "{video:?}");
    assert!(fmtp(video, 126).contains("packetization-mode=1"));
    assert_eq!(a.audio.unwrap().telephone_event, None);
    assert_eq!(a.video.unwrap().codec, Codec::H264);
}

#[test]
fn audio_only_call_still_gets_video_sendonly() {
    let mut ep = endpoint();
    let a = ep
        .accept_offer(CHROME_AUDIO_ONLY, AnswerOptions::default(), Instant::now())
        .unwrap();
    let sdp = read_sdp(&a.sdp);
    check_common(&sdp, &["0", "1"]);
    assert_eq!(sdp.mlines[0].direction(), "sendrecv");
    let video = &sdp.mlines[1];
    assert_eq!(video.direction(), "sendonly", "{video:?}");
    assert_eq!(video.pts, [106, 107]);
    // We send the composed canvas: our SSRC is announced.
    assert!(!video.starts("ssrc:").is_empty(), "{video:?}");
    let vm = a.video.unwrap();
    assert_eq!(vm.direction, Direction::SendOnly);
    assert!(vm.direction.sends() && !vm.direction.receives());
}

#[test]
fn pcmu_only_offer() {
    let mut ep = endpoint();
    let a = ep
        .accept_offer(PCMU_ONLY, AnswerOptions::default(), Instant::now())
        .unwrap();
    let sdp = read_sdp(&a.sdp);
    check_common(&sdp, &["a"]);
    assert_eq!(sdp.mlines.len(), 1);
    assert_eq!(sdp.mlines[0].pts, [0, 101]);
    assert_eq!(rtpmap(&sdp.mlines[0], 0), "PCMU/8000");
    let am = a.audio.unwrap();
    assert_eq!(
        (am.codec, am.payload_type, am.clock_rate),
        (Codec::Pcmu, 0, 8000)
    );
    assert_eq!(am.telephone_event, Some(101));
    assert!(a.video.is_none());
}

#[test]
fn g711_is_not_chosen_when_opus_is_offered() {
    // The Chrome offer lists PCMU and PCMA too; Opus must win even when it is listed last.
    let reordered = CHROME.replace(
        "m=audio 50110 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "m=audio 50110 UDP/TLS/RTP/SAVPF 0 8 9 13 126 110 63 111",
    );
    let mut ep = endpoint();
    let a = ep
        .accept_offer(&reordered, AnswerOptions::default(), Instant::now())
        .unwrap();
    assert_eq!(a.audio.unwrap().codec, Codec::Opus);
    assert_eq!(read_sdp(&a.sdp).mlines[0].pts, [111, 110]);
}

#[test]
fn options_narrow_directions() {
    let mut ep = endpoint();
    let opts = AnswerOptions {
        audio: Direction::RecvOnly,
        video: Direction::Inactive,
    };
    let a = ep.accept_offer(CHROME, opts, Instant::now()).unwrap();
    let sdp = read_sdp(&a.sdp);
    assert_eq!(sdp.mlines[0].direction(), "recvonly");
    assert_eq!(sdp.mlines[1].direction(), "inactive");
    assert_eq!(a.audio.unwrap().direction, Direction::RecvOnly);
    assert_eq!(a.video.unwrap().direction, Direction::Inactive);
}

/// A re-offer as JsSIP sends for hold/unhold: same ICE credentials, new directions.
fn with_directions(offer: &str, audio: &str, video: &str) -> String {
    let (a, v) = offer.split_once("m=video").unwrap();
    let a = a.replace("a=sendrecv", &format!("a={audio}"));
    let v = v
        .replace("a=sendrecv", &format!("a={video}"))
        .replace("a=recvonly", &format!("a={video}"));
    format!("{a}m=video{v}")
}

#[test]
fn reoffer_hold_and_unhold() {
    let mut ep = endpoint();
    let now = Instant::now();
    let a = ep
        .accept_offer(CHROME, AnswerOptions::default(), now)
        .unwrap();
    let id = a.participant;

    let hold = with_directions(CHROME, "sendonly", "sendonly");
    let h = ep
        .accept_reoffer(id, &hold, AnswerOptions::default(), now)
        .unwrap();
    let sdp = read_sdp(&h.sdp);
    assert_eq!(sdp.mlines[0].direction(), "recvonly", "{sdp:?}");
    assert_eq!(sdp.mlines[1].direction(), "recvonly");
    assert_eq!(h.audio.unwrap().direction, Direction::RecvOnly);
    assert_eq!(
        ep.media(id).unwrap().0.unwrap().direction,
        Direction::RecvOnly
    );
    // Same codec and payload type as before.
    assert_eq!(sdp.mlines[0].pts, [111, 110]);

    let inactive = with_directions(CHROME, "inactive", "inactive");
    let i = ep
        .accept_reoffer(id, &inactive, AnswerOptions::default(), now)
        .unwrap();
    assert_eq!(read_sdp(&i.sdp).mlines[0].direction(), "inactive");
    assert_eq!(i.video.unwrap().direction, Direction::Inactive);

    let u = ep
        .accept_reoffer(id, CHROME, AnswerOptions::default(), now)
        .unwrap();
    let sdp = read_sdp(&u.sdp);
    assert_eq!(sdp.mlines[0].direction(), "sendrecv");
    assert_eq!(u.audio.unwrap().direction, Direction::SendRecv);
    assert_eq!(u.video.unwrap().direction, Direction::SendRecv);
    // Our ICE credentials and fingerprint do not change without an ICE restart.
    let first = read_sdp(&a.sdp);
    assert_eq!(
        first.mlines[0].starts("ice-ufrag:"),
        sdp.mlines[0].starts("ice-ufrag:")
    );
    assert_eq!(
        first.mlines[0].starts("fingerprint:"),
        sdp.mlines[0].starts("fingerprint:")
    );
}

#[test]
fn reoffer_for_unknown_participant() {
    let mut ep = endpoint();
    assert_eq!(
        ep.accept_reoffer(
            ParticipantId(77),
            CHROME,
            AnswerOptions::default(),
            Instant::now()
        )
        .unwrap_err(),
        Error::UnknownParticipant(ParticipantId(77))
    );
}

#[test]
fn unsupported_video_codec_rejects_the_video_line() {
    // Only VP9 and AV1 video.
    let offer = CHROME
        .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 X-UNKNOWN/90000")
        .replace("a=rtpmap:102 H264/90000", "a=rtpmap:102 X-UNKNOWN/90000")
        .replace("a=rtpmap:106 H264/90000", "a=rtpmap:106 X-UNKNOWN/90000");
    let mut ep = endpoint();
    let a = ep
        .accept_offer(&offer, AnswerOptions::default(), Instant::now())
        .unwrap();
    assert!(a.video.is_none());
    let sdp = read_sdp(&a.sdp);
    check_common(&sdp, &["0"]);
    assert_eq!(sdp.mlines.len(), 2, "{}", a.sdp);
    assert_eq!(sdp.mlines[1].port, 0, "{}", a.sdp);
}

#[test]
fn errors_for_unusable_offers() {
    let mut ep = endpoint();
    let now = Instant::now();
    let g729 = PCMU_ONLY
        .replace(
            "m=audio 50130 UDP/TLS/RTP/SAVPF 0 101",
            "m=audio 50130 UDP/TLS/RTP/SAVPF 18",
        )
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    assert_eq!(
        ep.accept_offer(&g729, AnswerOptions::default(), now)
            .unwrap_err(),
        Error::NoCommonCodec(MediaKind::Audio)
    );
    for junk in [
        "",
        "hello",
        "v=0\r\n",
        "m=audio\r\n",
        "\u{0}\u{1}m=video 1 2 3",
    ] {
        assert!(matches!(
            ep.accept_offer(junk, AnswerOptions::default(), now),
            Err(Error::InvalidOffer(_))
        ));
    }
    let no_fingerprint: String = CHROME
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert!(matches!(
        ep.accept_offer(&no_fingerprint, AnswerOptions::default(), now),
        Err(Error::InvalidOffer(_))
    ));
    assert_eq!(ep.metrics().participants, 0);
}

#[test]
fn participant_limit() {
    let mut ep = Endpoint::new(EndpointConfig {
        max_participants: 2,
        ..config()
    })
    .unwrap();
    let now = Instant::now();
    let a = ep
        .accept_offer(CHROME, AnswerOptions::default(), now)
        .unwrap();
    let b = ep
        .accept_offer(FIREFOX, AnswerOptions::default(), now)
        .unwrap();
    assert_eq!(
        ep.accept_offer(CHROME, AnswerOptions::default(), now)
            .unwrap_err(),
        Error::TooManyParticipants
    );
    // Distinct ICE credentials (the demultiplexing key), one DTLS identity.
    let (sa, sb) = (read_sdp(&a.sdp), read_sdp(&b.sdp));
    assert_ne!(
        sa.mlines[0].starts("ice-ufrag:"),
        sb.mlines[0].starts("ice-ufrag:")
    );
    assert_eq!(
        sa.mlines[0].starts("fingerprint:"),
        sb.mlines[0].starts("fingerprint:")
    );
    ep.close(a.participant, now).unwrap();
    assert!(
        ep.accept_offer(CHROME, AnswerOptions::default(), now)
            .is_ok()
    );
    assert_eq!(ep.metrics().participants, 2);
}

#[test]
fn config_is_checked() {
    assert!(matches!(
        Endpoint::new(EndpointConfig::default()),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Endpoint::new(EndpointConfig {
            candidates: vec!["0.0.0.0:1".parse().unwrap()],
            ..Default::default()
        }),
        Err(Error::Config(_))
    ));
}

#[test]
fn opus_without_channel_count() {
    let offer = CHROME.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus/48000");
    let mut ep = endpoint();
    let a = ep
        .accept_offer(&offer, AnswerOptions::default(), Instant::now())
        .unwrap();
    assert_eq!(a.audio.unwrap().codec, Codec::Opus);
    assert_eq!(read_sdp(&a.sdp).mlines[0].pts, [111, 110]);
}

#[test]
fn data_channel_and_extra_lines_are_rejected() {
    let offer = CHROME.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
        + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Chr0\r\n\
a=ice-pwd:chromeicepasswordchromeice\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:2\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";
    let mut ep = endpoint();
    let a = ep
        .accept_offer(&offer, AnswerOptions::default(), Instant::now())
        .unwrap();
    let sdp = read_sdp(&a.sdp);
    check_common(&sdp, &["0", "1"]);
    assert_eq!(sdp.mlines.len(), 3, "{}", a.sdp);
    assert_eq!(
        (sdp.mlines[2].kind.as_str(), sdp.mlines[2].port),
        ("application", 0)
    );
    assert!(a.audio.is_some() && a.video.is_some());
}
