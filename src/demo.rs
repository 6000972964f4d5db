//! The demo: a page at `/` where a person picks a room and a user id and joins a conference,
//! and the small backend endpoint (`/demo/api/`) that does what a customer's backend does for
//! it. Every change goes through CometQL statements run by [`Engine::execute`] as dev 0 — the
//! code path of a MySQL client — never through the store directly.
//!
//! Safety: the demo is served only when `[http] demo` allows it (by default: on a loopback
//! listener only; then requests must also name a loopback host, which stops DNS rebinding).
//! Even when turned on for a public listener it cannot take over anything that is not the
//! demo's: it issues keys only to user ids that have none or a demo key (`demo_...`), joins only
//! rooms whose invitations are all demo users, and mutes or removes only demo users.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cometql::{CqlError, Engine, Reply, Session};

/// Keys the demo issues start with this, and only such keys are the demo's to reuse.
pub const DEMO_KEY_PREFIX: &str = "demo_";

/// Largest user id the demo accepts (a SIP user name is the 6-digit dev_id and the user id).
const MAX_USER_ID: i64 = 999_999_999;

/// Most invitations a room may have for the demo to check it.
const MAX_ROOM_INVITATIONS: usize = 100;

/// The demo's backend.
pub struct Demo {
    engine: Arc<Engine>,
    /// `[http] demo = auto` on loopback: answer only requests for a loopback host name.
    loopback_hosts_only: bool,
    /// The conference profile the demo invites with.
    profile: String,
}

/// An answer the page shows: a status and a message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<CqlError> for ApiError {
    fn from(e: CqlError) -> Self {
        let status = if e.code == crate::cometql::error::code::INTERNAL {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError(status, format!("CometQL error {}: {}", e.code, e.message))
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::CONFLICT, msg.into())
}

/// Whether a `Host` header names this machine (`localhost`, `*.localhost`, a loopback IP).
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_user(id: i64) -> Result<i64, ApiError> {
    if (1..=MAX_USER_ID).contains(&id) {
        Ok(id)
    } else {
        Err(bad(format!(
            "a user id is a number from 1 to {MAX_USER_ID}"
        )))
    }
}

fn check_room(room: &str) -> Result<&str, ApiError> {
    if crate::names::is_conference_name(room) {
        Ok(room)
    } else {
        Err(bad("a room name is 1-64 characters of A-Z a-z 0-9 _ -"))
    }
}

fn new_key() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..26)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{DEMO_KEY_PREFIX}{tail}")
}

/// Rows of a reply as JSON objects; integer values become numbers, except in name columns.
pub fn rows_json(reply: &Reply) -> Vec<Value> {
    let Reply::Rows { columns, rows, .. } = reply else {
        return Vec::new();
    };
    rows.iter()
        .map(|row| {
            let mut o = serde_json::Map::new();
            for (c, v) in columns.iter().zip(row) {
                let v = match v {
                    None => Value::Null,
                    Some(s) if ["name", "profile", "layout"].contains(&c.as_str()) => {
                        Value::from(s.clone())
                    }
                    Some(s) => s
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| Value::from(s.clone())),
                };
                o.insert(c.clone(), v);
            }
            Value::Object(o)
        })
        .collect()
}

fn first_text(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Rows { rows, .. } => rows.first().and_then(|r| r.first().cloned().flatten()),
        Reply::Ok { .. } => None,
    }
}

fn column_texts(reply: &Reply, col: usize) -> Vec<String> {
    match reply {
        Reply::Rows { rows, .. } => rows
            .iter()
            .filter_map(|r| r.get(col).cloned().flatten())
            .collect(),
        Reply::Ok { .. } => Vec::new(),
    }
}

#[derive(Deserialize)]
struct UserReq {
    user_id: i64,
}

#[derive(Deserialize)]
struct RoomUserReq {
    room: String,
    user_id: i64,
}

#[derive(Deserialize)]
struct MuteReq {
    room: String,
    user_id: i64,
    /// Whether the member's audio goes into the mix (false: muted).
    audio: bool,
}

#[derive(Deserialize)]
struct RoomQuery {
    room: String,
}

impl Demo {
    pub fn new(engine: Arc<Engine>, loopback_hosts_only: bool, profile: String) -> Self {
        Demo {
            engine,
            loopback_hosts_only,
            profile,
        }
    }

    /// Runs one CometQL statement as dev 0, as a backend logged in with the dev_key would.
    async fn sql(&self, statement: &str) -> Result<Reply, ApiError> {
        let mut session = Session {
            dev: 0,
            authorized: true,
            database: Some("CometQL_v1".into()),
            connection_id: 0,
            user: "demo".into(),
        };
        Ok(self.engine.execute(&mut session, statement).await?)
    }

    async fn user_key(&self, id: i64) -> Result<Option<String>, ApiError> {
        let r = self
            .sql(&format!("SELECT hash FROM users_auth WHERE id = {id}"))
            .await?;
        Ok(first_text(&r))
    }

    /// Fails unless `id` has a demo key.
    async fn demo_user(&self, id: i64) -> Result<(), ApiError> {
        match self.user_key(id).await? {
            Some(k) if k.starts_with(DEMO_KEY_PREFIX) => Ok(()),
            _ => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("user {id} is not a demo user: start a demo session first"),
            )),
        }
    }

    /// `INSERT INTO users_auth`: the user's key (their comet session and SIP password).
    async fn session(&self, id: i64) -> ApiResult {
        let id = check_user(id)?;
        let key = match self.user_key(id).await? {
            Some(k) if k.starts_with(DEMO_KEY_PREFIX) => k,
            Some(_) => {
                return Err(conflict(format!(
                    "user {id} has a key the demo did not issue; pick another user id"
                )));
            }
            None => {
                let k = new_key();
                self.sql(&format!(
                    "INSERT INTO users_auth (id, hash) VALUES ({id}, '{k}')"
                ))
                .await?;
                k
            }
        };
        Ok(Json(json!({ "dev_id": 0, "user_id": id, "user_key": key })))
    }

    /// `INSERT INTO conference`: invites the user to the room; the server then sends the
    /// `sys_sipCall` event to their comet connections.
    async fn join(&self, room: &str, id: i64) -> ApiResult {
        let room = check_room(room)?;
        let id = check_user(id)?;
        self.demo_user(id).await?;
        let invited = self
            .sql(&format!(
                "SELECT user_id FROM conference WHERE name = '{room}'"
            ))
            .await?;
        let mut others: Vec<String> = column_texts(&invited, 0)
            .into_iter()
            .filter(|u| u.parse::<i64>().ok() != Some(id))
            .collect();
        others.sort();
        others.dedup();
        if others.len() > MAX_ROOM_INVITATIONS {
            return Err(conflict(format!(
                "room {room} has more than {MAX_ROOM_INVITATIONS} invitations"
            )));
        }
        if !others.is_empty() {
            let keys = self
                .sql(&format!(
                    "SELECT id, hash FROM users_auth WHERE id IN ({})",
                    others.join(", ")
                ))
                .await?;
            let demo_ids: Vec<String> = match &keys {
                Reply::Rows { rows, .. } => rows
                    .iter()
                    .filter(|r| {
                        r.get(1)
                            .cloned()
                            .flatten()
                            .is_some_and(|h| h.starts_with(DEMO_KEY_PREFIX))
                    })
                    .filter_map(|r| r.first().cloned().flatten())
                    .collect(),
                Reply::Ok { .. } => Vec::new(),
            };
            if others.iter().any(|o| !demo_ids.contains(o)) {
                return Err(conflict(format!(
                    "room {room} is in use by users that are not the demo's; pick another room"
                )));
            }
        }
        let profile = &self.profile;
        self.sql(&format!(
            "INSERT INTO conference (name, user_id, caller_id, message, profile) \
             VALUES ('{room}', {id}, {id}, '{{\"demo\":true}}', '{profile}')"
        ))
        .await?;
        Ok(Json(
            json!({ "room": room, "user_id": id, "profile": profile }),
        ))
    }

    /// `SELECT * FROM conference_members`: who is in the room now.
    async fn members(&self, room: &str) -> ApiResult {
        let room = check_room(room)?;
        let r = self
            .sql(&format!(
                "SELECT * FROM conference_members WHERE name = '{room}'"
            ))
            .await?;
        Ok(Json(json!({ "room": room, "members": rows_json(&r) })))
    }

    /// `UPDATE conference_members SET audio = ...`: a server-side mute (the mix leaves the
    /// member out) that every member list shows.
    async fn mute(&self, room: &str, id: i64, audio: bool) -> ApiResult {
        let room = check_room(room)?;
        let id = check_user(id)?;
        self.demo_user(id).await?;
        let r = self
            .sql(&format!(
                "UPDATE conference_members SET audio = {} WHERE name = '{room}' AND user_id = {id}",
                u8::from(audio)
            ))
            .await?;
        let affected = match r {
            Reply::Ok { affected, .. } => affected,
            Reply::Rows { .. } => 0,
        };
        Ok(Json(json!({ "affected": affected, "audio": audio })))
    }

    /// `DELETE FROM conference ... AND user_id`: removes the invitation (and hangs up a call
    /// still up).
    async fn leave(&self, room: &str, id: i64) -> ApiResult {
        let room = check_room(room)?;
        let id = check_user(id)?;
        self.demo_user(id).await?;
        self.sql(&format!(
            "DELETE FROM conference WHERE name = '{room}' AND user_id = {id}"
        ))
        .await?;
        Ok(Json(json!({ "left": room })))
    }

    fn host_allowed(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.loopback_hosts_only {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if is_loopback_host(host) {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::FORBIDDEN,
                "this demo answers requests for localhost only ([http] demo = auto); \
                 set [http] demo = true to serve it under another name"
                    .into(),
            ))
        }
    }
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The demo's routes: the page and its files, and `/demo/api/*`.
pub fn router(demo: Arc<Demo>) -> Router {
    use crate::web;
    Router::new()
        .route(
            "/",
            get(|| async { page(web::DEMO_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/demo/demo.js",
            get(|| async { page(web::DEMO_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/demo/logic.js",
            get(|| async { page(web::DEMO_LOGIC_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/demo/demo.css",
            get(|| async { page(web::DEMO_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/demo/api/session",
            post(
                |State(d): State<Arc<Demo>>, h: HeaderMap, Json(r): Json<UserReq>| async move {
                    d.host_allowed(&h)?;
                    d.session(r.user_id).await
                },
            ),
        )
        .route(
            "/demo/api/join",
            post(
                |State(d): State<Arc<Demo>>, h: HeaderMap, Json(r): Json<RoomUserReq>| async move {
                    d.host_allowed(&h)?;
                    d.join(&r.room, r.user_id).await
                },
            ),
        )
        .route(
            "/demo/api/members",
            get(
                |State(d): State<Arc<Demo>>, h: HeaderMap, Query(q): Query<RoomQuery>| async move {
                    d.host_allowed(&h)?;
                    d.members(&q.room).await
                },
            ),
        )
        .route(
            "/demo/api/mute",
            post(
                |State(d): State<Arc<Demo>>, h: HeaderMap, Json(r): Json<MuteReq>| async move {
                    d.host_allowed(&h)?;
                    d.mute(&r.room, r.user_id, r.audio).await
                },
            ),
        )
        .route(
            "/demo/api/leave",
            post(
                |State(d): State<Arc<Demo>>, h: HeaderMap, Json(r): Json<RoomUserReq>| async move {
                    d.host_allowed(&h)?;
                    d.leave(&r.room, r.user_id).await
                },
            ),
        )
        .with_state(demo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "LOCALHOST",
            "demo.localhost:80",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "example.com",
            "localhost.example.com",
            "10.0.0.1:8080",
            "0.0.0.0",
            "[2001:db8::1]:80",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn keys_are_valid_users_auth_hashes() {
        let k = new_key();
        assert!(k.starts_with(DEMO_KEY_PREFIX));
        assert!(crate::names::check_hash(&k).is_ok(), "{k}");
        assert_ne!(k, new_key());
    }

    #[test]
    fn inputs_are_checked_before_any_statement() {
        assert!(check_user(0).is_err() && check_user(-1).is_err());
        assert!(check_user(MAX_USER_ID + 1).is_err());
        assert_eq!(check_user(42).unwrap(), 42);
        assert!(check_room("101").is_ok() && check_room("a_b-C").is_ok());
        for bad in ["", "1'; DELETE", "a b", "x".repeat(65).as_str()] {
            assert!(check_room(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_become_objects_with_numbers() {
        let r = Reply::Rows {
            table: "conference_members".into(),
            columns: vec!["name".into(), "user_id".into(), "last_talking".into()],
            rows: vec![vec![
                Some("101".into()),
                Some("7".into()),
                Some("N/A".into()),
            ]],
        };
        assert_eq!(
            rows_json(&r),
            vec![json!({"name": "101", "user_id": 7, "last_talking": "N/A"})]
        );
    }
}
