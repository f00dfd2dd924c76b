//! The storage seam: what the actors need from a store, in the domain's words.
//!
//! Every method is atomic within one partition, the unit a ScyllaDB lightweight transaction
//! can update: a user (account, sessions, their group index and read marks), a username, a
//! group (its row and its members), a group's message log. Nothing here needs a
//! transaction across partitions; where the actors write two partitions they do it in an
//! order that keeps the invariant written next to the method.
//!
//! Backends live in the node crate. They all pass [`contract`] (enable the `contract`
//! feature to run it).

#[cfg(feature = "contract")]
pub mod contract;

use async_trait::async_trait;
use schema::frames::Role;
use schema::records::*;
use schema::{GroupId, MediaId, RedPacketId, Seq, UserId};

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found a state other than the one it expected.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store could not be reached or could not commit; the write may or may not have
    /// happened.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The write carried a group epoch that is no longer the group's: another group actor
    /// has claimed the group since. Nothing was written.
    #[error("fenced: group {group} is owned at epoch {current}, not {presented}")]
    Fenced {
        /// The group.
        group: GroupId,
        /// The epoch the writer presented.
        presented: u64,
        /// The group's epoch in the store.
        current: u64,
    },
}

/// A group actor's proof of ownership: the epoch it got from [`GroupStore::claim_group`].
///
/// Every write a group actor makes carries it, and a store applies the write only if the
/// epoch is still the group's current one, in the same atomic step as the write. So when a
/// second actor claims the group (another node took over, or this node restarted the
/// actor), the first cannot commit anything more, however late its writes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The group.
    pub group: GroupId,
    /// The epoch claimed.
    pub epoch: u64,
}

impl Fence {
    /// The store's refusal of this fence, given the epoch it found.
    pub fn refused(&self, current: u64) -> StoreError {
        StoreError::Fenced { group: self.group, presented: self.epoch, current }
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Called once with the outcome of a write submitted without waiting
/// ([`MessageStore::append_messages_then`], [`UserGroupStore::advance_read_marks_then`]).
pub type WriteDone = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// The SHA-256 of a session token: sessions are stored under it so a leaked database does
/// not leak usable tokens.
pub type TokenHash = [u8; 32];

/// Accounts, usernames and sessions.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Inserts a user if the id is free; false if it is taken.
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool>;
    /// A user by id.
    async fn user(&self, id: UserId) -> StoreResult<Option<UserRecord>>;
    /// Deletes a user row (registration lost the race for its username).
    async fn delete_user(&self, id: UserId) -> StoreResult<()>;
    /// Changes the given profile fields in one atomic write (so two devices editing
    /// different fields lose nothing); the updated user, or None if there is no such user.
    async fn update_profile(
        &self,
        id: UserId,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> StoreResult<Option<UserRecord>>;
    /// Claims a username for a credential if nobody has it; false if taken.
    /// Invariant: registration inserts the user first, so a claimed name always has a user.
    async fn claim_username(&self, username: &str, credential: &CredentialRecord) -> StoreResult<bool>;
    /// The credential for a username.
    async fn credential(&self, username: &str) -> StoreResult<Option<CredentialRecord>>;
    /// Stores a session.
    async fn insert_session(&self, token: &TokenHash, session: &SessionRecord) -> StoreResult<()>;
    /// A session by token hash.
    async fn session(&self, token: &TokenHash) -> StoreResult<Option<SessionRecord>>;
    /// Deletes a session (idempotent).
    async fn delete_session(&self, token: &TokenHash) -> StoreResult<()>;
}

/// What a conditional member insert found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddMemberOutcome {
    /// Inserted; the group now has this many members.
    Added(u32),
    /// The user was a member already.
    AlreadyMember,
    /// The group is at its cap; nothing written.
    Full,
    /// No such group, or it is dissolved.
    NoGroup,
}

/// Groups and their members: one partition per group.
///
/// The writes that change a live group take a [`Fence`] and fail with
/// [`StoreError::Fenced`], writing nothing, unless its epoch is the group's current one.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates a group with its owner as the only member, if the id is free; false if taken.
    /// A new group's epoch is 0; its first actor claims epoch 1.
    async fn create_group(&self, group: &GroupRecord, owner: &MemberRecord) -> StoreResult<bool>;
    /// Raises the group's epoch by one and returns the new fence, which invalidates every
    /// earlier one; None if there is no such group. A group actor calls it once, when it
    /// starts, before it reads the group's state.
    async fn claim_group(&self, group: GroupId) -> StoreResult<Option<Fence>>;
    /// A group's row (dissolved ones included).
    async fn group(&self, id: GroupId) -> StoreResult<Option<GroupRecord>>;
    /// One member.
    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<MemberRecord>>;
    /// Members in ascending user id, after `after`.
    async fn members(&self, group: GroupId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<MemberRecord>>;
    /// Inserts a member and bumps `member_count` in one atomic write, only while the count
    /// is below the group's `max_members`. The cap holds even if two writers race.
    async fn add_member_if_below_cap(&self, fence: Fence, member: &MemberRecord) -> StoreResult<AddMemberOutcome>;
    /// Deletes a member and lowers `member_count`; the new count, or None if not a member.
    async fn remove_member(&self, fence: Fence, user: UserId) -> StoreResult<Option<u32>>;
    /// Changes a member's role; false if not a member.
    async fn set_member_role(&self, fence: Fence, user: UserId, role: Role) -> StoreResult<bool>;
    /// Makes `to` the owner and `from` an admin, and updates the group's owner; false if
    /// either is not a member.
    async fn transfer_ownership(&self, fence: Fence, from: UserId, to: UserId) -> StoreResult<bool>;
    /// Changes name and/or openness; the updated row, or None if there is no such group.
    async fn update_group(
        &self,
        fence: Fence,
        name: Option<&str>,
        open: Option<bool>,
    ) -> StoreResult<Option<GroupRecord>>;
    /// Marks a group dissolved; false if there is no such group.
    async fn dissolve_group(&self, fence: Fence) -> StoreResult<bool>;
}

/// A user's index of their groups, with their read marks: one partition per user.
/// Invariant: it lists every group the user is a member of (it is written before a join and
/// cleared after a leave), and may briefly list one they have left.
#[async_trait]
pub trait UserGroupStore: Send + Sync {
    /// Adds a group to a user's index; keeps the existing read mark if already there.
    async fn link_user_group(&self, user: UserId, link: &UserGroupRecord) -> StoreResult<()>;
    /// Removes a group from a user's index (idempotent).
    async fn unlink_user_group(&self, user: UserId, group: GroupId) -> StoreResult<()>;
    /// The user's index, in ascending group id.
    async fn user_groups(&self, user: UserId) -> StoreResult<Vec<UserGroupRecord>>;
    /// One entry of the index.
    async fn user_group(&self, user: UserId, group: GroupId) -> StoreResult<Option<UserGroupRecord>>;
    /// Moves the read mark up to `seq` (never down); the mark after the call, or None if
    /// the group is not in the user's index.
    async fn advance_read_mark(&self, user: UserId, group: GroupId, seq: Seq) -> StoreResult<Option<Seq>>;
    /// Moves several users' marks in one group (each its own atomic write, like
    /// [`UserGroupStore::advance_read_mark`]) without waiting; `done` runs once when all are
    /// written. A write submitted before an append is durable no later than that append
    /// (the embedded store keeps submission order), so a sender's mark has moved by the time
    /// the sender is acked.
    fn advance_read_marks_then(&self, group: GroupId, marks: Vec<(UserId, Seq)>, done: WriteDone);
}

/// Message logs: one log per group.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Appends messages with consecutive seqs starting at `after + 1`, durably, only if the
    /// log's last seq is `after` (`Conflict` otherwise) and the fence holds (`Fenced`
    /// otherwise); nothing is written on a refusal. The seq check keeps seqs gapless and
    /// unique even if two writers race; the fence keeps a deposed owner from writing at all.
    /// Also records each message's (sender, client_msg_id).
    async fn append_messages(&self, fence: Fence, after: Seq, messages: &[MessageRecord]) -> StoreResult<()>;
    /// [`MessageStore::append_messages`] without waiting: `done` runs exactly once with the
    /// outcome, as soon as it is known, on whatever thread learned it. The embedded store
    /// runs it on its writer thread right after the commit, so acks and deliveries do not
    /// wait for a task to be scheduled. `done` must be quick and must not block.
    fn append_messages_then(&self, fence: Fence, after: Seq, messages: Vec<MessageRecord>, done: WriteDone);
    /// The seq of the newest message, 0 for an empty log. A log trimmed by retention keeps
    /// its last seq even when no message is left ([`Retention::trimmed_through`]).
    async fn last_seq(&self, group: GroupId) -> StoreResult<Seq>;
    /// Up to `limit` messages with seq > `after`, ascending.
    async fn messages_after(&self, group: GroupId, after: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>>;
    /// Up to `limit` messages with seq < `before`, the newest ones, returned ascending.
    async fn messages_before(&self, group: GroupId, before: Seq, limit: usize) -> StoreResult<Vec<MessageRecord>>;
    /// The (seq, ts) of the message a sender sent with this `client_msg_id`.
    async fn message_by_client_id(
        &self,
        group: GroupId,
        sender: UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<(Seq, u64)>>;
}

/// How long a group keeps its messages, and how far its log has been cut back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Messages older than this many days are deleted; 0 keeps them forever.
    pub days: u32,
    /// Every message with a seq up to this one has been deleted (0: none). Seqs are never
    /// reused: the log's `last_seq` stays at least this, even if nothing is left.
    pub trimmed_through: Seq,
}

impl Retention {
    /// The lowest seq the group may still hold; `history` and `sync` never go below it.
    pub fn first_seq(&self) -> Seq {
        self.trimmed_through + 1
    }
}

/// Message retention: a per-group setting and the deletion of a log's oldest messages.
///
/// A trim deletes a prefix of the log, never a message in the middle, so what is left stays
/// gapless from `first_seq` to `last_seq`, and a reader that knows `first_seq` knows every
/// seq below it is gone for good rather than missing.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Sets the group's retention in days (0: forever), fenced like every write of a live
    /// group (a new group's creator uses epoch 0); false if there is no such group.
    async fn set_retention_days(&self, fence: Fence, days: u32) -> StoreResult<bool>;
    /// A group's retention (the default, kept forever and never trimmed, for a group that
    /// never had one set, or none at all).
    async fn retention(&self, group: GroupId) -> StoreResult<Retention>;
    /// Up to `limit` groups whose retention is not forever, after `after` in the store's own
    /// order (pass the last group of the previous page). The retention sweeper's work list.
    async fn retained_groups(&self, after: Option<GroupId>, limit: usize) -> StoreResult<Vec<(GroupId, Retention)>>;
    /// Deletes the messages with seq up to `through` (at most the log's last seq; a larger
    /// one is taken as the last seq), and the resend index rows that only they use, and
    /// raises `trimmed_through` to it (never lowers it). Records the trim point before it
    /// deletes, so a reader that filters by it never sees a hole. Not fenced: a trim only
    /// deletes what is old enough whoever asks, and is idempotent. Only while the group's
    /// retention is still `days` (what the caller computed `through` from): one changed
    /// meanwhile (longer, or forever) trims nothing, and so does `days` 0 (forever).
    /// Returns `trimmed_through` after the call.
    async fn trim_log(&self, group: GroupId, through: Seq, days: u32) -> StoreResult<Seq>;
}

/// Checks that `messages` all belong to `group` and carry the seqs `after + 1, after + 2, ...`,
/// as [`MessageStore::append_messages`] requires; every backend calls it before writing.
pub fn check_append(group: GroupId, after: Seq, messages: &[MessageRecord]) -> StoreResult<()> {
    for (i, message) in messages.iter().enumerate() {
        if message.group != group || message.seq != after + 1 + i as Seq {
            return Err(StoreError::Conflict("messages must have consecutive seqs after `after`".into()));
        }
    }
    Ok(())
}

/// What applying a ledger entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// Written; the balance after it.
    Applied {
        /// Cents.
        balance: i64,
    },
    /// An entry with this id was in the ledger already (it is returned as stored, which may
    /// differ from the one presented: a `void` in place of a debit); nothing changed.
    AlreadyApplied {
        /// The stored entry.
        entry: LedgerEntry,
        /// Cents.
        balance: i64,
    },
    /// The entry would take the balance below zero; nothing written.
    Insufficient {
        /// Cents.
        balance: i64,
    },
}

/// Wallets: one partition per user, holding the ledger and the balance it sums to.
#[async_trait]
pub trait WalletStore: Send + Sync {
    /// Adds `entry` to the user's ledger and moves the balance by its amount, in one atomic
    /// write, unless an entry with its id exists (`AlreadyApplied`) or the balance would go
    /// below zero (`Insufficient`).
    async fn apply_ledger_entry(&self, user: UserId, entry: &LedgerEntry) -> StoreResult<LedgerOutcome>;
    /// The balance in cents (0 for a user with no ledger).
    async fn balance(&self, user: UserId) -> StoreResult<i64>;
    /// Up to `limit` ledger entries, in ascending id.
    async fn ledger(&self, user: UserId, limit: usize) -> StoreResult<Vec<LedgerEntry>>;
}

/// What a grab found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrabOutcome {
    /// The user got the next share.
    Grabbed(GrabRecord),
    /// The user had grabbed before: their grab as stored.
    AlreadyGrabbed(GrabRecord),
    /// Every share is taken.
    Empty,
    /// The packet is past its time, or closed as expired.
    Expired,
    /// No such packet, or it is not open (pending or cancelled).
    NotOpen,
}

/// Red packets: one partition per packet (the packet and its grabs), plus the index of
/// packets the sweeper must look at (`due`).
///
/// The writes take the fence of the packet's group: a packet belongs to its group, and a
/// deposed group owner must not hand out shares.
#[async_trait]
pub trait RedPacketStore: Send + Sync {
    /// Stores a new packet with its shares, unless one with its id exists; returns the
    /// stored packet either way (a resent packet keeps its first shares). Also puts it in the
    /// due index at `due_at` (written first: an index entry may point at nothing).
    async fn create_red_packet(
        &self,
        fence: Fence,
        packet: &RedPacketRecord,
        due_at: u64,
    ) -> StoreResult<RedPacketRecord>;
    /// A packet.
    async fn red_packet(&self, id: RedPacketId) -> StoreResult<Option<RedPacketRecord>>;
    /// A packet's grabs, in share order.
    async fn red_packet_grabs(&self, id: RedPacketId) -> StoreResult<Vec<GrabRecord>>;
    /// Moves a packet from `from` to `to` (pending to open or cancelled, open to expired) in
    /// one atomic write; returns the packet after the call, changed or not (None if there is
    /// no such packet).
    async fn set_red_packet_state(
        &self,
        fence: Fence,
        id: RedPacketId,
        from: RedPacketState,
        to: RedPacketState,
    ) -> StoreResult<Option<RedPacketRecord>>;
    /// Gives `user` the next share of an open packet, at most once per user and never more
    /// shares than the packet has: one atomic write in the packet's partition.
    async fn grab_red_packet(&self, fence: Fence, id: RedPacketId, user: UserId, now: u64) -> StoreResult<GrabOutcome>;
    /// Packets whose due time is at or before `before`: (due time, group, packet).
    async fn red_packets_due(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, GroupId, RedPacketId)>>;
    /// Moves a packet's due index entry from `from` to `to` (None: out of the index).
    async fn reschedule_red_packet(
        &self,
        id: RedPacketId,
        group: GroupId,
        from: u64,
        to: Option<u64>,
    ) -> StoreResult<()>;
}

/// Media metadata (the bytes are in object storage): one partition per media object (its
/// record and the groups it was sent to), and one per user for the bytes they hold.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Adds `bytes` to what the user holds, in one atomic write, unless that would pass
    /// `quota`; false (nothing written) if it would. Called before an upload is accepted.
    async fn reserve_media_bytes(&self, user: UserId, bytes: u64, quota: u64) -> StoreResult<bool>;
    /// Gives back bytes reserved for an upload that failed or was deleted (never below 0).
    async fn release_media_bytes(&self, user: UserId, bytes: u64) -> StoreResult<()>;
    /// The bytes a user holds.
    async fn media_bytes(&self, user: UserId) -> StoreResult<u64>;
    /// Records a media object if its id is free; false if taken. Also puts it in the index
    /// of media to delete at `unsent_until` unless sent by then (written first: an entry
    /// may point at nothing).
    async fn insert_media(&self, media: &MediaRecord, unsent_until: u64) -> StoreResult<bool>;
    /// Entries of that index due at or before `before`: (due time, media).
    async fn unsent_media(&self, before: u64, limit: usize) -> StoreResult<Vec<(u64, MediaId)>>;
    /// Removes an entry of that index (idempotent).
    async fn forget_unsent_media(&self, due_at: u64, id: MediaId) -> StoreResult<()>;
    /// A media object's record.
    async fn media(&self, id: MediaId) -> StoreResult<Option<MediaRecord>>;
    /// Deletes a media object's record and its group links (idempotent).
    async fn delete_media(&self, id: MediaId) -> StoreResult<()>;
    /// Notes that the media was sent to `group` (idempotent): its members may fetch it.
    async fn link_media_group(&self, id: MediaId, group: GroupId) -> StoreResult<()>;
    /// The groups the media was sent to, ascending.
    async fn media_groups(&self, id: MediaId) -> StoreResult<Vec<GroupId>>;
}

/// Everything a node needs from its store.
#[async_trait]
pub trait Store:
    AccountStore + GroupStore + UserGroupStore + MessageStore + RetentionStore + WalletStore + RedPacketStore + MediaStore
{
    /// A short name for logs and the console ("redb", "postgres", "scylla").
    fn backend(&self) -> &'static str;

    /// Bytes the store takes on disk, so an operator sees it grow (`troupe_store_disk_bytes`):
    /// the embedded file and its journal, the PostgreSQL database. None where the store is a
    /// cluster that reports its own disk use (ScyllaDB's metrics) and one node cannot see it
    /// all.
    async fn disk_usage_bytes(&self) -> StoreResult<Option<u64>>;
}
