//! nginx with the RTMP module on loopback, as the broadcast tests and bench use it: one `cam1`
//! application writing HLS and DASH under its directory, and an HTTP server for the HLS files
//! (what a player fetches).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tool;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Nginx {
    pub dir: PathBuf,
    /// The RTMP port: publish to `rtmp://127.0.0.1:<port>/cam1/<name>`.
    pub port: u16,
    /// The HTTP server: `/hls/<name>.m3u8` and its segments.
    pub http: SocketAddr,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx in `dir` with HLS and DASH fragments of `fragment` and playlists of
    /// `playlist_length` (nginx syntax: `2s`, `500ms`).
    pub fn start(dir: &Path, fragment: &str, playlist_length: &str) -> Nginx {
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            Path::new(module).is_file(),
            "{module} is missing: install libnginx-mod-rtmp (scripts/setup.sh test)"
        );
        for d in ["logs", "hls", "dash", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let port = free_port();
        let http_port = free_port();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "load_module {module};\ndaemon off;\nmaster_process off;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/logs/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096; \
                 application cam1 {{ live on; record off; hls on; hls_path {d}/hls; \
                 hls_fragment {f}; hls_playlist_length {p}; dash on; dash_path {d}/dash; \
                 dash_fragment {f}; dash_playlist_length {p}; }} }} }}\n\
                 http {{ access_log off; \
                 client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; \
                 fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; \
                 server {{ listen 127.0.0.1:{http_port}; \
                 location /hls/ {{ root {d}; add_header Cache-Control no-cache; \
                 types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }} }} }} }}\n",
                d = dir.display(),
                f = fragment,
                p = playlist_length,
            ),
        )
        .unwrap();
        let mut n = Nginx {
            dir: dir.to_path_buf(),
            port,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            child: None,
        };
        n.spawn();
        n
    }

    /// (Re)starts the process and waits until both ports listen.
    pub fn spawn(&mut self) {
        let child = Command::new(tool("nginx"))
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(self.http).is_err()
        {
            assert!(
                Instant::now() < end,
                "nginx did not listen on {} and {} within 10 s:\n{}",
                self.port,
                self.http,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }

    /// The HLS playlist file of stream `name`.
    pub fn playlist(&self, name: &str) -> PathBuf {
        self.dir.join("hls").join(format!("{name}.m3u8"))
    }

    /// The segments the HLS playlist of `name` lists now, oldest first.
    pub fn segments(&self, name: &str) -> Vec<PathBuf> {
        let text = std::fs::read_to_string(self.playlist(name)).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.ends_with(".ts"))
            .map(|l| self.dir.join("hls").join(l))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}
