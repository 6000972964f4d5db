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
        128..=191 => (buf.len() >= SRTCP_MIN).then_some(Kind::Rtp),
        _ => None,
    }
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
        assert_eq!(classify(&[0x80; 40]), Some(Kind::Rtp));
        assert_eq!(classify(&[0x80; 12]), None);
        assert_eq!(classify(&[100; 40]), None);
        assert_eq!(classify(&[0xff; 40]), None);
        assert_eq!(classify(&[0; 40]), None); // no magic cookie
    }
}
