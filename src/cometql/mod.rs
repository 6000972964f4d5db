//! CometQL: SQL over the MySQL wire protocol (contract sections 1 and 2).
//!
//! - [`wire`]: sans-IO MySQL packet codec (greeting, native-password login, result sets, errors).
//! - [`parse`]: SQL text to a CometQL statement via sqlparser's MySQL dialect, with the contract's
//!   error codes for everything outside the grammar.
//! - [`engine`]: runs statements against the [`crate::store::Store`], the live connections
//!   ([`crate::realtime::Realtime`]) and the conference registry; no sockets.
//! - [`tables`]: one file per table.
//! - [`server`]: the TCP listener that moves bytes between sockets, codec and engine.

pub mod engine;
pub mod error;
pub mod parse;
pub mod server;
pub mod tables;
pub mod wire;

pub use engine::{Engine, Reply, Session, Settings};
pub use error::{CqlError, CqlResult};
