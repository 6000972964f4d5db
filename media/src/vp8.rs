//! VP8 RTP payload format (RFC 7741): payload descriptor parsing, depacketization and a
//! simple packetizer (used by tests and by anyone forwarding VP8 we produce ourselves).

use crate::error::{MediaError, Result};
use crate::h264::{Depacketizer, PayloadInfo};

const FMT: &str = "VP8";

/// The parsed RFC 7741 payload descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// N: the frame is not a reference frame.
    pub non_reference: bool,
    /// S: start of a VP8 partition.
    pub start_of_partition: bool,
    /// PID: partition index.
    pub partition_id: u8,
    /// PictureID (7 or 15 bit), if present.
    pub picture_id: Option<u16>,
    /// TL0PICIDX, if present.
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer index, if present.
    pub tid: Option<u8>,
    /// Layer sync bit (only meaningful with `tid`).
    pub layer_sync: bool,
    /// KEYIDX, if present.
    pub key_idx: Option<u8>,
    /// Length of the descriptor in bytes (where the VP8 data starts).
    pub header_len: usize,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the start of `payload`. The payload must carry at least one
    /// byte of VP8 data after it.
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let truncated = || MediaError::malformed(FMT, "truncated payload descriptor");
        let b0 = *payload
            .first()
            .ok_or_else(|| MediaError::malformed(FMT, "empty payload"))?;
        let mut d = Vp8Descriptor {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition_id: b0 & 0x0f,
            ..Default::default()
        };
        if d.partition_id > 8 {
            return Err(MediaError::malformed(FMT, "partition index above 8"));
        }
        let mut pos = 1;
        if b0 & 0x80 != 0 {
            let x = *payload.get(pos).ok_or_else(truncated)?;
            pos += 1;
            let (i, l, t, k) = (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
            if l && !i {
                return Err(MediaError::malformed(FMT, "TL0PICIDX without PictureID"));
            }
            if i {
                let p0 = *payload.get(pos).ok_or_else(truncated)?;
                pos += 1;
                if p0 & 0x80 != 0 {
                    let p1 = *payload.get(pos).ok_or_else(truncated)?;
                    pos += 1;
                    d.picture_id = Some((u16::from(p0 & 0x7f) << 8) | u16::from(p1));
                } else {
                    d.picture_id = Some(u16::from(p0));
                }
            }
            if l {
                d.tl0_pic_idx = Some(*payload.get(pos).ok_or_else(truncated)?);
                pos += 1;
            }
            if t || k {
                let tk = *payload.get(pos).ok_or_else(truncated)?;
                pos += 1;
                if t {
                    d.tid = Some(tk >> 6);
                    d.layer_sync = tk & 0x20 != 0;
                }
                if k {
                    d.key_idx = Some(tk & 0x1f);
                }
            }
        }
        if pos >= payload.len() {
            return Err(MediaError::malformed(FMT, "no VP8 data after descriptor"));
        }
        d.header_len = pos;
        Ok(d)
    }

    /// Whether this payload begins a frame (S=1 and PID=0).
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_id == 0
    }
}

/// Information from the VP8 frame header (RFC 6386 section 9.1) at the start of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8FrameHeader {
    /// Key frame (intra frame).
    pub keyframe: bool,
    /// Width in pixels (key frames only).
    pub width: Option<u16>,
    /// Height in pixels (key frames only).
    pub height: Option<u16>,
}

/// Parses the VP8 frame tag at the start of a frame's data.
pub fn parse_frame_header(data: &[u8]) -> Result<Vp8FrameHeader> {
    if data.len() < 3 {
        return Err(MediaError::malformed(FMT, "truncated frame tag"));
    }
    let keyframe = data[0] & 0x01 == 0;
    if !keyframe {
        return Ok(Vp8FrameHeader {
            keyframe,
            width: None,
            height: None,
        });
    }
    if data.len() < 10 {
        return Err(MediaError::malformed(FMT, "truncated key frame header"));
    }
    if data[3..6] != [0x9d, 0x01, 0x2a] {
        return Err(MediaError::malformed(FMT, "bad key frame start code"));
    }
    let width = u16::from_le_bytes([data[6], data[7]]) & 0x3fff;
    let height = u16::from_le_bytes([data[8], data[9]]) & 0x3fff;
    if width == 0 || height == 0 {
        return Err(MediaError::malformed(FMT, "zero key frame dimension"));
    }
    Ok(Vp8FrameHeader {
        keyframe,
        width: Some(width),
        height: Some(height),
    })
}

/// Reassembles VP8 frames from RFC 7741 payloads.
#[derive(Debug, Default)]
pub struct Vp8Depacketizer {
    started: bool,
}

impl Vp8Depacketizer {
    /// Largest frame accepted.
    pub const MAX_FRAME_SIZE: usize = 8 << 20;

    /// New depacketizer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Depacketizer for Vp8Depacketizer {
    fn push(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<PayloadInfo> {
        let d = Vp8Descriptor::parse(payload)?;
        let data = &payload[d.header_len..];
        let mut info = PayloadInfo::default();
        if d.starts_frame() {
            let header = parse_frame_header(data)?;
            info.starts_frame = true;
            info.keyframe = header.keyframe;
            self.started = true;
        } else if !self.started {
            return Err(MediaError::malformed(
                FMT,
                "continuation without frame start",
            ));
        }
        if frame.len() + data.len() > Self::MAX_FRAME_SIZE {
            return Err(MediaError::malformed(FMT, "frame too large"));
        }
        frame.extend_from_slice(data);
        Ok(info)
    }

    fn is_frame_start(&self, payload: &[u8]) -> bool {
        Vp8Descriptor::parse(payload)
            .is_ok_and(|d| d.starts_frame() && parse_frame_header(&payload[d.header_len..]).is_ok())
    }

    fn is_pending(&self) -> bool {
        false
    }

    fn reset(&mut self) {
        self.started = false;
    }
}

/// Splits a VP8 frame into RFC 7741 payloads with a 15-bit PictureID, each at most `mtu`
/// bytes.
#[derive(Debug, Clone)]
pub struct Vp8Packetizer {
    mtu: usize,
    picture_id: u16,
}

impl Vp8Packetizer {
    const HEADER: usize = 4;

    /// New packetizer (MTU at least 16 bytes).
    pub fn new(mtu: usize, first_picture_id: u16) -> Result<Self> {
        if mtu < 16 {
            return Err(MediaError::InvalidArgument(format!("MTU {mtu} below 16")));
        }
        Ok(Vp8Packetizer {
            mtu,
            picture_id: first_picture_id & 0x7fff,
        })
    }

    /// Packetizes one encoded frame.
    pub fn packetize(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let chunk = self.mtu - Self::HEADER;
        let pid = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        frame
            .chunks(chunk)
            .enumerate()
            .map(|(k, part)| {
                let s = if k == 0 { 0x10 } else { 0 };
                let mut p = Vec::with_capacity(part.len() + Self::HEADER);
                p.extend_from_slice(&[0x80 | s, 0x80, 0x80 | (pid >> 8) as u8, pid as u8]);
                p.extend_from_slice(part);
                p
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_frame(len: usize) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        f.resize(len, 0x55);
        f
    }

    #[test]
    fn descriptor_fields() {
        let d = Vp8Descriptor::parse(&[0xb0, 0xf0, 0x81, 0x23, 0x07, 0x65, 0x00]).unwrap();
        assert!(d.non_reference && d.start_of_partition);
        assert_eq!(d.picture_id, Some(0x123));
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.tid, Some(1));
        assert!(d.layer_sync);
        assert_eq!(d.key_idx, Some(5));
        assert_eq!(d.header_len, 6);
        let short = Vp8Descriptor::parse(&[0x10, 0x00]).unwrap();
        assert_eq!((short.picture_id, short.header_len), (None, 1));
    }

    #[test]
    fn frame_header_dimensions() {
        let h = parse_frame_header(&key_frame(20)).unwrap();
        assert_eq!(
            (h.keyframe, h.width, h.height),
            (true, Some(640), Some(360))
        );
        assert!(!parse_frame_header(&[0x01, 0, 0]).unwrap().keyframe);
    }

    #[test]
    fn packetize_round_trip() {
        let frame = key_frame(3000);
        let mut p = Vp8Packetizer::new(1200, 0x7fff).unwrap();
        let payloads = p.packetize(&frame);
        assert_eq!(payloads.len(), 3);
        assert!(payloads.iter().all(|x| x.len() <= 1200));
        let mut d = Vp8Depacketizer::new();
        let mut out = Vec::new();
        let first = d.push(&payloads[0], &mut out).unwrap();
        assert!(first.starts_frame && first.keyframe);
        for x in &payloads[1..] {
            assert!(!d.push(x, &mut out).unwrap().starts_frame);
        }
        assert_eq!(out, frame);
        // PictureID wraps at 15 bits.
        let next = p.packetize(&frame);
        assert_eq!(Vp8Descriptor::parse(&next[0]).unwrap().picture_id, Some(0));
    }

    #[test]
    fn bad_descriptors_are_rejected() {
        let mut d = Vp8Depacketizer::new();
        let mut out = Vec::new();
        let cases: &[&[u8]] = &[
            &[],
            &[0x10],                                  // no data
            &[0x80],                                  // X without extension byte
            &[0x90, 0x80],                            // I without PictureID
            &[0x90, 0x80, 0x81],                      // 15-bit PictureID truncated
            &[0x90, 0x40, 0x01, 0x00],                // L without I
            &[0x90, 0x20],                            // T without TID byte
            &[0x1f, 0x00, 0x00, 0x00],                // partition index 15
            &[0x10, 0x00, 0x00],                      // key frame too short
            &[0x10, 0x00, 0, 0, 1, 2, 3, 0, 0, 0, 0], // bad start code
            &[0x00, 0x01, 0x02],                      // continuation without start
        ];
        for case in cases {
            assert!(d.push(case, &mut out).is_err(), "{case:?}");
        }
        assert!(out.is_empty());
    }
}
