//! CometQL errors: MySQL ERR packets with CometQL's own codes (contract section 1).

use std::fmt;

/// Error codes clients depend on.
pub mod code {
    pub const UNDEFINED: u16 = 1;
    pub const NOT_IMPLEMENTED: u16 = 2;
    pub const SYNTAX: u16 = 3;
    pub const READ_ONLY: u16 = 10;
    pub const TOO_LONG: u16 = 11;
    pub const INVALID_DATA: u16 = 12;
    pub const KEY_REQUIRED: u16 = 13;
    pub const BAD_COLUMNS: u16 = 14;
    pub const NOT_FOUND: u16 = 15;
    pub const AUTH: u16 = 16;
    pub const TOO_SHORT: u16 = 17;
    pub const TOO_MANY_CONDITIONS: u16 = 18;
    pub const TOO_MANY_VALUES: u16 = 19;
    pub const TOO_MANY_COLUMNS: u16 = 20;
    pub const TOO_MANY_NAMES: u16 = 21;
    pub const ACCESS_DENIED: u16 = 403;
    pub const INTERNAL: u16 = 500;
    /// MySQL's own `ER_CON_COUNT_ERROR` ("Too many connections"), sent instead of the greeting
    /// when the listener is at `max_connections`: what MySQL clients already recognise.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
}

/// A statement that failed; sent as an ERR packet with SQL state HY000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlError {
    pub code: u16,
    pub message: String,
}

impl CqlError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        CqlError {
            code,
            message: message.into(),
        }
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(code::NOT_IMPLEMENTED, message)
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(code::SYNTAX, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_DATA, message)
    }

    pub fn read_only(table: &str) -> Self {
        Self::new(code::READ_ONLY, format!("Table `{table}` is read only"))
    }

    pub fn key_required(columns: &str) -> Self {
        Self::new(
            code::KEY_REQUIRED,
            format!(
                "Selection without transferring the requested values of the primary key is not \
                 supported (WHERE {columns} is required)"
            ),
        )
    }

    pub fn no_table(name: &str) -> Self {
        Self::new(code::NOT_FOUND, format!("Table doesn't exist: `{name}`"))
    }

    pub fn no_column(name: &str) -> Self {
        Self::new(
            code::BAD_COLUMNS,
            format!("Not a specific column: `{name}`"),
        )
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(code::INTERNAL, format!("internal server error: {message}"))
    }
}

impl fmt::Display for CqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for CqlError {}

impl From<crate::store::StoreError> for CqlError {
    fn from(e: crate::store::StoreError) -> Self {
        CqlError::internal(e)
    }
}

pub type CqlResult<T> = Result<T, CqlError>;
