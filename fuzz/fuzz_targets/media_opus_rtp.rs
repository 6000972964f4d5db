#![no_main]
//! Opus RTP payloads: packet validation and the jitter buffer fed with whatever validates.

use std::time::Duration;

use comet_media::jitter::{JitterBuffer, JitterConfig};
use comet_media::opus::parse_packet;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let packets = common::packets(data, 960);
    let cfg = JitterConfig::default();
    let cap = cfg.max_buffered;
    let mut jb = JitterBuffer::new(cfg);
    for p in packets {
        let now = p.arrival;
        if let Ok(info) = parse_packet(&p.payload) {
            assert!(info.samples > 0 && info.samples <= 5760);
            jb.push_with_duration(p, info.samples as u32, now);
        }
        let _ = jb.pop(now);
        let _ = jb.pop(now + Duration::from_millis(3));
        assert!(jb.buffered() <= cap);
    }
    let _ = jb.stats();
});
