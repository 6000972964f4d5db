//! Statement handling cost: parse alone, and parse + execute against the in-memory store and
//! the SQLite store, for the statements a backend sends most.

use std::sync::Arc;
use std::time::Instant;

use comet_server::cometql::{Engine, Session, Settings, parse};
use comet_server::conference::ConferenceRegistry;
use comet_server::config::{Config, SyncMode};
use comet_server::realtime::Offline;
use comet_server::store::{MemoryStore, SqliteStore, Store};
use criterion::{Criterion, criterion_group, criterion_main};

const INSERT_CONFERENCE: &str = "INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', 2, 2, '{}', 'video')";
const INSERT_AUTH: &str = "INSERT INTO users_auth (id, hash) VALUES (5, 'abcdefabcdefabcdef')";
const SELECT_AUTH: &str = "SELECT * FROM users_auth WHERE id IN (5, 6, 7)";
const SELECT_CONFERENCE: &str = "SELECT * FROM conference WHERE name = '101' AND user_id = 2";

fn engine(store: Arc<dyn Store>) -> Engine {
    Engine::new(
        store,
        Arc::new(Offline),
        Arc::new(ConferenceRegistry::new()),
        Settings::from_config(&Config::default()),
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

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cometql/parse");
    for (name, sql) in [
        ("insert_conference", INSERT_CONFERENCE),
        ("select_auth", SELECT_AUTH),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| parse::parse(std::hint::black_box(sql)).unwrap())
        });
    }
    g.finish();

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("b.sqlite3"), SyncMode::Normal).unwrap());
    for (store_name, store) in [
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Store>),
        ("sqlite", sqlite),
    ] {
        let e = engine(store);
        let mut s = session();
        rt.block_on(async {
            for sql in [INSERT_AUTH, INSERT_CONFERENCE] {
                e.execute_at(&mut s, sql, 1, Instant::now()).await.unwrap();
            }
        });
        let mut g = c.benchmark_group(format!("cometql/execute/{store_name}"));
        for (name, sql) in [
            ("insert_auth", INSERT_AUTH),
            ("insert_conference", INSERT_CONFERENCE),
            ("select_auth", SELECT_AUTH),
            ("select_conference", SELECT_CONFERENCE),
        ] {
            g.bench_function(name, |b| {
                b.iter(|| {
                    rt.block_on(e.execute_at(&mut s, sql, 1, Instant::now()))
                        .unwrap()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
