//! The names a conference is known by: its SIP number and its comet call pipe (contract 2.1).

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// `<dev_id>*<name>*<profile>`: the SIP user part browsers dial.
pub fn sip_number(dev_id: i64, name: &str, profile: &str) -> String {
    format!("{dev_id}*{name}*{profile}")
}

/// The comet pipe on which the members of one conference signal each other.
///
/// SHA-1 over `sprintf("%64s_%64s_%d_%d_%32s", sipNumber, serverName, serverPort, dev_id,
/// pipesalt)` (right-aligned, space-padded, never truncated), standard base64 with padding,
/// prefixed `web_syscall_v1_`, then every character below `A` or above `z` replaced by `A`.
pub fn call_pipe(
    sip_number: &str,
    server_name: &str,
    server_port: u16,
    dev_id: i64,
    pipesalt: &str,
) -> String {
    let material =
        format!("{sip_number:>64}_{server_name:>64}_{server_port}_{dev_id}_{pipesalt:>32}");
    let digest = Sha1::digest(material.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
    format!("web_syscall_v1_{b64}")
        .chars()
        .map(|c| if ('A'..='z').contains(&c) { c } else { 'A' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_test_vector() {
        let n = sip_number(0, "101", "video");
        assert_eq!(n, "0*101*video");
        assert_eq!(
            call_pipe(&n, "fs.example.com", 7443, 0, "0000000"),
            "web_syscall_vA_AOFycNkAQtLpTYMDAAjmArkHpNAA"
        );
    }

    #[test]
    fn pipe_is_a_valid_comet_pipe_name_and_depends_on_every_input() {
        let base = call_pipe("1*a*video", "h", 7443, 1, "s");
        assert!(base.len() < 64);
        assert!(
            base.chars().all(|c| c.is_ascii_alphabetic() || c == '_'),
            "{base}"
        );
        assert_ne!(base, call_pipe("1*b*video", "h", 7443, 1, "s"));
        assert_ne!(base, call_pipe("1*a*video", "h2", 7443, 1, "s"));
        assert_ne!(base, call_pipe("1*a*video", "h", 7444, 1, "s"));
        assert_ne!(base, call_pipe("1*a*video", "h", 7443, 2, "s"));
        assert_ne!(base, call_pipe("1*a*video", "h", 7443, 1, "t"));
    }
}
