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
