//! CometQL through a real MySQL client library (`mysql_async`) against the real server binary:
//! every table's rules and every error code of the contract.

mod common;

use common::{PASSWORD, Server, connect, err_code, mysql_opts};
use mysql_async::prelude::*;

async fn rows(c: &mut mysql_async::Conn, sql: &str) -> Vec<Vec<String>> {
    let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i).flatten().unwrap_or_default())
                .collect()
        })
        .collect()
}

async fn code_of(c: &mut mysql_async::Conn, sql: &str) -> u16 {
    match c.query_drop(sql).await {
        Ok(()) => panic!("`{sql}` should have failed"),
        Err(e) => err_code(e),
    }
}

#[tokio::test]
async fn login_databases_and_meta_statements() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());

    // Wrong password: error 16, connection refused.
    let e = mysql_async::Conn::new(mysql_opts(&s, "root", "wrong", None))
        .await
        .unwrap_err();
    assert_eq!(err_code(e), 16);
    // A user name that is not a dev_id: error 16.
    let e = mysql_async::Conn::new(mysql_opts(&s, "admin", PASSWORD, None))
        .await
        .unwrap_err();
    assert_eq!(err_code(e), 16);
    // Unknown database at connect: error 15.
    let e = mysql_async::Conn::new(mysql_opts(&s, "root", PASSWORD, Some("nope")))
        .await
        .unwrap_err();
    assert_eq!(err_code(e), 15);

    let mut c = connect(&s).await;
    c.query_drop("SET NAMES utf8").await.unwrap();
    c.query_drop("SET autocommit=1").await.unwrap();
    let v = rows(&mut c, "SELECT @@version_comment LIMIT 1").await;
    assert!(v[0][0].contains("comet-server"), "{v:?}");
    assert_eq!(rows(&mut c, "SELECT DATABASE()").await, [["CometQL_v1"]]);
    let t = rows(&mut c, "SHOW TABLES").await;
    let names: Vec<&str> = t.iter().map(|r| r[0].as_str()).collect();
    for want in [
        "users_auth",
        "users_time",
        "users_messages",
        "pipes_messages",
        "users_in_pipes",
        "pipes",
        "conference",
        "conference_members",
    ] {
        assert!(names.contains(&want), "SHOW TABLES lacks {want}: {names:?}");
    }
    let d = rows(&mut c, "DESCRIBE users_auth").await;
    assert_eq!(d[0][..4], ["id", "int(11)", "NO", "PRI"]);
    assert_eq!(d[1][0], "hash");
    let d = rows(&mut c, "SHOW COLUMNS FROM conference_members").await;
    assert_eq!(
        d.iter().map(|r| r[0].as_str()).collect::<Vec<_>>()[..4],
        ["name", "user_id", "join_time", "last_talking"]
    );
    assert_eq!(rows(&mut c, "SHOW DATABASES").await, [["CometQL_v1"]]);
    c.ping().await.unwrap();
    // USE db_<N> switches developer; anything else is error 15.
    c.query_drop("USE db_7").await.unwrap();
    assert_eq!(rows(&mut c, "SELECT DATABASE()").await, [["db_7"]]);
    assert_eq!(code_of(&mut c, "USE somewhere_else").await, 15);
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn users_auth_time_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut c = connect(&s).await;

    let r = c
        .exec_iter("INSERT INTO users_auth (id, hash) VALUES (5, 'abc')", ())
        .await;
    // Prepared statements are refused clearly (error 2); the text protocol is the API.
    match r {
        Ok(_) => panic!("prepared statements should be refused"),
        Err(e) => assert_eq!(err_code(e), 2),
    }

    c.query_drop("INSERT INTO users_auth (id, hash) VALUES (5, 'abc')")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);
    c.query_drop("INSERT INTO users_auth VALUES (6, 'def')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO users_auth (id, hash) VALUES (5, 'xyz')")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut c, "SELECT * FROM users_auth WHERE id IN (5, 6, 7)").await,
        [["5", "xyz"], ["6", "def"]]
    );
    // AND is honoured on every table.
    assert_eq!(
        rows(
            &mut c,
            "SELECT id FROM users_auth WHERE id IN (5, 6) AND hash = 'def'"
        )
        .await,
        [["6"]]
    );
    assert!(
        rows(
            &mut c,
            "SELECT id FROM users_auth WHERE id = 5 AND hash = 'nope'"
        )
        .await
        .is_empty()
    );
    assert_eq!(
        rows(&mut c, "SELECT hash, id FROM 'users_auth' WHERE 'id' = '6'").await,
        [["def", "6"]]
    );
    assert_eq!(
        rows(
            &mut c,
            "SELECT * FROM users_auth WHERE id IN (5, 6) LIMIT 1, 1"
        )
        .await,
        [["6", "def"]]
    );
    c.query_drop("DELETE FROM users_auth WHERE id = 6")
        .await
        .unwrap();
    assert!(
        rows(&mut c, "SELECT * FROM users_auth WHERE id = 6")
            .await
            .is_empty()
    );

    // users_time: nobody is connected over the comet WebSocket in this test.
    assert_eq!(
        rows(&mut c, "SELECT * FROM users_time WHERE id = 5").await,
        [["5", "-1"]]
    );

    // users_messages to an offline user is queued (at most 10, oldest dropped).
    for i in 0..12 {
        c.query_drop(format!(
            "INSERT INTO users_messages (id, event, message) VALUES (9, 'ev', 'm{i}')"
        ))
        .await
        .unwrap();
    }
    let q = rows(&mut c, "SELECT * FROM users_messages WHERE id = 9").await;
    assert_eq!(q.len(), 10);
    assert_eq!(q[0][3], "m2");
    assert_eq!(q[9][3], "m11");
    assert_eq!(q[0][2], "ev");
    c.query_drop("DELETE FROM users_messages WHERE id = 9")
        .await
        .unwrap();
    assert!(
        rows(&mut c, "SELECT * FROM users_messages WHERE id = 9")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn pipes_history_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut c = connect(&s).await;

    // No history by default.
    c.query_drop(
        "INSERT INTO pipes_messages (name, event, message) VALUES ('web_chat', 'msg', 'a')",
    )
    .await
    .unwrap();
    assert!(
        rows(
            &mut c,
            "SELECT * FROM pipes_messages WHERE name = 'web_chat'"
        )
        .await
        .is_empty()
    );
    // pipes_settings turns it on, with a length.
    c.query_drop("INSERT INTO pipes_settings (name, length) VALUES ('web_chat', 2)")
        .await
        .unwrap();
    assert_eq!(
        rows(
            &mut c,
            "SELECT * FROM pipes_settings WHERE name = 'web_chat'"
        )
        .await,
        [["web_chat", "2"]]
    );
    for m in ["b", "c", "d"] {
        c.query_drop(format!(
            "INSERT INTO pipes_messages (name, event, message) VALUES ('web_chat', 'msg', '{m}')"
        ))
        .await
        .unwrap();
    }
    let h = rows(
        &mut c,
        "SELECT name, `index`, event, message, user_id FROM pipes_messages WHERE name = 'web_chat'",
    )
    .await;
    assert_eq!(
        h,
        [
            ["web_chat", "0", "msg", "c", "0"],
            ["web_chat", "1", "msg", "d", "0"]
        ]
    );
    c.query_drop("DELETE FROM pipes_messages WHERE name = 'web_chat'")
        .await
        .unwrap();
    assert!(
        rows(
            &mut c,
            "SELECT * FROM pipes_messages WHERE name = 'web_chat'"
        )
        .await
        .is_empty()
    );
    c.query_drop("DELETE FROM pipes_settings WHERE name = 'web_chat'")
        .await
        .unwrap();
    assert!(
        rows(
            &mut c,
            "SELECT * FROM pipes_settings WHERE name = 'web_chat'"
        )
        .await
        .is_empty()
    );

    // Live tables answer from the (empty) set of WebSocket connections.
    assert_eq!(
        rows(
            &mut c,
            "SELECT * FROM pipes WHERE name IN ('web_chat', 'track_x')"
        )
        .await,
        [["web_chat", "0"], ["track_x", "0"]]
    );
    assert!(
        rows(
            &mut c,
            "SELECT * FROM users_in_pipes WHERE name = 'web_chat'"
        )
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn conference_invitations_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut c = connect(&s).await;

    for uid in [2, 3] {
        c.query_drop(format!(
            "INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', {uid}, 2, '{{}}', 'video')"
        ))
        .await
        .unwrap();
        assert_eq!(c.affected_rows(), 1);
    }
    let r = rows(&mut c, "SELECT * FROM conference WHERE name = '101'").await;
    assert_eq!(r.len(), 2);
    let node = format!("127.0.0.1:{}", s.sip.port());
    assert_eq!(r[0], ["101", "2", "2", "{}", "video", "", node.as_str()]);
    assert_eq!(r[1][1], "3");

    // The invited user is offline: the sys_sipCall event waits in the queue, with the
    // contract's JSON (data as a string).
    let q = rows(
        &mut c,
        "SELECT event, message FROM users_messages WHERE id = 2",
    )
    .await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0][0], "sys_sipCall");
    let data: serde_json::Value = serde_json::from_str(&q[0][1]).unwrap();
    let sys = &data["sys"];
    assert_eq!(data["message"], "{}");
    assert_eq!(sys["conference"], "true");
    assert_eq!(sys["conference_name"], "101");
    assert_eq!(sys["mode"], "video");
    assert_eq!(sys["caller_id"], 2);
    assert_eq!(sys["serverName"], "127.0.0.1");
    assert_eq!(sys["serverPort"], s.sip.port());
    assert_eq!(sys["sipNumber"], "0*101*video");
    assert_eq!(sys["stream"], 0);
    assert_eq!(
        sys["callPipe"],
        comet_server::conference::callpipe::call_pipe(
            "0*101*video",
            "127.0.0.1",
            s.sip.port(),
            0,
            "pipesalt"
        )
    );
    assert_eq!(sys["callKey"].as_str().unwrap().len(), 36);
    let q3 = rows(&mut c, "SELECT message FROM users_messages WHERE id = 3").await;
    let data3: serde_json::Value = serde_json::from_str(&q3[0][0]).unwrap();
    assert_eq!(
        data3["sys"]["callPipe"], sys["callPipe"],
        "one pipe per conference"
    );
    assert_ne!(
        data3["sys"]["callKey"], sys["callKey"],
        "one key per invitation"
    );

    // Defaults: caller_id 0, profile default.
    c.query_drop("INSERT INTO conference (name, user_id, message) VALUES ('room_b', 4, 'hi')")
        .await
        .unwrap();
    assert_eq!(
        rows(
            &mut c,
            "SELECT caller_id, profile FROM conference WHERE name = 'room_b'"
        )
        .await,
        [["0", "default"]]
    );

    // DELETE with user_id removes one invitation; without, the whole conference.
    c.query_drop("DELETE FROM conference WHERE name='101' AND user_id=2")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);
    let r = rows(&mut c, "SELECT user_id FROM conference WHERE name = '101'").await;
    assert_eq!(r, [["3"]]);
    c.query_drop("DELETE FROM conference WHERE name='101'")
        .await
        .unwrap();
    assert!(
        rows(&mut c, "SELECT * FROM conference WHERE name = '101'")
            .await
            .is_empty()
    );

    // Nobody has joined any media conference.
    assert!(
        rows(&mut c, "SELECT * FROM conference_members")
            .await
            .is_empty()
    );
    assert!(
        rows(
            &mut c,
            "SELECT * FROM conference_members WHERE name = 'room_b'"
        )
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn developers_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut one = mysql_async::Conn::new(mysql_opts(&s, "1", PASSWORD, Some("CometQL_v1")))
        .await
        .unwrap();
    let mut two = mysql_async::Conn::new(mysql_opts(&s, "root", PASSWORD, Some("db_2")))
        .await
        .unwrap();
    one.query_drop("INSERT INTO users_auth (id, hash) VALUES (1, 'one')")
        .await
        .unwrap();
    two.query_drop("INSERT INTO users_auth (id, hash) VALUES (1, 'two')")
        .await
        .unwrap();
    one.query_drop("INSERT INTO conference (name, user_id, message) VALUES ('r', 1, '')")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut one, "SELECT hash FROM users_auth WHERE id = 1").await,
        [["one"]]
    );
    assert_eq!(
        rows(&mut two, "SELECT hash FROM users_auth WHERE id = 1").await,
        [["two"]]
    );
    assert!(
        rows(&mut two, "SELECT * FROM conference WHERE name = 'r'")
            .await
            .is_empty()
    );
    let q = rows(&mut one, "SELECT message FROM users_messages WHERE id = 1").await;
    let data: serde_json::Value = serde_json::from_str(&q[0][0]).unwrap();
    assert_eq!(data["sys"]["sipNumber"], "1*r*default");
    // A switch with db_<N> moves a connection to another developer's space.
    two.query_drop("USE db_1").await.unwrap();
    assert_eq!(
        rows(&mut two, "SELECT hash FROM users_auth WHERE id = 1").await,
        [["one"]]
    );
}

#[tokio::test]
async fn every_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut c = connect(&s).await;
    // 2: not implemented (OR, ORDER BY, operators other than = and IN, UPDATE of a read-only view).
    assert_eq!(
        code_of(&mut c, "SELECT * FROM users_auth WHERE id = 1 OR id = 2").await,
        2
    );
    assert_eq!(
        code_of(&mut c, "SELECT * FROM users_auth WHERE id = 1 ORDER BY id").await,
        2
    );
    assert_eq!(
        code_of(&mut c, "SELECT * FROM users_auth WHERE id > 1").await,
        2
    );
    assert_eq!(
        code_of(&mut c, "DELETE FROM users_auth WHERE hash = 'x'").await,
        2
    );
    // 3: syntax.
    assert_eq!(code_of(&mut c, "SELEC * FROM users_auth").await, 3);
    // 10: read-only tables.
    assert_eq!(
        code_of(&mut c, "INSERT INTO users_time (id, time) VALUES (1, 2)").await,
        10
    );
    assert_eq!(
        code_of(&mut c, "DELETE FROM pipes WHERE name = 'abc'").await,
        10
    );
    assert_eq!(
        code_of(
            &mut c,
            "INSERT INTO conference_members (name, user_id) VALUES ('a', 1)"
        )
        .await,
        10
    );
    // 11: too long (query, hash, pipe name).
    let long = format!("SELECT * FROM users_auth WHERE id = '{}'", "1".repeat(9000));
    assert_eq!(code_of(&mut c, &long).await, 11);
    let h = "a".repeat(33);
    assert_eq!(
        code_of(
            &mut c,
            &format!("INSERT INTO users_auth (id, hash) VALUES (1, '{h}')")
        )
        .await,
        11
    );
    let p = "p".repeat(65);
    assert_eq!(
        code_of(
            &mut c,
            &format!("INSERT INTO pipes_messages (name, event, message) VALUES ('{p}', 'e', 'm')")
        )
        .await,
        11
    );
    // 12: invalid data / missing field.
    assert_eq!(
        code_of(
            &mut c,
            "INSERT INTO users_auth (id, hash) VALUES (1, 'a b')"
        )
        .await,
        12
    );
    assert_eq!(
        code_of(&mut c, "INSERT INTO users_auth (id, hash) VALUES (0, 'ab')").await,
        12
    );
    assert_eq!(
        code_of(&mut c, "INSERT INTO users_auth (id) VALUES (1)").await,
        12
    );
    assert_eq!(
        code_of(
            &mut c,
            "INSERT INTO conference (name, user_id, message) VALUES ('a*b', 1, '')"
        )
        .await,
        12
    );
    assert_eq!(
        code_of(
            &mut c,
            "INSERT INTO conference (name, user_id, message) VALUES ('a', -1, '')"
        )
        .await,
        12
    );
    assert_eq!(
        code_of(
            &mut c,
            "INSERT INTO conference (name, user_id, message, profile) VALUES ('a', 1, '', 'nope')"
        )
        .await,
        12
    );
    assert_eq!(
        code_of(&mut c, "SELECT * FROM conference WHERE name = 'bad name'").await,
        12
    );
    assert_eq!(
        code_of(&mut c, "SELECT * FROM users_auth WHERE id = 'x'").await,
        12
    );
    // 13: key missing, column used twice.
    assert_eq!(code_of(&mut c, "SELECT * FROM users_auth").await, 13);
    assert_eq!(code_of(&mut c, "SELECT * FROM conference").await, 13);
    assert_eq!(code_of(&mut c, "DELETE FROM conference").await, 13);
    assert_eq!(
        code_of(&mut c, "SELECT id, id FROM users_auth WHERE id = 1").await,
        13
    );
    // 14: bad column list.
    assert_eq!(
        code_of(&mut c, "SELECT nope FROM users_auth WHERE id = 1").await,
        14
    );
    assert_eq!(
        code_of(&mut c, "SELECT * FROM users_auth WHERE nope = 1").await,
        14
    );
    assert_eq!(
        code_of(&mut c, "INSERT INTO users_auth (id, hash) VALUES (1)").await,
        14
    );
    assert_eq!(
        code_of(&mut c, "INSERT INTO users_auth VALUES (1, 'a', 'b')").await,
        14
    );
    // 15: no such table.
    assert_eq!(code_of(&mut c, "SELECT * FROM nope WHERE id = 1").await, 15);
    assert_eq!(code_of(&mut c, "DESCRIBE nope").await, 15);
    // 17: too short (query, pipe name).
    assert_eq!(code_of(&mut c, "SEL").await, 17);
    assert_eq!(
        code_of(
            &mut c,
            "INSERT INTO pipes_messages (name, event, message) VALUES ('ab', 'e', 'm')"
        )
        .await,
        17
    );
    // 18: too many conditions.
    let conds: Vec<String> = (0..11).map(|i| format!("c{i} = 1")).collect();
    assert_eq!(
        code_of(
            &mut c,
            &format!("SELECT * FROM users_auth WHERE {}", conds.join(" AND "))
        )
        .await,
        18
    );
    // ... also for a chain of `&&` as long as a query may be: the server walks it without
    // recursing (it used to overflow the worker's stack and abort).
    let chain = vec!["id = 1"; 8900 / 8].join("&&");
    assert_eq!(
        code_of(&mut c, &format!("SELECT * FROM users_time WHERE {chain}")).await,
        18
    );
    // A LIKE pattern of many `%` that matches nothing is answered at once (it used to
    // backtrack for hours on a worker thread).
    let pattern = format!("{}#", "%".repeat(40));
    assert!(
        rows(&mut c, &format!("SHOW VARIABLES LIKE '{pattern}'"))
            .await
            .is_empty()
    );
    // 19: too many values.
    let ones = vec!["1"; 4001].join(",");
    assert_eq!(
        code_of(
            &mut c,
            &format!("SELECT * FROM users_auth WHERE id IN ({ones})")
        )
        .await,
        19
    );
    // 20: too many columns.
    let cols: Vec<String> = (0..21).map(|i| format!("c{i}")).collect();
    assert_eq!(
        code_of(
            &mut c,
            &format!("SELECT {} FROM users_auth WHERE id = 1", cols.join(", "))
        )
        .await,
        20
    );
    // 21: too many names.
    let vals = vec!["1"; 21].join(",");
    assert_eq!(
        code_of(
            &mut c,
            &format!(
                "INSERT INTO users_auth ({}) VALUES ({vals})",
                cols.join(", ")
            )
        )
        .await,
        21
    );
    // The connection survives every error.
    assert_eq!(rows(&mut c, "SELECT 1").await, [["1"]]);
}
