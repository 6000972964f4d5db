//! Headless Chromium for end-to-end tests: pages served by the test report what they see over
//! HTTP (`POST /report`), and the test waits for reports with deadlines.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

use super::tool;

/// A browser process and its throw-away profile directory (removed after the process).
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `url` in a new headless Chromium with fake camera and microphone, kept on loopback.
pub fn chromium(url: &str) -> Browser {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(tool("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    Browser {
        child,
        _profile: profile,
    }
}

/// A report from a page: (page, event, data).
pub type Report = (String, String, Value);

/// Reports received so far and the channel of new ones.
pub struct Reports {
    rx: mpsc::UnboundedReceiver<Report>,
    seen: Vec<Report>,
}

type Tx = Arc<Mutex<mpsc::UnboundedSender<Report>>>;

async fn report(State(tx): State<Tx>, Json(v): Json<Value>) -> &'static str {
    let page = v["page"].as_str().unwrap_or("").to_string();
    let event = v["event"].as_str().unwrap_or("").to_string();
    let _ = tx.lock().await.send((page, event, v["data"].clone()));
    "ok"
}

/// Serves `router`'s routes plus `POST /report` on 127.0.0.1; returns its address and the
/// report stream.
pub async fn serve(router: axum::Router<()>) -> (std::net::SocketAddr, Reports) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/report", post(report))
        .with_state(Arc::new(Mutex::new(tx)))
        .merge(router);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (
        addr,
        Reports {
            rx,
            seen: Vec::new(),
        },
    )
}

impl Reports {
    /// Waits (up to `secs`) for a report from `page` with `event`, and returns its data.
    pub async fn wait_for(&mut self, page: &str, event: &str, secs: u64) -> Value {
        if let Some(i) = self
            .seen
            .iter()
            .position(|(p, e, _)| p == page && e == event)
        {
            return self.seen.remove(i).2;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(r)) => r,
                _ => panic!(
                    "page {page} did not report {event} within {secs} s; it and others reported: {:#?}",
                    self.seen
                ),
            };
            if got.0 == page && got.1 == event {
                return got.2;
            }
            self.seen.push(got);
        }
    }
}

/// The scripts every JsSIP test page loads: `/page_common.js` (reporting, registration,
/// `tests/browser/page_common.js`), `/jssip2.js` (2.0.6 from npm, as cometVideoApi.js ships
/// it) and `/jssip3.js` (3.x, built by `npm run build`).
pub fn jssip_routes() -> axum::Router<()> {
    use axum::http::header;
    use axum::routing::get;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let js = |body: String| ([(header::CONTENT_TYPE, "application/javascript")], body);
    let common = asset(&root.join("page_common.js"));
    let jssip2 = asset(&root.join("node_modules/jssip2/dist/jssip.js"));
    let jssip3 = asset(&root.join("dist/jssip3.js"));
    axum::Router::new()
        .route("/page_common.js", get(move || async move { js(common) }))
        .route("/jssip2.js", get(move || async move { js(jssip2) }))
        .route("/jssip3.js", get(move || async move { js(jssip3) }))
}

/// A static file for a page, or a clear failure naming the setup step that makes it.
pub fn asset(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Browser test assets are installed by scripts/setup.sh test \
             (npm ci and npm run build in tests/browser).",
            path.display()
        )
    })
}
