//! The embedded store: one redb file in the data directory.
//!
//! redb gives ACID transactions over several B-trees in one file, MVCC readers that never
//! block the writer, and a stable file format, in pure Rust. All writes go through one
//! writer thread that takes every job queued since its last commit, applies them in one
//! transaction and commits once (group commit): a burst of sends from many groups costs one
//! fsync. A job's answer is released only after its commit is durable.
//!
//! Each job is evaluated against the transaction's state so far, so conditional writes
//! (the member cap, the append fence) see the effect of earlier jobs in the same batch. If a
//! commit fails, the writer stops accepting jobs: a later batch must never land when an
//! earlier one did not, or a group's log could get a gap.
//!
//! A batch made only of message appends and read marks, what a send writes, is made
//! durable by the journal (`journal.rs`) rather than by a durable redb commit, which costs
//! two to three times its CPU; opening the store redoes what the journal holds beyond the last
//! checkpoint.

mod journal;
mod media;
mod retention;
mod wallet;

use actors::store::*;
use async_trait::async_trait;
use journal::Journal;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use schema::codec;
use schema::frames::Role;
use schema::records::*;
use schema::{GroupId, Seq, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const USERNAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("usernames");
const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions");
const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");
/// group id → the epoch of its current owner (see `actors::store::Fence`); absent means 0.
const GROUP_EPOCHS: TableDefinition<u64, u64> = TableDefinition::new("group_epochs");
const MEMBERS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("members");
const USER_GROUPS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("user_groups");
const MESSAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("messages");
const CLIENT_IDS: TableDefinition<(u64, u64, &str), (u64, u64)> = TableDefinition::new("client_msg_ids");

/// The on-disk layout version; bumped when records or tables change incompatibly.
const FORMAT_VERSION: u64 = 1;
/// The most jobs one commit takes; bounds a commit's latency under a flood.
const MAX_BATCH: usize = 4096;
/// `meta` key: the last journal epoch a checkpoint (a durable commit) covers.
const JOURNAL_COVERED: &str = "journal_covered";
/// A batch more than this long after the last checkpoint is one: it bounds what the journal
/// holds, and so the replay at the next open, and the pages redb keeps for non-durable
/// commits.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A larger append is made durable by a checkpoint rather than the journal; far below the
/// codec's decode limit, so every record read back decodes.
const JOURNAL_RECORD_MAX: usize = 1 << 20;
/// The first byte of every journal record: the layout of `Journaled`, bumped when it
/// changes, so a build never misreads another's records.
const JOURNAL_FORMAT: u8 = 1;

/// A unit of work for the writer thread. Every job is finished exactly once, with the
/// commit's outcome, whether or not it was applied (the writer may be gone or poisoned).
trait Job: Send {
    /// Applies the job to the batch's transaction; true if it hit a storage error part-way
    /// (then the whole batch must be aborted).
    fn apply(&mut self, txn: &WriteTransaction) -> bool;
    /// Reports the outcome: the job's own result if the commit succeeded, else the commit's
    /// error (or, if the job never ran, that error).
    fn finish(self: Box<Self>, commit: &StoreResult<()>);
    /// After `apply`: what the journal must hold to redo this job, if the journal may stand
    /// in for a durable commit of it (empty if there is nothing to redo); None if only a
    /// checkpoint may.
    fn journal_record(&self) -> Option<&[u8]> {
        None
    }
}

/// The outcome a job reports, given its own result and the commit's.
fn job_outcome<R>(commit: &StoreResult<()>, result: Option<StoreResult<R>>) -> StoreResult<R> {
    match (commit, result) {
        (Ok(()), Some(result)) => result,
        (Err(e), _) => Err(e.clone()),
        (Ok(()), None) => Err(unavailable("the store writer did not run this write")),
    }
}

struct FnJob<R, A, D> {
    apply: Option<A>,
    result: Option<StoreResult<R>>,
    done: D,
}

impl<R, A, D> Job for FnJob<R, A, D>
where
    R: Send,
    A: FnOnce(&WriteTransaction) -> StoreResult<R> + Send,
    D: FnOnce(StoreResult<R>) + Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> bool {
        let Some(apply) = self.apply.take() else { return false };
        let result = apply(txn);
        // Jobs read and decode before their first write, so a decode error (`Corrupt`) or a
        // refused condition leaves nothing behind and fails that job alone; only a storage
        // error may have left a job half-applied and must abort the batch.
        let storage_failed = matches!(result, Err(StoreError::Unavailable(_)));
        self.result = Some(result);
        storage_failed
    }

    fn finish(self: Box<Self>, commit: &StoreResult<()>) {
        (self.done)(job_outcome(commit, self.result));
    }
}

/// A write the journal may make durable, as it holds it: enough to redo the write at the
/// next open. Each is deterministic given the store's state, so redoing the journal's
/// records in order on the last checkpoint gives what the non-durable commits gave.
#[derive(Serialize, Deserialize)]
enum Journaled {
    /// `MessageStore::append_messages`.
    Append { group: u64, epoch: u64, after: Seq, rows: Vec<AppendRow> },
    /// `UserGroupStore::advance_read_marks_then`: (user, seq) pairs.
    ReadMarks { group: u64, marks: Vec<(u64, Seq)> },
}

impl Journaled {
    fn apply(&self, txn: &WriteTransaction) -> StoreResult<()> {
        match self {
            Journaled::Append { group, epoch, after, rows } => {
                apply_append(txn, Fence { group: GroupId(*group), epoch: *epoch }, *after, rows)
            }
            Journaled::ReadMarks { group, marks } => {
                for (user, seq) in marks {
                    advance_mark(txn, UserId(*user), GroupId(*group), *seq)?;
                }
                Ok(())
            }
        }
    }
}

/// A job of the frequent kinds a send makes, which the journal may make durable.
struct JournaledJob {
    write: Journaled,
    /// The encoded `write`; None if it is too large for the journal.
    record: Option<Vec<u8>>,
    result: Option<StoreResult<()>>,
    done: WriteDone,
}

impl Job for JournaledJob {
    fn apply(&mut self, txn: &WriteTransaction) -> bool {
        let result = self.write.apply(txn);
        let storage_failed = matches!(result, Err(StoreError::Unavailable(_)));
        self.result = Some(result);
        storage_failed
    }

    fn finish(self: Box<Self>, commit: &StoreResult<()>) {
        (self.done)(job_outcome(commit, self.result));
    }

    fn journal_record(&self) -> Option<&[u8]> {
        match (&self.record, &self.result) {
            (Some(record), Some(Ok(()))) => Some(record),
            // Refused: nothing to redo. An append is refused before its first write; a read
            // mark that could not be read leaves the marks before it moved, and losing
            // those in a crash only leaves them behind, never a message.
            (Some(_), Some(Err(_))) => Some(&[]),
            _ => None,
        }
    }
}

type BoxedJob = Box<dyn Job>;

/// Why the embedded store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("create data directory {0}: {1}")]
    Dir(String, std::io::Error),
    /// redb refused the file.
    #[error("open {0}: {1}")]
    Database(String, String),
    /// The file was written by a newer troupe.
    #[error("store format {found} is newer than this troupe understands ({FORMAT_VERSION})")]
    NewerFormat {
        /// The version in the file.
        found: u64,
    },
}

/// redb's own default page cache, 1 GiB.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 1024 * 1024 * 1024;

/// The embedded store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    jobs: mpsc::UnboundedSender<BoxedJob>,
    path: std::path::PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) `troupe.redb` and its journal in `dir`, replays what the journal
    /// holds beyond the last checkpoint, and starts the writer thread, with redb's default
    /// page cache.
    pub fn open(dir: &Path) -> Result<Arc<Self>, OpenError> {
        Self::open_with_page_cache(dir, DEFAULT_PAGE_CACHE_BYTES)
    }

    /// [`EmbeddedStore::open`] with a page cache of `bytes`: the cache is most of a busy
    /// node's memory (it fills with recently written pages up to this size).
    pub fn open_with_page_cache(dir: &Path, bytes: usize) -> Result<Arc<Self>, OpenError> {
        Self::open_with(dir, bytes, CHECKPOINT_EVERY, journal::CAPACITY)
    }

    /// [`EmbeddedStore::open_with_page_cache`] with checkpoints at most `checkpoint_every`
    /// apart and a journal of `journal_capacity` bytes (tests choose them, so that a
    /// checkpoint comes only when they want one).
    fn open_with(
        dir: &Path,
        bytes: usize,
        checkpoint_every: Duration,
        journal_capacity: u64,
    ) -> Result<Arc<Self>, OpenError> {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::Dir(dir.display().to_string(), e))?;
        let path = dir.join("troupe.redb");
        let shown = path.display().to_string();
        let db = Database::builder()
            .set_cache_size(bytes)
            .create(&path)
            .map_err(|e| OpenError::Database(shown.clone(), e.to_string()))?;
        let found = init_tables(&db).map_err(|e| OpenError::Database(shown.clone(), e.to_string()))?;
        if found > FORMAT_VERSION {
            return Err(OpenError::NewerFormat { found });
        }
        let journal_path = dir.join("troupe.journal");
        let mut journal = Journal::open(&journal_path, journal_capacity)
            .map_err(|e| OpenError::Database(journal_path.display().to_string(), e.to_string()))?;
        let replayed = recover(&db, &mut journal)
            .map_err(|e| OpenError::Database(journal_path.display().to_string(), format!("replay: {e}")))?;
        if replayed > 0 {
            tracing::info!(writes = replayed, "store journal replayed");
        }
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::unbounded_channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("troupe-store-writer".into())
            .spawn(move || run_writer(writer_db, queue, journal, checkpoint_every))
            .map_err(|e| OpenError::Database(shown, e.to_string()))?;
        Ok(Arc::new(EmbeddedStore { db, jobs, path }))
    }

    /// Runs `apply` in the next group commit and returns its result once durable.
    async fn write<R, F>(&self, apply: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(apply, move |result| {
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| unavailable("the store writer has stopped"))?
    }

    /// Queues `apply` for the next group commit; `done` gets its result once durable (or the
    /// error), on the writer thread.
    fn submit<R, A, D>(&self, apply: A, done: D)
    where
        R: Send + 'static,
        A: FnOnce(&WriteTransaction) -> StoreResult<R> + Send + 'static,
        D: FnOnce(StoreResult<R>) + Send + 'static,
    {
        let job: BoxedJob = Box::new(FnJob { apply: Some(apply), result: None, done });
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            job.finish(&Err(unavailable("the store writer has stopped")));
        }
    }

    /// Queues a message append (both `MessageStore` calls, which read the messages only to
    /// encode them); `done` gets its result once durable.
    fn submit_append(&self, fence: Fence, after: Seq, messages: &[MessageRecord], done: WriteDone) {
        match append_rows(fence.group, after, messages) {
            Ok(rows) => {
                self.submit_journaled(Journaled::Append { group: fence.group.0, epoch: fence.epoch, after, rows }, done)
            }
            Err(error) => done(Err(error)),
        }
    }

    /// Queues a write the journal may make durable; `done` gets its result once durable.
    fn submit_journaled(&self, write: Journaled, done: WriteDone) {
        let record = codec::encode(&write)
            .ok()
            .filter(|encoded| encoded.len() < JOURNAL_RECORD_MAX)
            .map(|encoded| [&[JOURNAL_FORMAT][..], &encoded].concat());
        let job: BoxedJob = Box::new(JournaledJob { write, record, result: None, done });
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            job.finish(&Err(unavailable("the store writer has stopped")));
        }
    }

    fn read<R>(&self, f: impl FnOnce(&redb::ReadTransaction) -> StoreResult<R>) -> StoreResult<R> {
        let txn = self.db.begin_read().map_err(db_error)?;
        f(&txn)
    }
}

fn init_tables(db: &Database) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let found;
    {
        let mut meta = txn.open_table(META)?;
        let current = meta.get("format_version")?.map(|v| v.value());
        found = current.unwrap_or(FORMAT_VERSION);
        if current.is_none() {
            meta.insert("format_version", FORMAT_VERSION)?;
        }
        txn.open_table(USERS)?;
        txn.open_table(USERNAMES)?;
        txn.open_table(SESSIONS)?;
        txn.open_table(GROUPS)?;
        txn.open_table(GROUP_EPOCHS)?;
        txn.open_table(MEMBERS)?;
        txn.open_table(USER_GROUPS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(CLIENT_IDS)?;
        wallet::init(&txn)?;
        media::init(&txn)?;
        retention::init(&txn)?;
    }
    txn.commit()?;
    Ok(found)
}

/// Redoes the journal's appends beyond the last checkpoint, then checkpoints, so that the
/// writer starts an epoch never written before. Returns how many writes it redid.
fn recover(db: &Database, journal: &mut Journal) -> Result<usize, String> {
    let covered = {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.get(JOURNAL_COVERED).map_err(|e| e.to_string())?.map_or(0, |v| v.value())
    };
    let epoch = covered + 1;
    let records = journal.read(epoch).map_err(|e| e.to_string())?;
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let mut replayed = 0;
    for record in &records {
        let write: Journaled = match record.split_first() {
            Some((&JOURNAL_FORMAT, encoded)) => decode(encoded).map_err(|e| e.to_string())?,
            _ => {
                return Err(format!(
                    "a record of another journal format ({:?}); open this store once with the troupe that wrote it",
                    record.first()
                ));
            }
        };
        match write.apply(&txn) {
            Ok(()) => replayed += 1,
            Err(e @ StoreError::Unavailable(_)) => return Err(e.to_string()),
            // Only writes that applied are journaled, so this is one that redb had made
            // durable already: it persists non-durable commits when the database closes
            // (a poisoned writer's node shutting down), and an append then finds its log
            // moved on. Anything else would be a bug worth seeing.
            Err(e) => tracing::warn!(error = %e, "a journaled write was not redone"),
        }
    }
    journal.start(epoch);
    checkpoint(txn, journal).map_err(|e| e.to_string())?;
    Ok(replayed)
}

fn run_writer(
    db: Arc<Database>,
    mut queue: mpsc::UnboundedReceiver<BoxedJob>,
    mut journal: Journal,
    checkpoint_every: Duration,
) {
    let mut poisoned = false;
    let mut checkpointed = Instant::now();
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if poisoned {
            finish_all(batch, &Err(unavailable("the store failed to commit earlier; restart the node")));
            continue;
        }
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                finish_all(batch, &Err(db_error(e)));
                continue;
            }
        };
        let mut storage_failed = false;
        for job in batch.iter_mut() {
            storage_failed |= job.apply(&txn);
        }
        let outcome = if storage_failed {
            // A job hit a storage error part-way; none of the batch may land.
            let _ = txn.abort();
            Err(unavailable("a storage error aborted the commit"))
        } else {
            let outcome = if checkpointed.elapsed() < checkpoint_every && journal_fits(&batch, &journal) {
                commit_journaled(txn, &mut journal, &batch)
            } else {
                checkpointed = Instant::now();
                checkpoint(txn, &mut journal)
            };
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "store commit failed; refusing further writes");
                poisoned = true;
            }
            outcome
        };
        finish_all(batch, &outcome);
    }
    // The store was dropped: a last checkpoint leaves nothing to replay at the next open.
    if !poisoned
        && journal.holds_records()
        && let Err(e) = db.begin_write().map_err(db_error).and_then(|txn| checkpoint(txn, &mut journal))
    {
        tracing::warn!(error = %e, "the last checkpoint failed; the next open replays the journal");
    }
}

/// Whether every job of the batch may be made durable by the journal, and its records fit.
fn journal_fits(batch: &[BoxedJob], journal: &Journal) -> bool {
    let (mut count, mut bytes) = (0, 0);
    for job in batch {
        let Some(record) = job.journal_record() else { return false };
        count += 1;
        bytes += record.len();
    }
    journal.fits(count, bytes)
}

/// Makes the batch durable in the journal, then commits it in redb without durability, so
/// that readers never see an append that a crash could take back.
fn commit_journaled(mut txn: WriteTransaction, journal: &mut Journal, batch: &[BoxedJob]) -> StoreResult<()> {
    txn.set_durability(Durability::None).map_err(db_error)?;
    journal
        .append(batch.iter().filter_map(|job| job.journal_record()))
        .map_err(|e| unavailable(&format!("journal write: {e}")))?;
    txn.commit().map_err(db_error)
}

/// A durable commit that also covers every record of the journal's epoch, which then
/// starts the next one.
fn checkpoint(mut txn: WriteTransaction, journal: &mut Journal) -> StoreResult<()> {
    // Saves the allocator state with the commit, so reopening after a crash needs no full
    // scan of the file.
    txn.set_quick_repair(true);
    txn.open_table(META).map_err(db_error)?.insert(JOURNAL_COVERED, journal.epoch()).map_err(db_error)?;
    txn.commit().map_err(db_error)?;
    journal.start(journal.epoch() + 1);
    Ok(())
}

fn finish_all(batch: Vec<BoxedJob>, outcome: &StoreResult<()>) {
    for job in batch {
        job.finish(outcome);
    }
}

fn unavailable(message: &str) -> StoreError {
    StoreError::Unavailable(message.to_owned())
}

fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    codec::encode(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    codec::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let (id, value) = (user.id.0, encode(user)?);
        self.write(move |txn| {
            let mut users = txn.open_table(USERS).map_err(db_error)?;
            if users.get(id).map_err(db_error)?.is_some() {
                return Ok(false);
            }
            users.insert(id, value.as_slice()).map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        self.read(|txn| {
            let users = txn.open_table(USERS).map_err(db_error)?;
            users.get(id.0).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<()> {
        self.write(move |txn| {
            let mut users = txn.open_table(USERS).map_err(db_error)?;
            users.remove(id.0).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn update_profile(
        &self,
        id: UserId,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> StoreResult<Option<UserRecord>> {
        let (nickname, avatar_url) = (nickname.map(str::to_owned), avatar_url.map(str::to_owned));
        self.write(move |txn| {
            let mut users = txn.open_table(USERS).map_err(db_error)?;
            let current = users.get(id.0).map_err(db_error)?.map(|v| decode::<UserRecord>(v.value())).transpose()?;
            let Some(mut user) = current else { return Ok(None) };
            if let Some(nickname) = nickname {
                user.nickname = nickname;
            }
            if let Some(avatar_url) = avatar_url {
                user.avatar_url = avatar_url;
            }
            users.insert(id.0, encode(&user)?.as_slice()).map_err(db_error)?;
            Ok(Some(user))
        })
        .await
    }

    async fn claim_username(&self, username: &str, credential: &CredentialRecord) -> StoreResult<bool> {
        let (username, value) = (username.to_owned(), encode(credential)?);
        self.write(move |txn| {
            let mut names = txn.open_table(USERNAMES).map_err(db_error)?;
            if names.get(username.as_str()).map_err(db_error)?.is_some() {
                return Ok(false);
            }
            names.insert(username.as_str(), value.as_slice()).map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn credential(&self, username: &str) -> StoreResult<Option<CredentialRecord>> {
        self.read(|txn| {
            let names = txn.open_table(USERNAMES).map_err(db_error)?;
            names.get(username).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn insert_session(&self, token: &TokenHash, session: &SessionRecord) -> StoreResult<()> {
        let (token, value) = (*token, encode(session)?);
        self.write(move |txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(db_error)?;
            sessions.insert(&token, value.as_slice()).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.read(|txn| {
            let sessions = txn.open_table(SESSIONS).map_err(db_error)?;
            sessions.get(token).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn delete_session(&self, token: &TokenHash) -> StoreResult<()> {
        let token = *token;
        self.write(move |txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(db_error)?;
            sessions.remove(&token).map_err(db_error)?;
            Ok(())
        })
        .await
    }
}

fn read_group(txn: &WriteTransaction, group: u64) -> StoreResult<Option<GroupRecord>> {
    let groups = txn.open_table(GROUPS).map_err(db_error)?;
    groups.get(group).map_err(db_error)?.map(|v| decode(v.value())).transpose()
}

fn write_group(txn: &WriteTransaction, record: &GroupRecord) -> StoreResult<()> {
    let mut groups = txn.open_table(GROUPS).map_err(db_error)?;
    groups.insert(record.id.0, encode(record)?.as_slice()).map_err(db_error)?;
    Ok(())
}

/// Refuses the write unless `fence` holds the group's current epoch. Called first in every
/// fenced job, before anything is written.
fn check_fence(txn: &WriteTransaction, fence: Fence) -> StoreResult<()> {
    let epochs = txn.open_table(GROUP_EPOCHS).map_err(db_error)?;
    let current = epochs.get(fence.group.0).map_err(db_error)?.map_or(0, |v| v.value());
    if current == fence.epoch { Ok(()) } else { Err(fence.refused(current)) }
}

fn read_member(txn: &WriteTransaction, group: u64, user: u64) -> StoreResult<Option<MemberRecord>> {
    let members = txn.open_table(MEMBERS).map_err(db_error)?;
    members.get((group, user)).map_err(db_error)?.map(|v| decode(v.value())).transpose()
}

fn write_member(txn: &WriteTransaction, group: u64, member: &MemberRecord) -> StoreResult<()> {
    let mut members = txn.open_table(MEMBERS).map_err(db_error)?;
    members.insert((group, member.user.0), encode(member)?.as_slice()).map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl GroupStore for EmbeddedStore {
    async fn create_group(&self, group: &GroupRecord, owner: &MemberRecord) -> StoreResult<bool> {
        let (mut group, owner) = (group.clone(), *owner);
        self.write(move |txn| {
            if read_group(txn, group.id.0)?.is_some() {
                return Ok(false);
            }
            group.member_count = 1;
            write_group(txn, &group)?;
            write_member(txn, group.id.0, &owner)?;
            Ok(true)
        })
        .await
    }

    async fn claim_group(&self, group: GroupId) -> StoreResult<Option<Fence>> {
        self.write(move |txn| {
            if read_group(txn, group.0)?.is_none() {
                return Ok(None);
            }
            let mut epochs = txn.open_table(GROUP_EPOCHS).map_err(db_error)?;
            let epoch = epochs.get(group.0).map_err(db_error)?.map_or(0, |v| v.value()) + 1;
            epochs.insert(group.0, epoch).map_err(db_error)?;
            Ok(Some(Fence { group, epoch }))
        })
        .await
    }

    async fn group(&self, id: GroupId) -> StoreResult<Option<GroupRecord>> {
        self.read(|txn| {
            let groups = txn.open_table(GROUPS).map_err(db_error)?;
            groups.get(id.0).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<MemberRecord>> {
        self.read(|txn| {
            let members = txn.open_table(MEMBERS).map_err(db_error)?;
            members.get((group.0, user.0)).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn members(&self, group: GroupId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<MemberRecord>> {
        let start = match after {
            Some(UserId(u64::MAX)) => return Ok(Vec::new()),
            Some(user) => user.0 + 1,
            None => 0,
        };
        self.read(|txn| {
            let members = txn.open_table(MEMBERS).map_err(db_error)?;
            let range = members.range((group.0, start)..=(group.0, u64::MAX)).map_err(db_error)?;
            range.take(limit).map(|entry| decode(entry.map_err(db_error)?.1.value())).collect()
        })
    }

    async fn add_member_if_below_cap(&self, fence: Fence, member: &MemberRecord) -> StoreResult<AddMemberOutcome> {
        let (group, member) = (fence.group, *member);
        self.write(move |txn| {
            check_fence(txn, fence)?;
            let Some(mut record) = read_group(txn, group.0)?.filter(|g| !g.dissolved) else {
                return Ok(AddMemberOutcome::NoGroup);
            };
            if read_member(txn, group.0, member.user.0)?.is_some() {
                return Ok(AddMemberOutcome::AlreadyMember);
            }
            if record.member_count >= record.max_members {
                return Ok(AddMemberOutcome::Full);
            }
            record.member_count += 1;
            write_group(txn, &record)?;
            write_member(txn, group.0, &member)?;
            Ok(AddMemberOutcome::Added(record.member_count))
        })
        .await
    }

    async fn remove_member(&self, fence: Fence, user: UserId) -> StoreResult<Option<u32>> {
        let group = fence.group;
        self.write(move |txn| {
            check_fence(txn, fence)?;
            let Some(mut record) = read_group(txn, group.0)? else {
                return Ok(None);
            };
            let mut members = txn.open_table(MEMBERS).map_err(db_error)?;
            if members.remove((group.0, user.0)).map_err(db_error)?.is_none() {
                return Ok(None);
            }
            drop(members);
            record.member_count = record.member_count.saturating_sub(1);
            write_group(txn, &record)?;
            Ok(Some(record.member_count))
        })
        .await
    }

    async fn set_member_role(&self, fence: Fence, user: UserId, role: Role) -> StoreResult<bool> {
        let group = fence.group;
        self.write(move |txn| {
            check_fence(txn, fence)?;
            let Some(mut member) = read_member(txn, group.0, user.0)? else {
                return Ok(false);
            };
            member.role = role;
            write_member(txn, group.0, &member)?;
            Ok(true)
        })
        .await
    }

    async fn transfer_ownership(&self, fence: Fence, from: UserId, to: UserId) -> StoreResult<bool> {
        let group = fence.group;
        self.write(move |txn| {
            check_fence(txn, fence)?;
            let Some(mut record) = read_group(txn, group.0)? else {
                return Ok(false);
            };
            let (Some(mut old), Some(mut new)) = (read_member(txn, group.0, from.0)?, read_member(txn, group.0, to.0)?)
            else {
                return Ok(false);
            };
            old.role = Role::Admin;
            new.role = Role::Owner;
            record.owner = to;
            write_member(txn, group.0, &old)?;
            write_member(txn, group.0, &new)?;
            write_group(txn, &record)?;
            Ok(true)
        })
        .await
    }

    async fn update_group(
        &self,
        fence: Fence,
        name: Option<&str>,
        open: Option<bool>,
    ) -> StoreResult<Option<GroupRecord>> {
        let (group, name) = (fence.group, name.map(str::to_owned));
        self.write(move |txn| {
            check_fence(txn, fence)?;
            let Some(mut record) = read_group(txn, group.0)? else {
                return Ok(None);
            };
            if let Some(name) = name {
                record.name = name;
            }
            if let Some(open) = open {
                record.open = open;
            }
            write_group(txn, &record)?;
            Ok(Some(record))
        })
        .await
    }

    async fn dissolve_group(&self, fence: Fence) -> StoreResult<bool> {
        let group = fence.group;
        self.write(move |txn| {
            check_fence(txn, fence)?;
            let Some(mut record) = read_group(txn, group.0)? else {
                return Ok(false);
            };
            record.dissolved = true;
            write_group(txn, &record)?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl UserGroupStore for EmbeddedStore {
    async fn link_user_group(&self, user: UserId, link: &UserGroupRecord) -> StoreResult<()> {
        let (link, value) = (*link, encode(link)?);
        self.write(move |txn| {
            let mut links = txn.open_table(USER_GROUPS).map_err(db_error)?;
            if links.get((user.0, link.group.0)).map_err(db_error)?.is_none() {
                links.insert((user.0, link.group.0), value.as_slice()).map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn unlink_user_group(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        self.write(move |txn| {
            let mut links = txn.open_table(USER_GROUPS).map_err(db_error)?;
            links.remove((user.0, group.0)).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn user_groups(&self, user: UserId) -> StoreResult<Vec<UserGroupRecord>> {
        self.read(|txn| {
            let links = txn.open_table(USER_GROUPS).map_err(db_error)?;
            let range = links.range((user.0, 0)..=(user.0, u64::MAX)).map_err(db_error)?;
            range.map(|entry| decode(entry.map_err(db_error)?.1.value())).collect()
        })
    }

    async fn user_group(&self, user: UserId, group: GroupId) -> StoreResult<Option<UserGroupRecord>> {
        self.read(|txn| {
            let links = txn.open_table(USER_GROUPS).map_err(db_error)?;
            links.get((user.0, group.0)).map_err(db_error)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn advance_read_mark(&self, user: UserId, group: GroupId, seq: Seq) -> StoreResult<Option<Seq>> {
        self.write(move |txn| advance_mark(txn, user, group, seq)).await
    }

    fn advance_read_marks_then(&self, group: GroupId, marks: Vec<(UserId, Seq)>, done: WriteDone) {
        let marks = marks.into_iter().map(|(user, seq)| (user.0, seq)).collect();
        self.submit_journaled(Journaled::ReadMarks { group: group.0, marks }, done);
    }
}

fn advance_mark(txn: &WriteTransaction, user: UserId, group: GroupId, seq: Seq) -> StoreResult<Option<Seq>> {
    let mut links = txn.open_table(USER_GROUPS).map_err(db_error)?;
    let current = links.get((user.0, group.0)).map_err(db_error)?.map(|v| decode::<UserGroupRecord>(v.value()));
    let Some(mut link) = current.transpose()? else { return Ok(None) };
    if seq > link.read_seq {
        link.read_seq = seq;
        links.insert((user.0, group.0), encode(&link)?.as_slice()).map_err(db_error)?;
    }
    Ok(Some(link.read_seq))
}

/// (seq, sender, client_msg_id, ts, encoded record) for each message, checked to follow `after`.
type AppendRow = (Seq, u64, String, u64, Vec<u8>);

fn append_rows(group: GroupId, after: Seq, messages: &[MessageRecord]) -> StoreResult<Vec<AppendRow>> {
    check_append(group, after, messages)?;
    let mut rows = Vec::with_capacity(messages.len());
    for message in messages {
        rows.push((message.seq, message.sender.0, message.client_msg_id.clone(), message.ts, encode(message)?));
    }
    Ok(rows)
}

fn apply_append(txn: &WriteTransaction, fence: Fence, after: Seq, rows: &[AppendRow]) -> StoreResult<()> {
    check_fence(txn, fence)?;
    let group = fence.group;
    let mut table = txn.open_table(MESSAGES).map_err(db_error)?;
    let mut last = last_seq_in(&table, group.0)?;
    if last == 0 {
        // An empty log may be one retention emptied: it goes on from where it was cut.
        last =
            retention::retention_in(&txn.open_table(retention::RETENTION).map_err(db_error)?, group.0)?.trimmed_through;
    }
    if last != after {
        return Err(StoreError::Conflict(format!("log of group {group} ends at {last}, not {after}")));
    }
    let mut ids = txn.open_table(CLIENT_IDS).map_err(db_error)?;
    for (seq, sender, client_msg_id, ts, value) in rows {
        table.insert((group.0, *seq), value.as_slice()).map_err(db_error)?;
        ids.insert((group.0, *sender, client_msg_id.as_str()), (*seq, *ts)).map_err(db_error)?;
    }
    Ok(())
}

/// The newest seq left in the log (0 if none is left; see `last_seq`).
fn last_seq_in(messages: &impl ReadableTable<(u64, u64), &'static [u8]>, group: u64) -> StoreResult<Seq> {
    let mut range = messages.range((group, 0)..=(group, u64::MAX)).map_err(db_error)?;
    match range.next_back() {
        Some(entry) => Ok(entry.map_err(db_error)?.0.value().1),
        None => Ok(0),
    }
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn append_messages(&self, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.submit_append(fence, after, messages, Box::new(move |result| drop(tx.send(result))));
        rx.await.map_err(|_| unavailable("the store writer has stopped"))?
    }

    fn append_messages_then(&self, fence: Fence, after: Seq, messages: Vec<MessageRecord>, done: WriteDone) {
        self.submit_append(fence, after, &messages, done);
    }

    async fn last_seq(&self, group: GroupId) -> StoreResult<Seq> {
        self.read(|txn| {
            let messages = txn.open_table(MESSAGES).map_err(db_error)?;
            match last_seq_in(&messages, group.0)? {
                // An empty log may be one retention emptied (see `apply_append`).
                0 => Ok(retention::retention_in(&txn.open_table(retention::RETENTION).map_err(db_error)?, group.0)?
                    .trimmed_through),
                last => Ok(last),
            }
        })
    }

    async fn messages_after(&self, group: GroupId, after: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        if after == u64::MAX {
            return Ok(Vec::new());
        }
        self.read(|txn| {
            let messages = txn.open_table(MESSAGES).map_err(db_error)?;
            let range = messages.range((group.0, after + 1)..=(group.0, u64::MAX)).map_err(db_error)?;
            range.take(limit).map(|entry| decode(entry.map_err(db_error)?.1.value())).collect()
        })
    }

    async fn messages_before(&self, group: GroupId, before: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>> {
        if before == 0 {
            return Ok(Vec::new());
        }
        self.read(|txn| {
            let messages = txn.open_table(MESSAGES).map_err(db_error)?;
            let range = messages.range((group.0, 0)..(group.0, before)).map_err(db_error)?;
            let mut page: Vec<MessageRecord> = range
                .rev()
                .take(limit)
                .map(|entry| decode(entry.map_err(db_error)?.1.value()))
                .collect::<StoreResult<_>>()?;
            page.reverse();
            Ok(page)
        })
    }

    async fn message_by_client_id(
        &self,
        group: GroupId,
        sender: UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<(Seq, u64)>> {
        self.read(|txn| {
            let ids = txn.open_table(CLIENT_IDS).map_err(db_error)?;
            Ok(ids.get((group.0, sender.0, client_msg_id)).map_err(db_error)?.map(|v| v.value()))
        })
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn disk_usage_bytes(&self) -> StoreResult<Option<u64>> {
        use std::os::unix::fs::MetadataExt;
        // Blocks allocated, not the length: the file may be sparse.
        let blocks = |path: &Path| std::fs::metadata(path).map(|m| m.blocks() * 512);
        let store = blocks(&self.path).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // The journal is made when the store opens; it is counted once it exists.
        let journal = blocks(&self.path.with_file_name("troupe.journal")).unwrap_or(0);
        Ok(Some(store + journal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(group: GroupId, seq: Seq) -> MessageRecord {
        MessageRecord {
            group,
            seq,
            sender: UserId(7),
            client_msg_id: format!("c{seq}"),
            kind: schema::frames::MessageKind::Text,
            body: format!("\"m{seq}\""),
            ts: 1000 + seq,
        }
    }

    /// Copies the store's files as a `kill -9` would leave them: what the process wrote,
    /// whether or not it was synced (the page cache survives a process's death).
    fn crash_image(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().expect("temp dir");
        for name in ["troupe.redb", "troupe.journal"] {
            std::fs::copy(from.join(name), to.path().join(name)).expect("copy a store file");
        }
        to
    }

    /// Opens the store's files as `EmbeddedStore::open` does and reports how many journaled
    /// writes it redid.
    fn replayed_at_open(dir: &Path) -> usize {
        let db = Database::create(dir.join("troupe.redb")).expect("open redb");
        let mut journal = Journal::open(&dir.join("troupe.journal"), journal::CAPACITY).expect("open journal");
        recover(&db, &mut journal).expect("recover")
    }

    async fn seqs(store: &EmbeddedStore, group: GroupId) -> Vec<Seq> {
        store.messages_after(group, 0, 1000).await.expect("read the log").iter().map(|m| m.seq).collect()
    }

    /// Opens a store whose only checkpoints are the ones its writes call for, so a test
    /// knows what the journal holds however slow the disk.
    fn open_untimed(dir: &Path) -> Arc<EmbeddedStore> {
        EmbeddedStore::open_with(dir, DEFAULT_PAGE_CACHE_BYTES, Duration::from_secs(3600), journal::CAPACITY)
            .expect("open")
    }

    async fn append(store: &EmbeddedStore, group: GroupId, seq: Seq) {
        store.append_messages(Fence { group, epoch: 0 }, seq - 1, &[message(group, seq)]).await.expect("append");
    }

    #[tokio::test]
    async fn acked_appends_and_read_marks_come_back_from_the_journal_after_a_crash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_untimed(dir.path());
        let group = GroupId(5);
        store.link_user_group(UserId(7), &UserGroupRecord { group, read_seq: 0, joined_at: 1 }).await.expect("link");
        for seq in 1..=20 {
            append(&store, group, seq).await;
        }
        let (tx, rx) = oneshot::channel();
        store.advance_read_marks_then(group, vec![(UserId(7), 20)], Box::new(move |r| drop(tx.send(r))));
        rx.await.expect("marks done").expect("marks");

        let image = crash_image(dir.path());
        // 20 appends and the marks, each acked after the journal's fsync and not yet
        // covered by a checkpoint (the link's durable commit came first).
        assert_eq!(replayed_at_open(crash_image(dir.path()).path()), 21);

        let recovered = EmbeddedStore::open(image.path()).expect("reopen");
        assert_eq!(seqs(&recovered, group).await, (1..=20).collect::<Vec<_>>());
        assert_eq!(recovered.last_seq(group).await.expect("last seq"), 20);
        let link = recovered.user_group(UserId(7), group).await.expect("link").expect("linked");
        assert_eq!(link.read_seq, 20);
        let found = recovered.message_by_client_id(group, UserId(7), "c20").await.expect("lookup");
        assert_eq!(found, Some((20, 1020)), "the client id index came back too");
    }

    #[tokio::test]
    async fn a_recovered_store_goes_on_without_replaying_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_untimed(dir.path());
        let group = GroupId(9);
        for seq in 1..=5 {
            append(&store, group, seq).await;
        }
        let first = crash_image(dir.path());
        let recovered = open_untimed(first.path());
        for seq in 6..=8 {
            append(&recovered, group, seq).await;
        }
        // A second crash: only what came after the first recovery is redone.
        let second = crash_image(first.path());
        assert_eq!(replayed_at_open(crash_image(first.path()).path()), 3);
        let again = EmbeddedStore::open(second.path()).expect("reopen again");
        assert_eq!(seqs(&again, group).await, (1..=8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn another_kind_of_write_checkpoints_what_the_journal_held() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_untimed(dir.path());
        let group = GroupId(3);
        for seq in 1..=4 {
            append(&store, group, seq).await;
        }
        store.delete_user(UserId(1)).await.expect("a write the journal does not take");
        append(&store, group, 5).await;
        assert_eq!(replayed_at_open(crash_image(dir.path()).path()), 1, "only the append after the checkpoint");
        let recovered = EmbeddedStore::open(crash_image(dir.path()).path()).expect("reopen");
        assert_eq!(seqs(&recovered, group).await, (1..=5).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_clean_close_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_untimed(dir.path());
        append(&store, GroupId(4), 1).await;
        drop(store);
        // The writer checkpoints once its queue closes; wait for it to let go of the file.
        let mut left = None;
        for _ in 0..100 {
            if let Ok(db) = Database::create(dir.path().join("troupe.redb")) {
                let txn = db.begin_read().expect("read");
                let covered = txn.open_table(META).expect("meta").get(JOURNAL_COVERED).expect("get").map(|v| v.value());
                let journal = Journal::open(&dir.path().join("troupe.journal"), journal::CAPACITY).expect("journal");
                // The open's checkpoint covered epoch 1 and the append went into epoch 2:
                // without a last checkpoint, the next open would redo epoch 2.
                let next = covered.unwrap_or(0) + 1;
                left = Some((covered, journal.read(next).expect("read").len()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, Some((Some(2), 0)), "the last checkpoint covered the append's epoch");
    }

    /// The last epoch a checkpoint covers in `dir`, and the journal's records past it.
    fn uncovered(dir: &Path, capacity: u64) -> (u64, Vec<Vec<u8>>) {
        let db = Database::create(dir.join("troupe.redb")).expect("open redb");
        let txn = db.begin_read().expect("read");
        let covered = txn.open_table(META).expect("meta").get(JOURNAL_COVERED).expect("get").map_or(0, |v| v.value());
        let journal = Journal::open(&dir.join("troupe.journal"), capacity).expect("journal");
        (covered, journal.read(covered + 1).expect("read"))
    }

    /// How many records past the last checkpoint the journal in `dir` holds.
    fn journal_records(dir: &Path) -> usize {
        uncovered(dir, journal::CAPACITY).1.len()
    }

    #[tokio::test]
    async fn refused_and_oversized_writes_stay_out_of_the_journal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_untimed(dir.path());
        let group = GroupId(6);
        append(&store, group, 1).await;
        append(&store, group, 2).await;
        // Over the journal's record limit: a checkpoint makes it durable, with all before it.
        let mut big = message(group, 3);
        big.body = format!("\"{}\"", "x".repeat(JOURNAL_RECORD_MAX));
        store.append_messages(Fence { group, epoch: 0 }, 2, &[big]).await.expect("big append");
        append(&store, group, 4).await;
        let refused = store.append_messages(Fence { group, epoch: 0 }, 9, &[message(group, 10)]).await;
        assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
        append(&store, group, 5).await;
        assert_eq!(journal_records(crash_image(dir.path()).path()), 2, "4 and 5, not the refused one");
        assert_eq!(replayed_at_open(crash_image(dir.path()).path()), 2);
        let recovered = EmbeddedStore::open(crash_image(dir.path()).path()).expect("reopen");
        assert_eq!(seqs(&recovered, group).await, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_full_journal_checkpoints_and_starts_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let capacity = 4096;
        let store = EmbeddedStore::open_with(dir.path(), DEFAULT_PAGE_CACHE_BYTES, Duration::from_secs(3600), capacity)
            .expect("open");
        let group = GroupId(2);
        for seq in 1..=250 {
            append(&store, group, seq).await;
        }
        assert_eq!(seqs(&store, group).await, (1..=250).collect::<Vec<_>>());

        let image = crash_image(dir.path());
        let (covered, held) = uncovered(image.path(), capacity);
        let held_bytes: usize = held.iter().map(|record| journal::HEADER + record.len()).sum();
        // 250 records of about 50 bytes each, header included: the open's checkpoint covered
        // epoch 1, and the journal filled at least twice after it.
        assert!(covered >= 3, "checkpoints covered epochs up to {covered}");
        assert!(!held.is_empty() && held_bytes <= capacity as usize, "{} records, {held_bytes} bytes", held.len());
        assert_eq!(replayed_at_open(crash_image(dir.path()).path()), held.len());
        let recovered = EmbeddedStore::open(image.path()).expect("reopen");
        assert_eq!(seqs(&recovered, group).await, (1..=250).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_checkpoint_comes_once_its_interval_has_passed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open_with(dir.path(), DEFAULT_PAGE_CACHE_BYTES, Duration::ZERO, journal::CAPACITY)
            .expect("open");
        let group = GroupId(8);
        for seq in 1..=3 {
            append(&store, group, seq).await;
        }
        assert_eq!(replayed_at_open(crash_image(dir.path()).path()), 0, "every batch was a checkpoint");
        let recovered = EmbeddedStore::open(crash_image(dir.path()).path()).expect("reopen");
        assert_eq!(seqs(&recovered, group).await, [1, 2, 3]);
    }
}
