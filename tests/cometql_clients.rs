//! CometQL through the clients existing users run: the `mariadb` CLI, PHP (mysqli and PDO, with
//! the old example backend's statements) and Python's PyMySQL.

mod common;

use std::process::Command;

use common::{PASSWORD, Server, tool};

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mariadb(s: &Server, password: &str, sql: &str) -> (bool, String, String) {
    run(Command::new(tool("mariadb"))
        .args(["-h", "127.0.0.1", "-P", &s.port().to_string(), "-u", "root"])
        .arg(format!("-p{password}"))
        .args(["--batch", "--skip-column-names", "CometQL_v1", "-e", sql]))
}

#[test]
fn mariadb_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (ok, out, err) = mariadb(
        &s,
        PASSWORD,
        "INSERT INTO users_auth (id, hash) VALUES (12, 'h12'); \
         SELECT * FROM users_auth WHERE id = 12; \
         INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', 12, 1, 'hi', 'video'); \
         SELECT name, user_id, profile, node FROM conference WHERE name = '101'; \
         SELECT @@version_comment;",
    );
    assert!(ok, "mariadb failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "12\th12");
    assert_eq!(
        lines[1],
        format!("101\t12\tvideo\t127.0.0.1:{}", s.sip.port())
    );
    assert!(lines[2].contains("comet-server"));

    let (ok, _, err) = mariadb(&s, "wrong", "SELECT 1");
    assert!(!ok);
    assert!(
        err.contains("ERROR 16") && err.contains("Authentication failure"),
        "{err}"
    );

    let (ok, _, err) = mariadb(&s, PASSWORD, "SELECT * FROM conference");
    assert!(!ok);
    assert!(err.contains("ERROR 13"), "{err}");
}

#[test]
fn php_mysqli_and_pdo_run_the_old_example_backend() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (ok, out, err) = run(Command::new(tool("php"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/backend.php"
        ))
        .arg(s.port().to_string())
        .arg(PASSWORD));
    assert!(ok, "php failed: {out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(v["wrong_password_errno"], 16);
    assert_eq!(v["insert_2"], 1);
    assert_eq!(v["insert_3"], 1);
    let rows = v["select"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "101");
    assert_eq!(rows[0]["user_id"], "2");
    assert_eq!(rows[0]["caller_id"], "2");
    assert_eq!(rows[0]["message"], "{}");
    assert_eq!(rows[0]["profile"], "video");
    assert_eq!(rows[0]["node"], format!("127.0.0.1:{}", s.sip.port()));
    assert_eq!(v["delete"], 1);
    assert_eq!(v["after_delete"], serde_json::json!([{"user_id": "3"}]));
    assert_eq!(v["error"][0], 13);
    assert_eq!(v["error"][1], "HY000");
    assert_eq!(v["escaped_roundtrip"], "it's \"quoted\"");
    assert_eq!(
        v["pdo_select"],
        serde_json::json!([{"user_id": "3", "profile": "video"}])
    );
    assert_eq!(v["pdo_error"], 15);
}

#[test]
fn python_pymysql() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    // Debian's interpreter, where python3-pymysql is installed.
    let (ok, out, err) = run(Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/pymysql_client.py"
        ))
        .arg(s.port().to_string())
        .arg(PASSWORD));
    assert!(
        ok,
        "pymysql client failed (python3-pymysql is installed by scripts/setup.sh): {out}\n{err}"
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(v["wrong_password"], 16);
    assert_eq!(v["insert_auth"], 1);
    assert_eq!(v["auth"], serde_json::json!([["42", "k3y"]]));
    assert_eq!(v["columns"], serde_json::json!(["id", "hash"]));
    assert_eq!(
        v["conference"],
        serde_json::json!([["42", "audio", format!("127.0.0.1:{}", s.sip.port())]])
    );
    assert_eq!(v["or_error"], 2);
}
