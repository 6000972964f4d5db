//! Any sequence of frames into one connection's SIP core (lookups answered at once by a fake
//! store that knows user 0/123 invited to conference 101, offers answered at once): no panic,
//! every message the core sends parses, and closing ends every offered call exactly once.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use comet_server::sip::auth::DigestAuth;
use comet_server::sip::core::{Action, Connection, CoreConfig, Limits, LookupResult, Now};
use comet_server::sip::message::parse;
use comet_server::store::ConferenceRow;
use libfuzzer_sys::fuzz_target;

fn run(conn: &mut Connection, now: Now, actions: Vec<Action>, ended: &mut HashMap<String, u32>) {
    for a in actions {
        match a {
            Action::Send(text) if text != "\r\n" => {
                assert!(
                    parse(text.as_bytes()).is_ok(),
                    "unparseable output: {text:?}"
                );
            }
            Action::Lookup(l) => {
                let result = LookupResult::Found {
                    hash: ((l.dev, l.user) == (0, 123)).then(|| "hash-of-123".to_string()),
                    invitation: (l.conference.as_deref() == Some("101")).then(|| ConferenceRow {
                        name: "101".into(),
                        user_id: 123,
                        caller_id: 0,
                        message: String::new(),
                        profile: "video".into(),
                        stream: String::new(),
                        node: String::new(),
                        time: 0,
                    }),
                };
                let more = conn.on_lookup(l.id, result, now);
                run(conn, now, more, ended);
            }
            Action::Offer { call, token, .. } | Action::Reoffer { call, token, .. } => {
                ended.entry(call.id.to_string()).or_default();
                let more = conn.on_answer(call.id, token, Ok("v=0\r\n".into()), now);
                run(conn, now, more, ended);
            }
            Action::Ended { call, .. } => {
                *ended.entry(call.id.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = CoreConfig {
        host: "sip.test".into(),
        auth: Arc::new(DigestAuth::new("sip.test", [1; 32])),
        limits: Limits::default(),
        stats: Default::default(),
        gate: None,
        node: None,
    };
    let mut conn = Connection::new(Arc::new(cfg), 1, "127.0.0.1:9".parse().unwrap(), false);
    let now = Now::system();
    let mut ended = HashMap::new();
    // Frames are separated by a NUL byte.
    for frame in data.split(|&b| b == 0) {
        let actions = conn.on_message(frame, now);
        run(&mut conn, now, actions, &mut ended);
    }
    let actions = conn.close();
    run(&mut conn, now, actions, &mut ended);
    assert!(ended.values().all(|&n| n == 1), "{ended:?}");
});
