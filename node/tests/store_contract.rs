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

mod scylla {
    use actors::store::Store;
    use std::sync::Arc;
    use std::time::Duration;
    use troupe::store::scylla::ScyllaStore;

    /// The contact points of a ScyllaDB to test against, from `SCYLLA_URI`
    /// (`host:port[,host:port...]`); None when it is unset, and the cases skip.
    fn contact_points() -> Option<Vec<String>> {
        let uri = std::env::var("SCYLLA_URI").ok()?;
        let points: Vec<String> = uri.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
        (!points.is_empty()).then_some(points)
    }

    /// A keyspace made for one test (replication factor 1), dropped when the test ends.
    pub struct FreshKeyspace {
        contact_points: Vec<String>,
        name: String,
    }

    impl Drop for FreshKeyspace {
        fn drop(&mut self) {
            let (points, name) = (self.contact_points.clone(), self.name.clone());
            // Drop runs outside async; a thread with its own runtime does the cleanup.
            let cleanup = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                runtime.block_on(async move {
                    let builder = scylla::client::session_builder::SessionBuilder::new().known_nodes(&points);
                    if let Ok(Ok(session)) = tokio::time::timeout(Duration::from_secs(10), builder.build()).await {
                        let drop = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {name}"), &[]);
                        let _ = tokio::time::timeout(Duration::from_secs(30), drop).await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }

    async fn open() -> Option<(FreshKeyspace, Arc<dyn Store>)> {
        let contact_points = contact_points()?;
        let name = format!("troupe_test_{:016x}", actors::random_id());
        let keyspace = FreshKeyspace { contact_points: contact_points.clone(), name: name.clone() };
        let store = ScyllaStore::open(&contact_points, &name, 1).await.expect("open the scylla store");
        Some((keyspace, store))
    }

    // Each case returns early, saying so, when `SCYLLA_URI` is unset.
    actors::store_contract_tests!(optional open);
}
