//! Digest authentication (RFC 2617 / RFC 8760, MD5, `qop=auth`) as JsSIP answers it.
//!
//! Nonces are stateless: `base64url(timestamp ‖ random ‖ HMAC-SHA256(secret, realm ‖ timestamp ‖
//! random)[..16])`, so any connection (or, with a shared secret, any node) can verify them. A nonce
//! lives [`NONCE_TTL_SECS`]; an older one, or one this process did not sign, with an otherwise
//! correct digest, is answered with a fresh challenge with `stale=true` (JsSIP then retries once
//! without asking its user). The only state is the highest nonce-count accepted per nonce, kept
//! until the nonce expires, so a captured request cannot be replayed.
//!
//! Nothing here logs; [`DigestAuth`]'s `Debug` hides the secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use super::message::AuthParams;

/// How long a nonce is accepted (seconds).
pub const NONCE_TTL_SECS: u64 = 300;
/// Nonces tracked for replay protection at most; beyond that new nonces are answered as stale
/// until old ones expire.
const MAX_TRACKED: usize = 100_000;

const NONCE_BYTES: usize = 32;
const TAG_BYTES: usize = 16;

/// Digest credentials from an `Authorization` (or `Proxy-Authorization`) header, checked for
/// shape only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// 32 lower-case hex digits.
    pub response: String,
    pub cnonce: String,
    pub nc: u32,
    /// `nc` as written (8 hex digits): it enters the digest as text.
    pub nc_text: String,
}

impl Credentials {
    /// Reads a header value. `Err` says what is wrong (`not Digest`, a missing field, ...).
    pub fn parse(value: &str) -> Result<Credentials, &'static str> {
        let p = AuthParams::parse(value).ok_or("unreadable credentials")?;
        if !p.scheme.eq_ignore_ascii_case("Digest") {
            return Err("not Digest credentials");
        }
        let field = |name: &'static str| p.get(name).ok_or(name);
        if let Some(alg) = p.get("algorithm")
            && !alg.eq_ignore_ascii_case("MD5")
        {
            return Err("algorithm is not MD5");
        }
        if !field("qop")
            .map_err(|_| "qop=auth is required")?
            .eq_ignore_ascii_case("auth")
        {
            return Err("qop=auth is required");
        }
        let nc_text = field("nc").map_err(|_| "nc missing")?;
        if nc_text.len() != 8 || !nc_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("bad nc");
        }
        let nc = u32::from_str_radix(nc_text, 16).map_err(|_| "bad nc")?;
        let response = field("response").map_err(|_| "response missing")?;
        if response.len() != 32 || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("bad response");
        }
        let cnonce = field("cnonce").map_err(|_| "cnonce missing")?;
        if cnonce.is_empty() {
            return Err("empty cnonce");
        }
        Ok(Credentials {
            username: field("username")
                .map_err(|_| "username missing")?
                .to_string(),
            realm: field("realm").map_err(|_| "realm missing")?.to_string(),
            nonce: field("nonce").map_err(|_| "nonce missing")?.to_string(),
            uri: field("uri").map_err(|_| "uri missing")?.to_string(),
            response: response.to_ascii_lowercase(),
            cnonce: cnonce.to_string(),
            nc,
            nc_text: nc_text.to_string(),
        })
    }
}

/// The outcome of checking credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The digest is right and the nonce is fresh and not replayed.
    Ok,
    /// The digest is right but the nonce is expired, unknown or replayed: challenge again with
    /// `stale=true`.
    Stale,
    /// The digest is wrong (wrong password, or a user name that is not the one hashed).
    Wrong,
}

struct Seen {
    nc: u32,
    issued: u64,
    expires: u64,
}

/// The nonces in use and their last nonce counts (replay protection).
#[derive(Default)]
struct SeenNonces {
    map: HashMap<String, Seen>,
    /// Nonces issued at or before this (unix seconds) were forgotten to make room: they are
    /// stale (the client is challenged again, harmlessly), so forgetting never allows a
    /// replay.
    forgotten_until: Option<u64>,
    /// When expired entries are swept next (at most every 10 s, not per request).
    next_sweep: u64,
}

impl SeenNonces {
    /// Forgets the oldest-issued eighth of the entries.
    fn forget_oldest(&mut self) {
        let mut issued: Vec<u64> = self.map.values().map(|s| s.issued).collect();
        if issued.is_empty() {
            return;
        }
        let k = issued.len() / 8;
        let (_, cutoff, _) = issued.select_nth_unstable(k);
        let cutoff = *cutoff;
        self.map.retain(|_, s| s.issued > cutoff);
        self.forgotten_until = Some(self.forgotten_until.map_or(cutoff, |f| f.max(cutoff)));
    }
}

/// Issues and verifies digest challenges for one realm.
pub struct DigestAuth {
    realm: String,
    key: [u8; 32],
    ttl: u64,
    seen: Mutex<SeenNonces>,
    max_tracked: usize,
}

impl fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestAuth")
            .field("realm", &self.realm)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Lower-case hex MD5 of the parts joined by `:`.
pub fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `response` a client computes (RFC 2617 3.2.2.1, qop=auth).
#[allow(clippy::too_many_arguments)] // the RFC's eight inputs, in the RFC's order
pub fn digest_response(
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc_text: &str,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&[username, realm, password]);
    let ha2 = md5_hex(&[method, uri]);
    md5_hex(&[&ha1, nonce, nc_text, cnonce, "auth", &ha2])
}

impl DigestAuth {
    /// A verifier with a given secret (share it between nodes that must accept each other's
    /// nonces).
    pub fn new(realm: impl Into<String>, secret: [u8; 32]) -> Self {
        DigestAuth {
            realm: realm.into(),
            key: secret,
            ttl: NONCE_TTL_SECS,
            seen: Mutex::new(SeenNonces::default()),
            max_tracked: MAX_TRACKED,
        }
    }

    /// A verifier with a random secret: nonces die with the process.
    pub fn with_random_secret(realm: impl Into<String>) -> Self {
        Self::new(realm, rand::random())
    }

    /// Overrides the nonce lifetime (tests).
    pub fn with_ttl(mut self, secs: u64) -> Self {
        self.ttl = secs;
        self
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        mac.update(self.realm.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        mac
    }

    /// A fresh nonce stamped with `unix_now`.
    pub fn nonce(&self, unix_now: u64) -> String {
        let mut raw = [0u8; NONCE_BYTES];
        raw[..8].copy_from_slice(&unix_now.to_be_bytes());
        raw[8..16].copy_from_slice(&rand::random::<[u8; 8]>());
        let tag = self.mac(&raw[..16]).finalize().into_bytes();
        raw[16..].copy_from_slice(&tag[..TAG_BYTES]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The `WWW-Authenticate` / `Proxy-Authenticate` value. `algorithm=MD5` is written exactly
    /// so: JsSIP compares it case-sensitively.
    pub fn challenge(&self, unix_now: u64, stale: bool) -> String {
        let mut s = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"",
            self.realm,
            self.nonce(unix_now)
        );
        if stale {
            s.push_str(", stale=true");
        }
        s
    }

    /// The timestamp of a nonce this verifier signed, or `None`.
    fn nonce_time(&self, nonce: &str) -> Option<u64> {
        if nonce.len() != 43 {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()?;
        if raw.len() != NONCE_BYTES {
            return None;
        }
        self.mac(&raw[..16])
            .verify_truncated_left(&raw[16..])
            .ok()?;
        Some(u64::from_be_bytes(raw[..8].try_into().ok()?))
    }

    /// Checks credentials whose realm the caller has matched against [`Self::realm`] and whose
    /// `uri` against the Request-URI, given the user's password.
    pub fn verify(
        &self,
        creds: &Credentials,
        method: &str,
        password: &str,
        unix_now: u64,
    ) -> Verdict {
        let expected = digest_response(
            &creds.username,
            &self.realm,
            password,
            method,
            &creds.uri,
            &creds.nonce,
            &creds.nc_text,
            &creds.cnonce,
        );
        if !crate::secret::eq(expected.as_bytes(), creds.response.as_bytes()) {
            return Verdict::Wrong;
        }
        let Some(issued) = self.nonce_time(&creds.nonce) else {
            return Verdict::Stale;
        };
        if issued > unix_now + 60 || unix_now.saturating_sub(issued) > self.ttl {
            return Verdict::Stale;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.forgotten_until.is_some_and(|f| issued <= f) {
            return Verdict::Stale;
        }
        if seen.map.len() >= 1024 && unix_now >= seen.next_sweep {
            seen.map.retain(|_, s| s.expires >= unix_now);
            seen.next_sweep = unix_now + 10;
        }
        if seen.map.len() >= self.max_tracked && !seen.map.contains_key(&creds.nonce) {
            // Full (someone registering very often): make room by forgetting the oldest
            // nonces rather than refusing everyone's new ones.
            seen.forget_oldest();
            if seen.forgotten_until.is_some_and(|f| issued <= f) {
                return Verdict::Stale;
            }
        }
        match seen.map.get_mut(&creds.nonce) {
            Some(s) if creds.nc <= s.nc => Verdict::Stale,
            Some(s) => {
                s.nc = creds.nc;
                Verdict::Ok
            }
            None => {
                seen.map.insert(
                    creds.nonce.clone(),
                    Seen {
                        nc: creds.nc,
                        issued,
                        expires: issued + self.ttl,
                    },
                );
                Verdict::Ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(
        auth: &DigestAuth,
        now: u64,
        nonce: Option<String>,
        password: &str,
        nc: u32,
    ) -> Credentials {
        let nonce = nonce.unwrap_or_else(|| auth.nonce(now));
        let nc_text = format!("{nc:08x}");
        let response = digest_response(
            "000000123",
            auth.realm(),
            password,
            "REGISTER",
            "sip:h",
            &nonce,
            &nc_text,
            "cn",
        );
        let header = format!(
            "Digest algorithm=MD5, username=\"000000123\", realm=\"{}\", nonce=\"{nonce}\", \
             uri=\"sip:h\", response=\"{response}\", qop=auth, cnonce=\"cn\", nc={nc_text}",
            auth.realm()
        );
        Credentials::parse(&header).unwrap()
    }

    #[test]
    fn rfc2617_example_vector() {
        // RFC 2617 section 3.5 (HTTP, but the same arithmetic).
        let r = digest_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn good_wrong_stale_and_replayed() {
        let auth = DigestAuth::new("h", [7; 32]);
        let now = 1_700_000_000;
        let c = creds(&auth, now, None, "secret", 1);
        assert_eq!(auth.verify(&c, "REGISTER", "wrong", now), Verdict::Wrong);
        assert_eq!(auth.verify(&c, "INVITE", "secret", now), Verdict::Wrong);
        assert_eq!(auth.verify(&c, "REGISTER", "secret", now), Verdict::Ok);
        assert_eq!(
            auth.verify(&c, "REGISTER", "secret", now),
            Verdict::Stale,
            "replay"
        );
        let c2 = creds(&auth, now, Some(c.nonce.clone()), "secret", 2);
        assert_eq!(auth.verify(&c2, "REGISTER", "secret", now + 1), Verdict::Ok);

        let old = creds(&auth, now - NONCE_TTL_SECS - 1, None, "secret", 1);
        assert_eq!(auth.verify(&old, "REGISTER", "secret", now), Verdict::Stale);

        let other = DigestAuth::new("h", [8; 32]);
        let foreign = creds(&other, now, None, "secret", 1);
        assert_eq!(
            auth.verify(&foreign, "REGISTER", "secret", now),
            Verdict::Stale
        );
        let forged = creds(&auth, now, Some("x".repeat(43)), "secret", 1);
        assert_eq!(
            auth.verify(&forged, "REGISTER", "secret", now),
            Verdict::Stale
        );
    }

    /// When the table of nonces in use is full, the oldest-issued ones are forgotten: a new
    /// nonce is still accepted (one user registering very often no longer locks everyone
    /// out), a forgotten one is stale rather than replayable, and a recent one in the table
    /// still cannot be replayed.
    #[test]
    fn a_full_nonce_table_forgets_the_oldest_and_never_allows_a_replay() {
        let mut auth = DigestAuth::new("h", [7; 32]);
        auth.max_tracked = 64;
        let start = 1_700_000_000;
        let mut used = Vec::new();
        for i in 0..64u64 {
            let c = creds(&auth, start + i, None, "secret", 1);
            assert_eq!(
                auth.verify(&c, "REGISTER", "secret", start + i),
                Verdict::Ok
            );
            used.push(c);
        }
        let now = start + 70;
        let fresh = creds(&auth, now, None, "secret", 1);
        assert_eq!(auth.verify(&fresh, "REGISTER", "secret", now), Verdict::Ok);
        assert!(auth.seen.lock().unwrap().map.len() <= 64);
        for c in &used {
            // Replays: forgotten ones are stale, remembered ones too.
            assert_eq!(auth.verify(c, "REGISTER", "secret", now), Verdict::Stale);
        }
        let next = creds(&auth, now, Some(used[63].nonce.clone()), "secret", 2);
        assert_eq!(auth.verify(&next, "REGISTER", "secret", now), Verdict::Ok);
        let forgotten = creds(&auth, now, Some(used[0].nonce.clone()), "secret", 2);
        assert_eq!(
            auth.verify(&forgotten, "REGISTER", "secret", now),
            Verdict::Stale
        );
    }

    #[test]
    fn challenge_shape_and_debug_hides_the_secret() {
        let auth = DigestAuth::new("example.com", [0x5a; 32]);
        let ch = AuthParams::parse(&auth.challenge(5, true)).unwrap();
        assert_eq!(ch.get("realm"), Some("example.com"));
        assert_eq!(ch.get("algorithm"), Some("MD5"));
        assert_eq!(ch.get("qop"), Some("auth"));
        assert_eq!(ch.get("stale"), Some("true"));
        assert_eq!(ch.get("nonce").unwrap().len(), 43);
        let dbg = format!("{auth:?}");
        assert!(!dbg.contains("90") && !dbg.contains("key"), "{dbg}");
    }

    #[test]
    fn credentials_shape() {
        assert!(Credentials::parse("Basic abc").is_err());
        let ok = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:h\", \
                  response=\"0123456789abcdef0123456789ABCDEF\", qop=auth, cnonce=\"c\", nc=00000001";
        let c = Credentials::parse(ok).unwrap();
        assert_eq!(c.response, "0123456789abcdef0123456789abcdef");
        assert!(Credentials::parse(&ok.replace("qop=auth, ", "")).is_err());
        assert!(Credentials::parse(&ok.replace("nc=00000001", "nc=1")).is_err());
        assert!(Credentials::parse(&format!("{ok}, algorithm=SHA-256")).is_err());
    }
}
