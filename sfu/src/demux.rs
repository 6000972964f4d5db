//! First look at an incoming datagram: which protocol (RFC 7983 first-byte ranges), whether it
//! is long enough to be one, and for STUN binding requests the local ICE ufrag it is addressed
//! to. Pure functions over bytes; never a panic.

/// What a datagram claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Stun,
    Dtls,
    /// RTP or RTCP (told apart by str0m).
    Rtp,
}

const STUN_HEADER: usize = 20;
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// DTLS record header.
const DTLS_HEADER: usize = 13;
/// An RTCP header is 8 bytes; SRTCP adds at least a 4-byte index and a 10-byte tag. An SRTP
/// packet (12-byte header + 10-byte tag) is longer still.
const SRTCP_MIN: usize = 8 + 4 + 10;

/// Classify a datagram, or `None` if it cannot be any protocol we speak.
pub(crate) fn classify(buf: &[u8]) -> Option<Kind> {
    let first = *buf.first()?;
    match first {
        0..=3 => {
            if buf.len() < STUN_HEADER || buf[4..8] != STUN_MAGIC {
                return None;
            }
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            (len.is_multiple_of(4) && STUN_HEADER + len == buf.len()).then_some(Kind::Stun)
        }
        20..=63 => (buf.len() >= DTLS_HEADER).then_some(Kind::Dtls),
        128..=191 => (buf.len() >= SRTCP_MIN && rtp_structure_ok(buf)).then_some(Kind::Rtp),
        _ => None,
    }
}

/// The header of an SRTP/SRTCP packet fits in the datagram (the payload stays encrypted).
fn rtp_structure_ok(buf: &[u8]) -> bool {
    let pt = buf[1] & 0x7f;
    if (64..=95).contains(&pt) {
        // RTCP (RFC 5761): the first packet of the compound fits.
        let words = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        return (words + 1) * 4 <= buf.len();
    }
    let csrc = (buf[0] & 0x0f) as usize;
    let mut header = 12 + 4 * csrc;
    if buf[0] & 0x10 != 0 {
        let Some(ext) = buf.get(header..header + 4) else {
            return false;
        };
        header += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    header <= buf.len()
}

/// For a STUN binding request, the recipient's (our) ufrag from `USERNAME` = `ours:theirs`.
pub(crate) fn binding_request_ufrag(buf: &[u8]) -> Option<&str> {
    const BINDING_REQUEST: u16 = 0x0001;
    const USERNAME: u16 = 0x0006;
    if classify(buf) != Some(Kind::Stun) {
        return None;
    }
    if u16::from_be_bytes([buf[0], buf[1]]) != BINDING_REQUEST {
        return None;
    }
    let mut rest = buf.get(STUN_HEADER..)?;
    while rest.len() >= 4 {
        let typ = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len)?;
        if typ == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (ours, _theirs) = username.split_once(':')?;
            return Some(ours);
        }
        let padded = (len + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        // PRIORITY first, to walk past an attribute.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while !attrs.len().is_multiple_of(4) {
            attrs.push(0);
        }
        let mut b = vec![0x00, 0x01];
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(&STUN_MAGIC);
        b.extend_from_slice(&[7; 12]);
        b.extend_from_slice(&attrs);
        b
    }

    #[test]
    fn ufrag_of_binding_request() {
        let b = binding_request(b"ourfrag:theirfrag");
        assert_eq!(classify(&b), Some(Kind::Stun));
        assert_eq!(binding_request_ufrag(&b), Some("ourfrag"));
        // Truncated anywhere: no ufrag, no panic.
        for n in 0..b.len() {
            assert_eq!(binding_request_ufrag(&b[..n]), None);
        }
        assert_eq!(binding_request_ufrag(&binding_request(b"nocolon")), None);
        assert_eq!(
            binding_request_ufrag(&binding_request(&[0xff, b':', b'a'])),
            None
        );
    }

    #[test]
    fn classify_ranges_and_lengths() {
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&[22; 13]), Some(Kind::Dtls));
        assert_eq!(classify(&[22; 12]), None);
        let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        rtp.extend_from_slice(&[0; 30]);
        assert_eq!(classify(&rtp), Some(Kind::Rtp));
        rtp[0] = 0x8f; // 15 CSRCs do not fit
        assert_eq!(classify(&rtp), None);
        rtp[0] = 0x90; // extension header claiming 0xffff words
        rtp[12..16].copy_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
        assert_eq!(classify(&rtp), None);
        let mut rtcp = vec![0x80, 200, 0, 6];
        rtcp.extend_from_slice(&[0; 28]);
        assert_eq!(classify(&rtcp), Some(Kind::Rtp));
        rtcp[3] = 60; // longer than the datagram
        assert_eq!(classify(&rtcp), None);
        assert_eq!(classify(&[0x80; 12]), None);
        assert_eq!(classify(&[100; 40]), None);
        assert_eq!(classify(&[0xff; 40]), None);
        assert_eq!(classify(&[0; 40]), None); // no magic cookie
    }
}
