//! Transport cost per 20 ms conference tick: for N connected participants, the endpoint
//! receives one SRTP Opus packet from each and sends one to each (decrypt, demultiplex,
//! events; packetize, encrypt, output). The str0m clients on the other side of the in-memory
//! network run outside the timed part. See benches/README.md, section `sfu`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_sfu::{AnswerOptions, AudioLevel, Output};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use str0m::format::Codec as SCodec;
use str0m::media::{Frequency, MediaTime};

fn connected(n: usize) -> common::Net {
    let mut net = common::Net::new(common::config());
    for _ in 0..n {
        net.add_client(AnswerOptions::default());
    }
    net.connect_all();
    net
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfu_tick");
    g.sample_size(10);
    for n in [1usize, 10, 50] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("audio_in_out", n), &n, |b, &n| {
            let mut net = connected(n);
            let ids: Vec<_> = net.clients.iter().map(|c| c.id).collect();
            let frame: Arc<[u8]> = vec![0x5c; 80].into(); // a 32 kbit/s Opus frame
            let mut k: u64 = 0;
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: every client produces one SRTP Opus packet.
                    let mut incoming = Vec::with_capacity(n);
                    for i in 0..n {
                        let now = net.now;
                        let cl = &mut net.clients[i];
                        let w = cl.rtc.writer(cl.audio).unwrap();
                        let pt = w
                            .payload_params()
                            .find(|p| p.spec().codec == SCodec::Opus)
                            .unwrap()
                            .pt();
                        let t = MediaTime::new(k * 960, Frequency::FORTY_EIGHT_KHZ);
                        w.audio_level(-30, true)
                            .write(pt, now, t, vec![0x5c; 80])
                            .unwrap();
                        let _ = cl.rtc.handle_input(str0m::Input::Timeout(now));
                        incoming.extend(net.drain_client(i));
                    }

                    // Timed: the endpoint's work for one tick.
                    let start = Instant::now();
                    let now = net.now;
                    for (from, to, bytes) in &incoming {
                        net.ep.handle_datagram(*from, *to, bytes, now);
                    }
                    let level = Some(AudioLevel {
                        level: 30,
                        voice: true,
                    });
                    for id in &ids {
                        net.ep
                            .write_audio(*id, frame.clone(), (k * 960) as u32, level, now)
                            .unwrap();
                    }
                    net.ep.handle_timeout(now);
                    let mut out = Vec::with_capacity(2 * n);
                    loop {
                        match net.ep.poll_output(now) {
                            Output::Transmit(t) => out.push(t),
                            Output::Event(..) => {}
                            Output::Timeout(_) => break,
                        }
                    }
                    timed += start.elapsed();

                    // Untimed: the clients receive, time moves on 20 ms.
                    for t in &out {
                        net.deliver_to_client(t);
                    }
                    net.advance(Duration::from_millis(20));
                    net.events.clear();
                    for cl in &mut net.clients {
                        cl.events.clear();
                        cl.sent.clear();
                    }
                    k += 1;
                }
                timed
            });
            assert!(ids.iter().all(|id| net.ep.is_connected(*id)));
        });
    }
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
