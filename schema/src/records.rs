//! What the stores persist. These are plain data; the rules that keep them consistent live
//! in the actors, and each store backend maps them onto its own tables (see `cql/` for the
//! ScyllaDB layout).
//!
//! Records are encoded with [`crate::codec`] where a backend stores opaque values.

use crate::frames::{MessageKind, Role};
use crate::ids::{GroupId, Seq, UserId};
use serde::{Deserialize, Serialize};

/// A user's account and public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user.
    pub id: UserId,
    /// The unique login name.
    pub username: String,
    /// Display name.
    pub nickname: String,
    /// Avatar URL, or empty.
    pub avatar_url: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// What `login` checks: stored under the username, so a login is one read.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Whose credential.
    pub user: UserId,
    /// The argon2id PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRecord").field("user", &self.user).finish_non_exhaustive()
    }
}

/// An open session, stored under the SHA-256 of its token (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Whose session.
    pub user: UserId,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// After this instant the token is refused.
    pub expires_at: u64,
}

/// A group's own row (one partition with its members in ScyllaDB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: UserId,
    /// Whether anyone may join.
    pub open: bool,
    /// Its member cap.
    pub max_members: u32,
    /// Members now; kept in the same atomic write as every membership change.
    pub member_count: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Dissolved groups keep their row so their id is never reused; they answer `not_found`.
    pub dissolved: bool,
}

/// One member of a group, in the group's partition: the source of truth for membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member.
    pub user: UserId,
    /// Their role.
    pub role: Role,
    /// Milliseconds since the Unix epoch.
    pub joined_at: u64,
}

/// One of a user's groups, in the user's partition: an index for "my groups" that also
/// holds the user's read mark there. It may briefly list a group the user has left (it is
/// written before a join and removed after a leave), never miss one the user is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGroupRecord {
    /// The group.
    pub group: GroupId,
    /// Everything up to this seq is read.
    pub read_seq: Seq,
    /// Milliseconds since the Unix epoch.
    pub joined_at: u64,
}

/// One message, stored under (group, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The group.
    pub group: GroupId,
    /// Its position.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's id for it; (group, sender, client_msg_id) is unique.
    pub client_msg_id: String,
    /// Its type.
    pub kind: MessageKind,
    /// The body as JSON text.
    pub body: String,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}
