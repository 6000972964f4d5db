//! `--tls-self-signed`: one self-signed certificate for every listener, for quick local
//! HTTPS/WSS. It is kept in `data_dir/tls-self-signed/` so a browser's "proceed anyway" stays
//! valid across restarts, and made again when the names it must cover change.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the certificate and key live, and whether they were made now.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub names: Vec<String>,
    pub created: bool,
    /// SHA-256 fingerprint of the certificate (colon-separated hex), for the banner.
    pub fingerprint: String,
}

/// The names a self-signed certificate covers: loopback, the SIP host browsers are told, and
/// each listener address that is a specific one.
pub fn names(config: &crate::config::Config) -> Vec<String> {
    let mut v: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let mut add = |s: String| {
        if !v.contains(&s) {
            v.push(s);
        }
    };
    add(config.sip_host.clone());
    for ip in [config.http.ip, config.ws.ip, config.sip.ip] {
        if !ip.is_unspecified() {
            add(ip.to_string());
        }
    }
    v
}

/// Reuses the certificate in `dir` when it covers exactly `names`, else makes a new one.
pub fn ensure(dir: &Path, names: &[String]) -> anyhow::Result<SelfSigned> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let names_file = dir.join("names");
    let wanted = names.join("\n");
    let have = std::fs::read_to_string(&names_file).unwrap_or_default();
    let created = !(have == wanted && cert.is_file() && key.is_file());
    if created {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .context("cannot generate a self-signed certificate")?;
        write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, ck.cert.pem())
            .with_context(|| format!("cannot write {}", cert.display()))?;
        std::fs::write(&names_file, &wanted)
            .with_context(|| format!("cannot write {}", names_file.display()))?;
    }
    let fingerprint = fingerprint(&cert)?;
    Ok(SelfSigned {
        cert,
        key,
        names: names.to_vec(),
        created,
        fingerprint,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn fingerprint(cert: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    let der = CertificateDer::from_pem_file(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?;
    let digest = sha2::Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused_until_the_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = ensure(dir.path(), &names).unwrap();
        assert!(a.created);
        let b = ensure(dir.path(), &names).unwrap();
        assert!(!b.created);
        assert_eq!(a.fingerprint, b.fingerprint);
        let mut more = names.clone();
        more.push("meet.example.com".into());
        let c = ensure(dir.path(), &more).unwrap();
        assert!(c.created);
        assert_ne!(a.fingerprint, c.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&c.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        // The pair loads as the listeners load it.
        crate::sip::server::tls_acceptor_from_pem(&c.cert, &c.key).unwrap();
    }

    #[test]
    fn names_cover_loopback_the_sip_host_and_specific_listeners() {
        let ini = "[main]\npassword = x\n[sip]\nhost = meet.example.com\n[http]\nip = 0.0.0.0\n\
                   [ws]\nip = 192.0.2.7\n";
        let (c, _) = crate::config::Config::load(Some(("c.ini", ini)), &[]).unwrap();
        let n = names(&c);
        for want in [
            "localhost",
            "127.0.0.1",
            "::1",
            "meet.example.com",
            "192.0.2.7",
        ] {
            assert!(n.iter().any(|x| x == want), "{want} in {n:?}");
        }
        assert!(!n.iter().any(|x| x == "0.0.0.0"));
    }
}
