//! Messages between nodes. A single node uses the same types in memory, so the path a
//! message takes does not change when the cluster grows: a request to a group is a
//! [`GroupEnvelope`], and what a group actor hands to a node's fan-out step is a
//! [`NodeDelivery`].
//!
//! Every type here must survive [`crate::codec`] (a non-self-describing format): plain
//! structs and externally tagged enums, no `flatten`, no skipped fields.

use crate::frames::server::{FaceToFaceParticipant, FaceToFaceView};
use crate::frames::{MessageKind, Role};
use crate::ids::{ConnId, FaceSessionId, GroupId, NodeId, RedPacketId, UserId};
use serde::{Deserialize, Serialize};

/// Where the answer to a request goes: one connection of one user on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The node holding the connection.
    pub node: NodeId,
    /// The user who asked.
    pub user: UserId,
    /// The connection that asked.
    pub conn: ConnId,
    /// The client's request id, echoed in the reply.
    pub request: Option<u64>,
}

/// A request to a group's actor, from a member (or would-be member).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupEnvelope {
    /// The group.
    pub group: GroupId,
    /// Who asks, and where the reply goes.
    pub reply_to: ReplyTo,
    /// What is asked.
    pub command: GroupCommand,
}

/// The operations a group actor serializes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Append a message.
    Send {
        /// The sender's id for it.
        client_msg_id: String,
        /// Its type.
        kind: MessageKind,
        /// The body as JSON text.
        body: String,
    },
    /// Describe the group.
    Info,
    /// A page of members.
    Members {
        /// Start after this user.
        after: Option<UserId>,
        /// Page size.
        limit: u32,
    },
    /// Join an open group.
    Join,
    /// Add users (owner or admin).
    AddMembers {
        /// Who.
        users: Vec<UserId>,
    },
    /// Leave.
    Leave,
    /// Remove a member.
    RemoveMember {
        /// Who.
        user: UserId,
    },
    /// Change a member's role.
    SetRole {
        /// Who.
        user: UserId,
        /// To what.
        role: Role,
    },
    /// Hand over ownership.
    TransferOwnership {
        /// To whom.
        user: UserId,
    },
    /// Change name, openness or retention.
    Update {
        /// New name.
        name: Option<String>,
        /// New openness.
        open: Option<bool>,
        /// New retention in days (0: forever).
        retention_days: Option<u32>,
    },
    /// Dissolve the group.
    Dissolve,
    /// Take a share of a red packet (members only).
    GrabRedPacket {
        /// The packet.
        packet: RedPacketId,
    },
    /// Describe a red packet (members only).
    RedPacketInfo {
        /// The packet.
        packet: RedPacketId,
    },
    /// The red packet sweeper found a packet due (only the sweeper sends this): finish its
    /// send, or expire it and refund what is left.
    RedPacketDue {
        /// The packet.
        packet: RedPacketId,
        /// Its due time, as indexed.
        due_at: u64,
    },
    /// Post a paid red packet's message (only a group actor handing off sends this, for a
    /// packet whose message it had queued; the new owner asks the packet's actor again).
    PostRedPacket {
        /// The packet.
        packet: RedPacketId,
    },
    /// Admit the participants of a face-to-face session (only a face-to-face session actor
    /// sends this; no client request maps to it). Users already in are left as they are;
    /// the cap holds as for any join.
    FaceToFaceAdmit {
        /// Who to admit.
        users: Vec<UserId>,
        /// The session as the reply shows it (the actor fills in the group). Boxed: it is
        /// large, and rare next to the other commands.
        view: Box<FaceToFaceView>,
        /// Whether this is the confirmation (everyone is told) or a later joiner.
        confirm: bool,
    },
}

impl GroupCommand {
    /// The client op this command answers, for its reply.
    pub fn op(&self) -> &'static str {
        match self {
            GroupCommand::Send { .. } => "send",
            GroupCommand::Info => "group_info",
            GroupCommand::Members { .. } => "members",
            GroupCommand::Join => "join",
            GroupCommand::AddMembers { .. } => "add_members",
            GroupCommand::Leave => "leave",
            GroupCommand::RemoveMember { .. } => "remove_member",
            GroupCommand::SetRole { .. } => "set_role",
            GroupCommand::TransferOwnership { .. } => "transfer_ownership",
            GroupCommand::Update { .. } => "update_group",
            GroupCommand::Dissolve => "dissolve_group",
            GroupCommand::GrabRedPacket { .. } => "grab_red_packet",
            GroupCommand::RedPacketInfo { .. } => "red_packet",
            GroupCommand::RedPacketDue { .. } => "red_packet_due",
            GroupCommand::PostRedPacket { .. } => "send",
            GroupCommand::FaceToFaceAdmit { confirm: true, .. } => "confirm_face_to_face",
            GroupCommand::FaceToFaceAdmit { confirm: false, .. } => "join_face_to_face",
        }
    }
}

/// A request to the actor of a face-to-face code, placed by the code alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceEnvelope {
    /// The code, 0 to 9999.
    pub code: u16,
    /// Who asks, and where the reply goes.
    pub reply_to: ReplyTo,
    /// What is asked.
    pub command: FaceCommand,
}

/// What a face-to-face code's actor does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FaceCommand {
    /// Start a session with this code here, unless a live one within 1 km has it; then
    /// try another random code, `attempts_left` more times.
    Start {
        /// Latitude.
        lat: f64,
        /// Longitude.
        lon: f64,
        /// The starter.
        participant: FaceToFaceParticipant,
        /// Codes still to try.
        attempts_left: u8,
    },
    /// Join the session with this code within 50 m.
    Join {
        /// Latitude.
        lat: f64,
        /// Longitude.
        lon: f64,
        /// The joiner.
        participant: FaceToFaceParticipant,
    },
    /// Turn the session into a group.
    Confirm {
        /// The session.
        session: FaceSessionId,
    },
}

/// What a group actor hands to one node's fan-out step: encoded events and who gets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeDelivery {
    /// Events for every connection of these users on the node, in this order.
    Fanout {
        /// The group the events belong to.
        group: GroupId,
        /// The node whose group actor sent them (where [`NodeMessage::Interest`] goes).
        from: NodeId,
        /// The group actor's count of deliveries so far, echoed in a `wanted: false`
        /// [`NodeMessage::Interest`] so the actor can tell a stale one.
        stamp: u64,
        /// The recipients (the node skips those with no connection there).
        recipients: Vec<UserId>,
        /// Encoded events, each already a JSON object.
        events: Vec<Vec<u8>>,
    },
    /// One event for one connection (a reply).
    Reply {
        /// The user.
        user: UserId,
        /// Their connection.
        conn: ConnId,
        /// The encoded event.
        event: Vec<u8>,
    },
}

/// What a node tells every other node every heartbeat interval. A node that has sent
/// none for the cluster's `down_after` is taken for dead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender.
    pub from: NodeId,
    /// The address it listens on for other nodes (how seeds are recognised).
    pub cluster_addr: String,
    /// It is draining: it takes no groups and is handing its own off.
    pub draining: bool,
    /// Live group actors on it.
    pub groups: u32,
    /// Live user actors on it.
    pub users: u32,
    /// Open client connections on it.
    pub connections: u32,
}

/// Everything one node sends another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// A request for a group the sender places on the receiving node. If the receiver
    /// places it elsewhere (their views of the cluster differ for a moment), it forwards it
    /// once, as [`NodeMessage::Forwarded`].
    Group(GroupEnvelope),
    /// A request forwarded by a node that did not own the group: served where it lands, so
    /// a request never bounces.
    Forwarded(GroupEnvelope),
    /// Events for the receiving node's connections.
    Deliver(NodeDelivery),
    /// I am alive (see [`Heartbeat`]).
    Heartbeat(Heartbeat),
    /// Whether the sending node has members of a group online: a group actor sends its
    /// deliveries only to nodes that want them. A node says `wanted: false` when a delivery
    /// reached nobody there, and `wanted: true` (with an `ack`) when a member connects.
    Interest {
        /// The group.
        group: GroupId,
        /// The node that does (or does not) want the group's deliveries.
        node: NodeId,
        /// Whether it does.
        wanted: bool,
        /// For `wanted: false`, the stamp of the delivery that reached nobody: the actor
        /// ignores it if a member of that node has shown up since.
        stamp: u64,
        /// Answer with [`NodeMessage::InterestAck`] once the group actor has taken it in.
        ack: Option<u64>,
    },
    /// A request for a face-to-face code's actor, which the sender places on the receiver.
    /// Served where it lands.
    FaceToFace(FaceEnvelope),
    /// The group actor has taken in an [`NodeMessage::Interest`]: every delivery after
    /// this reaches the node.
    InterestAck {
        /// The `ack` of the interest.
        ack: u64,
    },
}
