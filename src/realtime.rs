//! The seam between CometQL and live browser connections.
//!
//! CometQL statements deliver events (users_messages, pipes_messages, sys_sipCall), close users'
//! connections (DELETE FROM users_auth) and read presence (users_time, users_in_pipes, pipes).
//! They do it through [`Realtime`], which the comet WebSocket hub implements. Until a hub is
//! plugged in, [`Offline`] says nobody is connected, so personal messages are queued and pipes
//! have no subscribers: real behaviour, not a stub.
//!
//! The JSON frame builders live here too, because both sides need the same shapes
//! (contract sections 2.1 and 3; keys are sorted as the old server sorted them).

use serde_json::{Value, json};

use crate::store::{DevId, QueuedMessage, UserId};

/// One subscribed connection, as `users_in_pipes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PipeSubscriber {
    pub user_id: UserId,
    pub user_uuid: String,
    pub user_agent: String,
    pub ip: String,
    pub origin: String,
    pub language: String,
}

/// Live connections, as seen from CometQL.
pub trait Realtime: Send + Sync + 'static {
    /// Sends a text frame to every live connection of a user; returns how many got it.
    fn send_to_user(&self, dev: DevId, user: UserId, frame: &str) -> usize;
    /// Sends a text frame to every connection subscribed to a pipe; returns how many got it.
    fn send_to_pipe(&self, dev: DevId, pipe: &str, frame: &str) -> usize;
    /// Closes every live connection of a user; returns how many were closed.
    fn disconnect_user(&self, dev: DevId, user: UserId) -> usize;
    /// Whether the user has at least one live connection.
    fn is_online(&self, dev: DevId, user: UserId) -> bool;
    /// The connections subscribed to a pipe.
    fn pipe_subscribers(&self, dev: DevId, pipe: &str) -> Vec<PipeSubscriber>;
    /// How many connections are subscribed to a pipe.
    fn pipe_subscriber_count(&self, dev: DevId, pipe: &str) -> usize {
        self.pipe_subscribers(dev, pipe).len()
    }
}

/// No connections at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct Offline;

impl Realtime for Offline {
    fn send_to_user(&self, _: DevId, _: UserId, _: &str) -> usize {
        0
    }
    fn send_to_pipe(&self, _: DevId, _: &str, _: &str) -> usize {
        0
    }
    fn disconnect_user(&self, _: DevId, _: UserId) -> usize {
        0
    }
    fn is_online(&self, _: DevId, _: UserId) -> bool {
        false
    }
    fn pipe_subscribers(&self, _: DevId, _: &str) -> Vec<PipeSubscriber> {
        Vec::new()
    }
}

/// A personal message delivered live: `{"data":<data>,"event":"<event>","pipe":"msg"}`.
/// `data` is a string for users_messages and an object for sys_sipCall.
pub fn user_message_frame(event: &str, data: Value) -> String {
    json!({"data": data, "event": event, "pipe": "msg"}).to_string()
}

/// A personal message delivered from the offline queue: the message text as a string `data`,
/// plus `fromQueue` and the time it was queued.
pub fn queued_message_frame(m: &QueuedMessage) -> String {
    json!({
        "data": m.message,
        "event": m.event,
        "fromQueue": true,
        "message_send_time": m.time,
        "pipe": "msg",
    })
    .to_string()
}

/// A pipes_messages broadcast: `{"data":"<message>","event":"<ev>","message_send_time":N,"pipe":"<name>"}`.
pub fn pipe_message_frame(pipe: &str, event: &str, message: &str, time: i64) -> String {
    json!({"data": message, "event": event, "message_send_time": time, "pipe": pipe}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_old_shapes_with_sorted_keys() {
        assert_eq!(
            user_message_frame("ev", Value::String("hi".into())),
            r#"{"data":"hi","event":"ev","pipe":"msg"}"#
        );
        let q = QueuedMessage {
            index: 3,
            event: "ev".into(),
            message: "{\"a\":1}".into(),
            time: 1700000000,
        };
        assert_eq!(
            queued_message_frame(&q),
            r#"{"data":"{\"a\":1}","event":"ev","fromQueue":true,"message_send_time":1700000000,"pipe":"msg"}"#
        );
        assert_eq!(
            pipe_message_frame("chat", "m", "x", 5),
            r#"{"data":"x","event":"m","message_send_time":5,"pipe":"chat"}"#
        );
    }
}
