//! Turns fuzzer bytes into a sequence of RTP packets: each packet is
//! `[flags][len][payload...]`; flags pick the marker bit and perturb sequence numbers and
//! timestamps (reordering, duplicates, jumps).

use std::time::{Duration, Instant};

use comet_media::rtp::RtpPacket;

pub fn packets(data: &[u8], ts_step: u32) -> Vec<RtpPacket> {
    let base = Instant::now();
    let mut out = Vec::new();
    let mut rest = data;
    let mut seq: u16 = 65_530;
    let mut ts: u32 = u32::MAX - 3 * ts_step;
    let mut k = 0u64;
    while rest.len() >= 2 {
        let flags = rest[0];
        let len = (rest[1] as usize).min(rest.len() - 2);
        let payload = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        let s = match flags & 0x0c {
            0x04 => seq.wrapping_sub(2),
            0x08 => seq.wrapping_add(40),
            _ => seq,
        };
        if flags & 0x30 == 0x10 {
            ts = ts.wrapping_add(ts_step);
        } else if flags & 0x30 == 0x20 {
            ts = ts.wrapping_add(ts_step.wrapping_mul(u32::from(flags >> 6) * 1000 + 1));
        }
        let mut p = RtpPacket::new(
            s,
            ts,
            flags & 0x01 != 0,
            payload,
            base + Duration::from_millis(k * 7),
        );
        if flags & 0x02 != 0 {
            p.audio_level = Some(flags >> 1);
        }
        out.push(p);
        if flags & 0x40 == 0 {
            seq = seq.wrapping_add(1);
        }
        k += 1;
    }
    out
}
