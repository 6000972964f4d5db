//! H.264 bitstream helpers and the RFC 6184 payload format (packetization-mode 1).
//!
//! * Annex-B (start codes) <-> AVCC (length prefixes) conversion, and the
//!   `AVCDecoderConfigurationRecord` that RTMP/FLV and MP4 need.
//! * [`H264Packetizer`]: NAL units -> RTP payloads (single NAL unit, STAP-A, FU-A), never
//!   bigger than the MTU.
//! * [`H264Depacketizer`]: RTP payloads -> NAL units, rejecting malformed input with an error.

use crate::error::{MediaError, Result};

const FMT: &str = "H.264";

/// NAL unit types this crate cares about.
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice of an IDR picture (keyframe).
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// Single-time aggregation packet (RTP only).
    pub const STAP_A: u8 = 24;
    /// Single-time aggregation packet with DON (interleaved mode only).
    pub const STAP_B: u8 = 25;
    /// Multi-time aggregation packet, 16-bit offsets (interleaved mode only).
    pub const MTAP16: u8 = 26;
    /// Multi-time aggregation packet, 24-bit offsets (interleaved mode only).
    pub const MTAP24: u8 = 27;
    /// Fragmentation unit A.
    pub const FU_A: u8 = 28;
    /// Fragmentation unit B (interleaved mode only).
    pub const FU_B: u8 = 29;
}

/// The 5-bit type of a NAL unit (0 for an empty slice).
pub fn nal_unit_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Splits an Annex-B byte stream into NAL units (without start codes).
///
/// Accepts 3- and 4-byte start codes; bytes before the first start code are ignored, and
/// trailing zero bytes of a NAL unit (part of the next start code) are dropped. Empty NAL units
/// are skipped.
pub fn split_annexb(data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                push_trimmed(&mut nals, &data[s..i]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        push_trimmed(&mut nals, &data[s.min(data.len())..]);
    }
    nals
}

fn push_trimmed<'a>(nals: &mut Vec<&'a [u8]>, nal: &'a [u8]) {
    let mut end = nal.len();
    while end > 0 && nal[end - 1] == 0 {
        end -= 1;
    }
    if end > 0 {
        nals.push(&nal[..end]);
    }
}

/// Joins NAL units into an Annex-B stream with 4-byte start codes.
pub fn to_annexb<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    out
}

/// Converts Annex-B to AVCC (4-byte big-endian length prefixes), as FLV/RTMP and MP4 want.
pub fn annexb_to_avcc(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in split_annexb(data) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// Splits AVCC data (length prefixes of `length_size` bytes: 1, 2 or 4) into NAL units.
pub fn split_avcc(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(MediaError::InvalidArgument(format!(
            "AVCC length size must be 1, 2 or 4, not {length_size}"
        )));
    }
    let mut nals = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return Err(MediaError::malformed("AVCC", "truncated length prefix"));
        }
        let len = rest[..length_size]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[length_size..];
        if len > rest.len() {
            return Err(MediaError::malformed("AVCC", "NAL length beyond data"));
        }
        if len > 0 {
            nals.push(&rest[..len]);
        }
        rest = &rest[len..];
    }
    Ok(nals)
}

/// Converts AVCC data to Annex-B with 4-byte start codes.
pub fn avcc_to_annexb(data: &[u8], length_size: usize) -> Result<Vec<u8>> {
    Ok(to_annexb(split_avcc(data, length_size)?))
}

/// The `AVCDecoderConfigurationRecord` (ISO 14496-15), the "AVC sequence header" of RTMP/FLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    /// `profile_idc` from the SPS.
    pub profile: u8,
    /// Constraint flags byte from the SPS.
    pub compatibility: u8,
    /// `level_idc` from the SPS.
    pub level: u8,
    /// Size of the NAL length prefixes (1, 2 or 4).
    pub length_size: u8,
    /// Sequence parameter sets (NAL units, header included).
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

impl AvcDecoderConfig {
    /// Builds the record from one SPS and one PPS NAL unit, with 4-byte lengths.
    pub fn from_sps_pps(sps: &[u8], pps: &[u8]) -> Result<Self> {
        if sps.len() < 4 || nal_unit_type(sps) != nal_type::SPS {
            return Err(MediaError::malformed(FMT, "not an SPS"));
        }
        if pps.is_empty() || nal_unit_type(pps) != nal_type::PPS {
            return Err(MediaError::malformed(FMT, "not a PPS"));
        }
        Ok(AvcDecoderConfig {
            profile: sps[1],
            compatibility: sps[2],
            level: sps[3],
            length_size: 4,
            sps: vec![sps.to_vec()],
            pps: vec![pps.to_vec()],
        })
    }

    /// Finds the SPS and PPS in an Annex-B access unit (typically a keyframe from the encoder).
    pub fn from_annexb(data: &[u8]) -> Result<Self> {
        let nals = split_annexb(data);
        let sps = nals.iter().find(|n| nal_unit_type(n) == nal_type::SPS);
        let pps = nals.iter().find(|n| nal_unit_type(n) == nal_type::PPS);
        match (sps, pps) {
            (Some(sps), Some(pps)) => Self::from_sps_pps(sps, pps),
            _ => Err(MediaError::malformed(FMT, "access unit has no SPS/PPS")),
        }
    }

    /// Serializes the record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![
            1,
            self.profile,
            self.compatibility,
            self.level,
            0xfc | (self.length_size.clamp(1, 4) - 1),
            0xe0 | (self.sps.len().min(31) as u8),
        ];
        for sps in self.sps.iter().take(31) {
            out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
            out.extend_from_slice(sps);
        }
        out.push(self.pps.len().min(255) as u8);
        for pps in self.pps.iter().take(255) {
            out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
            out.extend_from_slice(pps);
        }
        out
    }

    /// Parses a record (e.g. from an incoming RTMP stream).
    pub fn parse(data: &[u8]) -> Result<Self> {
        let bad = |reason| MediaError::malformed("AVCDecoderConfigurationRecord", reason);
        if data.len() < 7 {
            return Err(bad("too short"));
        }
        if data[0] != 1 {
            return Err(bad("unknown version"));
        }
        let length_size = (data[4] & 0x03) + 1;
        if length_size == 3 {
            return Err(bad("length size 3"));
        }
        let mut pos = 5;
        let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Vec<u8>>> {
            let mut sets = Vec::with_capacity(count);
            for _ in 0..count {
                let len_bytes = data.get(*pos..*pos + 2).ok_or_else(|| bad("truncated"))?;
                let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
                *pos += 2;
                let set = data.get(*pos..*pos + len).ok_or_else(|| bad("truncated"))?;
                sets.push(set.to_vec());
                *pos += len;
            }
            Ok(sets)
        };
        let sps_count = (data[pos] & 0x1f) as usize;
        pos += 1;
        let sps = read_sets(sps_count, &mut pos)?;
        let pps_count = *data.get(pos).ok_or_else(|| bad("truncated"))? as usize;
        pos += 1;
        let pps = read_sets(pps_count, &mut pos)?;
        Ok(AvcDecoderConfig {
            profile: data[1],
            compatibility: data[2],
            level: data[3],
            length_size,
            sps,
            pps,
        })
    }
}

/// True when an H.264 slice NAL unit starts a new picture (`first_mb_in_slice == 0`), or the
/// NAL unit is one that precedes the first slice of an access unit (SPS, PPS, AUD, SEI).
fn nal_starts_picture(nal_header: u8, first_payload_byte: Option<u8>) -> bool {
    match nal_header & 0x1f {
        nal_type::SLICE | nal_type::IDR => first_payload_byte.is_some_and(|b| b & 0x80 != 0),
        nal_type::SPS | nal_type::PPS | nal_type::AUD | nal_type::SEI => true,
        _ => false,
    }
}

/// Splits NAL units into RTP payloads of at most `mtu` bytes (RFC 6184 packetization-mode 1).
///
/// Small consecutive NAL units (SPS + PPS + a small slice) are aggregated into a STAP-A, NAL
/// units that fit alone go as single NAL unit packets, and bigger ones are fragmented into
/// FU-A packets.
#[derive(Debug, Clone)]
pub struct H264Packetizer {
    mtu: usize,
}

impl H264Packetizer {
    /// Smallest MTU accepted (an FU-A needs 2 header bytes plus at least one payload byte).
    pub const MIN_MTU: usize = 16;

    /// New packetizer; `mtu` is the maximum RTP *payload* size (typically 1200).
    pub fn new(mtu: usize) -> Result<Self> {
        if mtu < Self::MIN_MTU {
            return Err(MediaError::InvalidArgument(format!(
                "MTU {mtu} below {}",
                Self::MIN_MTU
            )));
        }
        Ok(H264Packetizer { mtu })
    }

    /// The payload size limit.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Packetizes the NAL units of one access unit, in order. The last payload carries the
    /// marker bit.
    pub fn packetize(&self, nals: &[&[u8]]) -> Vec<Vec<u8>> {
        let nals: Vec<&[u8]> = nals.iter().copied().filter(|n| !n.is_empty()).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < nals.len() {
            let nal = nals[i];
            if nal.len() > self.mtu {
                self.fragment(nal, &mut out);
                i += 1;
                continue;
            }
            // Greedily aggregate the following NAL units that still fit.
            let mut size = 1 + 2 + nal.len();
            let mut j = i + 1;
            while j < nals.len() && size + 2 + nals[j].len() <= self.mtu {
                size += 2 + nals[j].len();
                j += 1;
            }
            if j - i == 1 {
                out.push(nal.to_vec());
            } else {
                let group = &nals[i..j];
                let f = group.iter().fold(0u8, |acc, n| acc | (n[0] & 0x80));
                let nri = group.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
                let mut payload = Vec::with_capacity(size);
                payload.push(f | nri | nal_type::STAP_A);
                for n in group {
                    payload.extend_from_slice(&(n.len() as u16).to_be_bytes());
                    payload.extend_from_slice(n);
                }
                out.push(payload);
            }
            i = j;
        }
        out
    }

    fn fragment(&self, nal: &[u8], out: &mut Vec<Vec<u8>>) {
        let header = nal[0];
        let indicator = (header & 0xe0) | nal_type::FU_A;
        let body = &nal[1..];
        let chunk = self.mtu - 2;
        let count = body.len().div_ceil(chunk);
        for (k, part) in body.chunks(chunk).enumerate() {
            let mut fu_header = header & 0x1f;
            if k == 0 {
                fu_header |= 0x80;
            }
            if k + 1 == count {
                fu_header |= 0x40;
            }
            let mut payload = Vec::with_capacity(part.len() + 2);
            payload.push(indicator);
            payload.push(fu_header);
            payload.extend_from_slice(part);
            out.push(payload);
        }
    }
}

/// What one depacketized payload said about the frame it belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// The payload begins a new frame (picture).
    pub starts_frame: bool,
    /// The payload carries keyframe data (an IDR slice for H.264, a key frame for VP8).
    pub keyframe: bool,
}

/// Something that turns the RTP payloads of one frame into a decodable frame.
///
/// Implemented by [`H264Depacketizer`] and [`crate::vp8::Vp8Depacketizer`]; used by
/// [`crate::assembler::FrameAssembler`].
pub trait Depacketizer {
    /// Appends the frame data carried by `payload` to `frame`. On error nothing is appended.
    fn push(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<PayloadInfo>;
    /// Whether `payload` starts a frame, without changing any state (used to resynchronise
    /// after loss). Malformed payloads answer `false`.
    fn is_frame_start(&self, payload: &[u8]) -> bool;
    /// Whether the frame being assembled is still incomplete (e.g. an open FU-A).
    fn is_pending(&self) -> bool;
    /// Forgets partial state (called at every frame boundary and after loss).
    fn reset(&mut self);
}

/// Turns RFC 6184 payloads (single NAL unit, STAP-A, FU-A) back into an Annex-B stream.
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    fu: Vec<u8>,
    fu_open: bool,
}

impl H264Depacketizer {
    /// Largest NAL unit reassembled from FU-A fragments.
    pub const MAX_NAL_SIZE: usize = 8 << 20;

    /// New depacketizer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Depacketizes one payload into complete NAL units (without start codes), appended to
    /// `nals`. FU-A fragments are kept until the end fragment arrives.
    pub fn push_nals(&mut self, payload: &[u8], nals: &mut Vec<Vec<u8>>) -> Result<PayloadInfo> {
        let header = *payload
            .first()
            .ok_or_else(|| MediaError::malformed(FMT, "empty payload"))?;
        if header & 0x80 != 0 {
            return Err(MediaError::malformed(FMT, "forbidden_zero_bit set"));
        }
        match header & 0x1f {
            1..=23 => {
                let info = PayloadInfo {
                    starts_frame: nal_starts_picture(header, payload.get(1).copied()),
                    keyframe: header & 0x1f == nal_type::IDR,
                };
                nals.push(payload.to_vec());
                Ok(info)
            }
            nal_type::STAP_A => {
                let units = parse_stap_a(payload)?;
                let info = PayloadInfo {
                    starts_frame: nal_starts_picture(units[0][0], units[0].get(1).copied()),
                    keyframe: units.iter().any(|u| u[0] & 0x1f == nal_type::IDR),
                };
                nals.extend(units.into_iter().map(<[u8]>::to_vec));
                Ok(info)
            }
            nal_type::FU_A => {
                if payload.len() < 3 {
                    return Err(MediaError::malformed(FMT, "truncated FU-A"));
                }
                let fu_header = payload[1];
                let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
                let typ = fu_header & 0x1f;
                if start && end {
                    return Err(MediaError::malformed(FMT, "FU-A with both start and end"));
                }
                if !(1..=23).contains(&typ) {
                    return Err(MediaError::malformed(FMT, "FU-A of a non-NAL type"));
                }
                let nal_header = (header & 0xe0) | typ;
                if start {
                    // An FU-A left open by a lost end fragment is simply replaced.
                    self.fu.clear();
                    self.fu.push(nal_header);
                    self.fu.extend_from_slice(&payload[2..]);
                    self.fu_open = true;
                    return Ok(PayloadInfo {
                        starts_frame: nal_starts_picture(nal_header, payload.get(2).copied()),
                        keyframe: typ == nal_type::IDR,
                    });
                }
                if !self.fu_open {
                    return Err(MediaError::malformed(
                        FMT,
                        "FU-A continuation without start",
                    ));
                }
                if self.fu[0] != nal_header {
                    self.reset();
                    return Err(MediaError::malformed(FMT, "FU-A header changed mid-unit"));
                }
                if self.fu.len() + payload.len() - 2 > Self::MAX_NAL_SIZE {
                    self.reset();
                    return Err(MediaError::malformed(FMT, "FU-A NAL unit too large"));
                }
                self.fu.extend_from_slice(&payload[2..]);
                if end {
                    self.fu_open = false;
                    nals.push(std::mem::take(&mut self.fu));
                }
                Ok(PayloadInfo {
                    starts_frame: false,
                    keyframe: typ == nal_type::IDR,
                })
            }
            nal_type::STAP_B | nal_type::MTAP16 | nal_type::MTAP24 | nal_type::FU_B => {
                Err(MediaError::Unsupported {
                    format: FMT,
                    reason: "interleaved-mode packet (STAP-B/MTAP/FU-B)",
                })
            }
            _ => Err(MediaError::malformed(FMT, "reserved NAL unit type")),
        }
    }
}

/// Validates a STAP-A payload completely and returns its NAL units.
fn parse_stap_a(payload: &[u8]) -> Result<Vec<&[u8]>> {
    let mut units = Vec::new();
    let mut rest = &payload[1..];
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(MediaError::malformed(FMT, "truncated STAP-A length"));
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        rest = &rest[2..];
        if len == 0 {
            return Err(MediaError::malformed(FMT, "zero-length NAL unit in STAP-A"));
        }
        if len > rest.len() {
            return Err(MediaError::malformed(FMT, "STAP-A length beyond payload"));
        }
        let unit = &rest[..len];
        if unit[0] & 0x80 != 0 || !(1..=23).contains(&(unit[0] & 0x1f)) {
            return Err(MediaError::malformed(FMT, "bad NAL unit inside STAP-A"));
        }
        units.push(unit);
        rest = &rest[len..];
    }
    if units.is_empty() {
        return Err(MediaError::malformed(FMT, "empty STAP-A"));
    }
    Ok(units)
}

impl Depacketizer for H264Depacketizer {
    fn push(&mut self, payload: &[u8], frame: &mut Vec<u8>) -> Result<PayloadInfo> {
        let mut nals = Vec::new();
        let info = self.push_nals(payload, &mut nals)?;
        for nal in &nals {
            frame.extend_from_slice(&[0, 0, 0, 1]);
            frame.extend_from_slice(nal);
        }
        Ok(info)
    }

    fn is_frame_start(&self, payload: &[u8]) -> bool {
        let Some(&header) = payload.first() else {
            return false;
        };
        match header & 0x1f {
            1..=23 => nal_starts_picture(header, payload.get(1).copied()),
            nal_type::STAP_A => parse_stap_a(payload)
                .map(|u| nal_starts_picture(u[0][0], u[0].get(1).copied()))
                .unwrap_or(false),
            nal_type::FU_A => {
                payload.len() >= 3
                    && payload[1] & 0x80 != 0
                    && nal_starts_picture(payload[1] & 0x1f, payload.get(2).copied())
            }
            _ => false,
        }
    }

    fn is_pending(&self) -> bool {
        self.fu_open
    }

    fn reset(&mut self) {
        self.fu.clear();
        self.fu_open = false;
    }
}

/// Profile, constraint flags and level of an SPS (`profile-level-id` in SDP terms).
pub fn sps_profile_level(sps: &[u8]) -> Option<(u8, u8, u8)> {
    if sps.len() < 4 || nal_unit_type(sps) != nal_type::SPS {
        return None;
    }
    Some((sps[1], sps[2], sps[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(typ: u8, len: usize, fill: u8) -> Vec<u8> {
        let mut n = vec![0x60 | typ];
        n.extend(std::iter::repeat_n(fill, len - 1));
        n
    }

    fn depacketize_all(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut d = H264Depacketizer::new();
        let mut nals = Vec::new();
        for p in payloads {
            d.push_nals(p, &mut nals).unwrap();
        }
        nals
    }

    #[test]
    fn annexb_split_and_avcc_round_trip() {
        let stream = [
            &[0u8, 0, 0, 1, 0x67, 1, 2][..],
            &[0, 0, 1, 0x68, 3][..],
            &[0, 0, 0, 1, 0x65, 4, 5, 6, 0][..],
        ]
        .concat();
        let nals = split_annexb(&stream);
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5, 6][..]]
        );
        let avcc = annexb_to_avcc(&stream);
        assert_eq!(&avcc[..7], &[0, 0, 0, 3, 0x67, 1, 2]);
        let back = avcc_to_annexb(&avcc, 4).unwrap();
        assert_eq!(split_annexb(&back), nals);
        assert!(split_avcc(&[0, 0, 0, 9, 1], 4).is_err());
        assert!(split_avcc(&[0, 0], 4).is_err());
    }

    #[test]
    fn decoder_config_record_round_trip() {
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xaa];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let rec = AvcDecoderConfig::from_sps_pps(&sps, &pps).unwrap();
        let bytes = rec.to_bytes();
        assert_eq!(&bytes[..6], &[1, 0x42, 0xc0, 0x1f, 0xff, 0xe1]);
        assert_eq!(AvcDecoderConfig::parse(&bytes).unwrap(), rec);
        assert!(AvcDecoderConfig::parse(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn small_nals_aggregate_into_stap_a() {
        let (sps, pps, idr) = (nal(7, 10, 1), nal(8, 4, 2), nal(5, 50, 3));
        let p = H264Packetizer::new(1200).unwrap();
        let out = p.packetize(&[&sps, &pps, &idr]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][0] & 0x1f, nal_type::STAP_A);
        assert_eq!(depacketize_all(&out), vec![sps, pps, idr]);
    }

    #[test]
    fn big_nal_fragments_within_mtu() {
        let big = nal(5, 5000, 9);
        let small = nal(1, 100, 4);
        let p = H264Packetizer::new(1000).unwrap();
        let out = p.packetize(&[&big, &small]);
        assert!(out.iter().all(|x| x.len() <= 1000));
        assert_eq!(out.len(), 7);
        assert_eq!(out[0][1] & 0xc0, 0x80);
        assert_eq!(out[5][1] & 0xc0, 0x40);
        assert_eq!(out[6], small);
        assert_eq!(depacketize_all(&out), vec![big, small]);
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        let mut d = H264Depacketizer::new();
        let mut nals = Vec::new();
        let cases: &[&[u8]] = &[
            &[],
            &[0x80 | 1, 2],         // forbidden bit
            &[0x18],                // empty STAP-A
            &[0x18, 0, 5, 0x65],    // STAP-A length beyond payload
            &[0x18, 0, 0],          // zero-length unit
            &[0x18, 0, 1, 0x65, 0], // truncated length
            &[0x1c, 0x85],          // FU-A without data
            &[0x1c, 0xc5, 1],       // start and end
            &[0x1c, 0x05, 1],       // continuation without start
            &[0x1c, 0x98, 1],       // FU-A of a STAP-A
            &[0x19, 0, 0],          // STAP-B
            &[0x1e, 1],             // reserved
        ];
        for case in cases {
            assert!(d.push_nals(case, &mut nals).is_err(), "{case:?}");
        }
        assert!(nals.is_empty());
    }

    #[test]
    fn frame_start_detection() {
        let d = H264Depacketizer::new();
        assert!(d.is_frame_start(&[0x65, 0x88]));
        assert!(!d.is_frame_start(&[0x41, 0x08]));
        assert!(d.is_frame_start(&[0x7c, 0x85, 0x88]));
        assert!(!d.is_frame_start(&[0x7c, 0x05, 0x88]));
        assert!(d.is_frame_start(&[0x78, 0, 2, 0x67, 0x42]));
    }
}
