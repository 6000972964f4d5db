//! CometQL statements: any bytes as SQL text must give a statement or a CometQL error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = comet_server::cometql::parse::parse(sql);
    }
});
