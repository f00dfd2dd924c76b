//! The actors' view of the other nodes: where a group's actor lives, and how to reach a
//! node. The node crate implements [`Cluster`] over `ractor_cluster`; a single node has no
//! cluster and every group lives at home.
//!
//! Placement is rendezvous hashing over the nodes that take groups: every node computes the
//! same owner from the same member list, with no table to agree on, and when a node joins or
//! leaves only the groups that go to (or came from) that node move.

use schema::cluster::NodeMessage;
use schema::{GroupId, NodeId};

/// The rest of the cluster, as seen from one node.
pub trait Cluster: Send + Sync {
    /// The node whose group actor serves `group` now, by [`place`] over the nodes that
    /// take groups (this one included unless it is draining); None while this node has
    /// just started and has not yet heard who else is up (it would otherwise take every
    /// group for itself and depose their owners).
    fn owner(&self, group: GroupId) -> Option<NodeId>;
    /// The node whose actor serves a face-to-face code: placed like a group, over a key
    /// that only the code decides (so everyone who types it reaches the same actor).
    fn owner_of_face_code(&self, code: u16) -> Option<NodeId> {
        self.owner(face_code_key(code))
    }
    /// The other connected nodes; deliveries go to each of them.
    fn peers(&self) -> Vec<NodeId>;
    /// Sends a message to another node, in order with earlier ones to that node; false if
    /// the node is not connected.
    fn send(&self, node: NodeId, message: NodeMessage) -> bool;
}

/// The placement key of a face-to-face code. Above every group id (those stay below
/// 2^53), though sharing a key with a group would only place both on one node.
pub fn face_code_key(code: u16) -> GroupId {
    GroupId(0xF2F0_0000_0000_0000 | u64::from(code))
}

/// The node, among `nodes`, that owns `group`: the one with the highest score for the
/// pair. None only if `nodes` is empty.
pub fn place(group: GroupId, nodes: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
    nodes.into_iter().max_by_key(|node| (score(group, *node), node.0))
}

/// A well-mixed 64-bit score for (group, node). Fixed arithmetic (not `std`'s hasher, whose
/// output may change between Rust versions), so nodes built by different compilers agree.
fn score(group: GroupId, node: NodeId) -> u64 {
    mix(group.0 ^ mix(u64::from(node.0).wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// splitmix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u16]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn placement_ignores_the_order_of_the_node_list() {
        for g in 1..2000u64 {
            let group = GroupId(g * 7919);
            assert_eq!(place(group, nodes(&[1, 2, 3])), place(group, nodes(&[3, 1, 2])));
        }
    }

    #[test]
    fn groups_spread_over_nodes_and_only_the_new_nodes_share_moves() {
        let before = nodes(&[1, 2, 3]);
        let after = nodes(&[1, 2, 3, 4]);
        let mut per_node = [0usize; 5];
        let mut moved = 0;
        let total = 20_000u64;
        for g in 1..=total {
            let group = GroupId(crate::random_id() ^ g);
            let (Some(old), Some(new)) = (place(group, before.clone()), place(group, after.clone())) else {
                panic!("no owner");
            };
            per_node[usize::from(new.0)] += 1;
            if old != new {
                moved += 1;
                assert_eq!(new, NodeId(4), "a group moved between two old nodes");
            }
        }
        // Each of 4 nodes gets about a quarter; about a quarter moves.
        for count in &per_node[1..] {
            assert!((4_000..6_000).contains(count), "uneven placement: {per_node:?}");
        }
        assert!((4_000..6_000).contains(&moved), "{moved} of {total} moved");
    }

    #[test]
    fn no_nodes_no_owner() {
        assert_eq!(place(GroupId(1), Vec::new()), None);
    }
}
