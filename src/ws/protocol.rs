//! The comet WebSocket protocol without sockets: commands from browsers (`<command>\n<args>`)
//! and the JSON frames the server sends (contract section 3; shapes and texts as CppComet sent
//! them, keys sorted).

use serde_json::{Value, json};

use crate::names;

/// A command a browser sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `subscription\n<pipe>\n<pipe>...`: the whole argument text.
    Subscription(&'a str),
    /// `web_pipe2\n<pipe>\n<event>\n<auth>\n<message>`.
    WebPipe2 {
        pipe: &'a str,
        event: &'a str,
        auth: &'a str,
        message: &'a str,
    },
    /// `pipe_log\n<pipe>\n<marker>`.
    PipeLog { pipe: &'a str, marker: &'a str },
    /// `pipe_count\n<pipe>\n<marker>`.
    PipeCount { pipe: &'a str, marker: &'a str },
    /// `track_pipe_users\n<pipe>\n<marker>`.
    TrackPipeUsers { pipe: &'a str, marker: &'a str },
    /// `user_data\n<marker>\n<user_id>`.
    UserData { marker: &'a str, user_id: &'a str },
    /// `user_status\n<user_id>`.
    UserStatus { user_id: &'a str },
    /// `statistics`, `cgi_call`, `CometQL_call`: accepted, no answer.
    Ignored,
    /// Anything else: the connection is closed.
    Unknown(&'a str),
}

fn lines(args: &str) -> impl Iterator<Item = &str> {
    args.split('\n').map(|l| l.trim_end_matches('\r'))
}

/// Splits a frame into a command. Commands match by prefix, in CppComet's order.
pub fn parse(text: &str) -> Command<'_> {
    let (name, args) = text.split_once('\n').unwrap_or((text, ""));
    let name = name.trim_end_matches('\r');
    let mut it = lines(args);
    let mut next = || it.next().unwrap_or("");
    match name {
        "subscription" => Command::Subscription(args),
        "web_pipe2" => {
            let mut parts = args.splitn(4, '\n');
            Command::WebPipe2 {
                pipe: parts.next().unwrap_or(""),
                event: parts.next().unwrap_or(""),
                auth: parts.next().unwrap_or(""),
                message: parts.next().unwrap_or(""),
            }
        }
        "pipe_log" => Command::PipeLog {
            pipe: next(),
            marker: next(),
        },
        "pipe_count" => Command::PipeCount {
            pipe: next(),
            marker: next(),
        },
        "track_pipe_users" => Command::TrackPipeUsers {
            pipe: next(),
            marker: next(),
        },
        "user_data" => Command::UserData {
            marker: next(),
            user_id: next(),
        },
        "user_status" => Command::UserStatus { user_id: next() },
        "statistics" | "cgi_call" | "CometQL_call" => Command::Ignored,
        other => Command::Unknown(other),
    }
}

/// Most pipes one connection may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Longest `subscription` argument (32 names of up to 68 bytes).
pub const MAX_SUBSCRIPTION_TEXT: usize = 32 * 68;

/// The outcome of a `subscription` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriptions {
    /// The new list (at most [`MAX_SUBSCRIPTIONS`]).
    pub pipes: Vec<String>,
    /// An error frame to send, if the request broke a limit.
    pub error: Option<&'static str>,
    /// Whether the connection must close after the error.
    pub close: bool,
}

/// Reads the pipe list of a `subscription` command: names are separated by anything outside
/// `[A-Za-z0-9_-]`; names shorter than 2 characters are skipped.
pub fn subscriptions(args: &str) -> Subscriptions {
    if args.len() > MAX_SUBSCRIPTION_TEXT {
        return Subscriptions {
            pipes: Vec::new(),
            error: Some("Too many letters"),
            close: true,
        };
    }
    let mut pipes: Vec<String> = Vec::new();
    let mut error = None;
    for name in args.split(|c: char| !names::is_name_char(c)) {
        if name.len() < 2 {
            continue;
        }
        if name.len() >= 64 {
            return Subscriptions {
                pipes: Vec::new(),
                error: Some("Channel name is too long"),
                close: true,
            };
        }
        if pipes.iter().any(|p| p == name) {
            continue;
        }
        if pipes.len() == MAX_SUBSCRIPTIONS {
            error = Some("Too many letters");
            break;
        }
        pipes.push(name.to_string());
    }
    Subscriptions {
        pipes,
        error,
        close: false,
    }
}

/// Escapes a relayed web_pipe2 message the way CppComet did (MySQL's `real_escape_string`):
/// a backslash before `\`, `'`, `"`, and NUL, newline, carriage return and ^Z as `\0 \n \r \Z`.
/// The JS API undoes this.
pub fn escape(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out
}

/// `{"data":<data>,"event":"error","message_send_time":N,"pipe":"sys"}`.
pub fn error_frame(data: Value, now: i64) -> String {
    json!({"data": data, "event": "error", "message_send_time": now, "pipe": "sys"}).to_string()
}

/// An error with the usual `{"error": text}` data.
pub fn simple_error(text: &str, now: i64) -> String {
    error_frame(json!({"error": text}), now)
}

/// An error of a pipe command, which also carries `number_messages: -1`.
pub fn pipe_error(text: &str, now: i64) -> String {
    error_frame(json!({"error": text, "number_messages": -1}), now)
}

/// The frame closing a connection whose URL was refused.
pub fn url_error(text: &str, code: u16, now: i64) -> String {
    error_frame(
        json!({"error": text, "error_code": code, "info": "Closed due to error. See last message."}),
        now,
    )
}

/// The first frame of every connection.
pub fn server_info(authorized: bool, hash: &str, server: &str, now: i64) -> String {
    json!({
        "authorized": authorized,
        "data": hash,
        "event": "serverInfo",
        "message_send_time": now,
        "pipe": "sys",
        "server": server,
    })
    .to_string()
}

/// A web_pipe2 message relayed to the other subscribers.
pub fn relay_frame(pipe: &str, event: &str, escaped: &str, sender: i64, now: i64) -> String {
    json!({
        "data": escaped,
        "event": event,
        "message_send_time": now,
        "pipe": pipe,
        "user_id": sender,
    })
    .to_string()
}

/// The answer to the sender of a web_pipe2 message.
pub fn relay_answer(pipe: &str, escaped: &str, delivered: usize, now: i64) -> String {
    json!({
        "data": {"message": escaped, "number_messages": delivered},
        "event": "answer",
        "message_send_time": now,
        "pipe": format!("_answer_to_{pipe}"),
    })
    .to_string()
}

/// One history message sent by `pipe_log`.
pub fn history_frame(pipe: &str, event: &str, message: &str, user: i64, time: i64) -> String {
    json!({
        "data": message,
        "event": event,
        "fromQueue": true,
        "message_send_time": time,
        "pipe": pipe,
        "user_id": user,
    })
    .to_string()
}

/// The answer to `pipe_count` (CppComet sent `data` as a two-element array).
pub fn pipe_count_answer(marker: &str, count: usize, now: i64) -> String {
    json!({
        "data": ["user_in_pipe", count],
        "event": "user_in_pipe",
        "marker": marker,
        "message_send_time": now,
        "pipe": "_answer_pipe_count",
    })
    .to_string()
}

/// The answer to `track_pipe_users`.
pub fn track_users_answer(marker: &str, users: &[(i64, String)], now: i64) -> String {
    let data: Vec<Value> = users
        .iter()
        .map(|(u, uuid)| json!({"user_id": u, "uuid": uuid}))
        .collect();
    json!({
        "_info": "answer for track_pipe_users",
        "data": data,
        "event": "answer",
        "marker": marker,
        "message_send_time": now,
        "pipe": "_answer",
    })
    .to_string()
}

/// The answer to `user_data`.
pub fn user_data_answer(marker: &str, user: i64, data: &str, now: i64) -> String {
    json!({
        "data": {"user_data": data, "user_id": user},
        "event": "answer",
        "marker": marker,
        "message_send_time": now,
        "pipe": "_answer",
    })
    .to_string()
}

/// The answer to `user_status`: seconds since the user was last online (0 while online).
pub fn user_status_answer(user: i64, ago: i64, now: i64) -> String {
    json!({
        "data": {"data": ago, "last_online_time": ago},
        "event": format!("user_status_{user}"),
        "message_send_time": now,
        "pipe": "_answer_user_status",
    })
    .to_string()
}

/// Presence frames on `user_status_<id>`.
pub fn presence_frame(user: i64, online: bool) -> String {
    let s = if online { "online" } else { "offline" };
    json!({"data": s, "event": s, "pipe": format!("user_status_{user}")}).to_string()
}

/// Markers identify answers: `[A-Za-z0-9_-]`, up to 64 characters.
pub fn valid_marker(m: &str) -> bool {
    m.len() <= 64 && m.chars().all(names::is_name_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            parse("subscription\nweb_a\ntrack_b"),
            Command::Subscription("web_a\ntrack_b")
        );
        assert_eq!(
            parse("web_pipe2\nweb_x\nev\n*\n{\"a\":\n1}"),
            Command::WebPipe2 {
                pipe: "web_x",
                event: "ev",
                auth: "*",
                message: "{\"a\":\n1}"
            }
        );
        assert_eq!(
            parse("pipe_log\nweb_x\nm1\n"),
            Command::PipeLog {
                pipe: "web_x",
                marker: "m1"
            }
        );
        assert_eq!(parse("statistics\n{}"), Command::Ignored);
        assert_eq!(parse("bogus\nx"), Command::Unknown("bogus"));
        assert_eq!(parse(""), Command::Unknown(""));
    }

    #[test]
    fn subscription_limits() {
        let s = subscriptions("web_a\ntrack_b web_a,x\n");
        assert_eq!(s.pipes, ["web_a", "track_b"]);
        assert_eq!(s.error, None);
        let many: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
        let s = subscriptions(&many.join("\n"));
        assert_eq!(s.pipes.len(), 32);
        assert_eq!(s.error, Some("Too many letters"));
        assert!(!s.close);
        let s = subscriptions(&"a".repeat(64));
        assert!(s.close);
        let s = subscriptions(&"ab\n".repeat(1000));
        assert!(s.close, "over 2176 bytes");
    }

    #[test]
    fn escaping_like_mysql() {
        assert_eq!(escape(r#"{"a":'b'}"#), r#"{\"a\":\'b\'}"#);
        assert_eq!(escape("a\nb\\c\0"), "a\\nb\\\\c\\0");
    }

    #[test]
    fn frame_shapes() {
        assert_eq!(
            server_info(true, "h", "s", 5),
            r#"{"authorized":true,"data":"h","event":"serverInfo","message_send_time":5,"pipe":"sys","server":"s"}"#
        );
        assert_eq!(
            relay_answer("web_x", "m", 2, 5),
            r#"{"data":{"message":"m","number_messages":2},"event":"answer","message_send_time":5,"pipe":"_answer_to_web_x"}"#
        );
        assert_eq!(
            relay_frame("web_x", "e", "m", 3, 5),
            r#"{"data":"m","event":"e","message_send_time":5,"pipe":"web_x","user_id":3}"#
        );
        assert_eq!(
            pipe_count_answer("m", 4, 5),
            r#"{"data":["user_in_pipe",4],"event":"user_in_pipe","marker":"m","message_send_time":5,"pipe":"_answer_pipe_count"}"#
        );
    }
}
