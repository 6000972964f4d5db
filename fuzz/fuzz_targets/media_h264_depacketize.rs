#![no_main]
//! H.264 RTP payloads (RFC 6184) into the depacketizer and the frame assembler.

use comet_media::assembler::{AssemblerConfig, FrameAssembler};
use comet_media::h264::{Depacketizer, H264Depacketizer, split_annexb};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let packets = common::packets(data, 3000);
    let mut d = H264Depacketizer::new();
    let mut nals = Vec::new();
    for p in &packets {
        let before = nals.len();
        let _ = d.is_frame_start(&p.payload);
        if d.push_nals(&p.payload, &mut nals).is_err() {
            assert_eq!(nals.len(), before);
        }
    }
    for n in &nals {
        assert!(!n.is_empty());
    }
    let mut a = FrameAssembler::new(
        Box::new(H264Depacketizer::new()),
        AssemblerConfig::default(),
    );
    for p in packets {
        let now = p.arrival;
        for f in a.push(p, now) {
            assert!(!split_annexb(&f.data).is_empty());
        }
    }
    assert!(a.buffered() <= AssemblerConfig::default().max_packets + 1);
});
