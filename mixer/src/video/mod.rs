//! I420 video: layout geometry, per-subscriber canvas planning and compositing.

pub mod compose;
pub mod image;
pub mod layout;
pub mod plan;
pub(crate) mod scale;
