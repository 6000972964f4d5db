//! Runs one conference's [`VideoMixer`] on its own thread: decoding, composing and encoding
//! video takes milliseconds per frame, which must not delay the 20 ms audio ticks nor the
//! tokio tasks that carry SIP and the UDP socket. The runtime task forwards what concerns video
//! ([`VideoCmd`]); the thread ticks the mixer at the canvas frame rate and hands its RTP and
//! keyframe requests straight to the WebRTC endpoint. The thread ends when the
//! [`VideoWorker`] is dropped (the conference ended).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use comet_media::RtpPacket;
use comet_mixer::LayoutKind;
use comet_sfu::ParticipantId;
use comet_sfu::driver::{SfuHandle, VideoWrite};

use super::video::{MemberVideo, VideoMixer, VideoOutput, VideoSettings};

/// What the runtime tells a conference's video thread.
#[derive(Debug)]
pub enum VideoCmd {
    /// A member joined, or re-negotiated.
    Member(ParticipantId, MemberVideo),
    Leave(ParticipantId),
    Connected(ParticipantId, bool),
    Packet(ParticipantId, RtpPacket),
    /// The member asked for a keyframe (PLI/FIR).
    KeyframeRequest(ParticipantId),
    /// REMB/TWCC for what we send the member.
    Estimate(ParticipantId, u64),
    Speaker(Option<ParticipantId>),
    /// Layout override and `(participant, video, video_floor)` of every member.
    Moderation(Option<LayoutKind>, Vec<(ParticipantId, bool, bool)>),
    AudioDelay(ParticipantId, Duration),
    /// The conference is broadcast/recorded: compose the viewer canvas and feed it there.
    Broadcast(crate::broadcast::VideoSink),
}

/// Counters over every video conference, for metrics.
#[derive(Debug, Default)]
pub struct VideoCounters {
    /// Video RTP packets received from members (decoded or not).
    pub packets_in: AtomicU64,
    pub decoded: AtomicU64,
    pub composed: AtomicU64,
    pub encoded: AtomicU64,
    pub keyframes: AtomicU64,
    pub forced_keyframes: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub dropped_hidden: AtomicU64,
    /// Video RTP packets dropped because a conference's video thread had
    /// [`MAX_QUEUED_PACKETS`] waiting (it cannot keep up; the receivers see loss).
    pub dropped_backlog: AtomicU64,
    /// Canvas payloads handed to the endpoint (one per subscriber).
    pub payloads_out: AtomicU64,
    /// REMB/TWCC bandwidth estimates received for members' canvases.
    pub estimates: AtomicU64,
    /// Time the video threads spent working (decoding included), nanoseconds.
    pub busy_ns: AtomicU64,
    /// Live encoders (distinct canvases) and subscribers, gauges.
    pub encoders: AtomicU64,
    pub subscribers: AtomicU64,
}

/// Media packets waiting for a video thread at most; beyond, new ones are dropped (members
/// sending faster than the thread decodes would otherwise grow its queue without bound).
/// About 2 s of four 2 Mbit/s senders.
pub const MAX_QUEUED_PACKETS: usize = 2048;

/// A conference's video thread. Cloneable; dropping the last clone stops the thread.
#[derive(Clone)]
pub struct VideoWorker {
    tx: mpsc::Sender<VideoCmd>,
    backlog: Arc<Backlog>,
    counters: Arc<VideoCounters>,
}

impl std::fmt::Debug for VideoWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoWorker").finish()
    }
}

impl VideoWorker {
    /// Starts the thread. Writes go through `sfu` on the tokio runtime `rt`.
    pub fn start(
        name: &str,
        settings: VideoSettings,
        sfu: SfuHandle,
        rt: tokio::runtime::Handle,
        counters: Arc<VideoCounters>,
    ) -> std::io::Result<VideoWorker> {
        let (tx, rx) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let (b, c) = (backlog.clone(), counters.clone());
        std::thread::Builder::new()
            .name(format!("video-{name}"))
            .spawn(move || run(settings, rx, sfu, rt, c, b))?;
        Ok(VideoWorker {
            tx,
            backlog,
            counters,
        })
    }

    /// Queues a command. Packets beyond [`MAX_QUEUED_PACKETS`] waiting are dropped and
    /// counted; other commands always go through (they are few, and state).
    pub fn send(&self, cmd: VideoCmd) {
        if !self.backlog.admit(&cmd) {
            self.counters
                .dropped_backlog
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The thread only stops when every clone of this handle is dropped.
        let _ = self.tx.send(cmd);
    }
}

/// Media packets sent to a video thread and not yet taken by it.
#[derive(Debug, Default)]
struct Backlog(AtomicUsize);

impl Backlog {
    /// Whether `cmd` may be queued: anything but a packet, and a packet while fewer than
    /// [`MAX_QUEUED_PACKETS`] wait (it is counted then).
    fn admit(&self, cmd: &VideoCmd) -> bool {
        if !matches!(cmd, VideoCmd::Packet(..)) {
            return true;
        }
        if self.0.load(Ordering::Relaxed) >= MAX_QUEUED_PACKETS {
            return false;
        }
        self.0.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The thread took `cmd` off the queue.
    fn taken(&self, cmd: &VideoCmd) {
        if matches!(cmd, VideoCmd::Packet(..)) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn run(
    settings: VideoSettings,
    rx: mpsc::Receiver<VideoCmd>,
    sfu: SfuHandle,
    rt: tokio::runtime::Handle,
    counters: Arc<VideoCounters>,
    backlog: Arc<Backlog>,
) {
    let mut mixer = VideoMixer::new(settings, Instant::now());
    let interval = mixer.frame_interval();
    let mut next = Instant::now() + interval;
    let mut published = mixer.stats();
    let mut broadcast: Option<crate::broadcast::VideoSink> = None;
    loop {
        let now = Instant::now();
        if now >= next {
            let started = Instant::now();
            mixer.tick(now);
            if let Some(b) = &broadcast
                && let Some(canvas) = mixer.take_viewer_canvas()
            {
                b.push(canvas);
            }
            finish(&mut mixer, &sfu, &rt, &mut published, &counters, started);
            next += interval;
            if next <= now {
                // Behind (an overloaded machine): skip frames rather than burst.
                next = now + interval;
            }
            continue;
        }
        let cmd = match rx.recv_timeout(next - now) {
            Ok(c) => {
                backlog.taken(&c);
                c
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let started = Instant::now();
        handle(&mut mixer, &mut broadcast, cmd, started);
        while let Ok(c) = rx.try_recv() {
            backlog.taken(&c);
            handle(&mut mixer, &mut broadcast, c, Instant::now());
        }
        finish(&mut mixer, &sfu, &rt, &mut published, &counters, started);
    }
    // Gauges go back down with the conference.
    let zero = super::video::VideoStats {
        encoders: 0,
        subscribers: 0,
        ..published
    };
    publish_stats(&zero, &mut published, &counters);
}

fn handle(
    mixer: &mut VideoMixer,
    broadcast: &mut Option<crate::broadcast::VideoSink>,
    cmd: VideoCmd,
    now: Instant,
) {
    match cmd {
        VideoCmd::Broadcast(sink) => {
            mixer.set_viewer_canvas(true);
            *broadcast = Some(sink);
        }
        VideoCmd::Member(pid, v) => mixer.add_member(pid, v),
        VideoCmd::Leave(pid) => mixer.remove_member(pid),
        VideoCmd::Connected(pid, up) => mixer.set_connected(pid, up),
        VideoCmd::Packet(pid, p) => mixer.push_packet(pid, p, now),
        VideoCmd::KeyframeRequest(pid) => mixer.keyframe_requested(pid),
        VideoCmd::Estimate(pid, bps) => mixer.set_estimate(pid, bps),
        VideoCmd::Speaker(pid) => mixer.set_speaker(pid),
        VideoCmd::Moderation(layout, flags) => mixer.set_moderation(layout, &flags),
        VideoCmd::AudioDelay(pid, d) => mixer.set_audio_delay(pid, d),
    }
}

fn flush(mixer: &mut VideoMixer, sfu: &SfuHandle, rt: &tokio::runtime::Handle) {
    let outputs = mixer.take_outputs();
    if outputs.is_empty() {
        return;
    }
    let mut writes = Vec::with_capacity(outputs.len());
    let mut requests = Vec::new();
    for o in outputs {
        match o {
            VideoOutput::Rtp {
                to,
                payload,
                timestamp,
                marker,
            } => writes.push(VideoWrite {
                id: to,
                payload,
                timestamp,
                marker,
            }),
            VideoOutput::RequestKeyframe { from, kind } => requests.push((from, kind)),
        }
    }
    rt.block_on(async {
        // One batch on the endpoint's video queue (offers and keyframe requests have their own).
        let _ = sfu.write_video_batch(writes).await;
        for (from, kind) in requests {
            if let Err(e) = sfu.request_keyframe_kind(from, kind).await {
                tracing::debug!(participant = %from, "keyframe request: {e}");
            }
        }
    });
}

/// Counts what a tick (or a batch of commands) produced, then hands its output to the
/// endpoint, so that whoever receives a payload finds it in `/metrics` already; then adds
/// the time the thread spent since `started`.
fn finish(
    mixer: &mut VideoMixer,
    sfu: &SfuHandle,
    rt: &tokio::runtime::Handle,
    published: &mut super::video::VideoStats,
    counters: &VideoCounters,
    started: Instant,
) {
    publish_stats(&mixer.stats(), published, counters);
    flush(mixer, sfu, rt);
    counters
        .busy_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

fn publish_stats(
    now: &super::video::VideoStats,
    published: &mut super::video::VideoStats,
    c: &VideoCounters,
) {
    let add = |a: &AtomicU64, new: u64, old: u64| {
        if new > old {
            a.fetch_add(new - old, Ordering::Relaxed);
        } else if new < old {
            a.fetch_sub(old - new, Ordering::Relaxed);
        }
    };
    add(&c.decoded, now.decoded, published.decoded);
    add(&c.composed, now.composed, published.composed);
    add(&c.encoded, now.encoded, published.encoded);
    add(&c.keyframes, now.keyframes, published.keyframes);
    add(
        &c.forced_keyframes,
        now.forced_keyframes,
        published.forced_keyframes,
    );
    add(
        &c.keyframe_requests,
        now.plis + now.firs,
        published.plis + published.firs,
    );
    add(
        &c.dropped_hidden,
        now.dropped_hidden,
        published.dropped_hidden,
    );
    add(&c.payloads_out, now.payloads_out, published.payloads_out);
    add(&c.encoders, now.encoders, published.encoders);
    add(&c.subscribers, now.subscribers, published.subscribers);
    *published = *now;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> VideoCmd {
        VideoCmd::Packet(
            ParticipantId(1),
            RtpPacket {
                sequence_number: seq,
                timestamp: 0,
                marker: false,
                payload: vec![0; 100],
                audio_level: None,
                arrival: Instant::now(),
            },
        )
    }

    /// A thread that does not keep up has at most MAX_QUEUED_PACKETS packets waiting; the
    /// rest are dropped and counted, commands still go through, and packets are admitted
    /// again as the thread takes them.
    #[test]
    fn the_packet_backlog_is_bounded() {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(VideoCounters::default());
        let w = VideoWorker {
            tx,
            backlog: Arc::default(),
            counters: counters.clone(),
        };
        for i in 0..3000 {
            w.send(packet(i as u16));
        }
        w.send(VideoCmd::Leave(ParticipantId(1)));
        let waiting: Vec<VideoCmd> = rx.try_iter().collect();
        assert_eq!(waiting.len(), MAX_QUEUED_PACKETS + 1);
        assert!(matches!(waiting.last(), Some(VideoCmd::Leave(_))));
        assert_eq!(
            counters.dropped_backlog.load(Ordering::Relaxed),
            (3000 - MAX_QUEUED_PACKETS) as u64
        );
        // The thread takes ten commands.
        for c in &waiting[..10] {
            w.backlog.taken(c);
        }
        for i in 0..20 {
            w.send(packet(i));
        }
        assert_eq!(rx.try_iter().count(), 10);
    }
}
