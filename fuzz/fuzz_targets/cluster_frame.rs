//! Any bytes as a cluster link frame (a media node's frame to the head, the head's to a node):
//! it parses or is an error, never a panic, and whatever parses serializes back to a frame
//! that parses to the same value.

#![no_main]

use comet_server::cluster::{ToHead, ToNode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<ToHead>(data) {
        let text = serde_json::to_string(&m).expect("serializable");
        assert_eq!(serde_json::from_str::<ToHead>(&text).ok(), Some(m));
    }
    if let Ok(m) = serde_json::from_slice::<ToNode>(data) {
        let text = serde_json::to_string(&m).expect("serializable");
        assert_eq!(serde_json::from_str::<ToNode>(&text).ok(), Some(m));
    }
});
