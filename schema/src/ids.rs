//! Identifiers. Each is a newtype so a user id can never be passed where a group id belongs.
//!
//! Ids that reach clients stay below 2^53 so JavaScript numbers hold them exactly.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest id troupe hands out: 2^53 - 1, the largest integer a JSON number keeps
/// exactly in every client language.
pub const MAX_ID: u64 = (1 << 53) - 1;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A registered user, for life. Random, below [`MAX_ID`].
    UserId(u64)
);
id_type!(
    /// A group (also a confirmed face-to-face group). Random, below [`MAX_ID`].
    GroupId(u64)
);
id_type!(
    /// One WebSocket connection, unique within its node for the life of the process.
    ConnId(u64)
);
id_type!(
    /// A face-to-face session, for its few minutes of life. Random, below [`MAX_ID`].
    FaceSessionId(u64)
);
id_type!(
    /// A red packet. Derived from its message's (group, sender, client_msg_id), below
    /// [`MAX_ID`], so a resent `send_red_packet` names the same packet.
    RedPacketId(u64)
);
id_type!(
    /// An uploaded media object (image, audio, video, file). Random, below [`MAX_ID`].
    MediaId(u64)
);
id_type!(
    /// A node of the cluster. A single node is node 0.
    NodeId(u16)
);

/// A message's position in its group's log: 1, 2, 3, ... with no gaps. 0 means "nothing yet".
pub type Seq = u64;
