//! HS256 JWTs as CppComet accepted them in place of a users_auth hash: signed with
//! `[main] password` followed by the decimal dev_id, an `exp` claim is required (valid while
//! `now <= exp`), and the payload's numeric `user_id` must equal the connecting user.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Verifies `token` for `(dev, user)` at unix time `now`.
pub fn verify(token: &str, password: &str, dev: i64, user: i64, now: i64) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(header) = URL_SAFE_NO_PAD.decode(h) else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return false;
    };
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return false;
    }
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(format!("{password}{dev}").as_bytes()) else {
        return false;
    };
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    if mac.verify_slice(&sig).is_err() {
        return false;
    }
    let Ok(payload) = URL_SAFE_NO_PAD.decode(p) else {
        return false;
    };
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&payload) else {
        return false;
    };
    let exp_ok = payload
        .get("exp")
        .and_then(|e| e.as_i64())
        .is_some_and(|exp| now <= exp);
    let user_ok = payload.get("user_id").and_then(|u| u.as_i64()) == Some(user);
    exp_ok && user_ok
}

/// Signs a token (used by tests and by backends written against this crate).
pub fn sign(payload: &serde_json::Value, password: &str, dev: i64) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(payload.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(format!("{password}{dev}").as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_expired_wrong_user_wrong_key() {
        let t = sign(&json!({"user_id": 5, "exp": 1000}), "pw", 3);
        assert!(verify(&t, "pw", 3, 5, 999));
        assert!(verify(&t, "pw", 3, 5, 1000));
        assert!(!verify(&t, "pw", 3, 5, 1001), "expired");
        assert!(!verify(&t, "pw", 3, 6, 999), "other user");
        assert!(!verify(&t, "pw", 4, 5, 999), "other dev: other key");
        assert!(!verify(&t, "px", 3, 5, 999), "other password");
        let no_exp = sign(&json!({"user_id": 5}), "pw", 3);
        assert!(!verify(&no_exp, "pw", 3, 5, 0), "exp is required");
        let str_user = sign(&json!({"user_id": "5", "exp": 1000}), "pw", 3);
        assert!(
            !verify(&str_user, "pw", 3, 5, 0),
            "user_id must be a number"
        );
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        for t in ["", ".", "..", "a.b.c", "a.b.c.d", "eyJ.eyJ.xx", "abc"] {
            assert!(!verify(t, "pw", 0, 1, 0));
        }
        let t = sign(&json!({"user_id": 1, "exp": 9}), "pw", 0);
        let tampered = t.replacen('.', ".e", 1);
        assert!(!verify(&tampered, "pw", 0, 1, 0));
    }
}
