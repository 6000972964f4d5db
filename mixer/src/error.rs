//! The crate's error type: every bad size or unknown id is reported, never a panic.

/// Errors returned by the mixer, layout and compositor APIs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixerError {
    /// A PCM frame had the wrong number of samples.
    #[error("PCM frame has {got} samples, expected {expected}")]
    FrameLength { expected: usize, got: usize },
    /// A member id is not (or no longer) part of this mixer.
    #[error("unknown member id {0}")]
    UnknownMember(u32),
    /// The same member appeared twice in one frame's inputs.
    #[error("member {0} given more than once in one frame")]
    DuplicateInput(u32),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The member table is full.
    #[error("member capacity {0} reached")]
    CapacityReached(usize),
    /// An image or plane has inconsistent dimensions or too-short buffers.
    #[error("invalid image: {0}")]
    InvalidImage(&'static str),
    /// A canvas too small for the requested layout.
    #[error("canvas {width}x{height} too small for {tiles} tiles")]
    CanvasTooSmall {
        width: u32,
        height: u32,
        tiles: usize,
    },
    /// A layout was asked for more tiles than it supports.
    #[error("layout supports at most {max} tiles, asked for {got}")]
    TooManyTiles { max: usize, got: usize },
    /// Buffers passed to a conversion helper have mismatching lengths.
    #[error("buffer length mismatch: {0}")]
    BufferLength(&'static str),
}
