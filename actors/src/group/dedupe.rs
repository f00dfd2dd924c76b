//! The group actor's memory of recent `client_msg_id`s, so a resend is answered without a
//! store read. Bounded: the oldest entries are forgotten first, and the store (which keeps
//! every message's id) answers for them.

use schema::{Seq, UserId};
use std::collections::{HashMap, VecDeque};

/// Where a recently seen message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recent {
    /// Accepted and waiting for its commit.
    Pending,
    /// Durable with this seq and timestamp.
    Committed {
        /// Its seq.
        seq: Seq,
        /// Its server time.
        ts: u64,
    },
}

type Key = (UserId, String);

/// A bounded map from (sender, client_msg_id) to where that message stands.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    map: HashMap<Key, Recent>,
    order: VecDeque<Key>,
}

impl RecentIds {
    /// Remembers at most `capacity` committed ids (pending ones are never forgotten).
    pub fn new(capacity: usize) -> Self {
        RecentIds { capacity: capacity.max(1), map: HashMap::new(), order: VecDeque::new() }
    }

    /// Where a message stands, if remembered.
    pub fn get(&self, sender: UserId, client_msg_id: &str) -> Option<Recent> {
        // Allocation-free lookups would need a borrowed key type; ids are short.
        self.map.get(&(sender, client_msg_id.to_owned())).copied()
    }

    /// Records a message as pending.
    pub fn insert_pending(&mut self, sender: UserId, client_msg_id: &str) {
        let key = (sender, client_msg_id.to_owned());
        if self.map.insert(key.clone(), Recent::Pending).is_none() {
            self.order.push_back(key);
        }
    }

    /// Records a message as committed (also for ids found in the store).
    pub fn insert_committed(&mut self, sender: UserId, client_msg_id: &str, seq: Seq, ts: u64) {
        let key = (sender, client_msg_id.to_owned());
        if self.map.insert(key.clone(), Recent::Committed { seq, ts }).is_none() {
            self.order.push_back(key);
        }
        self.evict();
    }

    /// Forgets a message whose commit failed, so a retry is accepted anew.
    pub fn remove(&mut self, sender: UserId, client_msg_id: &str) {
        // Its key stays in `order` and is skipped when it comes up for eviction.
        self.map.remove(&(sender, client_msg_id.to_owned()));
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn evict(&mut self) {
        // One pass at most: pending entries go to the back and are never dropped.
        let mut budget = self.order.len();
        while self.order.len() > self.capacity && budget > 0 {
            budget -= 1;
            let Some(key) = self.order.pop_front() else {
                break;
            };
            match self.map.get(&key) {
                Some(Recent::Pending) => self.order.push_back(key),
                Some(Recent::Committed { .. }) => {
                    self.map.remove(&key);
                }
                // Removed after a failed commit; only its place in the queue was left.
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_oldest_committed_first() {
        let mut recent = RecentIds::new(2);
        recent.insert_pending(UserId(1), "a");
        recent.insert_committed(UserId(1), "a", 1, 10);
        recent.insert_committed(UserId(1), "b", 2, 11);
        recent.insert_committed(UserId(1), "c", 3, 12);
        assert_eq!(recent.get(UserId(1), "a"), None);
        assert_eq!(recent.get(UserId(1), "c"), Some(Recent::Committed { seq: 3, ts: 12 }));
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn keeps_pending_entries() {
        let mut recent = RecentIds::new(1);
        recent.insert_pending(UserId(1), "p");
        recent.insert_committed(UserId(2), "x", 1, 1);
        recent.insert_committed(UserId(2), "y", 2, 2);
        assert_eq!(recent.get(UserId(1), "p"), Some(Recent::Pending));
    }
}
