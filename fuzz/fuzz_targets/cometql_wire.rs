//! The MySQL wire codec: any byte stream cut into packets, and any packet as a handshake
//! response, must give values or errors, never a panic.
#![no_main]

use comet_server::cometql::wire::{PacketReader, Read, parse_handshake_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_handshake_response(data);
    let split = data.first().map_or(1, |b| (*b as usize % 31) + 1);
    let mut r = PacketReader::new(1 << 16);
    for chunk in data.chunks(split) {
        r.feed(chunk);
        while let Read::Packet(_, p) = r.next_packet() {
            let _ = parse_handshake_response(&p);
        }
    }
});
