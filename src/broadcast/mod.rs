//! Broadcasting a conference to an RTMP server (nginx-rtmp: HLS and DASH) and recording it to a
//! file.
//!
//! While a conference has members, its [`Broadcast`] takes the mix every non-talking listener
//! hears ([`Broadcast::push_audio`], 20 ms at 48 kHz mono, from the audio runtime) and the
//! latest composed canvas ([`Broadcast::push_video`]); one thread per broadcast encodes them
//! once ([`encode::AvEncoder`]: H.264 at the canvas size and frame rate with a keyframe every
//! 2 s, AAC-LC) and hands the packets to
//!
//! * the RTMP output ([`driver`], a tokio task over the sans-IO [`rtmp::Publisher`] built on
//!   `rml_rtmp`; reconnects with back-off if the server restarts), and
//! * the recording ([`record::Recorder`], FFmpeg's MP4 muxer), finalized when the conference
//!   ends and on shutdown ([`Broadcasts::shutdown`]).
//!
//! An audio-only profile broadcasts and records audio only.

pub mod chunks;
pub mod driver;
pub mod encode;
pub mod flv;
pub mod record;
pub mod rtmp;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use comet_media::I420Frame;

use self::driver::ToRtmp;
use self::encode::{AvEncoder, EncodeSettings, Packet};
use self::record::Recorder;
use self::rtmp::RtmpUrl;

/// Inputs queued to one broadcast thread (about 2 s of audio).
const INPUT_QUEUE: usize = 128;
/// Packets queued to one RTMP connection.
const RTMP_QUEUE: usize = 512;

/// Counters of every broadcast, summed over conferences (`/metrics`, the benches).
#[derive(Debug, Default)]
pub struct BroadcastStats {
    /// Broadcasts running (conferences being broadcast or recorded).
    pub active: AtomicU64,
    /// Recordings open now.
    pub recordings: AtomicU64,
    /// Recordings finalized (trailer written).
    pub recordings_finalized: AtomicU64,
    /// Recordings that could not be created or written.
    pub recording_failures: AtomicU64,
    /// Bytes written to recording files (the container included).
    pub recording_bytes: AtomicU64,
    /// RTMP outputs running (publishing or retrying).
    pub rtmp_outputs: AtomicU64,
    /// TCP connection attempts of RTMP outputs.
    pub rtmp_attempts: AtomicU64,
    /// Sessions that reached `NetStream.Publish.Start`.
    pub rtmp_connects: AtomicU64,
    /// Of those, sessions of an output that had published before (after a lost connection).
    pub rtmp_reconnects: AtomicU64,
    /// Attempts that failed and sessions that were lost.
    pub rtmp_failures: AtomicU64,
    /// RTMP connections publishing now.
    pub rtmp_publishing: AtomicU64,
    pub rtmp_bytes: AtomicU64,
    /// FLV tags sent (sequence headers included).
    pub rtmp_audio_tags: AtomicU64,
    pub rtmp_video_tags: AtomicU64,
    /// Packets not sent because the RTMP connection was down or slow.
    pub rtmp_dropped: AtomicU64,
    /// Inputs dropped because the broadcast thread fell behind.
    pub input_dropped: AtomicU64,
    /// Video frames skipped because the encoder thread was late.
    pub video_late: AtomicU64,
    /// Video frames OpenH264's rate control skipped.
    pub video_rate_skipped: AtomicU64,
    pub video_frames: AtomicU64,
    pub audio_frames: AtomicU64,
    /// Time spent encoding, nanoseconds.
    pub video_encode_ns: AtomicU64,
    pub audio_encode_ns: AtomicU64,
    /// Time spent handing packets to the outputs (muxing the recording), nanoseconds.
    pub output_ns: AtomicU64,
}

/// What one conference's broadcast does.
#[derive(Debug, Clone)]
pub struct BroadcastSpec {
    /// For logs and file names.
    pub dev: i64,
    pub conference: String,
    pub rtmp: Option<RtmpUrl>,
    /// The recording's file.
    pub record: Option<PathBuf>,
    pub encode: EncodeSettings,
}

/// A profile's broadcast settings.
#[derive(Debug, Clone, Default)]
pub struct ProfileBroadcast {
    /// RTMP URL template (empty: none).
    pub stream: String,
    pub record: bool,
    /// Canvas size and rate of the profile's video; `None`: audio only.
    pub video: Option<encode::VideoFormat>,
}

/// What the conference runtime needs to start broadcasts.
#[derive(Debug)]
pub struct BroadcastPlan {
    pub broadcasts: Arc<Broadcasts>,
    pub profiles: std::collections::HashMap<String, ProfileBroadcast>,
    pub record_dir: PathBuf,
    pub video_bitrate: u32,
    pub audio_bitrate: u32,
    /// Milliseconds between keyframes.
    pub keyframe_interval_ms: u32,
}

impl BroadcastPlan {
    /// What a conference of `profile` does; `stream` is the `conference.stream` column of the
    /// invitation (an `rtmp://` URL there replaces the profile's). `None`: nothing to do.
    pub fn spec(&self, dev: i64, name: &str, profile: &str, stream: &str) -> Option<BroadcastSpec> {
        let p = self.profiles.get(profile).cloned().unwrap_or_default();
        let template = if stream.starts_with("rtmp://") {
            stream
        } else {
            p.stream.as_str()
        };
        let rtmp = if template.is_empty() {
            None
        } else {
            let url = expand_url(template, dev, name);
            match RtmpUrl::parse(&url) {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::warn!(conference = %name, "no broadcast: {e}");
                    None
                }
            }
        };
        let record = p
            .record
            .then(|| recording_path(&self.record_dir, dev, name, SystemTime::now()));
        if rtmp.is_none() && record.is_none() {
            return None;
        }
        Some(BroadcastSpec {
            dev,
            conference: name.to_string(),
            rtmp,
            record,
            encode: EncodeSettings {
                video: p.video,
                video_bitrate: self.video_bitrate,
                audio_bitrate: self.audio_bitrate,
                audio_channels: 2,
                keyframe_interval_ms: self.keyframe_interval_ms,
            },
        })
    }

    /// Starts the broadcast of a conference, if its profile or invitation asks for one.
    pub fn start(&self, dev: i64, name: &str, profile: &str, stream: &str) -> Option<Broadcast> {
        let spec = self.spec(dev, name, profile, stream)?;
        match self.broadcasts.start(spec) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(conference = %name, "cannot start the broadcast: {e}");
                None
            }
        }
    }
}

/// Replaces `{name}` and `{dev}` in an RTMP URL template.
pub fn expand_url(template: &str, dev: i64, name: &str) -> String {
    template
        .replace("{name}", name)
        .replace("{dev}", &dev.to_string())
}

/// `<dir>/<name>_<YYYYmmdd-HHMMSS>.mp4` (dev 0), `<dir>/<dev>_<name>_<...>.mp4` else; UTC; a
/// `-N` suffix if the file exists.
pub fn recording_path(dir: &Path, dev: i64, name: &str, at: SystemTime) -> PathBuf {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = utc_stamp(secs);
    let base = if dev == 0 {
        format!("{name}_{stamp}")
    } else {
        format!("{dev}_{name}_{stamp}")
    };
    let mut path = dir.join(format!("{base}.mp4"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{base}-{n}.mp4"));
        n += 1;
    }
    path
}

/// `YYYYmmdd-HHMMSS` of a Unix time, UTC.
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

enum Input {
    Audio(Vec<i16>),
    Video(I420Frame),
    Stop,
}

struct Live {
    tx: SyncSender<Input>,
    thread: JoinHandle<()>,
}

/// Every running broadcast; stops and finalizes them all on shutdown.
pub struct Broadcasts {
    rt: tokio::runtime::Handle,
    live: Mutex<Vec<Live>>,
    pub stats: Arc<BroadcastStats>,
}

impl std::fmt::Debug for Broadcasts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcasts").finish()
    }
}

impl Broadcasts {
    /// Needs a tokio runtime (for the RTMP connections).
    pub fn new(rt: tokio::runtime::Handle) -> Arc<Broadcasts> {
        Arc::new(Broadcasts {
            rt,
            live: Mutex::new(Vec::new()),
            stats: Arc::new(BroadcastStats::default()),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a broadcast; it runs until the returned handle is dropped.
    pub fn start(&self, spec: BroadcastSpec) -> Result<Broadcast, String> {
        let encoder = AvEncoder::new(spec.encode).map_err(|e| e.to_string())?;
        let (tx, rx) = sync_channel(INPUT_QUEUE);
        let want_keyframe = Arc::new(AtomicBool::new(false));
        let rtmp = spec.rtmp.clone().map(|url| {
            let (rtx, rrx) = tokio::sync::mpsc::channel(RTMP_QUEUE);
            self.rt.spawn(driver::run(
                url,
                rrx,
                want_keyframe.clone(),
                self.stats.clone(),
            ));
            rtx
        });
        let worker = Worker {
            spec: spec.clone(),
            encoder,
            rtmp,
            rtmp_gap: false,
            want_keyframe,
            recorder: None,
            record_failed: false,
            record_write_failed: false,
            record_bytes: 0,
            counted: encode::EncodeStats::default(),
            stats: self.stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("broadcast-{}", spec.conference))
            .spawn(move || worker.run(rx))
            .map_err(|e| e.to_string())?;
        tracing::info!(
            dev = spec.dev, conference = %spec.conference,
            rtmp = ?spec.rtmp.as_ref().map(|u| u.tc_url() + "/" + &u.stream),
            record = ?spec.record, video = ?spec.encode.video, "broadcast started"
        );
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        let mut live = self.live();
        live.retain(|l| !l.thread.is_finished());
        live.push(Live {
            tx: tx.clone(),
            thread,
        });
        Ok(Broadcast {
            tx,
            stats: self.stats.clone(),
        })
    }

    /// Stops every broadcast and waits (at most `timeout`) until their recordings are
    /// finalized and their RTMP outputs have what was queued. Blocking.
    pub fn shutdown(&self, timeout: Duration) {
        let live: Vec<Live> = std::mem::take(&mut *self.live());
        for l in &live {
            let _ = l.tx.send(Input::Stop);
        }
        let deadline = Instant::now() + timeout;
        for l in live {
            while !l.thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if l.thread.is_finished() {
                let _ = l.thread.join();
            } else {
                tracing::warn!("a broadcast did not finish in time");
            }
        }
    }
}

/// One conference's broadcast; dropping it ends the broadcast (the recording is finalized).
pub struct Broadcast {
    tx: SyncSender<Input>,
    stats: Arc<BroadcastStats>,
}

impl std::fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast").finish()
    }
}

impl Broadcast {
    fn send(&self, input: Input) {
        match self.tx.try_send(input) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.input_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One 20 ms frame of the mix: 960 samples, 48 kHz mono. Never blocks.
    pub fn push_audio(&self, pcm: &[i16]) {
        self.send(Input::Audio(pcm.to_vec()));
    }

    /// The latest composed canvas (at the profile's canvas size; other sizes are dropped).
    /// Never blocks.
    pub fn push_video(&self, frame: I420Frame) {
        self.send(Input::Video(frame));
    }
}

impl Broadcast {
    /// A handle that feeds canvases only (for the video thread); it does not keep the
    /// broadcast alive.
    pub fn video_sink(&self) -> VideoSink {
        VideoSink {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// Feeds the composed canvas of a conference to its broadcast.
#[derive(Clone)]
pub struct VideoSink {
    tx: SyncSender<Input>,
    stats: Arc<BroadcastStats>,
}

impl std::fmt::Debug for VideoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSink").finish()
    }
}

impl VideoSink {
    /// The latest canvas (at the profile's canvas size). Never blocks.
    pub fn push(&self, frame: I420Frame) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Input::Video(frame)) {
            self.stats.input_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        // A full queue: the thread still sees the channel close when the runtime drops us.
        let _ = self.tx.try_send(Input::Stop);
    }
}

struct Worker {
    spec: BroadcastSpec,
    encoder: AvEncoder,
    rtmp: Option<tokio::sync::mpsc::Sender<ToRtmp>>,
    /// A packet was dropped: no video to RTMP until the next keyframe.
    rtmp_gap: bool,
    want_keyframe: Arc<AtomicBool>,
    recorder: Option<Recorder>,
    record_failed: bool,
    record_write_failed: bool,
    /// Bytes of the recording file counted in the stats so far.
    record_bytes: u64,
    /// The encoder's counters already added to the stats.
    counted: encode::EncodeStats,
    stats: Arc<BroadcastStats>,
}

fn add_ns(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

impl Worker {
    /// Adds what the encoder counted since the last call to the shared stats.
    fn count_frames(&mut self) {
        let now = self.encoder.stats;
        let was = std::mem::replace(&mut self.counted, now);
        let add = |c: &AtomicU64, n: u64, w: u64| {
            if n > w {
                c.fetch_add(n - w, Ordering::Relaxed);
            }
        };
        add(&self.stats.video_frames, now.video_frames, was.video_frames);
        add(&self.stats.audio_frames, now.audio_frames, was.audio_frames);
        add(&self.stats.video_late, now.video_late, was.video_late);
        add(
            &self.stats.video_rate_skipped,
            now.video_rate_skipped,
            was.video_rate_skipped,
        );
    }

    /// Adds the growth of the recording file to the stats.
    fn count_recording_bytes(&mut self, r: &Recorder) {
        let len = r.bytes_written();
        if len > self.record_bytes {
            self.stats
                .recording_bytes
                .fetch_add(len - self.record_bytes, Ordering::Relaxed);
            self.record_bytes = len;
        }
    }

    fn run(mut self, rx: Receiver<Input>) {
        let start = Instant::now();
        let mut sent_headers = None;
        loop {
            let now_ms = start.elapsed().as_millis() as u64;
            let wait = match self.encoder.next_frame_ms() {
                Some(due) => Duration::from_millis(due.saturating_sub(now_ms)),
                None => Duration::from_millis(200),
            };
            let input = rx.recv_timeout(wait);
            let now_ms = start.elapsed().as_millis() as u64;
            let mut packets = Vec::new();
            let mut stop = false;
            match input {
                Ok(Input::Audio(pcm)) => {
                    let t0 = Instant::now();
                    match self.encoder.push_audio(&pcm, now_ms) {
                        Ok(p) => packets = p,
                        Err(e) => tracing::warn!("broadcast audio encoding: {e}"),
                    }
                    add_ns(&self.stats.audio_encode_ns, t0);
                }
                Ok(Input::Video(frame)) => self.encoder.set_canvas(frame),
                Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.want_keyframe.swap(false, Ordering::Relaxed) {
                self.encoder.request_keyframe();
            }
            let t0 = Instant::now();
            match self.encoder.poll_video(now_ms) {
                Ok(p) => packets.extend(p),
                Err(e) => tracing::warn!("broadcast video encoding: {e}"),
            }
            add_ns(&self.stats.video_encode_ns, t0);
            if stop {
                packets.extend(self.encoder.finish());
            }
            let t0 = Instant::now();
            let headers = self.encoder.headers();
            if sent_headers.as_ref() != Some(&headers) {
                if let Some(tx) = &self.rtmp {
                    // Headers are small and rare; a full queue is retried next time.
                    if tx.try_send(ToRtmp::Headers(headers.clone())).is_ok() {
                        sent_headers = Some(headers.clone());
                    }
                } else {
                    sent_headers = Some(headers.clone());
                }
            }
            for p in &packets {
                self.output(p, &headers);
            }
            add_ns(&self.stats.output_ns, t0);
            self.count_frames();
            if stop {
                break;
            }
        }
        if let Some(mut r) = self.recorder.take() {
            match r.finish() {
                Ok(()) => {
                    tracing::info!(
                        path = %r.path().display(), duration_ms = r.duration_ms,
                        packets = r.packets, "recording finalized"
                    );
                    self.stats
                        .recordings_finalized
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(path = %r.path().display(), "recording: {e}");
                    self.stats
                        .recording_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            self.count_recording_bytes(&r);
            self.stats.recordings.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(dev = self.spec.dev, conference = %self.spec.conference, "broadcast stopped");
        // Dropping the RTMP sender lets the driver send what is queued and close.
    }

    fn output(&mut self, p: &Packet, headers: &encode::Headers) {
        // Recording: opens once the codec configurations are known.
        if let Some(path) = &self.spec.record
            && self.recorder.is_none()
            && !self.record_failed
            && (headers.video.is_none() || headers.avc.is_some())
            && matches!(
                p,
                Packet::Video { keyframe: true, .. } | Packet::Audio { .. }
            )
            && (headers.video.is_none() || matches!(p, Packet::Video { .. }))
        {
            match Recorder::create(path, headers) {
                Ok(r) => {
                    tracing::info!(path = %path.display(), "recording");
                    self.stats.recordings.fetch_add(1, Ordering::Relaxed);
                    self.recorder = Some(r);
                }
                Err(e) => {
                    self.record_failed = true;
                    self.stats
                        .recording_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(path = %path.display(), "cannot record: {e}");
                }
            }
        }
        if let Some(r) = &mut self.recorder
            && let Err(e) = r.write(p)
        {
            if !self.record_write_failed {
                // Once per recording: a full disk fails every packet.
                tracing::warn!(path = %r.path().display(), "recording: {e}");
                self.stats
                    .recording_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.record_write_failed = true;
        }
        if let Some(r) = self.recorder.take() {
            self.count_recording_bytes(&r);
            self.recorder = Some(r);
        }
        // RTMP.
        if let Some(tx) = &self.rtmp {
            if self.rtmp_gap {
                if matches!(
                    p,
                    Packet::Video {
                        keyframe: false,
                        ..
                    }
                ) {
                    return;
                }
                if matches!(p, Packet::Video { keyframe: true, .. }) {
                    self.rtmp_gap = false;
                }
            }
            if tx.try_send(ToRtmp::Packet(p.clone())).is_err() {
                self.stats.rtmp_dropped.fetch_add(1, Ordering::Relaxed);
                if headers.video.is_some() && !self.rtmp_gap {
                    self.rtmp_gap = true;
                    self.encoder.request_keyframe();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_names() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400 + 3661), "20000229-010101");
        assert_eq!(utc_stamp(1_795_000_000), "20261118-110640");
        let dir = tempfile::tempdir().unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 365);
        let p = recording_path(dir.path(), 0, "room", at);
        assert_eq!(p.file_name().unwrap(), "room_19710101-000000.mp4");
        std::fs::write(&p, b"x").unwrap();
        let p2 = recording_path(dir.path(), 7, "room", at);
        assert_eq!(p2.file_name().unwrap(), "7_room_19710101-000000.mp4");
        let p3 = recording_path(dir.path(), 0, "room", at);
        assert_eq!(p3.file_name().unwrap(), "room_19710101-000000-1.mp4");
        assert_eq!(
            expand_url("rtmp://127.0.0.1:1935/cam1/{name}", 0, "r1"),
            "rtmp://127.0.0.1:1935/cam1/r1"
        );
    }
}
