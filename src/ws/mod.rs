//! The comet WebSocket protocol (contract section 3): how browsers running the CometServer JS
//! API receive events, subscribe to pipes, signal each other, and learn they are invited to a
//! call.
//!
//! - [`url`]: the positional `/ws/sesion=...&myid=...&devid=...&v=...&uuid=...` URL.
//! - [`jwt`]: HS256 tokens accepted in place of a users_auth hash.
//! - [`protocol`]: commands and frame shapes, no sockets.
//! - [`hub`]: live connections and subscriptions; implements [`crate::realtime::Realtime`], so
//!   CometQL statements deliver through it.
//! - [`server`]: the axum listener (plain `ws://`, or `wss://` with rustls) and the per-connection
//!   task.

pub mod hub;
pub mod jwt;
pub mod protocol;
pub mod server;
pub mod url;

pub use hub::Hub;
pub use server::WsContext;

/// Cuts `s` to at most `max` bytes, at a character boundary (`String::truncate` panics
/// inside a character; request lines and headers may carry UTF-8).
pub fn truncate_to_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// Text biased towards the protocol's own shapes (command names, `key=value&` URL parts,
    /// dots of a JWT) with arbitrary Unicode mixed in.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(subscription|web_pipe2|pipe_log|pipe_count|user_data|user_status)\n[a-z_\n\r.é]{0,80}",
            "(sesion=[^&]{0,700}&myid=-?[0-9é]{0,20}&devid=[0-9]{0,9}&v=[0-9.]{0,6}&uuid=.{0,40})",
            "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,50}",
        ]
    }

    proptest! {
        /// The stable counterpart of `fuzz/fuzz_targets/ws_protocol.rs`: whatever a browser
        /// sends in the URL, a frame or a token, parsing answers and never panics.
        #[test]
        fn parsers_take_any_text(s in text(), n in 0usize..700) {
            if let Some(tail) = super::url::ws_tail(&s) {
                let _ = super::url::parse(tail);
            }
            if let Ok(p) = super::url::parse(&s) {
                prop_assert!(p.session.len() <= 600);
            }
            let _ = super::protocol::parse(&s);
            let subs = super::protocol::subscriptions(&s);
            prop_assert!(subs.pipes.len() <= super::protocol::MAX_SUBSCRIPTIONS);
            let _ = super::protocol::escape(&s);
            let _ = super::protocol::valid_marker(&s);
            let _ = super::jwt::verify(&s, "pw", 0, 1, 0);
            let mut t = s.clone();
            super::truncate_to_char(&mut t, n);
            prop_assert!(t.len() <= n && s.starts_with(&t));
        }
    }
}
