//! The names JsSIP uses (contract section 4): the SIP user of a comet user, and the number of a
//! conference.

use crate::names::is_conference_name;
use crate::store::{DevId, UserId};

/// The SIP user name of a comet user: dev_id zero-padded to 6 digits, then user_id
/// (dev 0, user 123 → `000000123`).
pub fn sip_user(dev: DevId, user: UserId) -> String {
    format!("{dev:06}{user}")
}

/// Reads a SIP user name back: the first 6 digits are the dev_id, the rest the user_id.
/// Only digits; at least 7 of them. (A dev_id above 999999 cannot be told apart: the JS pads but
/// never separates, exactly as CppComet's `%6d%d`.)
pub fn parse_sip_user(s: &str) -> Option<(DevId, UserId)> {
    if s.len() < 7 || s.len() > 6 + 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dev = s[..6].parse().ok()?;
    let user = s[6..].parse().ok()?;
    Some((dev, user))
}

/// A conference number: `<dev_id>*<name>*<profile>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceNumber {
    pub dev: DevId,
    pub name: String,
    pub profile: String,
}

/// Parses the user part of an INVITE target against
/// `^([0-9]{1,9}\*[0-9A-Za-z_-]+)\*([0-9A-Za-z_-]+)$`, with names of at most 64 characters
/// (the longest conference name CometQL stores).
pub fn parse_conference_number(s: &str) -> Option<ConferenceNumber> {
    let mut parts = s.split('*');
    let (Some(dev), Some(name), Some(profile), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if dev.is_empty() || dev.len() > 9 || !dev.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !is_conference_name(name) || !is_conference_name(profile) {
        return None;
    }
    Some(ConferenceNumber {
        dev: dev.parse().ok()?,
        name: name.to_string(),
        profile: profile.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(sip_user(0, 123), "000000123");
        assert_eq!(sip_user(42, 7), "0000427");
        assert_eq!(parse_sip_user("000000123"), Some((0, 123)));
        assert_eq!(parse_sip_user("0000427"), Some((42, 7)));
        assert_eq!(parse_sip_user("000000"), None);
        assert_eq!(parse_sip_user("00000a1"), None);
        assert_eq!(parse_sip_user("+000001"), None);
        assert_eq!(parse_sip_user(&"9".repeat(30)), None);
        for (d, u) in [(0, 1), (999_999, 123_456_789), (5, 0)] {
            assert_eq!(parse_sip_user(&sip_user(d, u)), Some((d, u)));
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(
            parse_conference_number("0*101*video"),
            Some(ConferenceNumber {
                dev: 0,
                name: "101".into(),
                profile: "video".into()
            })
        );
        assert!(parse_conference_number("123456789*room-1_A*audio").is_some());
        for bad in [
            "",
            "0*101",
            "0**video",
            "*101*video",
            "1234567890*101*video",
            "0*1 1*video",
            "0*101*video*x",
            "a*101*video",
            "0*101*",
        ] {
            assert_eq!(parse_conference_number(bad), None, "{bad}");
        }
    }
}
