//! The part of SDP handling that str0m leaves to the application: reading an offer closely enough
//! to choose one codec per m-line, and narrowing the offer (directions, rejected m-lines) before
//! str0m answers it. Pure text in, text out; no allocation beyond the result, never a panic.

use crate::types::{Codec, Direction, VideoCodec};

/// One `m=` section of an offer, as far as codec choice and narrowing need it.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub kind: SectionKind,
    pub mid: Option<String>,
    pub formats: Vec<Format>,
    /// Direction as the offerer states it (its own point of view).
    pub direction: Direction,
    /// `m=... 0 ...`: rejected or bundle-only in the offer.
    pub port_zero: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SectionKind {
    Audio,
    Video,
    Other,
}

/// One payload format of an m-line: `a=rtpmap` (or a static payload type) and `a=fmtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format {
    pub pt: u8,
    /// Lowercase encoding name (`opus`, `h264`, `telephone-event`, `rtx`, ...); empty if unknown.
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    pub fmtp: String,
}

impl Format {
    fn fmtp_value(&self, key: &str) -> Option<&str> {
        self.fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }
}

/// What an offer contains, section by section.
#[derive(Debug, Clone)]
pub(crate) struct OfferScan {
    pub sections: Vec<Section>,
}

/// Most payload formats we read per m-line, and most m-lines per offer: a browser offer has tens
/// of formats and a handful of m-lines; anything far beyond is not an offer we answer.
const MAX_FORMATS: usize = 128;
const MAX_SECTIONS: usize = 16;

impl OfferScan {
    pub(crate) fn parse(sdp: &str) -> Result<OfferScan, String> {
        let mut sections: Vec<Section> = Vec::new();
        let mut session_direction = Direction::SendRecv;
        let mut section_direction: Option<Direction> = None;

        for line in sdp.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("m=") {
                if let Some(last) = sections.last_mut() {
                    last.direction = section_direction.take().unwrap_or(session_direction);
                }
                if sections.len() >= MAX_SECTIONS {
                    return Err(format!("more than {MAX_SECTIONS} m-lines"));
                }
                sections.push(parse_m_line(m)?);
                continue;
            }
            let Some(attr) = line.strip_prefix("a=") else {
                continue;
            };
            let dir = match attr {
                "sendrecv" => Some(Direction::SendRecv),
                "sendonly" => Some(Direction::SendOnly),
                "recvonly" => Some(Direction::RecvOnly),
                "inactive" => Some(Direction::Inactive),
                _ => None,
            };
            let Some(section) = sections.last_mut() else {
                if let Some(d) = dir {
                    session_direction = d;
                }
                continue;
            };
            if let Some(d) = dir {
                section_direction = Some(d);
            } else if let Some(v) = attr.strip_prefix("mid:") {
                section.mid = Some(v.trim().to_string());
            } else if let Some(v) = attr.strip_prefix("rtpmap:") {
                parse_rtpmap(section, v);
            } else if let Some(v) = attr.strip_prefix("fmtp:") {
                parse_fmtp(section, v);
            }
        }
        if let Some(last) = sections.last_mut() {
            last.direction = section_direction.take().unwrap_or(session_direction);
        }
        if sections.is_empty() {
            return Err("no m-lines".into());
        }
        Ok(OfferScan { sections })
    }
}

fn parse_m_line(m: &str) -> Result<Section, String> {
    let mut parts = m.split_whitespace();
    let kind = match parts.next() {
        Some("audio") => SectionKind::Audio,
        Some("video") => SectionKind::Video,
        Some(_) => SectionKind::Other,
        None => return Err("empty m-line".into()),
    };
    let port = parts.next().ok_or("m-line without port")?;
    let port_zero = port.split('/').next() == Some("0");
    let _proto = parts.next().ok_or("m-line without protocol")?;
    let mut formats = Vec::new();
    for f in parts {
        let Ok(pt) = f.parse::<u8>() else {
            continue; // e.g. webrtc-datachannel
        };
        if pt > 127 || formats.len() >= MAX_FORMATS {
            continue;
        }
        let (encoding, clock_rate) = match pt {
            0 => ("pcmu", 8000),
            8 => ("pcma", 8000),
            9 => ("g722", 8000),
            13 => ("cn", 8000),
            _ => ("", 0),
        };
        formats.push(Format {
            pt,
            encoding: encoding.to_string(),
            clock_rate,
            channels: None,
            fmtp: String::new(),
        });
    }
    Ok(Section {
        kind,
        mid: None,
        formats,
        direction: Direction::SendRecv,
        port_zero,
    })
}

fn parse_pt(s: &str) -> Option<(u8, &str)> {
    let (pt, rest) = s.split_once(' ').unwrap_or((s, ""));
    let pt = pt.trim().parse::<u8>().ok()?;
    Some((pt, rest.trim()))
}

fn parse_rtpmap(section: &mut Section, v: &str) {
    let Some((pt, rest)) = parse_pt(v) else {
        return;
    };
    let Some(f) = section.formats.iter_mut().find(|f| f.pt == pt) else {
        return;
    };
    let mut it = rest.split('/');
    f.encoding = it.next().unwrap_or("").trim().to_ascii_lowercase();
    f.clock_rate = it.next().and_then(|c| c.trim().parse().ok()).unwrap_or(0);
    f.channels = it.next().and_then(|c| c.trim().parse().ok());
}

fn parse_fmtp(section: &mut Section, v: &str) {
    let Some((pt, rest)) = parse_pt(v) else {
        return;
    };
    if let Some(f) = section.formats.iter_mut().find(|f| f.pt == pt) {
        f.fmtp = rest.to_string();
    }
}

/// The audio format we answer with (one codec, plus telephone-event at its clock rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AudioChoice {
    pub codec: Codec,
    pub pt: u8,
    /// Channel count as offered (`opus/48000/2`: 2; `PCMU/8000`: none).
    pub channels: Option<u8>,
    pub telephone_event: Option<u8>,
}

/// The video format we answer with (one codec, plus its RTX payload type if offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VideoChoice {
    pub codec: Codec,
    pub pt: u8,
    pub rtx: Option<u8>,
    /// H.264 only: the offered profile-level-id we accept.
    pub profile_level_id: Option<u32>,
}

/// Opus whenever it is offered; PCMU/PCMA only when nothing better is (the offerer's order
/// decides between those two).
pub(crate) fn choose_audio(section: &Section) -> Option<AudioChoice> {
    let opus = section
        .formats
        .iter()
        .find(|f| f.encoding == "opus" && f.clock_rate == 48000);
    let (codec, f) = match opus {
        Some(f) => (Codec::Opus, f),
        None => {
            let f = section
                .formats
                .iter()
                .find(|f| (f.encoding == "pcmu" || f.encoding == "pcma") && f.clock_rate == 8000)?;
            let codec = if f.encoding == "pcmu" {
                Codec::Pcmu
            } else {
                Codec::Pcma
            };
            (codec, f)
        }
    };
    let telephone_event = section
        .formats
        .iter()
        .find(|t| t.encoding == "telephone-event" && t.clock_rate == f.clock_rate)
        .map(|t| t.pt);
    Some(AudioChoice {
        codec,
        pt: f.pt,
        channels: f.channels,
        telephone_event,
    })
}

/// Profile-level-id we prefer: constrained baseline, level 3.1.
pub(crate) const H264_PREFERRED_PLID: u32 = 0x42e01f;

/// The first codec of `prefs` that the section offers. H.264 needs packetization-mode=1; among
/// those, profile-level-id 42e01f is preferred, then any constrained baseline, then baseline.
pub(crate) fn choose_video(section: &Section, prefs: &[VideoCodec]) -> Option<VideoChoice> {
    for pref in prefs {
        let chosen = match pref {
            VideoCodec::Vp8 => section
                .formats
                .iter()
                .find(|f| f.encoding == "vp8" && f.clock_rate == 90000)
                .map(|f| (Codec::Vp8, f, None)),
            VideoCodec::H264 => choose_h264(section).map(|(f, plid)| (Codec::H264, f, Some(plid))),
        };
        if let Some((codec, f, profile_level_id)) = chosen {
            let rtx = section
                .formats
                .iter()
                .find(|r| {
                    r.encoding == "rtx"
                        && r.fmtp_value("apt").and_then(|v| v.parse::<u8>().ok()) == Some(f.pt)
                })
                .map(|r| r.pt);
            return Some(VideoChoice {
                codec,
                pt: f.pt,
                rtx,
                profile_level_id,
            });
        }
    }
    None
}

fn choose_h264(section: &Section) -> Option<(&Format, u32)> {
    let candidates = section.formats.iter().filter_map(|f| {
        if f.encoding != "h264" || f.clock_rate != 90000 {
            return None;
        }
        if f.fmtp_value("packetization-mode") != Some("1") {
            return None;
        }
        // RFC 6184: profile-level-id defaults to 420010 (baseline, level 1) when absent.
        let plid = match f.fmtp_value("profile-level-id") {
            Some(v) if v.len() == 6 => u32::from_str_radix(v, 16).ok()?,
            Some(_) => return None,
            None => 0x42_00_0a,
        };
        let profile_idc = plid >> 16;
        let iop = (plid >> 8) & 0xff;
        let rank = if plid == H264_PREFERRED_PLID {
            0
        } else if profile_idc == 0x42 && iop & 0x40 != 0 {
            1 // constrained baseline (constraint_set1)
        } else if profile_idc == 0x42 {
            2 // baseline
        } else {
            return None;
        };
        Some((rank, f, plid))
    });
    // min_by_key keeps the first of equal ranks: the offerer's order among equals.
    candidates
        .min_by_key(|(rank, _, _)| *rank)
        .map(|(_, f, plid)| (f, plid))
}

/// What to do with one offered m-line before str0m sees the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SectionPlan {
    /// Keep, with the offerer's direction narrowed to this (offerer's point of view).
    Keep(Direction),
    /// Reject: port 0, out of the BUNDLE group.
    Reject,
}

/// Narrow the offerer's direction to what we want (`want` is from our point of view): the
/// offerer may send only if we want to receive, and receive only if we want to send.
pub(crate) fn narrow_direction(offered: Direction, want: Direction) -> Direction {
    Direction::from_flags(
        offered.sends() && want.receives(),
        offered.receives() && want.sends(),
    )
}

/// Rewrite `sdp` by `plans` (one per m-line, in order): explicit direction attributes, rejected
/// m-lines with port 0 and without their mid in `a=group:BUNDLE`.
pub(crate) fn rewrite_offer(sdp: &str, scan: &OfferScan, plans: &[SectionPlan]) -> String {
    let rejected_mids = rejected_mids(scan, plans);

    let mut out = String::with_capacity(sdp.len() + 64);
    let mut section: Option<usize> = None;
    let push_dir = |out: &mut String, section: Option<usize>| {
        let dir = match section.and_then(|i| plans.get(i)) {
            Some(SectionPlan::Keep(d)) => *d,
            Some(SectionPlan::Reject) => Direction::Inactive,
            None => return,
        };
        out.push_str("a=");
        out.push_str(dir.sdp_attr());
        out.push_str("\r\n");
    };

    for line in sdp.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(m) = line.strip_prefix("m=") {
            push_dir(&mut out, section);
            let idx = section.map_or(0, |i| i + 1);
            section = Some(idx);
            if plans.get(idx) == Some(&SectionPlan::Reject) {
                let mut parts: Vec<&str> = m.split_whitespace().collect();
                if parts.len() > 1 {
                    parts[1] = "0";
                }
                out.push_str("m=");
                out.push_str(&parts.join(" "));
                out.push_str("\r\n");
                continue;
            }
        } else if matches!(
            line,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            // Replaced by one explicit attribute per kept section (session-level ones too: an
            // explicit media-level attribute wins anyway).
            continue;
        } else if let Some(g) = line.strip_prefix("a=group:BUNDLE") {
            out.push_str("a=group:BUNDLE");
            for mid in g.split_whitespace() {
                if !rejected_mids.contains(&mid) {
                    out.push(' ');
                    out.push_str(mid);
                }
            }
            out.push_str("\r\n");
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    push_dir(&mut out, section);
    out
}

/// Make sure the answer rejects what we rejected in the offer (str0m answers an
/// `m=application` line even with port 0): port 0 and out of `a=group:BUNDLE` for every
/// section whose mid is in `rejected`.
pub(crate) fn reject_in_answer(answer: &str, rejected: &[&str]) -> String {
    if rejected.is_empty() {
        return answer.to_string();
    }
    // Mid of each m-section, in order.
    let mut mids: Vec<Option<&str>> = Vec::new();
    for line in answer.lines() {
        if line.starts_with("m=") {
            mids.push(None);
        } else if let (Some(m), Some(last)) =
            (line.trim_end().strip_prefix("a=mid:"), mids.last_mut())
        {
            *last = Some(m);
        }
    }
    let mut out = String::with_capacity(answer.len());
    let mut section: Option<usize> = None;
    for line in answer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let idx = section.map_or(0, |i| i + 1);
            section = Some(idx);
            let reject = mids
                .get(idx)
                .copied()
                .flatten()
                .is_some_and(|mid| rejected.contains(&mid));
            if reject {
                let mut parts: Vec<&str> = m.split_whitespace().collect();
                if parts.len() > 1 {
                    parts[1] = "0";
                }
                out.push_str("m=");
                out.push_str(&parts.join(" "));
                out.push_str("\r\n");
                continue;
            }
        } else if let Some(g) = line.strip_prefix("a=group:BUNDLE") {
            out.push_str("a=group:BUNDLE");
            for mid in g.split_whitespace().filter(|m| !rejected.contains(m)) {
                out.push(' ');
                out.push_str(mid);
            }
            out.push_str("\r\n");
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// Mids of the sections `plans` rejects.
pub(crate) fn rejected_mids<'a>(scan: &'a OfferScan, plans: &[SectionPlan]) -> Vec<&'a str> {
    scan.sections
        .iter()
        .zip(plans)
        .filter(|(_, p)| **p == SectionPlan::Reject)
        .filter_map(|(s, _)| s.mid.as_deref())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIREFOX_VIDEO: &str = "v=0\r\n\
o=mozilla...THIS_IS_SDPARTA-99.0 1 0 IN IP4 0.0.0.0\r\n\
s=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101\r\n\
c=IN IP4 0.0.0.0\r\n\
a=sendrecv\r\n\
a=mid:0\r\n\
a=rtpmap:109 opus/48000/2\r\n\
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\r\n\
a=rtpmap:9 G722/8000/1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98\r\n\
c=IN IP4 0.0.0.0\r\n\
a=recvonly\r\n\
a=mid:1\r\n\
a=rtpmap:120 VP8/90000\r\n\
a=rtpmap:124 rtx/90000\r\n\
a=fmtp:124 apt=120\r\n\
a=rtpmap:121 VP9/90000\r\n\
a=rtpmap:125 rtx/90000\r\n\
a=fmtp:125 apt=121\r\n\
a=rtpmap:126 H264/90000\r\n\
a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r\n\
a=rtpmap:127 rtx/90000\r\n\
a=fmtp:127 apt=126\r\n\
a=rtpmap:97 H264/90000\r\n\
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1\r\n\
a=rtpmap:98 rtx/90000\r\n\
a=fmtp:98 apt=97\r\n";

    #[test]
    fn scan_reads_sections_formats_and_directions() {
        let scan = OfferScan::parse(FIREFOX_VIDEO).unwrap();
        assert_eq!(scan.sections.len(), 2);
        let a = &scan.sections[0];
        assert_eq!(a.kind, SectionKind::Audio);
        assert_eq!(a.mid.as_deref(), Some("0"));
        assert_eq!(a.direction, Direction::SendRecv);
        assert_eq!(a.formats.len(), 5);
        assert_eq!(a.formats[0].encoding, "opus");
        assert_eq!(a.formats[0].channels, Some(2));
        let v = &scan.sections[1];
        assert_eq!(v.direction, Direction::RecvOnly);
        assert_eq!(v.formats.len(), 8);
    }

    #[test]
    fn audio_prefers_opus_then_g711_in_offer_order() {
        let scan = OfferScan::parse(FIREFOX_VIDEO).unwrap();
        let c = choose_audio(&scan.sections[0]).unwrap();
        assert_eq!((c.codec, c.pt, c.telephone_event), (Codec::Opus, 109, None));

        let pcma_first =
            "v=0\r\nm=audio 9 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let scan = OfferScan::parse(pcma_first).unwrap();
        let c = choose_audio(&scan.sections[0]).unwrap();
        assert_eq!(
            (c.codec, c.pt, c.telephone_event),
            (Codec::Pcma, 8, Some(101))
        );

        let g729 = "v=0\r\nm=audio 9 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let scan = OfferScan::parse(g729).unwrap();
        assert_eq!(choose_audio(&scan.sections[0]), None);
    }

    #[test]
    fn video_preference_and_h264_profile() {
        let scan = OfferScan::parse(FIREFOX_VIDEO).unwrap();
        let v = &scan.sections[1];
        let h = choose_video(v, &[VideoCodec::H264, VideoCodec::Vp8]).unwrap();
        assert_eq!(
            (h.codec, h.pt, h.rtx, h.profile_level_id),
            (Codec::H264, 126, Some(127), Some(0x42e01f))
        );
        let p = choose_video(v, &[VideoCodec::Vp8, VideoCodec::H264]).unwrap();
        assert_eq!((p.codec, p.pt, p.rtx), (Codec::Vp8, 120, Some(124)));

        // Only packetization-mode=0 and High profile H.264: no H.264 for us.
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 97 100\r\n\
a=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42e01f\r\n\
a=rtpmap:100 H264/90000\r\na=fmtp:100 profile-level-id=640c1f;packetization-mode=1\r\n";
        let scan = OfferScan::parse(sdp).unwrap();
        assert_eq!(choose_video(&scan.sections[0], &[VideoCodec::H264]), None);

        // Chrome lists baseline 42001f before constrained baseline 42e01f: 42e01f wins.
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 103 108 112\r\n\
a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:112 H264/90000\r\na=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42c01f\r\n";
        let scan = OfferScan::parse(sdp).unwrap();
        let h = choose_video(&scan.sections[0], &[VideoCodec::H264]).unwrap();
        assert_eq!((h.pt, h.profile_level_id), (108, Some(0x42e01f)));
    }

    #[test]
    fn narrowing_directions() {
        use Direction::*;
        assert_eq!(narrow_direction(SendRecv, SendRecv), SendRecv);
        assert_eq!(narrow_direction(RecvOnly, SendRecv), RecvOnly);
        assert_eq!(narrow_direction(SendOnly, SendRecv), SendOnly);
        assert_eq!(narrow_direction(SendRecv, SendOnly), RecvOnly);
        assert_eq!(narrow_direction(SendRecv, RecvOnly), SendOnly);
        assert_eq!(narrow_direction(RecvOnly, RecvOnly), Inactive);
        assert_eq!(narrow_direction(Inactive, SendRecv), Inactive);
    }

    #[test]
    fn rewrite_sets_directions_and_rejects() {
        let scan = OfferScan::parse(FIREFOX_VIDEO).unwrap();
        let out = rewrite_offer(
            FIREFOX_VIDEO,
            &scan,
            &[SectionPlan::Keep(Direction::SendOnly), SectionPlan::Reject],
        );
        assert!(out.contains("a=group:BUNDLE 0\r\n"), "{out}");
        assert!(out.contains("m=video 0 UDP/TLS/RTP/SAVPF"), "{out}");
        assert_eq!(out.matches("a=sendonly").count(), 1, "{out}");
        assert_eq!(out.matches("a=inactive").count(), 1, "{out}");
        assert!(!out.contains("a=sendrecv"), "{out}");
        assert!(!out.contains("a=recvonly"), "{out}");
        let again = OfferScan::parse(&out).unwrap();
        assert_eq!(again.sections[0].direction, Direction::SendOnly);
        assert!(again.sections[1].port_zero);
    }

    #[test]
    fn scan_never_panics_on_junk() {
        for s in [
            "",
            "m=",
            "m=audio",
            "m=audio 9",
            "v=0\r\nm=audio 9 X 300 abc 12\r\na=rtpmap:\r\na=rtpmap:12\r\na=fmtp:x y\r\n",
            "a=sendonly\r\nm=video 9 P 96\r\na=rtpmap:96 VP8/abc/\r\n",
        ] {
            let _ = OfferScan::parse(s);
        }
        assert!(OfferScan::parse("v=0\r\n").is_err());
    }
}
