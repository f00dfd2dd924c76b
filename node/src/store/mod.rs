//! Storage backends. Each implements `actors::store::Store` and passes its contract suite.
//!
//! * [`embedded`]: redb in the node's data directory, the single-node default.
//! * [`postgres`]: PostgreSQL, for clusters that run it.
//! * [`lanes`]: the ordered lanes both network backends run their non-waiting writes on.
//! * [`scylla`]: ScyllaDB, for clusters that outgrow one database server.

pub mod embedded;
pub mod lanes;
pub mod postgres;
pub mod scylla;

use crate::config::{StoreBackend, StoreConfig};
use actors::store::Store;
use std::path::Path;
use std::sync::Arc;

/// Why the configured store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The embedded store failed.
    #[error(transparent)]
    Embedded(#[from] embedded::OpenError),
    /// The PostgreSQL store failed.
    #[error(transparent)]
    Postgres(#[from] postgres::OpenError),
    /// The ScyllaDB store failed.
    #[error(transparent)]
    Scylla(#[from] self::scylla::OpenError),
}

/// Opens the backend the configuration names.
pub async fn open(config: &StoreConfig, data_dir: &Path) -> Result<Arc<dyn Store>, OpenError> {
    Ok(match config.backend {
        StoreBackend::Embedded => {
            embedded::EmbeddedStore::open_with_page_cache(data_dir, config.embedded_page_cache_bytes)?
        }
        StoreBackend::Postgres => postgres::PostgresStore::open(&config.postgres_url, config.postgres_pool).await?,
        StoreBackend::Scylla => {
            self::scylla::ScyllaStore::open(
                &config.scylla_uri,
                &config.scylla_keyspace,
                config.scylla_replication_factor,
            )
            .await?
        }
    })
}
