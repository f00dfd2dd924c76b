//! What the node sends. Every text frame is a JSON array of one or more events:
//! `[{"event":"reply",...},{"event":"message",...}]`.
//!
//! Events are encoded once, on the side that produces them, and the encoded bytes are
//! shared by every connection that receives them; a connection's writer only joins them,
//! `[` + events separated by `,` + `]`, into one frame.

use super::{MessageKind, Role};
use crate::error::ErrorCode;
use crate::ids::{FaceSessionId, GroupId, MediaId, RedPacketId, Seq, UserId};
use crate::records::{LedgerKind, RedPacketKind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An event pushed to a client (everything but replies and errors, which answer a request).
///
/// Encode-only: a client decodes the `event` name first and then the struct it names (an
/// internally tagged enum cannot carry the raw message body through serde's buffering).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A new message in a group the receiver is a member of.
    Message(MessageView),
    /// Somebody joined or was added.
    MemberJoined {
        /// The group.
        group: GroupId,
        /// Who joined.
        user: UserId,
        /// Their role.
        role: Role,
        /// Members after the change.
        member_count: u32,
    },
    /// Somebody left or was removed. The removed user gets this too, and then nothing more.
    MemberLeft {
        /// The group.
        group: GroupId,
        /// Who left.
        user: UserId,
        /// `left` or `removed`.
        reason: LeaveReason,
        /// Members after the change.
        member_count: u32,
    },
    /// A member's role changed (including by ownership transfer).
    RoleChanged {
        /// The group.
        group: GroupId,
        /// Whose role.
        user: UserId,
        /// The new role.
        role: Role,
    },
    /// The group's name, openness or owner changed.
    GroupUpdated(GroupInfo),
    /// The owner dissolved the group; it is gone for everyone.
    GroupDissolved {
        /// The group.
        group: GroupId,
    },
    /// The receiver called `read` on another of their connections.
    ReadMark(ReadAck),
    /// The participants of a face-to-face session the receiver is in, after people joined.
    FaceToFaceParticipants {
        /// The session.
        session: FaceSessionId,
        /// Its code.
        code: String,
        /// Everyone in it, in the order they came.
        participants: Vec<FaceToFaceParticipant>,
    },
    /// A face-to-face session the receiver is in became a group, with the receiver in it.
    FaceToFaceGroup {
        /// The session.
        session: FaceSessionId,
        /// Its code.
        code: String,
        /// The group.
        group: GroupInfo,
    },
}

/// Why a member is no longer in a group.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They left.
    Left,
    /// An owner or admin removed them.
    Removed,
}

/// A message as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageView {
    /// The group.
    pub group: GroupId,
    /// Its position in the group's log.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's id for it.
    pub client_msg_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// The body as sent (for `text`, a JSON string).
    pub body: Box<RawValue>,
    /// Server time when it was accepted, milliseconds since the Unix epoch.
    pub ts: u64,
}

impl PartialEq for MessageView {
    fn eq(&self, other: &Self) -> bool {
        (self.group, self.seq, self.sender, &self.client_msg_id, self.kind, self.body.get(), self.ts)
            == (other.group, other.seq, other.sender, &other.client_msg_id, other.kind, other.body.get(), other.ts)
    }
}

/// A reply to a request, as a client decodes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplyFrame {
    /// The request's id.
    pub id: Option<u64>,
    /// The request's op.
    pub op: String,
    /// The op's result (see the `*Result` and view types in this module).
    pub result: Box<RawValue>,
}

/// An error reply, as a client decodes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorFrame {
    /// The request's id, when the frame was readable enough to have one.
    pub id: Option<u64>,
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable explanation; not stable.
    pub message: String,
    /// For `rate_limited`: milliseconds to wait before trying again.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct ReplyOut<'a, T: Serialize> {
    event: &'static str,
    id: Option<u64>,
    op: &'a str,
    result: &'a T,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    event: &'static str,
    id: Option<u64>,
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// Encodes a reply event.
pub fn encode_reply<T: Serialize>(id: Option<u64>, op: &str, result: &T) -> Vec<u8> {
    let out = ReplyOut { event: "reply", id, op, result };
    serde_json::to_vec(&out).unwrap_or_else(|e| encode_error(id, ErrorCode::Internal, &e.to_string()))
}

/// Encodes an error event.
pub fn encode_error(id: Option<u64>, code: ErrorCode, message: &str) -> Vec<u8> {
    encode_error_retry(id, code, message, None)
}

/// Encodes an error that says when to try again (`rate_limited`): `retry_after_ms`.
pub fn encode_error_retry(id: Option<u64>, code: ErrorCode, message: &str, retry_after_ms: Option<u64>) -> Vec<u8> {
    let out = ErrorOut { event: "error", id, code, message, retry_after_ms };
    // Serialising a struct of plain strings and integers cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Encodes a pushed event.
pub fn encode_event(event: &Event) -> Vec<u8> {
    // Events hold only plain data and already-valid raw JSON, so this cannot fail.
    serde_json::to_vec(event).unwrap_or_default()
}

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The user.
    pub user: UserId,
    /// Their login name.
    pub username: String,
    /// Their display name.
    pub nickname: String,
    /// Their avatar, or empty.
    pub avatar_url: String,
}

/// `register` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResult {
    /// The new user's id.
    pub user: UserId,
}

/// `login` and `auth` result: who you are and where you stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResult {
    /// The session token (only from `login`; keep it secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The caller's profile.
    pub profile: Profile,
    /// The caller's groups with unread counts.
    pub groups: Vec<GroupSummary>,
}

/// `ping` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PongResult {
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// An empty result, for operations that only succeed or fail.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Done {}

/// A group as its members see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: UserId,
    /// Whether anyone may `join`.
    pub open: bool,
    /// Members now.
    pub member_count: u32,
    /// Its cap.
    pub max_members: u32,
    /// The seq of its newest message (0 when empty).
    pub last_seq: Seq,
    /// Messages older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u32,
}

/// One of the caller's groups, with where the caller stands in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub name: String,
    /// The caller's role.
    pub role: Role,
    /// The seq of its newest message.
    pub last_seq: Seq,
    /// The caller's read mark.
    pub read_seq: Seq,
    /// Messages after the read mark, capped at [`UNREAD_CAP`] (show "99+").
    pub unread: u32,
}

/// Unread counts are reported up to this value; a client shows "99+" beyond 99.
pub const UNREAD_CAP: u32 = 100;

/// The unread count between a read mark and a group's last seq, capped.
pub fn unread(last_seq: Seq, read_seq: Seq) -> u32 {
    last_seq.saturating_sub(read_seq).min(UNREAD_CAP as u64) as u32
}

/// `my_groups` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MyGroupsResult {
    /// The caller's groups.
    pub groups: Vec<GroupSummary>,
}

/// The outcome for one user of `add_members`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddStatus {
    /// Now a member.
    Added,
    /// Was a member already.
    AlreadyMember,
    /// No such user.
    NotFound,
    /// The cap was reached before this user.
    GroupFull,
}

/// One line of an `add_members` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddMemberOutcome {
    /// The user.
    pub user: UserId,
    /// What happened.
    pub status: AddStatus,
}

/// `add_members` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddMembersResult {
    /// One line per requested user, in request order.
    pub results: Vec<AddMemberOutcome>,
    /// Members after the change.
    pub member_count: u32,
}

/// `remove_member` and `leave` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberCountResult {
    /// Members after the change.
    pub member_count: u32,
}

/// One member in a `members` page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// The member.
    pub user: UserId,
    /// Their role.
    pub role: Role,
}

/// `members` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersPage {
    /// Members in ascending user id.
    pub members: Vec<MemberView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<UserId>,
}

/// `send` result: the message is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendAck {
    /// The group.
    pub group: GroupId,
    /// The message's seq.
    pub seq: Seq,
    /// Server time when it was accepted.
    pub ts: u64,
    /// True when this `client_msg_id` was seen before: nothing new was stored or delivered.
    pub duplicate: bool,
}

/// Someone in a face-to-face session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceToFaceParticipant {
    /// The user.
    pub user: UserId,
    /// Their display name.
    pub nickname: String,
    /// Their avatar, or empty.
    pub avatar_url: String,
}

/// `start_face_to_face`, `join_face_to_face` and `confirm_face_to_face` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceToFaceView {
    /// The session.
    pub session: FaceSessionId,
    /// Its code: exactly 4 digits.
    pub code: String,
    /// When the session and its code end, milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// Everyone in it, in the order they came (frozen once it became a group).
    pub participants: Vec<FaceToFaceParticipant>,
    /// The group it became, once someone confirmed (null before).
    pub group: Option<GroupInfo>,
}

/// What a grab got.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrabStatus {
    /// This grab took a share: `amount` is now in the wallet.
    Grabbed,
    /// The caller took a share before (this may be the retry of that grab): `amount` is it.
    AlreadyGrabbed,
    /// Every share is taken.
    Empty,
    /// The packet's time is over.
    Expired,
}

/// `grab_red_packet` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrabResult {
    /// The packet.
    pub packet: RedPacketId,
    /// What happened.
    pub status: GrabStatus,
    /// The caller's share in cents, when they have one (null otherwise).
    pub amount: Option<i64>,
}

/// Where a red packet stands, as members see it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedPacketStatus {
    /// Shares are left and time is left.
    Open,
    /// Every share is taken.
    Empty,
    /// Time ran out; what was left went back to the sender.
    Expired,
}

/// One grab in a finished red packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrabView {
    /// Who.
    pub user: UserId,
    /// Cents.
    pub amount: i64,
    /// When, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The largest share (the earliest of equal ones).
    pub luckiest: bool,
}

/// `red_packet` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedPacketView {
    /// The packet.
    pub packet: RedPacketId,
    /// Its group.
    pub group: GroupId,
    /// Who sent it.
    pub sender: UserId,
    /// Cents.
    pub total: i64,
    /// Shares.
    pub count: u32,
    /// `lucky` or `equal`.
    pub kind: RedPacketKind,
    /// The sender's words.
    pub greeting: String,
    /// When it was sent.
    pub created_at: u64,
    /// When it expires.
    pub expires_at: u64,
    /// Where it stands.
    pub status: RedPacketStatus,
    /// Shares taken.
    pub grabbed_count: u32,
    /// Cents taken.
    pub grabbed_amount: i64,
    /// The caller's share, if they have one.
    pub your_amount: Option<i64>,
    /// Who got how much, in grab order, once the packet is empty or expired (null before).
    pub grabs: Option<Vec<GrabView>>,
}

/// One ledger entry as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerView {
    /// The entry's id (what caused it).
    pub id: String,
    /// Signed cents.
    pub amount: i64,
    /// Why.
    pub kind: LedgerKind,
    /// The red packet it belongs to, if any.
    pub packet: Option<RedPacketId>,
    /// When, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// `wallet` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalletView {
    /// Cents.
    pub balance: i64,
    /// The ledger that sums to it, oldest first (up to the newest 1000 entries).
    pub entries: Vec<LedgerView>,
}

/// An uploaded media object, as `POST /media` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaView {
    /// Its id, to send it with.
    pub media: MediaId,
    /// What it may be sent as: `image`, `audio`, `video` or `file`.
    pub kind: MessageKind,
    /// Its MIME type, from its bytes.
    pub mime: String,
    /// Bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// For images: width in pixels.
    pub width: Option<u32>,
    /// For images: height in pixels.
    pub height: Option<u32>,
    /// For images the node could decode: the size of a JPEG thumbnail (fetch it with
    /// `media_url` and `thumbnail: true`); null otherwise.
    pub thumbnail: Option<Size>,
}

/// A width and a height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

/// `media_url` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaUrl {
    /// The media.
    pub media: MediaId,
    /// A path on the node's HTTP port (`/media/ID?exp=...&sig=...`) that serves the bytes
    /// without further authentication until `expires_at`.
    pub url: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: u64,
}

/// `history` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The group.
    pub group: GroupId,
    /// Messages in ascending seq, without gaps except where messages were deleted.
    pub messages: Vec<MessageView>,
    /// Whether more messages exist in the direction asked.
    pub has_more: bool,
    /// The group's newest seq when the page was read.
    pub last_seq: Seq,
    /// The lowest seq the group still keeps: every seq below it was deleted by retention.
    pub first_seq: Seq,
}

/// One group in a `sync` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncGroup {
    /// Where the caller stands in the group.
    #[serde(flatten)]
    pub summary: GroupSummary,
    /// Messages after the client's cursor (only for groups the client listed).
    pub messages: Vec<MessageView>,
    /// Whether more messages follow; fetch them with `history` `after`.
    pub has_more: bool,
    /// The lowest seq the group still keeps (see [`HistoryPage::first_seq`]); given with the
    /// messages of a listed group that had some to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<Seq>,
}

/// `sync` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResult {
    /// Every group the caller is a member of.
    pub groups: Vec<SyncGroup>,
    /// Groups the client listed that the caller is no longer in (or that are gone).
    pub gone: Vec<GroupId>,
}

/// `read` result, and the `read_mark` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadAck {
    /// The group.
    pub group: GroupId,
    /// The read mark now.
    pub read_seq: Seq,
    /// Unread after the move, capped.
    pub unread: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_as_clients_see_them() {
        let ack = SendAck { group: GroupId(1), seq: 2, ts: 3, duplicate: false };
        let bytes = encode_reply(Some(9), "send", &ack);
        let reply: ReplyFrame = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(reply.id, Some(9));
        assert_eq!(reply.op, "send");
        let back: SendAck = serde_json::from_str(reply.result.get()).unwrap();
        assert_eq!(back, ack);

        let bytes = encode_error(Some(4), ErrorCode::GroupFull, "full");
        let err: ErrorFrame = serde_json::from_slice(&bytes).unwrap();
        assert_eq!((err.id, err.code), (Some(4), ErrorCode::GroupFull));
    }

    #[test]
    fn events_are_json_objects_that_join_into_an_array() {
        let a = encode_event(&Event::GroupDissolved { group: GroupId(5) });
        let b = encode_error(None, ErrorCode::MalformedFrame, "x");
        let frame = [b"[".as_slice(), &a, b",", &b, b"]"].concat();
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&frame).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["event"], "group_dissolved");
        assert_eq!(parsed[1]["code"], "malformed_frame");
    }

    #[test]
    fn message_event_is_flat() {
        let view = MessageView {
            group: GroupId(1),
            seq: 7,
            sender: UserId(2),
            client_msg_id: "c".into(),
            kind: MessageKind::Text,
            body: RawValue::from_string("\"hi\"".into()).unwrap(),
            ts: 5,
        };
        let bytes = encode_event(&Event::Message(view.clone()));
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["event"], "message");
        assert_eq!(value["type"], "text");
        assert_eq!(value["body"], "hi");
        let back: MessageView = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, view);
    }

    #[test]
    fn unread_is_capped() {
        assert_eq!(unread(5, 2), 3);
        assert_eq!(unread(2, 5), 0);
        assert_eq!(unread(1000, 0), UNREAD_CAP);
    }
}
