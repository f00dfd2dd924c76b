//! When sessions end, for every connection on the node: one timer, not one per user.
//!
//! A connection is closed (`session_expired`) when the session it authenticated with ends.
//! A timer task per user cost about 400 bytes of every idle connection (`BENCHMARKS.md`,
//! "Idle connections"); here a connection costs one entry in an ordered map, and one task
//! sleeps until the earliest end. User actors add a connection when it attaches and
//! remove it when it detaches. An entry whose user actor failed first stays until its end,
//! so that connection still closes on time (a gone connection's entry just lapses).
//!
//! The task holds the map weakly between wake-ups: once the node's [`crate::System`] is
//! gone, it ends at its next wake-up (within a minute).

use crate::now_ms;
use crate::outbox::Outbox;
use schema::ConnId;
use schema::error::CloseReason;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The node's session ends, earliest first.
#[derive(Debug, Default)]
pub struct Expiries {
    due: Mutex<BTreeMap<(u64, ConnId), Weak<Outbox>>>,
    /// Wakes the task when an entry lands before the one it sleeps for.
    earlier: Notify,
}

impl Expiries {
    /// An empty schedule and its task, on the current runtime.
    pub fn start() -> Arc<Expiries> {
        let expiries = Arc::new(Expiries::default());
        tokio::spawn(run(Arc::downgrade(&expiries)));
        expiries
    }

    /// Closes `outbox` as `session_expired` at `at` (ms since the epoch), unless
    /// [`Expiries::remove`]d first.
    pub fn add(&self, at: u64, outbox: &Arc<Outbox>) {
        let mut due = self.lock();
        let first = due.first_key_value().map(|(key, _)| key.0);
        due.insert((at, outbox.conn()), Arc::downgrade(outbox));
        drop(due);
        if first.is_none_or(|first| at < first) {
            self.earlier.notify_one();
        }
    }

    /// Forgets the connection `conn`, whose session ends at `at` (it closed first).
    pub fn remove(&self, at: u64, conn: ConnId) {
        self.lock().remove(&(at, conn));
    }

    /// How many connections wait for their session's end.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection whose session has ended by `now`; returns when the next one
    /// ends, if any.
    fn close_due(&self, now: u64) -> Option<u64> {
        let mut due = self.lock();
        while let Some(entry) = due.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            if let Some(outbox) = entry.remove().upgrade() {
                outbox.close(CloseReason::SessionExpired);
            }
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u64, ConnId), Weak<Outbox>>> {
        // Every change under this lock is one insert or remove: a poisoned map is whole.
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sleeps until the earliest end (or an earlier one is added), closes what is due, again.
async fn run(expiries: Weak<Expiries>) {
    /// With nothing scheduled, or far ahead, the task still looks this often: the wall
    /// clock that `at` is measured in may be stepped.
    const LONGEST_SLEEP: Duration = Duration::from_secs(60);
    loop {
        let Some(this) = expiries.upgrade() else { return };
        let earlier = this.earlier.notified();
        tokio::pin!(earlier);
        // Registered before looking, so an add between the look and the sleep still wakes.
        earlier.as_mut().enable();
        let now = now_ms();
        let wait = match this.close_due(now) {
            Some(next) => Duration::from_millis(next - now).min(LONGEST_SLEEP),
            None => LONGEST_SLEEP,
        };
        tokio::select! {
            _ = earlier => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(conn: u64) -> Arc<Outbox> {
        Arc::new(Outbox::new(ConnId(conn), 16))
    }

    fn closed(outbox: &Outbox) -> bool {
        !outbox.push(bytes::Bytes::from_static(b"\"x\""))
    }

    #[tokio::test]
    async fn closes_each_connection_when_its_session_ends_and_not_before() {
        let expiries = Expiries::start();
        let now = now_ms();
        let (late, early, removed) = (outbox(1), outbox(2), outbox(3));
        expiries.add(now + 60_000, &late);
        // Earlier than what the task sleeps for: it must wake for it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        expiries.add(now + 150, &early);
        expiries.add(now + 150, &removed);
        expiries.remove(now + 150, removed.conn());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closed(&early), "not before its session ends");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(closed(&early), "closed once its session ended");
        assert!(!closed(&removed), "a removed connection is left alone");
        assert!(!closed(&late));
        assert_eq!(expiries.len(), 1, "only the late one still waits");
    }

    #[tokio::test]
    async fn a_connection_gone_before_its_end_is_dropped_quietly() {
        let expiries = Expiries::start();
        let gone = outbox(1);
        expiries.add(now_ms() + 20, &gone);
        drop(gone);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(expiries.is_empty());
    }
}
