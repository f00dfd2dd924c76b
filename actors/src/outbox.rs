//! One connection's queue of encoded events, and the way its events reach the socket.
//!
//! Producers (the fan-out step, actors, the session) hand over shared [`Bytes`]. When the
//! connection has nothing queued, the producer writes the frame to the socket itself,
//! through the connection's [`Wire`], on its own thread: a fan-out to 500 idle members is
//! 500 writes in one loop, with no task to wake per delivery. Otherwise the events queue
//! here and the gateway's writer drains everything queued at each wake-up, as few frames as
//! it can, so under load one wake-up and one write carry many events. The queue is bounded:
//! a client that stops reading overflows it and is closed as a slow consumer, instead of
//! growing the node's memory; it catches up by `sync` when it comes back.
//!
//! Invariant: events reach the socket in the order they were handed over. Both ways of
//! writing happen under the queue's lock, a producer writes only while nothing is queued,
//! and a wire writes nothing while bytes of an earlier write still wait (a wire never
//! blocks: what the socket does not take, it keeps for the writer to flush).
//!
//! Waking is cheap on purpose (it can happen once per delivery): a push takes the queue's
//! lock for an append, and wakes the writer only if no wake-up is already pending.

use crate::frame::{Framed, text_frame_of_events};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use schema::ConnId;
use schema::error::CloseReason;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A connection's socket, as the outbox writes to it: shared between the connection's task
/// and whoever delivers to it, and never waiting.
pub trait Wire: Send + Sync + std::fmt::Debug {
    /// Writes `frame` without waiting, unless bytes of an earlier write still wait or the
    /// socket has failed (then it writes nothing). What the socket does not take now, the
    /// wire keeps and writes before anything else when the connection's writer flushes it.
    fn write_now(&self, frame: &[u8]) -> WriteNow;
}

/// What [`Wire::write_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteNow {
    /// The socket took the whole frame.
    Done,
    /// The socket took part of the frame, or none; the wire kept the rest, and the
    /// connection's writer must flush it.
    Kept,
    /// Nothing was written: an earlier write's bytes still wait, or the socket failed. The
    /// writer's flush finishes the one or meets the other.
    NotWritten,
}

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
    /// The socket, once the gateway attached it.
    wire: Option<Attached>,
    /// The connection's task has ended: nothing will be written any more.
    ended: bool,
}

#[derive(Debug)]
struct Attached {
    wire: Arc<dyn Wire>,
    /// The most events one frame may carry (`gateway.max_events_per_frame`).
    max_events: usize,
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

    /// Lets producers write frames of at most `max_events` events straight to `wire`, the
    /// connection's socket, while nothing is queued. Until then (and in tests that read the
    /// queue with [`Outbox::take`]) every event queues.
    pub fn attach(&self, wire: Arc<dyn Wire>, max_events: usize) {
        self.lock().wire = Some(Attached { wire, max_events: max_events.max(1) });
    }

    /// Lets go of the socket once the connection's task is done with it, so the socket
    /// closes now rather than when the last producer drops this outbox. Events handed over
    /// from now on are dropped.
    pub fn detach(&self) {
        let mut state = self.lock();
        state.wire = None;
        state.ended = true;
        state.events = VecDeque::new();
    }

    /// Hands over one event; false if the connection is closing (the event is dropped).
    pub fn push(&self, event: Bytes) -> bool {
        self.push_all(std::slice::from_ref(&event))
    }

    /// Hands over events, in order, under one lock and at most one wake-up.
    pub fn push_all(&self, events: &[Bytes]) -> bool {
        self.push_framed(&Framed::new(events))
    }

    /// [`Outbox::push_all`] for events going to many connections: the frame, if one is
    /// written straight away, is built once and shared.
    pub fn push_framed(&self, framed: &Framed<'_>) -> bool {
        let events = framed.events();
        {
            let mut state = self.lock();
            if state.close.is_some() || state.ended {
                return false;
            }
            if state.events.is_empty()
                && let Some(attached) = &state.wire
                && events.len() <= attached.max_events
            {
                match attached.wire.write_now(framed.frame()) {
                    WriteNow::Done => return true,
                    WriteNow::Kept => {
                        drop(state);
                        self.wake();
                        return true;
                    }
                    WriteNow::NotWritten => {}
                }
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
        Self::emptied(&mut state)
    }

    /// What comes with emptying the queue: the close or heartbeat asked meanwhile.
    fn emptied(state: &mut State) -> Taken {
        // Give back a burst's allocation so an idle connection stays small.
        if state.events.capacity() > 64 {
            state.events = VecDeque::new();
        }
        Taken { close: state.close, heartbeat: std::mem::take(&mut state.heartbeat) }
    }

    /// Writes queued events to the attached wire, in frames of at most its `max_events`,
    /// under the queue's lock (so no producer's write can come between them). Returns what
    /// else the outbox asked for once the queue is empty (as [`Outbox::take`] does), or
    /// `None` when the wire holds bytes to flush first: the writer flushes, then calls again.
    /// Without a wire it writes nothing and leaves the queue to [`Outbox::take`].
    pub fn write_queued(&self) -> Option<Taken> {
        let mut state = self.lock();
        let Some(attached) = &state.wire else {
            return Some(Taken { close: state.close, heartbeat: false });
        };
        let (wire, max_events) = (attached.wire.clone(), attached.max_events);
        while !state.events.is_empty() {
            let n = state.events.len().min(max_events);
            let frame = text_frame_of_events(state.events.range(..n));
            match wire.write_now(&frame) {
                WriteNow::Done => drop(state.events.drain(..n)),
                WriteNow::Kept => {
                    state.events.drain(..n);
                    return None;
                }
                WriteNow::NotWritten => return None,
            }
        }
        Some(Self::emptied(&mut state))
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

    /// A socket whose kernel takes `room` bytes at a time; what it does not take is kept,
    /// as [`Wire`] asks, until the test flushes it.
    #[derive(Debug, Default)]
    struct TestWire {
        inner: Mutex<TestWireState>,
    }

    #[derive(Debug, Default)]
    struct TestWireState {
        room: usize,
        sent: Vec<u8>,
        kept: Vec<u8>,
        writes: usize,
    }

    impl TestWire {
        fn with_room(room: usize) -> Arc<TestWire> {
            let wire = Arc::new(TestWire::default());
            wire.set_room(room);
            wire
        }

        fn set_room(&self, room: usize) {
            self.inner.lock().unwrap().room = room;
        }

        /// The connection's writer flushing: the kept bytes go once there is room.
        fn flush(&self) {
            let mut state = self.inner.lock().unwrap();
            let n = state.kept.len().min(state.room);
            let taken: Vec<u8> = state.kept.drain(..n).collect();
            state.room -= n;
            state.sent.extend(taken);
        }

        /// The events in the bytes sent so far, frame by frame, as a client reads them.
        fn events(&self) -> Vec<String> {
            let sent = self.inner.lock().unwrap().sent.clone();
            decode(sent)
        }
    }

    impl Wire for TestWire {
        fn write_now(&self, frame: &[u8]) -> WriteNow {
            let mut state = self.inner.lock().unwrap();
            if !state.kept.is_empty() {
                return WriteNow::NotWritten;
            }
            state.writes += 1;
            let n = frame.len().min(state.room);
            state.room -= n;
            state.sent.extend_from_slice(&frame[..n]);
            if n == frame.len() {
                WriteNow::Done
            } else {
                state.kept = frame[n..].to_vec();
                WriteNow::Kept
            }
        }
    }

    fn decode(bytes: Vec<u8>) -> Vec<String> {
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
        let mut socket = WebSocket::from_raw_socket(std::io::Cursor::new(bytes), Role::Client, None);
        let mut events = Vec::new();
        while let Ok(Message::Text(text)) = socket.read() {
            let array: Vec<serde_json::Value> = serde_json::from_str(text.as_str()).expect("a JSON array");
            events.extend(array.iter().map(|e| e.to_string()));
        }
        events
    }

    fn event(n: usize) -> Bytes {
        Bytes::from(n.to_string())
    }

    fn numbers(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| n.to_string()).collect()
    }

    #[test]
    fn an_idle_connection_is_written_at_once_without_waking_its_writer() {
        let outbox = Outbox::new(ConnId(1), 10);
        let wire = TestWire::with_room(1 << 20);
        outbox.attach(wire.clone(), 4);
        assert!(outbox.push_all(&[event(1), event(2)]));
        assert!(outbox.push(event(3)));
        assert_eq!(wire.events(), numbers(1..4));
        assert!(!outbox.has_events());
        assert!(!outbox.scheduled.load(Ordering::Acquire), "the writer was not woken");
    }

    #[test]
    fn while_the_socket_holds_a_rest_events_queue_and_go_out_in_order() {
        let outbox = Outbox::new(ConnId(1), 100);
        let wire = TestWire::with_room(3);
        outbox.attach(wire.clone(), 3);
        // The first frame is cut: its rest is kept, and the writer is woken to flush it.
        assert!(outbox.push(event(0)));
        assert!(outbox.scheduled.swap(false, Ordering::AcqRel));
        for n in 1..8 {
            assert!(outbox.push(event(n)), "queued behind the kept bytes");
        }
        assert_eq!(outbox.depth(), 7);
        assert_eq!(outbox.write_queued(), None, "the kept bytes go first");
        wire.set_room(1 << 20);
        wire.flush();
        assert_eq!(outbox.write_queued(), Some(Taken::default()));
        assert_eq!(wire.events(), numbers(0..8));
        // 1 direct write, then frames of at most 3 events: 3 + 3 + 1.
        assert_eq!(wire.inner.lock().unwrap().writes, 4);
        assert!(outbox.push(event(8)), "idle again: written at once");
        assert_eq!(outbox.depth(), 0);
        assert_eq!(wire.events(), numbers(0..9));
    }

    #[test]
    fn more_events_than_a_frame_holds_go_through_the_writer() {
        let outbox = Outbox::new(ConnId(1), 100);
        let wire = TestWire::with_room(1 << 20);
        outbox.attach(wire.clone(), 2);
        let events: Vec<Bytes> = (0..5).map(event).collect();
        assert!(outbox.push_all(&events));
        assert_eq!(outbox.depth(), 5);
        assert_eq!(outbox.write_queued(), Some(Taken::default()));
        assert_eq!(wire.events(), numbers(0..5));
        assert_eq!(wire.inner.lock().unwrap().writes, 3);
    }

    #[test]
    fn a_closing_or_detached_connection_takes_no_more_writes() {
        let outbox = Outbox::new(ConnId(1), 10);
        let wire = TestWire::with_room(1 << 20);
        outbox.attach(wire.clone(), 4);
        outbox.close(CloseReason::SessionRevoked);
        assert!(!outbox.push(event(1)), "nothing may follow the close frame");
        assert_eq!(outbox.write_queued(), Some(Taken { close: Some(CloseReason::SessionRevoked), heartbeat: false }));
        assert!(wire.events().is_empty());

        drop(outbox);
        let outbox = Outbox::new(ConnId(2), 10);
        outbox.attach(wire.clone(), 4);
        outbox.detach();
        assert!(!outbox.push(event(2)));
        assert_eq!(Arc::strong_count(&wire), 1, "the outbox let go of the socket");
    }

    #[test]
    fn a_stalled_socket_overflows_the_queue_as_before() {
        let outbox = Outbox::new(ConnId(1), 3);
        let wire = TestWire::with_room(0);
        outbox.attach(wire.clone(), 4);
        assert!(outbox.push(event(0)), "kept whole");
        for n in 1..4 {
            assert!(outbox.push(event(n)));
        }
        assert!(!outbox.push(event(4)));
        assert!(outbox.overflowed.load(Ordering::Acquire));
        assert_eq!(outbox.depth(), 0, "the queue is freed");
        assert_eq!(outbox.write_queued(), Some(Taken { close: Some(CloseReason::SlowConsumer), heartbeat: false }));
    }

    proptest::proptest! {
        /// Whatever the socket takes and whenever the writer runs, the client reads every
        /// event once, in the order it was handed over, each frame whole.
        #[test]
        fn events_arrive_in_order_whatever_the_socket_takes(
            steps in proptest::collection::vec((0usize..4, 1usize..4, 0usize..64), 1..60),
        ) {
            let outbox = Outbox::new(ConnId(1), 10_000);
            let wire = TestWire::with_room(0);
            outbox.attach(wire.clone(), 3);
            let mut next = 0;
            for (action, count, room) in steps {
                match action {
                    0 | 1 => {
                        let events: Vec<Bytes> = (next..next + count).map(event).collect();
                        next += count;
                        proptest::prop_assert!(outbox.push_all(&events));
                    }
                    2 => {
                        wire.set_room(room);
                        wire.flush();
                    }
                    _ => {
                        wire.set_room(room);
                        let _ = outbox.write_queued();
                    }
                }
            }
            // The client reads everything: the writer flushes and writes until done.
            wire.set_room(usize::MAX / 2);
            loop {
                wire.flush();
                if outbox.write_queued().is_some() {
                    wire.flush();
                    break;
                }
            }
            proptest::prop_assert_eq!(wire.events(), numbers(0..next));
        }
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
