//! CPU cost of one video conference: the server's own video MCU ([`VideoMixer`], the code the
//! video thread of a conference runs) driven directly, on virtual time, with N members each
//! sending a pre-encoded H.264 camera stream at 30 fps. Per canvas frame the mixer decodes the
//! members some canvas shows, composes the distinct canvases and H.264-encodes each once for all
//! its subscribers (the speaker changes every 3 s). What the thread spends is read from
//! `/proc/thread-self/schedstat` (CPU time, not wall time, so other load on the machine does not
//! count); the camera streams are encoded before the clock starts.
//!
//! ```sh
//! cargo bench --bench video_mcu -- [--participants 4,9,16] [--canvas 640x360,1280x720]
//!                                  [--seconds 10] [--layout active-speaker|grid]
//! ```

use std::time::{Duration, Instant};

use comet_media::{
    H264EncoderConfig, I420Frame, RtpPacket, VideoCodec, VideoSender, VideoSenderConfig,
};
use comet_server::conference::video::{
    MemberVideo, VideoMixer, VideoOutput, VideoSettings, layout_kind,
};
use comet_sfu::ParticipantId;

const FPS: u32 = 30;
/// Frames in each member's pre-encoded loop (it starts with a keyframe).
const LOOP: usize = 60;

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// One member's camera: `LOOP` frames of RTP payloads.
fn camera_loop(k: usize, width: u32, height: u32) -> Vec<Vec<comet_media::RtpPayload>> {
    let mut sender = VideoSender::new(VideoSenderConfig {
        codec: comet_media::VideoCodec::H264,
        encoder: H264EncoderConfig {
            bitrate: if width > 640 { 1_200_000 } else { 500_000 },
            fps: FPS as f32,
            keyframe_interval: LOOP as u32,
            threads: 1,
        },
        mtu: 1200,
        initial_timestamp: 0,
    })
    .expect("H.264 encoder");
    let (y, u, v) = [
        (82u8, 90u8, 240u8),
        (145, 54, 34),
        (41, 240, 110),
        (210, 16, 146),
        (107, 202, 222),
        (170, 166, 16),
    ][k % 6];
    (0..LOOP)
        .map(|i| {
            let mut f = I420Frame::filled(width, height, y, u, v);
            // A moving bar and some texture, so the encoder has work as with a real camera.
            let bar = width / 8;
            let x0 = ((i as u32) * 8 + k as u32 * 37) % (width - bar);
            for row in 0..height {
                let line = (row * width) as usize;
                if row < height / 4 {
                    f.y[line + x0 as usize..line + (x0 + bar) as usize].fill(235);
                }
                for x in (0..width as usize).step_by(16) {
                    f.y[line + x] = f.y[line + x].wrapping_add(((row as usize + x + i) % 32) as u8);
                }
            }
            if i == 0 {
                sender.request_keyframe();
            }
            sender
                .encode_at(&f, (i as u32) * (90_000 / FPS))
                .expect("encode")
        })
        .collect()
}

struct Run {
    participants: usize,
    canvas: (u32, u32),
    cpu: Duration,
    seconds: u32,
    encoded: u64,
    decoded: u64,
    encoders: u64,
    subscribers: u64,
    decoders_max: u64,
    bytes_per_subscriber_s: f64,
}

fn run(n: usize, canvas: (u32, u32), seconds: u32, layout: &str) -> Run {
    let settings = VideoSettings {
        layout: layout_kind(layout).expect("a layout"),
        width: canvas.0,
        height: canvas.1,
        fps: FPS,
        max_bitrate: if canvas.0 > 640 { 2_500_000 } else { 1_500_000 },
        ..VideoSettings::default()
    };
    eprintln!("encoding {n} camera loops at {}x{} ...", canvas.0, canvas.1);
    let cameras: Vec<_> = (0..n).map(|k| camera_loop(k, canvas.0, canvas.1)).collect();

    let t0 = Instant::now();
    let mut mixer = VideoMixer::new(settings, t0);
    let pids: Vec<ParticipantId> = (0..n as u64).map(|i| ParticipantId(i + 1)).collect();
    for (i, pid) in pids.iter().enumerate() {
        mixer.add_member(
            *pid,
            MemberVideo {
                number: i as u32 + 1,
                sends: Some(VideoCodec::H264),
                receives: Some(comet_media::VideoCodec::H264),
                max_bitrate: Some(if canvas.0 > 640 { 2_000_000 } else { 1_000_000 }),
            },
        );
        mixer.set_connected(*pid, true);
    }
    let mut seq = vec![0u16; n];
    let frames = (seconds * FPS) as usize;
    let interval = Duration::from_micros(1_000_000 / u64::from(FPS));
    let mut bytes_out = 0u64;
    let mut decoders_max = 0;
    let cpu0 = thread_cpu();
    for f in 0..frames {
        let now = t0 + interval * f as u32;
        if f % (3 * FPS as usize) == 0 {
            mixer.set_speaker(Some(pids[(f / (3 * FPS as usize)) % n]));
        }
        for (k, cam) in cameras.iter().enumerate() {
            for p in &cam[f % LOOP] {
                let packet = RtpPacket {
                    sequence_number: seq[k],
                    timestamp: (f as u32) * (90_000 / FPS),
                    marker: p.marker,
                    payload: p.payload.clone(),
                    audio_level: None,
                    arrival: now,
                };
                seq[k] = seq[k].wrapping_add(1);
                mixer.push_packet(pids[k], packet, now);
            }
        }
        mixer.tick(now);
        for o in mixer.take_outputs() {
            if let VideoOutput::Rtp { payload, .. } = o {
                bytes_out += payload.len() as u64;
            }
        }
        decoders_max = decoders_max.max(mixer.stats().decoders);
    }
    let cpu = thread_cpu() - cpu0;
    let st = mixer.stats();
    Run {
        participants: n,
        canvas,
        cpu,
        seconds,
        encoded: st.encoded,
        decoded: st.decoded,
        encoders: st.encoders,
        subscribers: st.subscribers,
        decoders_max,
        bytes_per_subscriber_s: bytes_out as f64 / n as f64 / f64::from(seconds),
    }
}

fn main() {
    let mut participants = vec![4usize, 9, 16];
    let mut canvases = vec![(640u32, 360u32), (1280, 720)];
    let mut seconds = 10u32;
    let mut layout = "active-speaker".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--participants" => {
                participants = it
                    .next()
                    .expect("a list")
                    .split(',')
                    .map(|v| v.parse().expect("a number"))
                    .collect()
            }
            "--canvas" => {
                canvases = it
                    .next()
                    .expect("a list")
                    .split(',')
                    .map(|c| {
                        let (w, h) = c.split_once('x').expect("WxH");
                        (w.parse().expect("width"), h.parse().expect("height"))
                    })
                    .collect()
            }
            "--seconds" => seconds = it.next().expect("seconds").parse().expect("a number"),
            "--layout" => layout = it.next().expect("a layout"),
            // cargo bench passes --bench; criterion-style flags are ignored.
            _ => {}
        }
    }
    println!(
        "| participants | canvas | layout | CPU of one core | participants per core | distinct canvases encoded | subscribers | decoders | canvas frames encoded/s | decoded/s | kbit/s per subscriber |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &canvas in &canvases {
        for &n in &participants {
            let r = run(n, canvas, seconds, &layout);
            let share = r.cpu.as_secs_f64() / f64::from(r.seconds);
            println!(
                "| {} | {}x{}@{FPS} | {layout} | {:.1} % | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.0} |",
                r.participants,
                r.canvas.0,
                r.canvas.1,
                share * 100.0,
                r.participants as f64 / share,
                r.encoders,
                r.subscribers,
                r.decoders_max,
                r.encoded as f64 / f64::from(r.seconds),
                r.decoded as f64 / f64::from(r.seconds),
                r.bytes_per_subscriber_s * 8.0 / 1000.0,
            );
        }
    }
}
