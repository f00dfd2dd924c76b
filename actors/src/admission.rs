//! Admission control: how many sends a node holds at once.
//!
//! A send costs memory from the moment its group actor takes it until its commit is acked:
//! it sits in the mailbox, in the group's queue, in the store's batch. Under more load than
//! the node can commit, that memory would grow without end and every ack would wait longer.
//! So the node admits a send only while fewer than `actors.max_pending_sends` are held on
//! the node and fewer than `actors.max_pending_sends_per_group` in its group (so one hot
//! group cannot take the whole node); past either, the send is refused at once with
//! `overloaded` and a retry-after, before it costs anything. Nothing is stored, so the retry
//! with the same `client_msg_id` is the first and only copy. As the backlog commits, sends
//! pass again by themselves.
//!
//! An admitted send carries an [`Admitted`] token to its group actor, which keeps it with the
//! message until the message is answered; dropping the token, on whatever path (ack, error,
//! duplicate, handoff), gives the place back.
//!
//! What the bounds do not count, on purpose or for now: a red packet's send gives its place
//! back once its packet actor takes it (packet creation has its own bound, the packet
//! actors per group), and so do sends parked while a group hands itself off (a mailbox's
//! worth at most). The per-group bound reads the group's load and admits in two steps, so
//! concurrent sends may pass it by a few; the node-wide bound is exact.

use crate::error::ApiError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The node's count of held sends and its bounds.
#[derive(Debug)]
pub struct Admission {
    pending: AtomicUsize,
    max_pending: usize,
    max_per_group: usize,
    retry_after: Duration,
    refused: AtomicU64,
}

/// One admitted send's place; dropping it gives the place back.
#[derive(Debug)]
pub struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Bounds: sends held on the node, sends held for one group, and the wait a refused
    /// client is told.
    pub fn new(max_pending: usize, max_per_group: usize, retry_after: Duration) -> Self {
        Admission {
            pending: AtomicUsize::new(0),
            max_pending: max_pending.max(1),
            max_per_group: max_per_group.max(1),
            retry_after,
            refused: AtomicU64::new(0),
        }
    }

    /// Admits one send to a group that holds `group_held` sends already, or refuses it with
    /// `overloaded`.
    pub fn admit(self: &Arc<Self>, group_held: usize) -> Result<Admitted, ApiError> {
        if group_held >= self.max_per_group {
            return Err(self.refuse("its group"));
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse("the node"));
        }
        Ok(Admitted(self.clone()))
    }

    /// Sends held on this node now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Sends refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self, what: &'static str) -> ApiError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        ApiError::Overloaded { what, retry_after: self.retry_after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_the_bound_and_gives_places_back() {
        let admission = Arc::new(Admission::new(3, 2, Duration::from_millis(100)));
        let a = admission.admit(0).unwrap();
        let b = admission.admit(1).unwrap();
        let c = admission.admit(0).unwrap();
        assert!(matches!(admission.admit(0), Err(ApiError::Overloaded { what: "the node", .. })));
        assert_eq!(admission.pending(), 3, "a refusal takes no place");
        assert!(matches!(admission.admit(2), Err(ApiError::Overloaded { what: "its group", .. })));
        drop(b);
        let d = admission.admit(1).unwrap();
        assert_eq!((admission.pending(), admission.refused()), (3, 2));
        drop((a, c, d));
        assert_eq!(admission.pending(), 0);
    }

    #[test]
    fn concurrent_admits_never_pass_the_bound() {
        let admission = Arc::new(Admission::new(50, usize::MAX, Duration::from_millis(1)));
        let held = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if let Ok(token) = admission.admit(0) {
                            assert!(admission.pending() <= 50);
                            held.lock().unwrap().push(token);
                        }
                    }
                });
            }
        });
        assert_eq!(held.lock().unwrap().len(), 50);
    }
}
