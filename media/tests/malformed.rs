//! Property tests: arbitrary bytes into every depacketizer and receiver never panic, and
//! whatever is accepted is well-formed.

use std::time::{Duration, Instant};

use comet_media::audio::{AudioReceiver, AudioReceiverConfig};
use comet_media::h264::{
    AvcDecoderConfig, Depacketizer, H264Depacketizer, H264Packetizer, split_annexb, split_avcc,
};
use comet_media::opus::parse_packet;
use comet_media::rtp::RtpPacket;
use comet_media::video::{VideoCodec, VideoReceiver, VideoReceiverConfig};
use comet_media::vp8::{Vp8Depacketizer, Vp8Descriptor, parse_frame_header};
use proptest::prelude::*;

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn h264_depacketizer_never_panics(ps in payloads()) {
        let mut d = H264Depacketizer::new();
        let mut frame = Vec::new();
        for p in &ps {
            let before = frame.len();
            let _ = d.is_frame_start(p);
            match d.push(p, &mut frame) {
                Ok(_) => {}
                Err(_) => prop_assert_eq!(frame.len(), before, "error must not emit data"),
            }
        }
        // Everything emitted is a sequence of start-code-prefixed, non-empty NAL units.
        for nal in split_annexb(&frame) {
            prop_assert!(!nal.is_empty());
        }
    }

    #[test]
    fn h264_fu_a_and_stap_a_shapes_never_panic(
        ps in prop::collection::vec(
            (prop::sample::select(vec![24u8, 28, 1, 5, 25, 29, 0, 31]), any::<u8>(),
             prop::collection::vec(any::<u8>(), 0..40)),
            1..30)
    ) {
        let mut d = H264Depacketizer::new();
        let mut nals = Vec::new();
        for (typ, second, rest) in ps {
            let mut p = vec![0x60 | typ, second];
            p.extend(rest);
            let _ = d.push_nals(&p, &mut nals);
        }
        for n in &nals {
            prop_assert!(!n.is_empty());
            prop_assert!((1..=23).contains(&(n[0] & 0x1f)));
        }
    }

    #[test]
    fn h264_packetizer_respects_mtu_and_round_trips(
        nals in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 1..8),
        mtu in 16usize..1500,
    ) {
        let nals: Vec<Vec<u8>> = nals
            .into_iter()
            .map(|mut n| { n[0] = (n[0] & 0x60) | 1; n })
            .collect();
        let refs: Vec<&[u8]> = nals.iter().map(|n| n.as_slice()).collect();
        let payloads = H264Packetizer::new(mtu).unwrap().packetize(&refs);
        prop_assert!(payloads.iter().all(|p| p.len() <= mtu));
        let mut d = H264Depacketizer::new();
        let mut out = Vec::new();
        for p in &payloads {
            d.push_nals(p, &mut out).unwrap();
        }
        prop_assert_eq!(out, nals);
    }

    #[test]
    fn vp8_depacketizer_never_panics(ps in payloads()) {
        let mut d = Vp8Depacketizer::new();
        let mut frame = Vec::new();
        for p in &ps {
            let _ = Vp8Descriptor::parse(p);
            let _ = parse_frame_header(p);
            let _ = d.is_frame_start(p);
            let before = frame.len();
            if d.push(p, &mut frame).is_err() {
                prop_assert_eq!(frame.len(), before);
            }
        }
    }

    #[test]
    fn opus_parser_never_panics(p in prop::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(info) = parse_packet(&p) {
            prop_assert!(info.samples <= 5760);
            prop_assert!(info.frames >= 1 && info.frames <= 48);
        }
    }

    #[test]
    fn avcc_and_config_parsers_never_panic(p in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = split_annexb(&p);
        for len in [1, 2, 3, 4] {
            let _ = split_avcc(&p, len);
        }
        let _ = AvcDecoderConfig::parse(&p);
    }

    #[test]
    fn audio_receiver_never_panics(
        ps in prop::collection::vec(
            (any::<u16>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..200)), 1..40)
    ) {
        let mut rx = AudioReceiver::new(AudioReceiverConfig::default()).unwrap();
        let base = Instant::now();
        for (k, (seq, ts, payload)) in ps.into_iter().enumerate() {
            let now = base + Duration::from_millis(20 * k as u64);
            let _ = rx.push(RtpPacket::new(seq, ts, false, payload, now), now);
            prop_assert_eq!(rx.pop(now).samples.len(), 960);
        }
    }
}

proptest! {
    // Each case builds decoders: fewer cases.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn video_receivers_never_panic(
        ps in prop::collection::vec(
            (0u16..40, any::<bool>(), prop::collection::vec(any::<u8>(), 1..200)), 1..40),
        vp8 in any::<bool>(),
    ) {
        let codec = if vp8 { VideoCodec::Vp8 } else { VideoCodec::H264 };
        let mut rx = VideoReceiver::new(VideoReceiverConfig::new(codec)).unwrap();
        let base = Instant::now();
        for (k, (seq, marker, payload)) in ps.into_iter().enumerate() {
            let now = base + Duration::from_millis(10 * k as u64);
            let ts = u32::from(seq / 3) * 3000;
            let _ = rx.push(RtpPacket::new(seq, ts, marker, payload, now), now);
            let _ = rx.poll(now);
        }
        let _ = rx.poll(base + Duration::from_secs(5));
    }
}

#[test]
fn decoders_reject_garbage_without_crashing() {
    use comet_media::video_codec::{H264Decoder, Vp8Decoder};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(99);
    let mut h264 = H264Decoder::new().unwrap();
    let mut vp8 = Vp8Decoder::new().unwrap();
    for _ in 0..300 {
        let len = rng.random_range(0..2000);
        let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = h264.decode(&data);
        let mut au = vec![0, 0, 0, 1, 0x65];
        au.extend_from_slice(&data);
        let _ = h264.decode(&au);
        let _ = vp8.decode(&data);
        // A plausible key frame header followed by garbage.
        if data.len() >= 10 {
            data[0] &= 0xfe;
            data[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            data[6..10].copy_from_slice(&[0x40, 0x01, 0xb4, 0x00]);
            let _ = vp8.decode(&data);
        }
    }
}
