//! CometQL at the packet level: what no client library sends on purpose (undefined commands,
//! broken packets, health checks, oversized packets). The server must answer with the contract's
//! codes and never fall over.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use comet_server::cometql::wire::{self, PacketReader, PacketWriter, Read, caps, com};
use common::{PASSWORD, Server};

struct Raw {
    s: TcpStream,
    r: PacketReader,
}

impl Raw {
    fn connect(server: &Server) -> (Raw, [u8; 20]) {
        let s = TcpStream::connect(server.cometql).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut raw = Raw {
            s,
            r: PacketReader::new(1 << 24),
        };
        let (_, g) = raw.read().expect("greeting");
        assert_eq!(g[0], 10, "protocol 10");
        let ver_end = g.iter().position(|&b| b == 0).unwrap();
        let version = std::str::from_utf8(&g[1..ver_end]).unwrap();
        assert!(version.starts_with("5.7.99-"), "{version}");
        let mut scramble = [0u8; 20];
        let p = ver_end + 1 + 4;
        scramble[..8].copy_from_slice(&g[p..p + 8]);
        let p2 = p + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
        scramble[8..].copy_from_slice(&g[p2..p2 + 12]);
        assert!(g.ends_with(b"mysql_native_password\0"));
        (raw, scramble)
    }

    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut buf = [0u8; 4096];
        loop {
            match self.r.next_packet() {
                Read::Packet(seq, p) => return Some((seq, p)),
                Read::TooLarge(_) => panic!("server packet too large"),
                Read::NeedMore => match self.s.read(&mut buf) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.r.feed(&buf[..n]),
                },
            }
        }
    }

    fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut w = PacketWriter::new(seq);
        w.packet(payload);
        self.s.write_all(&w.take()).unwrap();
    }

    fn login(&mut self, user: &str, auth: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        let c = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;
        p.extend_from_slice(&c.to_le_bytes());
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(33);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        p.push(auth.len() as u8);
        p.extend_from_slice(auth);
        p.extend_from_slice(b"mysql_native_password\0");
        self.send(1, &p);
        self.read().expect("login answer").1
    }

    fn command(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(0, payload);
        self.read().expect("command answer").1
    }
}

fn err_code(p: &[u8]) -> u16 {
    assert_eq!(p[0], 0xff, "expected an ERR packet, got {p:?}");
    assert_eq!(&p[3..9], b"#HY000");
    u16::from_le_bytes([p[1], p[2]])
}

fn logged_in(server: &Server) -> Raw {
    let (mut raw, scramble) = Raw::connect(server);
    let token = wire::native_password_token(PASSWORD.as_bytes(), &scramble);
    let ok = raw.login("root", &token);
    assert_eq!(ok[0], 0, "login OK: {ok:?}");
    raw
}

#[test]
fn undefined_and_malformed_commands_get_errors_and_the_connection_lives() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut raw = logged_in(&s);
    // 1: an undefined command byte, and an empty command packet.
    assert_eq!(err_code(&raw.command(&[0x0b])), 1);
    assert_eq!(err_code(&raw.command(&[])), 1);
    // Not UTF-8: a syntax error.
    assert_eq!(
        err_code(&raw.command(&[com::QUERY, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])),
        3
    );
    // Ping still answers.
    assert_eq!(raw.command(&[com::PING])[0], 0);
    // COM_FIELD_LIST answers with an empty list (EOF).
    assert_eq!(raw.command(&[com::FIELD_LIST, b'x', 0])[0], 0xfe);
    // COM_QUIT closes cleanly.
    raw.send(0, &[com::QUIT]);
    assert!(raw.read().is_none(), "closed after COM_QUIT");
}

#[test]
fn oversized_packet_is_refused_with_11_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut raw = logged_in(&s);
    let mut big = vec![com::QUERY];
    big.extend(std::iter::repeat_n(b'x', 2 << 20));
    // The server may close while we are still writing; that is fine.
    let mut w = PacketWriter::new(0);
    w.packet(&big);
    let _ = raw.s.write_all(&w.take());
    let (_, p) = raw.read().expect("an error before the close");
    assert_eq!(err_code(&p), 11);
    assert!(raw.read().is_none(), "closed after the oversized packet");
}

/// Before the login a client may not announce more than 64 KiB (the server would buffer it),
/// and must log in within 10 s: a client that connects and stays silent is disconnected.
#[test]
fn unauthenticated_clients_are_bounded_in_size_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (mut raw, _) = Raw::connect(&s);
    // A 100 000-byte handshake response, announced by its header only.
    raw.s.write_all(&[0xA0, 0x86, 0x01, 1]).unwrap();
    let (_, p) = raw.read().expect("an error before the close");
    assert_eq!(err_code(&p), 11);
    assert!(raw.read().is_none(), "closed after the oversized packet");

    let (mut silent, _) = Raw::connect(&s);
    // Wait (up to 20 s, twice the login timeout) for the server to close: a read returns 0.
    silent
        .s
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    match silent.s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the silent client should have been disconnected: {other:?}"),
    }
}

#[test]
fn bad_logins_are_refused_with_16() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    // Empty password.
    let (mut raw, _) = Raw::connect(&s);
    assert_eq!(err_code(&raw.login("root", &[])), 16);
    assert!(raw.read().is_none(), "closed after a failed login");
    // Wrong length.
    let (mut raw, _) = Raw::connect(&s);
    assert_eq!(err_code(&raw.login("root", &[1, 2, 3])), 16);
    // A truncated handshake response.
    let (mut raw, _) = Raw::connect(&s);
    raw.send(1, &[0, 2, 0, 0]);
    assert_eq!(err_code(&raw.read().expect("answer").1), 16);
    assert!(raw.read().is_none());
    // The server is still fine.
    let mut ok = logged_in(&s);
    assert_eq!(ok.command(&[com::PING])[0], 0);
}

#[test]
fn health_checks_connect_but_get_403() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (mut raw, _) = Raw::connect(&s);
    assert_eq!(
        raw.login("haproxy_check", &[])[0],
        0,
        "health check may connect"
    );
    assert_eq!(raw.command(&[com::PING])[0], 0);
    let mut q = vec![com::QUERY];
    q.extend_from_slice(b"SELECT * FROM users_auth WHERE id = 1");
    assert_eq!(err_code(&raw.command(&q)), 403);
}
