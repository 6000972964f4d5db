//! The `comet-server` binary: parse flags, load configuration, start, wait for a signal.

use std::path::PathBuf;

use clap::Parser;
use comet_server::config::{Config, Override};

/// A native media server speaking CometQL, the comet WebSocket protocol and SIP over WebSocket.
///
/// With no flags it runs on the embedded default configuration: every listener on 127.0.0.1.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (INI, as CppComet's comet.ini).
    #[arg(short, long, value_name = "FILE", env = "COMET_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for persistent state ([main] data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// CometQL port ([cometql] port; 0 picks a free one).
    #[arg(long, value_name = "N")]
    cometql_port: Option<u16>,
    /// Comet WebSocket port ([ws] port).
    #[arg(long, value_name = "N")]
    ws_port: Option<u16>,
    /// SIP-over-WebSocket port ([sip] port).
    #[arg(long, value_name = "N")]
    sip_port: Option<u16>,
    /// UDP media port ([media] port).
    #[arg(long, value_name = "N")]
    media_port: Option<u16>,
    /// HTTP port ([http] port).
    #[arg(long, value_name = "N")]
    http_port: Option<u16>,
    /// Keep state in memory only ([store] backend = memory).
    #[arg(long)]
    memory_store: bool,
    /// HTTPS/WSS on every listener with a self-signed certificate made for localhost and
    /// [sip] host (kept in data_dir/tls-self-signed/; [main] tls_self_signed = true).
    #[arg(long)]
    tls_self_signed: bool,
    /// Any setting, as section.key=value (repeatable), e.g. --set sip.host=meet.example.com
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", value_parser = Override::parse)]
    set: Vec<Override>,
    /// Print a comet.ini documenting every key and its default, then exit.
    #[arg(long)]
    print_example_config: bool,
}

impl Cli {
    fn overrides(&self) -> Vec<Override> {
        let mut o = Vec::new();
        let mut add = |section: &str, key: &str, value: String| {
            o.push(Override {
                section: section.into(),
                key: key.into(),
                value,
            })
        };
        if let Some(d) = &self.data_dir {
            add("main", "data_dir", d.display().to_string());
        }
        for (section, port) in [
            ("cometql", self.cometql_port),
            ("ws", self.ws_port),
            ("sip", self.sip_port),
            ("media", self.media_port),
            ("http", self.http_port),
        ] {
            if let Some(p) = port {
                add(section, "port", p.to_string());
            }
        }
        if self.memory_store {
            add("store", "backend", "memory".into());
        }
        if self.tls_self_signed {
            add("main", "tls_self_signed", "true".into());
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.print_example_config {
        print!("{}", Config::example_ini());
        return std::process::ExitCode::SUCCESS;
    }
    let (config, report) = match Config::load_file(cli.config.as_deref(), &cli.overrides()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("comet-server: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_level.clone());
    comet_server::logging::init(&filter, config.log_format);
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    for i in &report.ignored {
        tracing::info!("{i}");
    }
    let origin = match &cli.config {
        Some(p) => format!("configuration {}", p.display()),
        None => "embedded default configuration".to_string(),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("comet-server: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let running = match comet_server::app::start(&config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("comet-server: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        };
        // Listen for signals before saying READY: a supervisor may send SIGTERM at once.
        let signals = shutdown_signal();
        let running = std::sync::Arc::new(running);
        reload_on_sighup(running.clone());
        drain_on_sigusr1(running.clone());
        print!("{}", running.banner(&config, &origin));
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SIGTERM, or a drain (SIGUSR1, POST /admin/drain) whose last call has ended or whose
        // time is up.
        tokio::select! {
            _ = signals => {}
            _ = running.draining.done() => {}
        }
        tracing::info!("shutting down");
        running.stop();
        // Calls get their BYE and WebSockets their close frame before the process goes.
        running.drain(std::time::Duration::from_secs(3)).await;
        // Recordings must be finalized before the process exits.
        let r = running.clone();
        let _ = tokio::task::spawn_blocking(move || {
            r.finish_broadcasts(std::time::Duration::from_secs(10))
        })
        .await;
        std::process::ExitCode::SUCCESS
    })
}

/// On every SIGHUP, the TLS listeners read their certificate files again (`certbot renew
/// --deploy-hook "systemctl reload comet-server"`). The handler is installed now.
fn reload_on_sighup(running: std::sync::Arc<comet_server::app::Running>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading TLS certificates");
                    running.reload_tls().await;
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP (no certificate reload): {e}"),
    }
}

/// On SIGUSR1 the server starts draining: no new conference starts here, and it exits once
/// the last call has ended (`systemctl kill -s USR1 comet-server`). The handler is installed
/// now.
fn drain_on_sigusr1(running: std::sync::Arc<comet_server::app::Running>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    running.draining.start("SIGUSR1");
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGUSR1 (no draining by signal): {e}"),
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the
/// future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
