//! `--tls-self-signed`: one generated certificate makes the HTTP, comet WebSocket and SIP
//! listeners speak TLS; a client trusting that certificate reaches all three under the name
//! `localhost`, and a restart reuses it (a browser's exception stays valid).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Server;
use common::http::request_tls;
use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn client_tls(root: &CertificateDer<'static>) -> tokio_tungstenite::Connector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    tokio_tungstenite::Connector::Rustls(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

#[tokio::test]
async fn every_listener_speaks_tls_with_one_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let http = s.http.unwrap();
    let banner = s.stdout.join("\n");
    assert!(banner.contains(&format!("https://{http}/")), "{banner}");
    assert!(
        banner.contains("wss://") && banner.contains("TLS (self-signed)"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("open https://{http}/ in two tabs")),
        "{banner}"
    );
    let cert_path = s.data_dir.join("tls-self-signed/cert.pem");
    let cert = CertificateDer::from_pem_file(&cert_path).expect("the certificate file");

    let r = request_tls(http, "localhost", cert.clone(), "GET", "/api/features").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let f = r.json();
    assert_eq!(f["ws"]["tls"], serde_json::json!(true));
    assert_eq!(f["sip"]["tls"], serde_json::json!(true));
    let r = request_tls(http, "localhost", cert.clone(), "GET", "/").await;
    assert!(r.body.contains("comet-server demo"));

    let url = format!(
        "wss://localhost:{}/ws/sesion=&myid=0&devid=0&v=4.08&uuid=t&api=js",
        s.ws.port()
    );
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(client_tls(&cert))),
    )
    .await
    .unwrap()
    .expect("wss to the comet WebSocket");
    let first = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("serverInfo"));

    let mut req = format!("wss://localhost:{}", s.sip.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (_sip, resp) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(client_tls(&cert))),
    )
    .await
    .unwrap()
    .expect("wss to SIP");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("sip")
    );

    // A restart keeps the certificate.
    let data_dir = s.data_dir.clone();
    drop(s);
    let again = Server::start_with(dir.path(), &["--tls-self-signed"]);
    assert_eq!(again.data_dir, data_dir);
    let cert2 = CertificateDer::from_pem_file(&cert_path).unwrap();
    assert_eq!(cert, cert2, "the same certificate after a restart");
    let r = request_tls(again.http.unwrap(), "127.0.0.1", cert2, "GET", "/healthz").await;
    assert_eq!(r.status, 200);
}

/// Whether a TLS handshake with `addr` succeeds for a client that trusts only `root`.
async fn trusted(addr: std::net::SocketAddr, root: &CertificateDer<'static>) -> bool {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await,
        Ok(Ok(_))
    )
}

/// SIGHUP makes every TLS listener read its certificate files again: after the files are
/// replaced (a renewal), new connections get the new certificate on the HTTP, comet
/// WebSocket, SIP and cluster listeners, without a restart; files that do not load change
/// nothing.
#[tokio::test]
async fn sighup_reloads_a_renewed_certificate_on_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    // A cluster head whose media-node listener uses the same files.
    let files = dir.path().join("data/tls-self-signed");
    let s = Server::start_with(
        dir.path(),
        &[
            "--tls-self-signed",
            "--set",
            "cluster.secret=sighup-cluster-secret-0",
            "--set",
            "cluster.port=0",
            "--set",
            &format!("cluster.tls_cert={}", files.join("cert.pem").display()),
            "--set",
            &format!("cluster.tls_key={}", files.join("key.pem").display()),
        ],
    );
    let cluster = s
        .ready_addr("cluster")
        .expect("the READY line names the cluster listener");
    let listeners = [s.http.unwrap(), s.ws, s.sip, cluster];
    let tls_dir = s.data_dir.join("tls-self-signed");
    let old = CertificateDer::from_pem_file(tls_dir.join("cert.pem")).unwrap();
    for addr in listeners {
        assert!(
            trusted(addr, &old).await,
            "{addr} serves the first certificate"
        );
    }
    // The renewal: new files in place, then SIGHUP.
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(tls_dir.join("cert.pem"), renewed.cert.pem()).unwrap();
    std::fs::write(tls_dir.join("key.pem"), renewed.signing_key.serialize_pem()).unwrap();
    let new = CertificateDer::from(renewed.cert.der().to_vec());
    s.signal_hup();
    // One log line per listener once its new certificate is in place.
    s.wait_log("TLS certificate reloaded", 4, Duration::from_secs(20));
    for addr in listeners {
        assert!(
            trusted(addr, &new).await,
            "{addr} serves the renewed certificate"
        );
        assert!(
            !trusted(addr, &old).await,
            "{addr} no longer serves the old one"
        );
    }
    // A broken file (a renewal half-written) is refused: each listener keeps what it has.
    std::fs::write(tls_dir.join("cert.pem"), "not a certificate").unwrap();
    s.signal_hup();
    s.wait_log(
        "cannot reload the TLS certificate",
        4,
        Duration::from_secs(20),
    );
    for addr in listeners {
        assert!(
            trusted(addr, &new).await,
            "{addr} kept the renewed certificate"
        );
    }
}
