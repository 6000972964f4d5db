//! A check of the RTMP chunk stream an RTMP server sends us, run before `rml_rtmp` sees it.
//!
//! The broadcast target is an outside server (its URL comes from the configuration or from a
//! CometQL client), so what it sends is untrusted input. `rml_rtmp` 0.8 trusts it in three
//! ways this check closes, turning each into an error (the driver then reconnects):
//!
//! - **Nesting depth.** Its AMF0 decoder recurses once per nested object or array with no
//!   limit: one command of nested one-element arrays (5 bytes a level) overflows a worker's
//!   stack and aborts the process. Every nesting level needs a container marker byte of its
//!   own (object `0x03`, ECMA array `0x08`, strict array `0x0A`, typed object `0x10`), so a
//!   message with at most [`MAX_CONTAINER_BYTES`] such bytes nests at most that deep, whatever
//!   else it holds. Audio and video payloads are not decoded, so they are not counted.
//! - **Interleaved messages.** It keeps one payload buffer for all chunk streams, so a
//!   message that starts before the last one ended corrupts both (and underflows a length
//!   in debug builds). A publisher receives only small control and command messages, which
//!   servers send whole.
//! - **Extended timestamps.** A chunk of header type 1-3 that starts a message with an
//!   extended timestamp below `0xFFFFFF` underflows a subtraction there.
//!
//! Messages are also capped at [`MAX_MESSAGE_LEN`] bytes (servers send a publisher a few
//! hundred), and chunk streams at [`MAX_CHUNK_STREAMS`].

/// Largest message accepted from the server.
pub const MAX_MESSAGE_LEN: u32 = 64 * 1024;
/// Most AMF container marker bytes in one message (an upper bound of its nesting depth).
pub const MAX_CONTAINER_BYTES: u32 = 128;
/// Most distinct chunk stream ids the server may use.
pub const MAX_CHUNK_STREAMS: usize = 64;

const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_AUDIO: u8 = 8;
const TYPE_VIDEO: u8 = 9;
const EXTENDED: u32 = 0xFF_FFFF;

/// What is wrong with the server's chunk stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RTMP chunk stream from the server: {0}")]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy)]
struct Prev {
    csid: u32,
    len: u32,
    type_id: u8,
    ts_field: u32,
}

#[derive(Debug, Clone, Copy)]
struct Message {
    csid: u32,
    len: u32,
    type_id: u8,
    got: u32,
    containers: u32,
    /// The first payload bytes (a Set Chunk Size's value).
    head: [u8; 4],
}

/// Follows the server's chunk headers across reads of any size; see the module docs.
#[derive(Debug)]
pub struct ChunkGuard {
    chunk_size: u32,
    prev: Vec<Prev>,
    /// Bytes of a chunk header not complete yet (at most 18).
    header: Vec<u8>,
    msg: Option<Message>,
    /// Payload bytes left in the current chunk.
    chunk_left: u32,
}

impl Default for ChunkGuard {
    fn default() -> Self {
        ChunkGuard {
            chunk_size: 128,
            prev: Vec::new(),
            header: Vec::with_capacity(18),
            msg: None,
            chunk_left: 0,
        }
    }
}

impl ChunkGuard {
    /// Checks the next bytes from the server (after the handshake). After an error the
    /// connection must be dropped: the guard's state is no longer meaningful.
    pub fn check(&mut self, mut input: &[u8]) -> Result<(), ChunkError> {
        while !input.is_empty() {
            if self.chunk_left > 0 {
                let n = (self.chunk_left as usize).min(input.len());
                self.payload(&input[..n])?;
                input = &input[n..];
                continue;
            }
            // A header: take bytes until it is complete.
            let need = self.header_len();
            let take = need
                .saturating_sub(self.header.len())
                .min(input.len())
                .max(1);
            self.header.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.header.len() >= self.header_len() {
                self.start_chunk()?;
                self.header.clear();
            }
        }
        Ok(())
    }

    /// The length of the header begun in `self.header` as far as its bytes tell (grows as
    /// they arrive: basic header, then message header, then extended timestamp).
    fn header_len(&self) -> usize {
        let h = &self.header;
        let Some(&b0) = h.first() else {
            return 1;
        };
        let basic = basic_len(b0);
        let fmt = b0 >> 6;
        let message = [11, 7, 3, 0][fmt as usize];
        let without_ext = basic + message;
        if h.len() < without_ext {
            return without_ext;
        }
        let ts_field = if fmt < 3 {
            u24(&h[basic..basic + 3])
        } else {
            match self.prev_of(csid(h, basic)) {
                Some(p) => p.ts_field,
                None => 0,
            }
        };
        without_ext + if ts_field == EXTENDED { 4 } else { 0 }
    }

    fn prev_of(&self, csid: u32) -> Option<&Prev> {
        self.prev.iter().find(|p| p.csid == csid)
    }

    /// A complete chunk header is in `self.header`.
    fn start_chunk(&mut self) -> Result<(), ChunkError> {
        let h = &self.header;
        let fmt = h[0] >> 6;
        let basic = basic_len(h[0]);
        let id = csid(h, basic);
        let m = &h[basic..];
        let prev = self.prev_of(id).copied();
        let (len, type_id, ts_field) = match (fmt, prev) {
            (0, _) => (u24(&m[3..6]), m[6], u24(&m[..3])),
            (1, Some(_)) => (u24(&m[3..6]), m[6], u24(&m[..3])),
            (2, Some(p)) => (p.len, p.type_id, u24(&m[..3])),
            (3, Some(p)) => (p.len, p.type_id, p.ts_field),
            _ => {
                return Err(ChunkError(
                    "a compressed chunk header on a chunk stream with no message before",
                ));
            }
        };
        let ext = (ts_field == EXTENDED).then(|| {
            let e = &h[h.len() - 4..];
            u32::from_be_bytes([e[0], e[1], e[2], e[3]])
        });
        if let Some(msg) = self.msg {
            // Only the next chunk of the same message may follow.
            if fmt != 3 || id != msg.csid {
                return Err(ChunkError(
                    "a message started before the previous one ended (interleaved chunk streams are not supported)",
                ));
            }
            self.chunk_left = self.chunk_size.min(msg.len - msg.got);
            return Ok(());
        }
        if fmt != 0 && ext.is_some_and(|e| e < EXTENDED) {
            return Err(ChunkError(
                "an extended timestamp delta below 0xFFFFFF starts a message",
            ));
        }
        if len > MAX_MESSAGE_LEN {
            return Err(ChunkError("a message longer than 64 KiB"));
        }
        let p = Prev {
            csid: id,
            len,
            type_id,
            ts_field,
        };
        if let Some(q) = self.prev.iter_mut().find(|q| q.csid == id) {
            *q = p;
        } else if self.prev.len() < MAX_CHUNK_STREAMS {
            self.prev.push(p);
        } else {
            return Err(ChunkError("too many chunk streams"));
        }
        let msg = Message {
            csid: id,
            len,
            type_id,
            got: 0,
            containers: 0,
            head: [0; 4],
        };
        if len == 0 {
            return self.complete(msg);
        }
        self.msg = Some(msg);
        self.chunk_left = self.chunk_size.min(len);
        Ok(())
    }

    /// Payload bytes of the current chunk.
    fn payload(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        let Some(mut msg) = self.msg else {
            return Err(ChunkError("payload without a message"));
        };
        for (slot, &b) in msg.head.iter_mut().skip(msg.got as usize).zip(bytes) {
            *slot = b;
        }
        if msg.type_id != TYPE_AUDIO && msg.type_id != TYPE_VIDEO {
            msg.containers += bytes
                .iter()
                .filter(|&&b| matches!(b, 0x03 | 0x08 | 0x0A | 0x10))
                .count() as u32;
            if msg.containers > MAX_CONTAINER_BYTES {
                return Err(ChunkError(
                    "a message nested deeper than 128 objects or arrays",
                ));
            }
        }
        msg.got += bytes.len() as u32;
        self.chunk_left -= bytes.len() as u32;
        if msg.got == msg.len {
            self.msg = None;
            self.complete(msg)
        } else {
            self.msg = Some(msg);
            Ok(())
        }
    }

    fn complete(&mut self, msg: Message) -> Result<(), ChunkError> {
        if msg.type_id == TYPE_SET_CHUNK_SIZE {
            if msg.len < 4 {
                return Err(ChunkError("a Set Chunk Size message shorter than 4 bytes"));
            }
            let size = u32::from_be_bytes(msg.head) & 0x7FFF_FFFF;
            if size == 0 {
                return Err(ChunkError("a chunk size of 0"));
            }
            self.chunk_size = size;
        }
        Ok(())
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// The length of a basic header from its first byte (chunk stream ids 64 and up take one or
/// two more bytes).
fn basic_len(b0: u8) -> usize {
    match b0 & 0x3F {
        0 => 2,
        1 => 3,
        _ => 1,
    }
}

/// The chunk stream id of a basic header of `basic` bytes.
fn csid(h: &[u8], basic: usize) -> u32 {
    match basic {
        2 => 64 + h[1] as u32,
        3 => 64 + h[1] as u32 + 256 * h[2] as u32,
        _ => (h[0] & 0x3F) as u32,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A type 0 chunk header on `csid` (< 64).
    fn full(csid: u8, ts: u32, len: u32, type_id: u8) -> Vec<u8> {
        let mut h = vec![csid];
        h.extend_from_slice(&ts.min(EXTENDED).to_be_bytes()[1..]);
        h.extend_from_slice(&len.to_be_bytes()[1..]);
        h.push(type_id);
        h.extend_from_slice(&1u32.to_le_bytes());
        if ts >= EXTENDED {
            h.extend_from_slice(&ts.to_be_bytes());
        }
        h
    }

    /// `payload` as one message on `csid` (< 64), split into chunks of `chunk` (what a
    /// server sends; the publisher's tests use it too).
    pub(crate) fn message(csid: u8, type_id: u8, payload: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = full(csid, 0, payload.len() as u32, type_id);
        for (i, part) in payload.chunks(chunk).enumerate() {
            if i > 0 {
                out.push(0xC0 | csid);
            }
            out.extend_from_slice(part);
        }
        out
    }

    /// Every split of the same bytes gives the same answer.
    fn check_split(bytes: &[u8]) -> Result<(), ChunkError> {
        let whole = ChunkGuard::default().check(bytes);
        for step in [1, 2, 3, 7, 100] {
            let mut g = ChunkGuard::default();
            let r = bytes.chunks(step).try_for_each(|c| g.check(c));
            assert_eq!(r, whole, "split by {step}");
        }
        whole
    }

    #[test]
    fn ordinary_messages_pass_in_any_split() {
        let mut s = Vec::new();
        // Window ack size, then a command over two chunks of 128, then a larger chunk size
        // and a command over one chunk of it, a compressed type 1 header, an extended
        // timestamp, a csid in the two- and three-byte forms.
        s.extend(message(2, 5, &2_500_000u32.to_be_bytes(), 128));
        let cmd: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
        s.extend(message(3, 20, &cmd, 128));
        s.extend(message(2, TYPE_SET_CHUNK_SIZE, &4096u32.to_be_bytes(), 128));
        s.extend(message(3, 20, &cmd, 4096));
        s.extend([0x43, 0, 0, 20, 0, 0, 4, 18, 1, 2, 3, 4]);
        s.extend(full(4, 0x0100_0000, 2, 18));
        s.extend([1, 2]);
        s.extend([0x00, 200, 0, 0, 0, 0, 0, 1, 20, 1, 0, 0, 0, 7]);
        s.extend([0x01, 10, 1, 0, 0, 0, 0, 0, 1, 20, 1, 0, 0, 0, 9]);
        check_split(&s).unwrap();
        // Audio and video payloads are not counted as AMF.
        check_split(&message(4, TYPE_VIDEO, &[0x0A; 1000], 128)).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused() {
        let bomb: Vec<u8> = [0x0A, 0, 0, 0, 1].repeat(2000);
        let mut cmd = vec![2, 0, 4];
        cmd.extend_from_slice(b"test");
        cmd.extend(bomb);
        assert!(check_split(&message(3, 20, &cmd, 128)).is_err());
        // 128 containers are fine.
        let ok: Vec<u8> = [0x0A, 0, 0, 0, 1].repeat(128);
        check_split(&message(3, 20, &ok, 128)).unwrap();
    }

    #[test]
    fn interleaving_overlong_and_bad_headers_are_refused() {
        // A new message on another chunk stream while the first is incomplete.
        let mut s = full(3, 0, 1000, 20);
        s.extend([0u8; 128]);
        s.extend(full(4, 0, 10, 20));
        assert!(check_split(&s).is_err());
        // Also a type 0 header on the same stream.
        let mut s = full(3, 0, 1000, 20);
        s.extend([0u8; 128]);
        s.extend(full(3, 0, 10, 20));
        assert!(check_split(&s).is_err());
        // Too long.
        assert!(check_split(&full(3, 0, MAX_MESSAGE_LEN + 1, 20)).is_err());
        // A type 1-3 header first on a stream.
        assert!(check_split(&[0x43, 0, 0, 0, 0, 0, 1, 20]).is_err());
        assert!(check_split(&[0x83, 0, 0, 1]).is_err());
        // An extended timestamp delta below 0xFFFFFF starting a message.
        let mut s = message(3, 20, &[5], 128);
        s.extend([0x83, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1, 6]);
        assert!(check_split(&s).is_err());
        // A chunk size of 0.
        assert!(check_split(&message(2, 1, &[0, 0, 0, 0], 128)).is_err());
        assert!(check_split(&message(2, 1, &[0, 0], 128)).is_err());
        // Too many chunk streams.
        let mut s = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            s.extend([0x00, i, 0, 0, 0, 0, 0, 0, 20, 1, 0, 0, 0]);
        }
        assert!(check_split(&s).is_err());
    }
}
