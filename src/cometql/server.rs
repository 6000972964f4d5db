//! The CometQL listener: the "do" half. Owns sockets; moves bytes between them and the codec and
//! engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::engine::{Engine, Reply, Session};
use super::error::{CqlError, code};
use super::wire::{self, PacketReader, PacketWriter, Read, com};
use crate::admission::{Admitted, Gate, Refused};

/// Largest packet a client may send (reported as `@@max_allowed_packet`).
pub const MAX_PACKET: usize = 1 << 20;
/// Largest packet before the login is done (a handshake response is well under 1 KiB), so an
/// unauthenticated client cannot make the server buffer a megabyte.
pub const MAX_LOGIN_PACKET: usize = 64 * 1024;
/// A client has this long from connecting to being logged in.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A logged-in connection idle this long is closed (MySQL's default `wait_timeout`, which
/// `SHOW VARIABLES` reports).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(28_800);

/// Accepts CometQL connections until the task is dropped, as many at once as `gate` admits.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, gate: Arc<Gate>) {
    let ids = AtomicU32::new(1);
    loop {
        let (stream, peer) = crate::admission::accept(&listener, "CometQL").await;
        let _ = stream.set_nodelay(true);
        let stream = match gate.admit(peer.ip()) {
            Ok(permit) => Admitted::new(stream, permit),
            Err(why) => {
                tokio::spawn(refuse(stream, why));
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let engine = engine.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            engine.stats.connections.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = connection(stream, peer, id, &engine, &gate).await {
                tracing::debug!(%peer, "cometql connection {id} ended: {e}");
            }
            engine.stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Answers a connection beyond the listener's caps the way MySQL does: error 1040 instead of
/// the greeting (the client has sent nothing yet; it reads this first), then closes it.
async fn refuse(mut stream: TcpStream, why: Refused) {
    let message = match why {
        Refused::Full => "Too many connections",
        Refused::PerIp => "Too many connections from this address",
    };
    let mut w = PacketWriter::new(0);
    w.packet(&wire::err_packet(code::TOO_MANY_CONNECTIONS, message));
    let _ = tokio::time::timeout(LOGIN_TIMEOUT, async {
        stream.write_all(&w.take()).await?;
        stream.shutdown().await
    })
    .await;
}

/// The message of the authentication error to an address that failed too often.
fn blocked(peer: SocketAddr, retry: Duration) -> String {
    format!(
        "Authentication failure: too many failed logins from {}; retry in {} s",
        peer.ip(),
        retry.as_secs() + 1
    )
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("{0}")]
    Refused(String),
    #[error("timed out ({0})")]
    TimedOut(&'static str),
}

struct Conn {
    stream: Admitted<TcpStream>,
    reader: PacketReader,
    buf: Vec<u8>,
    /// The next packet must have arrived by then: [`LOGIN_TIMEOUT`] after connecting, then
    /// [`WAIT_TIMEOUT`] after each command.
    deadline: tokio::time::Instant,
    logged_in: bool,
}

impl Conn {
    async fn read_packet(&mut self) -> Result<(u8, Vec<u8>), ConnError> {
        loop {
            match self.reader.next_packet() {
                Read::Packet(seq, p) => return Ok((seq, p)),
                Read::TooLarge(n) => {
                    let mut w = PacketWriter::new(1);
                    w.packet(&wire::err_packet(
                        code::TOO_LONG,
                        &format!(
                            "Data is too long: a {n}-byte packet exceeds {} bytes ({})",
                            self.reader.limit(),
                            if self.logged_in {
                                "max_allowed_packet"
                            } else {
                                "before the login"
                            }
                        ),
                    ));
                    self.stream.write_all(&w.take()).await?;
                    return Err(ConnError::Refused(format!("{n}-byte packet")));
                }
                Read::NeedMore => {
                    let n = tokio::time::timeout_at(self.deadline, self.stream.read(&mut self.buf))
                        .await
                        .map_err(|_| {
                            ConnError::TimedOut(if self.logged_in {
                                "idle longer than wait_timeout"
                            } else {
                                "login"
                            })
                        })??;
                    if n == 0 {
                        return Err(ConnError::Closed);
                    }
                    self.reader.feed(&self.buf[..n]);
                }
            }
        }
    }

    async fn send(&mut self, w: &mut PacketWriter) -> Result<(), ConnError> {
        self.stream.write_all(&w.take()).await?;
        Ok(())
    }
}

async fn connection(
    stream: Admitted<TcpStream>,
    peer: SocketAddr,
    id: u32,
    engine: &Engine,
    gate: &Gate,
) -> Result<(), ConnError> {
    let mut c = Conn {
        stream,
        reader: PacketReader::new(MAX_LOGIN_PACKET),
        buf: vec![0; 16 * 1024],
        deadline: tokio::time::Instant::now() + LOGIN_TIMEOUT,
        logged_in: false,
    };
    // An address that failed to log in too often is refused before the greeting, as MySQL
    // refuses a blocked host, with the contract's authentication error.
    if let Err(retry) = gate.may_authenticate(peer.ip(), std::time::Instant::now()) {
        let mut w = PacketWriter::new(0);
        w.packet(&wire::err_packet(code::AUTH, &blocked(peer, retry)));
        c.send(&mut w).await?;
        return Err(ConnError::Refused("too many failed logins".into()));
    }
    let scramble = wire::new_scramble();
    let mut w = PacketWriter::new(0);
    w.packet(&wire::greeting(
        &super::engine::server_version(),
        id,
        &scramble,
    ));
    c.send(&mut w).await?;

    let (seq, payload) = c.read_packet().await?;
    let hs = match wire::parse_handshake_response(&payload) {
        Ok(h) => h,
        Err(e) => {
            let mut w = PacketWriter::new(seq.wrapping_add(1));
            w.packet(&wire::err_packet(
                code::AUTH,
                &format!("Authentication failure: {e}"),
            ));
            c.send(&mut w).await?;
            return Err(ConnError::Refused(e.to_string()));
        }
    };
    let mut next_seq = seq.wrapping_add(1);
    let mut response = hs.auth_response.clone();
    let plugin_ok = hs
        .auth_plugin
        .as_deref()
        .is_none_or(|p| p.is_empty() || p == wire::NATIVE_PASSWORD);
    if !plugin_ok {
        // Ask the client (e.g. a MySQL 8 client defaulting to caching_sha2_password) to answer
        // with mysql_native_password instead.
        let mut w = PacketWriter::new(next_seq);
        w.packet(&wire::auth_switch_request(&scramble));
        c.send(&mut w).await?;
        let (seq, p) = c.read_packet().await?;
        response = p;
        next_seq = seq.wrapping_add(1);
    }
    let login = if Engine::is_health_check(&hs.username, &response) {
        Ok(None)
    } else if let Err(retry) = gate.may_authenticate(peer.ip(), std::time::Instant::now()) {
        // Failed elsewhere meanwhile (many connections at once): not checked.
        Err(CqlError::new(code::AUTH, blocked(peer, retry)))
    } else {
        engine
            .authenticate(&hs.username, &scramble, &response)
            .inspect_err(|_| gate.auth_failed(peer.ip(), std::time::Instant::now()))
            .map(Some)
    };
    let mut session = match login {
        Ok(dev) => Session {
            dev: dev.unwrap_or(0),
            authorized: dev.is_some(),
            database: None,
            connection_id: id,
            user: hs.username.clone(),
        },
        Err(e) => {
            tracing::info!(%peer, user = %hs.username, "cometql login refused");
            let mut w = PacketWriter::new(next_seq);
            w.packet(&wire::err_packet(e.code, &e.message));
            c.send(&mut w).await?;
            return Err(ConnError::Refused(e.message));
        }
    };
    if let Some(db) = &hs.database
        && let Err(e) = engine.use_database(&mut session, db)
    {
        let mut w = PacketWriter::new(next_seq);
        w.packet(&wire::err_packet(e.code, &e.message));
        c.send(&mut w).await?;
        return Err(ConnError::Refused(e.message));
    }
    let mut w = PacketWriter::new(next_seq);
    w.packet(&wire::ok_packet(0, 0, ""));
    c.send(&mut w).await?;
    tracing::debug!(%peer, dev = session.dev, "cometql login");
    c.reader.set_limit(MAX_PACKET);
    c.logged_in = true;

    loop {
        c.deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
        let (seq, payload) = c.read_packet().await?;
        let mut w = PacketWriter::new(seq.wrapping_add(1));
        let Some((&command, body)) = payload.split_first() else {
            w.packet(&wire::err_packet(code::UNDEFINED, "empty command packet"));
            c.send(&mut w).await?;
            continue;
        };
        match command {
            com::QUIT => return Ok(()),
            com::PING | com::RESET_CONNECTION => w.packet(&wire::ok_packet(0, 0, "")),
            com::INIT_DB => {
                let db = String::from_utf8_lossy(body);
                match engine.use_database(&mut session, &db) {
                    Ok(()) => w.packet(&wire::ok_packet(0, 0, "")),
                    Err(e) => w.packet(&wire::err_packet(e.code, &e.message)),
                }
            }
            com::QUERY => match std::str::from_utf8(body) {
                Ok(sql) => match engine.execute(&mut session, sql).await {
                    Ok(reply) => encode_reply(&mut w, &reply),
                    Err(e) => {
                        tracing::debug!(
                            dev = session.dev,
                            code = e.code,
                            "cometql error: {}",
                            e.message
                        );
                        w.packet(&wire::err_packet(e.code, &e.message))
                    }
                },
                Err(_) => w.packet(&wire::err_packet(
                    code::SYNTAX,
                    "the query is not valid UTF-8",
                )),
            },
            com::FIELD_LIST | com::SET_OPTION => w.packet(&wire::eof_packet()),
            com::STATISTICS => {
                let s = &engine.stats;
                w.packet(
                    format!(
                        "Threads: {}  Questions: {}",
                        s.connections.load(Ordering::Relaxed),
                        s.queries.load(Ordering::Relaxed)
                    )
                    .as_bytes(),
                )
            }
            com::STMT_PREPARE => {
                let e = CqlError::not_implemented(
                    "prepared statements are not supported by CometQL; send text queries \
                     (e.g. PDO::ATTR_EMULATE_PREPARES, or mysql_async's query methods)",
                );
                w.packet(&wire::err_packet(e.code, &e.message))
            }
            other => w.packet(&wire::err_packet(
                code::UNDEFINED,
                &format!("command 0x{other:02x} is undefined in CometQL"),
            )),
        }
        c.send(&mut w).await?;
    }
}

fn encode_reply(w: &mut PacketWriter, reply: &Reply) {
    match reply {
        Reply::Ok {
            affected,
            insert_id,
        } => w.packet(&wire::ok_packet(*affected, *insert_id, "")),
        Reply::Rows {
            table,
            columns,
            rows,
        } => wire::write_result_set(w, table, columns, rows),
    }
}
