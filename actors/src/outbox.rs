//! One connection's queue of encoded events.
//!
//! Producers (the fan-out step, actors, the session) push shared [`Bytes`]; the gateway's
//! writer drains everything queued at each wake-up and writes it as few frames as it can,
//! so under load one wake-up and one write carry many events. The queue is bounded: a
//! client that stops reading overflows it and is closed as a slow consumer, instead of
//! growing the node's memory; it catches up by `sync` when it comes back.
//!
//! Waking is cheap on purpose (it happens once per delivery): a push takes the queue's lock
//! for an append, and wakes the writer only if no wake-up is already pending.

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use schema::ConnId;
use schema::error::CloseReason;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// The queue between everything that talks to a connection and its writer.
#[derive(Debug)]
pub struct Outbox {
    conn: ConnId,
    limit: usize,
    state: Mutex<State>,
    writer: AtomicWaker,
    /// Set by producers, cleared by the writer when it looks: a wake-up is pending.
    scheduled: AtomicBool,
    /// Set once the queue overflowed: a write blocked on the stalled socket gives up.
    overflowed: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<Bytes>,
    close: Option<CloseReason>,
    heartbeat: bool,
}

/// What the writer took from the outbox.
#[derive(Debug, Default, PartialEq)]
pub struct Taken {
    /// Close the connection once the taken events are written.
    pub close: Option<CloseReason>,
    /// The heartbeat sweep asked the writer to check the client's liveness.
    pub heartbeat: bool,
}

impl Outbox {
    /// A queue holding at most `limit` events.
    pub fn new(conn: ConnId, limit: usize) -> Self {
        Outbox {
            conn,
            limit: limit.max(1),
            state: Mutex::new(State::default()),
            writer: AtomicWaker::new(),
            scheduled: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        }
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
                self.overflowed.store(true, Ordering::Release);
                // Always wake, even if a wake-up is pending: the writer is most likely
                // parked in a write to the stalled socket and must learn to give up.
                self.scheduled.store(true, Ordering::Release);
                self.writer.wake();
                return false;
            }
            state.events.extend(events.iter().cloned());
        }
        self.wake();
        true
    }

    /// Asks the writer to close the connection after writing what is queued.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(reason);
        }
        drop(state);
        self.wake();
    }

    /// Asks the writer to check the client's liveness (and ping it).
    pub fn heartbeat(&self) {
        self.lock().heartbeat = true;
        self.wake();
    }

    /// Moves up to `max_events` queued events into `out`. The close (or heartbeat) comes
    /// with the call that empties the queue, so queued events are written first.
    pub fn take(&self, max_events: usize, out: &mut Vec<Bytes>) -> Taken {
        let mut state = self.lock();
        let n = state.events.len().min(max_events);
        out.extend(state.events.drain(..n));
        if !state.events.is_empty() {
            return Taken::default();
        }
        // Give back a burst's allocation so an idle connection stays small.
        if state.events.capacity() > 64 {
            state.events = VecDeque::new();
        }
        Taken { close: state.close, heartbeat: std::mem::take(&mut state.heartbeat) }
    }

    /// True when events are queued.
    pub fn has_events(&self) -> bool {
        !self.lock().events.is_empty()
    }

    /// Events queued now.
    pub fn depth(&self) -> usize {
        self.lock().events.len()
    }

    /// Ready once something was pushed (or a close or heartbeat asked) since the last
    /// time this returned ready.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.writer.register(cx.waker());
        if self.scheduled.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Ready once the queue has overflowed. A writer stuck on a socket the client no longer
    /// reads polls this beside its write, so a slow consumer is dropped at once instead of
    /// holding its socket and task until the client reads again.
    pub fn poll_overflowed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.writer.register(cx.waker());
        if self.overflowed.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// [`Outbox::poll_ready`] as a future.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    fn wake(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.writer.wake();
        }
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
        assert_eq!(outbox.take(10, &mut out).close, Some(CloseReason::SlowConsumer));
        assert!(out.is_empty());
        assert!(!outbox.push(Bytes::from_static(b"{}")), "closed outboxes refuse events");
    }

    #[test]
    fn close_comes_after_queued_events() {
        let outbox = Outbox::new(ConnId(1), 10);
        outbox.push(Bytes::from_static(b"1"));
        outbox.push(Bytes::from_static(b"2"));
        outbox.close(CloseReason::SessionRevoked);
        outbox.heartbeat();
        let mut out = Vec::new();
        assert_eq!(outbox.take(1, &mut out), Taken::default(), "events first");
        let taken = outbox.take(10, &mut out);
        assert_eq!(taken, Taken { close: Some(CloseReason::SessionRevoked), heartbeat: true });
        assert_eq!(out, vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        assert!(!outbox.take(10, &mut out).heartbeat, "a heartbeat is taken once");
    }

    #[test]
    fn overflow_wakes_a_writer_even_with_a_wake_up_pending() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let outbox = Outbox::new(ConnId(1), 2);
        assert!(outbox.poll_overflowed(&mut cx).is_pending());
        outbox.push(Bytes::from_static(b"1"));
        // The writer is now busy writing (it does not take); it re-registers as it polls.
        assert!(outbox.poll_overflowed(&mut cx).is_pending());
        outbox.push(Bytes::from_static(b"2"));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake-up while one is pending");
        assert!(!outbox.push(Bytes::from_static(b"3")));
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "the overflow wakes regardless");
        assert!(outbox.poll_overflowed(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_lost() {
        let outbox = Outbox::new(ConnId(1), 10);
        outbox.push(Bytes::from_static(b"1"));
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready()).await.unwrap();
    }

    #[tokio::test]
    async fn a_push_while_waiting_wakes_the_writer() {
        let outbox = std::sync::Arc::new(Outbox::new(ConnId(1), 10));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ready().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        outbox.push(Bytes::from_static(b"1"));
        tokio::time::timeout(std::time::Duration::from_secs(1), writer).await.unwrap().unwrap();
    }
}
