//! Red packets: money sent to a group, split into shares when it is sent, grabbed by its
//! members one share each.
//!
//! * [`split`]: drawing the shares (pure, property-tested).
//! * [`actor`]: the actor of one packet, kept by its group's actor: it serializes the
//!   packet's grabs, moves money through the ledger, and finishes or expires the packet.
//!
//! Money moves only as ledger entries whose ids are derived from the packet
//! (`red_packet:P` debits the sender, `grab:P` credits a grabber, `refund:P` returns the
//! rest), so every step can be repeated after a crash and happens once. Sending is a
//! sequence of such steps (packet stored as pending, sender debited, packet opened, message
//! appended); whatever a crash interrupts, the sender's retry or the sweeper finishes.

pub mod actor;
pub mod split;

pub use split::{SplitError, draw_shares};

use schema::{GroupId, RedPacketId, UserId};
use sha2::{Digest, Sha256};

/// The packet a (group, sender, client_msg_id) names: a resent `send` names the same one.
pub fn packet_id(group: GroupId, sender: UserId, client_msg_id: &str) -> RedPacketId {
    let mut hash = Sha256::new();
    hash.update(b"troupe red packet\0");
    hash.update(group.0.to_be_bytes());
    hash.update(sender.0.to_be_bytes());
    hash.update(client_msg_id.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Ids stay below 2^53 for JSON clients, and are never 0.
    RedPacketId((u64::from_be_bytes(first) & schema::ids::MAX_ID).max(1))
}

/// The ledger entry id of the sender's debit.
pub fn debit_entry_id(packet: RedPacketId) -> String {
    format!("red_packet:{packet}")
}

/// The ledger entry id of a grabber's credit.
pub fn grab_entry_id(packet: RedPacketId) -> String {
    format!("grab:{packet}")
}

/// The ledger entry id of the refund of what nobody grabbed.
pub fn refund_entry_id(packet: RedPacketId) -> String {
    format!("refund:{packet}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_id_is_stable_and_scoped() {
        let id = packet_id(GroupId(1), UserId(2), "a");
        assert_eq!(id, packet_id(GroupId(1), UserId(2), "a"));
        assert_ne!(id, packet_id(GroupId(1), UserId(3), "a"));
        assert_ne!(id, packet_id(GroupId(2), UserId(2), "a"));
        assert_ne!(id, packet_id(GroupId(1), UserId(2), "b"));
        assert!(id.0 <= schema::ids::MAX_ID && id.0 > 0);
    }
}
