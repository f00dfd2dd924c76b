//! The client protocol: JSON text frames over a WebSocket (see `PROTOCOL.md`).
//!
//! * [`client`]: what a client sends, one request per frame, and the parser for it.
//! * [`server`]: what the node sends: every frame is a JSON array of one or more events,
//!   so a node under load can put several events in one frame.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// What a message carries. `text` and `red_packet` are accepted today; the media kinds are
/// reserved so that clients can already render them as "unsupported".
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A UTF-8 text; the body is a JSON string.
    Text,
    /// Reserved for media messages.
    Image,
    /// Reserved for media messages.
    Audio,
    /// Reserved for media messages.
    Video,
    /// Reserved for media messages.
    File,
    /// A red packet; the body names the packet (see `PROTOCOL.md`).
    RedPacket,
}

impl MessageKind {
    /// The media kinds, whose messages carry an uploaded object.
    pub const MEDIA: [MessageKind; 4] = [MessageKind::Image, MessageKind::Audio, MessageKind::Video, MessageKind::File];

    /// Whether messages of this kind carry an uploaded object.
    pub fn is_media(self) -> bool {
        Self::MEDIA.contains(&self)
    }

    /// The media kind with this wire name, if it is one.
    pub fn parse_media(name: &str) -> Option<MessageKind> {
        Self::MEDIA.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The kind as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::Audio => "audio",
            MessageKind::Video => "video",
            MessageKind::File => "file",
            MessageKind::RedPacket => "red_packet",
        }
    }
}

/// A member's role in a group. Exactly one member is the owner.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the group or received it by transfer; may do everything.
    Owner,
    /// Appointed by the owner; may add and remove plain members.
    Admin,
    /// Everybody else.
    Member,
}

impl Role {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// The role with this name, if it is one.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}
