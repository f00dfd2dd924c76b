//! Checks one receiver's view of one group's log: every seq once, in order, none missing.

use std::collections::BTreeSet;

/// What one receiver has seen of one group.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Every seq up to here was received.
    pub contiguous: u64,
    /// Seqs received beyond a hole.
    ahead: BTreeSet<u64>,
    /// Seqs received more than once.
    pub duplicates: u64,
    /// Seqs that arrived after a higher one.
    pub out_of_order: u64,
    /// Distinct seqs received.
    pub received: u64,
}

impl SeqTracker {
    /// A tracker for a receiver that already holds everything up to `seq`.
    pub fn starting_at(seq: u64) -> Self {
        SeqTracker { contiguous: seq, ..SeqTracker::default() }
    }

    /// Records one delivery; returns true if it was new.
    pub fn record(&mut self, seq: u64) -> bool {
        if seq <= self.contiguous || self.ahead.contains(&seq) {
            self.duplicates += 1;
            return false;
        }
        self.received += 1;
        if seq == self.contiguous + 1 {
            self.contiguous = seq;
            while self.ahead.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        } else {
            if self.ahead.last().is_some_and(|&last| seq < last) {
                self.out_of_order += 1;
            }
            self.ahead.insert(seq);
        }
        true
    }

    /// True if `seq` was received.
    pub fn has(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.ahead.contains(&seq)
    }

    /// Seqs up to `last` never received.
    pub fn missing(&self, last: u64) -> u64 {
        let ahead = self.ahead.range(..=last).count() as u64;
        last.saturating_sub(self.contiguous).saturating_sub(ahead)
    }

    /// True when there is a hole (a seq missing below a received one).
    pub fn has_hole(&self) -> bool {
        !self.ahead.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut t = SeqTracker::default();
        for s in 1..=5 {
            assert!(t.record(s));
        }
        assert_eq!((t.contiguous, t.missing(5), t.duplicates, t.out_of_order), (5, 0, 0, 0));
        assert_eq!(t.missing(7), 2);
    }

    #[test]
    fn holes_duplicates_and_reordering() {
        let mut t = SeqTracker::starting_at(2);
        assert!(!t.record(2), "already held");
        t.record(4);
        t.record(6);
        t.record(5);
        assert_eq!(t.out_of_order, 1, "5 came after 6");
        assert!(t.has_hole());
        assert_eq!(t.missing(6), 1, "3 is missing");
        t.record(3);
        assert_eq!((t.contiguous, t.missing(6), t.has_hole()), (6, 0, false));
        assert!(!t.record(4));
        assert_eq!(t.duplicates, 2);
    }
}
