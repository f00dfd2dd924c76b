//! The group actor's memory of recently committed `client_msg_id`s, so a resend is answered
//! without a store read. Bounded: the oldest entries are forgotten first, and the store
//! (which keeps every message's id) answers for them. Messages still waiting for their
//! commit are tracked by the actor itself, not here.

use schema::{Seq, UserId};
use std::collections::{HashMap, VecDeque};

/// A bounded map from (sender, client_msg_id) to the committed (seq, ts).
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    // Keyed by sender first so a lookup borrows the id instead of allocating a key.
    by_sender: HashMap<UserId, HashMap<String, (Seq, u64)>>,
    order: VecDeque<(UserId, String)>,
}

impl RecentIds {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        RecentIds { capacity: capacity.max(1), by_sender: HashMap::new(), order: VecDeque::new() }
    }

    /// The (seq, ts) of a remembered message.
    pub fn get(&self, sender: UserId, client_msg_id: &str) -> Option<(Seq, u64)> {
        self.by_sender.get(&sender)?.get(client_msg_id).copied()
    }

    /// Remembers a committed message (also one found in the store), forgetting the oldest
    /// entry when full.
    pub fn insert(&mut self, sender: UserId, client_msg_id: &str, seq: Seq, ts: u64) {
        let ids = self.by_sender.entry(sender).or_default();
        if ids.insert(client_msg_id.to_owned(), (seq, ts)).is_some() {
            return;
        }
        self.order.push_back((sender, client_msg_id.to_owned()));
        while self.order.len() > self.capacity {
            let Some((sender, id)) = self.order.pop_front() else { break };
            if let Some(ids) = self.by_sender.get_mut(&sender) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_sender.remove(&sender);
                }
            }
        }
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_oldest_first() {
        let mut recent = RecentIds::new(2);
        recent.insert(UserId(1), "a", 1, 10);
        recent.insert(UserId(1), "b", 2, 11);
        recent.insert(UserId(2), "a", 3, 12);
        assert_eq!(recent.get(UserId(1), "a"), None);
        assert_eq!(recent.get(UserId(1), "b"), Some((2, 11)));
        assert_eq!(recent.get(UserId(2), "a"), Some((3, 12)));
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn reinserting_keeps_one_entry() {
        let mut recent = RecentIds::new(10);
        recent.insert(UserId(1), "a", 1, 10);
        recent.insert(UserId(1), "a", 1, 10);
        assert_eq!(recent.len(), 1);
    }
}
