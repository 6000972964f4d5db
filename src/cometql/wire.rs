//! The MySQL client/server protocol, as far as CometQL needs it: sans-IO encoders and decoders.
//!
//! Nothing here touches a socket. [`PacketReader`] cuts a byte stream into packets, the `parse_*`
//! functions turn packet payloads into values and the `encode_*` functions append packets to an
//! output buffer. The connection driver (`server.rs`) only moves bytes.
//!
//! Why our own codec instead of opensrv-mysql: CometQL clients depend on CometQL's own error codes
//! (1..21, 403, 500, and 16 for a failed login, which must close the connection), and
//! opensrv-mysql 0.7 can only send codes from its MySQL error enum (1000 and up) and answers a
//! failed login with 1698. Encoding the handful of packets ourselves keeps the contract exact.

use sha1::{Digest, Sha1};

/// Capability flags (MySQL `CLIENT_*`).
pub mod caps {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const DEPRECATE_EOF: u32 = 1 << 24;

    /// What we advertise. No SSL (CometQL listens on loopback or behind a TLS proxy), no
    /// compression, and classic EOF packets (every client still understands them).
    pub const SERVER: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | PROTOCOL_41
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA;
}

/// Command bytes (`COM_*`) that arrive as the first byte of a command packet.
pub mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0e;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const SET_OPTION: u8 = 0x1b;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

pub const NATIVE_PASSWORD: &str = "mysql_native_password";
/// `SERVER_STATUS_AUTOCOMMIT`: we have no transactions; every statement stands alone.
const STATUS_AUTOCOMMIT: u16 = 0x0002;
/// utf8_general_ci.
const CHARSET_UTF8: u8 = 33;
/// `MYSQL_TYPE_VAR_STRING`: every CometQL column is text.
const TYPE_VAR_STRING: u8 = 0xfd;
/// Largest single packet payload; longer payloads are split.
const MAX_CHUNK: usize = 0xff_ffff;

/// Cuts an inbound byte stream into MySQL packets, joining split (16 MiB+) payloads.
#[derive(Debug, Default)]
pub struct PacketReader {
    buf: Vec<u8>,
    limit: usize,
}

/// What [`PacketReader::next_packet`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A whole packet: its sequence id (of the last chunk) and payload.
    Packet(u8, Vec<u8>),
    /// Not enough bytes yet.
    NeedMore,
    /// The payload is larger than the configured limit; the connection must be closed.
    TooLarge(usize),
}

impl PacketReader {
    /// A reader that refuses payloads larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        PacketReader {
            buf: Vec::new(),
            limit,
        }
    }

    /// The largest payload accepted.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Changes the largest payload accepted from now on.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete packet out of the buffer.
    pub fn next_packet(&mut self) -> Read {
        let mut pos = 0;
        let mut payload_len = 0;
        let mut chunks = Vec::new();
        loop {
            if self.buf.len() < pos + 4 {
                return Read::NeedMore;
            }
            let len = u32::from_le_bytes([self.buf[pos], self.buf[pos + 1], self.buf[pos + 2], 0])
                as usize;
            let seq = self.buf[pos + 3];
            payload_len += len;
            if payload_len > self.limit {
                return Read::TooLarge(payload_len);
            }
            if self.buf.len() < pos + 4 + len {
                return Read::NeedMore;
            }
            chunks.push((pos + 4, len));
            pos += 4 + len;
            if len < MAX_CHUNK {
                let mut payload = Vec::with_capacity(payload_len);
                for (start, len) in chunks {
                    payload.extend_from_slice(&self.buf[start..start + len]);
                }
                self.buf.drain(..pos);
                return Read::Packet(seq, payload);
            }
        }
    }
}

/// Appends packets to an output buffer, numbering them from a sequence id.
#[derive(Debug)]
pub struct PacketWriter {
    pub out: Vec<u8>,
    seq: u8,
}

impl PacketWriter {
    /// A writer whose first packet carries sequence id `seq`.
    pub fn new(seq: u8) -> Self {
        PacketWriter {
            out: Vec::new(),
            seq,
        }
    }

    /// Appends one logical packet (split into 16 MiB chunks when needed).
    pub fn packet(&mut self, payload: &[u8]) {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_CHUNK);
            let len = (n as u32).to_le_bytes();
            self.out
                .extend_from_slice(&[len[0], len[1], len[2], self.seq]);
            self.out.extend_from_slice(&rest[..n]);
            self.seq = self.seq.wrapping_add(1);
            rest = &rest[n..];
            if n < MAX_CHUNK {
                break;
            }
        }
    }

    /// Sets the sequence id of the next packet.
    pub fn set_seq(&mut self, seq: u8) {
        self.seq = seq;
    }

    /// Takes the bytes written so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v < 1 << 16 {
        out.push(0xfc);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 1 << 24 {
        out.push(0xfd);
        out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        out.push(0xfe);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// The server greeting (HandshakeV10) payload.
pub fn greeting(version: &str, connection_id: u32, scramble: &[u8; 20]) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.push(10);
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&connection_id.to_le_bytes());
    p.extend_from_slice(&scramble[..8]);
    p.push(0);
    let c = caps::SERVER.to_le_bytes();
    p.extend_from_slice(&c[..2]);
    p.push(CHARSET_UTF8);
    p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&c[2..]);
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&scramble[8..]);
    p.push(0);
    p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    p.push(0);
    p
}

/// A fresh 20-byte scramble of printable bytes (no NUL, which some clients treat as a terminator).
pub fn new_scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    for b in &mut s {
        *b = rand::random_range(0x21u8..0x7f);
    }
    s
}

/// The client's HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub username: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
}

/// Why a client packet could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("the client asked for TLS, which the CometQL listener does not offer")]
    TlsRequested,
    #[error("the client does not speak protocol 4.1")]
    OldProtocol,
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Malformed(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn nul_str(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .b
            .iter()
            .position(|&c| c == 0)
            .ok_or(WireError::Malformed(what))?;
        let s = &self.b[..end];
        self.b = &self.b[end + 1..];
        Ok(s)
    }

    fn lenenc_int(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(match self.u8(what)? {
            n @ 0..=250 => n as u64,
            0xfc => u16::from_le_bytes(self.take(2, what)?.try_into().unwrap_or([0; 2])) as u64,
            0xfd => {
                let b = self.take(3, what)?;
                u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64
            }
            0xfe => u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or([0; 8])),
            _ => return Err(WireError::Malformed(what)),
        })
    }

    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

/// Parses the client's answer to the greeting.
pub fn parse_handshake_response(payload: &[u8]) -> Result<HandshakeResponse, WireError> {
    let mut c = Cursor { b: payload };
    let cap_bytes = c.take(4, "capabilities")?;
    let capabilities = u32::from_le_bytes([cap_bytes[0], cap_bytes[1], cap_bytes[2], cap_bytes[3]]);
    if capabilities & caps::PROTOCOL_41 == 0 {
        return Err(WireError::OldProtocol);
    }
    c.take(4 + 1 + 23, "handshake header")?;
    if capabilities & caps::SSL != 0 && c.is_empty() {
        return Err(WireError::TlsRequested);
    }
    let username = String::from_utf8_lossy(c.nul_str("user name")?).into_owned();
    let auth_response = if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let n = c.lenenc_int("auth length")? as usize;
        c.take(n, "auth response")?.to_vec()
    } else if capabilities & caps::SECURE_CONNECTION != 0 {
        let n = c.u8("auth length")? as usize;
        c.take(n, "auth response")?.to_vec()
    } else {
        c.nul_str("auth response")?.to_vec()
    };
    let mut database = None;
    if capabilities & caps::CONNECT_WITH_DB != 0 && !c.is_empty() {
        let db = c.nul_str("database")?;
        if !db.is_empty() {
            database = Some(String::from_utf8_lossy(db).into_owned());
        }
    }
    let mut auth_plugin = None;
    if capabilities & caps::PLUGIN_AUTH != 0 && !c.is_empty() {
        // Some clients omit the terminating NUL on the last field.
        let name = match c.nul_str("plugin") {
            Ok(n) => n,
            Err(_) => std::mem::take(&mut c.b),
        };
        auth_plugin = Some(String::from_utf8_lossy(name).into_owned());
    }
    Ok(HandshakeResponse {
        capabilities,
        username,
        auth_response,
        database,
        auth_plugin,
    })
}

/// The AuthSwitchRequest payload asking the client to answer with `mysql_native_password`.
pub fn auth_switch_request(scramble: &[u8; 20]) -> Vec<u8> {
    let mut p = vec![0xfe];
    p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    p.push(0);
    p.extend_from_slice(scramble);
    p.push(0);
    p
}

/// What a `mysql_native_password` client sends for `password` and `scramble`:
/// `SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))`.
pub fn native_password_token(password: &[u8], scramble: &[u8]) -> [u8; 20] {
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mix: [u8; 20] = h.finalize().into();
    let mut out = [0u8; 20];
    for i in 0..20 {
        out[i] = stage1[i] ^ mix[i];
    }
    out
}

/// Checks a `mysql_native_password` answer in constant time. An empty password never matches.
pub fn check_native_password(password: &str, scramble: &[u8], response: &[u8]) -> bool {
    if password.is_empty() || response.len() != 20 {
        return false;
    }
    let expected = native_password_token(password.as_bytes(), scramble);
    expected
        .iter()
        .zip(response)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// OK packet payload.
pub fn ok_packet(affected_rows: u64, last_insert_id: u64, info: &str) -> Vec<u8> {
    let mut p = vec![0x00];
    put_lenenc_int(&mut p, affected_rows);
    put_lenenc_int(&mut p, last_insert_id);
    p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(info.as_bytes());
    p
}

/// ERR packet payload with SQL state `HY000`.
pub fn err_packet(code: u16, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#HY000");
    p.extend_from_slice(message.as_bytes());
    p
}

/// EOF packet payload.
pub fn eof_packet() -> Vec<u8> {
    let mut p = vec![0xfe];
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    p
}

fn column_definition(table: &str, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(48 + name.len() * 2 + table.len() * 2);
    put_lenenc_str(&mut p, b"def");
    put_lenenc_str(&mut p, b"CometQL_v1");
    put_lenenc_str(&mut p, table.as_bytes());
    put_lenenc_str(&mut p, table.as_bytes());
    put_lenenc_str(&mut p, name.as_bytes());
    put_lenenc_str(&mut p, name.as_bytes());
    p.push(0x0c);
    p.extend_from_slice(&(CHARSET_UTF8 as u16).to_le_bytes());
    p.extend_from_slice(&1024u32.to_le_bytes());
    p.push(TYPE_VAR_STRING);
    p.extend_from_slice(&0u16.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p
}

/// Writes a whole text result set: column count, definitions, EOF, rows, EOF.
/// `None` cells are SQL NULL.
pub fn write_result_set(
    w: &mut PacketWriter,
    table: &str,
    columns: &[String],
    rows: &[Vec<Option<String>>],
) {
    let mut p = Vec::new();
    put_lenenc_int(&mut p, columns.len() as u64);
    w.packet(&p);
    for c in columns {
        w.packet(&column_definition(table, c));
    }
    w.packet(&eof_packet());
    let mut row_buf = Vec::new();
    for row in rows {
        row_buf.clear();
        for cell in row {
            match cell {
                Some(s) => put_lenenc_str(&mut row_buf, s.as_bytes()),
                None => row_buf.push(0xfb),
            }
        }
        w.packet(&row_buf);
    }
    w.packet(&eof_packet());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_splits_and_joins_packets() {
        let mut w = PacketWriter::new(0);
        w.packet(b"abc");
        w.packet(&vec![7u8; MAX_CHUNK + 5]);
        let bytes = w.take();
        let mut r = PacketReader::new(64 << 20);
        // Byte by byte for the first packet: NeedMore until complete.
        for b in &bytes[..6] {
            assert_eq!(r.next_packet(), Read::NeedMore);
            r.feed(&[*b]);
        }
        r.feed(&bytes[6..]);
        assert_eq!(r.next_packet(), Read::Packet(0, b"abc".to_vec()));
        match r.next_packet() {
            Read::Packet(seq, p) => {
                assert_eq!(seq, 2, "the last chunk's sequence id");
                assert_eq!(p.len(), MAX_CHUNK + 5);
            }
            other => panic!("expected a packet, got {other:?}"),
        }
        assert_eq!(r.next_packet(), Read::NeedMore);
    }

    #[test]
    fn reader_refuses_oversized_payloads() {
        let mut r = PacketReader::new(100);
        r.feed(&[200, 0, 0, 0]);
        assert_eq!(r.next_packet(), Read::TooLarge(200));
    }

    #[test]
    fn native_password_round_trip() {
        let scramble = new_scramble();
        let token = native_password_token(b"secret", &scramble);
        assert!(check_native_password("secret", &scramble, &token));
        assert!(!check_native_password("secret2", &scramble, &token));
        assert!(!check_native_password("", &scramble, &token));
        assert!(!check_native_password("secret", &scramble, &token[..19]));
    }

    #[test]
    fn handshake_response_parses_lenenc_auth_db_and_plugin() {
        let mut p = Vec::new();
        let c = caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | caps::CONNECT_WITH_DB;
        p.extend_from_slice(&c.to_le_bytes());
        p.extend_from_slice(&[0; 28]);
        p.extend_from_slice(b"root\0");
        p.push(3);
        p.extend_from_slice(b"xyz");
        p.extend_from_slice(b"CometQL_v1\0");
        p.extend_from_slice(b"mysql_native_password\0");
        let h = parse_handshake_response(&p).unwrap();
        assert_eq!(h.username, "root");
        assert_eq!(h.auth_response, b"xyz");
        assert_eq!(h.database.as_deref(), Some("CometQL_v1"));
        assert_eq!(h.auth_plugin.as_deref(), Some(NATIVE_PASSWORD));
    }

    #[test]
    fn truncated_handshake_is_an_error_not_a_panic() {
        let full = {
            let mut p = Vec::new();
            p.extend_from_slice(&(caps::PROTOCOL_41 | caps::SECURE_CONNECTION).to_le_bytes());
            p.extend_from_slice(&[0; 28]);
            p.extend_from_slice(b"root\0");
            p.push(20);
            p.extend_from_slice(&[1; 20]);
            p
        };
        for n in 0..full.len() {
            assert!(parse_handshake_response(&full[..n]).is_err(), "prefix {n}");
        }
        assert!(parse_handshake_response(&full).is_ok());
    }

    #[test]
    fn err_packet_layout() {
        let p = err_packet(16, "Authentication failure");
        assert_eq!(p[0], 0xff);
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 16);
        assert_eq!(&p[3..9], b"#HY000");
        assert_eq!(&p[9..], b"Authentication failure");
    }

    proptest::proptest! {
        /// Random bytes as a handshake response: an error or a value, never a panic.
        #[test]
        fn arbitrary_handshakes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_handshake_response(&bytes);
        }

        /// Random byte streams cut into packets, fed in random pieces.
        #[test]
        fn arbitrary_streams_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            split in 1usize..64,
        ) {
            let mut r = PacketReader::new(1 << 16);
            for chunk in bytes.chunks(split) {
                r.feed(chunk);
                while let Read::Packet(..) = r.next_packet() {}
            }
        }
    }
}
