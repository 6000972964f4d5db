//! Any bytes: the SIP parser never panics, and what it accepts serializes to text that parses to
//! the same message.

#![no_main]

use comet_server::sip::message::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        let text = m.to_string();
        let again = parse(text.as_bytes()).expect("what we write parses");
        assert_eq!(again.to_string(), text);
    }
});
