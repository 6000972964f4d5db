#![no_main]
//! VP8 RTP payloads (RFC 7741) into the depacketizer and the frame assembler.

use comet_media::assembler::{AssemblerConfig, FrameAssembler};
use comet_media::h264::Depacketizer;
use comet_media::vp8::{Vp8Depacketizer, Vp8Descriptor, parse_frame_header};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let packets = common::packets(data, 3000);
    let mut d = Vp8Depacketizer::new();
    let mut frame = Vec::new();
    for p in &packets {
        if let Ok(desc) = Vp8Descriptor::parse(&p.payload) {
            assert!(desc.header_len < p.payload.len());
        }
        let _ = parse_frame_header(&p.payload);
        let before = frame.len();
        if d.push(&p.payload, &mut frame).is_err() {
            assert_eq!(frame.len(), before);
        }
    }
    let mut a = FrameAssembler::new(Box::new(Vp8Depacketizer::new()), AssemblerConfig::default());
    for p in packets {
        let now = p.arrival;
        for f in a.push(p, now) {
            assert!(parse_frame_header(&f.data).is_ok());
        }
    }
});
