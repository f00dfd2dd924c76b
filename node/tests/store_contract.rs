//! The storage contract, run against every backend: the embedded store and PostgreSQL
//! always (a fresh database per test), ScyllaDB when `SCYLLA_URI` is set.

#[path = "common/postgres.rs"]
mod fresh_postgres;

mod embedded {
    use actors::store::Store;
    use std::sync::Arc;
    use tempfile::TempDir;

    async fn open() -> (TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = troupe::store::embedded::EmbeddedStore::open(dir.path()).expect("open embedded store");
        (dir, store)
    }

    actors::store_contract_tests!(open);
}

mod postgres {
    use super::fresh_postgres::FreshDatabase;
    use actors::store::Store;
    use std::sync::Arc;

    async fn open() -> (FreshDatabase, Arc<dyn Store>) {
        let database = FreshDatabase::create().await;
        let store = troupe::store::postgres::PostgresStore::open(&database.url, 8).await.expect("open postgres store");
        (database, store)
    }

    actors::store_contract_tests!(open);
}
