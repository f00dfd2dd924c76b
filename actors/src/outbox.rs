//! One connection's queue of encoded events.
//!
//! Producers (the fan-out step, actors, the session) push shared [`Bytes`]; the gateway's
//! writer drains everything queued at each wake-up and writes it as few frames as it can,
//! so under load one wake-up and one write carry many events. The queue is bounded: a
//! client that stops reading overflows it and is closed as a slow consumer, instead of
//! growing the node's memory; it catches up by `sync` when it comes back.

use bytes::Bytes;
use schema::ConnId;
use schema::error::CloseReason;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// The queue between everything that talks to a connection and its writer.
#[derive(Debug)]
pub struct Outbox {
    conn: ConnId,
    limit: usize,
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<Bytes>,
    close: Option<CloseReason>,
}

impl Outbox {
    /// A queue holding at most `limit` events.
    pub fn new(conn: ConnId, limit: usize) -> Self {
        Outbox { conn, limit: limit.max(1), state: Mutex::new(State::default()), ready: Notify::new() }
    }

    /// The connection this queue belongs to.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Queues one event; false if the connection is closing (the event is dropped).
    pub fn push(&self, event: Bytes) -> bool {
        self.push_all(std::slice::from_ref(&event))
    }

    /// Queues events in order under one lock and one wake-up.
    pub fn push_all(&self, events: &[Bytes]) -> bool {
        {
            let mut state = self.lock();
            if state.close.is_some() {
                return false;
            }
            if state.events.len() + events.len() > self.limit {
                // Dropping what is queued frees the memory now; the client resyncs by seq.
                state.events = VecDeque::new();
                state.close = Some(CloseReason::SlowConsumer);
                drop(state);
                self.ready.notify_one();
                return false;
            }
            state.events.extend(events.iter().cloned());
        }
        self.ready.notify_one();
        true
    }

    /// Asks the writer to close the connection after writing what is queued.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(reason);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Moves up to `max_events` queued events into `out`, and says whether the connection
    /// should close once they are written.
    pub fn take(&self, max_events: usize, out: &mut Vec<Bytes>) -> Option<CloseReason> {
        let mut state = self.lock();
        let n = state.events.len().min(max_events);
        out.extend(state.events.drain(..n));
        if state.events.is_empty() {
            // Give back a burst's allocation so an idle connection stays small.
            if state.events.capacity() > 64 {
                state.events = VecDeque::new();
            }
            state.close
        } else {
            None
        }
    }

    /// True when events are queued.
    pub fn has_events(&self) -> bool {
        !self.lock().events.is_empty()
    }

    /// Events queued now.
    pub fn depth(&self) -> usize {
        self.lock().events.len()
    }

    /// Resolves once something was pushed or a close was asked since the last call.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated (every
        // mutation is a single call), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_as_slow_consumer_and_frees_the_queue() {
        let outbox = Outbox::new(ConnId(1), 3);
        for _ in 0..3 {
            assert!(outbox.push(Bytes::from_static(b"{}")));
        }
        assert!(!outbox.push(Bytes::from_static(b"{}")));
        let mut out = Vec::new();
        assert_eq!(outbox.take(10, &mut out), Some(CloseReason::SlowConsumer));
        assert!(out.is_empty());
        assert!(!outbox.push(Bytes::from_static(b"{}")), "closed outboxes refuse events");
    }

    #[test]
    fn close_comes_after_queued_events() {
        let outbox = Outbox::new(ConnId(1), 10);
        outbox.push(Bytes::from_static(b"1"));
        outbox.push(Bytes::from_static(b"2"));
        outbox.close(CloseReason::SessionRevoked);
        let mut out = Vec::new();
        assert_eq!(outbox.take(1, &mut out), None, "events first");
        assert_eq!(outbox.take(10, &mut out), Some(CloseReason::SessionRevoked));
        assert_eq!(out, vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_lost() {
        let outbox = Outbox::new(ConnId(1), 10);
        outbox.push(Bytes::from_static(b"1"));
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready()).await.unwrap();
    }
}
