//! The ScyllaDB store, for clusters: every call is one statement or one single-partition
//! (conditional) batch, on the layout of `schema/cql/001_init.cql`.
//!
//! ScyllaDB has no multi-statement transactions, so every rule the actors rely on is a
//! lightweight transaction (LWT) on one partition: "if free" is `IF NOT EXISTS`, the member
//! cap and the group fence are conditions on the group partition's static columns, and the
//! log's gapless seqs are a condition on each bucket's static `last_seq`. When an LWT is
//! refused, the old values it returns tell the reasons apart (fenced, no group, full, ...).
//! The log carries its own copy of the fence in each bucket (see `claim_group`, `messages.rs`
//! and the CQL file), so an append stays one partition too.
//!
//! **Invariant:** every LWT runs with SERIAL serial consistency, a Paxos quorum of all
//! replicas in every datacenter. LOCAL_SERIAL would let two datacenters each run Paxos
//! among their own replicas, with quorums that do not overlap, so both could win the same
//! `IF NOT EXISTS` or the same epoch. Plain reads and writes stay at LOCAL_QUORUM.
//!
//! **Invariant:** a partition written by LWTs is never written by a plain statement, so
//! Paxos orders every change to it; the log's fence too is an LWT (`IF epoch < :new`). The
//! media record's partition is the one exception (see below).
//!
//! **Invariant:** the buckets that hold a `last_seq` are a prefix 0..=k of the log: a bucket
//! is opened only on top of a full one (checked at SERIAL when an append starts there).
//!
//! A request the server refuses as written (`Invalid`, `SyntaxError`, `Unauthorized`, a
//! batch it cannot run) is `Corrupt`: never applied, and not worth retrying. Timeouts,
//! overload and lost connections are `Unavailable`: they may have applied.
//!
//! Calls that must not wait (`*_then`) run on ordered lanes, one per group hash, as in the
//! PostgreSQL store: a group's writes apply in the order its actor submitted them.
//!
//! Wallets (`wallet.rs`) and red packets (`redpackets.rs`) follow the same shapes: a
//! wallet's balance is a static column moved by a compare-and-set in the same conditional
//! UPDATE that writes the entry's row; a red packet's share count is a static column moved
//! the same way by the grabber's row. A red packet carries its own copy of the group fence,
//! like the log's buckets, but raised lazily by the next owner that writes the packet, so
//! fenced packet writes also read the group's epoch at SERIAL first (see `redpackets.rs` for
//! the window that leaves).
//!
//! Media (`media.rs`): a user's media bytes are a compare-and-set like a wallet's balance,
//! in a partition of their own; a media record is inserted `IF NOT EXISTS`. Its partition is
//! the one exception to the invariant above: its links and its delete are plain writes, since
//! ScyllaDB cannot make a whole-partition DELETE conditional and the record's only LWT just
//! settles who owns a random id (see the CQL file for what that leaves). The media not yet
//! sent, to delete when they come due, are an index in hour buckets like the red packets'
//! (`due.rs`), written before the record.
//!
//! Assumptions about ScyllaDB that the offline tests cannot check (they script the server's
//! answers) and that only the contract suite against a real server (`SCYLLA_URI`) exercises:
//! - A conditional UPDATE may test static and regular columns of one row together, and the
//!   regular columns of a clustering row that does not exist test as null (`role = null` in
//!   `add_member`, `amount = null` for a ledger entry, `share = null` for a grab).
//! - A refused LWT returns the current values of the static columns it tested even when the
//!   clustering row it named does not exist (the refused ledger write's `balance`, the
//!   refused grab's `epoch`).
//! - An `INSERT` that sets only static columns may be `IF NOT EXISTS`, and tests whether the
//!   partition's static row exists (`insert_group`, `insert_red_packet`).
//! - `SELECT ... WHERE <partition key> LIMIT 1` returns the static row of a partition that has
//!   no clustering row yet (a new red packet, a bucket or group with static columns only);
//!   a SELECT that names one clustering row returns nothing when that row is absent, even if
//!   the static row exists (why a ledger write reads the balance and the entry separately).
//! - `IF epoch < ?` is false for a null epoch, so raising a fence never creates a partition.
//! - A literal in a condition (`state = 'open'`, `dissolved = false`) is compared like a
//!   bound value.
//! - `UPDATE ... IF bytes = null` applies to a partition that does not exist yet (and so
//!   creates it), as `IF balance = null` does for a wallet (`set_first_media_bytes`).
//! - An INSERT of only a clustering row's key columns (`link_media_group`) creates the row,
//!   and a static-only `IF NOT EXISTS` insert ignores such rows (a link written before its
//!   record, or left by a racing delete, does not make the id look taken).
//! - `SELECT ... LIMIT 1` of a partition with clustering rows but no static row returns a
//!   row whose static columns are all null (read as "no record" in `rows::media`).
//! - A plain partition DELETE issued after an `IF NOT EXISTS` insert completed hides it: its
//!   write timestamp is later than the Paxos ballot's, i.e. clock skew between coordinators
//!   is smaller than the time between the two.

mod accounts;
mod due;
mod fence;
mod groups;
mod log;
mod media;
mod messages;
mod redpackets;
mod retention;
mod rows;
mod statements;
mod wallet;

pub use log::{BUCKET_SEQS, bucket_of};
pub use statements::{StatementKind, schema_statements, statement_texts, valid_keyspace};

use super::lanes::{Job, Lanes};
use actors::store::*;
use futures_util::StreamExt;
use rows::{Lwt, execution, next_row, pager};
use schema::GroupId;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::MaybeUnset;
use statements::Statements;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Lanes for the ordered, non-waiting writes. More than PostgreSQL's: an LWT costs several
/// round trips, so a lane is busy longer per write.
const LANES: usize = 32;

/// Why the ScyllaDB store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The contact points, keyspace or replication factor are unusable.
    #[error("scylla configuration: {0}")]
    Config(String),
    /// No contact point answered.
    #[error("scylla: connect: {0}")]
    Connect(String),
    /// The server refused a schema statement.
    #[error("scylla: schema statement {0}: {1}")]
    Schema(String, String),
    /// The server refused to prepare a statement (the schema is not the one expected).
    #[error("scylla: prepare {0}: {1}")]
    Prepare(String, String),
}

/// How to reach ScyllaDB and where the data lives.
#[derive(Debug, Clone)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`; any one that answers is enough, the rest of the cluster
    /// is discovered from it.
    pub contact_points: Vec<String>,
    /// The keyspace, created if missing.
    pub keyspace: String,
    /// Replicas per partition when the keyspace is created (1 for tests, 3 in production).
    pub replication_factor: u32,
    /// How long one request may take before it fails as `unavailable`. A timed-out write may
    /// still apply, which the store reports as such.
    pub request_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

impl ScyllaOptions {
    /// Options with the default timeouts.
    pub fn new(contact_points: &[String], keyspace: &str, replication_factor: u32) -> ScyllaOptions {
        ScyllaOptions {
            contact_points: contact_points.to_vec(),
            keyspace: keyspace.to_owned(),
            replication_factor,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The ScyllaDB store.
pub struct ScyllaStore {
    inner: Arc<Inner>,
    keyspace: String,
    lanes: Lanes,
}

/// The session and its prepared statements, shared with the lanes' jobs.
struct Inner {
    session: Session,
    st: Statements,
}

impl ScyllaStore {
    /// Connects through `contact_points`, creates the keyspace (replication factor
    /// `replication_factor`) and the tables if needed, and prepares every statement.
    pub async fn open(
        contact_points: &[String],
        keyspace: &str,
        replication_factor: u32,
    ) -> Result<Arc<ScyllaStore>, OpenError> {
        ScyllaStore::open_with(ScyllaOptions::new(contact_points, keyspace, replication_factor)).await
    }

    /// [`ScyllaStore::open`] with every option.
    pub async fn open_with(options: ScyllaOptions) -> Result<Arc<ScyllaStore>, OpenError> {
        let schema = schema_statements(&options.keyspace, options.replication_factor)?;
        // An entry may list several points, comma-separated (as `SCYLLA_URI` does).
        let contact_points: Vec<&str> = options
            .contact_points
            .iter()
            .flat_map(|entry| entry.split(','))
            .map(str::trim)
            .filter(|point| !point.is_empty())
            .collect();
        if contact_points.is_empty() {
            return Err(OpenError::Config("no contact point".into()));
        }
        let profile = ExecutionProfile::builder()
            .consistency(Consistency::LocalQuorum)
            // SERIAL, not LOCAL_SERIAL: see the invariant at the top of this file.
            .serial_consistency(Some(SerialConsistency::Serial))
            .request_timeout(Some(options.request_timeout))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&contact_points)
            .connection_timeout(options.connect_timeout)
            .default_execution_profile_handle(profile.into_handle())
            // Token-aware routing needs our keyspace's replication and partitioners, and
            // nothing else: fetching every keyspace's full schema would only cost time.
            .keyspaces_to_fetch([options.keyspace.clone()])
            .fetch_full_schema_metadata(false)
            .build()
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        for statement in schema {
            // The driver waits for schema agreement after each change, so the next
            // statement (and the prepares) find the new objects on every node.
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .map_err(|e| OpenError::Schema(statement, e.to_string()))?;
        }
        let st = Statements::prepare(&session, &options.keyspace).await?;
        let lanes = Lanes::start(LANES);
        Ok(Arc::new(ScyllaStore { inner: Arc::new(Inner { session, st }), keyspace: options.keyspace, lanes }))
    }

    /// The keyspace the store writes to.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Runs `job` after everything submitted before for the same group.
    fn in_order(&self, group: GroupId, job: Job) {
        self.lanes.run(group, job);
    }
}

/// Attempts of an `IF NOT EXISTS` insert whose outcome was unknown (a timeout) before the
/// store gives up as `unavailable`.
const INSERT_ATTEMPTS: usize = 3;

/// One statement of a conditional batch with its values.
type BatchPart<'a> = (&'a PreparedStatement, Box<dyn SerializeRow + Send + Sync + 'a>);

impl Inner {
    /// Runs an `INSERT ... IF NOT EXISTS` (each call of `attempt` sends it once): true if it
    /// applied, false if the row was there. After an ambiguous failure (`Unavailable`: a
    /// timeout may have applied) it tries again, and a refusal then may be its own earlier
    /// attempt, landed after all: ScyllaDB answers a refused insert with the row that is
    /// there, and `is_ours` tells whether it is the one we wrote. A refusal on the first
    /// attempt is always someone else's (the contract: an id is inserted once).
    async fn insert_if_absent<F, Fut>(
        &self,
        mut attempt: F,
        is_ours: impl Fn(&Lwt) -> StoreResult<bool>,
    ) -> StoreResult<bool>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<Lwt>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(answer) if answer.applied => return Ok(true),
                Ok(_) if tries == 1 => return Ok(false),
                Ok(answer) => return is_ours(&answer),
                Err(StoreError::Unavailable(message)) if tries < INSERT_ATTEMPTS => {
                    tracing::debug!(%message, "scylla: an insert's outcome is unknown; trying again");
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn run(&self, statement: &PreparedStatement, values: impl SerializeRow) -> StoreResult<QueryResult> {
        self.session.execute_unpaged(statement, values).await.map_err(execution)
    }

    async fn lwt(&self, statement: &PreparedStatement, values: impl SerializeRow) -> StoreResult<Lwt> {
        Lwt::from_result(self.run(statement, values).await?)
    }

    /// Runs `parts` as one logged batch; all on one partition, with at least one condition.
    async fn lwt_batch(&self, parts: Vec<BatchPart<'_>>) -> StoreResult<Lwt> {
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::with_capacity(parts.len());
        for (statement, row) in parts {
            batch.append_statement(statement.clone());
            values.push(row);
        }
        Lwt::from_result(self.session.batch(&batch, values).await.map_err(execution)?)
    }

    /// The first row, if any.
    async fn first<R>(&self, statement: &PreparedStatement, values: impl SerializeRow) -> StoreResult<Option<R>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let rows = self.run(statement, values).await?.into_rows_result().map_err(rows::corrupt)?;
        rows.maybe_first_row::<R>().map_err(rows::corrupt)
    }

    /// Up to `limit` rows, fetched page by page (the driver's paging), never more.
    async fn paged<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        limit: usize,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata> + Unpin,
    {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let pages = self.session.execute_iter(statement.clone(), values).await.map_err(pager)?;
        let mut rows = pages.rows_stream::<R>().map_err(rows::corrupt)?;
        while let Some(row) = rows.next().await {
            out.push(row.map_err(next_row)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// A `LIMIT` bind value.
fn limit_value(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

/// Binds `None` as UNSET, so the column keeps its value.
fn unset<T>(value: Option<T>) -> MaybeUnset<T> {
    value.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

#[async_trait::async_trait]
impl Store for ScyllaStore {
    fn backend(&self) -> &'static str {
        "scylla"
    }

    async fn disk_usage_bytes(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fit_cql_int() {
        assert_eq!(limit_value(10), 10);
        assert_eq!(limit_value(usize::MAX), i32::MAX);
    }
}
