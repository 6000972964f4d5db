//! When the store fails, a client gets error 500 and the connection keeps working; nothing is
//! acknowledged that was not written.

use std::sync::Arc;

use async_trait::async_trait;
use comet_server::cometql::{Engine, Settings, server};
use comet_server::conference::ConferenceRegistry;
use comet_server::config::Config;
use comet_server::realtime::Offline;
use comet_server::store::*;
use mysql_async::prelude::*;

/// A store whose disk is gone.
struct BrokenStore;

fn broken<T>() -> StoreResult<T> {
    Err(StoreError::Backend("disk I/O error".into()))
}

#[async_trait]
impl Store for BrokenStore {
    async fn user_hash(&self, _: DevId, _: UserId) -> StoreResult<Option<String>> {
        broken()
    }
    async fn set_user_hash(&self, _: DevId, _: UserId, _: &str) -> StoreResult<()> {
        broken()
    }
    async fn delete_user_hash(&self, _: DevId, _: UserId) -> StoreResult<bool> {
        broken()
    }
    async fn last_seen(&self, _: DevId, _: UserId) -> StoreResult<Option<i64>> {
        broken()
    }
    async fn set_last_seen(&self, _: DevId, _: UserId, _: i64) -> StoreResult<()> {
        broken()
    }
    async fn queue_user_message(
        &self,
        _: DevId,
        _: UserId,
        _: &str,
        _: &str,
        _: i64,
        _: usize,
    ) -> StoreResult<QueuedMessage> {
        broken()
    }
    async fn user_messages(&self, _: DevId, _: UserId, _: i64) -> StoreResult<Vec<QueuedMessage>> {
        broken()
    }
    async fn take_user_messages(
        &self,
        _: DevId,
        _: UserId,
        _: i64,
    ) -> StoreResult<Vec<QueuedMessage>> {
        broken()
    }
    async fn purge_user_messages(&self, _: i64) -> StoreResult<u64> {
        broken()
    }
    async fn clear_user_messages(&self, _: DevId, _: UserId) -> StoreResult<u64> {
        broken()
    }
    async fn append_pipe_message(
        &self,
        _: DevId,
        _: &str,
        _: NewPipeMessage<'_>,
        _: usize,
    ) -> StoreResult<PipeMessage> {
        broken()
    }
    async fn pipe_messages(&self, _: DevId, _: &str, _: usize) -> StoreResult<Vec<PipeMessage>> {
        broken()
    }
    async fn clear_pipe_messages(&self, _: DevId, _: &str) -> StoreResult<u64> {
        broken()
    }
    async fn setting(&self, _: DevId, _: &str) -> StoreResult<Option<String>> {
        broken()
    }
    async fn set_setting(&self, _: DevId, _: &str, _: Option<&str>) -> StoreResult<()> {
        broken()
    }
    async fn put_conference_row(&self, _: DevId, _: &ConferenceRow) -> StoreResult<()> {
        broken()
    }
    async fn conference_rows(&self, _: DevId, _: &str) -> StoreResult<Vec<ConferenceRow>> {
        broken()
    }
    async fn conference_row(
        &self,
        _: DevId,
        _: &str,
        _: UserId,
    ) -> StoreResult<Option<ConferenceRow>> {
        broken()
    }
    async fn delete_conference_rows(
        &self,
        _: DevId,
        _: &str,
        _: Option<UserId>,
    ) -> StoreResult<u64> {
        broken()
    }
}

#[tokio::test]
async fn store_failure_is_error_500_and_the_connection_survives() {
    let config = Config::default();
    let engine = Arc::new(Engine::new(
        Arc::new(BrokenStore),
        Arc::new(Offline),
        Arc::new(ConferenceRegistry::new()),
        Settings::from_config(&config),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        engine,
        comet_server::admission::Gate::new("cometql", config.cometql_conns),
    ));
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(addr.port())
        .user(Some("root"))
        .pass(Some(config.password.clone()))
        .prefer_socket(false)
        .into();
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    for sql in [
        "INSERT INTO users_auth (id, hash) VALUES (1, 'abc')",
        "SELECT * FROM users_auth WHERE id = 1",
        "INSERT INTO conference (name, user_id, message) VALUES ('101', 1, '')",
    ] {
        match c.query_drop(sql).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 500, "{sql}");
                assert!(e.message.contains("disk I/O error"), "{}", e.message);
            }
            other => panic!("{sql}: expected error 500, got {other:?}"),
        }
    }
    let one: Vec<String> = c.query("SELECT 1").await.unwrap();
    assert_eq!(one, ["1"]);
}
