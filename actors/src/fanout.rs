//! The node-local fan-out step: who is connected to this node, and handing encoded events
//! to their connections.
//!
//! A group actor encodes each event once and hands the bytes here with its member list;
//! this step looks up each member's connections on this node and queues the shared bytes
//! on each. In a cluster every node runs one, and a group actor sends one
//! [`schema::cluster::NodeDelivery`] per node instead of one message per member.
//!
//! The registry is written by user actors (who own their user's connections) and read by
//! everyone, so it is a sharded map under short read locks rather than an actor: a
//! delivery costs no mailbox hop.

use crate::outbox::Outbox;
use bytes::Bytes;
use schema::cluster::NodeDelivery;
use schema::{ConnId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const SHARDS: usize = 64;

type Connections = Arc<[Arc<Outbox>]>;

/// This node's online users and their connections.
pub struct Fanout {
    shards: Box<[RwLock<HashMap<UserId, Connections>>]>,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect() }
    }
}

impl Fanout {
    fn shard(&self, user: UserId) -> &RwLock<HashMap<UserId, Connections>> {
        // Ids are random, so their low bits spread evenly.
        &self.shards[(user.0 as usize) % SHARDS]
    }

    /// Replaces a user's connections on this node; an empty list takes the user offline.
    /// Only the user's actor calls this, so updates for one user never race.
    pub fn set_connections(&self, user: UserId, connections: Vec<Arc<Outbox>>) {
        let mut shard = self.shard(user).write().unwrap_or_else(|e| e.into_inner());
        if connections.is_empty() {
            shard.remove(&user);
        } else {
            shard.insert(user, connections.into());
        }
    }

    /// A user's connections on this node.
    pub fn connections(&self, user: UserId) -> Option<Connections> {
        self.shard(user).read().unwrap_or_else(|e| e.into_inner()).get(&user).cloned()
    }

    /// Queues `events`, in order, on every connection of every recipient on this node.
    /// Returns the number of connections reached.
    pub fn deliver(&self, recipients: &[UserId], events: &[Bytes]) -> usize {
        let mut reached = 0;
        for &user in recipients {
            // Pushing under the shard's read lock saves cloning the connection list; a push
            // is a short append, and writers of this shard are rare (connects, disconnects).
            let shard = self.shard(user).read().unwrap_or_else(|e| e.into_inner());
            let Some(connections) = shard.get(&user) else { continue };
            for outbox in connections.iter() {
                if outbox.push_all(events) {
                    reached += 1;
                }
            }
        }
        reached
    }

    /// Calls `f` for every connection on this node (heartbeats, shutdown).
    pub fn for_each_connection(&self, mut f: impl FnMut(&Outbox)) {
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for outbox in shard.values().flat_map(|c| c.iter()) {
                f(outbox);
            }
        }
    }

    /// Queues one event on one connection; false if it is gone.
    pub fn reply(&self, user: UserId, conn: ConnId, event: Bytes) -> bool {
        let Some(connections) = self.connections(user) else {
            return false;
        };
        match connections.iter().find(|o| o.conn() == conn) {
            Some(outbox) => outbox.push(event),
            None => false,
        }
    }

    /// Applies a delivery that arrived from another node.
    pub fn apply(&self, delivery: NodeDelivery) -> usize {
        match delivery {
            NodeDelivery::Fanout { recipients, events, .. } => {
                let events: Vec<Bytes> = events.into_iter().map(Bytes::from).collect();
                self.deliver(&recipients, &events)
            }
            NodeDelivery::Reply { user, conn, event } => usize::from(self.reply(user, conn, Bytes::from(event))),
        }
    }

    /// (online users, connections) on this node.
    pub fn counts(&self) -> (usize, usize) {
        let mut users = 0;
        let mut conns = 0;
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            users += shard.len();
            conns += shard.values().map(|c| c.len()).sum::<usize>();
        }
        (users, conns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_shared_bytes_to_every_connection_in_order() {
        let fanout = Fanout::default();
        let a1 = Arc::new(Outbox::new(ConnId(1), 10));
        let a2 = Arc::new(Outbox::new(ConnId(2), 10));
        let b = Arc::new(Outbox::new(ConnId(3), 10));
        fanout.set_connections(UserId(1), vec![a1.clone(), a2.clone()]);
        fanout.set_connections(UserId(2), vec![b.clone()]);
        let events = [Bytes::from_static(b"1"), Bytes::from_static(b"2")];
        assert_eq!(fanout.deliver(&[UserId(1), UserId(2), UserId(3)], &events), 3);
        for outbox in [&a1, &a2, &b] {
            let mut out = Vec::new();
            outbox.take(10, &mut out);
            assert_eq!(out, events);
            assert_eq!(out[0].as_ptr(), events[0].as_ptr(), "bytes are shared, not copied");
        }
        assert!(fanout.reply(UserId(1), ConnId(2), Bytes::from_static(b"r")));
        assert!(!fanout.reply(UserId(1), ConnId(3), Bytes::from_static(b"r")));
        fanout.set_connections(UserId(1), vec![]);
        assert_eq!(fanout.counts(), (1, 1));
    }
}
