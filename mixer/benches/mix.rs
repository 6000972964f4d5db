//! Audio mixing throughput: scalar vs SIMD, against a memcpy of the same bytes.
//!
//! `mix/<K>/<level>/<N>`: one 20 ms mono frame for N members, everyone talking. K=all mixes
//! every member (N own N-1 outputs, the worst case); K=3 is the default configuration.
//! `memcpy/<N>`: copying the N input frames into N output buffers (the machine's limit).
//! Throughput is reported over the N input frames (N x 1920 bytes).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so the time the thread
//! spends preempted by other processes on a shared machine is not counted (caches shared with
//! them still are). `MIX_BENCH_CLOCK=wall` measures wall-clock time instead.

use comet_mixer::*;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNsFormatter
    }
}

struct CpuNsFormatter;

impl ValueFormatter for CpuNsFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns")
        } else if ns < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, ns: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let bytes = match *t {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => b as f64,
            Throughput::ElementsAndBytes { bytes, .. } => bytes as f64,
            Throughput::Bits(b) => b as f64 / 8.0,
            Throughput::Elements(e) => e as f64,
        };
        let (factor, unit) = if bytes * 1e9 / ns >= (1u64 << 30) as f64 {
            (1.0 / (1u64 << 30) as f64, "GiB/s")
        } else {
            (1.0 / (1u64 << 20) as f64, "MiB/s")
        };
        values
            .iter_mut()
            .for_each(|v| *v = bytes * 1e9 / *v * factor);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

const COUNTS: [usize; 5] = [2, 8, 32, 128, 512];

fn inputs(n: usize) -> Vec<Vec<i16>> {
    (0..n)
        .map(|i| {
            let f = 200.0 + 13.0 * i as f32;
            (0..SAMPLES_PER_CHANNEL)
                .map(|t| (3000.0 * (t as f32 * f * std::f32::consts::TAU / 48000.0).sin()) as i16)
                .collect()
        })
        .collect()
}

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    let frame_bytes = (SAMPLES_PER_CHANNEL * 2) as u64;
    let mut levels = vec![SimdLevel::Scalar];
    levels.extend(SimdLevel::all_supported().filter(|&l| l != SimdLevel::Scalar));

    let mut g = c.benchmark_group("memcpy");
    for n in COUNTS {
        g.throughput(Throughput::Bytes(n as u64 * frame_bytes));
        let src = inputs(n);
        let mut dst = vec![vec![0i16; SAMPLES_PER_CHANNEL]; n];
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                for (d, s) in dst.iter_mut().zip(&src) {
                    d.copy_from_slice(black_box(s));
                }
                black_box(&dst);
            })
        });
    }
    g.finish();

    for (k_name, k_all) in [("all", true), ("3", false)] {
        for &level in &levels {
            let mut g = c.benchmark_group(format!("mix/{k_name}/{level:?}"));
            for n in COUNTS {
                g.throughput(Throughput::Bytes(n as u64 * frame_bytes));
                let src = inputs(n);
                let mut m = AudioMixer::new(MixerConfig {
                    max_talkers: if k_all { n } else { 3 },
                    simd: level,
                    ..MixerConfig::default()
                })
                .unwrap();
                let ids: Vec<_> = (0..n).map(|_| m.add_member().unwrap()).collect();
                let frame: Vec<_> = ids
                    .iter()
                    .zip(&src)
                    .map(|(&member, pcm)| MemberInput {
                        member,
                        pcm,
                        audio_level: None,
                    })
                    .collect();
                let mut now = 0u64;
                for _ in 0..10 {
                    now += 20;
                    m.mix(now, &frame).unwrap();
                }
                assert_eq!(m.mixed_members().count(), if k_all { n } else { n.min(3) });
                g.bench_function(BenchmarkId::from_parameter(n), |b| {
                    b.iter(|| {
                        now += 20;
                        m.mix(now, black_box(&frame)).unwrap();
                        black_box(m.shared_mix());
                    })
                });
            }
            g.finish();
        }
    }
}

fn main() {
    if std::env::var("MIX_BENCH_CLOCK").as_deref() == Ok("wall") {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime)
            .configure_from_args();
        bench(&mut c);
        c.final_summary();
    }
}
