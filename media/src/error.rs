//! Error type shared by every module of the crate.

use thiserror::Error;

/// Everything that can go wrong while turning payloads into frames and back.
///
/// Malformed input from the network always ends up here (never in a panic), so the caller can
/// count it and move on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// An RTP payload that does not follow its payload format (truncated, bad lengths, ...).
    #[error("malformed {format} payload: {reason}")]
    Malformed {
        /// Payload format, e.g. "H.264", "VP8", "Opus".
        format: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A payload format feature this crate does not implement (e.g. H.264 STAP-B, MTAP).
    #[error("unsupported {format} payload: {reason}")]
    Unsupported {
        /// Payload format.
        format: &'static str,
        /// What is not supported.
        reason: &'static str,
    },
    /// A codec library reported an error.
    #[error("{codec} error: {message}")]
    Codec {
        /// Codec name.
        codec: &'static str,
        /// Message from the library.
        message: String,
    },
    /// A caller handed in something that cannot work (wrong PCM length, odd frame size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl MediaError {
    pub(crate) fn malformed(format: &'static str, reason: &'static str) -> Self {
        MediaError::Malformed { format, reason }
    }

    pub(crate) fn codec(codec: &'static str, message: impl std::fmt::Display) -> Self {
        MediaError::Codec {
            codec,
            message: message.to_string(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, MediaError>;
