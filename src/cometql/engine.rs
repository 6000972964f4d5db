//! Executes CometQL statements: the "decide" half of CometQL, with no sockets.
//!
//! [`Engine::execute_at`] takes a session, the SQL text and the time, and returns a [`Reply`]
//! (an OK with counts, or a result set) or a [`CqlError`]. The wire driver encodes the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::error::{CqlError, CqlResult, code};
use super::parse::{self, Scalar, Stmt};
use super::tables::{self, Done, Row, Values, Where, pipes_settings_log_length_key};
use crate::conference::ConferenceRegistry;
use crate::realtime::{self, Realtime};
use crate::store::{DevId, NewPipeMessage, PipeMessage, Store, UserId};

/// Personal messages wait this long for their user to connect.
pub const QUEUE_TTL_SECS: i64 = 120;
/// Personal messages kept per offline user.
pub const QUEUE_PER_USER: usize = 10;
/// History kept for `trust_*` pipes, which log without settings, and how long.
const TRUST_PIPE_LOG: usize = 99;
const TRUST_PIPE_TTL_SECS: i64 = 120;
/// Highest dev_id: SIP user names carry it as 6 zero-padded digits.
pub const MAX_DEV_ID: DevId = 999_999;

/// What the engine needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The dev_key.
    pub password: String,
    /// `serverName` announced to browsers.
    pub sip_host: String,
    /// `serverPort` announced to browsers.
    pub sip_port: u16,
    pub pipesalt: String,
    /// `conference.node` of conferences created here.
    pub node: String,
    /// Conference profiles by name.
    pub profiles: std::collections::BTreeMap<String, crate::config::Profile>,
    /// On a cluster's head: where conferences go (see [`crate::cluster`]).
    pub cluster: Option<Arc<crate::cluster::head::ClusterHead>>,
    /// On a cluster's media node: its head's link URL. Its store is not the cluster's, so
    /// CometQL answers only `conference_members` (this node's conferences) and the meta
    /// statements; the rest is refused with a pointer to the head.
    pub media_node_of: Option<String>,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Settings {
            password: c.password.clone(),
            sip_host: c.sip_host.clone(),
            sip_port: c.sip.port,
            pipesalt: c.pipesalt.clone(),
            node: c.node(),
            profiles: c.profiles.clone(),
            cluster: None,
            media_node_of: None,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub queries: AtomicU64,
    pub errors: AtomicU64,
    pub connections: AtomicU64,
    pub logins_failed: AtomicU64,
}

/// Shared state of every CometQL connection.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub realtime: Arc<dyn Realtime>,
    pub conferences: Arc<ConferenceRegistry>,
    pub settings: Settings,
    pub stats: Stats,
    started: Instant,
}

/// Per-connection state.
#[derive(Debug, Clone)]
pub struct Session {
    pub dev: DevId,
    /// False for load-balancer health checks (`haproxy_check*` users with no password): they may
    /// connect and ping, and every statement gets error 403.
    pub authorized: bool,
    /// `CometQL_v1` or `db_<N>` once selected.
    pub database: Option<String>,
    pub connection_id: u32,
    pub user: String,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok {
        affected: u64,
        insert_id: u64,
    },
    Rows {
        table: String,
        columns: Vec<String>,
        rows: Vec<Vec<Option<String>>>,
    },
}

/// What a statement runs with.
pub struct Cx<'a> {
    pub dev: DevId,
    /// Unix time, seconds.
    pub now: i64,
    pub instant: Instant,
    pub engine: &'a Engine,
}

impl Cx<'_> {
    /// Queued personal messages older than this are expired.
    pub fn queue_horizon(&self) -> i64 {
        self.now - QUEUE_TTL_SECS
    }
}

/// The MySQL server version we announce: parseable as MySQL 5.7 by clients that sniff it.
pub fn server_version() -> String {
    format!("5.7.99-comet-server-{}", env!("CARGO_PKG_VERSION"))
}

fn version_comment() -> String {
    format!(
        "comet-server {} (CometQL over the MySQL protocol)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses a login name into a dev_id: `root` and `0` are 0, otherwise a decimal number.
pub fn dev_id_from_user(user: &str) -> Option<DevId> {
    if user == "root" {
        return Some(0);
    }
    if user.is_empty() || user.len() > 9 || !user.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    user.parse().ok().filter(|d| *d <= MAX_DEV_ID)
}

/// Unix time now, in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Simple SQL LIKE (`%` and `_`, case-insensitive). Iterative, with backtracking only to the
/// last `%` seen (enough for `%` and `_`): at most pattern x text steps, no recursion, so a
/// query full of `%` cannot stall a worker.
fn like(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    // After the last `%`: where the pattern resumes, and where in the text it was tried.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'%') => {
                pi += 1;
                star = Some((pi, si));
            }
            Some(&c) if c == b'_' || c.eq_ignore_ascii_case(&s[si]) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                // The last `%` swallows one more character and the rest is tried again.
                Some((sp, ss)) => {
                    pi = sp;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'%')
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        realtime: Arc<dyn Realtime>,
        conferences: Arc<ConferenceRegistry>,
        settings: Settings,
    ) -> Self {
        Engine {
            store,
            realtime,
            conferences,
            settings,
            stats: Stats::default(),
            started: Instant::now(),
        }
    }

    /// Whether a login is a load-balancer health check (HAProxy's `mysql-check` logs in with a
    /// user name and no password): it may connect, and statements get error 403.
    pub fn is_health_check(user: &str, response: &[u8]) -> bool {
        user.starts_with("haproxy_check") && response.is_empty()
    }

    /// Checks a `mysql_native_password` login; returns the dev_id.
    pub fn authenticate(&self, user: &str, scramble: &[u8], response: &[u8]) -> CqlResult<DevId> {
        let fail = |why: &str| {
            self.stats.logins_failed.fetch_add(1, Ordering::Relaxed);
            Err(CqlError::new(
                code::AUTH,
                format!("Authentication failure{why}"),
            ))
        };
        let Some(dev) = dev_id_from_user(user) else {
            return fail(": the user name must be a dev_id (a number, or root for 0)");
        };
        if response.len() != 20 {
            return fail(", authDataLen!=20");
        }
        if !super::wire::check_native_password(&self.settings.password, scramble, response) {
            return fail("");
        }
        Ok(dev)
    }

    /// Selects a database: `CometQL_v1` keeps the dev_id, `db_<N>` switches to dev N.
    pub fn use_database(&self, session: &mut Session, db: &str) -> CqlResult<()> {
        let db = db.trim().trim_matches('`');
        if db.eq_ignore_ascii_case("CometQL_v1") {
            session.database = Some("CometQL_v1".into());
            return Ok(());
        }
        if let Some(n) = db.strip_prefix("db_")
            && let Some(dev) = dev_id_from_user(n).filter(|_| n != "root")
        {
            session.dev = dev;
            session.database = Some(format!("db_{dev}"));
            return Ok(());
        }
        Err(CqlError::new(
            code::NOT_FOUND,
            format!(
                "Select database failure: unknown database `{db}` (use CometQL_v1 or db_<dev_id>)"
            ),
        ))
    }

    /// Runs one query with the real clock.
    pub async fn execute(&self, session: &mut Session, sql: &str) -> CqlResult<Reply> {
        self.execute_at(session, sql, unix_now(), Instant::now())
            .await
    }

    /// Runs one query at a given time.
    pub async fn execute_at(
        &self,
        session: &mut Session,
        sql: &str,
        now: i64,
        instant: Instant,
    ) -> CqlResult<Reply> {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let res = if session.authorized {
            self.run(session, sql, now, instant).await
        } else {
            Err(CqlError::new(code::ACCESS_DENIED, "Access denied"))
        };
        if res.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    async fn run(
        &self,
        session: &mut Session,
        sql: &str,
        now: i64,
        instant: Instant,
    ) -> CqlResult<Reply> {
        let cx = Cx {
            dev: session.dev,
            now,
            instant,
            engine: self,
        };
        let ok = |d: Done| Reply::Ok {
            affected: d.affected,
            insert_id: d.insert_id,
        };
        let stmt = parse::parse(sql)?;
        if let Some(head) = &self.settings.media_node_of {
            let local = match &stmt {
                Stmt::Select(sel) => sel.table.eq_ignore_ascii_case("conference_members"),
                Stmt::Insert { .. } | Stmt::Delete { .. } | Stmt::Update { .. } => false,
                _ => true,
            };
            if !local {
                return Err(CqlError::new(
                    code::ACCESS_DENIED,
                    format!(
                        "this server is a media node of a cluster: send CometQL to its head \
                         (cluster link {head}); here only SELECT FROM conference_members \
                         (this node's conferences) is answered"
                    ),
                ));
            }
        }
        match stmt {
            Stmt::Empty | Stmt::Set => Ok(ok(Done::default())),
            Stmt::Use(db) => {
                self.use_database(session, &db)?;
                Ok(ok(Done::default()))
            }
            Stmt::Scalars(items) => Ok(self.scalars(session, &items, now)),
            Stmt::ShowTables => Ok(rows(
                "",
                &["Tables"],
                tables::TABLES
                    .iter()
                    .map(|t| vec![t.def().name.to_string()])
                    .collect(),
            )),
            Stmt::ShowDatabases => Ok(rows("", &["Database"], vec![vec!["CometQL_v1".into()]])),
            Stmt::ShowColumns(name) => {
                let t = tables::find(&name).ok_or_else(|| CqlError::no_table(&name))?;
                Ok(rows(
                    t.def().name,
                    &["Field", "Type", "Null", "Key", "Default", "Extra"],
                    t.def()
                        .columns
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.to_string(),
                                c.sql_type.to_string(),
                                "NO".into(),
                                if c.key { "PRI".into() } else { String::new() },
                                String::new(),
                                String::new(),
                            ]
                        })
                        .collect(),
                ))
            }
            Stmt::ShowVariables(pattern) => Ok(rows(
                "",
                &["Variable_name", "Value"],
                VARIABLES
                    .iter()
                    .filter(|(n, _)| pattern.as_deref().is_none_or(|p| like(p, n)))
                    .map(|(n, _)| {
                        vec![n.to_string(), self.variable(session, n).unwrap_or_default()]
                    })
                    .collect(),
            )),
            Stmt::ShowStatus(pattern) => Ok(rows(
                "",
                &["Variable_name", "Value"],
                self.status(session)
                    .into_iter()
                    .filter(|(n, _)| pattern.as_deref().is_none_or(|p| like(p, n)))
                    .map(|(n, v)| vec![n, v])
                    .collect(),
            )),
            Stmt::Select(sel) => {
                let t = tables::find(&sel.table).ok_or_else(|| CqlError::no_table(&sel.table))?;
                let def = t.def();
                for c in &sel.conds {
                    def.column(&c.column)
                        .ok_or_else(|| CqlError::no_column(&c.column))?;
                }
                let (labels, idx): (Vec<String>, Vec<usize>) = match &sel.columns {
                    None => (
                        def.columns.iter().map(|c| c.name.to_string()).collect(),
                        (0..def.columns.len()).collect(),
                    ),
                    Some(cols) => cols
                        .iter()
                        .map(|(label, col)| {
                            def.index(col)
                                .map(|i| (label.clone(), i))
                                .ok_or_else(|| CqlError::no_column(col))
                        })
                        .collect::<CqlResult<Vec<_>>>()?
                        .into_iter()
                        .unzip(),
                };
                let w = Where {
                    def,
                    conds: &sel.conds,
                };
                let all: Vec<Row> = t.select(&cx, &w).await?;
                let (offset, count) = sel.limit.unwrap_or((0, u64::MAX));
                let out = all
                    .into_iter()
                    .filter(|r| w.matches(r))
                    .skip(offset.min(usize::MAX as u64) as usize)
                    .take(count.min(usize::MAX as u64) as usize)
                    .map(|r| idx.iter().map(|&i| Some(r[i].clone())).collect())
                    .collect();
                Ok(Reply::Rows {
                    table: def.name.to_string(),
                    columns: labels,
                    rows: out,
                })
            }
            Stmt::Insert {
                table,
                columns,
                values,
            } => {
                let t = tables::find(&table).ok_or_else(|| CqlError::no_table(&table))?;
                let def = t.def();
                let pairs = match &columns {
                    None => {
                        if values.len() != def.columns.len() {
                            return Err(CqlError::new(
                                code::BAD_COLUMNS,
                                format!(
                                    "Error in columns list: `{}` has {} columns but {} values were given",
                                    def.name,
                                    def.columns.len(),
                                    values.len()
                                ),
                            ));
                        }
                        def.columns
                            .iter()
                            .map(|c| c.name)
                            .zip(values.iter())
                            .collect()
                    }
                    Some(cols) => cols
                        .iter()
                        .zip(values.iter())
                        .map(|(c, v)| {
                            def.column(c)
                                .map(|col| (col.name, v))
                                .ok_or_else(|| CqlError::no_column(c))
                        })
                        .collect::<CqlResult<Vec<_>>>()?,
                };
                Ok(ok(t.insert(&cx, &Values { def, pairs }).await?))
            }
            Stmt::Delete { table, conds } => {
                let t = tables::find(&table).ok_or_else(|| CqlError::no_table(&table))?;
                let def = t.def();
                if def.delete_by.is_empty() {
                    return Err(CqlError::read_only(def.name));
                }
                for c in &conds {
                    def.column(&c.column)
                        .ok_or_else(|| CqlError::no_column(&c.column))?;
                    if !def.delete_by.contains(&c.column.as_str()) {
                        return Err(CqlError::not_implemented(format!(
                            "DELETE FROM {} can be conditioned only on {}",
                            def.name,
                            def.delete_by.join(", ")
                        )));
                    }
                }
                if conds.is_empty() {
                    return Err(CqlError::new(
                        code::KEY_REQUIRED,
                        format!(
                            "Deleting without transferring the requested values of the primary \
                             key is not supported (WHERE {} is required)",
                            def.delete_by[0]
                        ),
                    ));
                }
                Ok(ok(t.delete(&cx, &Where { def, conds: &conds }).await?))
            }
            Stmt::Update { table, set, conds } => {
                let t = tables::find(&table).ok_or_else(|| CqlError::no_table(&table))?;
                let def = t.def();
                for c in &conds {
                    def.column(&c.column)
                        .ok_or_else(|| CqlError::no_column(&c.column))?;
                }
                for (col, _) in &set {
                    def.column(col).ok_or_else(|| CqlError::no_column(col))?;
                }
                Ok(ok(t
                    .update(&cx, &set, &Where { def, conds: &conds })
                    .await?))
            }
        }
    }

    fn scalars(&self, session: &Session, items: &[(String, Scalar)], now: i64) -> Reply {
        let row = items
            .iter()
            .map(|(_, s)| match s {
                Scalar::Variable(v) => self.variable(session, v),
                Scalar::Database => session.database.clone(),
                Scalar::Version => Some(server_version()),
                Scalar::ConnectionId => Some(session.connection_id.to_string()),
                Scalar::User => Some(format!("{}@localhost", session.user)),
                Scalar::UnixTime => Some(now.to_string()),
                Scalar::Lit(l) => l.text().map(str::to_string),
            })
            .collect();
        Reply::Rows {
            table: String::new(),
            columns: items.iter().map(|(l, _)| l.clone()).collect(),
            rows: vec![row],
        }
    }

    /// `@@name` values; unknown variables are NULL.
    fn variable(&self, session: &Session, name: &str) -> Option<String> {
        Some(match name {
            "version_comment" => version_comment(),
            "version" => server_version(),
            "dev_id" => session.dev.to_string(),
            _ => VARIABLES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())?,
        })
    }

    fn status(&self, session: &Session) -> Vec<(String, String)> {
        let s = &self.stats;
        vec![
            (
                "Uptime".into(),
                self.started.elapsed().as_secs().to_string(),
            ),
            ("dev_id".into(), session.dev.to_string()),
            (
                "Threads_connected".into(),
                s.connections.load(Ordering::Relaxed).to_string(),
            ),
            (
                "Queries".into(),
                s.queries.load(Ordering::Relaxed).to_string(),
            ),
            (
                "Conference_members".into(),
                self.conferences
                    .members(session.dev, None, Instant::now())
                    .len()
                    .to_string(),
            ),
        ]
    }

    /// Delivers a personal event to every live connection of a user, or queues it (as a string)
    /// while the user is offline. Returns how many connections got it.
    pub async fn deliver_to_user(
        &self,
        cx: &Cx<'_>,
        user: UserId,
        event: &str,
        data: Value,
    ) -> CqlResult<usize> {
        let frame = realtime::user_message_frame(event, data.clone());
        let n = self.realtime.send_to_user(cx.dev, user, &frame);
        if n == 0 {
            let text = match data {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.store
                .queue_user_message(cx.dev, user, event, &text, cx.now, QUEUE_PER_USER)
                .await?;
        }
        Ok(n)
    }

    /// Broadcasts on a pipe and logs it when the pipe keeps history. Returns how many
    /// connections got it.
    pub async fn publish_to_pipe(
        &self,
        cx: &Cx<'_>,
        pipe: &str,
        event: &str,
        message: &str,
        sender: UserId,
    ) -> CqlResult<usize> {
        let frame = realtime::pipe_message_frame(pipe, event, message, cx.now);
        let n = self.realtime.send_to_pipe(cx.dev, pipe, &frame);
        self.log_pipe_message(cx.dev, pipe, event, message, sender, cx.now)
            .await?;
        Ok(n)
    }

    /// Adds a message to a pipe's history if the pipe keeps one (pipes_settings, `trust_*`).
    pub async fn log_pipe_message(
        &self,
        dev: DevId,
        pipe: &str,
        event: &str,
        message: &str,
        sender: UserId,
        now: i64,
    ) -> CqlResult<()> {
        let keep = self.pipe_log_length(dev, pipe).await?;
        if keep > 0 {
            let event = if event.is_empty() { "undefined" } else { event };
            let entry = NewPipeMessage {
                event,
                message,
                user_id: sender,
                time: now,
            };
            self.store
                .append_pipe_message(dev, pipe, entry, keep)
                .await?;
        }
        Ok(())
    }

    /// How many messages a pipe keeps (0: none).
    pub async fn pipe_log_length(&self, dev: DevId, pipe: &str) -> CqlResult<usize> {
        if pipe.starts_with("trust_") {
            return Ok(TRUST_PIPE_LOG);
        }
        Ok(self
            .store
            .setting(dev, &pipes_settings_log_length_key(pipe))
            .await?
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0))
    }

    /// A pipe's history as readers see it: at most 99 messages, oldest first (only those are
    /// read from the store; of a `trust_` pipe, those of them younger than the TTL).
    pub async fn pipe_history(
        &self,
        dev: DevId,
        pipe: &str,
        now: i64,
    ) -> CqlResult<Vec<PipeMessage>> {
        let mut h = self
            .store
            .pipe_messages(dev, pipe, tables::MAX_HISTORY_READ)
            .await?;
        if pipe.starts_with("trust_") {
            h.retain(|m| m.time >= now - TRUST_PIPE_TTL_SECS);
        }
        Ok(h)
    }
}

fn rows(table: &str, columns: &[&str], rows: Vec<Vec<String>>) -> Reply {
    Reply::Rows {
        table: table.to_string(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: rows
            .into_iter()
            .map(|r| r.into_iter().map(Some).collect())
            .collect(),
    }
}

/// Server variables clients ask for on connect (`SELECT @@x`, `SHOW VARIABLES`).
static VARIABLES: &[(&str, &str)] = &[
    ("auto_increment_increment", "1"),
    ("autocommit", "1"),
    ("character_set_client", "utf8mb4"),
    ("character_set_connection", "utf8mb4"),
    ("character_set_database", "utf8mb4"),
    ("character_set_results", "utf8mb4"),
    ("character_set_server", "utf8mb4"),
    ("collation_connection", "utf8mb4_general_ci"),
    ("collation_server", "utf8mb4_general_ci"),
    ("init_connect", ""),
    ("interactive_timeout", "28800"),
    ("license", "AGPL"),
    ("lower_case_table_names", "0"),
    ("max_allowed_packet", "1048576"),
    ("net_buffer_length", "16384"),
    ("net_write_timeout", "60"),
    ("performance_schema", "0"),
    ("query_cache_size", "0"),
    ("query_cache_type", "OFF"),
    ("sql_mode", ""),
    ("system_time_zone", "UTC"),
    ("time_zone", "SYSTEM"),
    ("transaction_isolation", "REPEATABLE-READ"),
    ("tx_isolation", "REPEATABLE-READ"),
    ("version", ""),
    ("version_comment", ""),
    ("wait_timeout", "28800"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// What `SHOW VARIABLES` reports is what the listener enforces.
    #[test]
    fn reported_limits_are_the_enforced_ones() {
        use crate::cometql::server::{MAX_PACKET, WAIT_TIMEOUT};
        let var = |n: &str| VARIABLES.iter().find(|(k, _)| *k == n).unwrap().1;
        assert_eq!(var("max_allowed_packet"), MAX_PACKET.to_string());
        assert_eq!(var("wait_timeout"), WAIT_TIMEOUT.as_secs().to_string());
    }

    #[test]
    fn like_patterns() {
        assert!(like("lower%", "lower_case_table_names"));
        assert!(like("%_timeout", "wait_timeout"));
        assert!(like("VERSION", "version"));
        assert!(!like("vers", "version"));
        assert!(like("v_rsion", "version"));
        assert!(like("%", ""));
        assert!(like("%%", "x"));
        assert!(!like("_", ""));
        assert!(like("%time%", "wait_timeout"));
        assert!(like("%t_m%t", "wait_timeout"));
        assert!(!like("%t_m%x", "wait_timeout"));
        assert!(like("w%t%t%", "wait_timeout"));
        assert!(like("%out", "wait_timeout"));
        assert!(!like("%out_", "wait_timeout"));
    }

    /// Every pattern over `%`, `_`, `a`, `B` up to 6 long against every text over `a`, `b` up
    /// to 6 long agrees with the textbook recursive definition.
    #[test]
    fn like_agrees_with_the_recursive_definition() {
        fn reference(p: &[u8], s: &[u8]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((b'%', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
                Some((b'_', rest)) => !s.is_empty() && reference(rest, &s[1..]),
                Some((c, rest)) => {
                    s.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && reference(rest, &s[1..])
                }
            }
        }
        fn all(alphabet: &[u8], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |&c| format!("{w}{}", c as char)))
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let texts = all(b"ab", 6);
        for p in all(b"%_aB", 6) {
            for t in &texts {
                assert_eq!(
                    like(&p, t),
                    reference(p.as_bytes(), t.as_bytes()),
                    "{p} {t}"
                );
            }
        }
    }

    /// Many `%` with no match must not backtrack exponentially (C(n + k, k) steps), and a
    /// pattern as long as a query may be must not recurse once per character.
    #[test]
    fn like_is_linear_in_the_worst_case() {
        let pattern = format!("{}#", "%".repeat(30));
        assert!(!like(&pattern, "auto_increment_increment"));
        let long = "%_".repeat(4400);
        let ok = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || like(&long, &"x".repeat(4000)))
            .unwrap()
            .join()
            .unwrap();
        assert!(!ok);
    }

    #[test]
    fn dev_ids() {
        assert_eq!(dev_id_from_user("root"), Some(0));
        assert_eq!(dev_id_from_user("0"), Some(0));
        assert_eq!(dev_id_from_user("15"), Some(15));
        assert_eq!(dev_id_from_user("007"), Some(7));
        assert_eq!(dev_id_from_user("1000000"), None);
        assert_eq!(dev_id_from_user("-1"), None);
        assert_eq!(dev_id_from_user("admin"), None);
        assert_eq!(dev_id_from_user(""), None);
    }

    fn engine() -> Engine {
        Engine::new(
            Arc::new(crate::store::MemoryStore::new()),
            Arc::new(crate::realtime::Offline),
            Arc::new(ConferenceRegistry::new()),
            Settings::from_config(&crate::config::Config::default()),
        )
    }

    fn session() -> Session {
        Session {
            dev: 0,
            authorized: true,
            database: None,
            connection_id: 1,
            user: "root".into(),
        }
    }

    async fn count(e: &Engine, s: &mut Session, sql: &str, now: i64) -> usize {
        match e.execute_at(s, sql, now, Instant::now()).await.unwrap() {
            Reply::Rows { rows, .. } => rows.len(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn queued_messages_expire_after_120_seconds() {
        let e = engine();
        let mut s = session();
        let t0 = 1_700_000_000;
        e.execute_at(
            &mut s,
            "INSERT INTO users_messages (id, event, message) VALUES (3, 'e', 'm')",
            t0,
            Instant::now(),
        )
        .await
        .unwrap();
        let q = "SELECT * FROM users_messages WHERE id = 3";
        assert_eq!(count(&e, &mut s, q, t0 + QUEUE_TTL_SECS).await, 1);
        assert_eq!(count(&e, &mut s, q, t0 + QUEUE_TTL_SECS + 1).await, 0);
    }

    #[tokio::test]
    async fn trust_pipes_keep_history_for_120_seconds_without_settings() {
        let e = engine();
        let mut s = session();
        let t0 = 1_700_000_000;
        for pipe in ["trust_room", "web_room"] {
            e.execute_at(
                &mut s,
                &format!(
                    "INSERT INTO pipes_messages (name, event, message) VALUES ('{pipe}', 'e', 'm')"
                ),
                t0,
                Instant::now(),
            )
            .await
            .unwrap();
        }
        let trust = "SELECT * FROM pipes_messages WHERE name = 'trust_room'";
        let web = "SELECT * FROM pipes_messages WHERE name = 'web_room'";
        assert_eq!(count(&e, &mut s, trust, t0 + 10).await, 1);
        assert_eq!(
            count(&e, &mut s, web, t0 + 10).await,
            0,
            "no pipes_settings: no history"
        );
        assert_eq!(
            count(&e, &mut s, trust, t0 + TRUST_PIPE_TTL_SECS + 1).await,
            0
        );
    }

    async fn code(e: &Engine, s: &mut Session, sql: &str) -> u16 {
        match e.execute_at(s, sql, 0, Instant::now()).await {
            Ok(r) => panic!("`{sql}` should fail, got {r:?}"),
            Err(err) => err.code,
        }
    }

    async fn affected(e: &Engine, s: &mut Session, sql: &str) -> u64 {
        match e.execute_at(s, sql, 0, Instant::now()).await.unwrap() {
            Reply::Ok { affected, .. } => affected,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn moderation_updates_flags_layout_and_time_limits() {
        let e = engine();
        let mut s = session();
        let hung = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t0 = Instant::now();
        for user in [7, 8] {
            let h = hung.clone();
            e.conferences.join(
                0,
                "101",
                user,
                "video",
                t0,
                Arc::new(move |_: &str| {
                    h.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        let q = "SELECT user_id, audio, video, deaf, video_floor, layout, profile FROM conference_members WHERE name = '101'";
        let rows = |r: Reply| match r {
            Reply::Rows { rows, .. } => rows
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|c| c.unwrap_or_default())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let before = rows(e.execute_at(&mut s, q, 0, t0).await.unwrap());
        assert_eq!(
            before[0],
            ["7", "1", "1", "0", "0", "active-speaker", "video"]
        );
        let g = e.conferences.generation();
        assert_eq!(
            affected(
                &e,
                &mut s,
                "UPDATE conference_members SET audio = 0 WHERE name = '101' AND user_id = 7"
            )
            .await,
            1
        );
        assert!(
            e.conferences.generation() > g,
            "the media runtime sees the change"
        );
        assert_eq!(
            affected(&e, &mut s, "UPDATE conference_members SET video = 0, deaf = 1, video_floor = 1 WHERE name = '101' AND user_id IN (7, 8)").await,
            2
        );
        assert_eq!(
            affected(
                &e,
                &mut s,
                "UPDATE conference_members SET layout = 'grid' WHERE name = '101'"
            )
            .await,
            1
        );
        assert_eq!(
            affected(
                &e,
                &mut s,
                "UPDATE conference_members SET audio = 1 WHERE name = '101' AND user_id = 99"
            )
            .await,
            0,
            "not a member"
        );
        let after = rows(e.execute_at(&mut s, q, 0, t0).await.unwrap());
        assert_eq!(after[0], ["7", "0", "0", "1", "1", "grid", "video"]);
        assert_eq!(after[1], ["8", "1", "0", "1", "1", "grid", "video"]);

        // Error codes.
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET audio = 0 WHERE user_id = 7"
            )
            .await,
            13
        );
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET audio = 0 WHERE name = '101'"
            )
            .await,
            13
        );
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET volume = 3 WHERE name = '101' AND user_id = 7"
            )
            .await,
            14
        );
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET audio = 2 WHERE name = '101' AND user_id = 7"
            )
            .await,
            12
        );
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET layout = 'mosaic' WHERE name = '101'"
            )
            .await,
            12
        );
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET layout = 'grid' WHERE name = '101' AND user_id = 7"
            )
            .await,
            12
        );
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET talking = 1 WHERE name = '101' AND user_id = 7"
            )
            .await,
            10
        );
        assert_eq!(
            code(
                &e,
                &mut s,
                "UPDATE conference_members SET audio = 1 WHERE name = '101' AND profile = 'video'"
            )
            .await,
            2
        );
        assert_eq!(
            code(&e, &mut s, "UPDATE users_auth SET hash = 'x' WHERE id = 1").await,
            10
        );
        assert_eq!(
            code(&e, &mut s, "UPDATE nope SET a = 1 WHERE b = 2").await,
            15
        );

        // A time limit ends the conference: every member is hung up.
        assert_eq!(
            affected(
                &e,
                &mut s,
                "UPDATE conference_members SET max_duration = 30 WHERE name = '101'"
            )
            .await,
            1
        );
        let limited = rows(
            e.execute_at(
                &mut s,
                "SELECT max_duration FROM conference_members WHERE name = '101'",
                0,
                t0,
            )
            .await
            .unwrap(),
        );
        assert_eq!(limited[0], ["30"]);
        assert_eq!(
            e.conferences
                .enforce_time_limits(t0 + std::time::Duration::from_secs(29)),
            0
        );
        assert_eq!(
            e.conferences
                .enforce_time_limits(t0 + std::time::Duration::from_secs(30)),
            1
        );
        assert_eq!(hung.load(Ordering::SeqCst), 2);
    }
}
