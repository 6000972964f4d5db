//! Video codecs: H.264 encode/decode through OpenH264 (`openh264` crate, built from source),
//! VP8 decode through FFmpeg's `vp8` decoder and VP8 encode through FFmpeg's `libvpx`
//! encoder (`ffmpeg-next`).

use std::sync::Once;

use openh264::OpenH264API;
use openh264::decoder::{Decoder as OhDecoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder as OhEncoder, EncoderConfig, FrameRate, FrameType,
    IntraFramePeriod, Profile, RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264_sys2::{
    ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SBitrateInfo, SPATIAL_LAYER_0,
    SPATIAL_LAYER_ALL,
};

use crate::error::{MediaError, Result};
use crate::frame::I420Frame;
use crate::h264::{nal_type, nal_unit_type, split_annexb};

/// H.264 encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct H264EncoderConfig {
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// Frame rate the rate control plans for.
    pub fps: f32,
    /// A keyframe is produced at least every this many frames (0 is treated as 1).
    pub keyframe_interval: u32,
    /// Encoder threads (1 keeps latency and CPU predictable).
    pub threads: u16,
}

impl Default for H264EncoderConfig {
    fn default() -> Self {
        H264EncoderConfig {
            bitrate: 800_000,
            fps: 30.0,
            keyframe_interval: 300,
            threads: 1,
        }
    }
}

/// Encoder settings of either codec ([`H264Encoder`], [`Vp8Encoder`]).
pub type VideoEncoderConfig = H264EncoderConfig;

/// One encoded access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedVideoFrame {
    /// H.264: Annex-B bytes (4-byte start codes), keyframes carry SPS and PPS first. VP8:
    /// one VP8 frame (RFC 6386).
    pub data: Vec<u8>,
    /// IDR picture (H.264), key frame (VP8).
    pub keyframe: bool,
}

impl EncodedVideoFrame {
    /// The NAL units, without start codes.
    pub fn nals(&self) -> Vec<&[u8]> {
        split_annexb(&self.data)
    }
}

struct FrameSource<'a>(&'a I420Frame);

impl YUVSource for FrameSource<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width as usize, self.0.height as usize)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.0.stride_y, self.0.stride_u, self.0.stride_v)
    }
    fn y(&self) -> &[u8] {
        &self.0.y
    }
    fn u(&self) -> &[u8] {
        &self.0.u
    }
    fn v(&self) -> &[u8] {
        &self.0.v
    }
}

/// Constrained-baseline H.264 encoder (OpenH264), real-time camera mode, bitrate rate
/// control, with forced keyframes on request and a bounded keyframe interval.
pub struct H264Encoder {
    inner: OhEncoder,
    cfg: H264EncoderConfig,
    frames_since_key: u32,
    force_key: bool,
    /// Picture size the encoder was initialised with (it initialises on the first frame).
    dimensions: Option<(u32, u32)>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn oh_err(e: openh264::Error) -> MediaError {
    MediaError::codec("OpenH264", e)
}

impl H264Encoder {
    /// New encoder; the picture size is taken from the frames (and may change).
    pub fn new(cfg: H264EncoderConfig) -> Result<Self> {
        let inner = Self::build(&cfg)?;
        Ok(H264Encoder {
            inner,
            cfg,
            frames_since_key: 0,
            force_key: true,
            dimensions: None,
        })
    }

    fn build(cfg: &H264EncoderConfig) -> Result<OhEncoder> {
        let interval = cfg.keyframe_interval.max(1);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(cfg.bitrate.max(10_000)))
            .max_frame_rate(FrameRate::from_hz(cfg.fps.clamp(1.0, 120.0)))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .complexity(Complexity::Low)
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::from_num_frames(interval))
            .num_threads(cfg.threads);
        OhEncoder::with_api_config(OpenH264API::from_source(), config).map_err(oh_err)
    }

    /// Current settings.
    pub fn config(&self) -> &H264EncoderConfig {
        &self.cfg
    }

    /// Changes the target bitrate on the fly (bandwidth estimation), without a keyframe.
    ///
    /// Before the first frame, or if OpenH264 refuses the option, the encoder is rebuilt
    /// instead (and the next frame is a keyframe).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        let bps = bps.max(10_000);
        if bps == self.cfg.bitrate {
            return Ok(());
        }
        let old = self.cfg.bitrate;
        self.cfg.bitrate = bps;
        if self.dimensions.is_some()
            && self.set_bitrate_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, bps.max(old))
            && self.set_bitrate_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, bps)
            && self.set_bitrate_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, bps)
        {
            return Ok(());
        }
        self.inner = Self::build(&self.cfg)?;
        self.dimensions = None;
        self.force_key = true;
        Ok(())
    }

    fn set_bitrate_option(&mut self, option: i32, layer: i32, bps: u32) -> bool {
        let mut info = SBitrateInfo {
            iLayer: layer,
            iBitrate: bps.min(i32::MAX as u32) as i32,
        };
        // SAFETY: the encoder was initialised by a previous `encode` (checked by the caller
        // through `dimensions`); both bitrate options read an `SBitrateInfo` through the
        // pointer during the call only, and `info` outlives the call.
        let rc = unsafe {
            self.inner
                .raw_api()
                .set_option(option, (&raw mut info).cast())
        };
        rc == 0
    }

    /// The next encoded frame will be a keyframe (PLI/FIR from a receiver).
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Encodes one picture (even width and height). When rate control decides to skip the
    /// picture, `data` is empty (nothing to send).
    pub fn encode(&mut self, frame: &I420Frame) -> Result<EncodedVideoFrame> {
        check_encodable(frame, "H.264")?;
        if self.force_key || self.frames_since_key + 1 >= self.cfg.keyframe_interval.max(1) {
            self.inner.force_intra_frame();
        }
        if self
            .dimensions
            .is_some_and(|d| d != (frame.width, frame.height))
        {
            // A new size re-initialises OpenH264 from its stored configuration: rebuild so
            // that the current bitrate is used.
            // A fresh encoder starts with an IDR picture.
            self.inner = Self::build(&self.cfg)?;
        }
        self.dimensions = Some((frame.width, frame.height));
        let source = FrameSource(frame);
        let bitstream = self.inner.encode(&source).map_err(oh_err)?;
        let data = bitstream.to_vec();
        let keyframe = !data.is_empty()
            && matches!(bitstream.frame_type(), FrameType::IDR | FrameType::I)
            || split_annexb(&data)
                .iter()
                .any(|n| nal_unit_type(n) == nal_type::IDR);
        if keyframe {
            self.frames_since_key = 0;
            self.force_key = false;
        } else {
            self.frames_since_key += 1;
        }
        Ok(EncodedVideoFrame { data, keyframe })
    }
}

/// H.264 decoder (OpenH264) producing I420 frames.
pub struct H264Decoder {
    inner: OhDecoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").finish()
    }
}

impl H264Decoder {
    /// New decoder.
    pub fn new() -> Result<Self> {
        let inner = OhDecoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(oh_err)?;
        Ok(H264Decoder { inner })
    }

    /// Decodes one Annex-B access unit. `Ok(None)` when no picture came out (e.g. only
    /// parameter sets).
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<I420Frame>> {
        if split_annexb(access_unit).is_empty() {
            return Err(MediaError::malformed(
                "H.264",
                "no NAL units in access unit",
            ));
        }
        let Some(yuv) = self.inner.decode(access_unit).map_err(oh_err)? else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        if w == 0 || h == 0 {
            return Ok(None);
        }
        I420Frame::copy_from_strided(
            w as u32,
            h as u32,
            [(yuv.y(), sy), (yuv.u(), su), (yuv.v(), sv)],
        )
        .map(Some)
    }
}

static FFMPEG_INIT: Once = Once::new();

pub(crate) fn ffmpeg_init() {
    FFMPEG_INIT.call_once(|| {
        // Registration is a no-op on FFmpeg >= 4; errors are reported when codecs are missing.
        let _ = ffmpeg_next::init();
        // FFmpeg logs to stderr itself: keep its warnings and errors, not its banners
        // (libvpx prints its version at every open).
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Warning);
    });
}

pub(crate) fn ff_err(e: ffmpeg_next::Error) -> MediaError {
    MediaError::codec("FFmpeg", e)
}

/// VP8 decoder (FFmpeg's native `vp8` decoder) producing I420 frames.
pub struct Vp8Decoder {
    inner: ffmpeg_next::decoder::Video,
    frame: ffmpeg_next::frame::Video,
}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder").finish()
    }
}

impl Vp8Decoder {
    /// New decoder.
    pub fn new() -> Result<Self> {
        ffmpeg_init();
        let codec = ffmpeg_next::decoder::find(ffmpeg_next::codec::Id::VP8)
            .ok_or_else(|| MediaError::codec("FFmpeg", "no VP8 decoder"))?;
        let ctx = ffmpeg_next::codec::context::Context::new_with_codec(codec);
        let inner = ctx.decoder().video().map_err(ff_err)?;
        Ok(Vp8Decoder {
            inner,
            frame: ffmpeg_next::frame::Video::empty(),
        })
    }

    /// Decodes one VP8 frame.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>> {
        crate::vp8::parse_frame_header(data)?;
        let packet = ffmpeg_next::Packet::copy(data);
        self.inner.send_packet(&packet).map_err(ff_err)?;
        let mut out = None;
        while self.inner.receive_frame(&mut self.frame).is_ok() {
            if self.frame.format() != ffmpeg_next::format::Pixel::YUV420P {
                return Err(MediaError::codec(
                    "FFmpeg",
                    "VP8 decoder gave a non-I420 frame",
                ));
            }
            let (w, h) = (self.frame.width(), self.frame.height());
            out = Some(I420Frame::copy_from_strided(
                w,
                h,
                [
                    (self.frame.data(0), self.frame.stride(0)),
                    (self.frame.data(1), self.frame.stride(1)),
                    (self.frame.data(2), self.frame.stride(2)),
                ],
            )?);
        }
        Ok(out)
    }
}

/// What both encoders need of a picture: valid planes, even dimensions, full stride rows.
fn check_encodable(frame: &I420Frame, codec: &str) -> Result<()> {
    frame.validate()?;
    if !frame.width.is_multiple_of(2) || !frame.height.is_multiple_of(2) {
        return Err(MediaError::InvalidArgument(format!(
            "{codec} encoder needs even dimensions"
        )));
    }
    let (h, ch) = (frame.height as usize, frame.chroma_height());
    if frame.y.len() < frame.stride_y * h
        || frame.u.len() < frame.stride_u * ch
        || frame.v.len() < frame.stride_v * ch
    {
        return Err(MediaError::InvalidArgument(
            "planes must hold full stride rows".into(),
        ));
    }
    Ok(())
}

/// Real-time VP8 encoder (FFmpeg's `libvpx`: realtime deadline, no lag, CBR at the target
/// bitrate), with forced keyframes on request and a bounded keyframe interval.
///
/// libvpx is opened on the first frame with its size; a new size or a new bitrate reopens it
/// (the next frame is then a keyframe).
pub struct Vp8Encoder {
    inner: Option<ffmpeg_next::encoder::Video>,
    cfg: VideoEncoderConfig,
    dimensions: Option<(u32, u32)>,
    frame: Option<ffmpeg_next::frame::Video>,
    packet: ffmpeg_next::Packet,
    pts: i64,
    frames_since_key: u32,
    force_key: bool,
}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder")
            .field("cfg", &self.cfg)
            .field("dimensions", &self.dimensions)
            .finish()
    }
}

impl Vp8Encoder {
    /// New encoder; the picture size is taken from the frames (and may change). Fails when
    /// FFmpeg has no `libvpx` encoder.
    pub fn new(cfg: VideoEncoderConfig) -> Result<Self> {
        ffmpeg_init();
        if ffmpeg_next::encoder::find_by_name("libvpx").is_none() {
            return Err(MediaError::codec("FFmpeg", "no libvpx (VP8) encoder"));
        }
        Ok(Vp8Encoder {
            inner: None,
            cfg,
            dimensions: None,
            frame: None,
            packet: ffmpeg_next::Packet::empty(),
            pts: 0,
            frames_since_key: 0,
            force_key: true,
        })
    }

    /// Current settings.
    pub fn config(&self) -> &VideoEncoderConfig {
        &self.cfg
    }

    fn open(
        cfg: &VideoEncoderConfig,
        width: u32,
        height: u32,
    ) -> Result<ffmpeg_next::encoder::Video> {
        use ffmpeg_next as ff;
        let codec = ff::encoder::find_by_name("libvpx")
            .ok_or_else(|| MediaError::codec("FFmpeg", "no libvpx (VP8) encoder"))?;
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(ff_err)?;
        let fps = cfg.fps.clamp(1.0, 120.0).round() as i32;
        let bps = cfg.bitrate.max(10_000) as usize;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base((1, fps));
        enc.set_frame_rate(Some((fps, 1)));
        enc.set_bit_rate(bps);
        // min = max = target: libvpx's CBR mode (what real-time senders use).
        enc.set_max_bit_rate(bps);
        // SAFETY: `enc` owns a valid, not yet opened AVCodecContext; these plain fields are
        // read by avcodec_open2 (rc_min_rate selects CBR, rc_buffer_size bounds the burst,
        // qmin/qmax the quantizer range, thread_count libvpx's threads).
        unsafe {
            let ctx = enc.as_mut_ptr();
            (*ctx).rc_min_rate = bps as i64;
            (*ctx).rc_buffer_size = (bps / 2) as i32;
            (*ctx).qmin = 4;
            (*ctx).qmax = 56;
            (*ctx).thread_count = i32::from(cfg.threads.max(1));
        }
        enc.set_gop(cfg.keyframe_interval.max(1));
        let mut opts = ff::Dictionary::new();
        opts.set("deadline", "realtime");
        opts.set("cpu-used", "8");
        opts.set("lag-in-frames", "0");
        opts.set("auto-alt-ref", "0");
        opts.set("error-resilient", "1");
        opts.set("max-intra-rate", "300");
        enc.open_as_with(codec, opts).map_err(ff_err)
    }

    /// Changes the target bitrate (bandwidth estimation). libvpx is reopened with it at the
    /// next frame, which is then a keyframe: callers should not change it too often.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        let bps = bps.max(10_000);
        if bps != self.cfg.bitrate {
            self.cfg.bitrate = bps;
            self.inner = None;
        }
        Ok(())
    }

    /// The next encoded frame will be a keyframe (PLI/FIR from a receiver).
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Encodes one picture (even width and height). When rate control drops the picture,
    /// `data` is empty (nothing to send).
    pub fn encode(&mut self, frame: &I420Frame) -> Result<EncodedVideoFrame> {
        use ffmpeg_next as ff;
        check_encodable(frame, "VP8")?;
        let (w, h) = (frame.width, frame.height);
        let (rows, crows) = (h as usize, frame.chroma_height());
        if self.dimensions != Some((w, h)) {
            self.inner = None;
            self.frame = None;
        }
        if self.inner.is_none() {
            self.inner = Some(Self::open(&self.cfg, w, h)?);
            self.dimensions = Some((w, h));
            self.force_key = true;
        }
        let picture = self
            .frame
            .get_or_insert_with(|| ff::frame::Video::new(ff::format::Pixel::YUV420P, w, h));
        let cw = w.div_ceil(2) as usize;
        for (plane, src, src_stride, width, height) in [
            (0, &frame.y, frame.stride_y, w as usize, rows),
            (1, &frame.u, frame.stride_u, cw, crows),
            (2, &frame.v, frame.stride_v, cw, crows),
        ] {
            let dst_stride = picture.stride(plane);
            let dst = picture.data_mut(plane);
            for r in 0..height {
                dst[r * dst_stride..r * dst_stride + width]
                    .copy_from_slice(&src[r * src_stride..r * src_stride + width]);
            }
        }
        let key = self.force_key || self.frames_since_key + 1 >= self.cfg.keyframe_interval.max(1);
        picture.set_kind(if key {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        picture.set_pts(Some(self.pts));
        self.pts += 1;
        let Some(enc) = self.inner.as_mut() else {
            return Err(MediaError::codec("FFmpeg", "VP8 encoder not open"));
        };
        enc.send_frame(picture).map_err(ff_err)?;
        let mut data = Vec::new();
        let mut keyframe = false;
        while enc.receive_packet(&mut self.packet).is_ok() {
            if let Some(bytes) = self.packet.data() {
                keyframe |= self.packet.is_key();
                data.extend_from_slice(bytes);
            }
        }
        if !data.is_empty() {
            // The key-frame bit of the VP8 frame tag is the truth (RFC 6386 9.1).
            keyframe = data[0] & 1 == 0;
            if keyframe {
                self.frames_since_key = 0;
                self.force_key = false;
            } else {
                self.frames_since_key += 1;
            }
        }
        Ok(EncodedVideoFrame { data, keyframe })
    }
}

/// Either video encoder, chosen by codec.
#[derive(Debug)]
pub enum VideoEncoder {
    /// H.264 (OpenH264; boxed: OpenH264's state is large).
    H264(Box<H264Encoder>),
    /// VP8 (libvpx).
    Vp8(Vp8Encoder),
}

impl VideoEncoder {
    /// Encodes one picture.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<EncodedVideoFrame> {
        match self {
            VideoEncoder::H264(e) => e.encode(frame),
            VideoEncoder::Vp8(e) => e.encode(frame),
        }
    }

    /// The next frame will be a keyframe.
    pub fn request_keyframe(&mut self) {
        match self {
            VideoEncoder::H264(e) => e.request_keyframe(),
            VideoEncoder::Vp8(e) => e.request_keyframe(),
        }
    }

    /// Changes the target bitrate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        match self {
            VideoEncoder::H264(e) => e.set_bitrate(bps),
            VideoEncoder::Vp8(e) => e.set_bitrate(bps),
        }
    }

    /// Current settings.
    pub fn config(&self) -> &VideoEncoderConfig {
        match self {
            VideoEncoder::H264(e) => e.config(),
            VideoEncoder::Vp8(e) => e.config(),
        }
    }
}

/// Either video decoder, chosen by codec.
#[derive(Debug)]
pub enum VideoDecoder {
    /// H.264.
    H264(H264Decoder),
    /// VP8.
    Vp8(Vp8Decoder),
}

impl VideoDecoder {
    /// Decodes one assembled frame (Annex-B for H.264, a VP8 frame for VP8).
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>> {
        match self {
            VideoDecoder::H264(d) => d.decode(data),
            VideoDecoder::Vp8(d) => d.decode(data),
        }
    }
}
