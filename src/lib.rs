//! comet-server
