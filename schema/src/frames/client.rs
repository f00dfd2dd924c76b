//! Client requests: `{"id": 1, "op": "send", ...fields}`.
//!
//! Parsing goes in two steps so that errors are precise: the envelope (`id`, `op`) first,
//! then the fields of that one operation. Unknown fields are ignored, so clients may send
//! fields that a newer node understands.

use super::{MessageKind, Role};
use crate::error::ErrorCode;
use crate::ids::{FaceSessionId, GroupId, MediaId, RedPacketId, Seq, UserId};
use crate::records::RedPacketKind;
use serde::{Deserialize, Serialize};

/// One parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// The client's request id, echoed in the reply so it can match replies to requests.
    pub id: Option<u64>,
    /// What the client asks for.
    pub request: Request,
}

/// Why a client frame could not be parsed. Each maps to one [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not a JSON object.
    #[error("frame is not a JSON object: {0}")]
    Malformed(String),
    /// The `op` names no operation.
    #[error("unknown op `{op}`")]
    UnknownOp {
        /// The request id, if the envelope had one.
        id: Option<u64>,
        /// The op as sent.
        op: String,
    },
    /// A field is missing or has the wrong type.
    #[error("{detail}")]
    InvalidField {
        /// The request id, if the envelope had one.
        id: Option<u64>,
        /// serde's account of what is wrong, with the column.
        detail: String,
    },
}

impl FrameError {
    /// The stable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Malformed(_) => ErrorCode::MalformedFrame,
            FrameError::UnknownOp { .. } => ErrorCode::UnknownOp,
            FrameError::InvalidField { .. } => ErrorCode::InvalidField,
        }
    }

    /// The request id to put on the error reply, when the envelope was readable.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            FrameError::Malformed(_) => None,
            FrameError::UnknownOp { id, .. } | FrameError::InvalidField { id, .. } => *id,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    op: Option<String>,
}

/// Parses one text frame from a client.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    if !text.trim_start().starts_with('{') {
        return Err(FrameError::Malformed("expected a JSON object".into()));
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            FrameError::InvalidField { id: None, detail: e.to_string() }
        } else {
            FrameError::Malformed(e.to_string())
        }
    })?;
    let id = envelope.id;
    let Some(op) = envelope.op else {
        return Err(FrameError::InvalidField { id, detail: "missing field `op`".into() });
    };
    match Request::parse_fields(&op, text) {
        None => Err(FrameError::UnknownOp { id, op }),
        Some(Ok(request)) => Ok(ClientFrame { id, request }),
        Some(Err(e)) => Err(FrameError::InvalidField { id, detail: e.to_string() }),
    }
}

macro_rules! requests {
    ($( $(#[$doc:meta])* $op:literal => $variant:ident($ty:ident), )*) => {
        /// Every request the protocol knows. Adding one here adds its op name to [`OPS`].
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $( $(#[$doc])* $variant($ty), )*
        }

        /// Every op name, in the order `PROTOCOL.md` lists them.
        pub const OPS: &[&str] = &[$($op),*];

        impl Request {
            /// The op name of this request, as on the wire.
            pub fn op(&self) -> &'static str {
                match self {
                    $(Request::$variant(_) => $op,)*
                }
            }

            fn parse_fields(op: &str, text: &str) -> Option<Result<Self, serde_json::Error>> {
                match op {
                    $($op => Some(serde_json::from_str::<$ty>(text).map(Request::$variant)),)*
                    _ => None,
                }
            }
        }
    };
}

requests! {
    /// Create an account.
    "register" => Register(RegisterRequest),
    /// Check a password and open a session; authenticates this connection.
    "login" => Login(LoginRequest),
    /// Authenticate this connection with a session token.
    "auth" => Auth(AuthRequest),
    /// Revoke this connection's session token.
    "logout" => Logout(LogoutRequest),
    /// Liveness check; replies with the server time.
    "ping" => Ping(PingRequest),
    /// A user's public profile.
    "profile" => Profile(ProfileRequest),
    /// Change one's own nickname or avatar.
    "update_profile" => UpdateProfile(UpdateProfileRequest),
    /// Create a group; the caller becomes its owner.
    "create_group" => CreateGroup(CreateGroupRequest),
    /// A group's name, owner, openness, member count, cap and last seq.
    "group_info" => GroupInfo(GroupInfoRequest),
    /// The caller's groups with unread counts.
    "my_groups" => MyGroups(MyGroupsRequest),
    /// Change a group's name or openness (owner or admin).
    "update_group" => UpdateGroup(UpdateGroupRequest),
    /// Add users to a group (owner or admin).
    "add_members" => AddMembers(AddMembersRequest),
    /// Join an open group.
    "join" => Join(JoinRequest),
    /// Leave a group.
    "leave" => Leave(LeaveRequest),
    /// Remove a member (owner, or admin for plain members).
    "remove_member" => RemoveMember(RemoveMemberRequest),
    /// Make a member an admin or a plain member again (owner).
    "set_role" => SetRole(SetRoleRequest),
    /// Hand the group to another member (owner).
    "transfer_ownership" => TransferOwnership(TransferOwnershipRequest),
    /// Delete the group for everyone (owner).
    "dissolve_group" => DissolveGroup(DissolveGroupRequest),
    /// One page of a group's members.
    "members" => Members(MembersRequest),
    /// Send a message to a group.
    "send" => Send(SendRequest),
    /// One page of a group's messages.
    "history" => History(HistoryRequest),
    /// Catch up after being away: states of all groups plus what was missed.
    "sync" => Sync(SyncRequest),
    /// Move the caller's read mark in a group.
    "read" => Read(ReadRequest),
    /// Start a face-to-face session where the caller stands; replies with its 4-digit code.
    "start_face_to_face" => StartFaceToFace(StartFaceToFaceRequest),
    /// Join the face-to-face session with this code within 50 m.
    "join_face_to_face" => JoinFaceToFace(JoinFaceToFaceRequest),
    /// Turn a face-to-face session into a group of its participants.
    "confirm_face_to_face" => ConfirmFaceToFace(ConfirmFaceToFaceRequest),
    /// Try to take a share of a red packet.
    "grab_red_packet" => GrabRedPacket(GrabRedPacketRequest),
    /// A red packet's state, and once it is over, who got how much.
    "red_packet" => RedPacket(RedPacketRequest),
    /// The caller's wallet: balance and ledger.
    "wallet" => Wallet(WalletRequest),
    /// A short-lived URL to download a media object.
    "media_url" => MediaUrl(MediaUrlRequest),
}

/// `register`: usernames are 3-32 of `a-z 0-9 _ . -`; passwords 8-128 bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The unique login name.
    pub username: String,
    /// The password; only its argon2id hash is stored.
    pub password: String,
    /// Display name; defaults to the username.
    #[serde(default)]
    pub nickname: Option<String>,
}

/// `login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The login name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// `auth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthRequest {
    /// A token from `login`.
    pub token: String,
}

/// `logout`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogoutRequest {}

/// `ping`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PingRequest {}

/// `profile`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProfileRequest {
    /// Whose profile; the caller's own when absent.
    #[serde(default)]
    pub user: Option<UserId>,
}

/// `update_profile`: absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateProfileRequest {
    /// New display name, 1-64 characters.
    #[serde(default)]
    pub nickname: Option<String>,
    /// New avatar URL (http or https, at most 512 bytes); empty string clears it.
    #[serde(default)]
    pub avatar_url: Option<String>,
}

/// `create_group`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateGroupRequest {
    /// 1-64 characters.
    pub name: String,
    /// Whether anyone may `join` by id; defaults to false.
    #[serde(default)]
    pub open: bool,
    /// A cap below the node's; defaults to the node's cap.
    #[serde(default)]
    pub max_members: Option<u32>,
    /// Days to keep messages, 1 to [`MAX_RETENTION_DAYS`]; 0 or absent keeps them forever.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// The longest retention a group may set (100 years): longer is "forever" in all but name.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// `group_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfoRequest {
    /// The group.
    pub group: GroupId,
}

/// `my_groups`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MyGroupsRequest {}

/// `update_group`: absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateGroupRequest {
    /// The group.
    pub group: GroupId,
    /// New name, 1-64 characters.
    #[serde(default)]
    pub name: Option<String>,
    /// New openness.
    #[serde(default)]
    pub open: Option<bool>,
    /// New retention in days (0: keep forever).
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// `add_members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddMembersRequest {
    /// The group.
    pub group: GroupId,
    /// 1-100 users to add.
    pub users: Vec<UserId>,
}

/// `join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The group.
    pub group: GroupId,
}

/// `leave`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// The group.
    pub group: GroupId,
}

/// `remove_member`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveMemberRequest {
    /// The group.
    pub group: GroupId,
    /// The member to remove.
    pub user: UserId,
}

/// `set_role`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetRoleRequest {
    /// The group.
    pub group: GroupId,
    /// The member.
    pub user: UserId,
    /// `admin` or `member` (ownership moves only by `transfer_ownership`).
    pub role: Role,
}

/// `transfer_ownership`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferOwnershipRequest {
    /// The group.
    pub group: GroupId,
    /// The member who becomes owner; the old owner becomes an admin.
    pub user: UserId,
}

/// `dissolve_group`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DissolveGroupRequest {
    /// The group.
    pub group: GroupId,
}

/// `members`: pages in ascending user id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersRequest {
    /// The group.
    pub group: GroupId,
    /// Start after this user id (the previous page's `next`).
    #[serde(default)]
    pub after: Option<UserId>,
    /// 1-500; defaults to 100.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The group.
    pub group: GroupId,
    /// The client's id for this message, 1-64 bytes; a resend with the same id is not stored
    /// twice.
    pub client_msg_id: String,
    /// The message type.
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// For `text`, a JSON string.
    pub body: serde_json::Value,
}

/// `history`: at most one of `before` and `after`; neither means the newest page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// The group.
    pub group: GroupId,
    /// Messages with seq < before, newest first taken, returned ascending.
    #[serde(default)]
    pub before: Option<Seq>,
    /// Messages with seq > after, returned ascending.
    #[serde(default)]
    pub after: Option<Seq>,
    /// 1-100; defaults to 50.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One group a syncing client already knows, and the last seq it has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyncCursor {
    /// The group.
    pub group: GroupId,
    /// The highest seq the client holds for it.
    pub after: Seq,
}

/// `sync`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Groups the client holds messages for.
    #[serde(default)]
    pub groups: Vec<SyncCursor>,
    /// Messages per group in this reply, 0-100; defaults to 50.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The group.
    pub group: GroupId,
    /// Everything up to this seq has been read. Marks only move forward.
    pub seq: Seq,
}

/// `start_face_to_face`: where the caller stands, in WGS84 degrees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartFaceToFaceRequest {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// `join_face_to_face`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinFaceToFaceRequest {
    /// The code the starter shows: a string of exactly 4 digits ("0427").
    pub code: String,
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// `confirm_face_to_face`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmFaceToFaceRequest {
    /// The session's code.
    pub code: String,
    /// The session, as `start_face_to_face` or `join_face_to_face` named it.
    pub session: FaceSessionId,
}

/// The body of a `send` of type `red_packet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedPacketBody {
    /// Cents taken from the sender's wallet.
    pub total: i64,
    /// Shares, 1 to the group's member count and at most `total`.
    pub count: u32,
    /// `lucky` (random shares) or `equal`.
    pub kind: RedPacketKind,
    /// Shown with the packet; up to 64 characters.
    #[serde(default)]
    pub greeting: String,
}

/// `grab_red_packet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrabRedPacketRequest {
    /// The group the packet was sent to.
    pub group: GroupId,
    /// The packet (from its message's body).
    pub packet: RedPacketId,
}

/// `red_packet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedPacketRequest {
    /// The group the packet was sent to.
    pub group: GroupId,
    /// The packet.
    pub packet: RedPacketId,
}

/// The body of a `send` of type `image`, `audio`, `video` or `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaBody {
    /// A media object the sender uploaded (`POST /media`), of the message's type.
    pub media: MediaId,
}

/// `media_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaUrlRequest {
    /// The media.
    pub media: MediaId,
    /// The URL of its thumbnail instead (images with one only).
    #[serde(default)]
    pub thumbnail: bool,
}

/// `wallet`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WalletRequest {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_send() {
        let frame =
            parse_client_frame(r#"{"id":7,"op":"send","group":12,"client_msg_id":"a1","type":"text","body":"hi"}"#)
                .unwrap();
        assert_eq!(frame.id, Some(7));
        let Request::Send(send) = frame.request else { panic!("not a send") };
        assert_eq!(send.group, GroupId(12));
        assert_eq!(send.kind, MessageKind::Text);
        assert_eq!(send.body, serde_json::json!("hi"));
    }

    #[test]
    fn classifies_errors() {
        let cases = [
            ("not json", ErrorCode::MalformedFrame, None),
            ("[1,2]", ErrorCode::MalformedFrame, None),
            ("{\"id\":1,", ErrorCode::MalformedFrame, None),
            (r#"{"id":1,"op":"fly"}"#, ErrorCode::UnknownOp, Some(1)),
            (r#"{"id":2}"#, ErrorCode::InvalidField, Some(2)),
            (r#"{"id":"x","op":"ping"}"#, ErrorCode::InvalidField, None),
            (r#"{"id":3,"op":"join","group":"12"}"#, ErrorCode::InvalidField, Some(3)),
            (r#"{"id":4,"op":"join"}"#, ErrorCode::InvalidField, Some(4)),
            (r#"{"id":5,"op":"set_role","group":1,"user":2,"role":"king"}"#, ErrorCode::InvalidField, Some(5)),
            (r#"{"id":6,"op":"join","group":-1}"#, ErrorCode::InvalidField, Some(6)),
        ];
        for (text, code, id) in cases {
            let err = parse_client_frame(text).unwrap_err();
            assert_eq!(err.code(), code, "{text}: {err}");
            assert_eq!(err.request_id(), id, "{text}");
        }
    }

    #[test]
    fn op_names_are_unique_and_roundtrip() {
        let mut seen = std::collections::HashSet::new();
        for op in OPS {
            assert!(seen.insert(op), "duplicate op {op}");
        }
        let frame = parse_client_frame(r#"{"op":"my_groups"}"#).unwrap();
        assert_eq!(frame.request.op(), "my_groups");
    }

    #[test]
    fn protocol_doc_lists_every_op() {
        let doc = include_str!("../../PROTOCOL.md");
        for op in OPS {
            assert!(doc.contains(&format!("### `{op}`")), "PROTOCOL.md has no section for {op}");
        }
    }

    #[test]
    fn every_request_example_in_the_protocol_doc_parses() {
        let doc = include_str!("../../PROTOCOL.md");
        let examples: Vec<&str> = doc
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('{') && l.contains("\"op\":") && !l.contains("\"event\":"))
            .collect();
        assert!(examples.len() >= OPS.len(), "every op has an example ({} found)", examples.len());
        let mut seen = std::collections::HashSet::new();
        for example in examples {
            let frame = parse_client_frame(example).unwrap_or_else(|e| panic!("{example}: {e}"));
            seen.insert(frame.request.op());
        }
        for op in OPS {
            assert!(seen.contains(op), "PROTOCOL.md has no request example for {op}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = parse_client_frame(&text);
        }

        #[test]
        fn arbitrary_objects_never_panic(op in "[a-z_]{0,12}", field in "[a-z_]{1,8}", value in any::<i64>()) {
            let text = format!(r#"{{"op":"{op}","{field}":{value}}}"#);
            let _ = parse_client_frame(&text);
        }
    }
}
