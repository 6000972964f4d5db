//! The comet WebSocket URL, parsed by position as CppComet did:
//! `/ws/sesion=<key>&myid=<user>&devid=<dev>&v=<version>&uuid=<uuid>&api=js`
//! (also under `/comet-server/ws/`, with any number of leading slashes).

/// What the URL says about the connecting browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    /// The users_auth hash or an HS256 JWT (empty for anonymous connections).
    pub session: String,
    /// 0 for anonymous connections.
    pub user_id: i64,
    pub dev_id: i64,
    /// Client API version, e.g. (4, 8) for `v=4.08`.
    pub version: (u32, u32),
    pub uuid: String,
}

/// Why a URL was refused; each maps to the old server's error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// 401: no `sesion=` part.
    NoSession,
    /// 401: no user id part.
    NoUserId,
    /// 406: no dev id part.
    NoDevId,
    /// 418: no version.
    NoVersion,
}

impl UrlError {
    pub fn code(self) -> u16 {
        match self {
            UrlError::NoSession | UrlError::NoUserId => 401,
            UrlError::NoDevId => 406,
            UrlError::NoVersion => 418,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            UrlError::NoSession => "Error code 401(Invalid request, session ID not found)",
            UrlError::NoUserId => "Error code 401(Invalid request, the user ID can not be found)",
            UrlError::NoDevId => "Error code 406(Invalid request, no public key found [1])",
            UrlError::NoVersion => {
                "Error code 418(Invalid request Not assigned client api version)"
            }
        }
    }
}

/// Longest accepted session value (a hash or a JWT).
const MAX_SESSION: usize = 600;
/// Longest accepted uuid.
const MAX_UUID: usize = 32;

/// The part of a request path after `/ws/` or `/comet-server/ws/`, if the path is a comet
/// WebSocket path.
pub fn ws_tail(path: &str) -> Option<&str> {
    let p = path.trim_start_matches('/');
    p.strip_prefix("ws/")
        .or_else(|| p.strip_prefix("comet-server/ws/"))
        .or_else(|| (p == "ws" || p == "comet-server/ws").then_some(""))
}

fn leading_int(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || end > 18 {
        return None;
    }
    let v: i64 = digits[..end].parse().ok()?;
    Some(if neg { -v } else { v })
}

fn value(part: &str) -> &str {
    part.split_once('=').map_or(part, |(_, v)| v)
}

/// Parses the URL tail (also accepts it behind a `?`).
pub fn parse(tail: &str) -> Result<ConnectParams, UrlError> {
    let tail = tail.strip_prefix('?').unwrap_or(tail);
    let parts: Vec<&str> = tail.split('&').collect();
    let first = parts.first().copied().unwrap_or("");
    if !first.contains('=') {
        return Err(UrlError::NoSession);
    }
    let mut session = value(first).to_string();
    super::truncate_to_char(&mut session, MAX_SESSION);
    let user_id = parts
        .get(1)
        .and_then(|p| leading_int(value(p)))
        .ok_or(UrlError::NoUserId)?
        .max(0);
    let dev_id = parts
        .get(2)
        .and_then(|p| leading_int(value(p)))
        .ok_or(UrlError::NoDevId)?;
    let dev_id = if (0..=crate::cometql::engine::MAX_DEV_ID).contains(&dev_id) {
        dev_id
    } else {
        0
    };
    let version = parts
        .get(3)
        .map(|p| value(p))
        .and_then(|v| {
            let (a, b) = v.split_once('.').unwrap_or((v, "0"));
            Some((a.trim().parse().ok()?, b.trim().parse().unwrap_or(0)))
        })
        .ok_or(UrlError::NoVersion)?;
    let uuid = parts
        .get(4)
        .and_then(|p| p.strip_prefix("uuid="))
        .map(|u| {
            u.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(MAX_UUID)
                .collect()
        })
        .unwrap_or_default();
    Ok(ConnectParams {
        session,
        user_id,
        dev_id,
        version,
        uuid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_js_url() {
        let t = ws_tail(
            "/ws/sesion=abc&myid=12&devid=3&v=4.08&uuid=0123456789abcdef0123456789abcdef&api=js",
        )
        .unwrap();
        assert_eq!(
            parse(t).unwrap(),
            ConnectParams {
                session: "abc".into(),
                user_id: 12,
                dev_id: 3,
                version: (4, 8),
                uuid: "0123456789abcdef0123456789abcdef".into(),
            }
        );
        assert!(ws_tail("//comet-server/ws/sesion=&myid=0&devid=0&v=4.08&uuid=x&api=js").is_some());
        assert!(ws_tail("/info").is_none());
    }

    #[test]
    fn anonymous_and_odd_values() {
        let p = parse("sesion=&myid=-5&devid=7&v=4.08&uuid=u&api=js").unwrap();
        assert_eq!(p.session, "");
        assert_eq!(p.user_id, 0, "negative ids are anonymous");
        let p = parse("sesion=x&myid=1&devid=99999999&v=4&uuid=u").unwrap();
        assert_eq!(p.dev_id, 0, "out-of-range dev ids fall back to 0");
        assert_eq!(p.version, (4, 0));
    }

    #[test]
    fn a_long_session_is_cut_at_a_character_boundary() {
        // The 600-byte limit falls inside the two-byte 'é' (it used to panic there).
        let session = format!("{}é{}", "a".repeat(599), "b".repeat(50));
        let p = parse(&format!("sesion={session}&myid=1&devid=0&v=4.08&uuid=u")).unwrap();
        assert_eq!(p.session, "a".repeat(599));
        let p = parse(&format!("sesion={}&myid=1&devid=0&v=4.08", "é".repeat(400))).unwrap();
        assert_eq!(p.session, "é".repeat(300));
    }

    #[test]
    fn missing_parts_are_errors() {
        assert_eq!(parse("").unwrap_err(), UrlError::NoSession);
        assert_eq!(parse("sesion=a").unwrap_err(), UrlError::NoUserId);
        assert_eq!(parse("sesion=a&myid=x").unwrap_err(), UrlError::NoUserId);
        assert_eq!(parse("sesion=a&myid=1").unwrap_err(), UrlError::NoDevId);
        assert_eq!(
            parse("sesion=a&myid=1&devid=0").unwrap_err(),
            UrlError::NoVersion
        );
        assert_eq!(
            parse("sesion=a&myid=1&devid=0&v=").unwrap_err(),
            UrlError::NoVersion
        );
    }
}
