//! The storage contract, run against every backend this build has.

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
