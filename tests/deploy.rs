//! `deploy/comet-server.service`, the systemd unit the README points to: systemd accepts it,
//! its limits fit the server's defaults, and the server starts with its command line and the
//! shipped example configuration.

mod common;

use std::path::Path;
use std::process::Command;

use comet_server::config::Config;

fn unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/comet-server.service"),
    )
    .expect("deploy/comet-server.service")
}

/// The value of `key=` in the unit (its first occurrence).
fn value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn systemd_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    // The unit names the installed binary; here it is the one just built.
    let local = unit().replace(
        "/usr/local/bin/comet-server",
        env!("CARGO_BIN_EXE_comet-server"),
    );
    let path = dir.path().join("comet-server.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/setup.sh test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_units_limits_fit_the_server() {
    let unit = unit();
    let c = Config::default();
    let caps = [c.cometql_conns, c.ws_conns, c.sip_conns, c.http_conns]
        .iter()
        .map(|l| l.max as u64)
        .sum::<u64>();
    let nofile: u64 = value(&unit, "LimitNOFILE").parse().unwrap();
    assert!(
        nofile >= caps + comet_server::admission::RESERVED_FILES,
        "LimitNOFILE={nofile} is below the default caps ({caps}) plus the reserve"
    );
    // SIGTERM: up to 3 s of drain and 10 s of finalizing recordings.
    let stop: u64 = value(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(stop > 13, "TimeoutStopSec={stop}");
    assert!(
        value(&unit, "ExecReload").contains("-HUP"),
        "reload is SIGHUP"
    );
}

#[test]
fn the_server_starts_with_the_units_command_line_and_the_example_config() {
    let unit = unit();
    let exec = value(&unit, "ExecStart");
    // The configuration (it holds the dev_key) reaches the dynamic user as a credential.
    assert!(
        exec.contains("--config ${CREDENTIALS_DIRECTORY}/comet.ini"),
        "{exec}"
    );
    assert_eq!(
        value(&unit, "LoadCredential"),
        "comet.ini:/etc/comet-server/comet.ini"
    );
    assert!(exec.contains("--data-dir /var/lib/comet-server"), "{exec}");
    // The same flags with the example configuration, in a temporary place (the test harness
    // adds its own data directory and free ports after them).
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("comet.ini");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("comet.ini.example"),
        &ini,
    )
    .unwrap();
    let s = common::Server::start_with(dir.path(), &["--config", ini.to_str().unwrap()]);
    assert!(
        s.stdout.iter().any(|l| l.starts_with("READY ")),
        "{:?}",
        s.stdout
    );
}
