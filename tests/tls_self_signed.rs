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
