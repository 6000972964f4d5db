//! A tiny HTTP/1.1 client for tests (one request per connection, `Connection: close`), over
//! plain TCP or TLS.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A response: status code, lower-cased headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A request's parts besides the method and path.
#[derive(Default)]
pub struct Req<'a> {
    pub host: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Option<&'a str>,
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    host: &str,
    r: &Req<'_>,
) -> Response {
    let body = r.body.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(ct) = r.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if r.body.is_some() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; what was read is the answer.
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// One request over plain TCP (deadline 20 s).
pub async fn request(addr: SocketAddr, method: &str, path: &str, r: Req<'_>) -> Response {
    let host = r
        .host
        .map(str::to_string)
        .unwrap_or_else(|| addr.to_string());
    tokio::time::timeout(Duration::from_secs(20), async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        exchange(tcp, method, path, &host, &r).await
    })
    .await
    .expect("an HTTP answer within 20 s")
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, Req::default()).await
}

/// POSTs a JSON body.
pub async fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Response {
    let body = body.to_string();
    request(
        addr,
        "POST",
        path,
        Req {
            content_type: Some("application/json"),
            body: Some(&body),
            ..Req::default()
        },
    )
    .await
}

/// One request over TLS to `server_name`, trusting only `root` (deadline 20 s).
pub async fn request_tls(
    addr: SocketAddr,
    server_name: &str,
    root: rustls::pki_types::CertificateDer<'static>,
    method: &str,
    path: &str,
) -> Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let host = format!("{server_name}:{}", addr.port());
    tokio::time::timeout(Duration::from_secs(20), async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        exchange(tls, method, path, &host, &Req::default()).await
    })
    .await
    .expect("an HTTPS answer within 20 s")
}
