//! The cache seam: copies of hot data kept outside the store (Redis, on a cluster) so that
//! the reads every client makes at connect time (its groups, their last seqs, its role in
//! each) and the scroll-back of recent history do not all land on the store.
//!
//! The rule that keeps it safe: **a cache is never the only copy of anything**, and nothing
//! a client is told depends on it being fresh where staleness could hurt.
//! * Membership and roles are written only by the group's owner actor (the full list when it
//!   starts, then each change), never filled in from a reader's store read, which could be
//!   older than a removal. A miss means "ask the store", never "not a member". Even so, a
//!   cached role only decides what a user's group list shows; whether they may read a
//!   group's messages is always asked of the store.
//! * Message pages come from the cache only when the cache holds every message of the page:
//!   committed messages never change, so a cached run of seqs is right however old it is.
//! * A group's last seq in the cache lags its owner by a moment. It serves `my_groups` (a
//!   badge refresh), never `auth` or `sync`, which read it from the store: a device
//!   reconnecting must not be told a group ends before a message that was already acked, or
//!   it would miss that message both live and in what it read.
//! * A write that fails is remembered and its keys are deleted once the cache answers again;
//!   entries also expire. Every method degrades to a miss or a no-op: callers fall back to
//!   the store, so the node serves while the cache is down and refills it after.
//!
//! A single node runs without a cache ([`NoCache`]); the node crate implements [`Cache`]
//! over Redis.

use async_trait::async_trait;
use schema::frames::Role;
use schema::records::{GroupRecord, MessageRecord};
use schema::{GroupId, Seq, UserId};

/// What the cache knows of one group, as one user asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedGroup {
    /// The group's row.
    pub record: GroupRecord,
    /// Its newest seq as the owner last wrote it (may lag a moment), if cached.
    pub last_seq: Option<Seq>,
    /// The asker's role; None when the cache does not know (ask the store).
    pub role: Option<Role>,
}

/// Copies of hot data; every call may miss.
#[async_trait]
pub trait Cache: Send + Sync {
    /// For each group, what the cache holds for `user`, or None on a miss.
    async fn groups(&self, user: UserId, groups: &[GroupId]) -> Vec<Option<CachedGroup>>;
    /// Messages with seq in `from..=to`, ascending, if the cache holds every one of them.
    async fn messages(&self, group: GroupId, from: Seq, to: Seq) -> Option<Vec<MessageRecord>>;
    /// A reader's store read of a group's row and last seq, each kept only if the cache
    /// holds none (an owner's write is never overwritten by an older read).
    fn fill(&self, record: &GroupRecord, last_seq: Seq);
    /// The owner's full picture of its group, written when its actor starts.
    fn owner_started(&self, record: &GroupRecord, last_seq: Seq, members: &[(UserId, Role)]);
    /// The owner changed the group's row (name, openness, count, owner, dissolved).
    fn record_changed(&self, record: &GroupRecord);
    /// The owner added, re-roled (Some) or removed (None) a member.
    fn member_changed(&self, group: GroupId, user: UserId, role: Option<Role>);
    /// The owner committed these messages (consecutive seqs).
    fn appended(&self, group: GroupId, messages: &[MessageRecord]);
    /// A short name for logs and the console.
    fn backend(&self) -> &'static str;
    /// (hits, misses) of reads so far, for the console.
    fn counts(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// No cache: every read misses, every write is dropped.
pub struct NoCache;

#[async_trait]
impl Cache for NoCache {
    async fn groups(&self, _: UserId, groups: &[GroupId]) -> Vec<Option<CachedGroup>> {
        vec![None; groups.len()]
    }
    async fn messages(&self, _: GroupId, _: Seq, _: Seq) -> Option<Vec<MessageRecord>> {
        None
    }
    fn fill(&self, _: &GroupRecord, _: Seq) {}
    fn owner_started(&self, _: &GroupRecord, _: Seq, _: &[(UserId, Role)]) {}
    fn record_changed(&self, _: &GroupRecord) {}
    fn member_changed(&self, _: GroupId, _: UserId, _: Option<Role>) {}
    fn appended(&self, _: GroupId, _: &[MessageRecord]) {}
    fn backend(&self) -> &'static str {
        "none"
    }
}
