//! What the stores persist. These are plain data; the rules that keep them consistent live
//! in the actors, and each store backend maps them onto its own tables (see `cql/` for the
//! ScyllaDB layout).
//!
//! Records are encoded with [`crate::codec`] where a backend stores opaque values.

use crate::frames::{MessageKind, Role};
use crate::ids::{GroupId, MediaId, RedPacketId, Seq, UserId};
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

/// One entry of a user's wallet ledger. The balance is the sum of the entries; it is never
/// updated apart from them. `id` makes an entry happen once: applying an entry whose id is
/// already in the ledger changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Unique within the user's ledger, and derived from what caused it
    /// (`credit:KEY`, `red_packet:PACKET`, `grab:PACKET`, `refund:PACKET`).
    pub id: String,
    /// Signed cents: negative leaves the wallet.
    pub amount: i64,
    /// Why.
    pub kind: LedgerKind,
    /// The red packet it belongs to, if any.
    pub packet: Option<RedPacketId>,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Why a ledger entry exists.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// An operator credited the wallet.
    Credit,
    /// The user sent a red packet (negative).
    RedPacketSend,
    /// The user grabbed a share of a red packet.
    RedPacketGrab,
    /// What nobody grabbed of the user's expired red packet came back.
    RedPacketRefund,
    /// Marks a red packet's send as never happening (amount 0), so a debit that arrives
    /// later under the same id changes nothing.
    Void,
}

impl LedgerKind {
    /// The storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Credit => "credit",
            LedgerKind::RedPacketSend => "red_packet_send",
            LedgerKind::RedPacketGrab => "red_packet_grab",
            LedgerKind::RedPacketRefund => "red_packet_refund",
            LedgerKind::Void => "void",
        }
    }

    /// The kind with this name.
    pub fn parse(name: &str) -> Option<LedgerKind> {
        [
            LedgerKind::Credit,
            LedgerKind::RedPacketSend,
            LedgerKind::RedPacketGrab,
            LedgerKind::RedPacketRefund,
            LedgerKind::Void,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// How a red packet's total is split.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedPacketKind {
    /// Random shares (double-mean method).
    Lucky,
    /// Equal shares; the cents that do not divide go one each to the first shares.
    Equal,
}

impl RedPacketKind {
    /// The storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RedPacketKind::Lucky => "lucky",
            RedPacketKind::Equal => "equal",
        }
    }

    /// The kind with this name.
    pub fn parse(name: &str) -> Option<RedPacketKind> {
        match name {
            "lucky" => Some(RedPacketKind::Lucky),
            "equal" => Some(RedPacketKind::Equal),
            _ => None,
        }
    }
}

/// Where a red packet is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedPacketState {
    /// Stored; its total has not (yet) left the sender's wallet. Nobody can grab it.
    Pending,
    /// Paid for: members may grab.
    Open,
    /// Its time ran out: no more grabs; what is left goes back to the sender.
    Expired,
    /// The sender's wallet could not pay for it: it never existed for anyone.
    Cancelled,
}

impl RedPacketState {
    /// The storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            RedPacketState::Pending => "pending",
            RedPacketState::Open => "open",
            RedPacketState::Expired => "expired",
            RedPacketState::Cancelled => "cancelled",
        }
    }

    /// The state with this name.
    pub fn parse(name: &str) -> Option<RedPacketState> {
        [RedPacketState::Pending, RedPacketState::Open, RedPacketState::Expired, RedPacketState::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A red packet, with all its shares drawn when it was sent. One partition per packet, with
/// its grabs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedPacketRecord {
    /// The packet.
    pub id: RedPacketId,
    /// The group it was sent to.
    pub group: GroupId,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's id for its message.
    pub client_msg_id: String,
    /// Cents.
    pub total: i64,
    /// How it was split.
    pub kind: RedPacketKind,
    /// The sender's words, possibly empty.
    pub greeting: String,
    /// Every share in cents, in the order they are handed out; they sum to `total`.
    pub shares: Vec<i64>,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// After this instant nobody can grab; the rest goes back to the sender.
    pub expires_at: u64,
    /// Where it is in its life.
    pub state: RedPacketState,
}

/// One grab: who got which share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrabRecord {
    /// Who grabbed.
    pub user: UserId,
    /// Which share (0 is the first handed out).
    pub share: u32,
    /// Cents.
    pub amount: i64,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// An uploaded media object's metadata; its bytes live in object storage under
/// [`MediaRecord::object_key`]. One partition per media object, with the groups it was sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The media.
    pub id: MediaId,
    /// Who uploaded it.
    pub uploader: UserId,
    /// What it may be sent as (`image`, `audio`, `video` or `file`), from its bytes.
    pub kind: MessageKind,
    /// Its MIME type, from its bytes.
    pub mime: String,
    /// Bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// For images: width and height in pixels, from the header.
    pub dimensions: Option<(u32, u32)>,
    /// For images the node could decode: the width and height of its JPEG thumbnail,
    /// stored under [`MediaRecord::thumbnail_key`].
    pub thumbnail: Option<(u32, u32)>,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

impl MediaRecord {
    /// Where its bytes are in object storage.
    pub fn object_key(id: MediaId) -> String {
        format!("media/{:02x}/{}", id.0 % 256, id.0)
    }

    /// Where its thumbnail is in object storage.
    pub fn thumbnail_key(id: MediaId) -> String {
        format!("thumbnails/{:02x}/{}.jpg", id.0 % 256, id.0)
    }
}
