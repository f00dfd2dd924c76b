//! troupe's vocabulary: everything that crosses a boundary (a WebSocket, the disk, the
//! cluster link) is defined here and nowhere else.
//!
//! * [`ids`]: the identifiers every layer passes around.
//! * [`error`]: the stable error codes a client sees, and WebSocket close codes.
//! * [`frames`]: client requests, server events and reply payloads (JSON, see `PROTOCOL.md`).
//! * [`records`]: what the stores persist.
//! * [`cluster`]: messages that travel between nodes.
//! * [`codec`]: the one place that knows the binary encoding of records and cluster messages.
//!
//! Internal actor state never goes straight onto the wire: the actors convert to these
//! types at the boundary, so this crate can change shape only on purpose.

pub mod cluster;
pub mod codec;
pub mod error;
pub mod frames;
pub mod ids;
pub mod records;

pub use error::ErrorCode;
pub use ids::{ConnId, FaceSessionId, GroupId, MediaId, NodeId, RedPacketId, Seq, UserId};
