//! Recording to a file with FFmpeg's muxers (ffmpeg-next): the already encoded H.264 (AVCC)
//! and AAC packets go into an MP4 (or any container FFmpeg picks from the file name, such as
//! `.mkv`) without re-encoding. The file is finalized (`moov` written) by [`Recorder::finish`]:
//! on the conference's end and on server shutdown.

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{Rational, codec, format, media};

use super::encode::{Headers, Packet};

/// Milliseconds: the time base packets are given in.
const MS: Rational = Rational(1, 1000);

/// An open recording.
pub struct Recorder {
    path: PathBuf,
    out: format::context::Output,
    video_index: Option<usize>,
    audio_index: usize,
    /// The stream time bases the muxer chose.
    video_tb: Rational,
    audio_tb: Rational,
    /// Last dts written per stream (muxers need them increasing).
    last_video: Option<i64>,
    last_audio: Option<i64>,
    /// Milliseconds of the first packet: the file starts at 0.
    origin: Option<u64>,
    /// Longest timestamp written, ms since origin.
    pub duration_ms: u64,
    pub packets: u64,
    sample_rate: u32,
    finished: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .finish()
    }
}

fn ff(e: ffmpeg::Error) -> String {
    e.to_string()
}

/// Copies `data` into `par->extradata` (FFmpeg owns and frees it with the parameters).
fn set_extradata(par: &mut codec::Parameters, data: &[u8]) -> Result<(), String> {
    // SAFETY: av_mallocz gives a buffer of `len + padding` bytes we fill; the parameters take
    // ownership of it (avcodec_parameters_free/copy release or duplicate it). `par` is a valid,
    // exclusively borrowed AVCodecParameters.
    unsafe {
        let len = data.len();
        let buf = ffmpeg::ffi::av_mallocz(len + ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize)
            as *mut u8;
        if buf.is_null() {
            return Err("out of memory".into());
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, len);
        let p = par.as_mut_ptr();
        if !(*p).extradata.is_null() {
            ffmpeg::ffi::av_free((*p).extradata.cast());
        }
        (*p).extradata = buf;
        (*p).extradata_size = len as i32;
    }
    Ok(())
}

impl Recorder {
    /// Creates the file and writes its header. Video profiles need `headers.avc` (the first
    /// keyframe's configuration).
    pub fn create(path: &Path, headers: &Headers) -> Result<Recorder, String> {
        ffmpeg::init().map_err(ff)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut out = format::output(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut video_index = None;
        if let (Some(v), Some(avc)) = (headers.video, &headers.avc) {
            let mut par = codec::Parameters::new();
            par.set_medium(media::Type::Video);
            par.set_id(codec::Id::H264);
            // SAFETY: plain field writes on a valid AVCodecParameters we own.
            unsafe {
                let p = par.as_mut_ptr();
                (*p).width = v.width as i32;
                (*p).height = v.height as i32;
                (*p).format = ffmpeg::ffi::AVPixelFormat::AV_PIX_FMT_YUV420P as i32;
            }
            set_extradata(&mut par, avc)?;
            let mut st = out.add_stream(codec::Id::None).map_err(ff)?;
            st.set_parameters(par);
            st.set_time_base(MS);
            st.set_avg_frame_rate(Rational(v.fps as i32, 1));
            video_index = Some(st.index());
        }
        let mut par = codec::Parameters::new();
        par.set_medium(media::Type::Audio);
        par.set_id(codec::Id::AAC);
        // SAFETY: field writes on a valid AVCodecParameters we own; av_channel_layout_default
        // initializes the embedded AVChannelLayout (native order, nothing to free).
        unsafe {
            let p = par.as_mut_ptr();
            (*p).sample_rate = headers.sample_rate as i32;
            (*p).frame_size = 1024;
            (*p).format = ffmpeg::ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP as i32;
            ffmpeg::ffi::av_channel_layout_default(
                &mut (*p).ch_layout,
                i32::from(headers.channels),
            );
            #[allow(deprecated)]
            {
                (*p).channels = i32::from(headers.channels);
            }
        }
        set_extradata(&mut par, &headers.asc)?;
        let mut st = out.add_stream(codec::Id::None).map_err(ff)?;
        st.set_parameters(par);
        st.set_time_base(Rational(1, headers.sample_rate as i32));
        let audio_index = st.index();
        out.write_header()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let video_tb = video_index
            .and_then(|i| out.stream(i))
            .map(|s| s.time_base())
            .unwrap_or(MS);
        let audio_tb = out.stream(audio_index).map(|s| s.time_base()).unwrap_or(MS);
        Ok(Recorder {
            path: path.to_path_buf(),
            out,
            video_index,
            audio_index,
            video_tb,
            audio_tb,
            last_video: None,
            last_audio: None,
            origin: None,
            duration_ms: 0,
            packets: 0,
            sample_rate: headers.sample_rate,
            finished: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the file now: FFmpeg writes in chunks (256 KB here), so this lags by up to
    /// one chunk; exact once finished.
    pub fn bytes_written(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Writes one packet (interleaved by FFmpeg).
    pub fn write(&mut self, p: &Packet) -> Result<(), String> {
        if self.finished {
            return Ok(());
        }
        let origin = *self.origin.get_or_insert(p.ts_ms());
        let rel = p.ts_ms().saturating_sub(origin);
        let (index, tb, last, data, key, audio) = match p {
            Packet::Audio { data, .. } => (
                self.audio_index,
                self.audio_tb,
                &mut self.last_audio,
                data,
                true,
                true,
            ),
            Packet::Video { data, keyframe, .. } => match self.video_index {
                Some(i) => (
                    i,
                    self.video_tb,
                    &mut self.last_video,
                    data,
                    *keyframe,
                    false,
                ),
                None => return Ok(()),
            },
        };
        let mut ts = (rel as i64).rescale_ms(tb);
        if let Some(l) = *last
            && ts <= l
        {
            ts = l + 1;
        }
        *last = Some(ts);
        let mut pkt = ffmpeg::Packet::copy(data);
        pkt.set_stream(index);
        pkt.set_pts(Some(ts));
        pkt.set_dts(Some(ts));
        if audio {
            // 1024 samples, in the stream's time base.
            let (num, den) = (i64::from(tb.0.max(1)), i64::from(tb.1.max(1)));
            pkt.set_duration(1024 * den / (i64::from(self.sample_rate.max(1)) * num));
        }
        if key {
            pkt.set_flags(codec::packet::Flags::KEY);
        }
        pkt.write_interleaved(&mut self.out).map_err(ff)?;
        self.packets += 1;
        self.duration_ms = self.duration_ms.max(rel);
        Ok(())
    }

    /// Flushes and writes the trailer (MP4: the `moov` box). Idempotent.
    pub fn finish(&mut self) -> Result<(), String> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.out.write_trailer().map_err(ff)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(path = %self.path.display(), "cannot finalize the recording: {e}");
        }
    }
}

trait RescaleMs {
    fn rescale_ms(self, tb: Rational) -> i64;
}

impl RescaleMs for i64 {
    /// Milliseconds to `tb` units (rounded down).
    fn rescale_ms(self, tb: Rational) -> i64 {
        let (num, den) = (i64::from(tb.0.max(1)), i64::from(tb.1.max(1)));
        (i128::from(self) * i128::from(den) / (1000 * i128::from(num))) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::encode::{AvEncoder, EncodeSettings, VideoFormat};

    fn record(video: Option<VideoFormat>, path: &Path) -> Recorder {
        let mut enc = AvEncoder::new(EncodeSettings {
            video,
            video_bitrate: 300_000,
            audio_bitrate: 64_000,
            audio_channels: 2,
            keyframe_interval_ms: 2000,
        })
        .unwrap();
        let mut rec: Option<Recorder> = None;
        // 3 s: a 20 ms mix frame every 20 ms, video frames when due.
        for i in 0..150u64 {
            let now = i * 20;
            let pcm: Vec<i16> = (0..960)
                .map(|k| {
                    let t = (i * 960 + k) as f64 / 48_000.0;
                    (4000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
                })
                .collect();
            let mut packets = enc.poll_video(now).unwrap();
            packets.extend(enc.push_audio(&pcm, now).unwrap());
            for p in packets {
                let h = enc.headers();
                if rec.is_none() && (h.video.is_none() || h.avc.is_some()) {
                    rec = Some(Recorder::create(path, &h).unwrap());
                }
                if let Some(r) = &mut rec {
                    r.write(&p).unwrap();
                }
            }
        }
        let mut rec = rec.unwrap();
        for p in enc.finish() {
            rec.write(&p).unwrap();
        }
        rec.finish().unwrap();
        rec
    }

    /// Encoded canvas + mix muxed into MP4 and read back by FFmpeg's demuxer: both streams,
    /// the canvas size, about 3 s.
    #[test]
    fn mp4_with_video_and_audio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.mp4");
        let v = VideoFormat {
            width: 320,
            height: 180,
            fps: 25,
        };
        let rec = record(Some(v), &path);
        assert!(rec.packets > 200, "{}", rec.packets);
        let input = format::input(&path).unwrap();
        let mut kinds: Vec<(media::Type, codec::Id)> = input
            .streams()
            .map(|s| (s.parameters().medium(), s.parameters().id()))
            .collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(
            kinds,
            vec![
                (media::Type::Audio, codec::Id::AAC),
                (media::Type::Video, codec::Id::H264)
            ]
        );
        let secs = input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE);
        assert!((secs - 3.0).abs() < 0.3, "{secs}");
    }

    #[test]
    fn audio_only_mp4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        record(None, &path);
        let input = format::input(&path).unwrap();
        let kinds: Vec<media::Type> = input.streams().map(|s| s.parameters().medium()).collect();
        assert_eq!(kinds, vec![media::Type::Audio]);
        let secs = input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE);
        assert!((secs - 3.0).abs() < 0.3, "{secs}");
    }
}
